//! The configuration types of a training run: every field a run depends on.

use std::path::PathBuf;

use daa_backbones::BackboneConfig;
use daa_degrade::{Degradation, SmallImagePolicy};
use daa_diffusion::{AdaptationConfig, CondUNetConfig, NoiseSchedule, ValueRange, Variant};

use crate::dann::DannSettings;
use crate::metrics::MetricConfig;
use crate::{Error, Result};

/// Where pairs come from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DataSpec {
    /// Clean photos in `clean_dir`, degraded on the fly by `degradation`.
    Synthetic {
        /// Folder of clean images.
        clean_dir: PathBuf,
        /// The degradation applied to each crop (or each whole image, for evaluation).
        degradation: Degradation,
    },
    /// Aligned pairs `input_dir/NAME.*` and `target_dir/NAME.*`.
    Paired {
        /// Degraded inputs.
        input_dir: PathBuf,
        /// Clean targets.
        target_dir: PathBuf,
    },
}

/// The training method. Its names (`vanilla`, `da`, `da-ex`, `dann`) are spelled once, in
/// [`Method::name`]; parsing, serde and the CLI all use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub enum Method {
    /// Supervised on source pairs only: `L = L_res`.
    Vanilla,
    /// Denoising as Adaptation: `L = L_res + lambda * L_noise`, the diffusion network
    /// conditioned on restored source and target images, the source clean target noised.
    Da,
    /// "Ours-Ex": an unpaired clean image is noised and only the positive pass is used.
    DaEx,
    /// The feature-space baseline DANN (Ganin and Lempitsky, 2015): a domain classifier on the
    /// restorer's bottleneck features behind a gradient-reversal layer, `L = L_res + L_domain`
    /// (see `crate::dann`).
    Dann,
}

impl Method {
    /// Every method.
    pub const ALL: [Self; 4] = [Self::Vanilla, Self::Da, Self::DaEx, Self::Dann];

    /// The method's name in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Vanilla => "vanilla",
            Self::Da => "da",
            Self::DaEx => "da-ex",
            Self::Dann => "dann",
        }
    }

    /// Every name, for help and error messages.
    pub fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|m| m.name()).collect()
    }

    /// True when the method trains on target-domain inputs (every method but `vanilla`).
    pub fn adapts(self) -> bool {
        self != Self::Vanilla
    }

    /// True when the method trains a diffusion network alongside the restorer (`da`, `da-ex`).
    pub fn uses_diffusion(self) -> bool {
        self.variant().is_some()
    }

    /// True when the method noises unpaired clean images (`da-ex`).
    pub fn noises_unpaired_clean(self) -> bool {
        self == Self::DaEx
    }

    /// The adaptation loss's form, `None` for `vanilla` and `dann`.
    pub fn variant(self) -> Option<Variant> {
        match self {
            Self::Vanilla | Self::Dann => None,
            Self::Da => Some(Variant::Paired),
            Self::DaEx => Some(Variant::Ex),
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                Error::Config(format!(
                    "unknown method {s:?} (known: {})",
                    Self::names().join(", ")
                ))
            })
    }
}

impl From<Method> for &'static str {
    fn from(m: Method) -> Self {
        m.name()
    }
}

impl TryFrom<String> for Method {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

/// Target-domain ("real") training inputs: degraded images only, never their clean versions.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TargetSpec {
    /// A folder of real degraded images (no references), e.g. SIDD-Medium noisy images.
    Folder {
        /// The folder.
        dir: PathBuf,
    },
    /// A synthetic target domain: each clean photo is degraded `variants` times, once, before
    /// training, into `<run>/target_train/input` (the clean versions are written to
    /// `<run>/target_train/gt` for inspection and are never read by training).
    Synthetic {
        /// Clean photos.
        clean_dir: PathBuf,
        /// The target degradation.
        degradation: Degradation,
        /// Degraded copies per photo.
        variants: usize,
    },
}

