//! Blur and rain degradations: the source and target domains of deblurring and deraining.

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::blur_kernel::{convolve, BlurKernel};
use crate::correlated_noise::jpeg_roundtrip;
use crate::{Error, Image, Result};

/// A value drawn uniformly from the inclusive range `r` (or `r[0]` when it is a point).
pub(crate) fn draw(r: [f32; 2], rng: &mut impl Rng) -> f32 {
    if r[1] > r[0] {
        rng.random_range(r[0]..=r[1])
    } else {
        r[0]
    }
}

pub(crate) fn ordered(name: &str, r: [f32; 2], lo: f32, hi: f32) -> Result<()> {
    if r[0].is_finite() && r[1].is_finite() && lo <= r[0] && r[0] <= r[1] && r[1] <= hi {
        Ok(())
    } else {
        Err(Error::Param(format!(
            "{name} range {r:?} must satisfy {lo} <= lo <= hi <= {hi}"
        )))
    }
}

/// Checks a JPEG quality range: `[0, 0]` (no JPEG) or `1 <= lo <= hi <= 100`.
pub(crate) fn jpeg_ok(q: [u8; 2]) -> Result<()> {
    if q[0] > q[1] || q[1] > 100 || (q[0] == 0 && q[1] != 0) {
        return Err(Error::Param(format!(
            "jpeg_quality must be [0, 0] or 1 <= lo <= hi <= 100, got {q:?}"
        )));
    }
    Ok(())
}

/// JPEG round trip at a quality drawn from `q`, or the image itself for `[0, 0]`.
pub(crate) fn maybe_jpeg(img: Image, q: [u8; 2], rng: &mut impl Rng) -> Result<Image> {
    if q[1] == 0 {
        return Ok(img);
    }
    jpeg_roundtrip(&img, rng.random_range(q[0]..=q[1]))
}

fn add_noise(mut img: Image, sigma: f32, rng: &mut impl Rng) -> Image {
    for v in img.data_mut() {
        let z: f32 = StandardNormal.sample(rng);
        *v = (*v + sigma * z).clamp(0.0, 1.0);
    }
    img
}

/// sRGB transfer function, inverse (to linear light).
pub(crate) fn to_linear(v: f32) -> f32 {
    if v <= 0.04045 {
        v / 12.92
    } else {
        ((v + 0.055) / 1.055).powf(2.4)
    }
}

/// sRGB transfer function (from linear light).
pub(crate) fn to_srgb(v: f32) -> f32 {
    let v = v.clamp(0.0, 1.0);
    if v <= 0.003_130_8 {
        12.92 * v
    } else {
        1.055 * v.powf(1.0 / 2.4) - 0.055
    }
}

/// Deblurring source domain (GoPro-like pairs): uniform blur by a random linear motion of
/// `length` pixels at a uniform random angle, plus slight Gaussian noise (8-bit units).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MotionBlurParams {
    /// Motion length range, pixels.
    pub length: [f32; 2],
    /// Noise sigma range, 8-bit units.
    pub noise: [f32; 2],
}

impl MotionBlurParams {
    /// Lengths 3-15 px, noise 0-2.
    pub fn source() -> Self {
        Self {
            length: [3.0, 15.0],
            noise: [0.0, 2.0],
        }
    }
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        ordered("length", self.length, 1.0, 64.0)?;
        ordered("noise", self.noise, 0.0, 255.0)
    }
    /// Applies the degradation.
    pub fn apply(&self, img: &Image, rng: &mut impl Rng) -> Result<Image> {
        let k = BlurKernel::linear(
            draw(self.length, rng),
            rng.random_range(0.0..std::f32::consts::PI),
        );
        Ok(add_noise(
            convolve(img, &k)?,
            draw(self.noise, rng) / 255.0,
            rng,
        ))
    }
}

/// Deblurring target domain ("shake", RealBlur-like): a random camera-shake trajectory applied
/// in linear light, where highlights (values near white) are boosted by up to `highlight_gain`
/// before the blur and clipped after it, as saturated light sources are in real photos; then
/// mild noise and JPEG.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShakeParams {
    /// Trajectory extent range, pixels.
    pub length: [f32; 2],
    /// Highlight boost range (1: no clipping).
    pub highlight_gain: [f32; 2],
    /// Noise sigma range, 8-bit units.
    pub noise: [f32; 2],
    /// JPEG quality range; `[0, 0]` for none.
    pub jpeg_quality: [u8; 2],
}

