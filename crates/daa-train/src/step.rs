//! One training step's losses: a pure function of the batch, the networks and the step's RNGs.

use candle_core::{Result, Tensor};
use daa_backbones::Backbone;
use daa_diffusion::{lambda_ramp, AdaptationInputs, AdaptationLoss, CondUNet};

use crate::charbonnier;

/// A training batch on the device. Tensors are `(B, 3, P, P)` in `[0, 1]`.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Degraded source inputs `x_s`.
    pub source_input: Tensor,
    /// Their clean targets `y_s`.
    pub source_target: Tensor,
    /// Target-domain inputs `x_r` (adaptation only).
    pub target_input: Option<Tensor>,
    /// Unpaired clean images (the Ex variant only).
    pub ex_clean: Option<Tensor>,
}

/// The loss of a step and its named parts (the names used in logs).
#[derive(Debug, Clone)]
pub struct LossParts {
    /// `rec + lambda * noise`.
    pub total: Tensor,
    /// Charbonnier loss on the source pair.
    pub rec: Tensor,
    /// Positive-pass noise-prediction loss.
    pub diff_pos: Option<Tensor>,
    /// Negative-pass noise-prediction loss.
    pub diff_neg: Option<Tensor>,
    /// The contrastive hinge.
    pub contrastive: Option<Tensor>,
    /// The adaptation loss `L_noise`.
    pub noise: Option<Tensor>,
    /// The weight of `noise` at this step.
    pub lambda: f64,
}

/// The networks and settings a step needs for adaptation.
pub struct Adaptation<'a> {
    /// The diffusion network.
    pub unet: &'a CondUNet,
    /// The loss.
    pub loss: &'a AdaptationLoss,
    /// Final lambda.
    pub lambda_max: f64,
    /// Ramp length in steps.
    pub ramp_steps: usize,
}

/// Computes a step's losses. `step` is the number of steps done before this one (lambda's
/// progress); `rng` supplies the noise levels, noise and swap masks, `dropout` the diffusion
/// network's dropout masks.
pub fn step_losses(
    batch: &Batch,
    restorer: &Backbone,
    adaptation: Option<&Adaptation>,
    charbonnier_eps: f64,
    step: usize,
    rng: &mut impl rand::Rng,
    dropout: &mut dyn rand::RngCore,
) -> Result<LossParts> {
    let r_s = restorer.residual(&batch.source_input, true)?;
    let rec = charbonnier(
        &(&batch.source_input + &r_s)?,
        &batch.source_target,
        charbonnier_eps,
    )?;
    let (Some(a), Some(x_r)) = (adaptation, &batch.target_input) else {
        return Ok(LossParts {
            total: rec.clone(),
            rec,
            diff_pos: None,
            diff_neg: None,
            contrastive: None,
            noise: None,
            lambda: 0.0,
        });
    };
    let r_r = restorer.residual(x_r, true)?;
    let clean = batch.ex_clean.as_ref().unwrap_or(&batch.source_target);
    let inputs = AdaptationInputs {
        clean,
        source_input: &batch.source_input,
        target_input: x_r,
        source_residual: &r_s,
        target_residual: &r_r,
    };
    let parts = a.loss.compute(a.unet, &inputs, rng, Some(dropout))?;
    let lambda = lambda_ramp(step, a.ramp_steps, a.lambda_max);
    let total = (&rec + (&parts.noise * lambda)?)?;
    Ok(LossParts {
        total,
        rec,
        diff_pos: Some(parts.d_pos),
        diff_neg: parts.d_neg,
        contrastive: parts.contrastive,
        noise: Some(parts.noise),
        lambda,
    })
}
