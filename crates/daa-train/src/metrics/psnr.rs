use daa_degrade::Image;

use super::{planes, MetricConfig};
use crate::{Error, Result};

/// PSNR in dB between two same-size images, peak 255 on the 0..255 scale (equivalently
/// peak 1 on `[0, 1]`). Identical images give `f64::INFINITY`.
pub fn psnr(a: &Image, b: &Image, cfg: &MetricConfig) -> Result<f64> {
    check_sizes(a, b, cfg)?;
    let (pa, _, _) = planes(a, cfg);
    let (pb, _, _) = planes(b, cfg);
    let (mut se, mut n) = (0f64, 0usize);
    for (x, y) in pa.iter().zip(&pb) {
        for (u, v) in x.iter().zip(y) {
            se += (u - v) * (u - v);
        }
        n += x.len();
    }
    let mse = se / n as f64;
    Ok(if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0 * 255.0 / mse).log10()
    })
}

pub(crate) fn check_sizes(a: &Image, b: &Image, cfg: &MetricConfig) -> Result<()> {
    if (a.width(), a.height()) != (b.width(), b.height()) {
        return Err(Error::SizeMismatch {
            what: "metric",
            left: (a.width(), a.height()),
            right: (b.width(), b.height()),
        });
    }
    if a.width() <= 2 * cfg.crop_border || a.height() <= 2 * cfg.crop_border {
        return Err(Error::ImageTooSmall(format!(
            "crop_border {} leaves nothing of a {}x{} image",
            cfg.crop_border,
            a.width(),
            a.height()
        )));
    }
    Ok(())
}
