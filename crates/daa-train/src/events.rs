use std::path::PathBuf;

use crate::EvalReport;

/// What the engine reports while it runs; the CLI turns these into a progress bar and logs.
#[derive(Debug, Clone)]
pub enum Event {
    /// Training is about to start.
    Started {
        /// First step to run (non-zero when resuming).
        start_step: usize,
        /// Total steps.
        total_steps: usize,
        /// Restorer parameters.
        parameters: usize,
    },
    /// One optimizer step finished (sent every `log_every` steps and at the end).
    Step {
        /// Steps done so far.
        step: usize,
        /// Total steps.
        total_steps: usize,
        /// Named loss parts, e.g. `("total", 0.05), ("rec", 0.05)`.
        losses: Vec<(&'static str, f64)>,
        /// Learning rate.
        lr: f64,
        /// Wall seconds per step over the last interval.
        seconds_per_step: f64,
    },
    /// A step finished (applied or skipped), sent after every step so a progress bar moves
    /// between log intervals; [`Event::Step`] carries the losses.
    Progress {
        /// Steps done so far.
        step: usize,
        /// Total steps.
        total_steps: usize,
    },
    /// A non-finite loss: the step was skipped.
    SkippedStep {
        /// The step.
        step: usize,
        /// Skips in a row so far.
        in_a_row: usize,
    },
    /// An evaluation finished.
    Evaluated {
        /// At this step.
        step: usize,
        /// Its results.
        report: EvalReport,
    },
    /// A checkpoint was written.
    Checkpoint {
        /// The restorer file.
        path: PathBuf,
    },
    /// Something failed that does not stop training (e.g. deleting an old checkpoint).
    Warning {
        /// What happened.
        message: String,
    },
}
