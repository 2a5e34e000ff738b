//! The fused GroupNorm against its reference: values and all three gradients.

use candle_core::{DType, Device, Result, Tensor, Var};
use daa_kernels::{group_norm, group_norm_reference};

fn diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    (a - b)?
        .abs()?
        .max_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()
}

#[test]
fn fused_group_norm_equals_reference_with_gradients() -> Result<()> {
    let dev = Device::Cpu;
    for (shape, groups) in [
        (vec![2, 8, 5, 3], 4),
        (vec![3, 6, 7], 2),
        (vec![1, 4, 2, 2], 4),
        (vec![2, 16, 4, 4], 1),
    ] {
        let c = shape[1];
        let x = Var::from_tensor(&(Tensor::randn(0f64, 2., shape.as_slice(), &dev)? + 0.5)?)?;
        let g = Var::from_tensor(&Tensor::randn(1f64, 0.5, c, &dev)?)?;
        let b = Var::from_tensor(&Tensor::randn(0f64, 0.5, c, &dev)?)?;
        let ours = group_norm(x.as_tensor(), g.as_tensor(), b.as_tensor(), groups, 1e-5)?;
        let reference =
            group_norm_reference(x.as_tensor(), g.as_tensor(), b.as_tensor(), groups, 1e-5)?;
        assert!(diff(&ours, &reference)? < 1e-10, "{shape:?}");
        let r = Tensor::randn(0f64, 1., ours.shape(), &dev)?;
        let ga = (ours * &r)?.sum_all()?.backward()?;
        let gb = (reference * &r)?.sum_all()?.backward()?;
        for (name, v) in [("x", &x), ("gamma", &g), ("beta", &b)] {
            let (a, bb) = (ga.get(v.as_tensor()), gb.get(v.as_tensor()));
            let (Some(a), Some(bb)) = (a, bb) else {
                panic!("missing {name} gradient")
            };
            assert!(diff(a, bb)? < 1e-9, "{name} gradient {shape:?}");
        }
    }
    // f32 runs the same op.
    let x = Tensor::randn(0f32, 1., (2, 8, 4, 4), &dev)?;
    let (g, b) = (
        Tensor::ones(8, DType::F32, &dev)?,
        Tensor::zeros(8, DType::F32, &dev)?,
    );
    assert!(
        diff(
            &group_norm(&x, &g, &b, 4, 1e-5)?,
            &group_norm_reference(&x, &g, &b, 4, 1e-5)?
        )? < 1e-5
    );
    assert!(group_norm(&x, &g, &b, 3, 1e-5).is_err());
    Ok(())
}