/// Settings of domain adaptation: noise-space (`da`, `da-ex`) and, in `dann`, the feature-space
/// baseline (which shares the target domain and the lambda ramp).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptationSettings {
    /// The diffusion network.
    pub diffusion: CondUNetConfig,
    /// The noise schedule the diffusion network is trained with.
    pub schedule: ScheduleConfig,
    /// The loss's ablation switches (its form, paired or Ex, follows from the method).
    pub loss: LossSettings,
    /// Final weight of the noise loss (the paper: 0.2, reached as 0.197).
    pub lambda_max: f64,
    /// Training samples over which lambda ramps up (`daa_diffusion::LambdaRamp`,
    /// docs/method.md "Lambda ramp in samples seen"); 0: no ramp.
    #[serde(default)]
    pub ramp_samples: u64,
    /// Progress advances in whole quanta of this many samples, the first counting as one (the
    /// reference: one epoch of its synthetic list); 0: continuous from 0.
    #[serde(default)]
    pub ramp_quantum_samples: u64,
    /// Configs written before the ramp was counted in samples: a ramp of `ramp_steps` steps,
    /// read as `ramp_steps * batch_size` samples (continuous) when `ramp_samples` is 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp_steps: Option<usize>,
    /// Target-domain inputs.
    pub target: TargetSpec,
    /// For `da-ex`: unpaired clean images to noise.
    pub ex_clean_dir: PathBuf,
    /// For `dann`: the domain classifier and its gradient reversal (configs written before
    /// DANN existed read [`DannSettings::standard`]).
    #[serde(default = "DannSettings::standard")]
    pub dann: DannSettings,
}

/// The adaptation loss's settings, with the paper's ablation switches. The loss's form
/// (paired or Ex) is not here: it follows from [`Method`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossSettings {
    /// Channel shuffling: per-sample random order of the two condition slots.
    pub shuffle: bool,
    /// Residual-swapping contrastive term (`da` only).
    pub contrastive: bool,
    /// Hinge margin (the paper: 0.1).
    pub margin: f64,
    /// Smallest diffusion step sampled (the paper: 1).
    pub t_min: usize,
    /// Largest diffusion step sampled, inclusive (the paper: 999).
    pub t_max: usize,
}

impl LossSettings {
    /// The paper's full method: shuffle and contrastive on, margin 0.1, t in [1, 999].
    pub fn paper() -> Self {
        Self {
            shuffle: true,
            contrastive: true,
            margin: 0.1,
            t_min: 1,
            t_max: 999,
        }
    }
}

/// A linear DDPM noise schedule: `beta = linspace(beta_start, beta_end, steps)`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Number of diffusion steps.
    pub steps: usize,
    /// First beta.
    pub beta_start: f64,
    /// Last beta.
    pub beta_end: f64,
}

impl ScheduleConfig {
    /// The paper's schedule: 1000 steps, beta linear from 1e-6 to 1e-2.
    pub fn paper() -> Self {
        Self {
            steps: 1000,
            beta_start: 1e-6,
            beta_end: 1e-2,
        }
    }

    /// The schedule, computed in `f64`.
    pub fn build(&self) -> Result<NoiseSchedule> {
        NoiseSchedule::linear(self.steps, self.beta_start, self.beta_end)
            .map_err(|e| Error::Config(e.to_string()))
    }
}

impl AdaptationSettings {
    /// The adaptation loss's configuration for `method` (`None` for `vanilla` and `dann`).
    pub fn loss_config(&self, method: Method) -> Option<AdaptationConfig> {
        let l = &self.loss;
        Some(AdaptationConfig {
            shuffle: l.shuffle,
            contrastive: l.contrastive,
            margin: l.margin,
            t_min: l.t_min,
            t_max: l.t_max,
            variant: method.variant()?,
        })
    }
}

/// Adam's settings, every one written out (candle's AdamW defaults weight decay to 0.01;
/// the paper's Adam uses 0).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// Learning rate (constant; the paper: 1e-4 denoise, 5e-5 derain/deblur).
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// L2 weight decay (the paper: 0).
    pub weight_decay: f64,
}

