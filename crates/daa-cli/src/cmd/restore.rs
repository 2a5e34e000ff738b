use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Device;
use daa_degrade::{load_image_keep, save_image_as, scan_images, WRITE_EXTENSIONS};
use daa_train::{bytes_per_pixel, load_restorer, restore_image, tile_for_budget, TileConfig};
use indicatif::{ProgressBar, ProgressStyle};

/// A folder restore's plan: (input, output) pairs, and the inputs that cannot be read.
/// Flags of `daa restore`.
#[derive(clap::Args)]
pub struct Args {
    /// An image file, or a folder of images (its own files only, not subfolders).
    #[arg(short, long)]
    input: PathBuf,
    /// Output file (for a file input) or folder (for a folder input; created). It may not be
    /// the input: nothing that is read is ever overwritten.
    #[arg(short, long)]
    output: PathBuf,
    /// Architecture for a checkpoint without daa metadata (e.g. converted by another tool):
    /// unet-paper, unet-cpu, unet-tiny, dncnn-paper, dncnn-cpu, nafnet-deblur, nafnet-cpu, nafnet-tiny.
    #[arg(long)]
    arch: Option<String>,
    /// Restorer checkpoint (.safetensors) written by `daa train`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Value range the network works in: unit ([0, 1]) or signed ([-1, 1]; images are mapped
    /// in and back). Default: the checkpoint's daa.range metadata, unit when it has none (e.g.
    /// signed for a deraining or deblurring checkpoint converted from the reference release).
    #[arg(long, value_parser = ["unit", "signed"])]
    range: Option<String>,
    /// Tile side for large images (0: never tile). Default: the largest that fits
    /// --max-memory. Rounded down to the network's size multiple. At most 1048576.
    #[arg(long, value_parser = parse_pixels)]
    tile: Option<usize>,
    /// Overlap between neighbouring tiles, blended linearly, in pixels (at most 1048576).
    #[arg(long, default_value_t = 16, value_parser = parse_pixels)]
    overlap: usize,
    /// Context around each tile that is restored and cropped away, in pixels (at most
    /// 1048576).
    #[arg(long, default_value_t = 64, value_parser = parse_pixels)]
    tile_pad: usize,
    /// Memory budget of one tile's forward pass, which picks the tile size: a number of bytes
    /// with an optional K, M, G or T suffix (powers of 1024).
    #[arg(long, default_value = "2G", value_parser = parse_bytes)]
    max_memory: u64,
    /// Folder inputs: append `_SUFFIX` to each output's file stem.
    #[arg(long)]
    suffix: Option<String>,
    /// Folder inputs: output format, or `auto` to keep each input's own (PNG for formats that
    /// cannot be written). Alpha and 16 bits are kept where the format allows.
    #[arg(long, default_value = "png",
          value_parser = ["auto", "png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp"])]
    ext: String,
}

/// `2G`, `512M`, `1.5G`, `1000000` -> bytes.
/// Largest `--tile`, `--overlap` and `--tile-pad`: far beyond any image, and small enough that
/// the tiling arithmetic cannot overflow.
const MAX_PIXELS: usize = 1 << 20;

/// A pixel count for the tiling options, at most [`MAX_PIXELS`].
fn parse_pixels(s: &str) -> std::result::Result<usize, String> {
    let v: usize = s
        .trim()
        .parse()
        .map_err(|e| format!("{s:?} is not a pixel count: {e}"))?;
    if v > MAX_PIXELS {
        return Err(format!("{v} pixels is more than the {MAX_PIXELS} allowed"));
    }
    Ok(v)
}

fn parse_bytes(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        Some('T') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok((v * mult as f64) as u64),
        _ => Err(format!(
            "{s:?} is not a memory size (e.g. 2G, 512M, 1073741824)"
        )),
    }
}

/// The path with its longest existing ancestor resolved (symlinks, `..`), the rest appended:
/// comparable with canonical input paths even before the output exists.
fn resolved(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut rest = Vec::new();
    let mut cur = abs.as_path();
    loop {
        if let Ok(c) = cur.canonicalize() {
            return rest.iter().rev().fold(c, |acc, n| acc.join(n));
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                cur = parent;
            }
            _ => return abs,
        }
    }
}

fn writable_ext(path: &Path) -> Option<String> {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .filter(|e| WRITE_EXTENSIONS.contains(&e.as_str()))
}

/// Checks a single output file before any work: a known extension, an existing parent
/// folder, not a folder itself, and not the input.
fn check_output_file(input: &Path, output: &Path) -> Result<()> {
    if output.is_dir() {
        bail!("output {output:?} is a folder; give a file name (e.g. restored.png)");
    }
    if writable_ext(output).is_none() {
        bail!(
            "output {output:?} has no known image extension (use one of: {})",
            WRITE_EXTENSIONS.join(", ")
        );
    }
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        bail!("the folder of output {output:?} does not exist: create {parent:?} first");
    }
    if resolved(output) == resolved(input) {
        bail!("output {output:?} is the input: restoring would overwrite it; choose another -o");
    }
    Ok(())
}

/// (input, output) pairs, and the broken symlinks found among the inputs.
type Plan = (Vec<(PathBuf, PathBuf)>, Vec<PathBuf>);

impl Args {
    /// The output file name for input `src` in a folder run.
    fn output_name(&self, src: &Path) -> String {
        let stem = src
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ext = match self.ext.as_str() {
            "auto" => writable_ext(src).unwrap_or_else(|| "png".into()),
            e => e.to_string(),
        };
        match &self.suffix {
            Some(s) => format!("{stem}_{s}.{ext}"),
            None => format!("{stem}.{ext}"),
        }
    }

