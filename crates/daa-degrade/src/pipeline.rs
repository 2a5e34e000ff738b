use rand::Rng;

use crate::{awgn, correlated_noise, AwgnParams, CorrelatedNoiseParams, Image, Result};

/// A degradation: documented parameters, applied as a pure function of `(image, params, rng)`.
///
/// Serialised with a `kind` tag, e.g. `{"kind": "awgn", "sigma_min": 0, "sigma_max": 75}`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Degradation {
    /// Additive white Gaussian noise ([`AwgnParams`]).
    Awgn(AwgnParams),
    /// Signal-dependent, spatially correlated noise plus JPEG ([`CorrelatedNoiseParams`]).
    CorrelatedNoise(CorrelatedNoiseParams),
}

impl Degradation {
    /// Validates the parameters.
    pub fn validate(&self) -> Result<()> {
        match self {
            Self::Awgn(p) => p.validate(),
            Self::CorrelatedNoise(p) => p.validate(),
        }
    }

    /// Degrades `img`. The same image, parameters and RNG state give the same output.
    pub fn apply(&self, img: &Image, rng: &mut impl Rng) -> Result<Image> {
        match self {
            Self::Awgn(p) => Ok(awgn(img, p, rng).0),
            Self::CorrelatedNoise(p) => correlated_noise(img, p, rng),
        }
    }

    /// A short name for logs and file names.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Awgn(_) => "awgn",
            Self::CorrelatedNoise(_) => "correlated_noise",
        }
    }

    /// The paper's denoising source degradation, AWGN `U[0, 75] / 255`.
    pub fn denoise_source() -> Self {
        Self::Awgn(AwgnParams::paper())
    }
}

impl Degradation {
    /// The denoising presets' target ("real") domain: [`CorrelatedNoiseParams::camera_proxy`].
    pub fn denoise_target() -> Self {
        Self::CorrelatedNoise(CorrelatedNoiseParams::camera_proxy())
    }
}
