use std::path::PathBuf;

use anyhow::{Context, Result};
use daa_degrade::{load_image, sample_rng, save_image, Image};
use daa_train::{DataSpec, TargetSpec, TrainConfig};

/// Flags of `daa samples`: a sheet of each task's domains on one photo.
#[derive(clap::Args)]
pub struct Args {
    /// Output image (PNG or JPEG by extension); the README's sheet is `docs/samples.jpg`.
    #[arg(short, long, default_value = "samples.jpg")]
    output: PathBuf,
    /// The clean photo (default: the held-out monarch).
    #[arg(short, long)]
    input: Option<PathBuf>,
    /// Seed of the degradations.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl Args {
    /// Rows: denoise, deblur, derain; columns: clean, source degradation, target degradation
    /// (the presets' own parameters).
    pub fn run(self) -> Result<()> {
        let photo = self
            .input
            .clone()
            .unwrap_or_else(|| daa_degrade::embedded::path("photos/test/monarch.png"));
        let clean = load_image(&photo)?;
        let (w, h) = (clean.width(), clean.height());
        let mut sheet = vec![0f32; 3 * (3 * w) * (3 * h)];
        let (sw, sh) = (3 * w, 3 * h);
        for (row, preset) in ["denoise", "deblur", "derain"].into_iter().enumerate() {
            let cfg = TrainConfig::preset(preset)?;
            let DataSpec::Synthetic {
                degradation: source,
                ..
            } = &cfg.train_data
            else {
                anyhow::bail!("preset {preset} has no synthetic source")
            };
            let TargetSpec::Synthetic {
                degradation: target,
                ..
            } = &cfg.adaptation.target
            else {
                anyhow::bail!("preset {preset} has no synthetic target")
            };
            let cells: [Image; 3] = [
                clean.clone(),
                source.apply(&clean, &mut sample_rng(self.seed, row as u64, 0))?,
                target.apply(&clean, &mut sample_rng(self.seed, row as u64, 1))?,
            ];
            for (col, cell) in cells.iter().enumerate() {
                for c in 0..3 {
                    for y in 0..h {
                        for x in 0..w {
                            sheet[(c * sh + row * h + y) * sw + col * w + x] = cell.get(c, y, x);
                        }
                    }
                }
            }
        }
        let img = Image::from_planar(sw, sh, sheet)?;
        save_image(&self.output, &img).with_context(|| format!("writing {:?}", self.output))?;
        eprintln!(
            "wrote {:?}: rows denoise, deblur, derain; columns clean, source, target",
            self.output
        );
        Ok(())
    }
}