impl ShakeParams {
    /// Extents 5-17 px, highlight gain 1-3, noise 1-3, JPEG 80-95.
    pub fn target() -> Self {
        Self {
            length: [5.0, 17.0],
            highlight_gain: [1.0, 3.0],
            noise: [1.0, 3.0],
            jpeg_quality: [80, 95],
        }
    }
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        ordered("length", self.length, 1.0, 64.0)?;
        ordered("highlight_gain", self.highlight_gain, 1.0, 16.0)?;
        ordered("noise", self.noise, 0.0, 255.0)?;
        jpeg_ok(self.jpeg_quality)
    }
    /// Applies the degradation.
    pub fn apply(&self, img: &Image, rng: &mut impl Rng) -> Result<Image> {
        let gain = draw(self.highlight_gain, rng);
        let lin = img.clone().map(|v| {
            let l = to_linear(v.clamp(0.0, 1.0));
            let t = ((l - 0.8) / 0.2).clamp(0.0, 1.0);
            l * (1.0 + (gain - 1.0) * t * t * (3.0 - 2.0 * t))
        });
        let k = BlurKernel::shake(draw(self.length, rng), rng);
        let blurred = convolve(&lin, &k)?.map(to_srgb);
        let noisy = add_noise(blurred, draw(self.noise, rng) / 255.0, rng);
        maybe_jpeg(noisy, self.jpeg_quality, rng)
    }
}

/// One layer of rain streaks: sparse random drops smeared along a direction.
fn streak_layer(
    w: usize,
    h: usize,
    density: f32,
    length: f32,
    angle_deg: f32,
    width: f32,
    rng: &mut impl Rng,
) -> Result<Vec<f32>> {
    let n = ((w * h) as f32 * density / 1000.0).round() as usize;
    let mut drops = vec![0f32; w * h];
    for _ in 0..n {
        let i = rng.random_range(0..w * h);
        drops[i] = rng.random_range(0.5f32..1.0);
    }
    // Direction measured from vertical; the kernel is a line, thickened by `width`.
    let a = (90.0 + angle_deg).to_radians();
    let mut k = BlurKernel::linear(length, a);
    if width > 1.0 {
        let perp = a + std::f32::consts::FRAC_PI_2;
        let (ox, oy) = (
            0.5 * (width - 1.0) * perp.cos(),
            0.5 * (width - 1.0) * perp.sin(),
        );
        let (dx, dy) = (0.5 * length * a.cos(), 0.5 * length * a.sin());
        k = BlurKernel::from_path(&[
            (-dx - ox, -dy - oy),
            (dx - ox, dy - oy),
            (dx + ox, dy + oy),
            (-dx + ox, -dy + oy),
        ]);
    }
    let plane = Image::from_planar(
        w,
        h,
        drops.iter().cloned().cycle().take(3 * w * h).collect(),
    )?;
    let smeared = convolve(&plane, &k)?;
    // The kernel spreads each drop over ~length pixels; rescale so a streak peaks near 1.
    let gain = length.max(1.0) * 0.5;
    Ok(smeared
        .plane(0)
        .iter()
        .map(|v| (v * gain).min(1.0))
        .collect())
}

/// Deraining source domain (Rain100/Rain13K-like): one layer of additive white streaks.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RainParams {
    /// Drops per 1000 pixels.
    pub density: [f32; 2],
    /// Streak length, pixels.
    pub length: [f32; 2],
    /// Angle from vertical, degrees.
    pub angle: [f32; 2],
    /// Streak brightness.
    pub intensity: [f32; 2],
}

impl RainParams {
    /// Density 2-8 per 1000 px, length 8-24 px, angle -20..20 degrees, intensity 0.3-0.7.
    pub fn source() -> Self {
        Self {
            density: [2.0, 8.0],
            length: [8.0, 24.0],
            angle: [-20.0, 20.0],
            intensity: [0.3, 0.7],
        }
    }
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        ordered("density", self.density, 0.0, 100.0)?;
        ordered("length", self.length, 1.0, 64.0)?;
        ordered("angle", self.angle, -80.0, 80.0)?;
        ordered("intensity", self.intensity, 0.0, 1.0)
    }
    /// Applies the degradation: `clamp(img + intensity * streaks)`, so rain only brightens.
    pub fn apply(&self, img: &Image, rng: &mut impl Rng) -> Result<Image> {
        let (w, h) = (img.width(), img.height());
        let layer = streak_layer(
            w,
            h,
            draw(self.density, rng),
            draw(self.length, rng),
            draw(self.angle, rng),
            1.0,
            rng,
        )?;
        let s = draw(self.intensity, rng);
        let mut out = img.clone();
        for c in 0..3 {
            for (v, r) in out.data_mut()[c * w * h..(c + 1) * w * h]
                .iter_mut()
                .zip(&layer)
            {
                *v = (*v + s * r).min(1.0);
            }
        }
        Ok(out)
    }
}

/// Deraining target domain ("storm", SPA-like): 2-4 streak layers at different depths (far
/// layers shorter, thinner, fainter), a shared wind angle with per-layer jitter, a veiling
/// haze `img * (1 - a) + a * airlight`, then JPEG.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StormParams {
    /// Number of layers (inclusive range).
    pub layers: [u8; 2],
    /// Drops per 1000 pixels of the nearest layer.
    pub density: [f32; 2],
    /// Streak length of the nearest layer, pixels.
    pub length: [f32; 2],
    /// Wind angle from vertical, degrees.
    pub angle: [f32; 2],
    /// Haze amount `a`.
    pub haze: [f32; 2],
    /// JPEG quality range; `[0, 0]` for none.
    pub jpeg_quality: [u8; 2],
}

