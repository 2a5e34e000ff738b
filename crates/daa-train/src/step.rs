//! One training step's losses: a pure function of the batch, the networks and the step's RNGs.

use candle_core::{Result, Tensor};
use daa_backbones::Backbone;
use daa_diffusion::{
    AdaptationDraws, AdaptationInputs, AdaptationLoss, CondUNet, LambdaRamp, ValueRange,
};

use crate::charbonnier;
use crate::dann::{domain_loss, gradient_reversal, standardize, DomainClassifier};

/// A training batch on the device. Tensors are `(B, 3, P, P)` in the task's value range
/// (`daa_diffusion::ValueRange`).
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

impl Batch {
    /// The batch mapped from `[0, 1]` (as the data pipeline produces it) into `range`, the
    /// range the restorer, the Charbonnier loss and the diffusion network train in.
    pub fn from_unit(&self, range: ValueRange) -> Result<Self> {
        let map = |t: &Option<Tensor>| t.as_ref().map(|t| range.from_unit(t)).transpose();
        Ok(Self {
            source_input: range.from_unit(&self.source_input)?,
            source_target: range.from_unit(&self.source_target)?,
            target_input: map(&self.target_input)?,
            ex_clean: map(&self.ex_clean)?,
        })
    }
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
    /// The weight of `noise` at this step; for `dann`, the gradient reversal's coefficient.
    pub lambda: f64,
    /// DANN's domain-classifier loss (`dann` only).
    pub domain: Option<Tensor>,
}

/// The networks and settings a step needs for adaptation.
pub struct Adaptation<'a> {
    /// The diffusion network.
    pub unet: &'a CondUNet,
    /// The loss.
    pub loss: &'a AdaptationLoss,
    /// Lambda as a function of the samples seen.
    pub ramp: LambdaRamp,
}

/// Computes a step's losses. `samples_seen` is the number of training samples of the steps
/// before this one (lambda's progress); `rng` supplies the noise levels, noise and swap masks
/// ([`AdaptationLoss::draw`]), `dropout` the diffusion network's dropout masks. The batch is
/// in the task's value range.
pub fn step_losses(
    batch: &Batch,
    restorer: &Backbone,
    adaptation: Option<&Adaptation>,
    charbonnier_eps: f64,
    samples_seen: u64,
    rng: &mut impl rand::Rng,
    dropout: &mut dyn rand::RngCore,
) -> Result<LossParts> {
    let nets = StepNetworks {
        restorer,
        adaptation: adaptation.map(|a| (a.unet, a.loss)),
    };
    let (draws, lambda) = match (adaptation, &batch.target_input) {
        (Some(a), Some(_)) => {
            let clean = batch.ex_clean.as_ref().unwrap_or(&batch.source_target);
            (Some(a.loss.draw(clean, rng)?), a.ramp.at(samples_seen))
        }
        _ => (None, 0.0),
    };
    step_losses_with(
        batch,
        &nets,
        charbonnier_eps,
        lambda,
        draws.as_ref(),
        dropout,
    )
}

/// The networks of a step: the restorer, and for adaptation the diffusion network with its
/// loss.
pub struct StepNetworks<'a> {
    /// The restorer `R`.
    pub restorer: &'a Backbone,
    /// The diffusion network `D` and the adaptation loss (`None`: the restorer alone).
    pub adaptation: Option<(&'a CondUNet, &'a AdaptationLoss)>,
}

/// A step's losses with every random draw given: `draws` (noise levels, noise, swap masks;
/// `None` without adaptation) and the stream the diffusion network's dropout masks come from.
/// The batch is in the task's value range; `lambda` weighs the noise loss. This is what
/// [`step_losses`] runs, and what the step-parity test feeds PyTorch's draws.
pub fn step_losses_with(
    batch: &Batch,
    nets: &StepNetworks,
    charbonnier_eps: f64,
    lambda: f64,
    draws: Option<&AdaptationDraws>,
    dropout: &mut dyn rand::RngCore,
) -> Result<LossParts> {
    let r_s = nets.restorer.residual(&batch.source_input, true)?;
    let rec = charbonnier(
        &(&batch.source_input + &r_s)?,
        &batch.source_target,
        charbonnier_eps,
    )?;
    let (Some((unet, loss)), Some(x_r), Some(draws)) =
        (nets.adaptation, &batch.target_input, draws)
    else {
        return Ok(LossParts {
            total: rec.clone(),
            rec,
            diff_pos: None,
            diff_neg: None,
            contrastive: None,
            noise: None,
            lambda: 0.0,
            domain: None,
        });
    };
    let r_r = nets.restorer.residual(x_r, true)?;
    let clean = batch.ex_clean.as_ref().unwrap_or(&batch.source_target);
    let inputs = AdaptationInputs {
        clean,
        source_input: &batch.source_input,
        target_input: x_r,
        source_residual: &r_s,
        target_residual: &r_r,
    };
    let parts = loss.compute_with(unet, &inputs, draws, Some(dropout))?;
    let total = (&rec + (&parts.noise * lambda)?)?;
    Ok(LossParts {
        total,
        rec,
        diff_pos: Some(parts.d_pos),
        diff_neg: parts.d_neg,
        contrastive: parts.contrastive,
        noise: Some(parts.noise),
        lambda,
        domain: None,
    })
}

/// DANN's step (`--method dann`, see `crate::dann`): the Charbonnier loss on the source pair,
/// plus the domain classifier's cross-entropy on the restorer's bottleneck features of the
/// source (label 0) and target (label 1) inputs, read through a gradient-reversal layer of
/// coefficient `grl_scale`. `total = rec + domain`: the classifier descends `domain`, the
/// restorer ascends `grl_scale * domain`. Without target inputs it is the vanilla step. The batch
/// is in the task's value range.
pub fn dann_step_losses(
    batch: &Batch,
    restorer: &Backbone,
    classifier: &DomainClassifier,
    charbonnier_eps: f64,
    grl_scale: f64,
) -> Result<LossParts> {
    let (r_s, f_s) = restorer.residual_and_features(&batch.source_input, true)?;
    let rec = charbonnier(
        &(&batch.source_input + &r_s)?,
        &batch.source_target,
        charbonnier_eps,
    )?;
    let Some(x_r) = &batch.target_input else {
        return Ok(LossParts {
            total: rec.clone(),
            rec,
            diff_pos: None,
            diff_neg: None,
            contrastive: None,
            noise: None,
            lambda: 0.0,
            domain: None,
        });
    };
    let (_, f_r) = restorer.residual_and_features(x_r, true)?;
    let z_s = gradient_reversal(&standardize(&f_s)?, grl_scale)?.apply(classifier)?;
    let z_r = gradient_reversal(&standardize(&f_r)?, grl_scale)?.apply(classifier)?;
    let domain = domain_loss(&z_s, &z_r)?;
    Ok(LossParts {
        total: (&rec + &domain)?,
        rec,
        diff_pos: None,
        diff_neg: None,
        contrastive: None,
        noise: None,
        lambda: grl_scale,
        domain: Some(domain),
    })
}
