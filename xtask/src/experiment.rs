use anyhow::Result;

use crate::{cargo, run_echoed};

/// `cargo xtask experiment condition-noise`: the paper's Fig. 1a property, written to
/// docs/experiments/condition-noise.md.
#[derive(clap::Args)]
pub struct Experiment {
    /// Which experiment.
    which: Which,
    /// Extra flags for `daa experiment <which>` (after `--`).
    #[arg(last = true)]
    extra: Vec<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Which {
    /// Noise-prediction loss vs noise in the condition (Fig. 1a).
    ConditionNoise,
}

impl Experiment {
    pub fn run(self) -> Result<()> {
        std::fs::create_dir_all("docs/experiments")?;
        let Which::ConditionNoise = self.which;
        let mut c = cargo([
            "run",
            "--release",
            "-p",
            "daa-cli",
            "--",
            "experiment",
            "condition-noise",
        ]);
        c.args(["--report", "docs/experiments/condition-noise.md"])
            .args(&self.extra);
        run_echoed(c)
    }
}
