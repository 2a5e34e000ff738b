use candle_core::Device;
use daa_backbones::Backbone;
use daa_degrade::Image;

use crate::{Error, Result};

/// How large images are cut for inference so that memory stays bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TileConfig {
    /// Tile side in pixels (images no larger than this run whole). 0 disables tiling.
    pub tile: usize,
    /// Overlap between neighbouring tiles, averaged in the output.
    pub overlap: usize,
}

impl Default for TileConfig {
    /// 512-pixel tiles with a 32-pixel overlap: a few hundred MB for the paper's U-Net.
    fn default() -> Self {
        Self {
            tile: 512,
            overlap: 32,
        }
    }
}

fn starts(len: usize, tile: usize, overlap: usize) -> Vec<usize> {
    if len <= tile {
        return vec![0];
    }
    let stride = tile - overlap;
    let mut s: Vec<usize> = (0..)
        .map(|i| i * stride)
        .take_while(|&p| p + tile < len)
        .collect();
    s.push(len - tile);
    s
}

/// Restores one image with `net` (`x + R(x)`, clamped to `[0, 1]`), in overlapping tiles when
/// it is larger than `tiles.tile`. Each tile is replicate-padded to the network's size multiple.
pub fn restore_image(
    net: &Backbone,
    img: &Image,
    device: &Device,
    tiles: TileConfig,
) -> Result<Image> {
    let (w, h) = (img.width(), img.height());
    if tiles.tile > 0 && tiles.overlap >= tiles.tile {
        return Err(Error::Config(format!(
            "tile overlap {} must be smaller than the tile {}",
            tiles.overlap, tiles.tile
        )));
    }
    let run = |t: &Image| -> Result<Image> {
        let xs = t.to_tensor()?.to_device(device)?;
        let ys = net.restore(&xs, false)?.clamp(0f32, 1f32)?;
        Ok(Image::from_tensor(&ys.to_device(&Device::Cpu)?)?)
    };
    if tiles.tile == 0 || (w <= tiles.tile && h <= tiles.tile) {
        return run(img);
    }
    let (tw, th) = (tiles.tile.min(w), tiles.tile.min(h));
    let mut sum = vec![0f32; 3 * w * h];
    let mut count = vec![0f32; w * h];
    for &y0 in &starts(h, th, tiles.overlap) {
        for &x0 in &starts(w, tw, tiles.overlap) {
            let out = run(&img.crop(x0, y0, tw, th))?;
            for c in 0..3 {
                for y in 0..th {
                    for x in 0..tw {
                        sum[(c * h + y0 + y) * w + x0 + x] += out.get(c, y, x);
                        if c == 0 {
                            count[(y0 + y) * w + x0 + x] += 1.0;
                        }
                    }
                }
            }
        }
    }
    for c in 0..3 {
        for i in 0..w * h {
            sum[c * w * h + i] /= count[i];
        }
    }
    Ok(Image::from_planar(w, h, sum)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_starts_cover_the_image() {
        assert_eq!(starts(100, 128, 16), vec![0]);
        assert_eq!(starts(300, 128, 32), vec![0, 96, 172]);
        assert_eq!(starts(128, 128, 32), vec![0]);
        assert_eq!(starts(129, 128, 32), vec![0, 1]);
    }
}
