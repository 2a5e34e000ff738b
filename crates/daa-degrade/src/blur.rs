//! Blur degradations: the source and target domains of deblurring.

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::blur_kernel::{convolve, BlurKernel};
use crate::jpeg::{jpeg_ok, maybe_jpeg};
use crate::ranges::{draw, ordered};
use crate::srgb::{to_linear, to_srgb};
use crate::{Image, Result};

/// Adds Gaussian noise of standard deviation `sigma` and clamps to `[0, 1]`.
fn add_noise(mut img: Image, sigma: f32, rng: &mut impl Rng) -> Image {
    for v in img.data_mut() {
        let z: f32 = StandardNormal.sample(rng);
        *v = (*v + sigma * z).clamp(0.0, 1.0);
    }
    img
}

/// Deblurring source domain (GoPro-like pairs): uniform blur by a random linear motion of
/// `length` pixels at a uniform random angle, plus slight Gaussian noise (8-bit units).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MotionBlurParams {
    /// Motion length range, pixels.
    pub length: [f32; 2],
    /// Noise sigma range, 8-bit units.
    pub noise: [f32; 2],
}

impl MotionBlurParams {
    /// Lengths 3-15 px, noise 0-2.
    pub fn source() -> Self {
        Self {
            length: [3.0, 15.0],
            noise: [0.0, 2.0],
        }
    }
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        ordered("length", self.length, 1.0, 64.0)?;
        ordered("noise", self.noise, 0.0, 255.0)
    }
    /// Applies the degradation.
    pub fn apply(&self, img: &Image, rng: &mut impl Rng) -> Result<Image> {
        let k = BlurKernel::linear(
            draw(self.length, rng),
            rng.random_range(0.0..std::f32::consts::PI),
        );
        Ok(add_noise(
            convolve(img, &k)?,
            draw(self.noise, rng) / 255.0,
            rng,
        ))
    }
}

/// Deblurring target domain ("shake", RealBlur-like): a random camera-shake trajectory applied
/// in linear light, where highlights (values near white) are boosted by up to `highlight_gain`
/// before the blur and clipped after it, as saturated light sources are in real photos; then
/// mild noise and JPEG.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShakeParams {
    /// Trajectory extent range, pixels.
    pub length: [f32; 2],
    /// Highlight boost range (1: no clipping).
    pub highlight_gain: [f32; 2],
    /// Noise sigma range, 8-bit units.
    pub noise: [f32; 2],
    /// JPEG quality range; `[0, 0]` for none.
    pub jpeg_quality: [u8; 2],
}

impl ShakeParams {
    /// Extents 5-17 px, highlight gain 1-3, noise 1-3, JPEG 80-95.
    pub fn target() -> Self {
        Self {
            length: [5.0, 17.0],
            highlight_gain: [1.0, 3.0],
            noise: [1.0, 3.0],
            jpeg_quality: [80, 95],
        }
    }
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        ordered("length", self.length, 1.0, 64.0)?;
        ordered("highlight_gain", self.highlight_gain, 1.0, 16.0)?;
        ordered("noise", self.noise, 0.0, 255.0)?;
        jpeg_ok(self.jpeg_quality)
    }
    /// Applies the degradation.
    pub fn apply(&self, img: &Image, rng: &mut impl Rng) -> Result<Image> {
        let gain = draw(self.highlight_gain, rng);
        let lin = img.clone().map(|v| {
            let l = to_linear(v.clamp(0.0, 1.0));
            let t = ((l - 0.8) / 0.2).clamp(0.0, 1.0);
            l * (1.0 + (gain - 1.0) * t * t * (3.0 - 2.0 * t))
        });
        let k = BlurKernel::shake(draw(self.length, rng), rng);
        let blurred = convolve(&lin, &k)?.map(to_srgb);
        let noisy = add_noise(blurred, draw(self.noise, rng) / 255.0, rng);
        maybe_jpeg(noisy, self.jpeg_quality, rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn photo() -> Image {
        let (w, h) = (40, 32);
        let data = (0..3 * w * h)
            .map(|i| ((i * 37) % 200) as f32 / 255.0 + 0.1)
            .collect();
        Image::from_planar(w, h, data).unwrap_or_else(|_| Image::filled(1, 1, [0.0; 3]))
    }

    #[test]
    fn kernels_sum_to_one() {
        let mut rng = crate::sample_rng(0, 0, 0);
        for k in [
            BlurKernel::linear(9.0, 0.3),
            BlurKernel::linear(1.0, 0.0),
            BlurKernel::shake(15.0, &mut rng),
        ] {
            let s: f32 = k.weights().iter().sum();
            assert!((s - 1.0).abs() < 1e-5, "{s}");
            assert!(k.weights().iter().all(|w| *w >= 0.0));
            assert_eq!(k.size() % 2, 1);
        }
    }

    #[test]
    fn blur_keeps_a_flat_image_flat() -> Result<()> {
        let flat = Image::filled(20, 16, [0.3, 0.5, 0.7]);
        let out = convolve(&flat, &BlurKernel::linear(7.0, 1.0))?;
        assert!(out
            .data()
            .iter()
            .zip(flat.data())
            .all(|(a, b)| (a - b).abs() < 1e-5));
        Ok(())
    }

    #[test]
    fn blurs_keep_the_size_and_change_the_image() -> Result<()> {
        let img = photo();
        for (name, out) in [
            (
                "motion",
                MotionBlurParams::source().apply(&img, &mut crate::sample_rng(2, 0, 0))?,
            ),
            (
                "shake",
                ShakeParams::target().apply(&img, &mut crate::sample_rng(2, 0, 0))?,
            ),
        ] {
            assert_eq!((out.width(), out.height()), (40, 32), "{name}");
            assert_ne!(out, img, "{name}");
        }
        assert!(MotionBlurParams {
            length: [9.0, 3.0],
            ..MotionBlurParams::source()
        }
        .validate()
        .is_err());
        Ok(())
    }
}
