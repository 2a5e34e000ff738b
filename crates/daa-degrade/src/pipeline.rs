use rand::Rng;

use crate::{
    awgn, camera_noise, correlated_noise, AwgnParams, CameraParams, CorrelatedNoiseParams, Image,
    MotionBlurParams, RainParams, Result, ShakeParams, StormParams,
};

/// A degradation: documented parameters, applied as a pure function of `(image, params, rng)`.
///
/// Serialised with a `kind` tag, e.g. `{"kind": "awgn", "sigma_min": 0, "sigma_max": 75}`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Degradation {
    /// Additive white Gaussian noise ([`AwgnParams`]).
    Awgn(AwgnParams),
    /// Signal-dependent, spatially correlated noise plus JPEG ([`CorrelatedNoiseParams`]), a
    /// cheap stand-in for [`Degradation::Camera`].
    CorrelatedNoise(CorrelatedNoiseParams),
    /// Raw sensor noise through a camera pipeline ([`CameraParams`]), denoising target.
    Camera(CameraParams),
    /// Linear motion blur plus slight noise ([`MotionBlurParams`]), deblurring source.
    MotionBlur(MotionBlurParams),
    /// Camera shake in linear light with clipped highlights, noise, JPEG ([`ShakeParams`]).
    Shake(ShakeParams),
    /// One layer of additive streaks ([`RainParams`]), deraining source.
    Rain(RainParams),
    /// Several streak layers, haze, JPEG ([`StormParams`]), deraining target.
    Storm(StormParams),
}

impl Degradation {
    /// Validates the parameters.
    pub fn validate(&self) -> Result<()> {
        match self {
            Self::Awgn(p) => p.validate(),
            Self::CorrelatedNoise(p) => p.validate(),
            Self::Camera(p) => p.validate(),
            Self::MotionBlur(p) => p.validate(),
            Self::Shake(p) => p.validate(),
            Self::Rain(p) => p.validate(),
            Self::Storm(p) => p.validate(),
        }
    }

    /// Degrades `img`. The same image, parameters and RNG state give the same output.
    pub fn apply(&self, img: &Image, rng: &mut impl Rng) -> Result<Image> {
        match self {
            Self::Awgn(p) => Ok(awgn(img, p, rng).0),
            Self::CorrelatedNoise(p) => correlated_noise(img, p, rng),
            Self::Camera(p) => camera_noise(img, p, rng),
            Self::MotionBlur(p) => p.apply(img, rng),
            Self::Shake(p) => p.apply(img, rng),
            Self::Rain(p) => p.apply(img, rng),
            Self::Storm(p) => p.apply(img, rng),
        }
    }

    /// A short name for logs and file names.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Awgn(_) => "awgn",
            Self::CorrelatedNoise(_) => "correlated_noise",
            Self::Camera(_) => "camera",
            Self::MotionBlur(_) => "motion_blur",
            Self::Shake(_) => "shake",
            Self::Rain(_) => "rain",
            Self::Storm(_) => "storm",
        }
    }

    /// The paper's denoising source degradation, AWGN `U[0, 75] / 255`.
    pub fn denoise_source() -> Self {
        Self::Awgn(AwgnParams::paper())
    }
}

impl Degradation {
    /// The denoising presets' target ("real") domain: [`CameraParams::camera`].
    pub fn denoise_target() -> Self {
        Self::Camera(CameraParams::camera())
    }
}
