//! Whole-image inference: tiles that are padded and blended so the result matches an untiled
//! run, and a tile size chosen from a memory budget.
//!
//! Each tile's input window is its core plus `pad` pixels of real image context on every side
//! that has image there; the network's output on the margin is cropped away (Real-ESRGAN's
//! `tile_pad`), so a tile's border pixels see the same neighbourhood as in an untiled run.
//! Neighbouring cores overlap by `overlap` pixels, where the two outputs are blended with
//! linear weights that sum to one. Tile starts, the pad and the overlap are multiples of the
//! network's size multiple, so every window falls on the same down-sampling grid as the whole
//! image. What remains is the context beyond `pad` and, for the U-Net, the align-corners
//! upsampling, whose sampling positions depend on the feature map's size (a fraction of a
//! pixel at the coarse levels), so no tiling equals an untiled run exactly; `tests/tiles.rs`
//! measures and bounds the difference. NAFNet's channel attention pools over the whole
//! input, so its tiles can differ more.

use candle_core::Device;
use daa_backbones::{Backbone, BackboneConfig};
use daa_degrade::Image;
use daa_diffusion::ValueRange;

use crate::{Error, Result};

/// How large images are cut for inference so that memory stays bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TileConfig {
    /// Core tile side in pixels (images no larger than this run whole). 0 disables tiling.
    /// Rounded down to the network's size multiple.
    pub tile: usize,
    /// Overlap between neighbouring cores, blended linearly (rounded up to the size multiple).
    pub overlap: usize,
    /// Context added around each tile and cropped from its output (rounded up to the size
    /// multiple).
    pub pad: usize,
}

impl Default for TileConfig {
    /// 512-pixel tiles, 16-pixel blended overlap, 64 pixels of context.
    fn default() -> Self {
        Self {
            tile: 512,
            overlap: 16,
            pad: 64,
        }
    }
}

impl TileConfig {
    /// The tiling actually used for a network of size multiple `m`: the tile rounded down,
    /// the overlap and pad rounded up to multiples of `m`. A tile smaller than `m + pad`, or
    /// not larger than twice the overlap, is an error naming the smallest tile accepted.
    pub fn resolve(&self, m: usize) -> Result<Self> {
        let m = m.max(1);
        let up = |v: usize| v.div_ceil(m) * m;
        let out = Self {
            tile: self.tile / m * m,
            overlap: up(self.overlap),
            pad: up(self.pad),
        };
        if self.tile == 0 {
            return Ok(Self { tile: 0, ..out });
        }
        let (for_pad, for_overlap) = (m + out.pad, 2 * out.overlap + m);
        let min = for_pad.max(for_overlap);
        if out.tile < min {
            // Name the setting that sets the minimum: a huge --overlap is not the tile's fault.
            let why = if for_overlap > for_pad {
                format!(
                    "an overlap of {} needs tiles of at least {min}: lower --overlap or raise --tile",
                    out.overlap
                )
            } else {
                format!("the smallest is {min} (size multiple {m}, pad {})", out.pad)
            };
            return Err(Error::Config(format!(
                "tile {} is too small for this network: {why}",
                self.tile
            )));
        }
        Ok(out)
    }
}

