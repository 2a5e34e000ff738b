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

/// The value range a restoration pipeline works in, end to end: restorer, restoration loss and
/// diffusion network alike (docs/method.md section 2, "Value range"). The reference trains denoising in
/// `[0, 1]` and deraining and deblurring in `[-1, 1]`. Images at an API boundary (files,
/// metrics) are `[0, 1]`; [`ValueRange::from_unit`] and [`ValueRange::to_unit`] are the only
/// conversions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueRange {
    /// `[0, 1]`: images as they are.
    Unit,
    /// `[-1, 1]`: `2 x - 1`.
    Signed,
}

impl ValueRange {
    /// Maps a `[0, 1]` image into this range.
    pub fn from_unit(self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Self::Unit => Ok(xs.clone()),
            Self::Signed => xs.affine(2.0, -1.0),
        }
    }

    /// Maps an image in this range back to `[0, 1]` (not clamped).
    pub fn to_unit(self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Self::Unit => Ok(xs.clone()),
            Self::Signed => xs.affine(0.5, 0.5),
        }
    }

    /// How many times wider than `[0, 1]` the range is (1 or 2): a residual or an error
    /// measured in this range is this many times its `[0, 1]` size.
    pub fn scale(self) -> f64 {
        match self {
            Self::Unit => 1.0,
            Self::Signed => 2.0,
        }
    }
}

/// The tensors the loss needs, all `(B, 3, H, W)`, in the value range the restorer and the
/// diffusion network work in ([`ValueRange`]); the loss uses them as they are.
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

