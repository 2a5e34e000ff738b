//! The ops on a CUDA device against the CPU: values and gradients, in f32, f64 and bf16.
//! Compiled only with the `cuda` feature, where a missing GPU is a failure, not a skip (run on
//! the GPU machine by scripts/gpu-check.sh). With the `cudnn` feature `conv2d` runs cuDNN's
//! forward, backward-data and backward-filter; without it, candle's CUDA conv.
#![cfg(feature = "cuda")]

use candle_core::{DType, Device, Tensor, Var};
use std::sync::Mutex;

type R = candle_core::Result<()>;

/// The conv tests switch process-wide cuDNN settings (TF32, benchmark): one at a time.
static CONV_SETTINGS: Mutex<()> = Mutex::new(());

fn gpu() -> Device {
    Device::new_cuda(0).unwrap_or_else(|e| panic!("no CUDA device: {e}"))
}

/// Max |a - b| over max(|b|, 1): a relative error at the scale of the values.
fn rel_diff(a: &Tensor, b: &Tensor) -> candle_core::Result<f64> {
    let a = a.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    let b = b.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    let d = (&a - &b)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f64>()?;
    let s = b.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?.max(1.0);
    Ok(d / s)
}

fn close(what: &str, a: &Tensor, b: &Tensor, tol: f64) -> R {
    let d = rel_diff(a, b)?;
    assert!(d <= tol, "{what}: relative difference {d:e} > {tol:e}");
    Ok(())
}

/// Runs `f` on f64 CPU copies of random inputs (the reference) and on CUDA copies in `dtype`;
/// compares the outputs and the gradients of every input at tolerance `tol`.
fn same_on_both(
    shapes: &[&[usize]],
    dtype: DType,
    f: impl Fn(&[Tensor]) -> candle_core::Result<Tensor>,
    tol: f64,
) -> R {
    let cpu: Vec<Var> = shapes
        .iter()
        .map(|s| Var::from_tensor(&Tensor::randn(0f64, 1., *s, &Device::Cpu)?))
        .collect::<candle_core::Result<_>>()?;
    let dev = gpu();
    let cuda: Vec<Var> = cpu
        .iter()
        .map(|v| Var::from_tensor(&v.as_tensor().to_dtype(dtype)?.to_device(&dev)?))
        .collect::<candle_core::Result<_>>()?;
    let tensors = |vs: &[Var]| vs.iter().map(|v| v.as_tensor().clone()).collect::<Vec<_>>();
    let (yc, yg) = (f(&tensors(&cpu))?, f(&tensors(&cuda))?);
    assert_eq!(yg.dtype(), dtype, "the op must keep the input dtype");
    close("forward", &yg, &yc, tol)?;
    let w = Tensor::randn(0f64, 1., yc.shape(), &Device::Cpu)?;
    let gc = (&yc * &w)?.sum_all()?.backward()?;
    let wg = w.to_dtype(dtype)?.to_device(&dev)?;
    let gg = (&yg * &wg)?.sum_all()?.backward()?;
    for (i, (vc, vg)) in cpu.iter().zip(&cuda).enumerate() {
        let (Some(a), Some(b)) = (gc.get(vc), gg.get(vg)) else {
            panic!("missing gradient of input {i}");
        };
        assert_eq!(b.dtype(), dtype, "gradient {i} must keep the input dtype");
        close(&format!("gradient of input {i}"), b, a, tol)?;
    }
    Ok(())
}

/// Conv geometries: (input shape, weight shape, padding, stride).
const CONVS: [(&[usize], &[usize], usize, usize); 5] = [
    (&[2, 8, 17, 12], &[16, 8, 3, 3], 1, 1),
    (&[3, 5, 16, 16], &[7, 5, 3, 3], 1, 2),
    (&[1, 4, 9, 11], &[6, 4, 1, 1], 0, 1),
    (&[2, 9, 8, 8], &[3, 9, 3, 3], 0, 1),
    (&[2, 64, 32, 32], &[64, 64, 3, 3], 1, 1),
];

fn conv_cases(dtype: DType, tf32: bool, benchmark: bool, tol: f64) -> R {
    let _guard = CONV_SETTINGS.lock().unwrap_or_else(|e| e.into_inner());
    daa_kernels::set_conv_tf32(tf32);
    daa_kernels::set_conv_benchmark(benchmark);
    for (x, w, p, s) in CONVS {
        // Twice: the second call runs from the cached plan.
        for _ in 0..2 {
            same_on_both(
                &[x, w],
                dtype,
                |t| daa_kernels::conv2d(&t[0], &t[1], p, s),
                tol,
            )?;
        }
    }
    daa_kernels::set_conv_tf32(true);
    daa_kernels::set_conv_benchmark(true);
    Ok(())
}