/// Estimated peak memory of one forward pass, in bytes per input pixel (activations that are
/// alive at once at full resolution, f32), for inference with the conv's scratch memory
/// bounded (im2col in chunks). Used to pick a tile size from a budget; `docs` and the README
/// give measured peaks.
pub fn bytes_per_pixel(cfg: &BackboneConfig) -> u64 {
    // Calibrated on measured peak RSS (`/usr/bin/time -v daa restore` on a 2000x1500 image,
    // 256- and 384-pixel windows, README): with the current conv (im2col not chunked) the U-Net
    // peaks at about 167 * width f32 values per window pixel (42.7 KB for the paper's width 64,
    // 10.5 KB for width 16). DnCNN and NAFNet are not measured; their counts of live tensors
    // are scaled by the same factor over the analytic count.
    let floats = match cfg {
        BackboneConfig::UNet(c) => 84 * c.width + 16,
        BackboneConfig::DnCnn(c) => 36 * c.width + 16,
        BackboneConfig::NafNet(c) => 72 * c.width + 16,
        // The analytic count of live tensors times the U-Net's measured factor (about 9) fell
        // 4-8x short of measured peaks (smoke checkpoints, 320x252 image: Restormer 1.96 GB at
        // --max-memory 256M and 3.75 GB at 1G, Uformer 1.70 GB at 512M), so both carry a
        // further factor of 4: still an estimate, calibrated on those three runs only.
        // Restormer: a block's input, the GDFN's two expanded branches (2 * 2.66 W) and the
        // attention's q/k/v (3W) at full resolution, ~12W.
        BackboneConfig::Restormer(c) => 4 * 9 * 12 * c.dim + 16,
        // Uformer: a LeWin block's input, q/k/v, the LeFF hidden layer (mlp_ratio * W) and
        // each head's window attention map (win^2 values per pixel per head).
        BackboneConfig::Uformer(c) => {
            4 * 9
                * ((6.0 * c.embed_dim as f64 + c.mlp_ratio * c.embed_dim as f64) as usize
                    + c.win_size * c.win_size * c.num_heads.first().copied().unwrap_or(1))
                + 16
        }
    };
    2 * 4 * floats as u64
}

/// The largest core tile (a multiple of the size multiple) whose padded window fits
/// `budget` bytes by [`bytes_per_pixel`]; at least the smallest tile [`TileConfig::resolve`]
/// accepts.
pub fn tile_for_budget(cfg: &BackboneConfig, budget: u64, overlap: usize, pad: usize) -> usize {
    let m = cfg.size_multiple().max(1);
    let pixels = budget / bytes_per_pixel(cfg).max(1);
    let side = (pixels as f64).sqrt() as usize;
    let pad = pad.div_ceil(m) * m;
    let overlap = overlap.div_ceil(m) * m;
    let min = (m + pad).max(2 * overlap + m);
    (side.saturating_sub(2 * pad) / m * m).max(min)
}

/// Core spans `[start, end)` along one side: starts on multiples of the stride, the last one
/// clipped at `len`.
fn spans(len: usize, tile: usize, overlap: usize) -> Vec<(usize, usize)> {
    if len <= tile {
        return vec![(0, len)];
    }
    let stride = tile - overlap;
    let mut out = Vec::new();
    let mut s = 0;
    loop {
        let e = (s + tile).min(len);
        out.push((s, e));
        if e == len {
            return out;
        }
        s += stride;
    }
}

/// Blend weight of position `x` in core `(s, e)` of a side of length `len`: ramps over the
/// overlap towards a neighbour, 1 elsewhere. Neighbours' ramps sum to one.
fn weight(x: usize, (s, e): (usize, usize), len: usize, overlap: usize) -> f32 {
    if overlap == 0 {
        return 1.0;
    }
    let mut w = 1f32;
    if s > 0 && x < s + overlap {
        w = w.min(((x - s) as f32 + 0.5) / overlap as f32);
    }
    if e < len && x + overlap >= e {
        w = w.min(((e - x) as f32 - 0.5) / overlap as f32);
    }
    w
}

