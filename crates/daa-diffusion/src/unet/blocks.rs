//! Residual blocks with scale-shift noise-level conditioning, and their helpers.

use candle_core::{Device, Result, Tensor};
use candle_nn::{Linear, Module, VarBuilder};
use daa_kernels::Conv2d;
use rand::RngCore;

/// Kaiming-normal, fan-in (gain sqrt(2)): the paper's init for every conv and linear.
pub fn kaiming() -> candle_nn::Init {
    candle_nn::init::DEFAULT_KAIMING_NORMAL
}

pub fn conv(vb: VarBuilder, cin: usize, cout: usize, k: usize) -> Result<Conv2d> {
    let w = vb.get_with_hints((cout, cin, k, k), "weight", kaiming())?;
    let b = vb.get_with_hints(cout, "bias", candle_nn::Init::Const(0.0))?;
    Ok(Conv2d::new(w, Some(b), k / 2, 1))
}

pub fn lin(vb: VarBuilder, din: usize, dout: usize) -> Result<Linear> {
    let w = vb.get_with_hints((dout, din), "weight", kaiming())?;
    let b = vb.get_with_hints(dout, "bias", candle_nn::Init::Const(0.0))?;
    Ok(Linear::new(w, Some(b)))
}

/// GroupNorm with eps 1e-5 (`weight`, `bias` as in PyTorch), on daa-kernels' fused op.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
}

impl Module for GroupNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        daa_kernels::group_norm(xs, &self.weight, &self.bias, self.groups, 1e-5)
    }
}

impl GroupNorm {
    /// `silu(norm(xs) * (1 + scale) + shift)` (`scale, shift: (B, C)` or `(B, C, 1, 1)`), or
    /// `silu(norm(xs))` without them: one fused op (`daa_kernels::group_norm_silu`).
    pub fn forward_silu(
        &self,
        xs: &Tensor,
        modulation: Option<(&Tensor, &Tensor)>,
    ) -> Result<Tensor> {
        daa_kernels::group_norm_silu(xs, &self.weight, &self.bias, self.groups, 1e-5, modulation)
    }
}

pub fn group_norm(vb: VarBuilder, groups: usize, ch: usize) -> Result<GroupNorm> {
    let weight = vb.get_with_hints(ch, "weight", candle_nn::Init::Const(1.0))?;
    let bias = vb.get_with_hints(ch, "bias", candle_nn::Init::Const(0.0))?;
    Ok(GroupNorm {
        weight,
        bias,
        groups,
    })
}

/// Inverted dropout: zero with probability `p`, scale the rest by `1 / (1 - p)`. The mask is
/// drawn on the CPU from `rng` (candle's CPU RNG cannot be seeded), so the caller's seed
/// decides it on every device. Each 64-bit draw gives four 16-bit uniforms (`p` is resolved
/// to 1/65536).
pub fn dropout(xs: &Tensor, p: f64, rng: &mut dyn RngCore) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(xs.clone());
    }
    let n = xs.elem_count();
    let keep = (1.0 / (1.0 - p)) as f32;
    let threshold = (p * 65536.0).round() as u32;
    // The draws in one call (the same words as one `next_u64` per four values, in order),
    // then four values per draw chosen without branches; this runs on the step's thread.
    let mut bytes = vec![0u8; n.div_ceil(4) * 8];
    rng.fill_bytes(&mut bytes);
    let mut mask = vec![0f32; n.div_ceil(4) * 4];
    for (quad, draw) in mask.chunks_exact_mut(4).zip(bytes.chunks_exact(8)) {
        let bits = u64::from_le_bytes(draw.try_into().unwrap_or_default());
        for (k, m) in quad.iter_mut().enumerate() {
            let u = ((bits >> (16 * k)) & 0xffff) as u32;
            *m = if u < threshold { 0.0 } else { keep };
        }
    }
    mask.truncate(n);
    let mask = Tensor::from_vec(mask, xs.shape(), &Device::Cpu)?
        .to_dtype(xs.dtype())?
        .to_device(xs.device())?;
    daa_kernels::mul_mask(xs, &mask)
}

/// Up/down sampling inside a residual block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resample {
    None,
    /// 2x2 average pooling.
    Down,
    /// Nearest-neighbour x2.
    Up,
}

/// Nearest-neighbour x2 as a broadcast: the same values as `upsample_nearest2d`, but a
/// backward that adds to the input's gradient. candle 0.11's `upsample_nearest2d` backward
/// overwrites it instead, which drops the other paths' gradient to the same tensor (a residual
/// block upsamples its input for the skip and feeds it to its GroupNorm); found by the step
/// parity test against PyTorch (crates/daa-train/tests/step_parity.rs).
/// On the CPU (f32/f64) one op from daa-kernels with the same bits, forward and backward.
pub fn upsample_nearest2x(xs: &Tensor) -> Result<Tensor> {
    daa_kernels::upsample_nearest2x(xs, |xs| {
        let (b, c, h, w) = xs.dims4()?;
        xs.reshape((b, c, h, 1, w, 1))?
            .broadcast_as((b, c, h, 2, w, 2))?
            .reshape((b, c, 2 * h, 2 * w))
    })
}

fn resample(xs: &Tensor, r: Resample) -> Result<Tensor> {
    match r {
        Resample::None => Ok(xs.clone()),
        Resample::Down => daa_kernels::avg_pool2x2(xs),
        Resample::Up => upsample_nearest2x(xs),
    }
}

