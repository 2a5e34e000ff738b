//! LeakyReLU as one CPU op with a one-pass backward.
//!
//! From candle ops it is `maximum(x, slope * x)`: two passes forward, and backward the
//! maximum's masks (two comparisons, casts, a division) and the product's gradient, each a
//! fresh full-size tensor. Here forward and backward are one pass each. The gradient is the
//! one candle's `maximum` gives, including at `x == 0` (the tie splits it: `(1 + slope) / 2`).

use crate::conv::contiguous_slice;
use candle_core::{
    backend::BackendStorage, CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor,
};
use rayon::prelude::*;

/// Elements per parallel piece (below this, one thread).
const PIECE: usize = 1 << 16;

/// The reference from candle ops: `max(x, slope * x)`.
pub fn leaky_relu_reference(xs: &Tensor, slope: f64) -> Result<Tensor> {
    xs.maximum(&(xs * slope)?)
}

/// LeakyReLU `x > 0 ? x : slope * x` for `0 <= slope < 1`. CPU f32/f64: one fused op (forward
/// and backward); other devices and dtypes: [`leaky_relu_reference`].
pub fn leaky_relu(xs: &Tensor, slope: f64) -> Result<Tensor> {
    if !(0.0..1.0).contains(&slope) {
        candle_core::bail!("leaky_relu: slope must be in [0, 1), got {slope}");
    }
    if !xs.device().is_cpu() || !matches!(xs.dtype(), DType::F32 | DType::F64) {
        return leaky_relu_reference(xs, slope);
    }
    xs.contiguous()?.apply_op1(LeakyRelu(slope))
}

struct LeakyRelu(f64);
struct LeakyReluBwd(f64);

/// The input gradient of LeakyReLU with `0 < slope < 1` from its output `y` (whose sign is its
/// input's) and `dy`: the same values as its backward from the input.
pub(crate) fn leaky_relu_grad_from_output(y: &Tensor, dy: &Tensor, slope: f64) -> Result<Tensor> {
    y.contiguous()?
        .apply_op2_no_bwd(&dy.contiguous()?, &LeakyReluBwd(slope))
}

/// `f` of each element of `x`, written straight into a new vector on the rayon pool (no
/// copy or zero fill first on the calling thread).
fn map<T: Copy + Send + Sync>(x: &[T], f: impl Fn(T) -> T + Sync) -> Vec<T> {
    zip(x, x, |x, _| f(x))
}

/// `f(x, dy)` elementwise, written straight into a new vector on the rayon pool.
fn zip<T: Copy + Send + Sync>(x: &[T], dy: &[T], f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    let n = x.len().min(dy.len());
    let mut out: Vec<T> = Vec::with_capacity(n);
    out.spare_capacity_mut()[..n]
        .par_chunks_mut(PIECE)
        .zip(x.par_chunks(PIECE).zip(dy.par_chunks(PIECE)))
        .for_each(|(o, (x, g))| {
            for ((o, &x), &g) in o.iter_mut().zip(x).zip(g) {
                o.write(f(x, g));
            }
        });
    // Every element of 0..n was written above.
    unsafe { out.set_len(n) };
    out
}

impl CustomOp1 for LeakyRelu {
    fn name(&self) -> &'static str {
        "daa_kernels::leaky_relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match s {
            CpuStorage::F32(v) => {
                let k = self.0 as f32;
                CpuStorage::F32(map(contiguous_slice(v, l)?, |x| x.max(x * k)))
            }
            CpuStorage::F64(v) => {
                let k = self.0;
                CpuStorage::F64(map(contiguous_slice(v, l)?, |x| x.max(x * k)))
            }
            other => candle_core::bail!("leaky_relu: unsupported dtype {:?}", other.dtype()),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(
            &dy.contiguous()?,
            &LeakyReluBwd(self.0),
        )?))
    }
}

