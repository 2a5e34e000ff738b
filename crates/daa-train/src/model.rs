//! The model pair and its training step: the restorer, the diffusion network with its loss
//! (adaptation), the EMA copy of the restorer, and one Adam over every trained variable.
//! The engine and `daa bench` both build and step models only through [`Models`], so they
//! train the same parameter set the same way.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use daa_backbones::Backbone;
use daa_diffusion::{AdaptationLoss, CondUNet, LambdaRamp, ValueRange};

use crate::dann::{Dann, DomainClassifier};
use crate::seeds::{self, Salt};
use crate::step::{dann_step_losses, step_losses, Adaptation, Batch, LossParts};
use crate::{seeded_var_builder, Adam, Error, Method, Precision, Result, TrainConfig};

/// The diffusion network, its loss and its variables.
pub struct Diffusion {
    /// The conditional noise predictor.
    pub unet: CondUNet,
    /// The adaptation loss (schedule and settings).
    pub loss: AdaptationLoss,
    /// Its variables (saved as `diffusion-{step}`).
    pub varmap: VarMap,
}

/// An exponential moving average of the restorer's weights, with its own network.
pub struct Ema {
    /// The averaged variables (saved as `restorer-ema-{step}`).
    pub varmap: VarMap,
    /// A restorer reading them.
    pub net: Backbone,
    /// `ema = decay * ema + (1 - decay) * raw` after every step.
    pub decay: f64,
}

/// What one training step did.
#[derive(Debug, Clone)]
pub struct StepOutcome {
    /// The named loss values, `total` first, then `rec`, the adaptation parts and `lambda`
    /// (the names used in logs).
    pub losses: Vec<(&'static str, f64)>,
    /// The weight of the noise loss at this step (0 without adaptation).
    pub lambda: f64,
    /// False when the loss or a gradient was not finite: the weights were left as they were.
    pub applied: bool,
}

impl StepOutcome {
    /// The total loss.
    pub fn total(&self) -> f64 {
        self.losses.first().map_or(f64::NAN, |(_, v)| *v)
    }
}

/// The networks of a run and their optimizer.
pub struct Models {
    /// The restoration network.
    pub restorer: Backbone,
    /// Its variables (saved as `restorer-{step}`).
    pub restorer_vars: VarMap,
    /// Adaptation's diffusion network (`None` for `vanilla`).
    pub diffusion: Option<Diffusion>,
    /// The EMA of the restorer (`None` when `ema_decay` is 0).
    pub ema: Option<Ema>,
    /// DANN's domain classifier (`dann` only).
    pub dann: Option<Dann>,
    /// One Adam over the restorer's, the diffusion network's and the domain classifier's
    /// trained variables.
    pub opt: Adam,
    charbonnier_eps: f64,
    ramp: LambdaRamp,
    dann_ramp: LambdaRamp,
    batch_size: usize,
    range: ValueRange,
    precision: Precision,
}

/// The trained variables of `varmap`, named `{prefix}{name}`. BatchNorm's running statistics
/// are buffers updated by the forward pass, not parameters: Adam leaves them alone.
fn trained_vars(varmap: &VarMap, prefix: &str) -> Result<Vec<(String, Var)>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::Poisoned("variable map"))?;
    Ok(data
        .iter()
        .filter(|(k, _)| !k.ends_with("running_mean") && !k.ends_with("running_var"))
        .map(|(k, v)| (format!("{prefix}{k}"), v.clone()))
        .collect())
}

/// `ema = decay * ema + (1 - decay) * raw` for every variable (decay 0 copies).
fn ema_update(ema: &VarMap, raw: &VarMap, decay: f64) -> Result<()> {
    let raw = raw
        .data()
        .lock()
        .map_err(|_| Error::Poisoned("variable map"))?;
    let ema = ema
        .data()
        .lock()
        .map_err(|_| Error::Poisoned("variable map"))?;
    for (name, r) in raw.iter() {
        let Some(e) = ema.get(name) else { continue };
        let r = r.as_tensor().detach();
        let new = if decay == 0.0 {
            r
        } else {
            ((e.as_tensor().detach() * decay)? + (r * (1.0 - decay))?)?
        };
        e.set(&new)?;
    }
    Ok(())
}

/// The named loss values of a step, `total` first (names as in the logs).
fn loss_values(p: &LossParts) -> Result<Vec<(&'static str, f64)>> {
    let v = |t: &Tensor| -> Result<f64> { Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?) };
    let mut out = vec![("total", v(&p.total)?), ("rec", v(&p.rec)?)];
    for (name, t) in [
        ("diff_pos", &p.diff_pos),
        ("diff_neg", &p.diff_neg),
        ("contrastive", &p.contrastive),
        ("noise", &p.noise),
        ("domain", &p.domain),
    ] {
        if let Some(t) = t {
            out.push((name, v(t)?));
        }
    }
    if p.noise.is_some() || p.domain.is_some() {
        out.push(("lambda", p.lambda));
    }
    Ok(out)
}

