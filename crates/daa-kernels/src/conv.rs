//! conv2d as im2col + gemm, with a backward for each piece.

use candle_core::{
    backend::BackendStorage, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result,
    Shape, Tensor,
};
use rayon::prelude::*;

use crate::cpu_conv;
pub use crate::cpu_conv::CONV_SCRATCH_BYTES;

/// Geometry of a 2-D convolution (square kernel, dilation 1, one group).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dGeometry {
    /// Batch.
    pub b: usize,
    /// Input channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Kernel side.
    pub k: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on each side.
    pub padding: usize,
}

impl Conv2dGeometry {
    /// Output height.
    pub fn oh(&self) -> usize {
        (self.h + 2 * self.padding - self.k) / self.stride + 1
    }
    /// Output width.
    pub fn ow(&self) -> usize {
        (self.w + 2 * self.padding - self.k) / self.stride + 1
    }
    /// Columns of the im2col matrix: `C * k * k`.
    pub fn ckk(&self) -> usize {
        self.c * self.k * self.k
    }
    fn check(&self) -> Result<()> {
        if self.c == 0 {
            candle_core::bail!("conv2d: the input has no channels");
        }
        if self.k == 0
            || self.stride == 0
            || self.h + 2 * self.padding < self.k
            || self.w + 2 * self.padding < self.k
        {
            candle_core::bail!(
                "conv2d: kernel {} stride {} padding {} does not fit a {}x{} input",
                self.k,
                self.stride,
                self.padding,
                self.h,
                self.w
            );
        }
        Ok(())
    }
}

/// Source index of output position `o` and kernel tap `t` along one axis, if inside.
#[inline]
fn src(o: usize, t: usize, g: &Conv2dGeometry, n: usize) -> Option<usize> {
    let i = (o * g.stride + t) as isize - g.padding as isize;
    (i >= 0 && (i as usize) < n).then_some(i as usize)
}

/// `x: (C, H, W)` of one image -> `cols: (OH*OW, C*k*k)` rows.
fn im2col_one<T: Copy + Default>(x: &[T], cols: &mut [T], g: &Conv2dGeometry) {
    let (oh, ow, k, ckk) = (g.oh(), g.ow(), g.k, g.ckk());
    for oy in 0..oh {
        for ox in 0..ow {
            let row = &mut cols[(oy * ow + ox) * ckk..(oy * ow + ox + 1) * ckk];
            let mut j = 0;
            for c in 0..g.c {
                let plane = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
                for ky in 0..k {
                    match src(oy, ky, g, g.h) {
                        Some(y) => {
                            for kx in 0..k {
                                row[j] = match src(ox, kx, g, g.w) {
                                    Some(xx) => plane[y * g.w + xx],
                                    None => T::default(),
                                };
                                j += 1;
                            }
                        }
                        None => {
                            row[j..j + k].fill(T::default());
                            j += k;
                        }
                    }
                }
            }
        }
    }
}

/// Adjoint of [`im2col_one`]: accumulates `cols` rows back into `x: (C, H, W)` (zeroed first).
fn col2im_one<T: Copy + Default + std::ops::AddAssign>(
    cols: &[T],
    x: &mut [T],
    g: &Conv2dGeometry,
) {
    let (oh, ow, k, ckk) = (g.oh(), g.ow(), g.k, g.ckk());
    x.fill(T::default());
    for oy in 0..oh {
        for ox in 0..ow {
            let row = &cols[(oy * ow + ox) * ckk..(oy * ow + ox + 1) * ckk];
            let mut j = 0;
            for c in 0..g.c {
                let plane = &mut x[c * g.h * g.w..(c + 1) * g.h * g.w];
                for ky in 0..k {
                    if let Some(y) = src(oy, ky, g, g.h) {
                        for kx in 0..k {
                            if let Some(xx) = src(ox, kx, g, g.w) {
                                plane[y * g.w + xx] += row[j + kx];
                            }
                        }
                    }
                    j += k;
                }
            }
        }
    }
}

pub(crate) fn contiguous_slice<'a, T>(s: &'a [T], l: &Layout) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s[a..b]),
        None => candle_core::bail!("daa_kernels: input must be contiguous"),
    }
}

struct Im2Col(Conv2dGeometry);
struct Col2Im(Conv2dGeometry);

