//! The training loop. It reads like the method: for each step, a batch, a step of both
//! networks, the log, an evaluation now and then, a checkpoint now and then.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::Device;
use daa_backbones::parameter_count;
use daa_degrade::PairSource;

use crate::data::{open_eval, spawn_producer, Batches, TrainData};
use crate::log::RunLog;
use crate::model::{Models, StepOutcome};
use crate::run_dir::{RunDir, TrainState};
use crate::tensorboard::EventWriter;
use crate::{evaluate, Error, EvalReport, Event, Result, TileConfig, TrainConfig};

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// The run folder.
    pub run_dir: PathBuf,
    /// Steps done.
    pub steps: usize,
    /// The final evaluation on the held-out set.
    pub final_eval: EvalReport,
    /// The final restorer checkpoint.
    pub checkpoint: PathBuf,
}

/// Trains a restorer as `cfg` says, in `run_dir` (created; an existing run there is resumed
/// when `resume` is set, and refused otherwise). `on_event` receives progress.
pub fn train(
    cfg: &TrainConfig,
    run_dir: &Path,
    device: &Device,
    resume: bool,
    on_event: &mut dyn FnMut(&Event),
) -> Result<TrainSummary> {
    train_until(
        cfg,
        run_dir,
        device,
        resume,
        &AtomicBool::new(false),
        on_event,
    )
}

/// [`train`], stopping cleanly when `stop` becomes true (e.g. on Ctrl-C): the current step is
/// checkpointed and [`Error::Interrupted`] returned; `--resume` continues from there.
pub fn train_until(
    cfg: &TrainConfig,
    run_dir: &Path,
    device: &Device,
    resume: bool,
    stop: &AtomicBool,
    on_event: &mut dyn FnMut(&Event),
) -> Result<TrainSummary> {
    cfg.validate()?;
    if device.is_cpu() {
        crate::checkpoint_check::check_training_memory(cfg)?;
    }
    // Open (and so check) every dataset before anything is written or trained.
    let mut data = TrainData::open(cfg)?;
    let eval_data = open_eval(cfg)?;
    let run = RunDir::new(run_dir);
    let (saved, _lock) = prepare_run_dir(&run, cfg, resume)?;
    data.materialize_target(cfg, &run.target_train_dir())?;
    let mut models = Models::new(cfg, device)?;
    let state = match saved {
        Some(state) => {
            run.load_checkpoint(&mut models, state.step, device)?;
            state
        }
        None => TrainState {
            step: 0,
            best_psnr: None,
        },
    };
    // A fresh run drops the lines of an earlier run here that stopped before its first
    // checkpoint (it diverged, or the data failed), so the log holds this run only.
    let metrics = run.open_metrics(Some(saved.map_or(0, |s| s.step)))?;
    // On resume, the checkpoint loaded is the last one kept.
    let last_checkpoint =
        saved.map(|s| run.checkpoint_path(crate::CheckpointKind::Restorer, s.step));
    let mut trainer = Trainer {
        cfg,
        run,
        device,
        models,
        eval_data,
        state,
        last_checkpoint,
        log: RunLog::new(metrics, run_dir.join("metrics.jsonl"), on_event)
            .with_tensorboard(EventWriter::create(run_dir, state.step)?),
    };
    trainer.log.started(
        state.step,
        cfg.steps,
        parameter_count(&trainer.models.restorer_vars),
    );
    std::thread::scope(|scope| {
        let batches = spawn_producer(scope, &data, state.step..cfg.steps);
        trainer.run(&batches, stop)
    })?;
    trainer.finish()
}