impl Models {
    /// Builds the networks of `cfg` with weights seeded from `cfg.seed` (the restorer from the
    /// seed, the diffusion network and DANN's classifier from their own salts), the EMA as a
    /// copy of the restorer, and Adam over every trained network.
    pub fn new(cfg: &TrainConfig, device: &Device) -> Result<Self> {
        let restorer_vars = VarMap::new();
        let vb = seeded_var_builder(&restorer_vars, cfg.seed, DType::F32, device);
        let restorer = cfg.backbone.build(vb)?;
        let mut named = trained_vars(&restorer_vars, "restorer.")?;
        let a = &cfg.adaptation;
        let diffusion = match a.loss_config(cfg.method) {
            Some(loss_cfg) => {
                let varmap = VarMap::new();
                let seed = seeds::salted(cfg.seed, Salt::Diffusion);
                let vb = seeded_var_builder(&varmap, seed, DType::F32, device);
                let unet = CondUNet::new(vb, &a.diffusion)?;
                let loss = AdaptationLoss::new(a.schedule.build()?, loss_cfg)?;
                named.extend(trained_vars(&varmap, "diffusion.")?);
                Some(Diffusion { unet, loss, varmap })
            }
            None => None,
        };
        let dann = match cfg.method {
            Method::Dann => {
                let varmap = VarMap::new();
                let seed = seeds::salted(cfg.seed, Salt::Dann);
                let vb = seeded_var_builder(&varmap, seed, DType::F32, device);
                let (in_channels, _, _) = restorer.features_shape(cfg.patch_size, cfg.patch_size);
                let settings = cfg.adaptation.dann;
                let classifier = DomainClassifier::new(vb, in_channels, &settings)?;
                named.extend(trained_vars(&varmap, "dann.")?);
                Some(Dann {
                    classifier,
                    varmap,
                    settings,
                })
            }
            _ => None,
        };
        let opt = Adam::new(named, cfg.optim)?;
        let ema = match cfg.ema_decay > 0.0 {
            true => {
                let varmap = VarMap::new();
                let vb = seeded_var_builder(&varmap, cfg.seed, DType::F32, device);
                let net = cfg.backbone.build(vb)?;
                ema_update(&varmap, &restorer_vars, 0.0)?;
                Some(Ema {
                    varmap,
                    net,
                    decay: cfg.ema_decay,
                })
            }
            false => None,
        };
        Ok(Self {
            restorer,
            restorer_vars,
            diffusion,
            ema,
            dann,
            opt,
            charbonnier_eps: cfg.charbonnier_eps,
            ramp: cfg.lambda_ramp(),
            dann_ramp: LambdaRamp {
                lambda_max: cfg.adaptation.dann.lambda_max,
                ..cfg.lambda_ramp()
            },
            batch_size: cfg.batch_size,
            range: cfg.range,
            precision: cfg.precision,
        })
    }

    /// The value range the networks train in (`TrainConfig::range`).
    pub fn range(&self) -> ValueRange {
        self.range
    }

    /// The restorer that evaluation uses: the EMA when on, else the trained one.
    pub fn eval_net(&self) -> &Backbone {
        self.ema.as_ref().map_or(&self.restorer, |e| &e.net)
    }

    /// The variables of [`Self::eval_net`].
    pub fn eval_vars(&self) -> &VarMap {
        self.ema.as_ref().map_or(&self.restorer_vars, |e| &e.varmap)
    }

    /// One training step on `batch` (`[0, 1]`, as the data pipeline makes it; mapped into
    /// the run's value range here): the losses, one backward pass over their total, Adam,
    /// the EMA. `step` is the number of steps done before this one (lambda's progress); the
    /// step's noise levels, noise, swap masks and dropout masks come from `seed` and `step`
    /// alone. A non-finite loss or gradient leaves every weight as it was.
    pub fn train_step(&mut self, batch: &Batch, step: usize, seed: u64) -> Result<StepOutcome> {
        // On the CPU the step runs on a thread of the kernels' rayon pool (it then takes part
        // in each parallel kernel instead of waking the pool for it); a GPU step stays on the
        // caller's thread, where its CUDA context is current.
        if batch.source_input.device().is_cpu() {
            daa_kernels::on_pool(|| self.train_step_here(batch, step, seed))
        } else {
            self.train_step_here(batch, step, seed)
        }
    }

    /// [`Models::train_step`] on the calling thread.
    fn train_step_here(&mut self, batch: &Batch, step: usize, seed: u64) -> Result<StepOutcome> {
        let mut rng = seeds::step_rng(seed, step);
        let mut dropout = seeds::dropout_rng(seed, step);
        let adaptation = self.diffusion.as_ref().map(|d| Adaptation {
            unet: &d.unet,
            loss: &d.loss,
            ramp: self.ramp,
        });
        let batch = batch.from_unit(self.range)?;
        // bf16: the convolutions of the forward pass (and so of its backward) compute in bf16;
        // weights, Adam, GroupNorm statistics and the losses stay f32 (docs/cuda.md).
        let _autocast = match self.precision {
            Precision::F32 => None,
            Precision::Bf16 => Some(daa_kernels::conv_autocast(DType::BF16)),
        };
        let samples_seen = (step * self.batch_size) as u64;
        let parts = match &self.dann {
            Some(d) => dann_step_losses(
                &batch,
                &self.restorer,
                &d.classifier,
                self.charbonnier_eps,
                self.dann_ramp.at(samples_seen),
            )?,
            None => step_losses(
                &batch,
                &self.restorer,
                adaptation.as_ref(),
                self.charbonnier_eps,
                samples_seen,
                &mut rng,
                &mut dropout,
            )?,
        };
        let losses = loss_values(&parts)?;
        let total = losses[0].1;
        let grads = match total.is_finite() {
            true => Some(parts.total.backward()?),
            false => None,
        };
        let applied = match &grads {
            Some(g) if self.opt.gradients_finite(g)? => {
                self.opt.step(g)?;
                if let Some(ema) = &self.ema {
                    ema_update(&ema.varmap, &self.restorer_vars, ema.decay)?;
                }
                true
            }
            _ => false,
        };
        Ok(StepOutcome {
            losses,
            lambda: parts.lambda,
            applied,
        })
    }
}