/// Everything random in one evaluation of the loss except dropout (docs/method.md section 2, items
/// 1, 2, 4 and 5). [`AdaptationLoss::draw`] samples them; a test may build them by hand to
/// replay another implementation's draws.
#[derive(Debug, Clone)]
pub struct AdaptationDraws {
    /// Diffusion step per sample.
    pub t: Vec<usize>,
    /// Continuous noise level per sample, in `(abar[t], abar[t-1])`.
    pub gamma: Vec<f64>,
    /// Standard normal noise shaped like the clean image.
    pub eps: Tensor,
    /// Per-sample swap of the positive pass's condition slots (all `false` without shuffling).
    pub pos_swapped: Vec<bool>,
    /// The negative pass's swap mask, when there is a negative pass.
    pub neg_swapped: Option<Vec<bool>>,
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

/// Maps `[0, 1]` images to `[-1, 1]`: [`ValueRange::Signed`]'s [`ValueRange::from_unit`].
pub fn to_diffusion_space(xs: &Tensor) -> Result<Tensor> {
    ValueRange::Signed.from_unit(xs)
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

    /// True when the settings call for the negative (residual-swapped) pass.
    pub fn has_negative_pass(&self) -> bool {
        self.cfg.contrastive && self.cfg.variant == Variant::Paired
    }

    /// Draws a step's noise levels, noise (shaped like `clean`) and swap masks from `rng`, in
    /// this order: `(t, gamma)` per sample, `eps`, the positive mask, the negative mask (masks
    /// only when shuffling is on).
    pub fn draw(&self, clean: &Tensor, rng: &mut impl Rng) -> Result<AdaptationDraws> {
        let b = clean.dim(0)?;
        let (t, gamma): (Vec<usize>, Vec<f64>) = (0..b)
            .map(|_| {
                self.schedule
                    .sample_gamma(self.cfg.t_min, self.cfg.t_max, rng)
            })
            .unzip();
        let eps = gaussian_like(clean, rng)?;
        let mask = |rng: &mut dyn rand::RngCore| {
            if self.cfg.shuffle {
                swap_mask(b, rng)
            } else {
                vec![false; b]
            }
        };
        let pos_swapped = mask(rng);
        let neg_swapped = self.has_negative_pass().then(|| mask(rng));
        Ok(AdaptationDraws {
            t,
            gamma,
            eps,
            pos_swapped,
            neg_swapped,
        })
    }

    /// One evaluation of the loss with network `net`. Noise levels, noise and swap masks come
    /// from `rng` ([`Self::draw`]); both passes share them (same `y_noisy`, `gamma`, `eps`).
    /// Training mode: `dropout` is the RNG of `net`'s dropout masks (`None`: no dropout). The
    /// same seeds give the same result. See [`Self::compute_with`].
    pub fn compute(
        &self,
        net: &CondUNet,
        x: &AdaptationInputs,
        rng: &mut impl Rng,
        dropout: Option<&mut dyn RngCore>,
    ) -> Result<AdaptationParts> {
        let draws = self.draw(x.clean, rng)?;
        self.compute_with(net, x, &draws, dropout)
    }

    /// One evaluation of the loss with given draws; `dropout` as in [`Self::compute`] (its
    /// masks are drawn in forward order, positive pass first). Both passes share `y_noisy`,
    /// `gamma` and `eps`. Nothing is detached: gradients flow into `net` and into both
    /// residuals.
    pub fn compute_with(
        &self,
        net: &CondUNet,
        x: &AdaptationInputs,
        draws: &AdaptationDraws,
        mut dropout: Option<&mut dyn RngCore>,
    ) -> Result<AdaptationParts> {
        let (b, _, _, _) = x.clean.dims4()?;
        for (name, t) in [
            ("source_input", x.source_input),
            ("target_input", x.target_input),
            ("source_residual", x.source_residual),
            ("target_residual", x.target_residual),
            ("eps", &draws.eps),
        ] {
            if t.dims() != x.clean.dims() {
                candle_core::bail!(
                    "adaptation: {name} has shape {:?}, clean has {:?}",
                    t.shape(),
                    x.clean.shape()
                );
            }
        }
        let negative = self.has_negative_pass();
        if draws.t.len() != b
            || draws.gamma.len() != b
            || draws.pos_swapped.len() != b
            || draws.neg_swapped.as_ref().map(Vec::len) != negative.then_some(b)
        {
            candle_core::bail!(
                "adaptation: draws for a batch of {b} need {b} noise levels and masks{}, got t {}, gamma {}, masks {} / {:?}",
                if negative { " (both passes)" } else { " (positive pass only)" },
                draws.t.len(),
                draws.gamma.len(),
                draws.pos_swapped.len(),
                draws.neg_swapped.as_ref().map(Vec::len)
            );
        }
        let gammas: Vec<f32> = draws.gamma.iter().map(|g| *g as f32).collect();
        let gamma = Tensor::from_vec(gammas, b, &Device::Cpu)?.to_device(x.clean.device())?;
        let eps = &draws.eps;
        let y_noisy = q_sample(x.clean, &gamma, eps)?;
        let gamma = gamma.to_dtype(x.clean.dtype())?;

        let pass = |a: &Tensor,
                    bb: &Tensor,
                    mask: &[bool],
                    dropout: Option<&mut dyn RngCore>|
         -> Result<Tensor> {
            // swap_slots + condition, fused (daa-kernels; same values and gradients).
            let cond = daa_kernels::swap_condition(&y_noisy, a, bb, mask)?;
            let pred = net.forward_t(&cond, &gamma, dropout)?;
            (eps - pred)?.sqr()?.mean_all()
        };
        let restored_s = (x.source_input + x.source_residual)?;
        let restored_r = (x.target_input + x.target_residual)?;
        let d_pos = pass(
            &restored_s,
            &restored_r,
            &draws.pos_swapped,
            reborrow(&mut dropout),
        )?;
        let Some(neg_mask) = draws.neg_swapped.as_ref().filter(|_| negative) else {
            return Ok(AdaptationParts {
                noise: d_pos.clone(),
                d_pos,
                d_neg: None,
                contrastive: None,
                t: draws.t.clone(),
                pos_swapped: draws.pos_swapped.clone(),
                neg_swapped: None,
            });
        };
        let neg_s = (x.source_input + x.target_residual)?;
        let neg_r = (x.target_input + x.source_residual)?;
        let d_neg = pass(&neg_s, &neg_r, neg_mask, dropout)?;
        let hinge = contrastive_hinge(&d_pos, &d_neg, self.cfg.margin)?;
        let noise = ((&d_pos + &hinge)? * 0.5)?;
        Ok(AdaptationParts {
            d_pos,
            d_neg: Some(d_neg),
            contrastive: Some(hinge),
            noise,
            t: draws.t.clone(),
            pos_swapped: draws.pos_swapped.clone(),
            neg_swapped: Some(neg_mask.clone()),
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
/// [`LambdaRamp`] is the same curve with progress counted in samples.
pub fn lambda_ramp(step: usize, ramp_steps: usize, lambda_max: f64) -> f64 {
    let p = if ramp_steps == 0 {
        1.0
    } else {
        (step as f64 / ramp_steps as f64).min(1.0)
    };
    ramp_curve(p, lambda_max)
}

fn ramp_curve(p: f64, lambda_max: f64) -> f64 {
    lambda_max * (2.0 / (1.0 + (-5.0 * p).exp()) - 1.0)
}

/// The paper's lambda ramp with progress counted in training samples seen, so that it means
/// the same at any batch size (docs/method.md section 2, "Lambda ramp in samples seen"):
/// `lambda = lambda_max * (2 / (1 + exp(-5 p)) - 1)`.
///
/// The reference sets `p = min(epoch / 300, 1)` with epochs counted from 1 and `p` constant
/// within an epoch. With `quantum_samples = q` (its epoch length) and `ramp_samples = 300 q`,
/// [`LambdaRamp::progress`] is exactly that: `p = min((floor(s / q) + 1) q / ramp_samples, 1)`
/// for `s` samples seen before the step. `quantum_samples = 0` gives the continuous
/// `p = min(s / ramp_samples, 1)`, which starts at 0; `ramp_samples = 0` means no ramp.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LambdaRamp {
    /// The weight's ceiling (the paper: 0.2; reached as `0.987 * lambda_max` at `p = 1`).
    pub lambda_max: f64,
    /// Samples over which `p` rises to 1 (the reference: 300 epochs of its synthetic set).
    pub ramp_samples: u64,
    /// `p` advances in whole quanta of this many samples, the first quantum counting as one
    /// (the reference: one epoch); 0 for a continuous ramp from 0.
    pub quantum_samples: u64,
}

impl LambdaRamp {
    /// Progress `p` in `[0, 1]` after `samples_seen` samples (before the step that uses it).
    pub fn progress(&self, samples_seen: u64) -> f64 {
        if self.ramp_samples == 0 {
            return 1.0;
        }
        let s = match self.quantum_samples {
            0 => samples_seen,
            q => (samples_seen / q).saturating_add(1).saturating_mul(q),
        };
        (s as f64 / self.ramp_samples as f64).min(1.0)
    }

    /// Lambda for a step taken after `samples_seen` samples.
    pub fn at(&self, samples_seen: u64) -> f64 {
        ramp_curve(self.progress(samples_seen), self.lambda_max)
    }

    /// Checks that `lambda_max` is finite and non-negative.
    pub fn validate(&self) -> Result<()> {
        if !self.lambda_max.is_finite() || self.lambda_max < 0.0 {
            candle_core::bail!(
                "lambda ramp: lambda_max must be finite and >= 0, got {}",
                self.lambda_max
            );
        }
        Ok(())
    }
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

    #[test]
    fn ramp_in_samples_counts_like_the_reference() {
        // The reference: p = epoch / 300 from epoch 1, constant within an epoch. An epoch of
        // 1000 samples: 0.2 * (2 / (1 + exp(-5 / 300)) - 1) = 0.2 * tanh(5 / 600) = 1.66663e-3.
        let r = LambdaRamp {
            lambda_max: 0.2,
            ramp_samples: 300_000,
            quantum_samples: 1000,
        };
        let first = 0.2 * (5.0f64 / 600.0).tanh();
        assert!((first - 1.666_628e-3).abs() < 1e-9, "{first}");
        for s in [0, 1, 999] {
            assert!((r.at(s) - first).abs() < 1e-15, "{s}: {}", r.at(s));
        }
        // Epoch 2 starts at sample 1000: p = 2 / 300.
        assert!((r.at(1000) - 0.2 * (10.0f64 / 600.0).tanh()).abs() < 1e-15);
        // Epoch 300 (samples 299000..) reaches p = 1; later epochs stay there.
        assert_eq!(r.progress(298_999), 299.0 / 300.0);
        assert_eq!(r.progress(299_000), 1.0);
        assert_eq!(r.at(10_000_000), r.at(299_000));
        assert!((r.at(299_000) - 0.197_322_86).abs() < 1e-7);
        // The same ramp is the same at every batch size: lambda depends on samples only.
        let by_batch = |b: u64, step: u64| r.at(step * b);
        assert_eq!(by_batch(192, 100), by_batch(24, 800));
        // Continuous: starts at 0, p = s / ramp.
        let c = LambdaRamp {
            quantum_samples: 0,
            ..r
        };
        assert_eq!(c.at(0), 0.0);
        assert!((c.progress(150_000) - 0.5).abs() < 1e-15);
        assert!((c.at(150_000) - 0.169_656_73).abs() < 1e-7);
        // No ramp: full weight at once.
        let none = LambdaRamp {
            ramp_samples: 0,
            ..r
        };
        assert_eq!(none.at(0), r.at(299_000));
        assert!(LambdaRamp {
            lambda_max: f64::NAN,
            ..r
        }
        .validate()
        .is_err());
        assert!(LambdaRamp {
            lambda_max: -0.1,
            ..r
        }
        .validate()
        .is_err());
    }

    #[test]
    fn value_ranges_round_trip() -> Result<()> {
        let x = Tensor::new(&[0f32, 0.25, 1.0], &Device::Cpu)?;
        let s = ValueRange::Signed.from_unit(&x)?;
        assert_eq!(s.to_vec1::<f32>()?, [-1.0, -0.5, 1.0]);
        assert_eq!(
            ValueRange::Signed.to_unit(&s)?.to_vec1::<f32>()?,
            [0.0, 0.25, 1.0]
        );
        assert_eq!(
            ValueRange::Unit.from_unit(&x)?.to_vec1::<f32>()?,
            [0.0, 0.25, 1.0]
        );
        assert_eq!(
            serde_json::to_string(&ValueRange::Signed).map_err(candle_core::Error::wrap)?,
            "\"signed\""
        );
        Ok(())
    }
}