/// Creates the run folder and writes `config.json`. Refuses, with what is there: a new run
/// over a folder that holds a run or checkpoints; `resume` of a folder without a run, or with
/// checkpoints but no `train_state.json` (the step to continue from is unknown), or of a run
/// already at `cfg.steps` or beyond; `resume` with a config that differs (other than `steps`).
/// Returns the saved state when resuming.
fn prepare_run_dir(
    run: &RunDir,
    cfg: &TrainConfig,
    resume: bool,
) -> Result<(Option<TrainState>, Option<std::fs::File>)> {
    // One process per run folder: two runs started at once would pass the checks below
    // together and then mix their files. The lock goes with the process, even a killed one.
    let lock = match resume && !run.root().is_dir() {
        true => None,
        false => {
            run.create()?;
            Some(run.lock()?)
        }
    };
    let saved = run.read_state()?;
    let steps = run.checkpoint_steps()?;
    let refuse = |reason: String| Error::RunDir {
        path: run.root().to_path_buf(),
        reason,
    };
    let listed = || {
        let names: Vec<String> = steps.iter().map(|s| format!("restorer-{s}")).collect();
        names.join(", ")
    };
    match (&saved, resume) {
        (Some(s), false) => return Err(refuse(format!("already holds a run (at step {}); pass --resume to continue it or choose another folder", s.step))),
        (None, false) if !steps.is_empty() => return Err(refuse(format!("holds checkpoints ({}) of an earlier run without its train_state.json (a run stopped while writing its first checkpoint leaves this; only its first steps are lost); choose another folder, or delete this one to start again", listed()))),
        (None, true) if !steps.is_empty() => return Err(refuse(format!("holds checkpoints ({}) but no train_state.json, so the step to continue from is unknown (a run stopped while writing its first checkpoint leaves this; only its first steps are lost); nothing was changed: delete the folder, or start a new run in another one", listed()))),
        (None, true) => return Err(refuse("holds no run to resume (no train_state.json); start a new run without --resume".into())),
        (Some(s), true) if s.step >= cfg.steps => return Err(refuse(format!("the run is already at step {}; nothing to do for --steps {} (give more steps to continue it)", s.step, cfg.steps))),
        _ => {}
    }
    run.create()?;
    if saved.is_some() {
        let old = run.read_config()?;
        let old = TrainConfig {
            steps: cfg.steps,
            ..old
        };
        if old != *cfg {
            let fields = config_differences(&old, cfg).join(", ");
            return Err(Error::Config(format!("the run's saved config.json differs from this config in {fields}; resume with the same settings (only --steps may change)")));
        }
    }
    run.write_config(cfg)?;
    Ok((saved, lock))
}

/// The loop's state: what the steps, evaluations and checkpoints of a run share.
struct Trainer<'a> {
    cfg: &'a TrainConfig,
    run: RunDir,
    device: &'a Device,
    models: Models,
    eval_data: Box<dyn PairSource>,
    state: TrainState,
    last_checkpoint: Option<PathBuf>,
    log: RunLog<'a>,
}

