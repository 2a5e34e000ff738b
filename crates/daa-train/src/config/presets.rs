//! The named presets of a run, and the one registry of restoration networks by name and
//! scale.

use std::path::PathBuf;

use daa_backbones::{
    BackboneConfig, DnCnnConfig, NafNetConfig, RestormerConfig, UNetConfig, UformerConfig,
};
use daa_degrade::{Degradation, SmallImagePolicy};
use daa_diffusion::{CondUNetConfig, ValueRange};

use super::types::{
    AdaptationSettings, DataSpec, EvalConfig, LossSettings, Method, OptimConfig, Precision,
    ScheduleConfig, TargetSpec, TrainConfig,
};
use crate::dann::DannSettings;
use crate::metrics::MetricConfig;
use crate::{Error, Result};

/// The size of a network: for tests, for a CPU, or the paper's (a GPU's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Tiny networks for tests.
    Tiny,
    /// Small networks that train in minutes on a CPU.
    Cpu,
    /// The paper's networks.
    Paper,
}

impl Scale {
    /// Every scale.
    pub const ALL: [Self; 3] = [Self::Tiny, Self::Cpu, Self::Paper];

    /// The scale's name (`tiny`, `cpu`, `paper`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Tiny => "tiny",
            Self::Cpu => "cpu",
            Self::Paper => "paper",
        }
    }
}

/// A restoration network at a scale.
type BackboneFn = fn() -> BackboneConfig;

/// The one registry of restoration networks: name, scale, configuration.
const BACKBONES: [(&str, Scale, BackboneFn); 15] = [
    ("unet", Scale::Tiny, || {
        BackboneConfig::UNet(UNetConfig::tiny())
    }),
    ("unet", Scale::Cpu, || {
        BackboneConfig::UNet(UNetConfig::cpu())
    }),
    ("unet", Scale::Paper, || {
        BackboneConfig::UNet(UNetConfig::paper())
    }),
    ("dncnn", Scale::Tiny, || {
        BackboneConfig::DnCnn(DnCnnConfig::tiny())
    }),
    ("dncnn", Scale::Cpu, || {
        BackboneConfig::DnCnn(DnCnnConfig::cpu())
    }),
    ("dncnn", Scale::Paper, || {
        BackboneConfig::DnCnn(DnCnnConfig::paper())
    }),
    ("nafnet", Scale::Tiny, || {
        BackboneConfig::NafNet(NafNetConfig::tiny())
    }),
    ("nafnet", Scale::Cpu, || {
        BackboneConfig::NafNet(NafNetConfig::cpu())
    }),
    // NAFNet's paper configuration is its deblurring one (width 32, GoPro).
    ("nafnet", Scale::Paper, || {
        BackboneConfig::NafNet(NafNetConfig::deblur())
    }),
    ("restormer", Scale::Tiny, || {
        BackboneConfig::Restormer(RestormerConfig::tiny())
    }),
    ("restormer", Scale::Cpu, || {
        BackboneConfig::Restormer(RestormerConfig::cpu())
    }),
    ("restormer", Scale::Paper, || {
        BackboneConfig::Restormer(RestormerConfig::paper())
    }),
    ("uformer", Scale::Tiny, || {
        BackboneConfig::Uformer(UformerConfig::tiny())
    }),
    ("uformer", Scale::Cpu, || {
        BackboneConfig::Uformer(UformerConfig::cpu())
    }),
    ("uformer", Scale::Paper, || {
        BackboneConfig::Uformer(UformerConfig::paper())
    }),
];

/// The names of the registry's networks.
pub fn backbone_names() -> Vec<&'static str> {
    let mut names: Vec<&str> = BACKBONES.iter().map(|(n, _, _)| *n).collect();
    names.dedup();
    names
}

/// Every `{name}-{scale}` architecture name (`unet-paper`, ...), as `--arch` takes them.
pub fn arch_names() -> Vec<String> {
    BACKBONES
        .iter()
        .map(|(n, s, _)| format!("{n}-{}", s.name()))
        .collect()
}

/// The network `name` at `scale`.
pub fn backbone(name: &str, scale: Scale) -> Result<BackboneConfig> {
    BACKBONES
        .iter()
        .find(|(n, s, _)| *n == name && *s == scale)
        .map(|(_, _, f)| f())
        .ok_or_else(|| {
            Error::Config(format!(
                "unknown backbone {name:?} (known: {})",
                backbone_names().join(", ")
            ))
        })
}

