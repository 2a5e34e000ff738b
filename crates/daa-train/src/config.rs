use std::path::PathBuf;

use daa_backbones::{BackboneConfig, DnCnnConfig, NafNetConfig, UNetConfig};
use daa_degrade::{Degradation, SmallImagePolicy};
use daa_diffusion::{AdaptationConfig, CondUNetConfig, Variant};

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

/// The training method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Supervised on source pairs only: `L = L_res`.
    Vanilla,
    /// Denoising as Adaptation: `L = L_res + lambda * L_noise`, the diffusion network
    /// conditioned on restored source and target images, the source clean target noised.
    Da,
    /// "Ours-Ex": an unpaired clean image is noised and only the positive pass is used.
    DaEx,
}

impl std::str::FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "vanilla" => Ok(Self::Vanilla),
            "da" => Ok(Self::Da),
            "da-ex" => Ok(Self::DaEx),
            other => Err(Error::Config(format!(
                "unknown method {other:?} (known: vanilla, da, da-ex)"
            ))),
        }
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

/// Settings of noise-space adaptation (used by `da` and `da-ex`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptationSettings {
    /// The diffusion network.
    pub diffusion: CondUNetConfig,
    /// The loss and its ablation switches (shuffle, contrastive, t range, variant).
    pub loss: AdaptationConfig,
    /// Final weight of the noise loss (the paper: 0.2, reached as 0.197).
    pub lambda_max: f64,
    /// Steps over which lambda ramps up as in the paper (`p = min(step / ramp_steps, 1)`).
    pub ramp_steps: usize,
    /// Target-domain inputs.
    pub target: TargetSpec,
    /// For `da-ex`: unpaired clean images to noise.
    pub ex_clean_dir: PathBuf,
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

/// The names accepted by [`TrainConfig::preset`].
pub const PRESETS: [&str; 6] = [
    "denoise",
    "denoise-vanilla",
    "denoise-paper",
    "deblur",
    "derain",
    "smoke",
];

fn embedded(sub: &str) -> PathBuf {
    // The photos of datasets/ are compiled into the binary (daa_degrade::embedded), so presets
    // work wherever the binary is; `embedded:photos/train` is resolved by daa-degrade.
    daa_degrade::embedded::path(sub)
}

