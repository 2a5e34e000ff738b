//! The denoising target domain: sensor noise through a camera pipeline.
//!
//! An sRGB photo is "unprocessed" to a linear camera raw image (inverse sRGB curve, inverse
//! brightness gain, inverse colour matrix, inverse white balance, Bayer mosaic), given
//! Poisson-Gaussian shot and read noise there, and processed again the way a camera does it
//! (bilinear demosaic, white balance, colour matrix, brightness gain, sRGB curve, JPEG). The
//! noise that comes out is signal dependent, spatially correlated (demosaicing spreads each
//! raw sample over its neighbours) and correlated across channels (the colour matrix mixes
//! them), as in SIDD's sRGB images. The idea follows Brooks et al., "Unprocessing Images for
//! Learned Raw Denoising" (CVPR 2019); the parameter ranges are ours and documented below.

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::blur_kernel::{gaussian_kernel, separable_blur};
use crate::jpeg::{jpeg_ok, maybe_jpeg};
use crate::ranges::{draw, ordered};
use crate::srgb::{to_linear, to_srgb};
use crate::{Error, Image, Result};

/// Parameters of the camera pipeline ([`camera_noise`]).
///
/// Per image: a shot-noise gain `shot` drawn log-uniformly from `shot`; a read-noise variance
/// `read = exp(2.18 ln(shot) + 1.2 + N(0, read_jitter^2))` (the relation Brooks et al. fit
/// to real sensors); a brightness gain from `brightness`; white-balance gains from `red_gain`
/// and `blue_gain` (green is 1); an RGB-to-camera matrix `I + E` with off-diagonal entries of
/// `E` uniform in `[0, color_mix]`, rows normalised to sum to 1 (a grey stays grey); a random
/// Bayer phase (RGGB, GRBG, GBRG or BGGR); a JPEG quality from `jpeg_quality`.
/// In raw space (values in `[0, 1]`) a sample `v` becomes `v + sqrt(read + shot * v) * z`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraParams {
    /// Shot-noise gain range (variance per unit raw signal), drawn log-uniformly.
    pub shot: [f32; 2],
    /// Standard deviation of the log-normal jitter of the read noise around its fitted value.
    pub read_jitter: f32,
    /// Digital brightness gain range: the raw image is this many times darker than the photo.
    pub brightness: [f32; 2],
    /// Red white-balance gain range.
    pub red_gain: [f32; 2],
    /// Blue white-balance gain range.
    pub blue_gain: [f32; 2],
    /// Largest off-diagonal weight of the RGB-to-camera matrix (0: camera RGB = linear sRGB).
    pub color_mix: f32,
    /// Range of the Gaussian sigma (pixels) of the camera's chroma noise reduction: the
    /// chroma (YCbCr) of the processed image is blurred, which turns chroma noise into the
    /// low-frequency colour blotches of phone photos. `[0, 0]` disables it.
    #[serde(default)]
    pub chroma_blur: [f32; 2],
    /// JPEG quality range (inclusive); `[0, 0]` for no JPEG.
    pub jpeg_quality: [u8; 2],
}

impl CameraParams {
    /// The denoising presets' target domain: shot 2e-3..3e-2 (log-uniform), read jitter 0.26,
    /// brightness 1.0..1.4, red gain 1.9..2.4, blue gain 1.5..1.9, colour mix 0.3, chroma
    /// noise reduction sigma 1..2 px, JPEG quality 85..95. On the held-out photos that is an
    /// input PSNR of about 31 dB at the lowest shot noise and 19 dB at the highest (SIDD's
    /// validation inputs average about 24 dB).
    pub fn camera() -> Self {
        Self {
            shot: [2e-3, 3e-2],
            read_jitter: 0.26,
            brightness: [1.0, 1.4],
            red_gain: [1.9, 2.4],
            blue_gain: [1.5, 1.9],
            color_mix: 0.3,
            chroma_blur: [CHROMA_BLUR_MIN, CHROMA_BLUR_MAX],
            jpeg_quality: [85, 95],
        }
    }

    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        ordered("camera shot", self.shot, 1e-7, 1.0)?;
        ordered("camera brightness", self.brightness, 0.1, 10.0)?;
        ordered("camera red_gain", self.red_gain, 0.1, 10.0)?;
        ordered("camera blue_gain", self.blue_gain, 0.1, 10.0)?;
        ordered("camera chroma_blur", self.chroma_blur, 0.0, 5.0)?;
        if !(0.0..=2.0).contains(&self.read_jitter) || !(0.0..=0.5).contains(&self.color_mix) {
            return Err(Error::Param(format!(
                "camera read_jitter must be in [0, 2] and color_mix in [0, 0.5]: {self:?}"
            )));
        }
        jpeg_ok(self.jpeg_quality)
    }
}

