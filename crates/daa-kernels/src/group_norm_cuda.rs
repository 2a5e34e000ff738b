//! GroupNorm on CUDA: `kernels/group_norm.cu`, one block per (sample, group), f32 / f64 / bf16
//! storage with f32 (f64) statistics. The forward is `GroupNormOp::cuda_fwd` in group_norm.rs;
//! the backward is [`backward`], one kernel for the input gradient and the per-sample parameter
//! gradients, which candle sums over the batch.

use crate::ptx;
use candle_core::backend::BackendStorage;
use candle_core::cuda::cudarc::driver::{
    CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda::{CudaStorageSlice, WrapErr};
use candle_core::{CudaDevice, CudaStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};

/// Threads per block; the kernels are compiled for exactly this (`BLOCK` in the .cu file).
const BLOCK: u32 = 256;

fn suffix(dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::F32 => Ok("f32"),
        DType::F64 => Ok("f64"),
        DType::BF16 => Ok("bf16"),
        other => {
            candle_core::bail!("group_norm: unsupported dtype {other:?} on CUDA (f32, f64, bf16)")
        }
    }
}

/// The contiguous window of `s` that `l` describes.
fn view<'a, T>(s: &'a CudaSlice<T>, l: &Layout) -> Result<CudaView<'a, T>> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(s.slice(a..b)),
        None => candle_core::bail!("daa_kernels: input must be contiguous"),
    }
}

/// `(B, C, S)` of a `(B, C, ...)` layout.
fn bcs(l: &Layout) -> (usize, usize, usize) {
    let dims = l.shape().dims();
    let (b, c) = (dims[0], dims[1]);
    (b, c, l.shape().elem_count() / (b * c).max(1))
}

