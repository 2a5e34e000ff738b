//! The fused LeakyReLU against candle's `maximum(x, slope * x)`: values and gradients,
//! including exact zeros (where the maximum splits the gradient); the masked product against
//! candle's product; conv + bias + LeakyReLU as one op against the two ops.

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

/// The two tensors hold the same bits.
fn same(a: &Tensor, b: &Tensor) -> Result<bool> {
    Ok(a.dims() == b.dims()
        && a.flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .map(|v| v.to_bits())
            .eq(b
                .flatten_all()?
                .to_vec1::<f32>()?
                .iter()
                .map(|v| v.to_bits())))
}

#[test]
fn mul_mask_is_candles_product_with_no_gradient_for_the_mask() -> Result<()> {
    let dev = Device::Cpu;
    let x = Var::from_tensor(&Tensor::randn(0f32, 1., (3, 4, 70, 300), &dev)?)?;
    let mask = (Tensor::rand(0f32, 1., x.shape(), &dev)?
        .ge(0.1)?
        .to_dtype(DType::F32)?
        * 1.25)?;
    let r = Tensor::randn(0f32, 1., x.shape(), &dev)?;
    let ours = daa_kernels::mul_mask(x.as_tensor(), &mask)?;
    let theirs = (x.as_tensor() * &mask)?;
    assert!(same(&ours, &theirs)?, "forward");
    let ga = (ours * &r)?.sum_all()?.backward()?;
    let gb = (theirs * &r)?.sum_all()?.backward()?;
    let (Some(a), Some(b)) = (ga.get(x.as_tensor()), gb.get(x.as_tensor())) else {
        panic!("missing gradient");
    };
    assert!(same(a, b)?, "gradient");
    assert!(ga.get(&mask).is_none(), "the mask got a gradient");
    assert!(daa_kernels::mul_mask(x.as_tensor(), &mask.narrow(0, 0, 1)?).is_err());
    Ok(())
}

/// conv2d_bias_leaky_relu gives the bits of leaky_relu(conv2d_bias(..)), forward and every
/// gradient: on the shifted-gemm path (16 channels), the im2col path (3 channels), a
/// stride-2 conv, and a conv whose input takes no gradient (only weight and bias get one).
#[test]
fn conv_bias_leaky_relu_is_the_two_ops_bit_for_bit() -> Result<()> {
    let dev = Device::Cpu;
    for (c, o, stride, input_grad) in [
        (16, 16, 1, true),
        (3, 16, 1, true),
        (16, 8, 2, true),
        (3, 16, 1, false),
    ] {
        let xt = Tensor::randn(0f32, 1., (2, c, 12, 10), &dev)?;
        let x = Var::from_tensor(&xt)?;
        let xin = if input_grad {
            x.as_tensor().clone()
        } else {
            xt
        };
        let w = Var::from_tensor(&Tensor::randn(0f32, 0.3, (o, c, 3, 3), &dev)?)?;
        let b = Var::from_tensor(&Tensor::randn(0f32, 0.3, o, &dev)?)?;
        let fused = daa_kernels::conv2d_bias_leaky_relu(
            &xin,
            w.as_tensor(),
            b.as_tensor(),
            1,
            stride,
            0.2,
        )?;
        let apart = daa_kernels::leaky_relu(
            &daa_kernels::conv2d_bias(&xin, w.as_tensor(), b.as_tensor(), 1, stride)?,
            0.2,
        )?;
        let case = (c, o, stride, input_grad);
        assert!(same(&fused, &apart)?, "forward {case:?}");
        let r = Tensor::randn(0f32, 1., fused.shape(), &dev)?;
        let ga = (fused * &r)?.sum_all()?.backward()?;
        let gb = (apart * &r)?.sum_all()?.backward()?;
        for v in [&w, &b] {
            let (Some(a), Some(bb)) = (ga.get(v.as_tensor()), gb.get(v.as_tensor())) else {
                panic!("missing gradient {case:?}");
            };
            assert!(same(a, bb)?, "gradient {case:?}");
        }
        match (ga.get(x.as_tensor()), gb.get(x.as_tensor())) {
            (Some(a), Some(bb)) => assert!(input_grad && same(a, bb)?, "input gradient {case:?}"),
            (None, None) => assert!(!input_grad, "no input gradient {case:?}"),
            _ => panic!("input gradient on one side only {case:?}"),
        }
    }
    Ok(())
}

#[test]
fn on_pool_runs_on_a_pool_thread_and_returns_the_result() {
    assert_eq!(rayon_thread(), None);
    let (inside, v) = daa_kernels::on_pool(|| (rayon_thread(), 41 + 1));
    assert!(inside.is_some());
    assert_eq!(v, 42);
    // Nested: runs inline.
    assert_eq!(daa_kernels::on_pool(|| daa_kernels::on_pool(|| 7)), 7);
}

fn rayon_thread() -> Option<usize> {
    rayon::current_thread_index()
}
