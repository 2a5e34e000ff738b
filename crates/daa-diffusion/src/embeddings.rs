//! The noise-level embedding: sinusoidal features of `gamma` followed by an MLP.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{linear, Linear, VarBuilder};

/// Sinusoidal embedding of continuous noise levels (Palette's `gamma_embedding`):
/// `freq_k = exp(-ln(10000) * k / (dim/2))`, `emb = [cos(gamma * freq), sin(gamma * freq)]`,
/// cos first. `gamma: (B,)` -> `(B, dim)`, in `gamma`'s dtype.
pub fn gamma_embedding(gamma: &Tensor, dim: usize) -> Result<Tensor> {
    if !dim.is_multiple_of(2) || dim == 0 {
        candle_core::bail!("gamma_embedding: dim must be even and positive, got {dim}");
    }
    let half = dim / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|k| (-(10000f64.ln()) * k as f64 / half as f64).exp() as f32)
        .collect();
    let freqs = Tensor::from_vec(freqs, (1, half), &Device::Cpu)?.to_device(gamma.device())?;
    let args = gamma
        .to_dtype(DType::F32)?
        .unsqueeze(1)?
        .broadcast_mul(&freqs)?;
    Tensor::cat(&[args.cos()?, args.sin()?], 1)?.to_dtype(gamma.dtype())
}

/// `gamma_embedding(64)` -> Linear(64, 256) -> SiLU -> Linear(256, 256) (tensor names
/// `cond_embed.0`, `cond_embed.2`).
#[derive(Debug, Clone)]
pub struct NoiseLevelEmbedding {
    lin0: Linear,
    lin2: Linear,
    dim: usize,
}

impl NoiseLevelEmbedding {
    /// `dim`: sinusoidal width (the paper: 64); `out`: MLP width (the paper: 256).
    pub fn new(vb: VarBuilder, dim: usize, out: usize) -> Result<Self> {
        Ok(Self {
            lin0: linear(dim, out, vb.pp("0"))?,
            lin2: linear(out, out, vb.pp("2"))?,
            dim,
        })
    }

    /// `gamma: (B,)` -> `(B, out)`.
    pub fn forward(&self, gamma: &Tensor, dtype: DType) -> Result<Tensor> {
        let emb = gamma_embedding(&gamma.to_dtype(DType::F32)?, self.dim)?.to_dtype(dtype)?;
        self.lin2
            .forward(&candle_nn::ops::silu(&self.lin0.forward(&emb)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/method.md section 3; numpy: g = 0.5; f = np.exp(-np.log(10000) * np.arange(32) / 32);
    /// np.cos(g * f)[:3], np.sin(g * f)[:3].
    #[test]
    fn golden_values_for_gamma_one_half() -> Result<()> {
        let g = Tensor::new(&[0.5f32, 0.0], &Device::Cpu)?;
        let e = gamma_embedding(&g, 64)?;
        assert_eq!(e.dims(), &[2, 64]);
        let row: Vec<f32> = e.get(0)?.to_vec1()?;
        for (got, want) in row[..3].iter().zip([0.877583, 0.930527, 0.960731]) {
            assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        }
        for (got, want) in row[32..35].iter().zip([0.479426, 0.366223, 0.277481]) {
            assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        }
        let zero: Vec<f32> = e.get(1)?.to_vec1()?;
        assert!(zero[..32].iter().all(|v| *v == 1.0) && zero[32..].iter().all(|v| *v == 0.0));
        Ok(())
    }
}