macro_rules! per_dtype {
    ($storage:expr, $layout:expr, $f:ident, $g:expr, $in_per:expr, $out_per:expr) => {{
        let g = $g;
        match $storage {
            CpuStorage::F32(s) => {
                let s = contiguous_slice(s, $layout)?;
                let mut out = vec![0f32; g.b * $out_per];
                out.par_chunks_mut($out_per)
                    .zip(s.par_chunks($in_per))
                    .for_each(|(o, i)| $f(i, o, &g));
                CpuStorage::F32(out)
            }
            CpuStorage::F64(s) => {
                let s = contiguous_slice(s, $layout)?;
                let mut out = vec![0f64; g.b * $out_per];
                out.par_chunks_mut($out_per)
                    .zip(s.par_chunks($in_per))
                    .for_each(|(o, i)| $f(i, o, &g));
                CpuStorage::F64(out)
            }
            other => candle_core::bail!(
                "daa_kernels: unsupported dtype {:?} (f32, f64)",
                other.dtype()
            ),
        }
    }};
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "daa_kernels::im2col"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let (per_in, per_out) = (g.c * g.h * g.w, g.oh() * g.ow() * g.ckk());
        let out = per_dtype!(storage, layout, im2col_one, g, per_in, per_out);
        Ok((out, Shape::from((g.b, g.oh() * g.ow(), g.ckk()))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(col2im(&grad_res.contiguous()?, self.0)?))
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "daa_kernels::col2im"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let (per_in, per_out) = (g.oh() * g.ow() * g.ckk(), g.c * g.h * g.w);
        let out = per_dtype!(storage, layout, col2im_one, g, per_in, per_out);
        Ok((out, Shape::from((g.b, g.c, g.h, g.w))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(im2col(&grad_res.contiguous()?, self.0)?))
    }
}

/// `(B, C, H, W) -> (B, OH*OW, C*k*k)`: each row holds the receptive field of one output
/// position (zeros where it falls in the padding). CPU, f32/f64; backward = [`col2im`].
pub fn im2col(xs: &Tensor, g: Conv2dGeometry) -> Result<Tensor> {
    g.check()?;
    if xs.dims() != [g.b, g.c, g.h, g.w] {
        candle_core::bail!(
            "im2col: expected {:?}, got {:?}",
            (g.b, g.c, g.h, g.w),
            xs.shape()
        );
    }
    xs.contiguous()?.apply_op1(Im2Col(g))
}

/// The adjoint of [`im2col`]: `(B, OH*OW, C*k*k) -> (B, C, H, W)`, summing overlaps.
pub fn col2im(cols: &Tensor, g: Conv2dGeometry) -> Result<Tensor> {
    g.check()?;
    if cols.dims() != [g.b, g.oh() * g.ow(), g.ckk()] {
        candle_core::bail!(
            "col2im: expected {:?}, got {:?}",
            (g.b, g.oh() * g.ow(), g.ckk()),
            cols.shape()
        );
    }
    cols.contiguous()?.apply_op1(Col2Im(g))
}

/// 2-D convolution `(B, C, H, W) * (O, C, k, k) -> (B, O, OH, OW)`, zero padding, one group,
/// no bias, differentiable in both arguments. CPU (f32/f64): one custom op whose forward,
/// input gradient and weight gradient are each gemm calls on im2col chunks of at most
/// [`CONV_SCRATCH_BYTES`] per thread, so scratch memory stays bounded whatever the image size;
/// CPU bf16/f16: the same in f32, rounded once. CUDA with the `cudnn` feature: cuDNN forward,
/// backward-data and backward-filter; other devices: candle's `conv2d`.
pub fn conv2d(xs: &Tensor, w: &Tensor, padding: usize, stride: usize) -> Result<Tensor> {
    conv2d_chunked(xs, w, padding, stride, 0)
}

/// [`conv2d`] plus a bias `(O,)`, added inside the op on the CPU (the gemm accumulates onto
/// the bias; its gradient is one sum over the output gradient).
pub fn conv2d_bias(
    xs: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    padding: usize,
    stride: usize,
) -> Result<Tensor> {
    let o = w.dim(0)?;
    if bias.dims() != [o] {
        candle_core::bail!(
            "conv2d: bias {:?} does not match {o} output channels",
            bias.shape()
        );
    }
    if !fused_conv_applies(xs) {
        return conv2d(xs, w, padding, stride)?.broadcast_add(&bias.reshape((1, o, 1, 1))?);
    }
    conv_bias_op(xs, w, bias, padding, stride, None)
}

/// `leaky_relu(conv2d_bias(xs, w, bias), slope)` for `0 < slope < 1`. On the CPU (f32/f64) one
/// op: each thread applies the activation to the output it just wrote, and the backward
/// takes the activation's gradient from the output's sign; the values and gradients are
/// those of the two ops, bit for bit. Elsewhere the two ops.
pub fn conv2d_bias_leaky_relu(
    xs: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    padding: usize,
    stride: usize,
    slope: f64,
) -> Result<Tensor> {
    if !(slope > 0.0 && slope < 1.0) || bias.dims() != [w.dim(0)?] || !fused_conv_applies(xs) {
        return crate::leaky_relu(&conv2d_bias(xs, w, bias, padding, stride)?, slope);
    }
    conv_bias_op(xs, w, bias, padding, stride, Some(slope))
}

/// Whether the CPU conv op with a fused bias (and activation) serves `xs`: CPU f32/f64, and
/// no bf16 autocast in effect.
fn fused_conv_applies(xs: &Tensor) -> bool {
    let autocast = xs.dtype() == DType::F32 && crate::conv_autocast_dtype().is_some();
    !autocast && xs.device().is_cpu() && matches!(xs.dtype(), DType::F32 | DType::F64)
}

/// [`ConvBiasOp`] on `xs`, `w`, `bias`.
fn conv_bias_op(
    xs: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    padding: usize,
    stride: usize,
    slope: Option<f64>,
) -> Result<Tensor> {
    let g = geometry(xs, w, padding, stride)?;
    xs.contiguous()?.apply_op3(
        &w.contiguous()?,
        &bias.contiguous()?,
        ConvBiasOp { g, chunk: 0, slope },
    )
}

/// The geometry of a CPU conv of `xs` by `w`, with the shapes and dtypes checked.
fn geometry(xs: &Tensor, w: &Tensor, padding: usize, stride: usize) -> Result<Conv2dGeometry> {
    let (b, c, h, wd) = xs.dims4()?;
    let (_o, ci, kh, kw) = w.dims4()?;
    if ci != c || kh != kw {
        candle_core::bail!(
            "conv2d: input {:?} and square kernel {:?} disagree",
            xs.shape(),
            w.shape()
        );
    }
    if w.dtype() != xs.dtype() {
        candle_core::bail!(
            "conv2d: input {:?} and weight {:?} dtypes differ",
            xs.dtype(),
            w.dtype()
        );
    }
    let g = Conv2dGeometry {
        b,
        c,
        h,
        w: wd,
        k: kh,
        stride,
        padding,
    };
    g.check()?;
    Ok(g)
}

/// [`conv2d`] with the im2col chunk fixed to `chunk` output positions (0: as many as fit in
/// [`CONV_SCRATCH_BYTES`]). The result does not depend on the chunk beyond float rounding of
/// the weight gradient's sum; tests use this to compare the chunked and unchunked paths.
pub fn conv2d_chunked(
    xs: &Tensor,
    w: &Tensor,
    padding: usize,
    stride: usize,
    chunk: usize,
) -> Result<Tensor> {
    if let Some(dtype) = crate::conv_autocast_dtype() {
        if xs.dtype() == DType::F32 && w.dtype() == DType::F32 {
            // Autocast (conv_autocast): the conv in `dtype`, its output back in f32; the
            // casts' backward brings the gradients to `dtype` and back the same way.
            let (x, w) = (xs.to_dtype(dtype)?, w.to_dtype(dtype)?);
            return conv2d_chunked(&x, &w, padding, stride, chunk)?.to_dtype(DType::F32);
        }
    }
    if !xs.device().is_cpu() || !matches!(xs.dtype(), DType::F32 | DType::F64) {
        let (_, c, _, _) = xs.dims4()?;
        let (_, ci, kh, kw) = w.dims4()?;
        if ci != c || kh != kw {
            candle_core::bail!(
                "conv2d: input {:?} and square kernel {:?} disagree",
                xs.shape(),
                w.shape()
            );
        }
        #[cfg(feature = "cudnn")]
        if xs.device().is_cuda() {
            if let Some(ys) = crate::conv_cudnn::conv2d(xs, w, padding, stride)? {
                return Ok(ys);
            }
        }
        if xs.device().is_cpu() && matches!(xs.dtype(), DType::BF16 | DType::F16) {
            // 16-bit floats on the CPU: f32 arithmetic, one rounding (as tensor cores do).
            let (x32, w32) = (xs.to_dtype(DType::F32)?, w.to_dtype(DType::F32)?);
            let _f32 = crate::conv_autocast(DType::F32);
            return conv2d_chunked(&x32, &w32, padding, stride, chunk)?.to_dtype(xs.dtype());
        }
        return xs.conv2d(w, padding, stride, 1, 1);
    }
    let g = geometry(xs, w, padding, stride)?;
    xs.contiguous()?
        .apply_op2(&w.contiguous()?, ConvOp { g, chunk })
}

/// The CPU convolution as one op (forward = [`cpu_conv::forward`]); its backward is two more
/// ops, for the input and the weight gradient, each on bounded im2col chunks.
struct ConvOp {
    g: Conv2dGeometry,
    chunk: usize,
}
/// [`ConvOp`] with a bias as third argument, and LeakyReLU after it when `slope` is given.
struct ConvBiasOp {
    g: Conv2dGeometry,
    chunk: usize,
    slope: Option<f64>,
}
/// The bias gradient: `dy (B, O, OH, OW) -> (O,)`.
struct BiasGrad;
struct ConvBwdData {
    g: Conv2dGeometry,
    chunk: usize,
}
struct ConvBwdFilter {
    g: Conv2dGeometry,
    chunk: usize,
}

macro_rules! conv_dispatch {
    ($name:expr, $s1:expr, $l1:expr, $s2:expr, $l2:expr, $f:path, $g:expr, $chunk:expr) => {
        match ($s1, $s2) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => CpuStorage::F32($f(
                contiguous_slice(a, $l1)?,
                contiguous_slice(b, $l2)?,
                $g,
                $chunk,
            )),
            (CpuStorage::F64(a), CpuStorage::F64(b)) => CpuStorage::F64($f(
                contiguous_slice(a, $l1)?,
                contiguous_slice(b, $l2)?,
                $g,
                $chunk,
            )),
            (a, b) => candle_core::bail!(
                "{}: unsupported dtypes {:?}, {:?} (f32 or f64, both the same)",
                $name,
                a.dtype(),
                b.dtype()
            ),
        }
    };
}

