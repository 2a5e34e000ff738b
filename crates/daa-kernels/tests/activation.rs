//! The fused LeakyReLU against candle's `maximum(x, slope * x)`: values and gradients,
//! including exact zeros (where the maximum splits the gradient).

use candle_core::{DType, Device, Result, Tensor, Var};

#[test]
fn leaky_relu_matches_the_reference() -> Result<()> {
    let dev = Device::Cpu;
    // More than one parallel piece, with some exact zeros.
    let x = Tensor::randn(0f64, 1., (3, 5, 70, 300), &dev)?;
    let keep = Tensor::rand(0f64, 1., x.shape(), &dev)?.ge(0.05)?;
    let x = Var::from_tensor(&keep.where_cond(&x, &x.zeros_like()?)?)?;
    let r = Tensor::randn(0f64, 1., x.shape(), &dev)?;
    for slope in [0.2, 0.0] {
        let ours = daa_kernels::leaky_relu(x.as_tensor(), slope)?;
        let theirs = daa_kernels::leaky_relu_reference(x.as_tensor(), slope)?;
        let d = (&ours - &theirs)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert_eq!(d, 0.0, "forward, slope {slope}");
        let ga = (ours * &r)?.sum_all()?.backward()?;
        let gb = (theirs * &r)?.sum_all()?.backward()?;
        let (Some(a), Some(b)) = (ga.get(x.as_tensor()), gb.get(x.as_tensor())) else {
            panic!("missing gradient");
        };
        let d = (a - b)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(d < 1e-15, "gradient, slope {slope}: {d}");
    }
    let x32 = Tensor::randn(0f32, 1., (2, 3), &dev)?;
    let d = (daa_kernels::leaky_relu(&x32, 0.2)? - daa_kernels::leaky_relu_reference(&x32, 0.2)?)?
        .abs()?
        .max_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?;
    assert_eq!(d, 0.0);
    assert!(daa_kernels::leaky_relu(&x32, 1.5).is_err());
    Ok(())
}
