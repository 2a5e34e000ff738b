//! The run folder: the one type that names, writes, lists, prunes and loads every file of a
//! training run.
//!
//! ```text
//! <run>/config.json                      the resolved TrainConfig
//! <run>/.daa.lock                        held (advisory lock) by the process training here
//! <run>/train_state.json                 step of the last checkpoint (written last) and best PSNR
//! <run>/metrics.jsonl                    one JSON object per logged step and evaluation
//! <run>/events.out.tfevents.*            the same scalars for TensorBoard (one file per session)
//! <run>/restorer-{step}.safetensors      periodic checkpoints (the last `keep_last` are kept)
//! <run>/restorer-ema-{step}.safetensors  ... the EMA copy of the restorer (when on)
//! <run>/diffusion-{step}.safetensors     ... the diffusion network (adaptation)
//! <run>/dann-{step}.safetensors          ... DANN's domain classifier (`dann`)
//! <run>/optimizer-{step}.safetensors     ... Adam's moments
//! <run>/restorer-best.safetensors        the restorer of the best held-out PSNR
//! <run>/eval.json, eval.md, eval/        the final evaluation and its restored images
//! <run>/target_train/{input,gt}/         the synthetic target domain (gt is never read)
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Device;

use crate::checkpoint::{load_into, save_tensors, varmap_tensors};
use crate::model::Models;
use crate::{save_restorer, write_atomic, Error, Result, TrainConfig};

/// The state needed to continue a run, written after each checkpoint's files.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainState {
    /// Steps done when the checkpoint was written.
    pub step: usize,
    /// The best held-out PSNR so far (the one `restorer-best` holds).
    pub best_psnr: Option<f64>,
}

/// The files written at every checkpoint, one per step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointKind {
    /// `restorer-{step}`: the restorer's weights (with its config as metadata).
    Restorer,
    /// `restorer-ema-{step}`: the EMA copy of the restorer.
    RestorerEma,
    /// `diffusion-{step}`: the diffusion network.
    Diffusion,
    /// `dann-{step}`: DANN's domain classifier.
    Dann,
    /// `optimizer-{step}`: Adam's moments.
    Optimizer,
}

impl CheckpointKind {
    /// Every kind, the longest prefix first (so that parsing `restorer-ema-` wins).
    pub const ALL: [Self; 5] = [
        Self::RestorerEma,
        Self::Restorer,
        Self::Diffusion,
        Self::Dann,
        Self::Optimizer,
    ];

    /// The file name's prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Restorer => "restorer",
            Self::RestorerEma => "restorer-ema",
            Self::Diffusion => "diffusion",
            Self::Dann => "dann",
            Self::Optimizer => "optimizer",
        }
    }

    /// `{prefix}-{step}.safetensors`.
    pub fn file_name(self, step: usize) -> String {
        format!("{}-{step}.safetensors", self.prefix())
    }

    /// The kind and step of a periodic checkpoint's file name, `None` for any other name
    /// (`restorer-best.safetensors` included).
    pub fn parse(name: &str) -> Option<(Self, usize)> {
        let stem = name.strip_suffix(".safetensors")?;
        Self::ALL.into_iter().find_map(|kind| {
            let step = stem.strip_prefix(kind.prefix())?.strip_prefix('-')?;
            if step.is_empty() || !step.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some((kind, step.parse().ok()?))
        })
    }
}

/// The keep-last-N policy: which of the checkpointed `steps` to delete so that the last
/// `keep_last` (at least one) remain. Pure; `steps` in any order, the result ascending.
pub fn steps_to_prune(steps: &[usize], keep_last: usize) -> Vec<usize> {
    let mut sorted = steps.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let n = sorted.len().saturating_sub(keep_last.max(1));
    sorted.truncate(n);
    sorted
}

