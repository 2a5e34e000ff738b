use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use daa_degrade::{save_image, Layout, PairImage, Split};

/// Flags of `daa data`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: DataCmd,
}

#[derive(clap::Subcommand)]
enum DataCmd {
    /// Turn a dataset in its authors' layout into the flat `input/` + `target/` folders that
    /// `daa train` (--train-input/--train-target, --real-dir) and `daa eval` read.
    ///
    /// Layouts (paths under --root): sidd-medium (Data/<scene>/*_NOISY_SRGB_*.PNG + *_GT_*),
    /// sidd-val (ValidationNoisyBlocksSrgb.mat, ValidationGtBlocksSrgb.mat), gopro
    /// (<split>/<seq>/{blur,sharp}/), realblur-j (RealBlur_J_<split>_list.txt), rain13k
    /// (input/, target/), spa (real_world.txt, real_test_1000.txt). Image files are
    /// symlinked, not copied; the SIDD blocks are written as PNG.
    Prepare {
        /// The dataset layout.
        #[arg(long, value_parser = Layout::NAMES)]
        layout: String,
        /// The dataset's root folder, as downloaded.
        #[arg(long)]
        root: PathBuf,
        /// train or test (default: the layout's only split for sidd-medium (train) and
        /// sidd-val (test), else test).
        #[arg(long, value_parser = ["train", "test"])]
        split: Option<String>,
        /// Output folder; gets input/ and target/ (it must not exist or be empty).
        #[arg(long)]
        out: PathBuf,
        /// Copy image files instead of symlinking them.
        #[arg(long)]
        copy: bool,
    },
}

impl Args {
    pub fn run(self) -> Result<()> {
        let DataCmd::Prepare {
            layout,
            root,
            split,
            out,
            copy,
        } = self.cmd;
        let layout: Layout = layout.parse()?;
        if !root.is_dir() {
            bail!(
                "dataset root {root:?} {}; give the folder the download unpacked into",
                if root.exists() {
                    "is not a folder"
                } else {
                    "does not exist"
                }
            );
        }
        let split = match (split.as_deref(), layout) {
            (Some("train"), _) | (None, Layout::SiddMedium) => Split::Train,
            _ => Split::Test,
        };
        if out.exists()
            && std::fs::read_dir(&out)
                .with_context(|| format!("reading {out:?}"))?
                .next()
                .is_some()
        {
            bail!("output folder {out:?} is not empty");
        }
        let pairs = layout.pairs(&root, split)?;
        let (dir_in, dir_gt) = (out.join("input"), out.join("target"));
        std::fs::create_dir_all(&dir_in).with_context(|| format!("creating {dir_in:?}"))?;
        std::fs::create_dir_all(&dir_gt).with_context(|| format!("creating {dir_gt:?}"))?;
        let bar = indicatif::ProgressBar::new(pairs.len() as u64);
        for p in &pairs {
            place(&p.input, &dir_in, &p.name, copy)?;
            place(&p.target, &dir_gt, &p.name, copy)?;
            bar.inc(1);
        }
        bar.finish_and_clear();
        #[allow(clippy::print_stdout)]
        {
            println!(
                "{} pairs of {layout:?} ({split:?}) in {dir_in:?} and {dir_gt:?}",
                pairs.len()
            );
        }
        Ok(())
    }
}

/// Puts one side of a pair into `dir` as `<name>.<ext>`.
fn place(side: &PairImage, dir: &Path, name: &str, copy: bool) -> Result<()> {
    match side {
        PairImage::Memory(img) => Ok(save_image(dir.join(format!("{name}.png")), img)?),
        PairImage::File(src) => {
            let ext = src.extension().and_then(|e| e.to_str()).unwrap_or("png");
            let dst = dir.join(format!("{name}.{ext}"));
            let src = std::fs::canonicalize(src).with_context(|| format!("resolving {src:?}"))?;
            if copy {
                std::fs::copy(&src, &dst).with_context(|| format!("copying {src:?} to {dst:?}"))?;
            } else {
                link(&src, &dst)?;
            }
            Ok(())
        }
    }
}

#[cfg(unix)]
fn link(src: &Path, dst: &Path) -> Result<()> {
    std::os::unix::fs::symlink(src, dst).with_context(|| format!("linking {dst:?} -> {src:?}"))
}

#[cfg(not(unix))]
fn link(src: &Path, dst: &Path) -> Result<()> {
    std::fs::copy(src, dst)
        .map(|_| ())
        .with_context(|| format!("copying {src:?} to {dst:?}"))
}