/// A draw of the per-image quantities of [`CameraParams`].
#[derive(Debug, Clone)]
struct CameraDraw {
    shot: f32,
    read: f32,
    brightness: f32,
    wb: [f32; 3],
    rgb2cam: [[f32; 3]; 3],
    cam2rgb: [[f32; 3]; 3],
    /// Bayer phase: the colour of pixel (y, x) is `cfa[(y + dy) % 2][(x + dx) % 2]` of RGGB.
    dy: usize,
    dx: usize,
}

fn log_uniform(r: [f32; 2], rng: &mut impl Rng) -> f32 {
    draw([r[0].ln(), r[1].ln()], rng).exp()
}

fn invert3(m: &[[f32; 3]; 3]) -> Result<[[f32; 3]; 3]> {
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    if det.abs() < 1e-6 {
        return Err(Error::Param("singular camera colour matrix".into()));
    }
    let mut inv = [[0f32; 3]; 3];
    for (i, row) in inv.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            // Cofactor of (j, i), i.e. the adjugate's (i, j).
            let rows: Vec<usize> = (0..3).filter(|&k| k != j).collect();
            let cols: Vec<usize> = (0..3).filter(|&k| k != i).collect();
            let minor = m[rows[0]][cols[0]] * m[rows[1]][cols[1]]
                - m[rows[0]][cols[1]] * m[rows[1]][cols[0]];
            let sign = if (i + j) % 2 == 0 { 1.0 } else { -1.0 };
            *v = sign * minor / det;
        }
    }
    Ok(inv)
}

impl CameraParams {
    fn draw(&self, rng: &mut impl Rng) -> Result<CameraDraw> {
        let shot = log_uniform(self.shot, rng);
        let jitter: f32 = StandardNormal.sample(rng);
        let read = (2.18 * shot.ln() + 1.2 + self.read_jitter * jitter).exp();
        let brightness = draw(self.brightness, rng);
        let wb = [draw(self.red_gain, rng), 1.0, draw(self.blue_gain, rng)];
        let mut rgb2cam = [[0f32; 3]; 3];
        for (i, row) in rgb2cam.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = if i == j {
                    1.0
                } else {
                    draw([0.0, self.color_mix], rng)
                };
            }
            let s: f32 = row.iter().sum();
            row.iter_mut().for_each(|v| *v /= s);
        }
        let cam2rgb = invert3(&rgb2cam)?;
        let (dy, dx) = (rng.random_range(0..2usize), rng.random_range(0..2usize));
        Ok(CameraDraw {
            shot,
            read,
            brightness,
            wb,
            rgb2cam,
            cam2rgb,
            dy,
            dx,
        })
    }
}

/// RGGB: colour index of Bayer cell (y % 2, x % 2).
const RGGB: [[usize; 2]; 2] = [[0, 1], [1, 2]];

/// Bilinear demosaic of a one-plane Bayer image by normalised convolution: each missing
/// colour is the weighted mean of the 3x3 neighbours that carry it (weights 2 on the cross,
/// 1 on the diagonals), which is the classic bilinear interpolation inside the image and
/// stays defined at its borders.
fn demosaic(raw: &[f32], w: usize, h: usize, color: impl Fn(usize, usize) -> usize) -> Vec<f32> {
    let n = w * h;
    let mut out = vec![0f32; 3 * n];
    for y in 0..h {
        for x in 0..w {
            let own = color(y, x);
            let mut sum = [0f32; 3];
            let mut wsum = [0f32; 3];
            for dy in -1isize..=1 {
                for dx in -1isize..=1 {
                    let (yy, xx) = (y as isize + dy, x as isize + dx);
                    if yy < 0 || xx < 0 || yy >= h as isize || xx >= w as isize {
                        continue;
                    }
                    let (yy, xx) = (yy as usize, xx as usize);
                    let c = color(yy, xx);
                    let wt = match (dy, dx) {
                        (0, 0) => 4.0,
                        (0, _) | (_, 0) => 2.0,
                        _ => 1.0,
                    };
                    sum[c] += wt * raw[yy * w + xx];
                    wsum[c] += wt;
                }
            }
            for c in 0..3 {
                out[c * n + y * w + x] = if c == own {
                    raw[y * w + x]
                } else if wsum[c] > 0.0 {
                    sum[c] / wsum[c]
                } else {
                    0.0
                };
            }
        }
    }
    out
}

