//! conv2d against candle's conv2d: values, and gradients for input and weight.

use candle_core::{DType, Device, Result, Tensor, Var};
use daa_kernels::{col2im, conv2d, im2col, Conv2dGeometry};

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    (a - b)?
        .abs()?
        .max_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()
}

const CASES: [(usize, usize, usize, usize, usize, usize, usize); 11] = [
    // (batch, channels, height, width, out channels, kernel, padding); strides below
    (2, 3, 9, 7, 4, 3, 1),
    (1, 5, 8, 8, 2, 1, 0),
    (3, 2, 6, 10, 3, 3, 0),
    (2, 4, 8, 6, 8, 2, 0),
    (1, 3, 5, 5, 2, 5, 2),
    (2, 2, 7, 9, 3, 3, 1),
    // Stride 1 with at least WIDE_MIN_CHANNELS (8) channels: the shifted-gemm path, for the
    // forward (input channels), the input gradient (output channels) or both.
    (2, 8, 9, 7, 8, 3, 1),
    (1, 16, 6, 10, 9, 3, 0),
    (2, 8, 7, 7, 3, 5, 2),
    (1, 3, 8, 5, 8, 3, 2),
    (3, 9, 5, 6, 8, 2, 1),
];
const STRIDES: [usize; 11] = [1, 1, 1, 2, 1, 2, 1, 1, 1, 1, 1];

#[test]
fn forward_and_gradients_match_candle() -> Result<()> {
    let dev = Device::Cpu;
    for ((b, c, h, w, o, k, p), s) in CASES.into_iter().zip(STRIDES) {
        let x = Var::from_tensor(&Tensor::randn(0f64, 1., (b, c, h, w), &dev)?)?;
        let wt = Var::from_tensor(&Tensor::randn(0f64, 1., (o, c, k, k), &dev)?)?;
        let ours = conv2d(x.as_tensor(), wt.as_tensor(), p, s)?;
        let theirs = x.as_tensor().conv2d(wt.as_tensor(), p, s, 1, 1)?;
        assert_eq!(ours.dims(), theirs.dims());
        assert!(
            max_abs_diff(&ours, &theirs)? < 1e-10,
            "forward {:?}",
            (b, c, h, w, o, k, p, s)
        );
        // A weighting so every output element matters differently.
        let r = Tensor::randn(0f64, 1., ours.shape(), &dev)?;
        let g_ours = (ours * &r)?.sum_all()?.backward()?;
        let g_theirs = (theirs * &r)?.sum_all()?.backward()?;
        for (name, v) in [("input", &x), ("weight", &wt)] {
            let a = g_ours
                .get(v.as_tensor())
                .ok_or_else(|| candle_core::Error::Msg(format!("no {name} grad")))?;
            let bb = g_theirs
                .get(v.as_tensor())
                .ok_or_else(|| candle_core::Error::Msg(format!("no {name} grad")))?;
            assert!(
                max_abs_diff(a, bb)? < 1e-9,
                "{name} gradient {:?}",
                (b, c, h, w, o, k, p, s)
            );
        }
    }
    Ok(())
}

#[test]
fn f32_matches_and_bad_shapes_are_errors() -> Result<()> {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1., (2, 8, 16, 16), &dev)?;
    let w = Tensor::randn(0f32, 1., (16, 8, 3, 3), &dev)?;
    let d = max_abs_diff(&conv2d(&x, &w, 1, 1)?, &x.conv2d(&w, 1, 1, 1, 1)?)?;
    assert!(d < 1e-4, "{d}");
    assert!(conv2d(&x, &Tensor::zeros((4, 3, 3, 3), DType::F32, &dev)?, 1, 1).is_err());
    assert!(conv2d(&x, &Tensor::zeros((4, 8, 3, 2), DType::F32, &dev)?, 1, 1).is_err());
    let g = Conv2dGeometry {
        b: 1,
        c: 1,
        h: 2,
        w: 2,
        k: 5,
        stride: 1,
        padding: 0,
    };
    assert!(im2col(&Tensor::zeros((1, 1, 2, 2), DType::F32, &dev)?, g).is_err());
    Ok(())
}