/// ADM residual block: `in_layers` (GN, SiLU, [resample], conv3x3), `emb_layers` (SiLU,
/// Linear -> 2*out for scale and shift), `out_layers` (GN * (1 + scale) + shift, SiLU, dropout,
/// conv3x3), plus a skip (identity, or a 1x1 conv when the width changes; resampled too).
#[derive(Debug, Clone)]
pub struct ResBlock {
    in_norm: GroupNorm,
    in_conv: Conv2d,
    emb: Linear,
    out_norm: GroupNorm,
    out_conv: Conv2d,
    skip: Option<Conv2d>,
    resample: Resample,
    dropout: f64,
    out_ch: usize,
}

impl ResBlock {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        emb_dim: usize,
        groups: usize,
        dropout: f64,
        resample: Resample,
    ) -> Result<Self> {
        Ok(Self {
            in_norm: group_norm(vb.pp("in_layers").pp("0"), groups, cin)?,
            in_conv: conv(vb.pp("in_layers").pp("2"), cin, cout, 3)?,
            emb: lin(vb.pp("emb_layers").pp("1"), emb_dim, 2 * cout)?,
            out_norm: group_norm(vb.pp("out_layers").pp("0"), groups, cout)?,
            out_conv: conv(vb.pp("out_layers").pp("3"), cout, cout, 3)?,
            skip: if cin != cout {
                Some(conv(vb.pp("skip_connection"), cin, cout, 1)?)
            } else {
                None
            },
            resample,
            dropout,
            out_ch: cout,
        })
    }

    /// `xs: (B, C_in, H, W)`, `emb: (B, E)` -> `(B, C_out, H', W')`. Dropout is on when
    /// `dropout` gives the RNG of its masks.
    pub fn forward(
        &self,
        xs: &Tensor,
        emb: &Tensor,
        dropout_rng: Option<&mut dyn RngCore>,
    ) -> Result<Tensor> {
        let h = self.in_norm.forward_silu(xs, None)?;
        let h = resample(&h, self.resample)?.apply(&self.in_conv)?;
        let x = resample(xs, self.resample)?;
        // (B, 2*C_out) -> scale, shift of shape (B, C_out, 1, 1).
        let e = self
            .emb
            .forward(&candle_nn::ops::silu(emb)?)?
            .unsqueeze(2)?
            .unsqueeze(3)?;
        let scale = e.narrow(1, 0, self.out_ch)?;
        let shift = e.narrow(1, self.out_ch, self.out_ch)?;
        let mut h = self.out_norm.forward_silu(&h, Some((&scale, &shift)))?;
        if let Some(rng) = dropout_rng {
            h = dropout(&h, self.dropout, rng)?;
        }
        let h = h.apply(&self.out_conv)?;
        let skip = match &self.skip {
            Some(c) => x.apply(c)?,
            None => x,
        };
        skip + h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mask is drawn from the RNG's stream exactly as one `next_u64` per four values
    /// (the draws fix every run's masks; a changed stream would change every seeded run),
    /// and the RNG ends where that would leave it.
    #[test]
    fn dropout_masks_follow_the_rng_stream() -> Result<()> {
        use rand::SeedableRng;
        let x = Tensor::ones((3, 3, 5), candle_core::DType::F32, &Device::Cpu)?;
        let mut a = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut b = a.clone();
        let ours = dropout(&x, 0.2, &mut a)?.flatten_all()?.to_vec1::<f32>()?;
        let mut expected = Vec::new();
        while expected.len() < 45 {
            let bits = b.next_u64();
            for k in 0..4 {
                let u = ((bits >> (16 * k)) & 0xffff) as u32;
                expected.push(if u < 13107 {
                    0.0
                } else {
                    (1.0 / 0.8f64) as f32
                });
            }
        }
        expected.truncate(45);
        assert_eq!(ours, expected);
        assert!(ours.contains(&0.0) && ours.contains(&1.25));
        assert_eq!(a.next_u64(), b.next_u64());
        Ok(())
    }

    #[test]
    fn nearest_upsample_matches_candle_and_adds_to_other_gradients() -> Result<()> {
        let x = candle_core::Var::from_tensor(
            &Tensor::arange(0f32, 12., &Device::Cpu)?.reshape((1, 2, 2, 3))?,
        )?;
        let up = upsample_nearest2x(x.as_tensor())?;
        assert_eq!(
            up.flatten_all()?.to_vec1::<f32>()?,
            x.as_tensor()
                .upsample_nearest2d(4, 6)?
                .flatten_all()?
                .to_vec1::<f32>()?
        );
        // d/dx [sum(up(x)) + 3 sum(x)] = 4 + 3 everywhere; candle's own upsample backward
        // overwrites the 3 and would give 4.
        let loss = (up.sum_all()? + (x.as_tensor() * 3.0)?.sum_all()?)?;
        let grads = loss.backward()?;
        let g = grads
            .get(x.as_tensor())
            .ok_or_else(|| candle_core::Error::Msg("no gradient".into()))?;
        assert!(
            g.flatten_all()?.to_vec1::<f32>()?.iter().all(|v| *v == 7.0),
            "{g}"
        );
        Ok(())
    }
}
