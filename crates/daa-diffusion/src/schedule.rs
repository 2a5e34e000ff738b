//! The noise schedule and forward noising (`q_sample`) with continuous noise levels.

use candle_core::{Result, Tensor};
use rand::Rng;

/// A DDPM variance schedule: `beta` and the cumulative products `alpha_bar = cumprod(1 - beta)`,
/// computed once on the CPU in `f64`.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSchedule {
    betas: Vec<f64>,
    alpha_bars: Vec<f64>,
}

impl NoiseSchedule {
    /// `beta = linspace(start, end, n)` (both ends included).
    pub fn linear(n: usize, start: f64, end: f64) -> Result<Self> {
        if n < 2 || !(0.0 < start && start <= end && end < 1.0) {
            candle_core::bail!("NoiseSchedule::linear: need n >= 2 and 0 < start <= end < 1, got {n}, {start}, {end}");
        }
        let betas: Vec<f64> = (0..n)
            .map(|i| start + (end - start) * i as f64 / (n - 1) as f64)
            .collect();
        Ok(Self::from_betas(betas))
    }

    /// The paper's schedule: 1000 steps, beta linear from 1e-6 to 1e-2.
    pub fn paper() -> Self {
        let betas: Vec<f64> = (0..1000)
            .map(|i| 1e-6 + (1e-2 - 1e-6) * i as f64 / 999.0)
            .collect();
        Self::from_betas(betas)
    }

    fn from_betas(betas: Vec<f64>) -> Self {
        let mut acc = 1.0;
        let alpha_bars = betas
            .iter()
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect();
        Self { betas, alpha_bars }
    }

    /// Number of steps.
    pub fn len(&self) -> usize {
        self.betas.len()
    }

    /// Always false (a schedule has at least two steps).
    pub fn is_empty(&self) -> bool {
        self.betas.is_empty()
    }

    /// `beta[t]`.
    pub fn beta(&self, t: usize) -> f64 {
        self.betas[t]
    }

    /// `alpha_bar[t]` (indexed from 0).
    pub fn alpha_bar(&self, t: usize) -> f64 {
        self.alpha_bars[t]
    }

    /// Draws `t ~ UniformInt[t_min, t_max]` (inclusive, clamped to `1..len-1`) and a continuous
    /// noise level `gamma ~ Uniform(alpha_bar[t], alpha_bar[t-1])`. Returns `(t, gamma)`.
    pub fn sample_gamma(&self, t_min: usize, t_max: usize, rng: &mut impl Rng) -> (usize, f64) {
        let hi = t_max.min(self.len() - 1);
        let lo = t_min.clamp(1, hi);
        let t = rng.random_range(lo..=hi);
        let (a, b) = (self.alpha_bars[t], self.alpha_bars[t - 1]);
        let u: f64 = rng.random();
        (t, a + (b - a) * u)
    }
}

/// Forward noising: `sqrt(gamma) * y0 + sqrt(1 - gamma) * eps`, with `gamma` of shape `(B,)`
/// (one level per sample) and `y0`, `eps` of shape `(B, ...)`.
pub fn q_sample(y0: &Tensor, gamma: &Tensor, eps: &Tensor) -> Result<Tensor> {
    let b = y0.dim(0)?;
    let mut shape = vec![b];
    shape.extend(std::iter::repeat_n(1, y0.rank() - 1));
    let g = gamma.to_dtype(y0.dtype())?.reshape(shape)?;
    let a = g.sqrt()?;
    let s = (g.ones_like()? - &g)?.sqrt()?;
    y0.broadcast_mul(&a)? + eps.broadcast_mul(&s)?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden values from docs/method.md section 3, produced by
    /// `np.cumprod(1 - np.linspace(1e-6, 1e-2, 1000, dtype=np.float64))`.
    #[test]
    fn paper_schedule_golden_values() {
        let s = NoiseSchedule::paper();
        let close = |t: usize, v: f64| {
            assert!(
                (s.alpha_bar(t) - v).abs() < 1e-12,
                "abar[{t}] = {} vs {v}",
                s.alpha_bar(t)
            )
        };
        close(0, 0.999999);
        close(1, 0.999987991002);
        close(99, 0.951551851249982);
        close(499, 0.2861579992364149);
        close(998, 0.006689539328731363);
        close(999, 0.00662264393544405);
        assert_eq!(s.len(), 1000);
        let lin = NoiseSchedule::linear(1000, 1e-6, 1e-2).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(lin, s);
    }

    #[test]
    fn gamma_lies_between_neighbouring_alpha_bars() {
        let s = NoiseSchedule::paper();
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
        for _ in 0..1000 {
            let (t, g) = s.sample_gamma(1, 999, &mut rng);
            assert!((1..=999).contains(&t));
            assert!(s.alpha_bar(t) <= g && g <= s.alpha_bar(t - 1));
        }
        for _ in 0..100 {
            let (t, _) = s.sample_gamma(900, 1000, &mut rng);
            assert!((900..=999).contains(&t));
        }
        assert!(NoiseSchedule::linear(1, 0.1, 0.2).is_err());
    }

    #[test]
    fn q_sample_mixes_per_sample() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        let y0 = Tensor::ones((2, 1, 2, 2), candle_core::DType::F32, &dev)?;
        let eps = (Tensor::ones((2, 1, 2, 2), candle_core::DType::F32, &dev)? * 2.0)?;
        let g = Tensor::new(&[1.0f32, 0.25], &dev)?;
        let out = q_sample(&y0, &g, &eps)?.flatten_all()?.to_vec1::<f32>()?;
        // sample 0: 1*1 + 0*2 = 1; sample 1: 0.5*1 + sqrt(0.75)*2
        assert!((out[0] - 1.0).abs() < 1e-6);
        assert!((out[4] - (0.5 + 0.75f32.sqrt() * 2.0)).abs() < 1e-6);
        Ok(())
    }
}
