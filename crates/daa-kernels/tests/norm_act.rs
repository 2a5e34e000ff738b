//! The fused GroupNorm + modulation + SiLU against its candle-op reference: values (bit for bit
//! in f32) and the gradients of all five inputs.

use candle_core::{DType, Device, Result, Tensor, Var};
use daa_kernels::{group_norm_silu, group_norm_silu_reference};

fn diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    (a - b)?
        .abs()?
        .max_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()
}

#[test]
fn fused_norm_act_equals_reference_with_gradients() -> Result<()> {
    let dev = Device::Cpu;
    for (shape, groups, modulated) in [
        (vec![2, 8, 5, 3], 4, true),
        (vec![2, 8, 5, 3], 4, false),
        (vec![3, 6, 7], 2, true),
        (vec![1, 4, 2, 2], 4, false),
        (vec![2, 16, 4, 4], 1, true),
    ] {
        let (b, c) = (shape[0], shape[1]);
        let x = Var::from_tensor(&(Tensor::randn(0f64, 2., shape.as_slice(), &dev)? + 0.5)?)?;
        let g = Var::from_tensor(&Tensor::randn(1f64, 0.5, c, &dev)?)?;
        let be = Var::from_tensor(&Tensor::randn(0f64, 0.5, c, &dev)?)?;
        let s = Var::from_tensor(&Tensor::randn(0f64, 0.5, (b, c), &dev)?)?;
        let t = Var::from_tensor(&Tensor::randn(0f64, 0.5, (b, c), &dev)?)?;
        let m = modulated.then(|| (s.as_tensor(), t.as_tensor()));
        let (xs, gs, bs) = (x.as_tensor(), g.as_tensor(), be.as_tensor());
        let ours = group_norm_silu(xs, gs, bs, groups, 1e-5, m)?;
        let reference = group_norm_silu_reference(xs, gs, bs, groups, 1e-5, m)?;
        assert!(diff(&ours, &reference)? < 1e-12, "{shape:?}");
        let r = Tensor::randn(0f64, 1., ours.shape(), &dev)?;
        let ga = (ours * &r)?.sum_all()?.backward()?;
        let gb = (reference * &r)?.sum_all()?.backward()?;
        let mut vars = vec![("x", &x), ("gamma", &g), ("beta", &be)];
        if modulated {
            vars.extend([("scale", &s), ("shift", &t)]);
        }
        for (name, v) in vars {
            let (Some(a), Some(bb)) = (ga.get(v.as_tensor()), gb.get(v.as_tensor())) else {
                panic!("missing {name} gradient")
            };
            let scale = bb.abs()?.max_all()?.to_scalar::<f64>()?.max(1.0);
            assert!(diff(a, bb)? < 1e-9 * scale, "{name} gradient {shape:?}");
        }
    }
    Ok(())
}

#[test]
fn f32_forward_gives_the_reference_bits_and_close_gradients() -> Result<()> {
    let dev = Device::Cpu;
    let x = Var::from_tensor(&Tensor::randn(0f32, 1., (4, 16, 12, 12), &dev)?)?;
    let g = Var::from_tensor(&Tensor::randn(1f32, 0.3, 16, &dev)?)?;
    let be = Var::from_tensor(&Tensor::randn(0f32, 0.3, 16, &dev)?)?;
    // The residual block's layout: scale and shift as (B, C, 1, 1) slices of one embedding.
    let e = Var::from_tensor(&Tensor::randn(0f32, 0.5, (4, 32, 1, 1), &dev)?)?;
    let (scale, shift) = (e.narrow(1, 0, 16)?, e.narrow(1, 16, 16)?);
    let (xs, gs, bs) = (x.as_tensor(), g.as_tensor(), be.as_tensor());
    let ours = group_norm_silu(xs, gs, bs, 8, 1e-5, Some((&scale, &shift)))?;
    let reference = group_norm_silu_reference(xs, gs, bs, 8, 1e-5, Some((&scale, &shift)))?;
    assert_eq!(diff(&ours, &reference)?, 0.0);
    let r = Tensor::randn(0f32, 1., ours.shape(), &dev)?;
    let ga = (ours * &r)?.sum_all()?.backward()?;
    let gb = (reference * &r)?.sum_all()?.backward()?;
    for (name, v) in [("x", &x), ("gamma", &g), ("beta", &be), ("emb", &e)] {
        let (a, bb) = (
            ga.get(v.as_tensor()).expect("fused gradient"),
            gb.get(v.as_tensor()).expect("reference gradient"),
        );
        let scale = bb.abs()?.max_all()?.to_scalar::<f32>()?.max(1.0) as f64;
        assert!(diff(a, bb)? < 1e-4 * scale, "{name}: {}", diff(a, bb)?);
    }
    Ok(())
}

#[test]
fn bf16_runs_in_f32_and_bad_shapes_are_refused() -> Result<()> {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1., (2, 8, 4, 4), &dev)?;
    let (g, b) = (
        Tensor::ones(8, DType::F32, &dev)?,
        Tensor::zeros(8, DType::F32, &dev)?,
    );
    let f32_out = group_norm_silu(&x, &g, &b, 4, 1e-5, None)?;
    let bf = |t: &Tensor| t.to_dtype(DType::BF16);
    let bf_out = group_norm_silu(&bf(&x)?, &bf(&g)?, &bf(&b)?, 4, 1e-5, None)?;
    assert_eq!(bf_out.dtype(), DType::BF16);
    assert!(diff(&bf_out.to_dtype(DType::F32)?, &f32_out)? < 0.05);
    assert!(group_norm_silu(&x, &g, &b, 3, 1e-5, None).is_err());
    let s = Tensor::zeros((2, 7), DType::F32, &dev)?;
    let err = group_norm_silu(&x, &g, &b, 4, 1e-5, Some((&s, &s))).expect_err("7 != 8 channels");
    assert!(err.to_string().contains("scale"), "{err}");
    Ok(())
}
