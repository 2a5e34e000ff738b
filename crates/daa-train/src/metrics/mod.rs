//! PSNR and SSIM with explicit conventions (BasicSR's), accumulated in `f64`.
//!
//! Both take [`daa_degrade::Image`]s in `[0, 1]`. With `quantize` (the default), values are
//! clamped to `[0, 1]` and rounded to 8-bit levels first, as saved result images would be
//! (the reference release truncates without clamping; we do not). The Y channel is
//! ITU-R BT.601: `Y = 16 + 65.481 R + 128.553 G + 24.966 B` on the 0..255 scale, not rounded.
//! `crop_border` pixels are removed on each side before measuring.

mod psnr;
mod ssim;

pub use psnr::psnr;
pub use ssim::ssim;

use daa_degrade::Image;

/// How to measure: the metric conventions as explicit arguments.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricConfig {
    /// Pixels removed from each border before measuring.
    pub crop_border: usize,
    /// Measure on the BT.601 Y channel instead of RGB.
    pub y_channel: bool,
    /// Clamp and round to 8-bit levels first.
    pub quantize: bool,
}

impl MetricConfig {
    /// RGB, no crop, quantised: the paper's denoising/deblurring convention.
    pub fn rgb() -> Self {
        Self {
            crop_border: 0,
            y_channel: false,
            quantize: true,
        }
    }
    /// Y channel, no crop, quantised: the paper's deraining convention.
    pub fn y() -> Self {
        Self {
            y_channel: true,
            ..Self::rgb()
        }
    }
}

/// The planes to measure, on the 0..255 scale: 3 RGB planes or 1 Y plane, cropped.
pub(crate) fn planes(img: &Image, cfg: &MetricConfig) -> (Vec<Vec<f64>>, usize, usize) {
    let (w, h) = (img.width(), img.height());
    let b = cfg.crop_border;
    let (cw, ch) = (w.saturating_sub(2 * b), h.saturating_sub(2 * b));
    let level = |v: f32| -> f64 {
        if cfg.quantize {
            (v.clamp(0.0, 1.0) * 255.0).round() as f64
        } else {
            v as f64 * 255.0
        }
    };
    let mut rgb: Vec<Vec<f64>> = (0..3).map(|_| Vec::with_capacity(cw * ch)).collect();
    for (c, plane) in rgb.iter_mut().enumerate() {
        for y in b..b + ch {
            for x in b..b + cw {
                plane.push(level(img.get(c, y, x)));
            }
        }
    }
    if cfg.y_channel {
        let y: Vec<f64> = (0..cw * ch)
            .map(|i| 16.0 + (65.481 * rgb[0][i] + 128.553 * rgb[1][i] + 24.966 * rgb[2][i]) / 255.0)
            .collect();
        (vec![y], cw, ch)
    } else {
        (rgb, cw, ch)
    }
}

/// Running mean of a per-image metric (burn-style `update` / `compute` / `reset`), in `f64`.
#[derive(Debug, Clone, Default)]
pub struct Mean {
    sum: f64,
    n: usize,
}

impl Mean {
    /// Adds one value.
    pub fn update(&mut self, value: f64) {
        self.sum += value;
        self.n += 1;
    }
    /// The mean so far (NaN when empty).
    pub fn compute(&self) -> f64 {
        self.sum / self.n as f64
    }
    /// Forgets everything.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}