    /// The (input, output) pairs of a folder run, checked before any work: the output folder
    /// is not the input folder, no output is an input, no two inputs share an output name.
    fn plan_folder(&self) -> Result<Plan> {
        let (files, broken) = scan_images(&self.input)?;
        if self.output.exists() && !self.output.is_dir() {
            bail!(
                "output {:?} is a file; give a folder for a folder input",
                self.output
            );
        }
        if resolved(&self.output) == resolved(&self.input) {
            bail!(
                "output folder {:?} is the input folder: restoring would overwrite the inputs \
                 and a later run would restore its own outputs; choose another -o",
                self.output
            );
        }
        let inputs: Vec<PathBuf> = files.iter().map(|f| resolved(f)).collect();
        let mut by_name: HashMap<String, Vec<&Path>> = HashMap::new();
        let mut plan = Vec::with_capacity(files.len());
        for f in &files {
            let name = self.output_name(f);
            let dst = self.output.join(&name);
            if inputs.contains(&resolved(&dst)) {
                bail!("output {dst:?} would overwrite the input {f:?}; choose another -o");
            }
            by_name.entry(name.to_lowercase()).or_default().push(f);
            plan.push((f.clone(), dst));
        }
        let mut clashes: Vec<String> = by_name
            .iter()
            .filter(|(_, srcs)| srcs.len() > 1)
            .map(|(name, srcs)| {
                let srcs: Vec<String> = srcs
                    .iter()
                    .map(|s| {
                        s.file_name()
                            .unwrap_or_default()
                            .to_string_lossy()
                            .into_owned()
                    })
                    .collect();
                format!("{} -> {name}", srcs.join(", "))
            })
            .collect();
        if !clashes.is_empty() {
            clashes.sort();
            bail!(
                "{} output name(s) would be written by several inputs ({}); use --ext auto to \
                 keep each input's format, or --suffix",
                clashes.len(),
                clashes.join("; ")
            );
        }
        Ok((plan, broken))
    }

    pub fn run(self, device: &Device) -> Result<()> {
        if let Some(s) = &self.suffix {
            if s.is_empty() || s.contains(['/', '\\']) || s == "." || s == ".." {
                bail!("--suffix {s:?} must be part of a file name: no path separators");
            }
        }
        let meta = std::fs::symlink_metadata(&self.input)
            .with_context(|| format!("input {:?} does not exist", self.input))?;
        if meta.file_type().is_symlink() && !self.input.exists() {
            bail!("input {:?} is a broken symlink", self.input);
        }
        let folder = self.input.is_dir();
        // Everything about the outputs is checked before the network loads or runs.
        let (plan, broken) = if folder {
            self.plan_folder()?
        } else {
            check_output_file(&self.input, &self.output)?;
            (vec![(self.input.clone(), self.output.clone())], Vec::new())
        };
        let (cfg, net, _) = load_restorer(
            &self.checkpoint,
            device,
            self.arch.as_deref().map(super::arch).transpose()?.as_ref(),
        )?;
        let range = super::restorer_range(&self.checkpoint, self.range.as_deref())?;
        let tile = self
            .tile
            .unwrap_or_else(|| tile_for_budget(&cfg, self.max_memory, self.overlap, self.tile_pad));
        let tiles = TileConfig {
            tile,
            overlap: self.overlap,
            pad: self.tile_pad,
        }
        .resolve(net.size_multiple())
        .map_err(|e| anyhow::anyhow!("--tile {tile}: {e}"))?;
        if tiles.tile > 0 {
            let side = (tiles.tile + 2 * tiles.pad) as u64;
            let est = side
                .saturating_mul(side)
                .saturating_mul(bytes_per_pixel(&cfg));
            if est > self.max_memory {
                tracing::warn!(
                    tile = tiles.tile,
                    estimated_bytes = est,
                    max_memory = self.max_memory,
                    "the tile's estimated memory exceeds --max-memory"
                );
            }
        }
        tracing::info!(
            tile = tiles.tile,
            overlap = tiles.overlap,
            pad = tiles.pad,
            ?range,
            "restore tiling"
        );
        let one = |src: &Path, dst: &Path| -> Result<()> {
            let (img, format) = load_image_keep(src)?;
            let out = restore_image(&net, &img, device, tiles, range)?;
            save_image_as(dst, &out, &format)?;
            Ok(())
        };
        if !folder {
            one(&self.input, &self.output)?;
            eprintln!("wrote {:?}", self.output);
            return Ok(());
        }
        std::fs::create_dir_all(&self.output)
            .with_context(|| format!("creating {:?}", self.output))?;
        let bar = ProgressBar::new(plan.len() as u64);
        if let Ok(style) = ProgressStyle::with_template(
            "{wide_bar} {pos}/{len} images, {elapsed} elapsed, ETA {eta}",
        ) {
            bar.set_style(style);
        }
        let mut failed = 0;
        for b in &broken {
            super::say(&bar, format!("error: {b:?} is a broken symlink"));
            failed += 1;
        }
        for (src, dst) in &plan {
            if let Err(e) = one(src, dst) {
                super::say(&bar, format!("error: {}", super::chain(&e)));
                failed += 1;
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        let total = plan.len() + broken.len();
        eprintln!(
            "restored {} of {total} images into {:?}",
            total - failed,
            self.output
        );
        if failed > 0 {
            bail!("{failed} of {total} image(s) could not be restored");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_bytes("2G"), Ok(2 << 30));
        assert_eq!(parse_bytes("512m"), Ok(512 << 20));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert_eq!(parse_bytes("1.5K"), Ok(1536));
        for bad in ["", "G", "-1G", "lots", "0"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }
}