/// A run folder (see the module docs for its files).
#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// The run folder at `root` (nothing is created or read).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `config.json`.
    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.json")
    }

    /// `train_state.json`.
    pub fn state_path(&self) -> PathBuf {
        self.root.join("train_state.json")
    }

    /// `metrics.jsonl`.
    pub fn metrics_path(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }

    /// A periodic checkpoint file.
    pub fn checkpoint_path(&self, kind: CheckpointKind, step: usize) -> PathBuf {
        self.root.join(kind.file_name(step))
    }

    /// `restorer-best.safetensors`.
    pub fn best_path(&self) -> PathBuf {
        self.root.join("restorer-best.safetensors")
    }

    /// `eval.json`.
    pub fn eval_json_path(&self) -> PathBuf {
        self.root.join("eval.json")
    }

    /// `eval.md`.
    pub fn eval_md_path(&self) -> PathBuf {
        self.root.join("eval.md")
    }

    /// `eval/`: the final evaluation's images.
    pub fn eval_dir(&self) -> PathBuf {
        self.root.join("eval")
    }

    /// `target_train/`: the synthetic target domain.
    pub fn target_train_dir(&self) -> PathBuf {
        self.root.join("target_train")
    }

    /// Creates the folder (and its parents).
    pub fn create(&self) -> Result<()> {
        std::fs::create_dir_all(&self.root).map_err(|e| Error::io(&self.root, e))
    }

    /// Takes the run folder's lock (`.daa.lock`, an advisory file lock that the OS drops when
    /// the process ends, however it ends): refused while another process trains here.
    pub fn lock(&self) -> Result<std::fs::File> {
        let path = self.root.join(".daa.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::RunDir {
                path: self.root.clone(),
                reason: "is in use by another daa process training there (it holds .daa.lock); \
                         wait for it to finish or choose another folder"
                    .into(),
            }),
            // A filesystem without file locks (some network mounts): train unguarded rather
            // than not at all.
            Err(std::fs::TryLockError::Error(e)) => {
                tracing::warn!(
                    "cannot lock {}: {e}; two runs here would not be caught",
                    path.display()
                );
                Ok(file)
            }
        }
    }

    /// The steps of the periodic checkpoints present (`restorer-{step}` files; a folder of
    /// that name is not one), ascending.
    pub fn checkpoint_steps(&self) -> Result<Vec<usize>> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Ok(Vec::new());
        };
        let mut steps = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&self.root, e))?;
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let name = entry.file_name();
            if let Some((CheckpointKind::Restorer, step)) =
                CheckpointKind::parse(&name.to_string_lossy())
            {
                steps.push(step);
            }
        }
        steps.sort_unstable();
        Ok(steps)
    }

    /// Deletes every file of the checkpoints that the keep-last-`keep_last` policy drops.
    /// Files already gone are fine; any other failure is returned (all files are tried).
    pub fn prune(&self, keep_last: usize) -> Result<()> {
        let mut first_error = None;
        for step in steps_to_prune(&self.checkpoint_steps()?, keep_last) {
            for kind in CheckpointKind::ALL {
                let path = self.checkpoint_path(kind, step);
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        first_error.get_or_insert(Error::io(&path, e));
                    }
                    _ => {}
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Writes `value` as pretty JSON to `path`, atomically.
    fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
        let text = serde_json::to_string_pretty(value).map_err(|e| Error::Json {
            path: path.to_path_buf(),
            source: e,
        })?;
        write_atomic(path, |tmp| {
            std::fs::write(tmp, text + "\n").map_err(|e| Error::io(tmp, e))
        })
    }

    /// Writes `config.json`.
    pub fn write_config(&self, cfg: &TrainConfig) -> Result<()> {
        Self::write_json(&self.config_path(), cfg)
    }

    /// Reads `config.json`.
    pub fn read_config(&self) -> Result<TrainConfig> {
        let path = self.config_path();
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        TrainConfig::from_json(&text)
    }

    /// Reads `train_state.json`, `None` when there is none.
    pub fn read_state(&self) -> Result<Option<TrainState>> {
        let path = self.state_path();
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::Checkpoint {
                path,
                reason: e.to_string(),
            })
    }

    /// Writes the evaluation report as `eval.json` and `eval.md`.
    pub fn write_eval(&self, report: &crate::EvalReport) -> Result<()> {
        Self::write_json(&self.eval_json_path(), report)?;
        write_atomic(&self.eval_md_path(), |tmp| {
            std::fs::write(tmp, report.to_markdown()).map_err(|e| Error::io(tmp, e))
        })
    }

    /// Saves `restorer-best` from `models`' evaluated restorer (the EMA when on).
    pub fn save_best(&self, models: &Models, cfg: &TrainConfig) -> Result<()> {
        save_restorer(
            &self.best_path(),
            models.eval_vars(),
            &cfg.backbone,
            cfg.range,
        )
    }

    /// Writes the checkpoint of `state.step`: restorer, diffusion (adaptation), EMA, optimizer,
    /// then `train_state.json` (last, so that a crash mid-way leaves the previous state
    /// pointing at complete files). Returns the restorer's path. Old checkpoints are left to
    /// [`Self::prune`].
    pub fn save_checkpoint(
        &self,
        models: &Models,
        cfg: &TrainConfig,
        state: &TrainState,
    ) -> Result<PathBuf> {
        let step = state.step;
        let path = self.checkpoint_path(CheckpointKind::Restorer, step);
        save_restorer(&path, &models.restorer_vars, &cfg.backbone, cfg.range)?;
        if let Some(d) = &models.diffusion {
            let diffusion_path = self.checkpoint_path(CheckpointKind::Diffusion, step);
            let json =
                serde_json::to_string(&cfg.adaptation.diffusion).map_err(|e| Error::Json {
                    path: diffusion_path.clone(),
                    source: e,
                })?;
            let meta = HashMap::from([
                ("daa.format".to_string(), "daa-diffusion-v1".to_string()),
                ("daa.diffusion".to_string(), json),
            ]);
            save_tensors(&diffusion_path, &varmap_tensors(&d.varmap)?, meta)?;
        }
        if let Some(d) = &models.dann {
            let dann_path = self.checkpoint_path(CheckpointKind::Dann, step);
            let json = serde_json::to_string(&d.settings).map_err(|e| Error::Json {
                path: dann_path.clone(),
                source: e,
            })?;
            let meta = HashMap::from([
                ("daa.format".to_string(), "daa-dann-v1".to_string()),
                ("daa.dann".to_string(), json),
            ]);
            save_tensors(&dann_path, &varmap_tensors(&d.varmap)?, meta)?;
        }
        if let Some(ema) = &models.ema {
            let ema_path = self.checkpoint_path(CheckpointKind::RestorerEma, step);
            save_restorer(&ema_path, &ema.varmap, &cfg.backbone, cfg.range)?;
        }
        let meta = HashMap::from([("daa.format".to_string(), "daa-optimizer-v1".to_string())]);
        save_tensors(
            &self.checkpoint_path(CheckpointKind::Optimizer, step),
            &models.opt.state_tensors()?,
            meta,
        )?;
        Self::write_json(&self.state_path(), state)?;
        Ok(path)
    }

    /// Rewrites `train_state.json` alone (after a new best score, so that a resumed run knows
    /// what `restorer-best` holds). Only where a checkpoint's state exists: before the first
    /// checkpoint there is nothing to resume.
    pub fn update_state(&self, state: &TrainState) -> Result<()> {
        match self.state_path().exists() {
            true => Self::write_json(&self.state_path(), state),
            false => Ok(()),
        }
    }

    /// Loads the checkpoint of `step` into `models`: the weights of every network, the EMA
    /// from its own file, and Adam's moments (so that resuming is exact).
    pub fn load_checkpoint(&self, models: &mut Models, step: usize, device: &Device) -> Result<()> {
        let path = |kind| self.checkpoint_path(kind, step);
        load_into(
            &models.restorer_vars,
            &path(CheckpointKind::Restorer),
            device,
        )?;
        if let Some(d) = &models.diffusion {
            load_into(&d.varmap, &path(CheckpointKind::Diffusion), device)?;
        }
        if let Some(d) = &models.dann {
            load_into(&d.varmap, &path(CheckpointKind::Dann), device)?;
        }
        if let Some(ema) = &models.ema {
            load_into(&ema.varmap, &path(CheckpointKind::RestorerEma), device)?;
        }
        let opt_path = path(CheckpointKind::Optimizer);
        let tensors =
            candle_core::safetensors::load(&opt_path, device).map_err(|e| Error::Checkpoint {
                path: opt_path.clone(),
                reason: e.to_string(),
            })?;
        models
            .opt
            .load_state(&tensors, step as u64)
            .map_err(|e| Error::Checkpoint {
                path: opt_path,
                reason: e.to_string(),
            })
    }

    /// Opens `metrics.jsonl` for appending. With `after`, the lines logged after that step (by
    /// a run killed after its last checkpoint) are dropped first, so that a resumed run's log
    /// reads as one uninterrupted run.
    pub fn open_metrics(&self, after: Option<usize>) -> Result<std::fs::File> {
        let path = self.metrics_path();
        if let (Some(step), Ok(text)) = (after, std::fs::read_to_string(&path)) {
            let kept: String = text
                .lines()
                .filter(|l| {
                    serde_json::from_str::<serde_json::Value>(l)
                        .ok()
                        .and_then(|v| v["step"].as_u64())
                        .is_some_and(|s| s as usize <= step)
                })
                .map(|l| format!("{l}\n"))
                .collect();
            write_atomic(&path, |tmp| {
                std::fs::write(tmp, kept).map_err(|e| Error::io(tmp, e))
            })?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_last_n_drops_the_oldest_and_keeps_at_least_one() {
        assert_eq!(steps_to_prune(&[2, 4, 6, 8], 2), vec![2, 4]);
        assert_eq!(steps_to_prune(&[8, 2, 6, 4], 3), vec![2]);
        assert_eq!(steps_to_prune(&[2, 4], 5), Vec::<usize>::new());
        assert_eq!(steps_to_prune(&[2, 4, 6], 0), vec![2, 4], "0 keeps one");
        assert_eq!(steps_to_prune(&[], 1), Vec::<usize>::new());
        assert_eq!(steps_to_prune(&[4, 4, 2], 1), vec![2]);
    }

    #[test]
    fn checkpoint_names_round_trip_and_others_are_not_checkpoints() {
        for kind in CheckpointKind::ALL {
            for step in [0, 7, 120_000] {
                assert_eq!(
                    CheckpointKind::parse(&kind.file_name(step)),
                    Some((kind, step))
                );
            }
        }
        for name in [
            "restorer-best.safetensors",
            "restorer-.safetensors",
            "restorer-+4.safetensors",
            "restorer-4.safetensors.tmp",
            ".restorer-4.safetensors.123.tmp",
            "config.json",
            "restorer-ema-best.safetensors",
        ] {
            assert_eq!(CheckpointKind::parse(name), None, "{name}");
        }
    }

    #[test]
    fn prune_deletes_every_file_of_old_steps_and_reports_failures() -> Result<()> {
        let tmp = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let run = RunDir::new(tmp.path());
        for step in [2, 4, 6] {
            for kind in [CheckpointKind::Restorer, CheckpointKind::Optimizer] {
                std::fs::write(run.checkpoint_path(kind, step), b"x")
                    .map_err(|e| Error::io("write", e))?;
            }
        }
        std::fs::write(run.best_path(), b"x").map_err(|e| Error::io("write", e))?;
        run.prune(2)?;
        assert_eq!(run.checkpoint_steps()?, vec![4, 6]);
        assert!(!run.checkpoint_path(CheckpointKind::Optimizer, 2).exists());
        assert!(run.checkpoint_path(CheckpointKind::Optimizer, 4).exists());
        assert!(run.best_path().exists());
        // A file that cannot be removed (here: a non-empty folder of that name) is reported.
        let blocker = run.checkpoint_path(CheckpointKind::Diffusion, 4);
        std::fs::create_dir_all(blocker.join("x")).map_err(|e| Error::io("mkdir", e))?;
        let err = run
            .prune(1)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("diffusion-4.safetensors"), "{err}");
        assert!(!run.checkpoint_path(CheckpointKind::Restorer, 4).exists());
        Ok(())
    }
}
