//! The noise-space adaptation loss of Denoising as Adaptation (docs/method.md section 2).

use candle_core::{DType, Device, Result, Tensor};
use rand::{Rng, RngCore};
use rand_distr::{Distribution, StandardNormal};

use crate::unet::reborrow;
use crate::{q_sample, swap_mask, CondUNet, NoiseSchedule};

/// Which form of the method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// The paper's method: the clean target of the source pair is noised; a positive pass and,
    /// with `contrastive`, a negative pass on residual-swapped conditions.
    Paired,
    /// "Ours-Ex": an unpaired clean image is noised; only the positive pass.
    Ex,
}

/// Settings of the adaptation loss, with the paper's ablation switches.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptationConfig {
    /// Channel shuffling: per-sample random order of the two condition slots.
    pub shuffle: bool,
    /// Residual-swapping contrastive term (ignored by [`Variant::Ex`]).
    pub contrastive: bool,
    /// Hinge margin (the paper: 0.1).
    pub margin: f64,
    /// Smallest diffusion step sampled (the paper: 1).
    pub t_min: usize,
    /// Largest diffusion step sampled, inclusive (the paper: 999).
    pub t_max: usize,
    /// Paired or Ex.
    pub variant: Variant,
}

impl AdaptationConfig {
    /// The paper's full method: shuffle and contrastive on, margin 0.1, t in [1, 999].
    pub fn paper() -> Self {
        Self {
            shuffle: true,
            contrastive: true,
            margin: 0.1,
            t_min: 1,
            t_max: 999,
            variant: Variant::Paired,
        }
    }

    /// Checks the ranges against a schedule of `steps` steps.
    pub fn validate(&self, steps: usize) -> Result<()> {
        if self.t_min < 1 || self.t_min > self.t_max || self.t_max >= steps {
            candle_core::bail!(
                "adaptation: need 1 <= t_min <= t_max < {steps}, got [{}, {}]",
                self.t_min,
                self.t_max
            );
        }
        if !self.margin.is_finite() || self.margin < 0.0 {
            candle_core::bail!(
                "adaptation: margin must be finite and >= 0, got {}",
                self.margin
            );
        }
        Ok(())
    }
}

/// The tensors the loss needs, all `(B, 3, H, W)` in `[0, 1]` (restoration space).
#[derive(Debug, Clone, Copy)]
pub struct AdaptationInputs<'a> {
    /// The clean image to noise: the source pair's target (Paired) or an unpaired clean image (Ex).
    pub clean: &'a Tensor,
    /// Degraded source-domain input `x_s`.
    pub source_input: &'a Tensor,
    /// Degraded target-domain ("real") input `x_r`.
    pub target_input: &'a Tensor,
    /// The restorer's residual on the source input, `r_s` (restored = `x_s + r_s`).
    pub source_residual: &'a Tensor,
    /// The restorer's residual on the target input, `r_r`.
    pub target_residual: &'a Tensor,
}

/// The loss and its named parts. All are scalars; gradients reach both residuals.
#[derive(Debug, Clone)]
pub struct AdaptationParts {
    /// `mean((eps - D(y_noisy, shuffled(yhat_s, yhat_r)))^2)`.
    pub d_pos: Tensor,
    /// The same on residual-swapped conditions (`x_s + r_r`, `x_r + r_s`), when computed.
    pub d_neg: Option<Tensor>,
    /// `max(0, d_pos - d_neg + margin)`, when computed.
    pub contrastive: Option<Tensor>,
    /// What to add to the restoration loss (times lambda): `(d_pos + contrastive) / 2` with the
    /// contrastive term, `d_pos` without it.
    pub noise: Tensor,
    /// Diffusion step drawn per sample.
    pub t: Vec<usize>,
    /// Per-sample swap of the positive pass's condition slots.
    pub pos_swapped: Vec<bool>,
    /// Per-sample swap of the negative pass's slots (independent of the positive one).
    pub neg_swapped: Option<Vec<bool>>,
}

/// Maps `[0, 1]` images to the diffusion network's `[-1, 1]` (the one place this is done).
pub fn to_diffusion_space(xs: &Tensor) -> Result<Tensor> {
    xs.affine(2.0, -1.0)
}

/// Standard normal noise shaped like `like`, drawn from `rng` on the CPU (reproducible on every
/// device) and moved to `like`'s device and dtype.
pub fn gaussian_like(like: &Tensor, rng: &mut impl Rng) -> Result<Tensor> {
    let v: Vec<f32> = (0..like.elem_count())
        .map(|_| StandardNormal.sample(rng))
        .collect();
    Tensor::from_vec(v, like.shape(), &Device::Cpu)?
        .to_dtype(like.dtype())?
        .to_device(like.device())
}

/// The adaptation loss: a schedule and settings; [`AdaptationLoss::compute`] runs the passes.
#[derive(Debug, Clone)]
pub struct AdaptationLoss {
    schedule: NoiseSchedule,
    cfg: AdaptationConfig,
}

impl AdaptationLoss {
    /// Validates `cfg` against `schedule`.
    pub fn new(schedule: NoiseSchedule, cfg: AdaptationConfig) -> Result<Self> {
        cfg.validate(schedule.len())?;
        Ok(Self { schedule, cfg })
    }

    /// The settings.
    pub fn config(&self) -> &AdaptationConfig {
        &self.cfg
    }

