//! 2x2 average pooling and nearest x2 upsampling against candle's ops: the same bits forward
//! and backward, f32 and f64.

use candle_core::{DType, Device, Result, Tensor, Var};

/// candle's nearest x2 upsampling as a broadcast (as daa_diffusion wrote it before this op).
fn candle_up(xs: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = xs.dims4()?;
    xs.reshape((b, c, h, 1, w, 1))?
        .broadcast_as((b, c, h, 2, w, 2))?
        .reshape((b, c, 2 * h, 2 * w))
}

fn bits(t: &Tensor) -> Result<Vec<u64>> {
    Ok(t.flatten_all()?
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?
        .iter()
        .map(|v| v.to_bits())
        .collect())
}

#[test]
fn pool_and_upsample_match_candle_bit_for_bit() -> Result<()> {
    let dev = Device::Cpu;
    for dtype in [DType::F32, DType::F64] {
        for (b, c, h, w) in [(2, 3, 8, 6), (1, 16, 48, 48), (3, 2, 2, 4)] {
            let x =
                Var::from_tensor(&Tensor::randn(0f32, 1., (b, c, h, w), &dev)?.to_dtype(dtype)?)?;
            let case = (dtype, b, c, h, w);
            // Pooling.
            let ours = daa_kernels::avg_pool2x2(x.as_tensor())?;
            let theirs = x.as_tensor().avg_pool2d(2)?;
            assert_eq!(bits(&ours)?, bits(&theirs)?, "pool forward {case:?}");
            let r = Tensor::randn(0f32, 1., ours.shape(), &dev)?.to_dtype(dtype)?;
            let ga = (ours * &r)?.sum_all()?.backward()?;
            let gb = (theirs * &r)?.sum_all()?.backward()?;
            let (Some(a), Some(bb)) = (ga.get(x.as_tensor()), gb.get(x.as_tensor())) else {
                panic!("missing gradient {case:?}");
            };
            assert_eq!(bits(a)?, bits(bb)?, "pool gradient {case:?}");
            // Upsampling.
            let ours = daa_kernels::upsample_nearest2x(x.as_tensor(), candle_up)?;
            let theirs = candle_up(x.as_tensor())?;
            assert_eq!(bits(&ours)?, bits(&theirs)?, "upsample forward {case:?}");
            let r = Tensor::randn(0f32, 1., ours.shape(), &dev)?.to_dtype(dtype)?;
            let ga = (ours * &r)?.sum_all()?.backward()?;
            let gb = (theirs * &r)?.sum_all()?.backward()?;
            let (Some(a), Some(bb)) = (ga.get(x.as_tensor()), gb.get(x.as_tensor())) else {
                panic!("missing gradient {case:?}");
            };
            assert_eq!(bits(a)?, bits(bb)?, "upsample gradient {case:?}");
        }
    }
    // Odd sides fall back to candle (which drops the last row/column).
    let x = Tensor::randn(0f32, 1., (1, 2, 5, 7), &dev)?;
    assert_eq!(
        bits(&daa_kernels::avg_pool2x2(&x)?)?,
        bits(&x.avg_pool2d(2)?)?
    );
    Ok(())
}