impl CustomOp2 for ConvOp {
    fn name(&self) -> &'static str {
        "daa_kernels::conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.g;
        let o = l2.dims()[0];
        let out = conv_dispatch!(
            self.name(),
            s1,
            l1,
            s2,
            l2,
            cpu_conv::forward,
            &g,
            self.chunk
        );
        Ok((out, Shape::from((g.b, o, g.oh(), g.ow()))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (g, chunk) = (self.g, self.chunk);
        let dy = dy.contiguous()?;
        let (dx, dw) = conv_grads(x, w, &dy, g, chunk)?;
        Ok((dx, dw))
    }
}

impl CustomOp3 for ConvBiasOp {
    fn name(&self) -> &'static str {
        "daa_kernels::conv2d_bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, chunk) = (self.g, self.chunk);
        let o = l2.dims()[0];
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(b)) => {
                CpuStorage::F32(cpu_conv::forward_bias(
                    contiguous_slice(x, l1)?,
                    contiguous_slice(w, l2)?,
                    Some(contiguous_slice(b, l3)?),
                    &g,
                    chunk,
                    self.slope.map(|k| k as f32),
                ))
            }
            (CpuStorage::F64(x), CpuStorage::F64(w), CpuStorage::F64(b)) => {
                CpuStorage::F64(cpu_conv::forward_bias(
                    contiguous_slice(x, l1)?,
                    contiguous_slice(w, l2)?,
                    Some(contiguous_slice(b, l3)?),
                    &g,
                    chunk,
                    self.slope,
                ))
            }
            (a, _, _) => candle_core::bail!(
                "{}: unsupported dtype {:?} (f32 or f64, all three the same)",
                self.name(),
                a.dtype()
            ),
        };
        Ok((out, Shape::from((g.b, o, g.oh(), g.ow()))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: &Tensor,
        res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (g, chunk) = (self.g, self.chunk);
        let dy = match self.slope {
            Some(k) => crate::activation::leaky_relu_grad_from_output(res, dy, k)?,
            None => dy.contiguous()?,
        };
        let (dx, dw) = conv_grads(x, w, &dy, g, chunk)?;
        let db = if bias.track_op() {
            Some(dy.apply_op1_no_bwd(&BiasGrad)?)
        } else {
            None
        };
        Ok((dx, dw, db))
    }
}