/// Launches `gn_{kind}_{dtype}` over `B * groups` blocks. `args` are the three input slices;
/// the output has `out_len` elements.
#[allow(clippy::too_many_arguments)]
fn launch<T: DeviceRepr>(
    dev: &CudaDevice,
    kind: &str,
    dtype: DType,
    inputs: [(&CudaSlice<T>, &Layout); 3],
    out_len: usize,
    (b, c, s): (usize, usize, usize),
    groups: usize,
    eps: f64,
) -> Result<CudaSlice<T>> {
    let name = format!("gn_{kind}_{}", suffix(dtype)?);
    let func = dev.get_or_load_custom_func(&name, ptx::GROUP_NORM_MODULE, ptx::GROUP_NORM)?;
    let [x, p, q] = [
        view(inputs[0].0, inputs[0].1)?,
        view(inputs[1].0, inputs[1].1)?,
        view(inputs[2].0, inputs[2].1)?,
    ];
    // SAFETY: every element is written by the kernel.
    let out = unsafe { dev.alloc::<T>(out_len)? };
    let (c_i, g_i, s_i, b_i) = (c as i32, groups as i32, s as i64, b as i32);
    let mut builder = func.builder();
    builder.arg(&x).arg(&p).arg(&q).arg(&out);
    builder.arg(&c_i).arg(&g_i).arg(&s_i).arg(&eps);
    if kind == "bwd" {
        builder.arg(&b_i);
    }
    let cfg = LaunchConfig {
        grid_dim: ((b * groups) as u32, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: the argument list matches the kernel's signature in kernels/group_norm.cu.
    unsafe { builder.launch(cfg) }.w()?;
    Ok(out)
}

fn check_sizes(l: &Layout, groups: usize) -> Result<(usize, usize, usize)> {
    let (b, c, s) = bcs(l);
    if b * groups > i32::MAX as usize || c > i32::MAX as usize || b == 0 || s == 0 {
        candle_core::bail!("group_norm: shape {:?} out of range on CUDA", l.shape());
    }
    Ok((b, c, s))
}

macro_rules! dispatch3 {
    ($dev:expr, $kind:expr, $s:expr, $l:expr, $out_len:expr, $dims:expr, $groups:expr, $eps:expr) => {{
        let dtype = $s[0].dtype();
        match (&$s[0].slice, &$s[1].slice, &$s[2].slice) {
            (CudaStorageSlice::F32(a), CudaStorageSlice::F32(b), CudaStorageSlice::F32(c)) => {
                CudaStorageSlice::F32(launch(
                    $dev,
                    $kind,
                    dtype,
                    [(a, $l[0]), (b, $l[1]), (c, $l[2])],
                    $out_len,
                    $dims,
                    $groups,
                    $eps,
                )?)
            }
            (CudaStorageSlice::F64(a), CudaStorageSlice::F64(b), CudaStorageSlice::F64(c)) => {
                CudaStorageSlice::F64(launch(
                    $dev,
                    $kind,
                    dtype,
                    [(a, $l[0]), (b, $l[1]), (c, $l[2])],
                    $out_len,
                    $dims,
                    $groups,
                    $eps,
                )?)
            }
            (CudaStorageSlice::BF16(a), CudaStorageSlice::BF16(b), CudaStorageSlice::BF16(c)) => {
                CudaStorageSlice::BF16(launch(
                    $dev,
                    $kind,
                    dtype,
                    [(a, $l[0]), (b, $l[1]), (c, $l[2])],
                    $out_len,
                    $dims,
                    $groups,
                    $eps,
                )?)
            }
            _ => candle_core::bail!(
                "group_norm: inputs of one dtype (f32, f64, bf16) expected on CUDA, got {:?}, {:?}, {:?}",
                $s[0].dtype(),
                $s[1].dtype(),
                $s[2].dtype()
            ),
        }
    }};
}

/// The forward: `y = (x - mean) * rstd * gamma + beta` per (sample, group).
pub(crate) fn forward(
    groups: usize,
    eps: f64,
    s: [&CudaStorage; 3],
    l: [&Layout; 3],
) -> Result<(CudaStorage, Shape)> {
    let dims = check_sizes(l[0], groups)?;
    let dev = s[0].device().clone();
    let n = l[0].shape().elem_count();
    let slice = dispatch3!(&dev, "fwd", s, l, n, dims, groups, eps);
    Ok((CudaStorage { slice, device: dev }, l[0].shape().clone()))
}

/// The backward kernel as an op of `(x, gamma, dy)`: `[dx | dgamma per sample | dbeta per sample]`.
struct GroupNormBwd {
    groups: usize,
    eps: f64,
}

impl CustomOp3 for GroupNormBwd {
    fn name(&self) -> &'static str {
        "daa_kernels::group_norm_bwd"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> Result<(candle_core::CpuStorage, Shape)> {
        candle_core::bail!("daa_kernels::group_norm_bwd is the CUDA backward only")
    }

    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dims = check_sizes(l1, self.groups)?;
        let (b, c, _) = dims;
        let n = l1.shape().elem_count() + 2 * b * c;
        let dev = s1.device().clone();
        let slice = dispatch3!(
            &dev,
            "bwd",
            [s1, s2, s3],
            [l1, l2, l3],
            n,
            dims,
            self.groups,
            self.eps
        );
        Ok((CudaStorage { slice, device: dev }, Shape::from(n)))
    }
}

/// Gradients of `group_norm` with respect to `x`, `gamma` and `beta` on CUDA.
pub(crate) fn backward(
    x: &Tensor,
    gamma: &Tensor,
    grad: &Tensor,
    groups: usize,
    eps: f64,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let (b, c) = (x.dim(0)?, x.dim(1)?);
    let n = x.elem_count();
    let packed = x.contiguous()?.apply_op3_no_bwd(
        &gamma.contiguous()?,
        &grad.contiguous()?,
        &GroupNormBwd { groups, eps },
    )?;
    let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
    let dgamma = packed.narrow(0, n, b * c)?.reshape((b, c))?.sum(0)?;
    let dbeta = packed
        .narrow(0, n + b * c, b * c)?
        .reshape((b, c))?
        .sum(0)?;
    Ok((Some(dx), Some(dgamma), Some(dbeta)))
}
