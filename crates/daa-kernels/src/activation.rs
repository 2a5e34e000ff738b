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

fn map<T: Copy + Send + Sync>(x: &[T], f: impl Fn(T) -> T + Sync) -> Vec<T> {
    let mut y = x.to_vec();
    y.par_chunks_mut(PIECE)
        .for_each(|c| c.iter_mut().for_each(|v| *v = f(*v)));
    y
}

fn zip<T: Copy + Send + Sync>(x: &[T], dy: &[T], f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    let mut out = dy.to_vec();
    out.par_chunks_mut(PIECE)
        .zip(x.par_chunks(PIECE))
        .for_each(|(o, x)| o.iter_mut().zip(x).for_each(|(g, &x)| *g = f(x, *g)));
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
                    |x, g| {
                        if x > 0.0 {
                            g
                        } else if x < 0.0 {
                            g * k
                        } else {
                            g * tie
                        }
                    },
                ))
            }
            (CpuStorage::F64(x), CpuStorage::F64(dy)) => {
                let (k, tie) = (self.0, (1.0 + self.0) * 0.5);
                CpuStorage::F64(zip(
                    contiguous_slice(x, l1)?,
                    contiguous_slice(dy, l2)?,
                    |x, g| {
                        if x > 0.0 {
                            g
                        } else if x < 0.0 {
                            g * k
                        } else {
                            g * tie
                        }
                    },
                ))
            }
            (a, _) => candle_core::bail!("leaky_relu: unsupported dtype {:?}", a.dtype()),
        };
        Ok((out, l1.shape().clone()))
    }
}
