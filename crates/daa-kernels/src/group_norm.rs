//! GroupNorm as one CPU op with an analytic backward.
//!
//! candle's `GroupNorm` is built from about ten broadcast ops, each a pass over the
//! activation on the CPU, and its backward doubles that; in the diffusion U-Net it cost more
//! than the convolutions. Here forward is one pass per group and backward two (the kernels
//! are shared with `group_norm_silu`, in `norm_act.rs`).

use crate::conv::contiguous_slice;
use crate::norm_act::{self, float::Float, Mode};
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};

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

impl GroupNormOp {
    fn mode(&self) -> Mode {
        Mode {
            groups: self.groups,
            eps: self.eps,
            modulated: false,
            act: false,
        }
    }
}

fn forward<T: Float>(x: &[T], gamma: &[T], beta: &[T], b: usize, c: usize, mode: Mode) -> Vec<T> {
    let params: Vec<T> = gamma.iter().chain(beta).copied().collect();
    norm_act::forward(x, &params, b, c, mode)
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
                    self.mode(),
                ))
            }
            (CpuStorage::F64(x), CpuStorage::F64(g), CpuStorage::F64(be)) => {
                CpuStorage::F64(forward(
                    contiguous_slice(x, l1)?,
                    contiguous_slice(g, l2)?,
                    contiguous_slice(be, l3)?,
                    b,
                    c,
                    self.mode(),
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
        beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            return crate::group_norm_cuda::backward(x, gamma, grad, self.groups, self.eps);
        }
        // One packed backward op (the one `group_norm_silu` uses, without its activation):
        // the same f64 arithmetic as before, read from and written to f32 directly.
        let c = gamma.elem_count();
        let params = Tensor::cat(&[gamma, beta], 0)?;
        let (dx, dparams) = norm_act::backward_op(x, &params, grad, self.mode())?;
        Ok((
            Some(dx),
            Some(dparams.narrow(0, 0, c)?),
            Some(dparams.narrow(0, c, c)?),
        ))
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