impl OptimConfig {
    /// The paper's Adam for denoising: lr 1e-4, betas 0.9/0.999, eps 1e-8, no weight decay.
    pub fn paper_denoise() -> Self {
        Self {
            lr: 1e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// Evaluation settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Held-out pairs (photos never used in training).
    pub data: DataSpec,
    /// Metric conventions.
    pub metric: MetricConfig,
    /// Seed of the degradations applied to the held-out photos (fixed across runs so that
    /// every method sees the same inputs).
    pub seed: u64,
    /// Evaluate every this many steps (0: only at the end).
    pub every: usize,
}

/// The arithmetic of a run's convolutions (`--precision`). Weights, Adam's state, GroupNorm
/// statistics, the noise schedule and every loss stay f32 either way; checkpoints are f32.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Everything in f32 (on CUDA, cuDNN may use TF32 unless `DAA_CUDNN_TF32=0`).
    #[default]
    F32,
    /// Convolutions (forward and backward) in bf16 through conv autocast
    /// (`daa_kernels::conv_autocast`): tensor cores on CUDA; on the CPU, inputs and outputs
    /// rounded to bf16 around an f32 conv (slower than f32: for checking, not for speed).
    Bf16,
}

impl Precision {
    /// The names `--precision` takes.
    pub fn names() -> [&'static str; 2] {
        ["f32", "bf16"]
    }
}

impl std::str::FromStr for Precision {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            other => Err(Error::Config(format!(
                "unknown precision {other:?} (use f32 or bf16)"
            ))),
        }
    }
}

/// The range of configs and checkpoints written before the range was a setting.
pub(crate) fn unit_range() -> ValueRange {
    ValueRange::Unit
}

/// Everything a training run depends on. Saved, resolved, as `config.json` in the run folder.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// The preset this came from (informational).
    pub preset: String,
    /// The training method.
    pub method: Method,
    /// The restoration network.
    pub backbone: BackboneConfig,
    /// The value range the restorer, the Charbonnier loss and the diffusion network work in
    /// (`unit`: `[0, 1]`, `signed`: `[-1, 1]`; docs/method.md section 2, "Value range"). Images
    /// are `[0, 1]` when loaded, saved and measured; the range is stored with every restorer
    /// checkpoint. Configs written before the setting existed read as `unit`.
    #[serde(default = "unit_range")]
    pub range: ValueRange,
    /// The arithmetic of the convolutions (default f32; configs without it read as f32).
    #[serde(default)]
    pub precision: Precision,
    /// Noise-space adaptation (ignored by `vanilla`).
    pub adaptation: AdaptationSettings,
    /// Training pairs (the source domain).
    pub train_data: DataSpec,
    /// Evaluation.
    pub eval: EvalConfig,
    /// Training patch side (a multiple of the backbone's size multiple).
    pub patch_size: usize,
    /// Random flips/rotations of training crops.
    pub augment: bool,
    /// Images smaller than the patch: reflect-pad or refuse.
    pub small_images: SmallImagePolicy,
    /// Keep decoded training images in memory.
    pub cache_images: bool,
    /// Batch size.
    pub batch_size: usize,
    /// Optimizer steps.
    pub steps: usize,
    /// The one seed: weights, data order, crops, degradations.
    pub seed: u64,
    /// Adam.
    pub optim: OptimConfig,
    /// Charbonnier epsilon (the paper: 1e-3).
    pub charbonnier_eps: f64,
    /// Decay of an exponential moving average of the restorer's weights (the paper's optional
    /// EMA: 0.9999); 0 turns it off. When on, evaluation and `restorer-ema-{step}` use it.
    pub ema_decay: f64,
    /// Log metrics every this many steps.
    pub log_every: usize,
    /// Save a checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: usize,
    /// How many periodic checkpoints to keep (the best and the last are kept as well).
    pub keep_last: usize,
    /// Abort after this many non-finite losses in a row (each one's step is skipped).
    pub max_nonfinite_steps: usize,
}
