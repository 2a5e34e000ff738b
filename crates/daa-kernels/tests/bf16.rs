//! bf16 on the CPU: every op accepts bf16 tensors, keeps the dtype (outputs and gradients), and
//! tracks the f32 result within bf16 rounding. The CUDA twins are in tests/cuda.rs.

use candle_core::{DType, Device, Result, Tensor, Var};

/// Max |a - b| over max(|b|, 1).
fn rel_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    let (a, b) = (a.to_dtype(DType::F64)?, b.to_dtype(DType::F64)?);
    let d = (&a - &b)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f64>()?;
    Ok(d / b.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?.max(1.0))
}

/// `f` on f32 inputs and on the same inputs rounded to bf16: outputs and gradients compared.
fn tracks_f32(
    shapes: &[&[usize]],
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    tol: f64,
) -> Result<()> {
    let dev = Device::Cpu;
    let f32s: Vec<Var> = shapes
        .iter()
        .map(|s| Var::from_tensor(&Tensor::randn(0f32, 1., *s, &dev)?))
        .collect::<Result<_>>()?;
    let bf16s: Vec<Var> = f32s
        .iter()
        .map(|v| Var::from_tensor(&v.as_tensor().to_dtype(DType::BF16)?))
        .collect::<Result<_>>()?;
    let ts = |vs: &[Var]| vs.iter().map(|v| v.as_tensor().clone()).collect::<Vec<_>>();
    let (y32, y16) = (f(&ts(&f32s))?, f(&ts(&bf16s))?);
    assert_eq!(y16.dtype(), DType::BF16);
    let d = rel_diff(&y16, &y32)?;
    assert!(d <= tol, "forward: {d:e} > {tol:e}");
    let w = Tensor::randn(0f32, 1., y32.shape(), &dev)?;
    let g32 = (&y32 * &w)?.sum_all()?.backward()?;
    let g16 = (y16.to_dtype(DType::F32)? * &w)?.sum_all()?.backward()?;
    for (i, (a, b)) in f32s.iter().zip(&bf16s).enumerate() {
        let (Some(a), Some(b)) = (g32.get(a), g16.get(b)) else {
            panic!("missing gradient of input {i}");
        };
        assert_eq!(b.dtype(), DType::BF16, "gradient {i}");
        let d = rel_diff(b, a)?;
        assert!(d <= tol, "gradient {i}: {d:e} > {tol:e}");
    }
    Ok(())
}

#[test]
fn conv2d_bf16_tracks_f32() -> Result<()> {
    tracks_f32(
        &[&[2, 8, 11, 9], &[6, 8, 3, 3]],
        |t| daa_kernels::conv2d(&t[0], &t[1], 1, 1),
        3e-2,
    )?;
    tracks_f32(
        &[&[1, 4, 10, 10], &[5, 4, 3, 3]],
        |t| daa_kernels::conv2d(&t[0], &t[1], 0, 2),
        3e-2,
    )
}

#[test]
fn group_norm_bf16_tracks_f32() -> Result<()> {
    tracks_f32(
        &[&[2, 16, 6, 5], &[16], &[16]],
        |t| daa_kernels::group_norm(&((&t[0] * 3.0)? + 2.0)?, &t[1], &t[2], 4, 1e-5),
        5e-2,
    )
}

#[test]
fn swap_condition_bf16_is_exact_on_rounded_inputs() -> Result<()> {
    let dev = Device::Cpu;
    let t = |c| Tensor::randn(0f32, 1., (3, c, 4, 5), &dev)?.to_dtype(DType::BF16);
    let (y, a, b) = (t(3)?, t(3)?, t(3)?);
    let swap = [true, false, true];
    let ours = daa_kernels::swap_condition(&y, &a, &b, &swap)?;
    assert_eq!(ours.dtype(), DType::BF16);
    let f32s = daa_kernels::swap_condition(
        &y.to_dtype(DType::F32)?,
        &a.to_dtype(DType::F32)?,
        &b.to_dtype(DType::F32)?,
        &swap,
    )?;
    assert_eq!(rel_diff(&ours, &f32s)?, 0.0);
    Ok(())
}

/// Conv autocast: an f32 conv under `conv_autocast(BF16)` equals the f32 conv of the inputs
/// rounded to bf16 with its output rounded to bf16, returns f32 with f32 gradients, differs
/// from the plain f32 conv, and ends with the guard.
#[test]
fn conv_autocast_computes_in_bf16_and_returns_f32() -> Result<()> {
    let dev = Device::Cpu;
    let x = Var::from_tensor(&Tensor::randn(0f32, 1., (2, 5, 9, 7), &dev)?)?;
    let w = Var::from_tensor(&Tensor::randn(0f32, 0.3, (4, 5, 3, 3), &dev)?)?;
    let b = Var::from_tensor(&Tensor::randn(0f32, 1., 4, &dev)?)?;
    let plain = daa_kernels::conv2d_bias(&x, &w, &b, 1, 1)?;
    let cast = {
        let _guard = daa_kernels::conv_autocast(DType::BF16);
        assert_eq!(daa_kernels::conv_autocast_dtype(), Some(DType::BF16));
        daa_kernels::conv2d_bias(&x, &w, &b, 1, 1)?
    };
    assert_eq!(
        daa_kernels::conv_autocast_dtype(),
        None,
        "the guard restores"
    );
    assert_eq!(cast.dtype(), DType::F32);
    let round = |t: &Tensor| t.to_dtype(DType::BF16)?.to_dtype(DType::F32);
    let expect = (round(&daa_kernels::conv2d(&round(&x)?, &round(&w)?, 1, 1)?)?
        .broadcast_add(&b.reshape((1, 4, 1, 1))?))?;
    assert!(rel_diff(&cast, &expect)? < 1e-6, "autocast = rounded conv");
    let d = rel_diff(&cast, &plain)?;
    assert!(
        d > 0.0 && d < 2e-2,
        "bf16 differs from f32 within rounding: {d}"
    );
    let grads = cast.sqr()?.sum_all()?.backward()?;
    for v in [&x, &w, &b] {
        let g = grads
            .get(v.as_tensor())
            .ok_or_else(|| candle_core::Error::Msg("no gradient".into()))?;
        assert_eq!(g.dtype(), DType::F32);
    }
    Ok(())
}
