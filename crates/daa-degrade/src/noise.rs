use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::{Error, Image, Result};

/// Additive white Gaussian noise, sigma drawn per image from `U[sigma_min, sigma_max] / 255`.
///
/// The paper's denoising source domain is `sigma ~ U[0, 75] / 255`. The noisy image is not
/// clamped (as in the paper's on-the-fly synthesis).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwgnParams {
    /// Lower bound of sigma, in 8-bit units (0..=255).
    pub sigma_min: f32,
    /// Upper bound of sigma, in 8-bit units (0..=255).
    pub sigma_max: f32,
}

impl AwgnParams {
    /// The paper's range, `U[0, 75] / 255`.
    pub fn paper() -> Self {
        Self {
            sigma_min: 0.0,
            sigma_max: 75.0,
        }
    }

    /// Checks `0 <= sigma_min <= sigma_max <= 255`.
    pub fn validate(&self) -> Result<()> {
        let ok = self.sigma_min.is_finite()
            && self.sigma_max.is_finite()
            && 0.0 <= self.sigma_min
            && self.sigma_min <= self.sigma_max
            && self.sigma_max <= 255.0;
        if ok {
            Ok(())
        } else {
            Err(Error::Param(format!(
                "awgn sigma range [{}, {}] must satisfy 0 <= min <= max <= 255",
                self.sigma_min, self.sigma_max
            )))
        }
    }
}

/// Adds AWGN to `img`; returns the noisy image and the sigma used (in `[0, 1]` units).
pub fn awgn(img: &Image, params: &AwgnParams, rng: &mut impl Rng) -> (Image, f32) {
    let sigma = if params.sigma_max > params.sigma_min {
        rng.random_range(params.sigma_min..=params.sigma_max)
    } else {
        params.sigma_min
    } / 255.0;
    let mut out = img.clone();
    for v in out.data_mut() {
        let z: f32 = StandardNormal.sample(rng);
        *v += sigma * z;
    }
    (out, sigma)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_std_matches_sigma() {
        let img = Image::filled(128, 128, [0.5; 3]);
        let p = AwgnParams {
            sigma_min: 25.0,
            sigma_max: 25.0,
        };
        let mut rng = crate::sample_rng(1, 0, 0);
        let (noisy, sigma) = awgn(&img, &p, &mut rng);
        assert!((sigma - 25.0 / 255.0).abs() < 1e-7);
        let n = noisy.data().len() as f64;
        let var: f64 = noisy
            .data()
            .iter()
            .map(|v| (*v as f64 - 0.5).powi(2))
            .sum::<f64>()
            / n;
        let std = var.sqrt();
        assert!((std - 25.0 / 255.0).abs() < 0.002, "std {std}");
    }

    #[test]
    fn bad_range_is_rejected() {
        assert!(AwgnParams {
            sigma_min: 10.0,
            sigma_max: 5.0
        }
        .validate()
        .is_err());
        assert!(AwgnParams {
            sigma_min: -1.0,
            sigma_max: 5.0
        }
        .validate()
        .is_err());
        assert!(AwgnParams::paper().validate().is_ok());
    }
}