impl Trainer<'_> {
    /// Steps from the saved state to `cfg.steps`: batch, step, log, evaluate, checkpoint.
    fn run(&mut self, batches: &Batches, stop: &AtomicBool) -> Result<()> {
        let cfg = self.cfg;
        let mut nonfinite = 0usize;
        for step in self.state.step..cfg.steps {
            if stop.load(Ordering::SeqCst) {
                return self.interrupt(step);
            }
            let batch = batches.next(self.device)?;
            let outcome = self.models.train_step(&batch, step, cfg.seed)?;
            let done = step + 1;
            if outcome.applied {
                nonfinite = 0;
                // The step's losses (of the weights before it) are logged either way.
                let log_now = done % cfg.log_every == 0 || done == cfg.steps;
                self.log
                    .step(done, cfg.steps, &outcome, cfg.optim.lr, log_now)?;
                // A step can leave finite losses and gradients yet send the weights to 1e30
                // (a huge learning rate): stop before anything is evaluated or saved.
                if let Some(bad) = weight_problem(&self.models)? {
                    return Err(self.diverged(format!("step {done} {bad}")));
                }
                // Outputs can explode while every weight stays under the limit (the first
                // DANN runs reached a restoration loss of 1e12 that way).
                if let Some(bad) = loss_problem(&outcome) {
                    return Err(self.diverged_loss(done, bad));
                }
            } else {
                // An infinite (or huge) restoration loss is not a bad batch: the restorer's
                // outputs overflow, so the last applied step already ruined the weights, and
                // skipping would only save them later.
                if let Some(bad) = loss_problem(&outcome) {
                    return Err(self.diverged_loss(done, bad));
                }
                // The weights are those of the last applied step, which passed the check
                // above: evaluating and saving them below is safe.
                nonfinite += 1;
                self.log.skipped(done, outcome.total(), nonfinite);
                if nonfinite >= cfg.max_nonfinite_steps {
                    return Err(self.diverged(format!(
                        "{nonfinite} non-finite losses in a row at step {done}"
                    )));
                }
            }
            self.log.progress(done, cfg.steps);
            if cfg.eval.every > 0 && done % cfg.eval.every == 0 && done != cfg.steps {
                self.evaluate(done, None)?;
            }
            if (cfg.checkpoint_every > 0 && done % cfg.checkpoint_every == 0) || done == cfg.steps {
                self.checkpoint(done)?;
            }
        }
        Ok(())
    }

    /// The error of a run that diverged for `why`, naming the last checkpoint kept (written
    /// before the weights went bad) so that the last line names a file that exists.
    fn diverged(&self, why: String) -> Error {
        let kept = match &self.last_checkpoint {
            Some(p) => format!("the last checkpoint kept is {}", p.display()),
            None => "no checkpoint was written".to_string(),
        };
        Error::Diverged(format!("{why}; {kept}; lower the learning rate"))
    }

    /// The error of a run whose step `done` had an exploded loss. That loss measures the
    /// weights of step `done - 1`: a checkpoint written at that step holds them, so it is named
    /// as such rather than as a safe place to resume from.
    fn diverged_loss(&self, done: usize, bad: String) -> Error {
        match &self.last_checkpoint {
            Some(p) if self.state.step + 1 == done => Error::Diverged(format!(
                "at step {done} {bad}; the last checkpoint, {}, holds the weights that produced \
                 it (step {}): do not resume from it; lower the learning rate",
                p.display(),
                done - 1
            )),
            _ => self.diverged(format!("at step {done} {bad}")),
        }
    }

    /// Stop requested before `step`: save where we are (unless that step is already saved).
    fn interrupt(&mut self, step: usize) -> Result<()> {
        if self.state.step != step || self.last_checkpoint.is_none() {
            self.checkpoint(step)?;
        }
        Err(Error::Interrupted { step })
    }

    /// Evaluates the restorer (the EMA when on) on the held-out set, logs the scores and
    /// keeps `restorer-best` up to date. With `save_dir`, the images are written there.
    fn evaluate(&mut self, step: usize, save_dir: Option<&Path>) -> Result<EvalReport> {
        let cfg = self.cfg;
        let report = evaluate(
            self.models.eval_net(),
            cfg.range,
            self.eval_data.as_ref(),
            &cfg.eval.metric,
            cfg.eval.seed,
            self.device,
            TileConfig::default(),
            save_dir,
        )?;
        self.log.evaluated(step, &report)?;
        let psnr = report.mean_restored.psnr;
        // Weights within the bound can still restore to NaN; such a run has failed, and a NaN
        // score must never become the best.
        if !psnr.is_finite() {
            return Err(self.diverged(format!(
                "at step {step} the held-out PSNR is {psnr}: the restorer's output is not finite"
            )));
        }
        if self.state.best_psnr.is_none_or(|b| psnr > b) {
            self.state.best_psnr = Some(psnr);
            self.run.save_best(&self.models, cfg)?;
            // The final evaluation comes after the final checkpoint: without this a resumed
            // run would not know the best score and replace `restorer-best` with anything.
            self.run.update_state(&self.state)?;
        }
        Ok(report)
    }

    /// Writes the checkpoint of `step` and prunes old ones (a failed prune is a warning).
    fn checkpoint(&mut self, step: usize) -> Result<()> {
        self.state.step = step;
        let path = self
            .run
            .save_checkpoint(&self.models, self.cfg, &self.state)?;
        self.log.checkpoint(path.clone());
        self.last_checkpoint = Some(path);
        if let Err(e) = self.run.prune(self.cfg.keep_last) {
            self.log
                .warn(format!("could not delete an old checkpoint: {e}"));
        }
        Ok(())
    }

    /// The final evaluation (images saved in `eval/`), `eval.json`, `eval.md`, the summary.
    fn finish(mut self) -> Result<TrainSummary> {
        let steps = self.cfg.steps;
        let report = self.evaluate(steps, Some(&self.run.eval_dir()))?;
        self.run.write_eval(&report)?;
        let checkpoint = match self.last_checkpoint {
            Some(p) => p,
            None => self
                .run
                .checkpoint_path(crate::CheckpointKind::Restorer, self.state.step),
        };
        Ok(TrainSummary {
            run_dir: self.run.root().to_path_buf(),
            steps,
            final_eval: report,
            checkpoint,
        })
    }
}