impl CustomOp2 for LeakyReluBwd {
    fn name(&self) -> &'static str {
        "daa_kernels::leaky_relu_bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(dy)) => {
                let (k, tie) = (self.0 as f32, (1.0 + self.0 as f32) * 0.5);
                CpuStorage::F32(zip(
                    contiguous_slice(x, l1)?,
                    contiguous_slice(dy, l2)?,
                    // A factor chosen without branches (so the loop vectorises); `g * 1`
                    // is `g` exactly.
                    |x, g| {
                        let f = if x < 0.0 { k } else { tie };
                        g * if x > 0.0 { 1.0 } else { f }
                    },
                ))
            }
            (CpuStorage::F64(x), CpuStorage::F64(dy)) => {
                let (k, tie) = (self.0, (1.0 + self.0) * 0.5);
                CpuStorage::F64(zip(
                    contiguous_slice(x, l1)?,
                    contiguous_slice(dy, l2)?,
                    // A factor chosen without branches (so the loop vectorises); `g * 1`
                    // is `g` exactly.
                    |x, g| {
                        let f = if x < 0.0 { k } else { tie };
                        g * if x > 0.0 { 1.0 } else { f }
                    },
                ))
            }
            (a, _) => candle_core::bail!("leaky_relu: unsupported dtype {:?}", a.dtype()),
        };
        Ok((out, l1.shape().clone()))
    }
}

/// `xs * mask` where `mask` takes no gradient (a dropout mask): the same values as candle's
/// product, and a backward that returns only `dy * mask`. candle's `Mul` backward also computes
/// `dy * xs` for the mask and adds it, and each gradient, to a fresh zero tensor; here the
/// product runs on the rayon pool forward and backward. CPU f32/f64 with `mask` of the same
/// shape and dtype; elsewhere `xs * mask`.
pub fn mul_mask(xs: &Tensor, mask: &Tensor) -> Result<Tensor> {
    if xs.shape() != mask.shape() {
        candle_core::bail!(
            "mul_mask: input {:?} and mask {:?} differ in shape",
            xs.shape(),
            mask.shape()
        );
    }
    if !xs.device().is_cpu()
        || !matches!(xs.dtype(), DType::F32 | DType::F64)
        || mask.dtype() != xs.dtype()
    {
        return xs * mask;
    }
    xs.contiguous()?
        .apply_op1(MulMask(mask.detach().contiguous()?))
}

struct MulMask(Tensor);

/// The elementwise product of two CPU storages of one dtype, on the rayon pool.
fn product(
    name: &str,
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
) -> Result<CpuStorage> {
    Ok(match (s1, s2) {
        (CpuStorage::F32(a), CpuStorage::F32(b)) => CpuStorage::F32(zip(
            contiguous_slice(b, l2)?,
            contiguous_slice(a, l1)?,
            |m, x| x * m,
        )),
        (CpuStorage::F64(a), CpuStorage::F64(b)) => CpuStorage::F64(zip(
            contiguous_slice(b, l2)?,
            contiguous_slice(a, l1)?,
            |m, x| x * m,
        )),
        (a, b) => candle_core::bail!(
            "{name}: unsupported dtypes {:?}, {:?}",
            a.dtype(),
            b.dtype()
        ),
    })
}

impl CustomOp1 for MulMask {
    fn name(&self) -> &'static str {
        "daa_kernels::mul_mask"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (ms, ml) = self.0.storage_and_layout();
        let candle_core::Storage::Cpu(ms) = &*ms else {
            candle_core::bail!("mul_mask: the mask is not on the CPU");
        };
        Ok((product(self.name(), s, l, ms, ml)?, l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            dy.contiguous()?.apply_op2_no_bwd(&self.0, &MulMaskBwd)?,
        ))
    }
}

/// `dy * mask`.
struct MulMaskBwd;

impl CustomOp2 for MulMaskBwd {
    fn name(&self) -> &'static str {
        "daa_kernels::mul_mask_bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Ok((product(self.name(), s1, l1, s2, l2)?, l1.shape().clone()))
    }
}