impl StormParams {
    /// 2-4 layers, density 3-10, length 15-40 px, angle -30..30, haze 0.05-0.25, JPEG 75-95.
    pub fn target() -> Self {
        Self {
            layers: [2, 4],
            density: [3.0, 10.0],
            length: [15.0, 40.0],
            angle: [-30.0, 30.0],
            haze: [0.05, 0.25],
            jpeg_quality: [75, 95],
        }
    }
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        if self.layers[0] == 0 || self.layers[0] > self.layers[1] || self.layers[1] > 8 {
            return Err(Error::Param(format!(
                "layers {:?} must satisfy 1 <= lo <= hi <= 8",
                self.layers
            )));
        }
        ordered("density", self.density, 0.0, 100.0)?;
        ordered("length", self.length, 1.0, 64.0)?;
        ordered("angle", self.angle, -80.0, 80.0)?;
        ordered("haze", self.haze, 0.0, 0.9)?;
        jpeg_ok(self.jpeg_quality)
    }
    /// Applies the degradation.
    pub fn apply(&self, img: &Image, rng: &mut impl Rng) -> Result<Image> {
        let (w, h) = (img.width(), img.height());
        let n_layers = rng.random_range(self.layers[0]..=self.layers[1]);
        let wind = draw(self.angle, rng);
        let (density, length) = (draw(self.density, rng), draw(self.length, rng));
        let mut rain = vec![0f32; w * h];
        for l in 0..n_layers {
            let depth = 1.0 / (1.0 + l as f32); // 1, 1/2, 1/3, ...
            let width = if l == 0 { 2.0 } else { 1.0 };
            let layer = streak_layer(
                w,
                h,
                density * (1.0 + l as f32),
                (length * depth).max(2.0),
                wind + rng.random_range(-5.0..5.0),
                width,
                rng,
            )?;
            let s = rng.random_range(0.25f32..0.6) * depth.sqrt();
            rain.iter_mut().zip(&layer).for_each(|(r, v)| *r += s * v);
        }
        let a = draw(self.haze, rng);
        let airlight = rng.random_range(0.75f32..0.95);
        let mut out = img.clone();
        for c in 0..3 {
            for (v, r) in out.data_mut()[c * w * h..(c + 1) * w * h]
                .iter_mut()
                .zip(&rain)
            {
                *v = (*v * (1.0 - a) + a * airlight + r).clamp(0.0, 1.0);
            }
        }
        maybe_jpeg(out, self.jpeg_quality, rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn photo() -> Image {
        let (w, h) = (40, 32);
        let data = (0..3 * w * h)
            .map(|i| ((i * 37) % 200) as f32 / 255.0 + 0.1)
            .collect();
        Image::from_planar(w, h, data).unwrap_or_else(|_| Image::filled(1, 1, [0.0; 3]))
    }

    #[test]
    fn kernels_sum_to_one() {
        let mut rng = crate::sample_rng(0, 0, 0);
        for k in [
            BlurKernel::linear(9.0, 0.3),
            BlurKernel::linear(1.0, 0.0),
            BlurKernel::shake(15.0, &mut rng),
        ] {
            let s: f32 = k.weights().iter().sum();
            assert!((s - 1.0).abs() < 1e-5, "{s}");
            assert!(k.weights().iter().all(|w| *w >= 0.0));
            assert_eq!(k.size() % 2, 1);
        }
    }

    #[test]
    fn blur_keeps_a_flat_image_flat() -> Result<()> {
        let flat = Image::filled(20, 16, [0.3, 0.5, 0.7]);
        let out = convolve(&flat, &BlurKernel::linear(7.0, 1.0))?;
        assert!(out
            .data()
            .iter()
            .zip(flat.data())
            .all(|(a, b)| (a - b).abs() < 1e-5));
        Ok(())
    }

    #[test]
    fn source_rain_only_brightens_and_seeds_reproduce() -> Result<()> {
        let img = photo();
        let p = RainParams::source();
        let a = p.apply(&img, &mut crate::sample_rng(1, 0, 0))?;
        let b = p.apply(&img, &mut crate::sample_rng(1, 0, 0))?;
        assert_eq!(a, b);
        assert!(a
            .data()
            .iter()
            .zip(img.data())
            .all(|(r, c)| *r >= *c - 1e-6));
        assert!(
            a.data().iter().zip(img.data()).any(|(r, c)| *r > *c + 0.05),
            "some streaks"
        );
        for (name, out) in [
            (
                "motion",
                MotionBlurParams::source().apply(&img, &mut crate::sample_rng(2, 0, 0))?,
            ),
            (
                "shake",
                ShakeParams::target().apply(&img, &mut crate::sample_rng(2, 0, 0))?,
            ),
            (
                "storm",
                StormParams::target().apply(&img, &mut crate::sample_rng(2, 0, 0))?,
            ),
        ] {
            assert_eq!((out.width(), out.height()), (40, 32), "{name}");
            assert_ne!(out, img, "{name}");
        }
        assert!(RainParams {
            angle: [30.0, 10.0],
            ..p
        }
        .validate()
        .is_err());
        Ok(())
    }
}
