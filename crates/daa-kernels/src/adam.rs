//! Adam's update in place on the CPU: three parallel passes per parameter instead of about a
//! dozen candle ops, each of which allocated (and the kernel zeroed) a parameter-sized tensor.
//!
//! The arithmetic is the one candle's ops perform for [`adam_update_reference`], in the same
//! order and in the tensors' dtype (`t * a` is candle's affine `t * a + 0`, `t / a` its
//! `t * (1 / a) + 0`), so the fused update gives the same bits.

use crate::conv::contiguous_slice;
use candle_core::{CpuStorage, DType, InplaceOp2, InplaceOp3, Layout, Result, Tensor, WithDType};
use rayon::prelude::*;

/// Elements per parallel piece (below this, one thread).
const PIECE: usize = 1 << 15;

/// One Adam step's constants (PyTorch's `torch.optim.Adam` with L2 weight decay).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamStep {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// L2 weight decay added to the gradient (0: none).
    pub weight_decay: f64,
    /// The step number, from 1 (bias corrections).
    pub step: u64,
}

impl AdamStep {
    fn bias_corrections(&self) -> (f64, f64) {
        let t = self.step as i32;
        (1.0 - self.beta1.powi(t), 1.0 - self.beta2.powi(t))
    }
}

/// The update from candle ops: returns the new `(param, m, v)`. This is the definition
/// [`adam_update`] follows bit for bit on the CPU.
pub fn adam_update_reference(
    param: &Tensor,
    grad: &Tensor,
    m: &Tensor,
    v: &Tensor,
    h: AdamStep,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (bc1, bc2) = h.bias_corrections();
    let g = if h.weight_decay > 0.0 {
        (grad + (param * h.weight_decay)?)?
    } else {
        grad.clone()
    };
    let m = ((m * h.beta1)? + (&g * (1.0 - h.beta1))?)?;
    let v = ((v * h.beta2)? + (g.sqr()? * (1.0 - h.beta2))?)?;
    let denom = ((v.sqrt()? / bc2.sqrt())? + h.eps)?;
    let update = ((&m / denom)? * (h.lr / bc1))?;
    Ok((param.sub(&update)?, m, v))
}

/// Adam's update of one parameter: `m`, `v` and `param` are overwritten in place (their storage
/// must not be shared with tensors that are still needed). CPU f32/f64 contiguous tensors take
/// three fused passes; anything else (CUDA, other dtypes) runs [`adam_update_reference`] and
/// writes its results back.
pub fn adam_update(
    param: &Tensor,
    grad: &Tensor,
    m: &Tensor,
    v: &Tensor,
    h: AdamStep,
) -> Result<()> {
    let shape = param.shape();
    if grad.shape() != shape || m.shape() != shape || v.shape() != shape {
        candle_core::bail!(
            "adam_update: shapes differ: param {:?}, grad {:?}, m {:?}, v {:?}",
            shape,
            grad.shape(),
            m.shape(),
            v.shape()
        );
    }
    let fused = param.device().is_cpu()
        && matches!(param.dtype(), DType::F32 | DType::F64)
        && [grad, m, v].iter().all(|t| t.dtype() == param.dtype())
        && [param, m, v].iter().all(|t| t.is_contiguous());
    if !fused {
        let (p, m_new, v_new) = adam_update_reference(param, grad, m, v, h)?;
        for (dst, src) in [(param, p), (m, m_new), (v, v_new)] {
            dst.inplace_op2(&src, &Assign)?;
        }
        return Ok(());
    }
    // L2 weight decay (0 in every preset) is added to the gradient with candle's ops, as
    // the reference does.
    let grad = if h.weight_decay > 0.0 {
        (grad + (param * h.weight_decay)?)?
    } else {
        grad.contiguous()?
    };
    m.inplace_op2(&grad, &Moment { h, second: false })?;
    v.inplace_op2(&grad, &Moment { h, second: true })?;
    param.inplace_op3(m, v, &Update(h))
}

/// `dst = src` (the fallback's write-back).
struct Assign;

impl InplaceOp2 for Assign {
    fn name(&self) -> &'static str {
        "daa_kernels::adam_assign"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        src: &CpuStorage,
        src_l: &Layout,
    ) -> Result<()> {
        fn copy<T: Copy>(d: &mut [T], dl: &Layout, s: &[T], sl: &Layout) -> Result<()> {
            let (a, b) = dl
                .contiguous_offsets()
                .ok_or_else(|| candle_core::Error::Msg("adam: non-contiguous state".into()))?;
            d[a..b].copy_from_slice(contiguous_slice(s, sl)?);
            Ok(())
        }
        match (dst, src) {
            (CpuStorage::F32(d), CpuStorage::F32(s)) => copy(d, dst_l, s, src_l),
            (CpuStorage::F64(d), CpuStorage::F64(s)) => copy(d, dst_l, s, src_l),
            (CpuStorage::BF16(d), CpuStorage::BF16(s)) => copy(d, dst_l, s, src_l),
            (CpuStorage::F16(d), CpuStorage::F16(s)) => copy(d, dst_l, s, src_l),
            _ => candle_core::bail!("adam_update: unsupported dtype"),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        dst: &mut candle_core::CudaStorage,
        dst_l: &Layout,
        src: &candle_core::CudaStorage,
        src_l: &Layout,
    ) -> Result<()> {
        use candle_core::backend::BackendStorage;
        let (a, _) = dst_l
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("adam: non-contiguous state".into()))?;
        src.copy_strided_src(dst, a, src_l)
    }
}

