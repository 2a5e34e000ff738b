use std::path::Path;

use candle_core::Device;
use daa_backbones::Backbone;
use daa_degrade::{sample_rng, save_image, PairSource};
use daa_diffusion::ValueRange;

use crate::metrics::{psnr, ssim, Mean, MetricConfig};
use crate::{restore_image, Result, TileConfig};

/// PSNR (dB) and SSIM of one image or a mean over images.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Scores {
    /// PSNR in dB.
    pub psnr: f64,
    /// SSIM in [0, 1].
    pub ssim: f64,
}

/// Scores of one held-out image: the degraded input and the restored output, both against
/// the clean target.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ImageScores {
    /// Image name.
    pub name: String,
    /// Input vs target.
    pub input: Scores,
    /// Restored vs target.
    pub restored: Scores,
}

/// An evaluation over a held-out set.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalReport {
    /// Per image.
    pub images: Vec<ImageScores>,
    /// Mean over images, input vs target.
    pub mean_input: Scores,
    /// Mean over images, restored vs target.
    pub mean_restored: Scores,
    /// The conventions used.
    pub metric: MetricConfig,
}

impl EvalReport {
    /// A markdown table: one row per image and a mean row.
    pub fn to_markdown(&self) -> String {
        let channel = if self.metric.y_channel { "Y" } else { "RGB" };
        let mut s = "| image | input PSNR | input SSIM | restored PSNR | restored SSIM |\n|---|---|---|---|---|\n".to_string();
        let row = |name: &str, i: &Scores, r: &Scores| {
            format!(
                "| {name} | {:.2} | {:.4} | {:.2} | {:.4} |\n",
                i.psnr, i.ssim, r.psnr, r.ssim
            )
        };
        for img in &self.images {
            s += &row(&img.name, &img.input, &img.restored);
        }
        s += &row("**mean**", &self.mean_input, &self.mean_restored);
        s += &format!(
            "\nPSNR (dB) / SSIM on {channel}, crop border {}, {}.\n",
            self.metric.crop_border,
            if self.metric.quantize {
                "8-bit quantised"
            } else {
                "not quantised"
            }
        );
        s
    }
}

/// Restores every pair of `data` with `net` and scores input and output against the target.
/// Image `i`'s degradation (for synthetic data) uses `sample_rng(seed, 0, i)`, so every method
/// evaluated with the same seed sees the same inputs. With `save_dir`, the restored images
/// are written there as PNG, the degraded inputs and ground truths into its `input/` and
/// `gt/` subfolders under the same names. `range` is the value range `net` works in
/// ([`restore_image`]); images and metrics stay in `[0, 1]`.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    net: &Backbone,
    range: ValueRange,
    data: &dyn PairSource,
    metric: &MetricConfig,
    seed: u64,
    device: &Device,
    tiles: TileConfig,
    save_dir: Option<&Path>,
) -> Result<EvalReport> {
    let mut images = Vec::with_capacity(data.len());
    let (mut ip, mut is, mut rp, mut rs) = (
        Mean::default(),
        Mean::default(),
        Mean::default(),
        Mean::default(),
    );
    for i in 0..data.len() {
        let mut rng = sample_rng(seed, 0, i as u64);
        let (input, target, name) = data.full(i, &mut rng)?;
        let restored = restore_image(net, &input, device, tiles, range)?;
        let input_s = Scores {
            psnr: psnr(&input, &target, metric)?,
            ssim: ssim(&input, &target, metric)?,
        };
        let restored_s = Scores {
            psnr: psnr(&restored, &target, metric)?,
            ssim: ssim(&restored, &target, metric)?,
        };
        ip.update(input_s.psnr);
        is.update(input_s.ssim);
        rp.update(restored_s.psnr);
        rs.update(restored_s.ssim);
        if let Some(dir) = save_dir {
            std::fs::create_dir_all(dir).map_err(|e| crate::Error::io(dir, e))?;
            save_image(dir.join(format!("{name}.png")), &restored)?;
            for (sub, img) in [("input", &input), ("gt", &target)] {
                let d = dir.join(sub);
                std::fs::create_dir_all(&d).map_err(|e| crate::Error::io(&d, e))?;
                save_image(d.join(format!("{name}.png")), img)?;
            }
        }
        images.push(ImageScores {
            name,
            input: input_s,
            restored: restored_s,
        });
    }
    Ok(EvalReport {
        images,
        mean_input: Scores {
            psnr: ip.compute(),
            ssim: is.compute(),
        },
        mean_restored: Scores {
            psnr: rp.compute(),
            ssim: rs.compute(),
        },
        metric: *metric,
    })
}