/// Restores one `[0, 1]` image with `net` (`x + R(x)`, clamped to `[0, 1]`), in padded,
/// blended tiles when it is larger than `tiles.tile` (see the module docs). `range` is the
/// value range `net` was trained in (`daa::restorer_range` reads it from a checkpoint): the
/// image is mapped into it before the network and back to `[0, 1]` after. Errors for a tile too
/// small for the network.
pub fn restore_image(
    net: &Backbone,
    img: &Image,
    device: &Device,
    tiles: TileConfig,
    range: ValueRange,
) -> Result<Image> {
    let tiles = tiles.resolve(net.size_multiple())?;
    let (w, h) = (img.width(), img.height());
    let run = |t: &Image| -> Result<Image> {
        let xs = range.from_unit(&t.to_tensor()?.to_device(device)?)?;
        let ys = range
            .to_unit(&net.restore(&xs, false)?)?
            .clamp(0f32, 1f32)?;
        Ok(Image::from_tensor(&ys.to_device(&Device::Cpu)?)?)
    };
    if tiles.tile == 0 || (w <= tiles.tile && h <= tiles.tile) {
        return run(img);
    }
    let (ov, pad) = (tiles.overlap, tiles.pad);
    let mut sum = vec![0f32; 3 * w * h];
    let mut wsum = vec![0f32; w * h];
    let xs_spans = spans(w, tiles.tile, ov);
    let ys_spans = spans(h, tiles.tile, ov);
    for &ys_span in &ys_spans {
        for &xs_span in &xs_spans {
            let (x0, x1) = (xs_span.0.saturating_sub(pad), (xs_span.1 + pad).min(w));
            let (y0, y1) = (ys_span.0.saturating_sub(pad), (ys_span.1 + pad).min(h));
            // (3, y1-y0, x1-x0) window -> the same size restored; only the core is kept.
            let out = run(&img.crop(x0, y0, x1 - x0, y1 - y0))?;
            for y in ys_span.0..ys_span.1 {
                let wy = weight(y, ys_span, h, ov);
                for x in xs_span.0..xs_span.1 {
                    let wxy = wy * weight(x, xs_span, w, ov);
                    wsum[y * w + x] += wxy;
                    for c in 0..3 {
                        sum[(c * h + y) * w + x] += wxy * out.get(c, y - y0, x - x0);
                    }
                }
            }
        }
    }
    for c in 0..3 {
        for i in 0..w * h {
            sum[c * w * h + i] /= wsum[i];
        }
    }
    Ok(Image::from_planar(w, h, sum)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_cover_the_side_and_overlap_by_the_overlap() {
        assert_eq!(spans(100, 128, 16), vec![(0, 100)]);
        assert_eq!(spans(300, 128, 32), vec![(0, 128), (96, 224), (192, 300)]);
        assert_eq!(spans(128, 128, 32), vec![(0, 128)]);
        assert_eq!(spans(129, 128, 32), vec![(0, 128), (96, 129)]);
        assert_eq!(spans(300, 128, 0), vec![(0, 128), (128, 256), (256, 300)]);
    }

    #[test]
    fn blend_weights_sum_to_one_everywhere() {
        for (len, tile, ov) in [(300, 128, 32), (129, 128, 32), (1000, 64, 16), (77, 24, 8)] {
            let sp = spans(len, tile, ov);
            for x in 0..len {
                let total: f32 = sp
                    .iter()
                    .filter(|&&(s, e)| s <= x && x < e)
                    .map(|&span| weight(x, span, len, ov))
                    .sum();
                assert!((total - 1.0).abs() < 1e-6, "len {len} x {x}: {total}");
            }
        }
    }

    #[test]
    fn tiles_too_small_for_the_network_are_refused() {
        let t = |tile, overlap, pad| TileConfig { tile, overlap, pad };
        assert!(t(1, 0, 0).resolve(8).is_err());
        assert!(t(16, 0, 32).resolve(8).is_err());
        assert!(t(32, 16, 32).resolve(8).is_err());
        let blame = |c: TileConfig| {
            c.resolve(8)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(blame(t(64, 1000, 32)).contains("overlap of 1000 needs tiles of at least 2008"));
        assert!(blame(t(16, 0, 32)).contains("smallest is 40 (size multiple 8, pad 32)"));
        assert_eq!(t(50, 3, 30).resolve(8).ok(), Some(t(48, 8, 32)));
        assert_eq!(t(0, 3, 30).resolve(8).ok(), Some(t(0, 8, 32)));
    }
}