/// Applies [`CameraParams`] to `img`: unprocess to raw, add Poisson-Gaussian noise, process.
///
/// The noise is transferred: the raw image is processed twice, with and without the noise, and
/// the difference (the noise as the camera pipeline shapes it) is added to the photo. So the
/// photo's content is untouched and the degradation is the camera noise alone, as in a SIDD pair,
/// whose ground truth went through the same pipeline. (Processing the photo itself would add the
/// artefacts of bilinear demosaicing, which at these image scales cost more PSNR than the noise.)
pub fn camera_noise(img: &Image, p: &CameraParams, rng: &mut impl Rng) -> Result<Image> {
    let d = p.draw(rng)?;
    let (w, h) = (img.width(), img.height());
    let n = w * h;
    let src = img.data();
    let color = |y: usize, x: usize| RGGB[(y + d.dy) % 2][(x + d.dx) % 2];
    // Unprocess and mosaic: one raw sample per pixel, with and without noise.
    let mut clean_raw = vec![0f32; n];
    let mut noisy_raw = vec![0f32; n];
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let lin = [0, 1, 2].map(|c| to_linear(src[c * n + i].clamp(0.0, 1.0)) / d.brightness);
            let c = color(y, x);
            let m = d.rgb2cam[c];
            let cam = m[0] * lin[0] + m[1] * lin[1] + m[2] * lin[2];
            let v = (cam / d.wb[c]).clamp(0.0, 1.0);
            let z: f32 = StandardNormal.sample(rng);
            clean_raw[i] = v;
            noisy_raw[i] = v + (d.read + d.shot * v).sqrt() * z;
        }
    }
    // Process: demosaic, white balance, colour matrix, brightness, sRGB curve.
    let process = |raw: &[f32]| {
        let cam = demosaic(raw, w, h, color);
        let mut out = vec![0f32; 3 * n];
        for i in 0..n {
            let balanced = [0, 1, 2].map(|c| (cam[c * n + i] * d.wb[c]).clamp(0.0, 1.0));
            for c in 0..3 {
                let m = d.cam2rgb[c];
                let lin = m[0] * balanced[0] + m[1] * balanced[1] + m[2] * balanced[2];
                out[c * n + i] = to_srgb(lin * d.brightness);
            }
        }
        out
    };
    let (noisy, clean) = (process(&noisy_raw), process(&clean_raw));
    let mut noise: Vec<f32> = noisy.iter().zip(&clean).map(|(a, b)| a - b).collect();
    let sigma = draw(p.chroma_blur, rng);
    if sigma > 0.0 {
        blur_chroma(&mut noise, w, h, sigma);
    }
    let out = src
        .iter()
        .zip(&noise)
        .map(|(v, e)| (v + e).clamp(0.0, 1.0))
        .collect();
    maybe_jpeg(Image::from_planar(w, h, out)?, p.jpeg_quality, rng)
}

const CHROMA_BLUR_MIN: f32 = 1.0;
const CHROMA_BLUR_MAX: f32 = 2.0;

/// Blurs the BT.601 chroma of a planar RGB noise field with a Gaussian of `sigma` pixels
/// (reflected borders), keeping its luma: a camera's chroma noise reduction.
fn blur_chroma(img: &mut [f32], w: usize, h: usize, sigma: f32) {
    let n = w * h;
    let (mut cb, mut cr) = (vec![0f32; n], vec![0f32; n]);
    let mut y = vec![0f32; n];
    for i in 0..n {
        let (r, g, b) = (img[i], img[n + i], img[2 * n + i]);
        y[i] = 0.299 * r + 0.587 * g + 0.114 * b;
        cb[i] = b - y[i];
        cr[i] = r - y[i];
    }
    let cb = gaussian_blur(&cb, w, h, sigma);
    let cr = gaussian_blur(&cr, w, h, sigma);
    for i in 0..n {
        let r = y[i] + cr[i];
        let b = y[i] + cb[i];
        img[i] = r;
        img[n + i] = (y[i] - 0.299 * r - 0.114 * b) / 0.587;
        img[2 * n + i] = b;
    }
}

