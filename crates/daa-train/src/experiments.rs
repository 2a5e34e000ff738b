//! Small experiments that check a property of the method (run by `cargo xtask`).

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use daa_degrade::{collate, sample_rng, AwgnParams, Degradation, SmallImagePolicy, UnpairedFolder};
use daa_diffusion::{
    gaussian_like, q_sample, to_diffusion_space, CondUNet, CondUNetConfig, NoiseSchedule,
};
use rand::Rng;

use crate::{Adam, OptimConfig, Result};

/// Settings of the condition-noise experiment (the paper's Fig. 1a).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ConditionNoiseConfig {
    /// Clean training photos.
    pub train_dir: std::path::PathBuf,
    /// Clean held-out photos for the evaluation.
    pub test_dir: std::path::PathBuf,
    /// Condition noise levels (8-bit units).
    pub sigmas: Vec<f32>,
    /// Training steps per level.
    pub steps: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Patch side.
    pub patch_size: usize,
    /// Learning rate.
    pub lr: f64,
    /// Seed (the same for every level).
    pub seed: u64,
}

/// One level's result.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ConditionNoiseResult {
    /// Condition noise sigma (8-bit units).
    pub sigma: f32,
    /// Mean noise-prediction MSE over the last quarter of training.
    pub train_loss: f64,
    /// Noise-prediction MSE on held-out patches (fixed noise levels and noise).
    pub eval_loss: f64,
}

/// One sigma's model and what its batches need.
struct Level<'a> {
    cfg: &'a ConditionNoiseConfig,
    net: CondUNet,
    schedule: &'a NoiseSchedule,
    awgn: Degradation,
    device: &'a Device,
}

impl Level<'_> {
    /// The loss of one batch drawn from `folder` with stream `salt`, item `i`.
    fn batch_loss(&self, folder: &UnpairedFolder, salt: u64, i: u64) -> Result<Tensor> {
        let (cfg, device) = (self.cfg, self.device);
        let mut rng = sample_rng(cfg.seed ^ salt, i, 0);
        let mut clean = Vec::new();
        let mut cond = Vec::new();
        for k in 0..cfg.batch_size {
            let idx = rng.random_range(0..folder.len());
            let y = folder.patch(
                idx,
                cfg.patch_size,
                &mut sample_rng(cfg.seed ^ salt, i, k as u64 + 1),
            )?;
            cond.push(self.awgn.apply(&y, &mut rng)?);
            clean.push(y);
        }
        let y0 = to_diffusion_space(&collate(&clean)?.to_device(device)?)?;
        let c = to_diffusion_space(&collate(&cond)?.to_device(device)?)?;
        let gammas: Vec<f32> = (0..cfg.batch_size)
            .map(|_| self.schedule.sample_gamma(1, 999, &mut rng).1 as f32)
            .collect();
        let gamma = Tensor::from_vec(gammas, cfg.batch_size, device)?;
        let eps = gaussian_like(&y0, &mut rng)?;
        let y_noisy = q_sample(&y0, &gamma, &eps)?;
        // No dropout (the config sets it to 0).
        let pred = self
            .net
            .forward_t(&Tensor::cat(&[&y_noisy, &c], 1)?, &gamma, None)?;
        Ok((eps - pred)?.sqr()?.mean_all()?)
    }
}

/// Trains a small conditional noise predictor `D(cat[y_noisy, c], gamma)` whose condition `c`
/// is the clean target plus AWGN of level sigma, one model per sigma, same seed and data, and
/// reports its noise-prediction loss. The paper's Fig. 1a: the loss rises with sigma, i.e. a
/// cleaner condition makes noise prediction easier, which is what lets the loss pull the
/// restorer's outputs toward clean images.
pub fn condition_noise(
    cfg: &ConditionNoiseConfig,
    device: &Device,
    on_step: &mut dyn FnMut(f32, usize),
) -> Result<Vec<ConditionNoiseResult>> {
    let train = UnpairedFolder::open(&cfg.train_dir, true, SmallImagePolicy::ReflectPad, true)?;
    let test = UnpairedFolder::open(&cfg.test_dir, false, SmallImagePolicy::ReflectPad, true)?;
    let schedule = NoiseSchedule::paper();
    let unet_cfg = CondUNetConfig {
        in_channels: 6,
        dropout: 0.0,
        ..CondUNetConfig::tiny()
    };
    let mut out = Vec::new();
    for &sigma in &cfg.sigmas {
        let varmap = VarMap::new();
        let vb = crate::seeded_var_builder(&varmap, cfg.seed, DType::F32, device);
        let level = Level {
            cfg,
            net: CondUNet::new(vb, &unet_cfg)?,
            schedule: &schedule,
            awgn: Degradation::Awgn(AwgnParams {
                sigma_min: sigma,
                sigma_max: sigma,
            }),
            device,
        };
        let vars = varmap
            .data()
            .lock()
            .map(|d| d.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let mut opt = Adam::new(
            vars,
            OptimConfig {
                lr: cfg.lr,
                ..OptimConfig::paper_denoise()
            },
        )?;
        let mut tail = Vec::new();
        for step in 0..cfg.steps {
            let loss = level.batch_loss(&train, 1, step as u64)?;
            if step >= cfg.steps - cfg.steps / 4 {
                tail.push(loss.to_dtype(DType::F64)?.to_scalar::<f64>()?);
            }
            opt.step(&loss.backward()?)?;
            on_step(sigma, step + 1);
        }
        let n_eval = 16;
        let mut eval = 0.0;
        for i in 0..n_eval {
            eval += level
                .batch_loss(&test, 2, i)?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
        }
        out.push(ConditionNoiseResult {
            sigma,
            train_loss: tail.iter().sum::<f64>() / tail.len().max(1) as f64,
            eval_loss: eval / n_eval as f64,
        });
    }
    Ok(out)
}
