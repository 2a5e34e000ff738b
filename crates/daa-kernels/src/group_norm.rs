//! GroupNorm as one CPU op with an analytic backward.
//!
//! candle's `GroupNorm` is built from about ten broadcast ops, each a pass over the
//! activation on the CPU, and its backward doubles that; in the diffusion U-Net it cost more
//! than the convolutions. Here forward is one pass per group and backward two.

use crate::conv::contiguous_slice;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// The reference: GroupNorm from plain candle ops (differentiable on every device).
/// `xs: (B, C, ...)`, `gamma`, `beta: (C,)`.
pub fn group_norm_reference(
    xs: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    groups: usize,
    eps: f64,
) -> Result<Tensor> {
    let dims = xs.dims().to_vec();
    let (b, c) = (dims[0], dims[1]);
    let n = xs.elem_count() / (b * groups);
    let g = xs.reshape((b, groups, n))?;
    let mean = g.mean_keepdim(2)?;
    let centred = g.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(2)?;
    let normed = centred
        .broadcast_div(&(var + eps)?.sqrt()?)?
        .reshape(dims.as_slice())?;
    let mut shape = vec![1; dims.len()];
    shape[1] = c;
    normed
        .broadcast_mul(&gamma.reshape(shape.as_slice())?)?
        .broadcast_add(&beta.reshape(shape.as_slice())?)
}

struct GroupNormOp {
    groups: usize,
    eps: f64,
}

/// Per (batch, group): mean and reciprocal standard deviation.
fn stats<T: num::Float>(x: &[T], n: usize, eps: f64) -> (f64, f64) {
    let mut s = 0f64;
    for v in x {
        s += v.to_f64();
    }
    let mean = s / n as f64;
    let mut q = 0f64;
    for v in x {
        let d = v.to_f64() - mean;
        q += d * d;
    }
    (mean, 1.0 / (q / n as f64 + eps).sqrt())
}

mod num {
    pub trait Float: Copy + Send + Sync + 'static {
        fn to_f64(self) -> f64;
        fn from_f64(v: f64) -> Self;
    }
    impl Float for f32 {
        fn to_f64(self) -> f64 {
            self as f64
        }
        fn from_f64(v: f64) -> Self {
            v as f32
        }
    }
    impl Float for f64 {
        fn to_f64(self) -> f64 {
            self
        }
        fn from_f64(v: f64) -> Self {
            v
        }
    }
}

fn forward<T: num::Float>(
    x: &[T],
    gamma: &[T],
    beta: &[T],
    b: usize,
    c: usize,
    groups: usize,
    eps: f64,
) -> Vec<T> {
    let per_sample = x.len() / b;
    let cg = c / groups;
    let spatial = per_sample / c;
    let n = cg * spatial;
    let mut y = vec![T::from_f64(0.0); x.len()];
    y.par_chunks_mut(n)
        .zip(x.par_chunks(n))
        .enumerate()
        .for_each(|(i, (yo, xi))| {
            let grp = i % groups;
            let (mean, rstd) = stats(xi, n, eps);
            for cc in 0..cg {
                let ch = grp * cg + cc;
                let (ga, be) = (gamma[ch].to_f64(), beta[ch].to_f64());
                for s in 0..spatial {
                    let j = cc * spatial + s;
                    yo[j] = T::from_f64((xi[j].to_f64() - mean) * rstd * ga + be);
                }
            }
        });
    y
}