/// col2im is the adjoint of im2col: <im2col(x), y> == <x, col2im(y)>.
#[test]
fn col2im_is_the_adjoint_of_im2col() -> Result<()> {
    let dev = Device::Cpu;
    let g = Conv2dGeometry {
        b: 2,
        c: 3,
        h: 7,
        w: 5,
        k: 3,
        stride: 2,
        padding: 1,
    };
    let x = Tensor::randn(0f64, 1., (2, 3, 7, 5), &dev)?;
    let y = Tensor::randn(0f64, 1., (2, g.oh() * g.ow(), g.ckk()), &dev)?;
    let lhs = (im2col(&x, g)? * &y)?.sum_all()?.to_scalar::<f64>()?;
    let rhs = (x * col2im(&y, g)?)?.sum_all()?.to_scalar::<f64>()?;
    assert!((lhs - rhs).abs() < 1e-9, "{lhs} vs {rhs}");
    Ok(())
}

/// The chunked im2col path (any chunk length, including runs that split output rows) equals
/// the single-chunk path, forward and both gradients.
#[test]
fn chunked_equals_unchunked() -> Result<()> {
    let dev = Device::Cpu;
    for ((b, c, h, w, o, k, p), s) in CASES.into_iter().zip(STRIDES) {
        let x = Var::from_tensor(&Tensor::randn(0f64, 1., (b, c, h, w), &dev)?)?;
        let wt = Var::from_tensor(&Tensor::randn(0f64, 1., (o, c, k, k), &dev)?)?;
        let whole = usize::MAX;
        let full = daa_kernels::conv2d_chunked(x.as_tensor(), wt.as_tensor(), p, s, whole)?;
        let r = Tensor::randn(0f64, 1., full.shape(), &dev)?;
        let g_full = (&full * &r)?.sum_all()?.backward()?;
        for chunk in [1, 3, 7] {
            let part = daa_kernels::conv2d_chunked(x.as_tensor(), wt.as_tensor(), p, s, chunk)?;
            let case = (b, c, h, w, o, k, p, s, chunk);
            assert!(max_abs_diff(&part, &full)? < 1e-12, "forward {case:?}");
            let g_part = (&part * &r)?.sum_all()?.backward()?;
            for v in [&x, &wt] {
                let (a, bb) = (g_part.get(v.as_tensor()), g_full.get(v.as_tensor()));
                let (Some(a), Some(bb)) = (a, bb) else {
                    panic!("missing gradient {case:?}");
                };
                assert!(max_abs_diff(a, bb)? < 1e-10, "gradient {case:?}");
            }
        }
    }
    Ok(())
}

/// The default chunk keeps one thread's im2col scratch within the budget even for the paper
/// U-Net's widest conv on a 512x512 tile (which needed 1.2 GB as one im2col matrix).
#[test]
fn scratch_is_bounded() {
    let g = Conv2dGeometry {
        b: 1,
        c: 1024,
        h: 512,
        w: 512,
        k: 3,
        stride: 1,
        padding: 1,
    };
    let n = daa_kernels::conv_chunk_len(&g, 4);
    assert!(
        n >= 1 && n * g.ckk() * 4 <= daa_kernels::CONV_SCRATCH_BYTES,
        "{n}"
    );
    assert!(g.oh() * g.ow() * g.ckk() * 4 > 100 * daa_kernels::CONV_SCRATCH_BYTES);
}