/// The network named `{name}-{scale}` (`unet-paper`, `nafnet-cpu`; `nafnet-deblur` is
/// `nafnet-paper`).
pub fn arch(spec: &str) -> Result<BackboneConfig> {
    let spec = match spec {
        "nafnet-deblur" => "nafnet-paper",
        other => other,
    };
    let found = spec.rsplit_once('-').and_then(|(name, scale)| {
        let scale = Scale::ALL.into_iter().find(|s| s.name() == scale)?;
        backbone(name, scale).ok()
    });
    found.ok_or_else(|| {
        Error::Config(format!(
            "unknown architecture {spec:?} (known: {})",
            arch_names().join(", ")
        ))
    })
}

/// A preset: name, the scale of its networks, the function that builds it.
type PresetFn = fn() -> TrainConfig;

/// The presets, by name.
const PRESET_TABLE: [(&str, Scale, PresetFn); 8] = [
    ("denoise", Scale::Cpu, TrainConfig::denoise),
    ("denoise-vanilla", Scale::Cpu, TrainConfig::denoise_vanilla),
    ("denoise-paper", Scale::Paper, TrainConfig::denoise_paper),
    ("deblur", Scale::Cpu, TrainConfig::deblur),
    ("deblur-paper", Scale::Paper, TrainConfig::deblur_paper),
    ("derain", Scale::Cpu, TrainConfig::derain),
    ("derain-paper", Scale::Paper, TrainConfig::derain_paper),
    ("smoke", Scale::Tiny, TrainConfig::smoke),
];

/// The names accepted by [`TrainConfig::preset`].
pub const PRESETS: [&str; 8] = [
    PRESET_TABLE[0].0,
    PRESET_TABLE[1].0,
    PRESET_TABLE[2].0,
    PRESET_TABLE[3].0,
    PRESET_TABLE[4].0,
    PRESET_TABLE[5].0,
    PRESET_TABLE[6].0,
    PRESET_TABLE[7].0,
];

fn embedded(sub: &str) -> PathBuf {
    // The photos of datasets/ are compiled into the binary (daa_degrade::embedded), so presets
    // work wherever the binary is; `embedded:photos/train` is resolved by daa-degrade.
    daa_degrade::embedded::path(sub)
}

