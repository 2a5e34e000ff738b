//! Building blocks shared by the backbones, all differentiable with candle's autograd.

use candle_core::{DType, Device, Result, Tensor, D};

/// Interpolation matrix `(n_out, n_in)` of 1-D linear resampling with `align_corners = true`.
fn interp_matrix(n_in: usize, n_out: usize, device: &Device, dtype: DType) -> Result<Tensor> {
    let mut m = vec![0f32; n_out * n_in];
    for i in 0..n_out {
        let src = if n_out > 1 {
            i as f64 * (n_in as f64 - 1.0) / (n_out as f64 - 1.0)
        } else {
            0.0
        };
        let i0 = (src.floor() as usize).min(n_in - 1);
        let i1 = (i0 + 1).min(n_in - 1);
        let frac = (src - i0 as f64) as f32;
        m[i * n_in + i0] += 1.0 - frac;
        m[i * n_in + i1] += frac;
    }
    Tensor::from_vec(m, (n_out, n_in), device)?.to_dtype(dtype)
}

/// Bilinear x2 upsampling with `align_corners = true` (PyTorch's
/// `nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)`).
///
/// candle's `upsample_bilinear2d` has no backward pass; on the CPU this is daa-kernels' op
/// (`daa_kernels::upsample_bilinear2x`, forward and backward parallel over planes), elsewhere
/// [`upsample_bilinear2x_align_corners_reference`]. `(B, C, H, W) -> (B, C, 2H, 2W)`.
pub fn upsample_bilinear2x_align_corners(xs: &Tensor) -> Result<Tensor> {
    daa_kernels::upsample_bilinear2x(xs, upsample_bilinear2x_align_corners_reference)
}

/// [`upsample_bilinear2x_align_corners`] from candle ops (two matrix products with
/// interpolation matrices): what other devices run, and the reference the CPU op is tested
/// against.
pub fn upsample_bilinear2x_align_corners_reference(xs: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = xs.dims4()?;
    let (dev, dt) = (xs.device(), xs.dtype());
    let mw_t = interp_matrix(w, 2 * w, dev, dt)?.t()?; // (W, 2W)
    let mh_t = interp_matrix(h, 2 * h, dev, dt)?.t()?; // (H, 2H)
                                                       // Along W: (B*C*H, W) @ (W, 2W).
    let xs = xs.contiguous()?.reshape((b * c * h, w))?.matmul(&mw_t)?;
    // Along H: (B*C*2W, H) @ (H, 2H).
    let xs = xs
        .reshape((b, c, h, 2 * w))?
        .transpose(2, 3)?
        .contiguous()?;
    let xs = xs.reshape((b * c * 2 * w, h))?.matmul(&mh_t)?;
    xs.reshape((b, c, 2 * w, 2 * h))?
        .transpose(2, 3)?
        .contiguous()
}

/// Replicate-pads the bottom and right of `(B, C, H, W)` so both sides are multiples of `m`.
/// Returns the padded tensor; crop back with `narrow` to the original size.
pub fn pad_replicate_to_multiple(xs: &Tensor, m: usize) -> Result<Tensor> {
    let (_, _, h, w) = xs.dims4()?;
    let ph = (m - h % m) % m;
    let pw = (m - w % m) % m;
    let xs = if ph > 0 {
        xs.pad_with_same(2, 0, ph)?
    } else {
        xs.clone()
    };
    if pw > 0 {
        xs.pad_with_same(3, 0, pw)
    } else {
        Ok(xs)
    }
}

/// 2x2 average pooling with stride 2: candle's `avg_pool2d(2)`, as one parallel op on the CPU
/// with the same bits (daa_kernels::avg_pool2x2).
pub fn avg_pool2(xs: &Tensor) -> Result<Tensor> {
    daa_kernels::avg_pool2x2(xs)
}

/// LeakyReLU with negative slope `slope` (`max(x, slope * x)`; one fused op on the CPU).
pub fn leaky_relu(xs: &Tensor, slope: f64) -> Result<Tensor> {
    daa_kernels::leaky_relu(xs, slope)
}

/// Channel-wise LayerNorm of NCHW input (NAFNet's `LayerNorm2d`), built from plain ops so it
/// back-propagates (candle's fused `layer_norm` does not).
pub fn layer_norm_2d(xs: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let mu = xs.mean_keepdim(1)?;
    let xc = xs.broadcast_sub(&mu)?;
    let var = xc.sqr()?.mean_keepdim(1)?;
    let xs = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
    let c = weight.dim(0)?;
    xs.broadcast_mul(&weight.reshape((1, c, 1, 1))?)?
        .broadcast_add(&bias.reshape((1, c, 1, 1))?)
}

