use std::path::PathBuf;

use anyhow::{bail, Result};
use candle_core::Device;
use daa_degrade::Degradation;
use daa_train::metrics::MetricConfig;
use daa_train::{
    arch, evaluate, load_restorer, open_pairs, DataSpec, OpenOptions, TileConfig, TrainConfig,
};

/// Flags of `daa eval`.
#[derive(clap::Args)]
// `--sigma -5` reaches the degradation's range check (which names it), not an unknown argument.
#[command(allow_negative_numbers = true)]
pub struct Args {
    /// Architecture for a checkpoint without daa metadata (e.g. converted by another tool):
    /// NAME-SCALE with NAME unet, dncnn, nafnet, restormer or uformer and SCALE tiny, cpu or
    /// paper (unet-paper, restormer-cpu, ...).
    #[arg(long)]
    arch: Option<String>,
    /// Restorer checkpoint (.safetensors).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Value range the network works in: unit ([0, 1]) or signed ([-1, 1]; images are mapped
    /// in and back). Default: the checkpoint's daa.range metadata, unit when it has none (e.g.
    /// signed for a deraining or deblurring checkpoint converted from the reference release).
    #[arg(long, value_parser = ["unit", "signed"])]
    range: Option<String>,
    /// Aligned pairs: degraded inputs...
    #[arg(long, requires = "target_dir")]
    input_dir: Option<PathBuf>,
    /// ...and clean targets (paired by file name).
    #[arg(long, requires = "input_dir")]
    target_dir: Option<PathBuf>,
    /// Or: clean photos from this folder instead of the preset's held-out photos, degraded the
    /// same way: like the preset's target domain (its camera noise, blur, ...), like its source
    /// domain with --domain source, or with AWGN of --sigma.
    #[arg(long, conflicts_with = "input_dir")]
    clean_dir: Option<PathBuf>,
    /// Degrade the clean photos (the preset's or --clean-dir's) with AWGN of this sigma
    /// (0..255, 8-bit units) instead of the preset's degradation; reported as domain "awgn".
    #[arg(long, conflicts_with_all = ["domain", "input_dir"])]
    sigma: Option<f32>,
    /// With the preset's held-out photos: degrade them like its target ("real") domain, the
    /// default, or like its source (synthetic) domain.
    #[arg(long, default_value = "target", value_parser = ["target", "source"], conflicts_with = "input_dir")]
    domain: String,
    /// Print one JSON line with the means instead of the table (for scripts).
    #[arg(long)]
    json: bool,
    /// Preset whose held-out set is used when no data flag is given.
    #[arg(long, default_value = "denoise")]
    preset: String,
    /// Measure on the Y channel (BT.601) instead of RGB.
    #[arg(long)]
    y_channel: bool,
    /// Pixels cropped from each border before measuring.
    #[arg(long, default_value_t = 0)]
    crop_border: usize,
    /// Seed of the degradation of synthetic pairs.
    #[arg(long, default_value_t = 2024)]
    seed: u64,
    /// Write restored images into this folder (degraded inputs and ground truths into its
    /// input/ and gt/ subfolders).
    #[arg(long)]
    save_dir: Option<PathBuf>,
}

impl Args {
    /// The preset's held-out photos (or --clean-dir's), degraded like its target domain, its
    /// source domain (--domain source) or with AWGN of --sigma.
    fn synthetic_spec(&self, preset: &TrainConfig) -> Result<DataSpec> {
        let (dir, mut degradation) = match &preset.eval.data {
            DataSpec::Synthetic {
                clean_dir,
                degradation,
            } => (clean_dir.clone(), degradation.clone()),
            DataSpec::Paired { .. } => bail!(
                "preset {} evaluates on pairs; pass --input-dir/--target-dir",
                self.preset
            ),
        };
        if self.domain == "source" {
            match &preset.train_data {
                DataSpec::Synthetic { degradation: d, .. } => degradation = d.clone(),
                DataSpec::Paired { .. } => bail!(
                    "preset {} trains on pairs: it has no source degradation",
                    self.preset
                ),
            }
        }
        if let Some(s) = self.sigma {
            degradation = Degradation::Awgn(daa_degrade::AwgnParams {
                sigma_min: s,
                sigma_max: s,
            });
        }
        Ok(DataSpec::Synthetic {
            clean_dir: self.clean_dir.clone().unwrap_or(dir),
            degradation,
        })
    }

    /// What the input images are, as `--json` reports it: `pairs` (--input-dir), `awgn`
    /// (--sigma), else the preset's `target` or `source` degradation.
    fn domain_label(&self) -> &str {
        match (&self.input_dir, self.sigma) {
            (Some(_), _) => "pairs",
            (None, Some(_)) => "awgn",
            (None, None) => &self.domain,
        }
    }

    pub fn run(self, device: &Device) -> Result<()> {
        let (_, net, _) = load_restorer(
            &self.checkpoint,
            device,
            self.arch.as_deref().map(arch).transpose()?.as_ref(),
        )?;
        let range = super::restorer_range(&self.checkpoint, self.range.as_deref())?;
        let preset = TrainConfig::preset(&self.preset)?;
        let spec = match (&self.input_dir, &self.target_dir) {
            (Some(i), Some(t)) => DataSpec::Paired {
                input_dir: i.clone(),
                target_dir: t.clone(),
            },
            (None, None) => self.synthetic_spec(&preset)?,
            _ => bail!("give --input-dir with --target-dir, or --clean-dir"),
        };
        let data = open_pairs(&spec, OpenOptions::eval())?;
        let metric = MetricConfig {
            crop_border: self.crop_border,
            y_channel: self.y_channel || preset.eval.metric.y_channel && self.input_dir.is_none(),
            quantize: true,
        };
        let report = evaluate(
            &net,
            range,
            data.as_ref(),
            &metric,
            self.seed,
            device,
            TileConfig::default(),
            self.save_dir.as_deref(),
        )?;
        #[allow(clippy::print_stdout)]
        if self.json {
            let (i, r) = (&report.mean_input, &report.mean_restored);
            println!(
                "{}",
                serde_json::json!({"domain": self.domain_label(), "sigma": self.sigma, "psnr": r.psnr, "ssim": r.ssim, "input_psnr": i.psnr, "input_ssim": i.ssim, "images": report.images.len()})
            );
        } else {
            println!("{}", report.to_markdown());
        }
        Ok(())
    }
}