#[test]
fn conv2d_matches_cpu() -> R {
    conv_cases(DType::F32, false, true, 1e-4)
}

#[test]
fn conv2d_matches_cpu_with_heuristic_algorithms() -> R {
    conv_cases(DType::F32, false, false, 1e-4)
}

#[test]
fn conv2d_tf32_is_close_to_cpu() -> R {
    conv_cases(DType::F32, true, true, 1e-2)
}

#[test]
fn conv2d_f64_matches_cpu() -> R {
    conv_cases(DType::F64, false, true, 1e-10)
}

#[test]
fn conv2d_bf16_is_close_to_cpu() -> R {
    conv_cases(DType::BF16, true, true, 3e-2)
}

/// GroupNorm cases: (input shape, groups); one group spans many blocks' worth of elements,
/// another a few, and a 3-D input.
const GROUP_NORMS: [(&[usize], usize); 4] = [
    (&[2, 16, 9, 7], 4),
    (&[3, 64, 33, 17], 32),
    (&[2, 512, 4, 4], 32),
    (&[4, 6, 50], 3),
];

fn group_norm_cases(dtype: DType, tol: f64) -> R {
    for (shape, groups) in GROUP_NORMS {
        let c = shape[1];
        same_on_both(
            &[shape, &[c], &[c]],
            dtype,
            |t| {
                // Off-centre inputs: a one-pass variance would lose digits here.
                let x = (&t[0] * 3.0)? + 5.0;
                daa_kernels::group_norm(&x?, &t[1], &t[2], groups, 1e-5)
            },
            tol,
        )?;
    }
    Ok(())
}

#[test]
fn group_norm_matches_cpu() -> R {
    group_norm_cases(DType::F32, 1e-4)
}

#[test]
fn group_norm_f64_matches_cpu() -> R {
    group_norm_cases(DType::F64, 1e-10)
}

#[test]
fn group_norm_bf16_is_close_to_cpu() -> R {
    group_norm_cases(DType::BF16, 5e-2)
}

fn swap_cases(dtype: DType, tol: f64) -> R {
    same_on_both(
        &[&[3, 3, 8, 8], &[3, 3, 8, 8], &[3, 3, 8, 8]],
        dtype,
        |t| daa_kernels::swap_condition(&t[0], &t[1], &t[2], &[true, false, true]),
        tol,
    )?;
    same_on_both(
        &[&[5, 2, 7, 9], &[5, 4, 7, 9], &[5, 4, 7, 9]],
        dtype,
        |t| daa_kernels::swap_condition(&t[0], &t[1], &t[2], &[false, true, true, false, true]),
        tol,
    )
}

#[test]
fn swap_condition_matches_cpu() -> R {
    swap_cases(DType::F32, 0.0)
}

#[test]
fn swap_condition_f64_and_bf16_match_cpu() -> R {
    swap_cases(DType::F64, 0.0)?;
    // bf16: only the rounding of the inputs to bf16 (the op itself copies).
    swap_cases(DType::BF16, 1e-2)
}

/// The fused ops on CUDA equal their candle-op references on CUDA, in the same dtype.
#[test]
fn fused_ops_equal_their_references_on_cuda() -> R {
    let dev = gpu();
    for dtype in [DType::F32, DType::BF16] {
        let x = (Tensor::randn(0f32, 1., (2, 32, 16, 16), &dev)? * 2.0)?.to_dtype(dtype)?;
        let g = Tensor::randn(1f32, 0.2, 32, &dev)?.to_dtype(dtype)?;
        let b = Tensor::randn(0f32, 0.2, 32, &dev)?.to_dtype(dtype)?;
        let ours = daa_kernels::group_norm(&x, &g, &b, 8, 1e-5)?;
        let theirs = daa_kernels::group_norm_reference(
            &x.to_dtype(DType::F32)?,
            &g.to_dtype(DType::F32)?,
            &b.to_dtype(DType::F32)?,
            8,
            1e-5,
        )?;
        let tol = if dtype == DType::F32 { 1e-5 } else { 3e-2 };
        close("group_norm vs reference", &ours, &theirs, tol)?;
        let (y, a, c) = (x.narrow(1, 0, 3)?, x.narrow(1, 3, 3)?, x.narrow(1, 6, 3)?);
        let ours = daa_kernels::swap_condition(&y, &a, &c, &[true, false])?;
        let theirs = daa_kernels::swap_condition_reference(&y, &a, &c, &[true, false])?;
        close("swap_condition vs reference", &ours, &theirs, 0.0)?;
    }
    Ok(())
}