/// The fused bias equals conv2d + broadcast add, forward and all three gradients.
#[test]
fn bias_is_fused_exactly() -> Result<()> {
    let dev = Device::Cpu;
    for ((b, c, h, w, o, k, p), s) in CASES.into_iter().zip(STRIDES) {
        let x = Var::from_tensor(&Tensor::randn(0f64, 1., (b, c, h, w), &dev)?)?;
        let wt = Var::from_tensor(&Tensor::randn(0f64, 1., (o, c, k, k), &dev)?)?;
        let bias = Var::from_tensor(&Tensor::randn(0f64, 1., o, &dev)?)?;
        let fused =
            daa_kernels::conv2d_bias(x.as_tensor(), wt.as_tensor(), bias.as_tensor(), p, s)?;
        let plain = x
            .as_tensor()
            .conv2d(wt.as_tensor(), p, s, 1, 1)?
            .broadcast_add(&bias.as_tensor().reshape((1, o, 1, 1))?)?;
        let case = (b, c, h, w, o, k, p, s);
        assert!(max_abs_diff(&fused, &plain)? < 1e-10, "forward {case:?}");
        let r = Tensor::randn(0f64, 1., fused.shape(), &dev)?;
        let g_fused = (fused * &r)?.sum_all()?.backward()?;
        let g_plain = (plain * &r)?.sum_all()?.backward()?;
        for v in [&x, &wt, &bias] {
            let (Some(a), Some(bb)) = (g_fused.get(v.as_tensor()), g_plain.get(v.as_tensor()))
            else {
                panic!("missing gradient {case:?}");
            };
            assert!(max_abs_diff(a, bb)? < 1e-9, "gradient {case:?}");
        }
    }
    assert!(daa_kernels::conv2d_bias(
        &Tensor::zeros((1, 2, 4, 4), DType::F32, &dev)?,
        &Tensor::zeros((3, 2, 3, 3), DType::F32, &dev)?,
        &Tensor::zeros(2, DType::F32, &dev)?,
        1,
        1
    )
    .is_err());
    Ok(())
}

/// An empty batch gives an empty output and zero weight and bias gradients (the kernels write
/// the weight gradient from the batch's images; there are none).
#[test]
fn empty_batch_gives_zero_weight_gradients() -> Result<()> {
    let dev = Device::Cpu;
    for (c, stride) in [(8, 1), (8, 2), (3, 1)] {
        let x = Var::from_tensor(&Tensor::zeros((0, c, 6, 6), DType::F32, &dev)?)?;
        let w = Var::from_tensor(&Tensor::randn(0f32, 1., (8, c, 3, 3), &dev)?)?;
        let b = Var::from_tensor(&Tensor::randn(0f32, 1., 8, &dev)?)?;
        let y = daa_kernels::conv2d_bias(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1, stride)?;
        assert_eq!(y.dims()[0], 0);
        let grads = y.sum_all()?.backward()?;
        for (v, dims) in [(&w, vec![8, c, 3, 3]), (&b, vec![8])] {
            let Some(g) = grads.get(v.as_tensor()) else {
                panic!("missing gradient ({c}, {stride})");
            };
            assert_eq!(g.dims(), &dims[..]);
            let m = g.abs()?.max_all()?.to_scalar::<f32>()?;
            assert_eq!(m, 0.0, "({c}, {stride})");
        }
    }
    Ok(())
}

/// No output channels: an empty output and empty gradients (f32 and f64), as candle's conv2d;
/// no input channels: an error, not a tensor without storage.
#[test]
fn zero_channels_are_handled() -> Result<()> {
    let dev = Device::Cpu;
    for dt in [DType::F32, DType::F64] {
        let x = Var::from_tensor(&Tensor::ones((1, 16, 20, 20), dt, &dev)?)?;
        let w = Var::from_tensor(&Tensor::zeros((0, 16, 3, 3), dt, &dev)?)?;
        let y = conv2d(x.as_tensor(), w.as_tensor(), 1, 1)?;
        assert_eq!(y.dims(), [1, 0, 20, 20]);
        let grads = y.sum_all()?.backward()?;
        let gw = grads
            .get(w.as_tensor())
            .ok_or_else(|| candle_core::Error::Msg("no weight grad".into()))?;
        assert_eq!(gw.dims(), [0, 16, 3, 3]);
        let x0 = Tensor::ones((1, 0, 20, 20), dt, &dev)?;
        let w0 = Tensor::zeros((16, 0, 3, 3), dt, &dev)?;
        let err = conv2d(&x0, &w0, 1, 1).err().map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains("no channels")),
            "{err:?}"
        );
    }
    Ok(())
}
