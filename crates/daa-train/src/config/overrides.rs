//! Changes to a preset or config file, field by field: what `daa train`'s flags set.

use std::path::PathBuf;

use super::presets::{arch, backbone};
use super::types::{DataSpec, Method, TargetSpec, TrainConfig};
use crate::{Error, Result};

/// Overrides of a [`TrainConfig`]; `None` / `false` leaves the field as it is. Applied in a
/// fixed order by [`Overrides::apply`], which validates the result.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// Optimizer steps.
    pub steps: Option<usize>,
    /// Batch size.
    pub batch_size: Option<usize>,
    /// Training patch side.
    pub patch_size: Option<usize>,
    /// Learning rate.
    pub lr: Option<f64>,
    /// The run's seed.
    pub seed: Option<u64>,
    /// Save a checkpoint every N steps.
    pub checkpoint_every: Option<usize>,
    /// Periodic checkpoints to keep.
    pub keep_last: Option<usize>,
    /// EMA decay of the restorer's weights.
    pub ema_decay: Option<f64>,
    /// Evaluate every N steps.
    pub eval_every: Option<usize>,
    /// The training method.
    pub method: Option<Method>,
    /// The value range the networks train in.
    pub range: Option<daa_diffusion::ValueRange>,
    /// The arithmetic of the convolutions.
    pub precision: Option<super::types::Precision>,
    /// Target-domain inputs: a folder of real degraded images.
    pub real_dir: Option<PathBuf>,
    /// Final weight of the noise loss.
    pub lambda_max: Option<f64>,
    /// Steps over which lambda ramps up (at the run's batch size; stored as samples).
    pub ramp_steps: Option<usize>,
    /// Training samples over which lambda ramps up.
    pub ramp_samples: Option<u64>,
    /// Channel shuffling off (ablation).
    pub no_shuffle: bool,
    /// The contrastive term off (ablation).
    pub no_contrastive: bool,
    /// Smallest diffusion step sampled.
    pub t_min: Option<usize>,
    /// Largest diffusion step sampled.
    pub t_max: Option<usize>,
    /// The oracle: supervised on target-domain pairs (the preset's target degradation on its
    /// clean training photos).
    pub oracle: bool,
    /// For `da-ex`: unpaired clean images.
    pub ex_clean_dir: Option<PathBuf>,
    /// Restoration network: a name at the preset's scale (`nafnet`) or with its scale
    /// (`nafnet-cpu`).
    pub backbone: Option<String>,
    /// Train on clean photos from this folder, degraded by the preset's degradation.
    pub train_clean: Option<PathBuf>,
    /// Train on aligned pairs `(input folder, target folder)`.
    pub train_pairs: Option<(PathBuf, PathBuf)>,
    /// Evaluate on clean photos from this folder, degraded like the training data.
    pub test_clean: Option<PathBuf>,
    /// Evaluate on aligned pairs `(input folder, target folder)`.
    pub test_pairs: Option<(PathBuf, PathBuf)>,
}

fn set<T: Clone>(field: &mut T, value: &Option<T>) {
    if let Some(v) = value {
        *field = v.clone();
    }
}

impl Overrides {
    /// Applies every override to `cfg`, then validates it.
    pub fn apply(&self, cfg: &mut TrainConfig) -> Result<()> {
        self.apply_training(cfg);
        self.apply_adaptation(cfg)?;
        if let Some(name) = &self.backbone {
            cfg.backbone = match cfg.scale() {
                _ if name.contains('-') => arch(name)?,
                Some(scale) => backbone(name, scale)?,
                None => {
                    return Err(Error::Config(format!(
                        "preset {:?} has no known scale: name the backbone with its scale, \
                         e.g. {name}-cpu",
                        cfg.preset
                    )))
                }
            };
        }
        self.apply_data(cfg)?;
        cfg.validate()
    }

    fn apply_training(&self, cfg: &mut TrainConfig) {
        set(&mut cfg.steps, &self.steps);
        set(&mut cfg.batch_size, &self.batch_size);
        set(&mut cfg.patch_size, &self.patch_size);
        set(&mut cfg.optim.lr, &self.lr);
        set(&mut cfg.seed, &self.seed);
        set(&mut cfg.checkpoint_every, &self.checkpoint_every);
        set(&mut cfg.keep_last, &self.keep_last);
        set(&mut cfg.ema_decay, &self.ema_decay);
        set(&mut cfg.eval.every, &self.eval_every);
        set(&mut cfg.method, &self.method);
        set(&mut cfg.range, &self.range);
        set(&mut cfg.precision, &self.precision);
    }