/// Depthwise 3x3 convolution, padding 1 (`groups = C`; candle runs a grouped conv as one conv
/// per group). `weight: (C, 1, 3, 3)`, `bias: (C,)` or none. On the CPU in f32/f64 it gathers
/// the 3x3 neighbourhoods with [`daa_kernels::im2col`] (whose backward is one `col2im`) and
/// takes one weighted sum; elsewhere it adds nine shifted products.
pub fn depthwise_conv3x3(xs: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (b, c, h, w) = xs.dims4()?;
    let acc = if xs.device().is_cpu() && matches!(xs.dtype(), DType::F32 | DType::F64) {
        let g = daa_kernels::Conv2dGeometry {
            b,
            c,
            h,
            w,
            k: 3,
            stride: 1,
            padding: 1,
        };
        // (B, H*W, C*9) -> (B, H*W, C, 9), weighted sum over the taps -> (B, C, H, W).
        daa_kernels::im2col(xs, g)?
            .reshape((b, h * w, c, 9))?
            .broadcast_mul(&weight.reshape((c, 9))?)?
            .sum(3)?
            .transpose(1, 2)?
            .reshape((b, c, h, w))?
    } else {
        depthwise_conv3x3_shifted(xs, weight)?
    };
    match bias {
        Some(bias) => acc.broadcast_add(&bias.reshape((1, c, 1, 1))?),
        None => Ok(acc),
    }
}

/// Depthwise 3x3 convolution without bias as nine shifted multiply-adds (any device).
fn depthwise_conv3x3_shifted(xs: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let (_, c, h, w) = xs.dims4()?;
    let padded = xs.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
    let mut acc: Option<Tensor> = None;
    for ky in 0..3 {
        for kx in 0..3 {
            let tap = weight
                .narrow(2, ky, 1)?
                .narrow(3, kx, 1)?
                .reshape((1, c, 1, 1))?;
            let term = padded
                .narrow(2, ky, h)?
                .narrow(3, kx, w)?
                .broadcast_mul(&tap)?;
            acc = Some(match acc {
                Some(a) => (a + term)?,
                None => term,
            });
        }
    }
    acc.ok_or_else(|| candle_core::Error::Msg("depthwise_conv3x3: no taps".into()))
}

/// A depthwise 3x3 conv layer (`groups = channels`, padding 1) with PyTorch's default
/// initialisation, `U(-1/3, 1/3)` (fan-in 9). Tensor names `weight` `(C, 1, 3, 3)` and `bias`.
#[derive(Debug, Clone)]
pub struct DepthwiseConv3x3 {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl DepthwiseConv3x3 {
    /// Creates or loads the layer.
    pub fn new(vb: candle_nn::VarBuilder, channels: usize, bias: bool) -> Result<Self> {
        let uni = candle_nn::Init::Uniform {
            lo: -1.0 / 3.0,
            up: 1.0 / 3.0,
        };
        let weight = vb.get_with_hints((channels, 1, 3, 3), "weight", uni)?;
        let bias = if bias {
            Some(vb.get_with_hints(channels, "bias", uni)?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }
}

impl candle_core::Module for DepthwiseConv3x3 {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        depthwise_conv3x3(xs, &self.weight, self.bias.as_ref())
    }
}

/// Softmax over the last dimension from basic ops, so that it back-propagates (candle's fused
/// `softmax_last_dim` gives no gradient). The maximum is subtracted detached: softmax does not
/// depend on it, so the gradient is unchanged.
pub fn softmax_last_dim(xs: &Tensor) -> Result<Tensor> {
    let max = xs.max_keepdim(D::Minus1)?.detach();
    let e = xs.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// `x / max(||x||_2, 1e-12)` along the last dimension (PyTorch's `F.normalize(x, dim=-1)`).
pub fn l2_normalize_last_dim(xs: &Tensor) -> Result<Tensor> {
    let norm = xs.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    xs.broadcast_div(&norm.maximum(1e-12)?)
}

/// LayerNorm over the last dimension (PyTorch's `nn.LayerNorm(C)` on `(.., C)`), built from
/// plain ops so it back-propagates. `bias` may be absent (Restormer's `BiasFree_LayerNorm`,
/// which also leaves the input uncentred: `x / sqrt(var + eps) * weight`).
pub fn layer_norm_last_dim(
    xs: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    let mu = xs.mean_keepdim(D::Minus1)?;
    let xc = xs.broadcast_sub(&mu)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let inv = (var + eps)?.sqrt()?;
    match bias {
        Some(b) => xc
            .broadcast_div(&inv)?
            .broadcast_mul(weight)?
            .broadcast_add(b),
        None => xs.broadcast_div(&inv)?.broadcast_mul(weight),
    }
}

/// A `nn.Linear` on the last dimension: `(.., in) -> (.., out)`. Weight `(out, in)` initialised
/// with a truncated-normal-like `N(0, 0.02)` (as Uformer's `_init_weights`), bias zero.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Creates or loads the layer (`weight`, `bias`).
    pub fn new(vb: candle_nn::VarBuilder, cin: usize, cout: usize, bias: bool) -> Result<Self> {
        let weight = vb.get_with_hints(
            (cout, cin),
            "weight",
            candle_nn::Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
        )?;
        let bias = if bias {
            Some(vb.get_with_hints(cout, "bias", candle_nn::Init::Const(0.0))?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }
}

impl candle_core::Module for Linear {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let dims = xs.dims().to_vec();
        let cin = dims.last().copied().unwrap_or(0);
        let rows = xs.elem_count() / cin.max(1);
        let ys = xs.reshape((rows, cin))?.matmul(&self.weight.t()?)?;
        let ys = match &self.bias {
            Some(b) => ys.broadcast_add(b)?,
            None => ys,
        };
        let mut out = dims;
        if let Some(last) = out.last_mut() {
            *last = self.weight.dim(0)?;
        }
        ys.reshape(out)
    }
}

/// Global average over H and W, keeping dims: `(B, C, H, W) -> (B, C, 1, 1)`.
pub fn global_avg_pool(xs: &Tensor) -> Result<Tensor> {
    xs.mean_keepdim(D::Minus1)?.mean_keepdim(D::Minus2)
}

/// A conv layer initialised like `candle_nn::conv2d` (Kaiming-normal weight, bias uniform in
/// `±1/sqrt(fan_in)`), running on `daa_kernels::conv2d` (im2col + gemm, fast backward on CPU).
pub fn conv2d(
    vb: candle_nn::VarBuilder,
    cin: usize,
    cout: usize,
    k: usize,
    padding: usize,
    stride: usize,
    bias: bool,
) -> Result<daa_kernels::Conv2d> {
    let w = vb.get_with_hints(
        (cout, cin, k, k),
        "weight",
        candle_nn::init::DEFAULT_KAIMING_NORMAL,
    )?;
    let b = if bias {
        let bound = 1.0 / ((cin * k * k) as f64).sqrt();
        Some(vb.get_with_hints(
            cout,
            "bias",
            candle_nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )?)
    } else {
        None
    };
    Ok(daa_kernels::Conv2d::new(w, b, padding, stride))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_matches_pytorch_align_corners() -> Result<()> {
        // torch.nn.functional.interpolate(torch.tensor([[[[0.,1.],[2.,3.]]]]), scale_factor=2,
        //     mode="bilinear", align_corners=True)
        let x = Tensor::new(&[[[[0f32, 1.], [2., 3.]]]], &Device::Cpu)?;
        let y = upsample_bilinear2x_align_corners(&x)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let want = [
            0.0, 0.3333, 0.6667, 1.0, 0.6667, 1.0, 1.3333, 1.6667, 1.3333, 1.6667, 2.0, 2.3333,
            2.0, 2.3333, 2.6667, 3.0,
        ];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-4, "{y:?}");
        }
        Ok(())
    }