    /// One evaluation of the loss with network `net`. Noise levels, noise and swap masks come
    /// from `rng`; both passes share them (same `y_noisy`, `gamma`, `eps`). Training mode:
    /// `dropout` is the RNG of `net`'s dropout masks (`None`: no dropout). The same seeds give
    /// the same result. Nothing is detached: gradients flow into `net` and into both residuals.
    pub fn compute(
        &self,
        net: &CondUNet,
        x: &AdaptationInputs,
        rng: &mut impl Rng,
        mut dropout: Option<&mut dyn RngCore>,
    ) -> Result<AdaptationParts> {
        let (b, _, _, _) = x.clean.dims4()?;
        for (name, t) in [
            ("source_input", x.source_input),
            ("target_input", x.target_input),
            ("source_residual", x.source_residual),
            ("target_residual", x.target_residual),
        ] {
            if t.dims() != x.clean.dims() {
                candle_core::bail!(
                    "adaptation: {name} has shape {:?}, clean has {:?}",
                    t.shape(),
                    x.clean.shape()
                );
            }
        }
        let (t, gammas): (Vec<usize>, Vec<f32>) = (0..b)
            .map(|_| {
                self.schedule
                    .sample_gamma(self.cfg.t_min, self.cfg.t_max, rng)
            })
            .map(|(t, g)| (t, g as f32))
            .unzip();
        let gamma = Tensor::from_vec(gammas, b, &Device::Cpu)?.to_device(x.clean.device())?;
        let clean = to_diffusion_space(x.clean)?;
        let eps = gaussian_like(&clean, rng)?;
        let y_noisy = q_sample(&clean, &gamma, &eps)?;
        let gamma = gamma.to_dtype(clean.dtype())?;

        let mse = |pred: &Tensor| -> Result<Tensor> { (&eps - pred)?.sqr()?.mean_all() };
        let pass = |a: &Tensor,
                    bb: &Tensor,
                    rng: &mut dyn RngCore,
                    dropout: Option<&mut dyn RngCore>|
         -> Result<(Tensor, Vec<bool>)> {
            let mask = if self.cfg.shuffle {
                swap_mask(b, rng)
            } else {
                vec![false; b]
            };
            // swap_slots + condition, fused (daa-kernels; same values and gradients).
            let cond = daa_kernels::swap_condition(
                &y_noisy,
                &to_diffusion_space(a)?,
                &to_diffusion_space(bb)?,
                &mask,
            )?;
            let pred = net.forward_t(&cond, &gamma, dropout)?;
            Ok((mse(&pred)?, mask))
        };
        let restored_s = (x.source_input + x.source_residual)?;
        let restored_r = (x.target_input + x.target_residual)?;
        let (d_pos, pos_swapped) = pass(&restored_s, &restored_r, rng, reborrow(&mut dropout))?;
        let negative = self.cfg.contrastive && self.cfg.variant == Variant::Paired;
        if !negative {
            return Ok(AdaptationParts {
                noise: d_pos.clone(),
                d_pos,
                d_neg: None,
                contrastive: None,
                t,
                pos_swapped,
                neg_swapped: None,
            });
        }
        let neg_s = (x.source_input + x.target_residual)?;
        let neg_r = (x.target_input + x.source_residual)?;
        let (d_neg, neg_swapped) = pass(&neg_s, &neg_r, rng, dropout)?;
        let hinge = contrastive_hinge(&d_pos, &d_neg, self.cfg.margin)?;
        let noise = ((&d_pos + &hinge)? * 0.5)?;
        Ok(AdaptationParts {
            d_pos,
            d_neg: Some(d_neg),
            contrastive: Some(hinge),
            noise,
            t,
            pos_swapped,
            neg_swapped: Some(neg_swapped),
        })
    }
}

/// The residual-swapping contrastive term `max(0, d_pos - d_neg + margin)`: one hinge per
/// batch, no temperature, no softmax.
pub fn contrastive_hinge(d_pos: &Tensor, d_neg: &Tensor, margin: f64) -> Result<Tensor> {
    ((d_pos - d_neg)? + margin)?.relu()
}

/// The paper's lambda ramp: `lambda = lambda_max * (2 / (1 + exp(-5 p)) - 1)` with progress
/// `p = min(step / ramp_steps, 1)` (0 at the start, about `0.987 * lambda_max` from `p = 1` on).
/// `ramp_steps = 0` means no ramp (`lambda_max * 0.987` from the first step, the value at p = 1).
pub fn lambda_ramp(step: usize, ramp_steps: usize, lambda_max: f64) -> f64 {
    let p = if ramp_steps == 0 {
        1.0
    } else {
        (step as f64 / ramp_steps as f64).min(1.0)
    };
    lambda_max * (2.0 / (1.0 + (-5.0 * p).exp()) - 1.0)
}

/// Scalar value of a loss tensor as `f64`.
pub fn scalar(t: &Tensor) -> Result<f64> {
    t.to_dtype(DType::F64)?.to_scalar::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambda_ramp_matches_the_paper() {
        assert_eq!(lambda_ramp(0, 100, 0.2), 0.0);
        // 0.2 * (2 / (1 + exp(-5)) - 1) = 0.19732286
        assert!((lambda_ramp(100, 100, 0.2) - 0.197_322_86).abs() < 1e-7);
        assert!((lambda_ramp(1000, 100, 0.2) - lambda_ramp(100, 100, 0.2)).abs() < 1e-15);
        let half = lambda_ramp(50, 100, 0.2);
        // 0.2 * (2 / (1 + exp(-2.5)) - 1) = 0.16965673
        assert!((half - 0.169_656_73).abs() < 1e-7, "{half}");
        assert_eq!(lambda_ramp(0, 0, 0.2), lambda_ramp(100, 100, 0.2));
    }
}
