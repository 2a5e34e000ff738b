//! The run's log: one sink that writes each record to `metrics.jsonl`, to a TensorBoard event
//! file, to `tracing` and to the caller's event callback, so they never disagree.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use crate::model::StepOutcome;
use crate::tensorboard::EventWriter;
use crate::{Error, EvalReport, Event, Result};

/// The log of one run.
pub(crate) struct RunLog<'a> {
    metrics: std::fs::File,
    path: PathBuf,
    on_event: &'a mut dyn FnMut(&Event),
    since: Instant,
    steps_since: usize,
    /// TensorBoard's copy of the scalars; `None` after a write failed (warned once).
    events: Option<EventWriter>,
}

impl<'a> RunLog<'a> {
    /// A log appending to `metrics` (the file at `path`) and reporting to `on_event`.
    pub(crate) fn new(
        metrics: std::fs::File,
        path: PathBuf,
        on_event: &'a mut dyn FnMut(&Event),
    ) -> Self {
        Self {
            metrics,
            path,
            on_event,
            since: Instant::now(),
            steps_since: 0,
            events: None,
        }
    }

    /// Also writes the scalars to this TensorBoard event file.
    pub(crate) fn with_tensorboard(mut self, events: EventWriter) -> Self {
        self.events = Some(events);
        self
    }

    /// Writes scalars to the event file. metrics.jsonl is the run's record: a failure here
    /// is a warning, and the event file is not written again.
    fn scalars(&mut self, step: usize, values: &[(String, f64)]) {
        let Some(w) = self.events.as_mut() else {
            return;
        };
        if let Err(e) = w.scalars(step, values) {
            self.events = None;
            self.warn(format!(
                "TensorBoard events are no longer written (metrics.jsonl still is): {e}"
            ));
        }
    }

    fn write(&mut self, value: serde_json::Value) -> Result<()> {
        writeln!(self.metrics, "{value}").map_err(|e| Error::io(&self.path, e))
    }

    /// Training is about to start at `start_step`.
    pub(crate) fn started(&mut self, start_step: usize, total_steps: usize, parameters: usize) {
        if start_step > 0 {
            tracing::info!(step = start_step, "resumed");
        }
        (self.on_event)(&Event::Started {
            start_step,
            total_steps,
            parameters,
        });
        self.since = Instant::now();
    }

    /// A step was applied; every `log_every` steps (and at the last) its losses are logged.
    pub(crate) fn step(
        &mut self,
        done: usize,
        total_steps: usize,
        outcome: &StepOutcome,
        lr: f64,
        log_now: bool,
    ) -> Result<()> {
        self.steps_since += 1;
        if !log_now {
            return Ok(());
        }
        let sps = self.since.elapsed().as_secs_f64() / self.steps_since.max(1) as f64;
        let mut line = serde_json::Map::new();
        line.insert("step".into(), done.into());
        for (k, v) in &outcome.losses {
            let key = match *k {
                "lambda" => "lambda".to_string(),
                _ => format!("loss_{k}"),
            };
            line.insert(key, (*v).into());
        }
        line.insert("lr".into(), lr.into());
        line.insert("sec_per_step".into(), sps.into());
        let mut scalars: Vec<(String, f64)> = outcome
            .losses
            .iter()
            .map(|(k, v)| match *k {
                "lambda" => ("lambda".to_string(), *v),
                _ => (format!("loss/{k}"), *v),
            })
            .collect();
        scalars.push(("lr".into(), lr));
        scalars.push(("sec_per_step".into(), sps));
        self.scalars(done, &scalars);
        tracing::info!(
            step = done,
            loss_total = outcome.total(),
            lambda = outcome.lambda,
            "train"
        );
        self.write(serde_json::Value::Object(line))?;
        (self.on_event)(&Event::Step {
            step: done,
            total_steps,
            losses: outcome.losses.clone(),
            lr,
            seconds_per_step: sps,
        });
        self.since = Instant::now();
        self.steps_since = 0;
        Ok(())
    }

    /// Step `step` of `total_steps` is done (every step, for progress bars).
    pub(crate) fn progress(&mut self, step: usize, total_steps: usize) {
        (self.on_event)(&Event::Progress { step, total_steps });
    }

    /// A step was skipped (non-finite loss or gradient), `in_a_row` so far. Logged at info: the
    /// `SkippedStep` event is the warning (the CLI prints it; a warn here doubled every line).
    pub(crate) fn skipped(&mut self, step: usize, total: f64, in_a_row: usize) {
        tracing::info!(
            step,
            loss = total,
            in_a_row,
            "non-finite loss or gradient, step skipped"
        );
        (self.on_event)(&Event::SkippedStep { step, in_a_row });
    }

    /// An evaluation at `step`.
    pub(crate) fn evaluated(&mut self, step: usize, report: &EvalReport) -> Result<()> {
        let r = &report.mean_restored;
        tracing::info!(step, psnr = r.psnr, ssim = r.ssim, "eval");
        let i = &report.mean_input;
        self.scalars(
            step,
            &[
                ("eval/psnr".into(), r.psnr),
                ("eval/ssim".into(), r.ssim),
                ("eval/input_psnr".into(), i.psnr),
                ("eval/input_ssim".into(), i.ssim),
            ],
        );
        self.write(
            serde_json::json!({"step": step, "eval_psnr": r.psnr, "eval_ssim": r.ssim,
            "input_psnr": report.mean_input.psnr, "input_ssim": report.mean_input.ssim}),
        )?;
        (self.on_event)(&Event::Evaluated {
            step,
            report: report.clone(),
        });
        Ok(())
    }

    /// A checkpoint was written (`path`: its restorer file).
    pub(crate) fn checkpoint(&mut self, path: PathBuf) {
        tracing::info!(?path, "checkpoint");
        (self.on_event)(&Event::Checkpoint { path });
    }

    /// Something went wrong that does not stop training.
    pub(crate) fn warn(&mut self, message: String) {
        tracing::warn!("{message}");
        (self.on_event)(&Event::Warning { message });
    }
}
