use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Device;
use daa_degrade::{list_images, load_image, save_image};
use daa_train::{load_restorer, restore_image, TileConfig};
use indicatif::ProgressBar;

/// Flags of `daa restore`.
#[derive(clap::Args)]
pub struct Args {
    /// An image file, or a folder of images.
    #[arg(short, long)]
    input: PathBuf,
    /// Output file (for a file input) or folder (for a folder input; created). Folder outputs
    /// are PNG with the input's file stem.
    #[arg(short, long)]
    output: PathBuf,
    /// Architecture for a checkpoint without daa metadata (e.g. converted by another tool):
    /// unet-paper, unet-cpu, unet-tiny, dncnn-paper, dncnn-cpu, nafnet-deblur, nafnet-cpu, nafnet-tiny.
    #[arg(long)]
    arch: Option<String>,
    /// Restorer checkpoint (.safetensors) written by `daa train`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Tile side for large images (0: never tile). Bounds memory; tiles overlap by --overlap.
    #[arg(long, default_value_t = 512)]
    tile: usize,
    /// Overlap between tiles, in pixels.
    #[arg(long, default_value_t = 32)]
    overlap: usize,
}

impl Args {
    pub fn run(self, device: &Device) -> Result<()> {
        let tiles = TileConfig {
            tile: self.tile,
            overlap: self.overlap,
        };
        if tiles.tile > 0 && tiles.overlap >= tiles.tile {
            bail!(
                "--overlap {} must be smaller than --tile {}",
                tiles.overlap,
                tiles.tile
            );
        }
        if !self.input.exists() {
            bail!("input {:?} does not exist", self.input);
        }
        let (_, net, _) = load_restorer(
            &self.checkpoint,
            device,
            self.arch.as_deref().map(super::arch).transpose()?.as_ref(),
        )?;
        let one = |src: &Path, dst: &Path| -> Result<()> {
            let img = load_image(src)?;
            let out = restore_image(&net, &img, device, tiles)?;
            save_image(dst, &out)?;
            Ok(())
        };
        if self.input.is_dir() {
            let files = list_images(&self.input)?;
            std::fs::create_dir_all(&self.output)
                .with_context(|| format!("creating {:?}", self.output))?;
            let bar = ProgressBar::new(files.len() as u64);
            let mut failed = 0;
            for f in &files {
                let stem = f
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let dst = self.output.join(format!("{stem}.png"));
                if let Err(e) = one(f, &dst) {
                    super::say(&bar, format!("error: {e:#}"));
                    failed += 1;
                }
                bar.inc(1);
            }
            bar.finish_and_clear();
            eprintln!(
                "restored {} of {} images into {:?}",
                files.len() - failed,
                files.len(),
                self.output
            );
            if failed > 0 {
                bail!("{failed} image(s) could not be restored");
            }
        } else {
            if self.output.is_dir() {
                bail!(
                    "output {:?} is a folder; give a file name (e.g. restored.png)",
                    self.output
                );
            }
            one(&self.input, &self.output)?;
            eprintln!("wrote {:?}", self.output);
        }
        Ok(())
    }
}
