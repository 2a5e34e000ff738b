//! `swap_condition` on CUDA: `kernels/swap_condition.cu`, one grid-stride copy kernel for the
//! forward (`cat[y, A, B]` with the per-sample swap) and one for the backward (the same swap of
//! the two slot halves). Copies only, so the kernels work on element sizes, not dtypes.

use crate::ptx;
use candle_core::backend::BackendStorage;
use candle_core::cuda::cudarc::driver::{
    CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda::{CudaStorageSlice, WrapErr};
use candle_core::{CudaDevice, CudaStorage, Layout, Result};

const BLOCK: u32 = 256;

fn view<'a, T>(s: &'a CudaSlice<T>, l: &Layout) -> Result<CudaView<'a, T>> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(s.slice(a..b)),
        None => candle_core::bail!("daa_kernels: input must be contiguous"),
    }
}

fn launch_config(total: usize) -> LaunchConfig {
    let blocks = total.div_ceil(BLOCK as usize).clamp(1, 65_535) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Kernel name suffix for the element size of `T`.
fn width<T>() -> Result<&'static str> {
    match std::mem::size_of::<T>() {
        2 => Ok("u16"),
        4 => Ok("u32"),
        8 => Ok("u64"),
        n => candle_core::bail!("swap_condition: no CUDA kernel for {n}-byte elements"),
    }
}

fn flags(dev: &CudaDevice, swap: &[bool]) -> Result<CudaSlice<u8>> {
    let v: Vec<u8> = swap.iter().map(|&s| s as u8).collect();
    dev.clone_htod(&v)
}

#[allow(clippy::too_many_arguments)]
fn swap_cat<T: DeviceRepr>(
    dev: &CudaDevice,
    (y, ly): (&CudaSlice<T>, &Layout),
    (a, la): (&CudaSlice<T>, &Layout),
    (b, lb): (&CudaSlice<T>, &Layout),
    swap: &[bool],
    ny: usize,
    ns: usize,
) -> Result<CudaSlice<T>> {
    let func = dev.get_or_load_custom_func(
        &format!("swap_cat_{}", width::<T>()?),
        ptx::SWAP_CONDITION_MODULE,
        ptx::SWAP_CONDITION,
    )?;
    let (y, a, b) = (view(y, ly)?, view(a, la)?, view(b, lb)?);
    let flags = flags(dev, swap)?;
    let total = swap.len() * (ny + 2 * ns);
    // SAFETY: the kernel writes every element.
    let out = unsafe { dev.alloc::<T>(total)? };
    let (n, ny, ns) = (swap.len() as i64, ny as i64, ns as i64);
    let mut builder = func.builder();
    builder.arg(&y).arg(&a).arg(&b).arg(&flags).arg(&out);
    builder.arg(&n).arg(&ny).arg(&ns);
    // SAFETY: the arguments match kernels/swap_condition.cu.
    unsafe { builder.launch(launch_config(total)) }.w()?;
    Ok(out)
}

fn swap_halves<T: DeviceRepr>(
    dev: &CudaDevice,
    (x, lx): (&CudaSlice<T>, &Layout),
    swap: &[bool],
    half: usize,
) -> Result<CudaSlice<T>> {
    let func = dev.get_or_load_custom_func(
        &format!("swap_halves_{}", width::<T>()?),
        ptx::SWAP_CONDITION_MODULE,
        ptx::SWAP_CONDITION,
    )?;
    let x = view(x, lx)?;
    let flags = flags(dev, swap)?;
    let total = swap.len() * 2 * half;
    // SAFETY: the kernel writes every element.
    let out = unsafe { dev.alloc::<T>(total)? };
    let (n, half) = (swap.len() as i64, half as i64);
    let mut builder = func.builder();
    builder.arg(&x).arg(&flags).arg(&out).arg(&n).arg(&half);
    // SAFETY: the arguments match kernels/swap_condition.cu.
    unsafe { builder.launch(launch_config(total)) }.w()?;
    Ok(out)
}

macro_rules! by_dtype {
    ($slice:expr, $v:ident => $body:expr, [$($var:ident),*]) => {
        match $slice {
            $(CudaStorageSlice::$var($v) => CudaStorageSlice::$var($body),)*
            _ => candle_core::bail!("swap_condition: unsupported dtype on CUDA (f32, f64, bf16, f16)"),
        }
    };
}

/// Forward of `SwapCat`: `(y, a, b)` to `cat[y, A, B]`; `ny`, `ns` elements per sample of `y`
/// and of each slot.
pub(crate) fn forward(
    s: [&CudaStorage; 3],
    l: [&Layout; 3],
    swap: &[bool],
    ny: usize,
    ns: usize,
) -> Result<CudaStorage> {
    let dev = s[0].device().clone();
    if s[1].dtype() != s[0].dtype() || s[2].dtype() != s[0].dtype() {
        candle_core::bail!("swap_condition: mixed dtypes");
    }
    macro_rules! arm {
        ($var:ident) => {
            match (&s[1].slice, &s[2].slice) {
                (CudaStorageSlice::$var(a), CudaStorageSlice::$var(b)) => (a, b),
                _ => candle_core::bail!("swap_condition: mixed dtypes"),
            }
        };
    }
    let slice = match &s[0].slice {
        CudaStorageSlice::F32(y) => {
            let (a, b) = arm!(F32);
            CudaStorageSlice::F32(swap_cat(
                &dev,
                (y, l[0]),
                (a, l[1]),
                (b, l[2]),
                swap,
                ny,
                ns,
            )?)
        }
        CudaStorageSlice::F64(y) => {
            let (a, b) = arm!(F64);
            CudaStorageSlice::F64(swap_cat(
                &dev,
                (y, l[0]),
                (a, l[1]),
                (b, l[2]),
                swap,
                ny,
                ns,
            )?)
        }
        CudaStorageSlice::BF16(y) => {
            let (a, b) = arm!(BF16);
            CudaStorageSlice::BF16(swap_cat(
                &dev,
                (y, l[0]),
                (a, l[1]),
                (b, l[2]),
                swap,
                ny,
                ns,
            )?)
        }
        CudaStorageSlice::F16(y) => {
            let (a, b) = arm!(F16);
            CudaStorageSlice::F16(swap_cat(
                &dev,
                (y, l[0]),
                (a, l[1]),
                (b, l[2]),
                swap,
                ny,
                ns,
            )?)
        }
        _ => candle_core::bail!(
            "swap_condition: unsupported dtype {:?} on CUDA (f32, f64, bf16, f16)",
            s[0].dtype()
        ),
    };
    Ok(CudaStorage { slice, device: dev })
}

/// Forward of `SwapHalves`: per flagged sample, the two halves of `half` elements exchanged.
pub(crate) fn halves(
    s: &CudaStorage,
    l: &Layout,
    swap: &[bool],
    half: usize,
) -> Result<CudaStorage> {
    let dev = s.device().clone();
    let slice =
        by_dtype!(&s.slice, x => swap_halves(&dev, (x, l), swap, half)?, [F32, F64, BF16, F16]);
    Ok(CudaStorage { slice, device: dev })
}
