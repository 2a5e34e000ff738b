//! Adam's update in place on the CPU: three parallel passes per parameter instead of about a
//! dozen candle ops, each of which allocated (and the kernel zeroed) a parameter-sized tensor.
//!
//! The arithmetic is the one candle's ops perform for [`adam_update_reference`], in the same
//! order and in the tensors' dtype (`t * a` is candle's affine `t * a + 0`, `t / a` its
//! `t * (1 / a) + 0`), so the fused update gives the same bits.

use crate::conv::contiguous_slice;
use candle_core::{
    CpuStorage, DType, InplaceOp2, InplaceOp3, Layout, Result, Tensor, Var, WithDType,
};
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

/// Adam's update of one parameter: `param`, `m` and `v` get their new values. CPU f32/f64
/// contiguous tensors are updated in place by three fused passes (their storage must not be
/// shared with tensors that are still needed); anything else (CUDA, other dtypes) runs
/// [`adam_update_reference`]: `param` is set to its result and `m`, `v` replaced.
pub fn adam_update(
    param: &Var,
    grad: &Tensor,
    m: &mut Tensor,
    v: &mut Tensor,
    h: AdamStep,
) -> Result<()> {
    let p = param.as_tensor();
    let shape = p.shape();
    if grad.shape() != shape || m.shape() != shape || v.shape() != shape {
        candle_core::bail!(
            "adam_update: shapes differ: param {:?}, grad {:?}, m {:?}, v {:?}",
            shape,
            grad.shape(),
            m.shape(),
            v.shape()
        );
    }
    let fused = p.device().is_cpu()
        && matches!(p.dtype(), DType::F32 | DType::F64)
        && [grad, &*m, &*v].iter().all(|t| t.dtype() == p.dtype())
        && [p, &*m, &*v].iter().all(|t| t.is_contiguous());
    if !fused {
        let (p_new, m_new, v_new) = adam_update_reference(&p.detach(), grad, m, v, h)?;
        param.set(&p_new)?;
        (*m, *v) = (m_new.detach(), v_new.detach());
        return Ok(());
    }
    // L2 weight decay (0 in every preset) is added to the gradient with candle's ops, as
    // the reference does.
    let grad = if h.weight_decay > 0.0 {
        (grad + (p * h.weight_decay)?)?
    } else {
        grad.contiguous()?
    };
    m.inplace_op2(&grad, &Moment { h, second: false })?;
    v.inplace_op2(&grad, &Moment { h, second: true })?;
    p.inplace_op3(m, v, &Update(h))
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