/// `m = m * b1 + g * (1 - b1)` or `v = v * b2 + (g * g) * (1 - b2)`.
struct Moment {
    h: AdamStep,
    second: bool,
}

fn moment<T: WithDType>(dst: &mut [T], g: &[T], beta: f64, second: bool) {
    let (b, c) = (T::from_f64(beta), T::from_f64(1.0 - beta));
    let zero = T::from_f64(0.0);
    dst.par_chunks_mut(PIECE)
        .zip(g.par_chunks(PIECE))
        .for_each(|(d, g)| {
            for (d, &g) in d.iter_mut().zip(g) {
                let g = if second { g * g } else { g };
                *d = (*d * b + zero) + (g * c + zero);
            }
        });
}

impl InplaceOp2 for Moment {
    fn name(&self) -> &'static str {
        "daa_kernels::adam_moment"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        g: &CpuStorage,
        g_l: &Layout,
    ) -> Result<()> {
        let beta = if self.second {
            self.h.beta2
        } else {
            self.h.beta1
        };
        let (a, b) = dst_l
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("adam: non-contiguous moment".into()))?;
        match (dst, g) {
            (CpuStorage::F32(d), CpuStorage::F32(g)) => {
                moment(&mut d[a..b], contiguous_slice(g, g_l)?, beta, self.second)
            }
            (CpuStorage::F64(d), CpuStorage::F64(g)) => {
                moment(&mut d[a..b], contiguous_slice(g, g_l)?, beta, self.second)
            }
            _ => candle_core::bail!("adam_update: f32 or f64 expected"),
        }
        Ok(())
    }
}

/// `p = p - ((m / (sqrt(v) / sqrt(bc2) + eps)) * (lr / bc1))`.
struct Update(AdamStep);

// `p = p - u` spelled as candle's `sub` computes it.
#[allow(clippy::assign_op_pattern)]
fn update<T: WithDType + num_like::Sqrt>(p: &mut [T], m: &[T], v: &[T], h: AdamStep) {
    let (bc1, bc2) = h.bias_corrections();
    let inv_sqrt_bc2 = T::from_f64(1.0 / bc2.sqrt());
    let eps = T::from_f64(h.eps);
    let step = T::from_f64(h.lr / bc1);
    let (zero, one) = (T::from_f64(0.0), T::from_f64(1.0));
    p.par_chunks_mut(PIECE)
        .zip(m.par_chunks(PIECE).zip(v.par_chunks(PIECE)))
        .for_each(|(p, (m, v))| {
            for ((p, &m), &v) in p.iter_mut().zip(m).zip(v) {
                let denom = (v.sqrt_() * inv_sqrt_bc2 + zero) * one + eps;
                *p = *p - ((m / denom) * step + zero);
            }
        });
}

mod num_like {
    pub trait Sqrt {
        fn sqrt_(self) -> Self;
    }
    impl Sqrt for f32 {
        fn sqrt_(self) -> Self {
            self.sqrt()
        }
    }
    impl Sqrt for f64 {
        fn sqrt_(self) -> Self {
            self.sqrt()
        }
    }
}

impl InplaceOp3 for Update {
    fn name(&self) -> &'static str {
        "daa_kernels::adam_update"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        m: &CpuStorage,
        m_l: &Layout,
        v: &CpuStorage,
        v_l: &Layout,
    ) -> Result<()> {
        let (a, b) = dst_l
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("adam: non-contiguous parameter".into()))?;
        match (dst, m, v) {
            (CpuStorage::F32(p), CpuStorage::F32(m), CpuStorage::F32(v)) => update(
                &mut p[a..b],
                contiguous_slice(m, m_l)?,
                contiguous_slice(v, v_l)?,
                self.0,
            ),
            (CpuStorage::F64(p), CpuStorage::F64(m), CpuStorage::F64(v)) => update(
                &mut p[a..b],
                contiguous_slice(m, m_l)?,
                contiguous_slice(v, v_l)?,
                self.0,
            ),
            _ => candle_core::bail!("adam_update: f32 or f64 expected"),
        }
        Ok(())
    }
}
