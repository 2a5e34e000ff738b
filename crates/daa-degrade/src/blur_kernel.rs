//! Blur kernels (linear motion, camera-shake trajectories) and convolution with them, and the
//! separable Gaussian blur of one plane.

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::transforms::reflect;
use crate::{Error, Image, Result};

/// A normalised 2-D blur kernel: odd side, non-negative weights summing to one.
#[derive(Debug, Clone, PartialEq)]
pub struct BlurKernel {
    size: usize,
    weights: Vec<f32>,
}

impl BlurKernel {
    /// Kernel side (odd).
    pub fn size(&self) -> usize {
        self.size
    }
    /// Row-major weights.
    pub fn weights(&self) -> &[f32] {
        &self.weights
    }

    /// Rasterises a polyline (points relative to the kernel centre, in pixels) by splatting
    /// densely sampled points bilinearly, then normalises.
    pub fn from_path(points: &[(f32, f32)]) -> Self {
        let reach = points
            .iter()
            .fold(0f32, |m, (x, y)| m.max(x.abs()).max(y.abs()));
        let half = reach.ceil() as usize + 1;
        let size = 2 * half + 1;
        let mut w = vec![0f32; size * size];
        let mut splat = |x: f32, y: f32| {
            let (fx, fy) = (x + half as f32, y + half as f32);
            let (x0, y0) = (fx.floor(), fy.floor());
            let (ax, ay) = (fx - x0, fy - y0);
            for (dx, wx) in [(0usize, 1.0 - ax), (1, ax)] {
                for (dy, wy) in [(0usize, 1.0 - ay), (1, ay)] {
                    let (xi, yi) = (x0 as usize + dx, y0 as usize + dy);
                    if xi < size && yi < size {
                        w[yi * size + xi] += wx * wy;
                    }
                }
            }
        };
        if points.len() == 1 {
            splat(points[0].0, points[0].1);
        }
        for seg in points.windows(2) {
            let (a, b) = (seg[0], seg[1]);
            let len = ((b.0 - a.0).powi(2) + (b.1 - a.1).powi(2)).sqrt();
            let n = (len * 4.0).ceil().max(1.0) as usize;
            for i in 0..n {
                let t = i as f32 / n as f32;
                splat(a.0 + t * (b.0 - a.0), a.1 + t * (b.1 - a.1));
            }
        }
        if let Some(last) = points.last() {
            splat(last.0, last.1);
        }
        let s: f32 = w.iter().sum();
        if s > 0.0 {
            w.iter_mut().for_each(|v| *v /= s);
        } else {
            w[half * size + half] = 1.0;
        }
        Self { size, weights: w }
    }

    /// A straight motion of `length` pixels at `angle` radians, centred.
    pub fn linear(length: f32, angle: f32) -> Self {
        let (dx, dy) = (0.5 * length * angle.cos(), 0.5 * length * angle.sin());
        Self::from_path(&[(-dx, -dy), (dx, dy)])
    }

    /// A random camera-shake trajectory: a random walk with momentum and occasional jerks
    /// (after Boracchi & Foi's model), scaled so its extent is about `length` pixels.
    pub fn shake(length: f32, rng: &mut impl Rng) -> Self {
        let steps = 64;
        let (mut x, mut y) = (0f32, 0f32);
        let angle = rng.random_range(0.0..std::f32::consts::TAU);
        let (mut vx, mut vy) = (angle.cos(), angle.sin());
        let mut pts = Vec::with_capacity(steps);
        for _ in 0..steps {
            let (gx, gy): (f32, f32) = (StandardNormal.sample(rng), StandardNormal.sample(rng));
            vx = 0.8 * vx + 0.35 * gx;
            vy = 0.8 * vy + 0.35 * gy;
            if rng.random::<f32>() < 0.05 {
                vx *= -1.5;
                vy *= 1.5;
            }
            x += vx;
            y += vy;
            pts.push((x, y));
        }
        let (mx, my) = (
            pts.iter().map(|p| p.0).sum::<f32>() / steps as f32,
            pts.iter().map(|p| p.1).sum::<f32>() / steps as f32,
        );
        let extent = pts.iter().fold(1e-3f32, |m, p| {
            m.max((p.0 - mx).abs()).max((p.1 - my).abs())
        });
        let s = 0.5 * length / extent;
        let pts: Vec<(f32, f32)> = pts
            .iter()
            .map(|p| ((p.0 - mx) * s, (p.1 - my) * s))
            .collect();
        Self::from_path(&pts)
    }
}

/// Convolves every channel with `k` (reflect borders); the image keeps its size.
pub fn convolve(img: &Image, k: &BlurKernel) -> Result<Image> {
    let (w, h, ks) = (img.width(), img.height(), k.size());
    let half = (ks / 2) as isize;
    let taps: Vec<(isize, isize, f32)> = (0..ks * ks)
        .filter(|&i| k.weights()[i] > 0.0)
        .map(|i| {
            (
                (i % ks) as isize - half,
                (i / ks) as isize - half,
                k.weights()[i],
            )
        })
        .collect();
    let mut out = vec![0f32; 3 * w * h];
    for c in 0..3 {
        let plane = img.plane(c);
        for y in 0..h {
            for x in 0..w {
                let mut s = 0f32;
                for &(dx, dy, wt) in &taps {
                    // Convolution: the kernel is flipped relative to the image offsets.
                    s += wt * plane[reflect(y as isize - dy, h) * w + reflect(x as isize - dx, w)];
                }
                out[c * w * h + y * w + x] = s;
            }
        }
    }
    Image::from_planar(w, h, out).map_err(|e| Error::Param(format!("convolve: {e}")))
}

/// The unnormalised Gaussian `exp(-i^2 / (2 sigma^2))` for `i` in `-r..=r`, `r = ceil(3 sigma)`.
pub(crate) fn gaussian_kernel(sigma: f32) -> Vec<f32> {
    let radius = (3.0 * sigma).ceil() as isize;
    (-radius..=radius)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect()
}

/// Convolves a `w x h` plane with the odd-length kernel `k` along rows, then columns, with
/// reflected borders, dividing each pass's sums by `div`.
pub(crate) fn separable_blur(x: &[f32], w: usize, h: usize, k: &[f32], div: f32) -> Vec<f32> {
    let radius = (k.len() / 2) as isize;
    let refl = |i: isize, n: usize| -> usize {
        let n = n as isize;
        let m = i.rem_euclid(2 * n);
        (if m < n { m } else { 2 * n - 1 - m }) as usize
    };
    let mut tmp = vec![0f32; w * h];
    for y in 0..h {
        for xx in 0..w {
            let mut s = 0.0;
            for (j, kv) in k.iter().enumerate() {
                s += kv * x[y * w + refl(xx as isize + j as isize - radius, w)];
            }
            tmp[y * w + xx] = s / div;
        }
    }
    let mut out = vec![0f32; w * h];
    for y in 0..h {
        for xx in 0..w {
            let mut s = 0.0;
            for (j, kv) in k.iter().enumerate() {
                s += kv * tmp[refl(y as isize + j as isize - radius, h) * w + xx];
            }
            out[y * w + xx] = s / div;
        }
    }
    out
}
