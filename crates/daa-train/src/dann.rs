//! DANN, the feature-space domain-adaptation baseline (Ganin and Lempitsky, "Unsupervised
//! Domain Adaptation by Backpropagation", ICML 2015, arXiv:1409.7495).
//!
//! A domain classifier reads the restorer's bottleneck features
//! ([`daa_backbones::Backbone::residual_and_features`]) through a gradient-reversal layer and
//! learns to tell source inputs (label 0) from target inputs (label 1) with a binary
//! cross-entropy on its logits. The classifier descends that loss; the reversal layer hands the
//! restorer the negated, scaled gradient, so the restorer ascends it and learns features the
//! classifier cannot separate. As in the paper, the reversal's coefficient ramps from 0 to
//! `lambda_max` and the classifier's own loss is not scaled; the ramp's curve and length are
//! those of noise-space adaptation's lambda ([`daa_diffusion::LambdaRamp`]), so the two
//! methods adapt on the same schedule. The step is `step::dann_step_losses`.
//!
//! What differs from the paper: its classifier is a 3-layer MLP on flat features of a
//! classification network; a restorer's bottleneck is a spatial map, so ours is two strided
//! 3x3 convolutions with LeakyReLU, a global average and a linear layer (its width is
//! [`DannSettings::hidden`]).

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Linear, VarBuilder, VarMap};

/// DANN's settings (used by `--method dann`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DannSettings {
    /// Channels of the domain classifier's convolutions.
    pub hidden: usize,
    /// Final coefficient of the gradient-reversal layer (the paper: 1), reached on the
    /// adaptation's lambda ramp.
    pub lambda_max: f64,
}

impl DannSettings {
    /// The paper's coefficient (1) and a 64-channel classifier.
    pub fn standard() -> Self {
        Self {
            hidden: 64,
            lambda_max: 1.0,
        }
    }
}

/// Each image's features standardised over channels and positions (zero mean, unit variance,
/// eps 1e-5), what the domain classifier sees. Without it the restorer, which the reversed
/// gradient asks to *raise* the classifier's loss, raised it without bound by scaling its
/// bottleneck up: in `cargo xtask reproduce --task denoise` the DANN run's restoration loss
/// reached 1e12 by step 250 and the held-out PSNR fell to 5.5 dB. Standardised features carry
/// no scale to exploit, so only the classifier's own weights set its logits.
pub fn standardize(xs: &Tensor) -> Result<Tensor> {
    let b = xs.dim(0)?;
    let flat = xs.reshape((b, ()))?;
    let centred = flat.broadcast_sub(&flat.mean_keepdim(1)?)?;
    let var = centred.sqr()?.mean_keepdim(1)?;
    centred
        .broadcast_div(&(var + 1e-5)?.sqrt()?)?
        .reshape(xs.shape())
}

/// `y = x` forward; backward `dL/dx = -scale * dL/dy` (the gradient-reversal layer).
///
/// Built from candle ops, so it runs and differentiates on every device:
/// `y = detach(x) + (x - detach(x)) * (-scale)`. The second term is exactly zero for finite
/// `x`, so `y` equals `x` bit for bit, and its only path to `x` carries the factor `-scale`
/// (at `scale` 0 candle drops that path: `x` gets no gradient through it, which is zero).
pub fn gradient_reversal(xs: &Tensor, scale: f64) -> Result<Tensor> {
    let fixed = xs.detach();
    let tracked = ((xs - &fixed)? * (-scale))?;
    fixed + tracked
}

/// The domain classifier: bottleneck features `(B, C_f, H_f, W_f)` -> one logit per sample
/// `(B,)`, positive for "target domain".
#[derive(Debug, Clone)]
pub struct DomainClassifier {
    conv1: Conv2d,
    conv2: Conv2d,
    head: Linear,
    span: tracing::Span,
}

impl DomainClassifier {
    /// Creates (or loads, through `vb`) a classifier for `in_channels`-channel features. The
    /// VarBuilder names (`conv1`, `conv2`, `head`) are its checkpoint format.
    pub fn new(vb: VarBuilder, in_channels: usize, cfg: &DannSettings) -> Result<Self> {
        if in_channels == 0 || cfg.hidden == 0 {
            candle_core::bail!(
                "DomainClassifier: in_channels ({in_channels}) and hidden ({}) must be at least 1",
                cfg.hidden
            );
        }
        let strided = Conv2dConfig {
            padding: 1,
            stride: 2,
            ..Default::default()
        };
        Ok(Self {
            conv1: candle_nn::conv2d(in_channels, cfg.hidden, 3, strided, vb.pp("conv1"))?,
            conv2: candle_nn::conv2d(cfg.hidden, cfg.hidden, 3, strided, vb.pp("conv2"))?,
            head: candle_nn::linear(cfg.hidden, 1, vb.pp("head"))?,
            span: tracing::span!(tracing::Level::TRACE, "domain-classifier"),
        })
    }
}

