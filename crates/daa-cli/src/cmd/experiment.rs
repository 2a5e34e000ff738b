use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::Device;
use daa_train::experiments::{condition_noise, ConditionNoiseConfig};
use indicatif::ProgressBar;

/// Flags of `daa experiment`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    which: Which,
}

#[derive(clap::Subcommand)]
enum Which {
    /// The paper's Fig. 1a: noise-prediction loss of a conditional diffusion model whose
    /// condition is the clean target plus AWGN of level sigma, one model per sigma.
    ConditionNoise {
        /// Condition noise levels, 8-bit units.
        #[arg(long, value_delimiter = ',', default_value = "0,10,25,50")]
        sigmas: Vec<f32>,
        /// Training steps per level.
        #[arg(long, default_value_t = 300)]
        steps: usize,
        /// Batch size.
        #[arg(long, default_value_t = 8)]
        batch_size: usize,
        /// Patch side (a multiple of 2).
        #[arg(long, default_value_t = 32)]
        patch_size: usize,
        /// Seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Also write the result as a markdown report here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Folder with `train/` and `test/` subfolders of clean photos (default: the photos
        /// embedded in the binary, `embedded:photos`).
        #[arg(long, default_value = "embedded:photos")]
        photos: PathBuf,
    },
}

impl Args {
    pub fn run(self, device: &Device) -> Result<()> {
        let Which::ConditionNoise {
            sigmas,
            steps,
            batch_size,
            patch_size,
            seed,
            report,
            photos: root,
        } = self.which;
        let cfg = ConditionNoiseConfig {
            train_dir: root.join("train"),
            test_dir: root.join("test"),
            sigmas,
            steps,
            batch_size,
            patch_size,
            lr: 1e-3,
            seed,
        };
        let bar = ProgressBar::new((cfg.steps * cfg.sigmas.len()) as u64);
        let results = condition_noise(&cfg, device, &mut |_, _| bar.inc(1))?;
        bar.finish_and_clear();
        let mut md = String::from(
            "| condition sigma | train loss (last quarter) | held-out loss |\n|---|---|---|\n",
        );
        for r in &results {
            md += &format!(
                "| {} | {:.4} | {:.4} |\n",
                r.sigma, r.train_loss, r.eval_loss
            );
        }
        let increasing = results.windows(2).all(|w| w[1].eval_loss > w[0].eval_loss);
        md += &format!(
            "\nTiny CondUNet (6 input channels), {} steps per level, batch {}, {}x{} patches, lr 1e-3, seed {}. \
             Held-out loss rises monotonically with sigma: {}.\n",
            cfg.steps, cfg.batch_size, cfg.patch_size, cfg.patch_size, cfg.seed, if increasing { "yes" } else { "no" }
        );
        #[allow(clippy::print_stdout)]
        {
            println!("{md}");
        }
        if let Some(path) = report {
            std::fs::write(&path, &md).with_context(|| format!("writing {path:?}"))?;
        }
        Ok(())
    }
}
