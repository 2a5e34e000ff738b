use daa_degrade::Image;

use super::psnr::check_sizes;
use super::{planes, MetricConfig};
use crate::{Error, Result};

/// SSIM (Wang et al. 2004) with BasicSR's convention: an 11x11 Gaussian window of sigma 1.5,
/// valid filtering (no padding), `C1 = (0.01 * 255)^2`, `C2 = (0.03 * 255)^2`, per channel,
/// then the mean over channels. Equals scikit-image's `structural_similarity(...,
/// gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)`.
pub fn ssim(a: &Image, b: &Image, cfg: &MetricConfig) -> Result<f64> {
    check_sizes(a, b, cfg)?;
    let (pa, w, h) = planes(a, cfg);
    let (pb, _, _) = planes(b, cfg);
    if w < 11 || h < 11 {
        return Err(Error::ImageTooSmall(format!(
            "ssim needs at least 11x11 pixels, got {w}x{h}"
        )));
    }
    let win = gaussian_window();
    let mean = pa
        .iter()
        .zip(&pb)
        .map(|(x, y)| ssim_plane(x, y, w, h, &win))
        .sum::<f64>()
        / pa.len() as f64;
    Ok(mean)
}

fn gaussian_window() -> [f64; 11] {
    let mut g = [0f64; 11];
    for (i, v) in g.iter_mut().enumerate() {
        let d = i as f64 - 5.0;
        *v = (-d * d / (2.0 * 1.5 * 1.5)).exp();
    }
    let s: f64 = g.iter().sum();
    g.map(|v| v / s)
}

/// Separable valid filtering of `img` (w x h) with `win`: output (w-10) x (h-10).
fn filter_valid(img: &[f64], w: usize, h: usize, win: &[f64; 11]) -> Vec<f64> {
    let (ow, oh) = (w - 10, h - 10);
    let mut tmp = vec![0f64; ow * h];
    for y in 0..h {
        let row = &img[y * w..(y + 1) * w];
        for x in 0..ow {
            tmp[y * ow + x] = (0..11).map(|k| win[k] * row[x + k]).sum();
        }
    }
    let mut out = vec![0f64; ow * oh];
    for y in 0..oh {
        for x in 0..ow {
            out[y * ow + x] = (0..11).map(|k| win[k] * tmp[(y + k) * ow + x]).sum();
        }
    }
    out
}

fn ssim_plane(a: &[f64], b: &[f64], w: usize, h: usize, win: &[f64; 11]) -> f64 {
    let c1 = (0.01f64 * 255.0).powi(2);
    let c2 = (0.03f64 * 255.0).powi(2);
    let prod = |x: &[f64], y: &[f64]| -> Vec<f64> { x.iter().zip(y).map(|(u, v)| u * v).collect() };
    let mu_a = filter_valid(a, w, h, win);
    let mu_b = filter_valid(b, w, h, win);
    let aa = filter_valid(&prod(a, a), w, h, win);
    let bb = filter_valid(&prod(b, b), w, h, win);
    let ab = filter_valid(&prod(a, b), w, h, win);
    let n = mu_a.len();
    let mut sum = 0f64;
    for i in 0..n {
        let (ma, mb) = (mu_a[i], mu_b[i]);
        let (va, vb, cov) = (aa[i] - ma * ma, bb[i] - mb * mb, ab[i] - ma * mb);
        sum +=
            ((2.0 * ma * mb + c1) * (2.0 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2));
    }
    sum / n as f64
}