impl CustomOp3 for GroupNormOp {
    fn name(&self) -> &'static str {
        "daa_kernels::group_norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = l1.shape().dims();
        let (b, c) = (dims[0], dims[1]);
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(g), CpuStorage::F32(be)) => {
                CpuStorage::F32(forward(
                    contiguous_slice(x, l1)?,
                    contiguous_slice(g, l2)?,
                    contiguous_slice(be, l3)?,
                    b,
                    c,
                    self.groups,
                    self.eps,
                ))
            }
            (CpuStorage::F64(x), CpuStorage::F64(g), CpuStorage::F64(be)) => {
                CpuStorage::F64(forward(
                    contiguous_slice(x, l1)?,
                    contiguous_slice(g, l2)?,
                    contiguous_slice(be, l3)?,
                    b,
                    c,
                    self.groups,
                    self.eps,
                ))
            }
            _ => candle_core::bail!("group_norm: f32 or f64 inputs of one dtype expected"),
        };
        Ok((out, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::group_norm_cuda::forward(self.groups, self.eps, [s1, s2, s3], [l1, l2, l3])
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            return crate::group_norm_cuda::backward(x, gamma, grad, self.groups, self.eps);
        }
        let dims = x.dims().to_vec();
        let (b, c) = (dims[0], dims[1]);
        let (groups, eps) = (self.groups, self.eps);
        let cg = c / groups;
        let spatial = x.elem_count() / (b * c);
        let n = cg * spatial;
        let dtype = x.dtype();
        let xv: Vec<f64> = x.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?;
        let gv: Vec<f64> = grad
            .contiguous()?
            .flatten_all()?
            .to_dtype(DType::F64)?
            .to_vec1()?;
        let gamma_v: Vec<f64> = gamma.to_dtype(DType::F64)?.to_vec1()?;
        let mut dx = vec![0f64; xv.len()];
        // Per (batch, group) partial sums of dgamma, dbeta per channel.
        let partial: Vec<(Vec<f64>, Vec<f64>)> = dx
            .par_chunks_mut(n)
            .zip(xv.par_chunks(n).zip(gv.par_chunks(n)))
            .enumerate()
            .map(|(i, (dxo, (xi, gi)))| {
                let grp = i % groups;
                let (mean, rstd) = stats(xi, n, eps);
                let (mut dg, mut db) = (vec![0f64; cg], vec![0f64; cg]);
                let (mut m1, mut m2) = (0f64, 0f64);
                for cc in 0..cg {
                    let ga = gamma_v[grp * cg + cc];
                    for s in 0..spatial {
                        let j = cc * spatial + s;
                        let xhat = (xi[j] - mean) * rstd;
                        dg[cc] += gi[j] * xhat;
                        db[cc] += gi[j];
                        let dxhat = gi[j] * ga;
                        m1 += dxhat;
                        m2 += dxhat * xhat;
                    }
                }
                let (m1, m2) = (m1 / n as f64, m2 / n as f64);
                for cc in 0..cg {
                    let ga = gamma_v[grp * cg + cc];
                    for s in 0..spatial {
                        let j = cc * spatial + s;
                        let xhat = (xi[j] - mean) * rstd;
                        dxo[j] = rstd * (gi[j] * ga - m1 - xhat * m2);
                    }
                }
                (dg, db)
            })
            .collect();
        let (mut dgamma, mut dbeta) = (vec![0f64; c], vec![0f64; c]);
        for (i, (dg, db)) in partial.iter().enumerate() {
            let grp = i % groups;
            for cc in 0..cg {
                dgamma[grp * cg + cc] += dg[cc];
                dbeta[grp * cg + cc] += db[cc];
            }
        }
        let dev = x.device();
        let dx = Tensor::from_vec(dx, dims.as_slice(), dev)?.to_dtype(dtype)?;
        let dgamma = Tensor::from_vec(dgamma, c, dev)?.to_dtype(dtype)?;
        let dbeta = Tensor::from_vec(dbeta, c, dev)?.to_dtype(dtype)?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

/// GroupNorm over `(B, C, ...)` with per-channel affine `gamma`, `beta: (C,)`, differentiable
/// in all three. CPU f32/f64 and CUDA f32/f64/bf16: one fused op ([`group_norm_reference`]
/// is its definition), with f32 statistics for bf16; CPU bf16/f16: the f32 op, rounded once;
/// other devices and dtypes: the reference.
pub fn group_norm(
    xs: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    groups: usize,
    eps: f64,
) -> Result<Tensor> {
    if xs.rank() < 3 {
        candle_core::bail!(
            "group_norm: expected (B, C, ...) input, got {:?}",
            xs.shape()
        );
    }
    let c = xs.dim(1)?;
    if groups == 0 || c % groups != 0 || gamma.dims() != [c] || beta.dims() != [c] {
        candle_core::bail!(
            "group_norm: {c} channels, {groups} groups, gamma {:?}, beta {:?}",
            gamma.shape(),
            beta.shape()
        );
    }
    if xs.device().is_cpu() && matches!(xs.dtype(), DType::BF16 | DType::F16) {
        // 16-bit floats on the CPU: f32 statistics and arithmetic, one rounding.
        let f32s = (
            xs.to_dtype(DType::F32)?,
            gamma.to_dtype(DType::F32)?,
            beta.to_dtype(DType::F32)?,
        );
        return group_norm(&f32s.0, &f32s.1, &f32s.2, groups, eps)?.to_dtype(xs.dtype());
    }
    if !crate::fused_op_supported(xs.device(), xs.dtype()) {
        return group_norm_reference(xs, gamma, beta, groups, eps);
    }
    xs.contiguous()?.apply_op3(
        &gamma.contiguous()?,
        &beta.contiguous()?,
        GroupNormOp { groups, eps },
    )
}