    fn apply_adaptation(&self, cfg: &mut TrainConfig) -> Result<()> {
        let batch = cfg.batch_size as u64;
        let a = &mut cfg.adaptation;
        if let Some(steps) = self.ramp_steps {
            a.ramp_samples = steps as u64 * batch;
            a.ramp_quantum_samples = 0;
            a.ramp_steps = None;
        }
        if let Some(samples) = self.ramp_samples {
            a.ramp_samples = samples;
            a.ramp_quantum_samples = 0;
            a.ramp_steps = None;
        }
        if let Some(dir) = &self.real_dir {
            a.target = TargetSpec::Folder { dir: dir.clone() };
        }
        set(&mut a.lambda_max, &self.lambda_max);
        a.loss.shuffle &= !self.no_shuffle;
        a.loss.contrastive &= !self.no_contrastive;
        set(&mut a.loss.t_min, &self.t_min);
        set(&mut a.loss.t_max, &self.t_max);
        if self.oracle {
            let TargetSpec::Synthetic {
                clean_dir,
                degradation,
                ..
            } = &a.target
            else {
                return Err(Error::Config(
                    "the oracle needs a synthetic target domain (the preset's), not a real-image folder"
                        .into(),
                ));
            };
            cfg.train_data = DataSpec::Synthetic {
                clean_dir: clean_dir.clone(),
                degradation: degradation.clone(),
            };
            cfg.method = Method::Vanilla;
        }
        set(&mut cfg.adaptation.ex_clean_dir, &self.ex_clean_dir);
        Ok(())
    }