/// The input and weight gradients of a conv, each only for an argument that tracks
/// gradients: candle's backward asks an op for every argument's gradient, and adds each one it
/// gets to a fresh zero tensor, also for data such as a network's input image.
fn conv_grads(
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    g: Conv2dGeometry,
    chunk: usize,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let dx = if x.track_op() {
        Some(dy.apply_op2_no_bwd(w, &ConvBwdData { g, chunk })?)
    } else {
        None
    };
    let dw = if w.track_op() {
        Some(x.apply_op2_no_bwd(dy, &ConvBwdFilter { g, chunk })?)
    } else {
        None
    };
    Ok((dx, dw))
}

impl CustomOp1 for BiasGrad {
    fn name(&self) -> &'static str {
        "daa_kernels::conv2d_bias_grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, o) = (l.dims()[0], l.dims()[1]);
        let out = match s {
            CpuStorage::F32(v) => {
                CpuStorage::F32(cpu_conv::bias_grad(contiguous_slice(v, l)?, b, o))
            }
            CpuStorage::F64(v) => {
                CpuStorage::F64(cpu_conv::bias_grad(contiguous_slice(v, l)?, b, o))
            }
            other => candle_core::bail!(
                "{}: unsupported dtype {:?} (f32, f64)",
                self.name(),
                other.dtype()
            ),
        };
        Ok((out, Shape::from(o)))
    }
}