impl TrainConfig {
    /// A preset by name (see [`PRESETS`]).
    pub fn preset(name: &str) -> Result<Self> {
        PRESET_TABLE
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, _, f)| f())
            .ok_or_else(|| {
                Error::Config(format!(
                    "unknown preset {name:?} (known: {})",
                    PRESETS.join(", ")
                ))
            })
    }

    /// The scale of this config's preset, `None` when `preset` names none (a hand-written
    /// config file).
    pub fn scale(&self) -> Option<Scale> {
        PRESET_TABLE
            .iter()
            .find(|(n, _, _)| *n == self.preset)
            .map(|(_, s, _)| *s)
    }

    /// The README's main job: denoising adaptation on the embedded photos, on a CPU.
    ///
    /// Source pairs: AWGN sigma ~ U[0, 75]/255 (the paper) on the 12 training photos. Target
    /// ("real") inputs: camera-pipeline noise ([`Degradation::denoise_target`]) on the same
    /// photos, 2 variants each, clean versions never read. Evaluation: the 4 held-out photos with
    /// the target degradation. CPU-sized U-Net restorer and CondUNet, 48x48 patches, batch 8,
    /// 200 steps, lr 1e-3 (the paper's 1e-4 is for 100x longer runs), lambda ramped over the
    /// first third. About 1.4 s a step on a 2-core CPU. Trains in `[0, 1]`, as the reference
    /// denoises.
    pub fn denoise() -> Self {
        let steps = 200;
        Self {
            preset: "denoise".into(),
            method: Method::Da,
            backbone: BackboneConfig::UNet(UNetConfig::cpu()),
            range: ValueRange::Unit,
            precision: Precision::F32,
            adaptation: AdaptationSettings {
                diffusion: CondUNetConfig::cpu(),
                schedule: ScheduleConfig::paper(),
                loss: LossSettings::paper(),
                lambda_max: 0.2,
                ramp_samples: (steps / 3 * 8) as u64,
                ramp_quantum_samples: 0,
                ramp_steps: None,
                target: TargetSpec::Synthetic {
                    clean_dir: embedded("photos/train"),
                    degradation: Degradation::denoise_target(),
                    variants: 2,
                },
                ex_clean_dir: embedded("photos/train"),
                dann: DannSettings::standard(),
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
    /// (SIDD-Medium) for a real run. Lambda ramps as the reference's: 300 epochs of its denoising
    /// list of about 65,500 crops, one epoch per quantum (docs/method.md derives the figure;
    /// scripts/count_reference_crops.py counts it exactly from the photos).
    pub fn denoise_paper() -> Self {
        let base = Self::denoise();
        Self {
            preset: "denoise-paper".into(),
            backbone: BackboneConfig::UNet(UNetConfig::paper()),
            adaptation: AdaptationSettings {
                diffusion: CondUNetConfig::paper(),
                ramp_samples: 300 * 65_500,
                ramp_quantum_samples: 65_500,
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

    /// The `denoise` preset with another pair of source and target degradations, in
    /// `[-1, 1]` as the reference derains and deblurs.
    fn with_domains(preset: &str, source: Degradation, target: Degradation) -> Self {
        let base = Self::denoise();
        Self {
            preset: preset.into(),
            range: ValueRange::Signed,
            precision: Precision::F32,
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
    /// otherwise as [`Self::denoise`] but in `[-1, 1]`. PSNR/SSIM on RGB, as the paper's
    /// RealBlur-J numbers.
    pub fn deblur() -> Self {
        Self::with_domains(
            "deblur",
            Degradation::MotionBlur(daa_degrade::MotionBlurParams::source()),
            Degradation::Shake(daa_degrade::ShakeParams::target()),
        )
    }

    /// Deraining adaptation on the embedded photos, on a CPU: source = one layer of additive
    /// streaks ([`daa_degrade::RainParams::source`]), target = several streak layers, haze and
    /// JPEG ([`daa_degrade::StormParams::target`]); in `[-1, 1]`; PSNR/SSIM on Y, as the
    /// paper's SPA numbers.
    pub fn derain() -> Self {
        let mut cfg = Self::with_domains(
            "derain",
            Degradation::Rain(daa_degrade::RainParams::source()),
            Degradation::Storm(daa_degrade::StormParams::target()),
        );
        cfg.eval.metric = MetricConfig::y();
        cfg
    }

    /// A CPU preset's task at the paper's scale, for a GPU: U-Net 8.56 M + CondUNet 62.6 M,
    /// 128x128 patches, batch 24, 100,000 steps, the reference's lr 5e-5 for deraining and
    /// deblurring, `[-1, 1]`, and lambda ramped over 300 epochs of `epoch` samples, one epoch
    /// per quantum (docs/method.md section 2, "Lambda ramp in samples seen").
    fn paper_scale(base: Self, preset: &str, epoch: u64) -> Self {
        Self {
            preset: preset.into(),
            backbone: BackboneConfig::UNet(UNetConfig::paper()),
            range: ValueRange::Signed,
            precision: Precision::F32,
            adaptation: AdaptationSettings {
                diffusion: CondUNetConfig::paper(),
                ramp_samples: 300 * epoch,
                ramp_quantum_samples: epoch,
                ..base.adaptation.clone()
            },
            patch_size: 128,
            batch_size: 24,
            steps: 100_000,
            optim: OptimConfig {
                lr: 5e-5,
                ..OptimConfig::paper_denoise()
            },
            checkpoint_every: 5_000,
            log_every: 50,
            ..base
        }
    }

    /// The paper's deblurring setup for a GPU (see [`Self::paper_scale`]): its epoch is GoPro's
    /// 2,103 training pairs cut into 8 crops each, 16,824 samples. The data default to the
    /// embedded photos with [`Self::deblur`]'s degradations; for the paper's run give GoPro
    /// pairs (`--train-input/--train-target`), RealBlur-J training inputs (`--real-dir`) and
    /// the RealBlur-J test pairs, as `daa data prepare` writes them (docs/datasets.md).
    pub fn deblur_paper() -> Self {
        Self::paper_scale(Self::deblur(), "deblur-paper", 16_824)
    }

    /// The paper's deraining setup for a GPU (see [`Self::paper_scale`]): its epoch is
    /// Rain13K's 13,712 pairs, used whole. PSNR/SSIM on Y. The data default to the embedded
    /// photos with [`Self::derain`]'s degradations; for the paper's run give Rain13K pairs,
    /// SPA-Data training inputs (`--real-dir`) and the 1000 SPA test pairs, as `daa data
    /// prepare` writes them (docs/datasets.md).
    pub fn derain_paper() -> Self {
        Self::paper_scale(Self::derain(), "derain-paper", 13_712)
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
                ramp_samples: 2 * 2,
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_round_trip() -> Result<()> {
        for name in PRESETS {
            let cfg = TrainConfig::preset(name)?;
            cfg.validate()?;
            assert!(cfg.scale().is_some(), "{name}");
            let json = serde_json::to_string(&cfg).map_err(|e| Error::Config(e.to_string()))?;
            assert_eq!(TrainConfig::from_json(&json)?, cfg);
        }
        assert!(TrainConfig::preset("nope").is_err());
        Ok(())
    }

    /// Each task trains in the reference's range (denoising `[0, 1]`, deblurring and deraining
    /// `[-1, 1]`), at every scale; the paper presets carry the reference's networks, lr, metric
    /// and ramp (docs/method.md section 2).
    #[test]
    fn presets_train_in_the_reference_range_and_paper_presets_match_it() -> Result<()> {
        for name in PRESETS {
            let cfg = TrainConfig::preset(name)?;
            let want = match name.split('-').next() {
                Some("deblur" | "derain") => ValueRange::Signed,
                _ => ValueRange::Unit,
            };
            assert_eq!(cfg.range, want, "{name}");
        }
        for (name, epoch, y) in [
            ("denoise-paper", 65_500, false),
            ("deblur-paper", 16_824, false),
            ("derain-paper", 13_712, true),
        ] {
            let cfg = TrainConfig::preset(name)?;
            assert_eq!(cfg.scale(), Some(Scale::Paper), "{name}");
            assert_eq!(cfg.method, Method::Da, "{name}");
            assert_eq!(
                cfg.backbone,
                BackboneConfig::UNet(UNetConfig::paper()),
                "{name}"
            );
            assert_eq!(cfg.adaptation.diffusion, CondUNetConfig::paper(), "{name}");
            assert_eq!(cfg.adaptation.loss, LossSettings::paper(), "{name}");
            assert_eq!((cfg.patch_size, cfg.batch_size), (128, 24), "{name}");
            assert_eq!(cfg.eval.metric.y_channel, y, "{name}");
            let lr = if name == "denoise-paper" { 1e-4 } else { 5e-5 };
            assert_eq!(cfg.optim.lr, lr, "{name}");
            assert_eq!(cfg.adaptation.ramp_quantum_samples, epoch, "{name}");
            assert_eq!(cfg.adaptation.ramp_samples, 300 * epoch, "{name}");
            // The reference's lambda: 0.2 tanh(5 epoch / 600), constant within an epoch.
            let ramp = cfg.lambda_ramp();
            for (samples, epochs) in [
                (0, 1.0),
                (epoch - 1, 1.0),
                (epoch, 2.0),
                (299 * epoch, 300.0),
            ] {
                let want = 0.2 * (5.0 * epochs / 600.0f64).tanh();
                let got = ramp.at(samples);
                assert!(
                    (got - want).abs() < 1e-12,
                    "{name} at {samples}: {got} vs {want}"
                );
            }
        }
        assert_eq!(
            TrainConfig::deblur_paper().train_data,
            TrainConfig::deblur().train_data
        );
        Ok(())
    }

    /// A config written before the range was a setting reads as `unit`.
    #[test]
    fn configs_without_a_range_read_as_unit() -> Result<()> {
        let mut json: serde_json::Value = serde_json::to_value(TrainConfig::deblur())
            .map_err(|e| Error::Config(e.to_string()))?;
        let removed = json.as_object_mut().and_then(|o| o.remove("range"));
        assert_eq!(removed, Some(serde_json::json!("signed")));
        let cfg = TrainConfig::from_json(&json.to_string())?;
        assert_eq!(cfg.range, ValueRange::Unit);
        Ok(())
    }

    #[test]
    fn every_architecture_name_resolves_and_scales_are_explicit() -> Result<()> {
        for name in arch_names() {
            arch(&name)?;
        }
        assert_eq!(arch("nafnet-deblur")?, arch("nafnet-paper")?);
        assert_eq!(
            backbone("unet", Scale::Tiny)?,
            BackboneConfig::UNet(UNetConfig::tiny())
        );
        assert_eq!(TrainConfig::smoke().scale(), Some(Scale::Tiny));
        assert_eq!(TrainConfig::denoise_paper().scale(), Some(Scale::Paper));
        assert!(arch("unet-huge").is_err() && arch("resnet-cpu").is_err());
        Ok(())
    }

    /// Every backbone of the registry at every scale, Restormer and Uformer included; each
    /// configuration survives the JSON of a checkpoint's `daa.backbone` metadata.
    #[test]
    fn transformers_are_registered_and_their_metadata_round_trips() -> Result<()> {
        for name in ["unet", "dncnn", "nafnet", "restormer", "uformer"] {
            assert!(backbone_names().contains(&name), "{name}");
            for scale in Scale::ALL {
                let spec = format!("{name}-{}", scale.name());
                let cfg = arch(&spec)?;
                assert_eq!(cfg, backbone(name, scale)?, "{spec}");
                assert_eq!(cfg.name(), name, "{spec}");
                let json = serde_json::to_string(&cfg).map_err(|e| Error::Config(e.to_string()))?;
                let back: BackboneConfig =
                    serde_json::from_str(&json).map_err(|e| Error::Config(e.to_string()))?;
                assert_eq!(back, cfg, "{spec}");
            }
        }
        assert_eq!(
            arch("restormer-cpu")?,
            BackboneConfig::Restormer(RestormerConfig::cpu())
        );
        assert_eq!(
            arch("uformer-tiny")?,
            BackboneConfig::Uformer(UformerConfig::tiny())
        );
        assert_ne!(arch("uformer-tiny")?, arch("uformer-cpu")?);
        Ok(())
    }
}
