//! Tiled inference against untiled inference, for the paper's U-Net with random weights and
//! for a small trained model, with tiles small enough that every image is cut into several
//! padded, blended tiles. The padded tiles must be close to the untiled result and much closer
//! than tiles without context (what `daa restore` did before). They cannot be equal: the
//! U-Net's align-corners upsampling samples at positions that depend on the input's size, so
//! a tile's coarse features are shifted by a fraction of a pixel from the whole image's.

use candle_core::{DType, Device};
use candle_nn::VarMap;
use daa_backbones::{BackboneConfig, UNetConfig};
use daa_degrade::Image;
use daa_train::{
    load_restorer, restore_image, seeded_var_builder, train, TileConfig, TrainConfig, ValueRange,
};

/// A photo-like test image: smooth gradients, an edge, fine texture and pseudo-random noise.
fn test_image(w: usize, h: usize) -> Image {
    let mut data = vec![0f32; 3 * w * h];
    let mut state = 12345u32;
    for c in 0..3 {
        for y in 0..h {
            for x in 0..w {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let noise = (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
                let edge = if x * 3 > w + y { 0.25 } else { 0.0 };
                let texture = 0.1 * ((x as f32 * 0.7 + c as f32).sin() * (y as f32 * 0.4).cos());
                let v = 0.2 + 0.4 * fx * fy + edge + texture + 0.1 * noise;
                data[(c * h + y) * w + x] = v.clamp(0.0, 1.0);
            }
        }
    }
    Image::from_planar(w, h, data).unwrap_or_else(|e| panic!("{e}"))
}

/// Largest difference in 8-bit grey levels and the number of pixels that differ by more than 1.
fn diff_8bit(a: &Image, b: &Image) -> (i32, usize) {
    let q = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as i32;
    let d: Vec<i32> = a
        .data()
        .iter()
        .zip(b.data())
        .map(|(x, y)| (q(*x) - q(*y)).abs())
        .collect();
    (
        d.iter().copied().max().unwrap_or(0),
        d.iter().filter(|&&v| v > 1).count(),
    )
}

/// Max difference in grey levels and the fraction of values off by more than one, of the
/// tiled result against the untiled one.
fn tiled_vs_whole(net: &daa_backbones::Backbone, img: &Image, tiles: TileConfig) -> (i32, f64) {
    let whole = restore_image(
        net,
        img,
        &Device::Cpu,
        TileConfig { tile: 0, ..tiles },
        ValueRange::Unit,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let tiled = restore_image(net, img, &Device::Cpu, tiles, ValueRange::Unit)
        .unwrap_or_else(|e| panic!("{e}"));
    let (max, n_off) = diff_8bit(&whole, &tiled);
    let frac = n_off as f64 / img.data().len() as f64;
    eprintln!(
        "{tiles:?}: max {max} grey levels, {:.2}% of values off by more than 1",
        100.0 * frac
    );
    (max, frac)
}

#[test]
fn padded_tiles_match_untiled_for_the_paper_unet_with_random_weights() {
    let varmap = VarMap::new();
    let net = BackboneConfig::UNet(UNetConfig::paper())
        .build(seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu))
        .unwrap_or_else(|e| panic!("{e}"));
    // 360x232 in 128-pixel tiles: 3x2 tiles. Random weights use the whole receptive field
    // (about 100 pixels), the worst case for tiling.
    let img = test_image(360, 232);
    let t = |overlap, pad| TileConfig {
        tile: 128,
        overlap,
        pad,
    };
    let (max_naive, frac_naive) = tiled_vs_whole(&net, &img, t(16, 0));
    let (max, frac) = tiled_vs_whole(&net, &img, t(16, 120));
    // Measured (Kaiming-initialised paper U-Net, seed 0): max 8, 3.3% of values off by more than 1.
    assert!(max <= 12 && frac < 0.05, "padded tiles: max {max}, {frac}");
    assert!(
        max_naive >= 3 * max && frac_naive > 5.0 * frac,
        "no context: max {max_naive}, {frac_naive}"
    );
}

#[test]
fn padded_tiles_match_untiled_for_a_trained_model() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cfg = TrainConfig {
        steps: 4,
        ..TrainConfig::smoke()
    };
    let summary =
        train(&cfg, dir.path(), &Device::Cpu, false, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    let (_, net, _) =
        load_restorer(&summary.checkpoint, &Device::Cpu, None).unwrap_or_else(|e| panic!("{e}"));
    let img = test_image(150, 110);
    let t = |overlap, pad| TileConfig {
        tile: 56,
        overlap,
        pad,
    };
    let (max_naive, _) = tiled_vs_whole(&net, &img, t(8, 0));
    for tiles in [t(8, 48), t(0, 48)] {
        let (max, frac) = tiled_vs_whole(&net, &img, tiles);
        // Measured after 4 smoke steps: max 5, 0.4% of values off by more than 1.
        assert!(max <= 8 && frac < 0.01, "{tiles:?}: max {max}, {frac}");
        assert!(max_naive > max, "no context: max {max_naive}");
    }
}