impl CustomOp2 for ConvBwdData {
    fn name(&self) -> &'static str {
        "daa_kernels::conv2d_bwd_data"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.g;
        let out = conv_dispatch!(
            self.name(),
            s1,
            l1,
            s2,
            l2,
            cpu_conv::backward_data,
            &g,
            self.chunk
        );
        Ok((out, Shape::from((g.b, g.c, g.h, g.w))))
    }
}

impl CustomOp2 for ConvBwdFilter {
    fn name(&self) -> &'static str {
        "daa_kernels::conv2d_bwd_filter"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.g;
        let o = l2.dims()[1];
        let shape = Shape::from((o, g.c, g.k, g.k));
        if g.b == 0 {
            // An empty batch: the kernels take the channel count from dy and write the
            // gradient from its images, and there are none.
            let out = match s1 {
                CpuStorage::F32(_) => CpuStorage::F32(vec![0.0; shape.elem_count()]),
                CpuStorage::F64(_) => CpuStorage::F64(vec![0.0; shape.elem_count()]),
                other => candle_core::bail!(
                    "{}: unsupported dtype {:?} (f32 or f64)",
                    self.name(),
                    other.dtype()
                ),
            };
            return Ok((out, shape));
        }
        let out = conv_dispatch!(
            self.name(),
            s1,
            l1,
            s2,
            l2,
            cpu_conv::backward_filter,
            &g,
            self.chunk
        );
        Ok((out, shape))
    }
}

/// A conv layer on [`conv2d`]: weight `(O, C, k, k)`, optional bias `(O,)`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    padding: usize,
    stride: usize,
}

impl Conv2d {
    /// Wraps existing tensors.
    pub fn new(weight: Tensor, bias: Option<Tensor>, padding: usize, stride: usize) -> Self {
        Self {
            weight,
            bias,
            padding,
            stride,
        }
    }
    /// The weight.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
    /// `leaky_relu(self.forward(xs), slope)`, as one op where [`conv2d_bias_leaky_relu`] fuses
    /// them (a layer with a bias, `0 < slope < 1`).
    pub fn forward_leaky_relu(&self, xs: &Tensor, slope: f64) -> Result<Tensor> {
        match &self.bias {
            Some(b) => {
                conv2d_bias_leaky_relu(xs, &self.weight, b, self.padding, self.stride, slope)
            }
            None => crate::leaky_relu(&conv2d(xs, &self.weight, self.padding, self.stride)?, slope),
        }
    }
}

impl candle_core::Module for Conv2d {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match &self.bias {
            Some(b) => conv2d_bias(xs, &self.weight, b, self.padding, self.stride),
            None => conv2d(xs, &self.weight, self.padding, self.stride),
        }
    }
}