/// Gaussian blur of one plane (kernel normalised to sum 1, reflected borders).
fn gaussian_blur(x: &[f32], w: usize, h: usize, sigma: f32) -> Vec<f32> {
    let mut k = gaussian_kernel(sigma);
    let sum: f32 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= sum);
    separable_blur(x, w, h, &k, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet() -> CameraParams {
        CameraParams {
            shot: [1e-7, 1e-7],
            read_jitter: 0.0,
            jpeg_quality: [0, 0],
            ..CameraParams::camera()
        }
    }

    /// Noise residual of plane `c` for a flat image at `level`, in linear light.
    fn linear_residual(level: f32, p: &CameraParams, seed: u64, c: usize) -> Vec<f32> {
        let img = Image::filled(96, 96, [level; 3]);
        let out = camera_noise(&img, p, &mut crate::sample_rng(seed, 0, 0))
            .unwrap_or_else(|_| img.clone());
        let mean = out.plane(c).iter().map(|&v| to_linear(v)).sum::<f32>() / (96.0 * 96.0);
        out.plane(c).iter().map(|&v| to_linear(v) - mean).collect()
    }

    fn var(d: &[f32]) -> f32 {
        d.iter().map(|v| v * v).sum::<f32>() / d.len() as f32
    }

    #[test]
    fn without_noise_the_pipeline_returns_the_photo() {
        // Noise transfer: without noise the photo comes back unchanged.
        let (w, h) = (40, 30);
        let mut data = vec![0f32; 3 * w * h];
        for y in 0..h {
            for x in 0..w {
                data[y * w + x] = 0.2 + 0.6 * x as f32 / w as f32;
                data[w * h + y * w + x] = 0.3 + 0.4 * y as f32 / h as f32;
                data[2 * w * h + y * w + x] = 0.5;
            }
        }
        let img = Image::from_planar(w, h, data).unwrap_or_else(|_| Image::filled(1, 1, [0.0; 3]));
        let out = camera_noise(&img, &quiet(), &mut crate::sample_rng(1, 0, 0))
            .unwrap_or_else(|_| Image::filled(w, h, [0.0; 3]));
        let err = img
            .data()
            .iter()
            .zip(out.data())
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 0.01, "max error {err}");
        // A detailed photo too: without the noise transfer, bilinear demosaicing alone cost
        // it 10 dB.
        let root = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../datasets/photos/test/monarch.png"
        );
        let photo = crate::load_image(root).unwrap_or_else(|e| panic!("{e}"));
        let out = camera_noise(&photo, &quiet(), &mut crate::sample_rng(1, 0, 0))
            .unwrap_or_else(|e| panic!("{e}"));
        let mse = photo
            .data()
            .iter()
            .zip(out.data())
            .map(|(a, b)| f64::from((a - b) * (a - b)))
            .sum::<f64>()
            / photo.data().len() as f64;
        assert!(-10.0 * mse.log10() > 45.0, "PSNR {}", -10.0 * mse.log10());
    }

    #[test]
    fn noise_grows_with_signal_in_linear_light() {
        let p = CameraParams {
            shot: [4e-3, 4e-3],
            read_jitter: 0.0,
            jpeg_quality: [0, 0],
            ..CameraParams::camera()
        };
        let dark = var(&linear_residual(0.2, &p, 5, 1));
        let bright = var(&linear_residual(0.7, &p, 5, 1));
        assert!(bright > 3.0 * dark, "dark {dark} bright {bright}");
    }

    #[test]
    fn noise_is_spatially_and_channel_correlated() {
        let p = CameraParams {
            jpeg_quality: [0, 0],
            shot: [4e-3, 4e-3],
            ..CameraParams::camera()
        };
        let r = linear_residual(0.5, &p, 9, 0);
        let g = linear_residual(0.5, &p, 9, 1);
        let neighbour = {
            let mut cov = 0.0;
            for y in 0..96 {
                for x in 0..95 {
                    cov += g[y * 96 + x] * g[y * 96 + x + 1];
                }
            }
            cov / (96.0 * 95.0) / var(&g)
        };
        let cross = r.iter().zip(&g).map(|(a, b)| a * b).sum::<f32>()
            / r.len() as f32
            / (var(&r) * var(&g)).sqrt();
        assert!(neighbour > 0.2, "neighbour correlation {neighbour}");
        assert!(cross.abs() > 0.1, "cross-channel correlation {cross}");
    }

    #[test]
    fn same_seed_same_image_and_bad_ranges_refused() {
        let img = Image::filled(24, 16, [0.4, 0.5, 0.6]);
        let p = CameraParams::camera();
        let a = camera_noise(&img, &p, &mut crate::sample_rng(3, 0, 1)).ok();
        let b = camera_noise(&img, &p, &mut crate::sample_rng(3, 0, 1)).ok();
        let c = camera_noise(&img, &p, &mut crate::sample_rng(4, 0, 1)).ok();
        assert!(a.is_some());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a.as_ref(), Some(&img));
        for bad in [
            CameraParams {
                shot: [0.01, 0.001],
                ..p.clone()
            },
            CameraParams {
                color_mix: 0.9,
                ..p.clone()
            },
            CameraParams {
                jpeg_quality: [0, 50],
                ..p.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn colour_matrix_inverse_is_exact() {
        let Ok(d) = CameraParams::camera().draw(&mut crate::sample_rng(0, 0, 0)) else {
            panic!("draw failed");
        };
        for i in 0..3 {
            for j in 0..3 {
                let v: f32 = (0..3).map(|k| d.cam2rgb[i][k] * d.rgb2cam[k][j]).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((v - want).abs() < 1e-5, "{i}{j} {v}");
            }
        }
    }
}
