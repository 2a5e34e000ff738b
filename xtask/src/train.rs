use anyhow::Result;

use crate::{cargo, run_echoed};

/// The restoration tasks.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Task {
    /// Denoising: AWGN sigma ~ U[0, 75]/255 -> camera-noise proxy, on the embedded photos.
    Denoise,
    /// Deblurring: linear motion blur -> camera shake with clipped highlights.
    Deblur,
    /// Deraining: one streak layer -> several layers with haze.
    Derain,
}

impl Task {
    fn preset(self) -> &'static str {
        match self {
            Task::Denoise => "denoise",
            Task::Deblur => "deblur",
            Task::Derain => "derain",
        }
    }
}

/// `cargo xtask train <task> [--cuda] [-- daa train flags...]`.
#[derive(clap::Args)]
pub struct Train {
    /// Which task's preset to run.
    task: Task,
    /// Build with CUDA and train on cuda:0.
    #[arg(long)]
    cuda: bool,
    /// Extra flags passed to `daa train` (after `--`).
    #[arg(last = true)]
    extra: Vec<String>,
}

impl Train {
    pub fn run(self) -> Result<()> {
        let mut c = cargo(["run", "--release", "-p", "daa-cli"]);
        if self.cuda {
            c.args(["--features", "cuda"]);
        }
        c.args(["--", "train", "--preset", self.task.preset()]);
        if self.cuda {
            c.args(["--device", "cuda:0"]);
        }
        c.args(&self.extra);
        run_echoed(c)
    }
}