/// The largest magnitude a weight of a healthy run reaches. Trained image-restoration and
/// diffusion weights stay within about 10 (BatchNorm's running variances of [0, 1] images
/// within about 100); 1e4 leaves a wide margin, and divergence goes far past it (1e30 after one
/// step at `--lr 1e30`).
pub const WEIGHT_LIMIT: f32 = 1e4;

/// The settings in which `saved` and `now` differ, as `path: saved value (saved) vs new value`,
/// e.g. `optim.lr: 0.0002 (saved) vs 0.001`.
fn config_differences(saved: &TrainConfig, now: &TrainConfig) -> Vec<String> {
    fn walk(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        match (a, b) {
            (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
                let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    let null = serde_json::Value::Null;
                    let sub = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(
                        &sub,
                        x.get(k).unwrap_or(&null),
                        y.get(k).unwrap_or(&null),
                        out,
                    );
                }
            }
            _ if a != b => out.push(format!("{path}: {a} (saved) vs {b}")),
            _ => {}
        }
    }
    let mut out = Vec::new();
    match (serde_json::to_value(saved), serde_json::to_value(now)) {
        (Ok(a), Ok(b)) => walk("", &a, &b, &mut out),
        _ => out.push("settings that cannot be listed".into()),
    }
    if out.is_empty() {
        out.push("settings that serialise alike".into());
    }
    out
}

/// The largest restoration loss of a healthy run. The Charbonnier loss compares images in
/// `[0, 1]` or `[-1, 1]`, so it stays below 2 unless the restorer's outputs leave the range by
/// orders of magnitude; 1e3 means outputs about a thousand times too large.
pub const REC_LOSS_LIMIT: f64 = 1e3;

/// What is wrong with a step's losses, if anything: a restoration loss past
/// [`REC_LOSS_LIMIT`], infinity included (a NaN is left to the non-finite-step count).
pub(crate) fn loss_problem(outcome: &StepOutcome) -> Option<String> {
    let rec = outcome.losses.iter().find(|(name, _)| *name == "rec")?.1;
    (rec > REC_LOSS_LIMIT).then(|| {
        format!(
            "the restoration loss reached {rec:.3e} (a healthy run stays below 2: the \
             restorer's outputs exploded)"
        )
    })
}

