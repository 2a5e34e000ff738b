//! 2x2 average pooling and nearest-neighbour x2 upsampling as CPU ops, each (scaled) the
//! other's backward.
//!
//! candle runs both on one thread, and their backward passes too: the pooling's is an
//! `upsample_nearest2d` plus a scaling pass, and the upsampling (written as a broadcast, see
//! `daa_diffusion`) is summed back by a strided reduction. Here each (sample, channel) plane is
//! a task on the rayon pool, with the sums in candle's order, so values and gradients keep
//! their bits.

use crate::conv::contiguous_slice;
use candle_core::{
    backend::BackendStorage, CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor,
};
use rayon::prelude::*;

/// `(B, C, H, W)` -> `(B, C, H/2, W/2)`, the mean of each 2x2 window, as candle's
/// `avg_pool2d(2)` computes it. CPU f32/f64 with even sides: one op, forward and backward
/// parallel over planes; otherwise candle's `avg_pool2d`.
pub fn avg_pool2x2(xs: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = xs.dims4()?;
    if h == 0
        || w == 0
        || h % 2 != 0
        || w % 2 != 0
        || !xs.device().is_cpu()
        || !matches!(xs.dtype(), DType::F32 | DType::F64)
    {
        return xs.avg_pool2d(2);
    }
    xs.contiguous()?.apply_op1(Pool { h, w })
}

/// `(B, C, H, W)` -> `(B, C, 2H, 2W)`, each value repeated over a 2x2 block; the backward sums
/// each block. CPU f32/f64: one op; elsewhere `reference` (the caller's candle-op version).
pub fn upsample_nearest2x(
    xs: &Tensor,
    reference: impl FnOnce(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let (_, _, h, w) = xs.dims4()?;
    if h == 0 || w == 0 || !xs.device().is_cpu() || !matches!(xs.dtype(), DType::F32 | DType::F64) {
        return reference(xs);
    }
    xs.contiguous()?.apply_op1(Up { h, w })
}

trait Elem: Copy + Send + Sync + Default + std::ops::Add<Output = Self> {
    fn mul_f64(self, s: f64) -> Self;
}
impl Elem for f32 {
    fn mul_f64(self, s: f64) -> Self {
        self * s as f32
    }
}
impl Elem for f64 {
    fn mul_f64(self, s: f64) -> Self {
        self * s
    }
}

/// Per plane of `(h, w)` input: the 2x2 window sums of `x` times `scale` (candle's
/// `avg_pool2d` with scale 1/4, or the upsampling's backward with scale 1).
fn pool<T: Elem>(x: &[T], h: usize, w: usize, scale: f64) -> Vec<T> {
    let (oh, ow) = (h / 2, w / 2);
    let planes = x.len() / (h * w).max(1);
    let mut y: Vec<T> = Vec::with_capacity(planes * oh * ow);
    y.spare_capacity_mut()
        .par_chunks_mut((oh * ow).max(1))
        .zip(x.par_chunks((h * w).max(1)))
        .for_each(|(yp, xp)| {
            for (r, yr) in yp.chunks_mut(ow.max(1)).enumerate() {
                let (a, b) = (&xp[2 * r * w..], &xp[(2 * r + 1) * w..]);
                for (j, o) in yr.iter_mut().enumerate() {
                    // candle's order: a zero, then the window row by row.
                    let s = T::default() + a[2 * j] + a[2 * j + 1] + b[2 * j] + b[2 * j + 1];
                    o.write(s.mul_f64(scale));
                }
            }
        });
    // Every output element was written above.
    unsafe { y.set_len(planes * oh * ow) };
    y
}

/// Per plane of `(h, w)` input: each value times `scale` over its 2x2 block of a `(2h, 2w)`
/// plane (the upsampling with scale 1, or the pooling's backward with scale 1/4).
fn spread<T: Elem>(x: &[T], h: usize, w: usize, scale: f64) -> Vec<T> {
    let (plane, ow) = (h * w, 2 * w);
    let mut y: Vec<T> = Vec::with_capacity(x.len() * 4);
    y.spare_capacity_mut()
        .par_chunks_mut((4 * plane).max(1))
        .zip(x.par_chunks(plane.max(1)))
        .for_each(|(yp, xp)| {
            for (rows, xr) in yp.chunks_mut(2 * ow).zip(xp.chunks(w)) {
                let (top, bottom) = rows.split_at_mut(ow);
                for ((pair, copy), &v) in top.chunks_mut(2).zip(bottom.chunks_mut(2)).zip(xr) {
                    let v = v.mul_f64(scale);
                    for o in pair.iter_mut().chain(copy.iter_mut()) {
                        o.write(v);
                    }
                }
            }
        });
    // Every output element was written above.
    unsafe { y.set_len(x.len() * 4) };
    y
}

/// The pooling of an `(h, w)` input.
struct Pool {
    h: usize,
    w: usize,
}
/// Its backward: `dy (.., h/2, w/2)` -> `dx (.., h, w)`.
struct PoolBwd {
    h: usize,
    w: usize,
}
/// The upsampling of an `(h, w)` input.
struct Up {
    h: usize,
    w: usize,
}
/// Its backward: `dy (.., 2h, 2w)` -> `dx (.., h, w)`.
struct UpBwd {
    h: usize,
    w: usize,
}

macro_rules! per_float {
    ($name:expr, $s:expr, $l:expr, |$v:ident| $body:expr) => {
        match $s {
            CpuStorage::F32(v) => {
                let $v = contiguous_slice(v, $l)?;
                CpuStorage::F32($body)
            }
            CpuStorage::F64(v) => {
                let $v = contiguous_slice(v, $l)?;
                CpuStorage::F64($body)
            }
            other => candle_core::bail!("{}: unsupported dtype {:?}", $name, other.dtype()),
        }
    };
}

impl CustomOp1 for Pool {
    fn name(&self) -> &'static str {
        "daa_kernels::avg_pool2x2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, _, _) = l.shape().dims4()?;
        let (h, w) = (self.h, self.w);
        let out = per_float!(self.name(), s, l, |v| pool(v, h, w, 0.25));
        Ok((out, Shape::from((b, c, h / 2, w / 2))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (h, w) = (self.h, self.w);
        Ok(Some(
            grad.contiguous()?.apply_op1_no_bwd(&PoolBwd { h, w })?,
        ))
    }
}

impl CustomOp1 for PoolBwd {
    fn name(&self) -> &'static str {
        "daa_kernels::avg_pool2x2_bwd"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, _, _) = l.shape().dims4()?;
        let (h, w) = (self.h, self.w);
        let out = per_float!(self.name(), s, l, |v| spread(v, h / 2, w / 2, 0.25));
        Ok((out, Shape::from((b, c, h, w))))
    }
}

impl CustomOp1 for Up {
    fn name(&self) -> &'static str {
        "daa_kernels::upsample_nearest2x"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, _, _) = l.shape().dims4()?;
        let (h, w) = (self.h, self.w);
        let out = per_float!(self.name(), s, l, |v| spread(v, h, w, 1.0));
        Ok((out, Shape::from((b, c, 2 * h, 2 * w))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (h, w) = (self.h, self.w);
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&UpBwd { h, w })?))
    }
}

impl CustomOp1 for UpBwd {
    fn name(&self) -> &'static str {
        "daa_kernels::upsample_nearest2x_bwd"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, _, _) = l.shape().dims4()?;
        let (h, w) = (self.h, self.w);
        let out = per_float!(self.name(), s, l, |v| pool(v, 2 * h, 2 * w, 1.0));
        Ok((out, Shape::from((b, c, h, w))))
    }
}