    #[test]
    fn pad_to_multiple_replicates_edges() -> Result<()> {
        let x = Tensor::arange(0f32, 6., &Device::Cpu)?.reshape((1, 1, 2, 3))?;
        let y = pad_replicate_to_multiple(&x, 4)?;
        assert_eq!(y.dims(), &[1, 1, 4, 4]);
        let rows = y.squeeze(0)?.squeeze(0)?.to_vec2::<f32>()?;
        assert_eq!(rows[3], vec![3., 4., 5., 5.]);
        Ok(())
    }

    #[test]
    fn depthwise_matches_grouped_conv() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (2, 4, 5, 6), &dev)?;
        let w = Tensor::randn(0f32, 1., (4, 1, 3, 3), &dev)?;
        let b = Tensor::randn(0f32, 1., 4, &dev)?;
        let ours = depthwise_conv3x3(&x, &w, Some(&b))?;
        let theirs = x
            .conv2d(&w, 1, 1, 1, 4)?
            .broadcast_add(&b.reshape((1, 4, 1, 1))?)?;
        let diff = (&ours - &theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "{diff}");
        let shifted =
            depthwise_conv3x3_shifted(&x, &w)?.broadcast_add(&b.reshape((1, 4, 1, 1))?)?;
        let diff = (shifted - theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "{diff}");
        Ok(())
    }

    /// Both depthwise paths give the same gradients (the CPU one goes through im2col/col2im).
    #[test]
    fn depthwise_paths_have_equal_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let x = candle_core::Var::randn(0f64, 1., (2, 3, 5, 4), &dev)?;
        let w = candle_core::Var::randn(0f64, 1., (3, 1, 3, 3), &dev)?;
        let r = Tensor::randn(0f64, 1., (2, 3, 5, 4), &dev)?;
        let g1 = (depthwise_conv3x3(&x, &w, None)? * &r)?
            .sum_all()?
            .backward()?;
        let g2 = (depthwise_conv3x3_shifted(&x, &w)? * &r)?
            .sum_all()?
            .backward()?;
        for v in [x.as_tensor(), w.as_tensor()] {
            let (a, b) = (g1.get(v), g2.get(v));
            let (Some(a), Some(b)) = (a, b) else {
                candle_core::bail!("missing gradient")
            };
            let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f64>()?;
            assert!(diff < 1e-10, "{diff}");
        }
        Ok(())
    }
}