/// What is wrong with the weights of `models`, if anything: a non-finite value, or a magnitude
/// past [`WEIGHT_LIMIT`], with the tensor it is in. Every variable of the restorer, the
/// diffusion network and DANN's classifier is checked (the EMA is an average of the
/// restorer's), in one device sync.
pub(crate) fn weight_problem(models: &Models) -> Result<Option<String>> {
    let mut names = Vec::new();
    let mut values = Vec::new();
    let maps = std::iter::once(("restorer.", &models.restorer_vars))
        .chain(models.diffusion.as_ref().map(|d| ("diffusion.", &d.varmap)))
        .chain(models.dann.as_ref().map(|d| ("dann.", &d.varmap)));
    for (prefix, varmap) in maps {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| Error::Poisoned("variable map"))?;
        for (name, var) in data.iter() {
            let abs = var.as_tensor().abs()?.flatten_all()?;
            // max ignores NaN on some devices; 0 * sum(|w|) is NaN when any value is NaN or
            // infinite (or the sum overflows, which only exploded weights do).
            let max = abs.max(0)?;
            let probe = (abs.sum(0)? * 0.0)?;
            values.push((max + probe)?.to_dtype(candle_core::DType::F32)?);
            names.push(format!("{prefix}{name}"));
        }
    }
    if values.is_empty() {
        return Ok(None);
    }
    let values = candle_core::Tensor::stack(&values, 0)?.to_vec1::<f32>()?;
    let worst = values
        .iter()
        .enumerate()
        .find(|(_, v)| !v.is_finite())
        .or_else(|| {
            values
                .iter()
                .enumerate()
                .filter(|(_, v)| **v > WEIGHT_LIMIT)
                .max_by(|a, b| a.1.total_cmp(b.1))
        });
    Ok(worst.map(|(i, v)| match v.is_finite() {
        true => format!(
            "sent the weights to {v:.3e} in {} (a healthy run stays below {WEIGHT_LIMIT:e})",
            names[i]
        ),
        false => format!("left non-finite weights in {}", names[i]),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sets the first value of the variable `name` of the restorer to `v`.
    fn poke(models: &Models, name: &str, v: f32) -> Result<()> {
        let data = models
            .restorer_vars
            .data()
            .lock()
            .map_err(|_| Error::Poisoned("variable map"))?;
        let var = &data[name];
        let mut values = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        values[0] = v;
        let t = candle_core::Tensor::from_vec(values, var.shape(), var.device())?;
        var.set(&t)?;
        Ok(())
    }

    #[test]
    fn the_weight_check_names_nan_infinity_and_exploded_tensors() -> Result<()> {
        let cfg = TrainConfig::smoke();
        let models = Models::new(&cfg, &Device::Cpu)?;
        assert_eq!(weight_problem(&models)?, None, "fresh weights are healthy");
        let name = {
            let data = models
                .restorer_vars
                .data()
                .lock()
                .map_err(|_| Error::Poisoned("variable map"))?;
            let mut names: Vec<String> = data.keys().cloned().collect();
            names.sort();
            names[0].clone()
        };
        for (v, says) in [
            (2.0 * WEIGHT_LIMIT, "sent the weights to 2.000e4"),
            (f32::NAN, "non-finite"),
            (f32::INFINITY, "non-finite"),
            (-f32::INFINITY, "non-finite"),
        ] {
            poke(&models, &name, v)?;
            let problem = weight_problem(&models)?.unwrap_or_default();
            assert!(
                problem.contains(says) && problem.contains(&format!("restorer.{name}")),
                "{v}: {problem}"
            );
        }
        poke(&models, &name, 0.5 * WEIGHT_LIMIT)?;
        assert_eq!(weight_problem(&models)?, None, "within the limit");
        Ok(())
    }

    #[test]
    fn config_differences_name_each_changed_setting() {
        let a = TrainConfig::smoke();
        let mut b = a.clone();
        b.optim.lr = 0.5;
        b.batch_size += 1;
        let d = config_differences(&a, &b);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(
            d.iter()
                .any(|s| s.starts_with("optim.lr:") && s.ends_with("vs 0.5")),
            "{d:?}"
        );
        assert!(d.iter().any(|s| s.starts_with("batch_size:")), "{d:?}");
    }

    #[test]
    fn the_loss_check_stops_exploded_outputs_only() {
        let outcome = |rec: f64| StepOutcome {
            losses: vec![("total", rec + 0.5), ("rec", rec), ("domain", 0.5)],
            lambda: 1.0,
            applied: true,
        };
        assert_eq!(loss_problem(&outcome(0.08)), None);
        assert_eq!(
            loss_problem(&outcome(1.9)),
            None,
            "outputs off by the full range"
        );
        let problem = loss_problem(&outcome(1.2e12)).unwrap_or_default();
        assert!(problem.contains("1.200e12"), "{problem}");
        let problem = loss_problem(&outcome(f64::INFINITY)).unwrap_or_default();
        assert!(problem.contains("inf"), "overflowed outputs: {problem}");
        assert_eq!(
            loss_problem(&outcome(f64::NAN)),
            None,
            "NaN: counted as a skipped step"
        );
    }
}
