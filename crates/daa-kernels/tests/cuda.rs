//! The ops on a CUDA device against the CPU: values and gradients. Compiled only with the
//! `cuda` feature, where a missing GPU is a failure, not a skip (run on the GPU machine by
//! scripts/gpu-check.sh).
#![cfg(feature = "cuda")]

use candle_core::{DType, Device, Tensor, Var};

type R = candle_core::Result<()>;

fn gpu() -> Device {
    Device::new_cuda(0).unwrap_or_else(|e| panic!("no CUDA device: {e}"))
}

fn close(a: &Tensor, b: &Tensor, tol: f64) -> candle_core::Result<()> {
    let a = a.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    let b = b.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    let d = (&a - &b)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f64>()?;
    let s = b.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?.max(1.0);
    assert!(d <= tol * s, "max difference {d} (scale {s})");
    Ok(())
}

/// Runs `f` on CPU and CUDA copies of the same inputs; compares outputs and gradients.
fn same_on_both(
    shapes: &[&[usize]],
    f: impl Fn(&[Tensor]) -> candle_core::Result<Tensor>,
    tol: f64,
) -> R {
    let cpu: Vec<Var> = shapes
        .iter()
        .map(|s| Var::from_tensor(&Tensor::randn(0f32, 1., *s, &Device::Cpu)?))
        .collect::<candle_core::Result<_>>()?;
    let dev = gpu();
    let cuda: Vec<Var> = cpu
        .iter()
        .map(|v| Var::from_tensor(&v.as_tensor().to_device(&dev)?))
        .collect::<candle_core::Result<_>>()?;
    let tensors = |vs: &[Var]| vs.iter().map(|v| v.as_tensor().clone()).collect::<Vec<_>>();
    let (yc, yg) = (f(&tensors(&cpu))?, f(&tensors(&cuda))?);
    close(&yg, &yc, tol)?;
    let w = Tensor::randn(0f32, 1., yc.shape(), &Device::Cpu)?;
    let gc = (&yc * &w)?.sum_all()?.backward()?;
    let gg = (&yg * &w.to_device(&dev)?)?.sum_all()?.backward()?;
    for (vc, vg) in cpu.iter().zip(&cuda) {
        let (Some(a), Some(b)) = (gc.get(vc), gg.get(vg)) else {
            panic!("missing gradient");
        };
        close(b, a, tol)?;
    }
    Ok(())
}

#[test]
fn conv2d_matches_cpu() -> R {
    same_on_both(
        &[&[2, 8, 17, 12], &[16, 8, 3, 3]],
        |t| daa_kernels::conv2d(&t[0], &t[1], 1, 1),
        1e-4,
    )
}

#[test]
fn group_norm_matches_cpu() -> R {
    same_on_both(
        &[&[2, 16, 9, 7], &[16], &[16]],
        |t| daa_kernels::group_norm(&t[0], &t[1], &t[2], 4, 1e-5),
        1e-4,
    )
}

#[test]
fn swap_condition_matches_cpu() -> R {
    same_on_both(
        &[&[3, 3, 8, 8], &[3, 3, 8, 8], &[3, 3, 8, 8]],
        |t| daa_kernels::swap_condition(&t[0], &t[1], &t[2], &[true, false, true]),
        0.0,
    )
}
