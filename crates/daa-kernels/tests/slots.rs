//! The fused condition (`cat[y, slot A, slot B]` with per-sample swaps) against its reference.

use candle_core::{DType, Device, Tensor, Var};
use daa_kernels::{swap_condition, swap_condition_reference};

type R = candle_core::Result<()>;

fn max_diff(a: &Tensor, b: &Tensor) -> candle_core::Result<f64> {
    (a - b)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()
}

#[test]
fn forward_and_gradients_equal_the_reference() -> R {
    let dev = Device::Cpu;
    for dtype in [DType::F32, DType::F64] {
        let y = Var::from_tensor(&Tensor::randn(0f32, 1., (4, 3, 5, 6), &dev)?.to_dtype(dtype)?)?;
        let a = Var::from_tensor(&Tensor::randn(0f32, 1., (4, 3, 5, 6), &dev)?.to_dtype(dtype)?)?;
        let b = Var::from_tensor(&Tensor::randn(0f32, 1., (4, 3, 5, 6), &dev)?.to_dtype(dtype)?)?;
        let swap = [true, false, false, true];
        // A weight that differs per output element so each gradient entry is distinct.
        let wgt = Tensor::randn(0f32, 1., (4, 9, 5, 6), &dev)?.to_dtype(dtype)?;
        let ours = swap_condition(&y, &a, &b, &swap)?;
        let theirs = swap_condition_reference(&y, &a, &b, &swap)?;
        assert_eq!(ours.dims(), &[4, 9, 5, 6]);
        assert_eq!(max_diff(&ours, &theirs)?, 0.0);
        // Sample 0 is swapped: its slot A is b[0].
        assert_eq!(max_diff(&ours.get(0)?.narrow(0, 3, 3)?, &b.get(0)?)?, 0.0);
        assert_eq!(max_diff(&ours.get(1)?.narrow(0, 3, 3)?, &a.get(1)?)?, 0.0);
        let g1 = (ours * &wgt)?.sum_all()?.backward()?;
        let g2 = (theirs * &wgt)?.sum_all()?.backward()?;
        for v in [&y, &a, &b] {
            let (Some(x1), Some(x2)) = (g1.get(v), g2.get(v)) else {
                panic!("missing gradient");
            };
            assert_eq!(max_diff(x1, x2)?, 0.0);
            assert!(
                x1.abs()?
                    .sum_all()?
                    .to_dtype(DType::F64)?
                    .to_scalar::<f64>()?
                    > 0.0
            );
        }
    }
    Ok(())
}

#[test]
fn non_contiguous_inputs_match_and_bad_shapes_are_errors() -> R {
    let dev = Device::Cpu;
    let y = Tensor::zeros((2, 3, 4, 4), DType::F32, &dev)?;
    let a = Tensor::ones((2, 3, 4, 4), DType::F32, &dev)?;
    let b = Tensor::ones((2, 3, 4, 5), DType::F32, &dev)?;
    assert!(swap_condition(&y, &a, &b, &[true, false]).is_err());
    assert!(swap_condition(&y, &a, &a, &[true]).is_err());
    // Non-contiguous inputs are accepted (made contiguous).
    let at = Tensor::randn(0f32, 1., (2, 3, 4, 4), &dev)?.transpose(2, 3)?;
    let ours = swap_condition(&y, &at, &a, &[false, true])?;
    let theirs = swap_condition_reference(&y, &at, &a, &[false, true])?;
    assert_eq!(max_diff(&ours, &theirs)?, 0.0);
    Ok(())
}