impl Module for DomainClassifier {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let _e = self.span.enter();
        // (B, C_f, H_f, W_f) -> (B, hidden, H_f/2, W_f/2) -> (B, hidden, H_f/4, W_f/4)
        let xs = candle_nn::ops::leaky_relu(&xs.apply(&self.conv1)?, 0.2)?;
        let xs = candle_nn::ops::leaky_relu(&xs.apply(&self.conv2)?, 0.2)?;
        // Global average -> (B, hidden) -> (B, 1) -> (B,)
        xs.mean((2, 3))?.apply(&self.head)?.squeeze(1)
    }
}

/// `log(1 + exp(z))`, stable for any `z`: `max(z, 0) + log(1 + exp(-|z|))`.
fn softplus(z: &Tensor) -> Result<Tensor> {
    z.relu()? + (z.abs()?.neg()?.exp()? + 1.0)?.log()?
}

/// The domain classifier's loss: binary cross-entropy on logits, source labelled 0 and target
/// labelled 1, averaged over all `B_s + B_t` samples (torch's
/// `binary_cross_entropy_with_logits(cat(z_s, z_t), cat(zeros, ones))`). A scalar.
pub fn domain_loss(source_logits: &Tensor, target_logits: &Tensor) -> Result<Tensor> {
    // BCE(z, 0) = softplus(z); BCE(z, 1) = softplus(-z).
    let n = (source_logits.elem_count() + target_logits.elem_count()) as f64;
    let s = softplus(source_logits)?.sum_all()?;
    let t = softplus(&target_logits.neg()?)?.sum_all()?;
    (s + t)? / n
}

/// DANN's network and its variables (saved as `dann-{step}`).
pub struct Dann {
    /// The domain classifier.
    pub classifier: DomainClassifier,
    /// Its variables.
    pub varmap: VarMap,
    /// The settings it was built with.
    pub settings: DannSettings,
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Standardised features do not depend on the features' scale: what let the restorer
    /// raise the domain loss without bound.
    #[test]
    fn standardized_features_carry_no_scale() -> Result<()> {
        let f = Tensor::randn(0f32, 1., (2, 4, 3, 3), &Device::Cpu)?;
        let a = standardize(&f)?;
        let b = standardize(&(&f * 1e3)?)?;
        let d = (&a - &b)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(d < 1e-4, "{d}");
        let per_image: Vec<f32> = a.sqr()?.reshape((2, ()))?.mean(1)?.to_vec1()?;
        for v in per_image {
            assert!((v - 1.0).abs() < 1e-3, "unit variance: {v}");
        }
        Ok(())
    }

    #[test]
    fn softplus_is_stable_for_large_logits() -> Result<()> {
        let z = Tensor::new(&[-200f32, -1.0, 0.0, 1.0, 200.0], &Device::Cpu)?;
        let v: Vec<f32> = softplus(&z)?.to_vec1()?;
        let want = [0.0, 0.313_261_7, std::f32::consts::LN_2, 1.313_261_7, 200.0];
        for (a, b) in v.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{v:?}");
        }
        Ok(())
    }

    #[test]
    fn gradient_reversal_is_the_identity_forward_and_negates_scaled_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::new(&[[0.5f32, -1.25, 3.0], [1e-7, -0.0, 42.0]], &dev)?;
        let w = Tensor::new(&[[1f32, 2.0, -3.0], [0.5, 4.0, -0.25]], &dev)?;
        for scale in [0.0, 0.3, 1.0] {
            let y = gradient_reversal(x.as_tensor(), scale)?;
            assert_eq!(
                y.to_vec2::<f32>()?,
                x.as_tensor().to_vec2::<f32>()?,
                "not the identity at scale {scale}"
            );
            let grads = (&y * &w)?.sum_all()?.backward()?;
            // At scale 0 candle prunes the path (a zero affine), so no gradient means zero.
            let g: Vec<Vec<f32>> = match grads.get(x.as_tensor()) {
                Some(g) => g.to_vec2()?,
                None => x.as_tensor().zeros_like()?.to_vec2()?,
            };
            let want: Vec<Vec<f32>> = w
                .to_vec2::<f32>()?
                .into_iter()
                .map(|r| r.into_iter().map(|v| -(scale as f32) * v).collect())
                .collect();
            assert_eq!(g, want, "scale {scale}");
        }
        Ok(())
    }
}
