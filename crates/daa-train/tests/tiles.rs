//! Tiled inference equals untiled inference within one grey level (8-bit), for the paper's
//! U-Net with random weights and for a small trained model, with tiles small enough that every
//! image is cut into several padded, blended tiles.

use candle_core::{DType, Device};
use candle_nn::VarMap;
use daa_backbones::{BackboneConfig, UNetConfig};
use daa_degrade::Image;
use daa_train::{load_restorer, restore_image, seeded_var_builder, train, TileConfig, TrainConfig};

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

fn check(net: &daa_backbones::Backbone, img: &Image, tiles: TileConfig) {
    let whole = restore_image(net, img, &Device::Cpu, TileConfig { tile: 0, ..tiles })
        .unwrap_or_else(|e| panic!("{e}"));
    let tiled = restore_image(net, img, &Device::Cpu, tiles).unwrap_or_else(|e| panic!("{e}"));
    let (max, n_off) = diff_8bit(&whole, &tiled);
    assert!(
        max <= 1,
        "{tiles:?}: tiled differs from untiled by up to {max} grey levels ({n_off} values > 1)"
    );
}

#[test]
fn tiled_equals_untiled_for_the_paper_unet_with_random_weights() {
    let varmap = VarMap::new();
    let net = BackboneConfig::UNet(UNetConfig::paper())
        .build(seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu))
        .unwrap_or_else(|e| panic!("{e}"));
    // 136x104 in 48-pixel tiles: 4x3 tiles, each window up to 48 + 2 * 24.
    let img = test_image(136, 104);
    check(
        &net,
        &img,
        TileConfig {
            tile: 48,
            overlap: 8,
            pad: 24,
        },
    );
}

#[test]
fn tiled_equals_untiled_for_a_trained_model() {
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
    for tiles in [
        TileConfig {
            tile: 32,
            overlap: 8,
            pad: 16,
        },
        TileConfig {
            tile: 40,
            overlap: 0,
            pad: 24,
        },
    ] {
        check(&net, &img, tiles);
    }
}
