//! The training loop. It reads like the method: for each step, a batch, a step of both
//! networks, the log, an evaluation now and then, a checkpoint now and then.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::Device;
use daa_backbones::parameter_count;
use daa_degrade::PairSource;

use crate::data::{open_eval, spawn_producer, Batches, TrainData};
use crate::log::RunLog;
use crate::model::Models;
use crate::run_dir::{RunDir, TrainState};
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
    // Open (and so check) every dataset before anything is written or trained.
    let mut data = TrainData::open(cfg)?;
    let eval_data = open_eval(cfg)?;
    let run = RunDir::new(run_dir);
    let saved = prepare_run_dir(&run, cfg, resume)?;
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
    let metrics = run.open_metrics(saved.map(|s| s.step))?;
    let mut trainer = Trainer {
        cfg,
        run,
        device,
        models,
        eval_data,
        state,
        last_checkpoint: None,
        log: RunLog::new(metrics, run_dir.join("metrics.jsonl"), on_event),
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
fn prepare_run_dir(run: &RunDir, cfg: &TrainConfig, resume: bool) -> Result<Option<TrainState>> {
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
        (None, false) if !steps.is_empty() => return Err(refuse(format!("holds checkpoints ({}) of an earlier run; choose another folder", listed()))),
        (None, true) if !steps.is_empty() => return Err(refuse(format!("holds checkpoints ({}) but no train_state.json, so the step to continue from is unknown; nothing was changed", listed()))),
        (None, true) => return Err(refuse("holds no run to resume (no train_state.json); start a new run without --resume".into())),
        (Some(s), true) if s.step >= cfg.steps => return Err(refuse(format!("the run is already at step {}; nothing to do for --steps {} (give more steps to continue it)", s.step, cfg.steps))),
        _ => {}
    }
    run.create()?;
    if saved.is_some() {
        let old = run.read_config()?;
        if (TrainConfig {
            steps: cfg.steps,
            ..old
        }) != *cfg
        {
            return Err(Error::Config("the run's saved config.json differs from this config (other than steps); resume with the same settings".into()));
        }
    }
    run.write_config(cfg)?;
    Ok(saved)
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
            if !outcome.applied {
                nonfinite += 1;
                self.log.skipped(done, outcome.total(), nonfinite);
                if nonfinite >= cfg.max_nonfinite_steps {
                    return Err(Error::Diverged(format!("{nonfinite} non-finite losses in a row at step {done}; lower the learning rate")));
                }
                continue;
            }
            nonfinite = 0;
            let log_now = done % cfg.log_every == 0 || done == cfg.steps;
            self.log
                .step(done, cfg.steps, &outcome, cfg.optim.lr, log_now)?;
            if cfg.eval.every > 0 && done % cfg.eval.every == 0 && done != cfg.steps {
                self.evaluate(done, None)?;
            }
            if (cfg.checkpoint_every > 0 && done % cfg.checkpoint_every == 0) || done == cfg.steps {
                self.checkpoint(done)?;
            }
        }
        Ok(())
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
        if self.state.best_psnr.is_none_or(|b| psnr > b) {
            self.state.best_psnr = Some(psnr);
            self.run.save_best(&self.models, cfg)?;
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
