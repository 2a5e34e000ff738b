//! The CPU upsampling op against the candle-op reference: values and input gradients, for
//! square, odd, single-row and single-pixel inputs.

use candle_core::{DType, Device, Result, Tensor, Var};
use daa_backbones::{
    upsample_bilinear2x_align_corners, upsample_bilinear2x_align_corners_reference,
};

fn diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    (a - b)?
        .abs()?
        .max_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()
}

#[test]
fn fused_upsampling_matches_the_matrix_product_reference() -> Result<()> {
    let dev = Device::Cpu;
    for (shape, tol) in [
        ((2, 3, 6, 6), 1e-6),
        ((1, 2, 5, 7), 1e-6),
        ((2, 1, 1, 4), 1e-6),
        ((1, 1, 1, 1), 1e-6),
        ((3, 4, 12, 9), 1e-6),
    ] {
        for dtype in [DType::F32, DType::F64] {
            let x = Var::from_tensor(&Tensor::randn(0f32, 1., shape, &dev)?.to_dtype(dtype)?)?;
            let ours = upsample_bilinear2x_align_corners(x.as_tensor())?;
            let reference = upsample_bilinear2x_align_corners_reference(x.as_tensor())?;
            assert_eq!(ours.dims(), reference.dims());
            assert!(diff(&ours, &reference)? < tol, "{shape:?} {dtype:?} values");
            let r = Tensor::randn(0f32, 1., ours.shape(), &dev)?.to_dtype(dtype)?;
            let ga = (ours * &r)?.sum_all()?.backward()?;
            let gb = (reference * &r)?.sum_all()?.backward()?;
            let (Some(a), Some(b)) = (ga.get(x.as_tensor()), gb.get(x.as_tensor())) else {
                panic!("missing gradient {shape:?}")
            };
            assert!(
                diff(a, b)? < 1e-5,
                "{shape:?} {dtype:?} gradient: {}",
                diff(a, b)?
            );
        }
    }
    Ok(())
}

#[test]
fn corners_are_copied_exactly() -> Result<()> {
    // align_corners: the four corners of the output are the input's corners.
    let x = Tensor::arange(0f32, 12., &Device::Cpu)?.reshape((1, 1, 3, 4))?;
    let y = upsample_bilinear2x_align_corners(&x)?
        .squeeze(0)?
        .squeeze(0)?;
    let v = y.to_vec2::<f32>()?;
    assert_eq!((v[0][0], v[0][7], v[5][0], v[5][7]), (0.0, 3.0, 8.0, 11.0));
    Ok(())
}
