//! Rain degradations: the source and target domains of deraining.

use rand::Rng;

use crate::blur_kernel::{convolve, BlurKernel};
use crate::jpeg::{jpeg_ok, maybe_jpeg};
use crate::ranges::{draw, ordered};
use crate::{Error, Image, Result};

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
        let storm = StormParams::target().apply(&img, &mut crate::sample_rng(2, 0, 0))?;
        assert_eq!((storm.width(), storm.height()), (40, 32));
        assert_ne!(storm, img);
        assert!(RainParams {
            angle: [30.0, 10.0],
            ..p
        }
        .validate()
        .is_err());
        Ok(())
    }
}
