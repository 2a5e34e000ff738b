//! Correlated, signal-dependent noise plus JPEG: a cheap stand-in for the camera pipeline of
//! `camera.rs`.

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::blur_kernel::{gaussian_kernel, separable_blur};
use crate::jpeg::{jpeg_ok, maybe_jpeg};
use crate::ranges::draw;
use crate::{Error, Image, Result};

/// A proxy for real sensor noise after a camera pipeline, the default target ("real") domain
/// of the denoising presets: signal-dependent (shot + read) noise, spatially correlated (as
/// demosaicing and denoising in a camera make it), partly shared across channels, then JPEG.
///
/// Per pixel and channel, `n = sqrt(read^2 + shot * x) * z` where `z` is unit-variance noise
/// made by blurring white noise with a Gaussian of `correlation` pixels (renormalised to unit
/// variance) and mixing a luminance component shared by the three channels with weight
/// `channel_mix`. `read` and `shot` are drawn per image from their ranges (8-bit units for
/// `read`; `shot` in `[0, 1]` units, so `shot * x` is a variance). The result is clamped to
/// `[0, 1]` and JPEG-compressed with a quality drawn from `jpeg_quality` (0 disables JPEG).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorrelatedNoiseParams {
    /// Read-noise sigma range, 8-bit units.
    pub read: [f32; 2],
    /// Shot-noise gain range (variance per unit signal).
    pub shot: [f32; 2],
    /// Gaussian correlation radius (sigma of the blur of the white noise), pixels.
    pub correlation: f32,
    /// Weight of the luminance noise shared by R, G, B (0: independent channels).
    pub channel_mix: f32,
    /// JPEG quality range (inclusive); `[0, 0]` for no JPEG.
    pub jpeg_quality: [u8; 2],
}

impl CorrelatedNoiseParams {
    /// The denoising presets' target domain: read 2-10, shot 0.002-0.02, correlation 0.8 px,
    /// channel mix 0.5, JPEG quality 75-95.
    pub fn camera_proxy() -> Self {
        Self {
            read: [2.0, 10.0],
            shot: [0.002, 0.02],
            correlation: 0.8,
            channel_mix: 0.5,
            jpeg_quality: [75, 95],
        }
    }

    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        let ordered =
            |r: [f32; 2]| r[0].is_finite() && r[1].is_finite() && 0.0 <= r[0] && r[0] <= r[1];
        if !ordered(self.read) || !ordered(self.shot) {
            return Err(Error::Param(format!(
                "correlated noise ranges must be ordered and >= 0: {self:?}"
            )));
        }
        if !(0.0..=5.0).contains(&self.correlation) || !(0.0..=1.0).contains(&self.channel_mix) {
            return Err(Error::Param(format!(
                "correlation must be in [0, 5] and channel_mix in [0, 1]: {self:?}"
            )));
        }
        jpeg_ok(self.jpeg_quality)?;
        Ok(())
    }
}

/// A `w x h` field of unit-variance Gaussian noise with spatial correlation `sigma` (pixels).
fn correlated_field(w: usize, h: usize, sigma: f32, rng: &mut impl Rng) -> Vec<f32> {
    let white: Vec<f32> = (0..w * h).map(|_| StandardNormal.sample(rng)).collect();
    if sigma <= 0.0 {
        return white;
    }
    let k = gaussian_kernel(sigma);
    // The 2-D kernel is k x k, so the output variance is (sum k^2)^2 times the input's:
    // divide by sqrt(sum k^2) once per pass.
    let norm = k.iter().map(|v| v * v).sum::<f32>().sqrt();
    separable_blur(&white, w, h, &k, norm)
}

/// Applies [`CorrelatedNoiseParams`] to `img`.
pub fn correlated_noise(
    img: &Image,
    p: &CorrelatedNoiseParams,
    rng: &mut impl Rng,
) -> Result<Image> {
    let (w, h) = (img.width(), img.height());
    let n = w * h;
    let read = draw(p.read, rng) / 255.0;
    let shot = draw(p.shot, rng);
    let shared = correlated_field(w, h, p.correlation, rng);
    let (a, b) = (p.channel_mix.sqrt(), (1.0 - p.channel_mix).sqrt());
    let mut out = img.clone();
    for c in 0..3 {
        let own = correlated_field(w, h, p.correlation, rng);
        let plane = &mut out.data_mut()[c * n..(c + 1) * n];
        for i in 0..n {
            let x = plane[i].clamp(0.0, 1.0);
            let sigma = (read * read + shot * x).sqrt();
            plane[i] = (plane[i] + sigma * (a * shared[i] + b * own[i])).clamp(0.0, 1.0);
        }
    }
    maybe_jpeg(out, p.jpeg_quality, rng)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_grows_with_signal_and_is_spatially_correlated() {
        let p = CorrelatedNoiseParams {
            read: [2.0, 2.0],
            shot: [0.02, 0.02],
            jpeg_quality: [0, 0],
            ..CorrelatedNoiseParams::camera_proxy()
        };
        let mut rng = crate::sample_rng(0, 0, 0);
        let stats = |level: f32, rng: &mut rand_chacha::ChaCha8Rng| {
            let img = Image::filled(96, 96, [level; 3]);
            let out = correlated_noise(&img, &p, rng).unwrap_or_else(|_| img.clone());
            let d: Vec<f32> = out.plane(1).iter().map(|v| v - level).collect();
            let var = d.iter().map(|v| v * v).sum::<f32>() / d.len() as f32;
            // Correlation of horizontal neighbours.
            let mut cov = 0.0;
            for y in 0..96 {
                for x in 0..95 {
                    cov += d[y * 96 + x] * d[y * 96 + x + 1];
                }
            }
            (var, cov / (96.0 * 95.0) / var)
        };
        let (var_dark, rho) = stats(0.2, &mut rng);
        let (var_bright, _) = stats(0.7, &mut rng);
        assert!(var_bright > 2.0 * var_dark, "{var_dark} {var_bright}");
        assert!(rho > 0.3, "neighbour correlation {rho}");
    }

    #[test]
    fn same_seed_same_image() {
        let img = Image::filled(24, 16, [0.4, 0.5, 0.6]);
        let p = CorrelatedNoiseParams::camera_proxy();
        let a = correlated_noise(&img, &p, &mut crate::sample_rng(3, 0, 1))
            .unwrap_or_else(|_| img.clone());
        let b = correlated_noise(&img, &p, &mut crate::sample_rng(3, 0, 1))
            .unwrap_or_else(|_| img.clone());
        assert_eq!(a, b);
        assert_ne!(a, img);
        assert!(CorrelatedNoiseParams {
            jpeg_quality: [90, 80],
            ..p
        }
        .validate()
        .is_err());
    }
}