impl TrainConfig {
    /// A preset by name (see [`PRESETS`]).
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "denoise" => Ok(Self::denoise()),
            "denoise-paper" => Ok(Self::denoise_paper()),
            "denoise-vanilla" => Ok(Self::denoise_vanilla()),
            "deblur" => Ok(Self::deblur()),
            "derain" => Ok(Self::derain()),
            "smoke" => Ok(Self::smoke()),
            other => Err(Error::Config(format!(
                "unknown preset {other:?} (known: {})",
                PRESETS.join(", ")
            ))),
        }
    }

    /// The README's main job: denoising adaptation on the embedded photos, on a CPU.
    ///
    /// Source pairs: AWGN sigma ~ U[0, 75]/255 (the paper) on the 12 training photos. Target
    /// ("real") inputs: camera-pipeline noise ([`Degradation::denoise_target`]) on the same
    /// photos, 2 variants each, clean versions never read. Evaluation: the 4 held-out photos with
    /// the target degradation. CPU-sized U-Net restorer and CondUNet, 48x48 patches, batch 8,
    /// 200 steps, lr 1e-3 (the paper's 1e-4 is for 100x longer runs), lambda ramped over the
    /// first third. About 1.4 s a step on a 2-core CPU.
    pub fn denoise() -> Self {
        let steps = 200;
        Self {
            preset: "denoise".into(),
            method: Method::Da,
            backbone: BackboneConfig::UNet(UNetConfig::cpu()),
            adaptation: AdaptationSettings {
                diffusion: CondUNetConfig::cpu(),
                loss: AdaptationConfig::paper(),
                lambda_max: 0.2,
                ramp_steps: steps / 3,
                target: TargetSpec::Synthetic {
                    clean_dir: embedded("photos/train"),
                    degradation: Degradation::denoise_target(),
                    variants: 2,
                },
                ex_clean_dir: embedded("photos/train"),
            },
            train_data: DataSpec::Synthetic {
                clean_dir: embedded("photos/train"),
                degradation: Degradation::denoise_source(),
            },
            eval: EvalConfig {
                data: DataSpec::Synthetic {
                    clean_dir: embedded("photos/test"),
                    degradation: Degradation::denoise_target(),
                },
                metric: MetricConfig::rgb(),
                seed: 2024,
                every: 0,
            },
            patch_size: 48,
            augment: true,
            small_images: SmallImagePolicy::ReflectPad,
            cache_images: true,
            batch_size: 8,
            steps,
            seed: 0,
            optim: OptimConfig {
                lr: 1e-3,
                ..OptimConfig::paper_denoise()
            },
            charbonnier_eps: 1e-3,
            ema_decay: 0.0,
            log_every: 10,
            checkpoint_every: 100,
            keep_last: 2,
            max_nonfinite_steps: 20,
        }
    }

    /// The paper's denoising setup (U-Net 8.56 M + CondUNet 62.6 M, 128x128 patches, batch 24,
    /// lr 1e-4) for a GPU; point the data at a large clean set (DIV2K etc.) and real noisy images
    /// (SIDD-Medium) for a real run. Lambda ramps over 13,430 steps: the reference ramps over 300
    /// epochs of its denoising set (8,594 images at a global batch of 192, 44.8 steps an epoch).
    pub fn denoise_paper() -> Self {
        let base = Self::denoise();
        Self {
            preset: "denoise-paper".into(),
            backbone: BackboneConfig::UNet(UNetConfig::paper()),
            adaptation: AdaptationSettings {
                diffusion: CondUNetConfig::paper(),
                ramp_steps: 13_430,
                ..base.adaptation.clone()
            },
            patch_size: 128,
            batch_size: 24,
            steps: 100_000,
            optim: OptimConfig::paper_denoise(),
            checkpoint_every: 5_000,
            log_every: 50,
            ..base
        }
    }

    /// The `denoise` preset with another pair of source and target degradations.
    fn with_domains(preset: &str, source: Degradation, target: Degradation) -> Self {
        let base = Self::denoise();
        Self {
            preset: preset.into(),
            adaptation: AdaptationSettings {
                target: TargetSpec::Synthetic {
                    clean_dir: embedded("photos/train"),
                    degradation: target.clone(),
                    variants: 2,
                },
                ..base.adaptation.clone()
            },
            train_data: DataSpec::Synthetic {
                clean_dir: embedded("photos/train"),
                degradation: source,
            },
            eval: EvalConfig {
                data: DataSpec::Synthetic {
                    clean_dir: embedded("photos/test"),
                    degradation: target,
                },
                ..base.eval.clone()
            },
            ..base
        }
    }

    /// Deblurring adaptation on the embedded photos, on a CPU: source = linear motion blur plus
    /// slight noise ([`daa_degrade::MotionBlurParams::source`]), target = camera shake in linear
    /// light with clipped highlights, noise and JPEG ([`daa_degrade::ShakeParams::target`]);
    /// otherwise as [`Self::denoise`]. PSNR/SSIM on RGB, as the paper's RealBlur-J numbers.
    pub fn deblur() -> Self {
        Self::with_domains(
            "deblur",
            Degradation::MotionBlur(daa_degrade::MotionBlurParams::source()),
            Degradation::Shake(daa_degrade::ShakeParams::target()),
        )
    }

    /// Deraining adaptation on the embedded photos, on a CPU: source = one layer of additive
    /// streaks ([`daa_degrade::RainParams::source`]), target = several streak layers, haze and
    /// JPEG ([`daa_degrade::StormParams::target`]); PSNR/SSIM on Y, as the paper's SPA numbers.
    pub fn derain() -> Self {
        let mut cfg = Self::with_domains(
            "derain",
            Degradation::Rain(daa_degrade::RainParams::source()),
            Degradation::Storm(daa_degrade::StormParams::target()),
        );
        cfg.eval.metric = MetricConfig::y();
        cfg
    }

    /// Supervised baseline of [`Self::denoise`]: the same everything, `method = vanilla`.
    pub fn denoise_vanilla() -> Self {
        Self {
            preset: "denoise-vanilla".into(),
            method: Method::Vanilla,
            ..Self::denoise()
        }
    }

    /// For tests: the tiny U-Net and CondUNet, 32x32 patches, batch 2, 4 steps, DA.
    pub fn smoke() -> Self {
        let base = Self::denoise();
        Self {
            preset: "smoke".into(),
            backbone: BackboneConfig::UNet(UNetConfig::tiny()),
            adaptation: AdaptationSettings {
                diffusion: CondUNetConfig::tiny(),
                ramp_steps: 2,
                target: TargetSpec::Synthetic {
                    clean_dir: embedded("photos/train"),
                    degradation: Degradation::denoise_target(),
                    variants: 1,
                },
                ..base.adaptation.clone()
            },
            patch_size: 32,
            batch_size: 2,
            steps: 4,
            log_every: 1,
            checkpoint_every: 2,
            ..base
        }
    }

    /// Other backbones at the same scale as the preset's (for `--backbone`).
    pub fn backbone_by_name(&self, name: &str) -> Result<BackboneConfig> {
        let tiny = matches!(&self.backbone, BackboneConfig::UNet(c) if c.width <= 8);
        let paper = matches!(&self.backbone, BackboneConfig::UNet(c) if c.width >= 64);
        Ok(match (name, tiny, paper) {
            ("unet", true, _) => BackboneConfig::UNet(UNetConfig::tiny()),
            ("unet", _, true) => BackboneConfig::UNet(UNetConfig::paper()),
            ("unet", _, _) => BackboneConfig::UNet(UNetConfig::cpu()),
            ("dncnn", true, _) => BackboneConfig::DnCnn(DnCnnConfig::tiny()),
            ("dncnn", _, true) => BackboneConfig::DnCnn(DnCnnConfig::paper()),
            ("dncnn", _, _) => BackboneConfig::DnCnn(DnCnnConfig::cpu()),
            ("nafnet", true, _) => BackboneConfig::NafNet(NafNetConfig::tiny()),
            ("nafnet", _, true) => BackboneConfig::NafNet(NafNetConfig::deblur()),
            ("nafnet", _, _) => BackboneConfig::NafNet(NafNetConfig::cpu()),
            (other, _, _) => {
                return Err(Error::Config(format!(
                    "unknown backbone {other:?} (known: unet, dncnn, nafnet)"
                )))
            }
        })
    }

    /// Checks ranges and consistency; called before any file is touched.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1".into());
        }
        if self.steps == 0 {
            return bad("steps must be at least 1".into());
        }
        let m = self.backbone.size_multiple();
        if self.patch_size == 0 || !self.patch_size.is_multiple_of(m) {
            return bad(format!(
                "patch_size {} must be a positive multiple of {m} for {}",
                self.patch_size,
                self.backbone.name()
            ));
        }
        let o = &self.optim;
        let finite = [
            o.lr,
            o.beta1,
            o.beta2,
            o.eps,
            o.weight_decay,
            self.charbonnier_eps,
        ];
        if finite.iter().any(|v| !v.is_finite()) {
            return bad("optimizer settings and charbonnier_eps must be finite".into());
        }
        if o.lr <= 0.0
            || !(0.0..1.0).contains(&o.beta1)
            || !(0.0..1.0).contains(&o.beta2)
            || o.eps <= 0.0
            || o.weight_decay < 0.0
        {
            return bad(format!("optimizer settings out of range: {o:?}"));
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return bad(format!(
                "ema_decay must be in [0, 1), got {}",
                self.ema_decay
            ));
        }
        if self.charbonnier_eps <= 0.0 {
            return bad("charbonnier_eps must be positive".into());
        }
        if self.log_every == 0 {
            return bad("log_every must be at least 1".into());
        }
        if self.max_nonfinite_steps == 0 {
            return bad("max_nonfinite_steps must be at least 1".into());
        }
        if self.method != Method::Vanilla {
            let a = &self.adaptation;
            a.loss.validate(1000)?;
            if !a.lambda_max.is_finite() || a.lambda_max < 0.0 {
                return bad(format!(
                    "lambda_max must be finite and >= 0, got {}",
                    a.lambda_max
                ));
            }
            let m = a.diffusion.size_multiple();
            if !self.patch_size.is_multiple_of(m) {
                return bad(format!(
                    "patch_size {} must be a multiple of {m} for the diffusion network",
                    self.patch_size
                ));
            }
            if let TargetSpec::Synthetic {
                degradation,
                variants,
                ..
            } = &a.target
            {
                degradation.validate()?;
                if *variants == 0 {
                    return bad("target variants must be at least 1".into());
                }
            }
            let expect = if self.method == Method::DaEx {
                Variant::Ex
            } else {
                Variant::Paired
            };
            if a.loss.variant != expect {
                return bad(format!(
                    "method {:?} needs adaptation.loss.variant = {expect:?}",
                    self.method
                ));
            }
        }
        for spec in [&self.train_data, &self.eval.data] {
            if let DataSpec::Synthetic { degradation, .. } = spec {
                degradation.validate()?;
            }
        }
        Ok(())
    }

    /// Parses a config file's JSON, rejecting unknown keys.
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| Error::Config(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_round_trip() -> Result<()> {
        for name in PRESETS {
            let cfg = TrainConfig::preset(name)?;
            cfg.validate()?;
            let json = serde_json::to_string(&cfg).map_err(|e| Error::Config(e.to_string()))?;
            assert_eq!(TrainConfig::from_json(&json)?, cfg);
        }
        assert!(TrainConfig::preset("nope").is_err());
        Ok(())
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected() -> Result<()> {
        let mut v =
            serde_json::to_value(TrainConfig::smoke()).map_err(|e| Error::Config(e.to_string()))?;
        v["batch_sise"] = 3.into();
        assert!(TrainConfig::from_json(&v.to_string()).is_err());
        let mut cfg = TrainConfig::smoke();
        cfg.patch_size = 30;
        assert!(cfg.validate().is_err());
        let mut cfg = TrainConfig::smoke();
        cfg.optim.lr = -1.0;
        assert!(cfg.validate().is_err());
        Ok(())
    }
}