    fn apply_data(&self, cfg: &mut TrainConfig) -> Result<()> {
        // The degradation that clean photos given here get: the training data's, else the
        // held-out data's.
        let degradation = match (&cfg.train_data, &cfg.eval.data) {
            (DataSpec::Synthetic { degradation, .. }, _)
            | (_, DataSpec::Synthetic { degradation, .. }) => Some(degradation.clone()),
            _ => None,
        };
        let synthetic = |dir: &PathBuf, flag: &str| -> Result<DataSpec> {
            let degradation = degradation.clone().ok_or_else(|| {
                Error::Config(format!("{flag} needs a degradation from the preset"))
            })?;
            Ok(DataSpec::Synthetic {
                clean_dir: dir.clone(),
                degradation,
            })
        };
        let paired = |(i, t): &(PathBuf, PathBuf)| DataSpec::Paired {
            input_dir: i.clone(),
            target_dir: t.clone(),
        };
        if let Some(dir) = &self.train_clean {
            cfg.train_data = synthetic(dir, "--train-clean")?;
        }
        if let Some(pairs) = &self.train_pairs {
            cfg.train_data = paired(pairs);
        }
        if let Some(dir) = &self.test_clean {
            cfg.eval.data = synthetic(dir, "--test-clean")?;
        }
        if let Some(pairs) = &self.test_pairs {
            cfg.eval.data = paired(pairs);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::presets::Scale;

    #[test]
    fn nothing_given_changes_nothing() -> Result<()> {
        let mut cfg = TrainConfig::denoise();
        Overrides::default().apply(&mut cfg)?;
        assert_eq!(cfg, TrainConfig::denoise());
        Ok(())
    }

    #[test]
    fn flags_set_their_fields_and_the_result_is_validated() -> Result<()> {
        let mut cfg = TrainConfig::smoke();
        let o = Overrides {
            steps: Some(7),
            lr: Some(5e-4),
            method: Some(Method::DaEx),
            no_contrastive: true,
            t_min: Some(900),
            backbone: Some("nafnet".into()),
            test_clean: Some("photos".into()),
            ..Overrides::default()
        };
        o.apply(&mut cfg)?;
        assert_eq!(
            (cfg.steps, cfg.optim.lr, cfg.method),
            (7, 5e-4, Method::DaEx)
        );
        assert!(!cfg.adaptation.loss.contrastive && cfg.adaptation.loss.shuffle);
        assert_eq!(cfg.adaptation.loss.t_min, 900);
        assert_eq!(cfg.backbone, backbone("nafnet", Scale::Tiny)?);
        assert!(
            matches!(&cfg.eval.data, DataSpec::Synthetic { clean_dir, .. } if clean_dir == &PathBuf::from("photos"))
        );
        let bad = Overrides {
            lr: Some(-1.0),
            ..Overrides::default()
        };
        assert!(bad.apply(&mut TrainConfig::smoke()).is_err());
        Ok(())
    }

    #[test]
    fn backbones_keep_the_preset_scale_unless_named_with_one() -> Result<()> {
        let mut cfg = TrainConfig::denoise_paper();
        let o = Overrides {
            backbone: Some("dncnn".into()),
            ..Overrides::default()
        };
        o.apply(&mut cfg)?;
        assert_eq!(cfg.backbone, backbone("dncnn", Scale::Paper)?);
        let mut custom = TrainConfig::smoke();
        custom.preset = "mine".into();
        assert!(o.apply(&mut custom.clone()).is_err(), "no scale to keep");
        let named = Overrides {
            backbone: Some("unet-cpu".into()),
            ..Overrides::default()
        };
        named.apply(&mut custom)?;
        assert_eq!(custom.backbone, backbone("unet", Scale::Cpu)?);
        Ok(())
    }

    /// The paper presets pointed at `daa data prepare`'s folders, as docs/datasets.md runs
    /// them: paired source and test data, a real-image target folder; the preset's range,
    /// metric and ramp stay. `--range` sets the range.
    #[test]
    fn paper_presets_take_prepared_folders_and_keep_their_settings() -> Result<()> {
        for name in ["deblur-paper", "derain-paper"] {
            let preset = TrainConfig::preset(name)?;
            let mut cfg = preset.clone();
            let pair = |d: &str| {
                (
                    PathBuf::from(d).join("input"),
                    PathBuf::from(d).join("target"),
                )
            };
            Overrides {
                train_pairs: Some(pair("train")),
                real_dir: Some("real/input".into()),
                test_pairs: Some(pair("test")),
                ..Overrides::default()
            }
            .apply(&mut cfg)?;
            assert_eq!(
                cfg.train_data,
                DataSpec::Paired {
                    input_dir: "train/input".into(),
                    target_dir: "train/target".into()
                },
                "{name}"
            );
            assert_eq!(
                cfg.eval.data,
                DataSpec::Paired {
                    input_dir: "test/input".into(),
                    target_dir: "test/target".into()
                },
                "{name}"
            );
            assert_eq!(
                cfg.adaptation.target,
                TargetSpec::Folder {
                    dir: "real/input".into()
                },
                "{name}"
            );
            assert_eq!(
                (cfg.range, cfg.eval.metric, cfg.lambda_ramp()),
                (preset.range, preset.eval.metric, preset.lambda_ramp()),
                "{name}"
            );
            Overrides {
                range: Some(daa_diffusion::ValueRange::Unit),
                ..Overrides::default()
            }
            .apply(&mut cfg)?;
            assert_eq!(cfg.range, daa_diffusion::ValueRange::Unit, "{name}");
        }
        Ok(())
    }

    #[test]
    fn the_oracle_trains_supervised_on_the_target_degradation() -> Result<()> {
        let mut cfg = TrainConfig::denoise();
        let o = Overrides {
            oracle: true,
            ..Overrides::default()
        };
        o.apply(&mut cfg)?;
        assert_eq!(cfg.method, Method::Vanilla);
        let TargetSpec::Synthetic { degradation, .. } = &cfg.adaptation.target else {
            return Err(Error::Config("the preset's target is synthetic".into()));
        };
        assert!(
            matches!(&cfg.train_data, DataSpec::Synthetic { degradation: d, .. } if d == degradation)
        );
        let mut real = TrainConfig::denoise();
        let with_real = Overrides {
            oracle: true,
            real_dir: Some("real".into()),
            ..Overrides::default()
        };
        assert!(with_real.apply(&mut real).is_err());
        Ok(())
    }
}
