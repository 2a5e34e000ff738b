//! Bilinear x2 upsampling with `align_corners = true` as one CPU op with its adjoint as the
//! backward.
//!
//! From candle ops it is two matrix products with interpolation matrices and three transposed
//! copies, and its backward doubles that; the copies run on one thread. Here each (sample,
//! channel) plane is one task on the rayon pool: two taps along W, then two along H, forward
//! and (transposed) backward.

use crate::conv::contiguous_slice;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// The two source taps and weights of each output index of a 1-D align-corners resampling
/// from `n_in` to `n_out` samples: `(i0, i1, w0, w1)`, weights in f32 as PyTorch's
/// `upsample_bilinear2d` computes them on the CPU.
fn taps(n_in: usize, n_out: usize) -> Vec<(usize, usize, f32, f32)> {
    (0..n_out)
        .map(|i| {
            let src = if n_out > 1 {
                i as f64 * (n_in as f64 - 1.0) / (n_out as f64 - 1.0)
            } else {
                0.0
            };
            let i0 = (src.floor() as usize).min(n_in - 1);
            let i1 = (i0 + 1).min(n_in - 1);
            let frac = (src - i0 as f64) as f32;
            (i0, i1, 1.0 - frac, frac)
        })
        .collect()
}

/// Bilinear x2 upsampling with `align_corners = true` of `(B, C, H, W)` to `(B, C, 2H, 2W)`,
/// differentiable. CPU f32/f64: one op (forward and backward parallel over planes); anything
/// else: `reference`, the caller's candle-op version (e.g. matrix products).
pub fn upsample_bilinear2x(
    xs: &Tensor,
    reference: impl FnOnce(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let (_, _, h, w) = xs.dims4()?;
    if h == 0 || w == 0 || !xs.device().is_cpu() || !matches!(xs.dtype(), DType::F32 | DType::F64) {
        return reference(xs);
    }
    xs.contiguous()?.apply_op1(Up2x)
}

struct Up2x;
struct Up2xBwd {
    h: usize,
    w: usize,
}

trait Elem: Copy + Send + Sync + Default + std::ops::Add<Output = Self> {
    fn mul_w(self, w: f32) -> Self;
}
impl Elem for f32 {
    fn mul_w(self, w: f32) -> Self {
        self * w
    }
}
impl Elem for f64 {
    fn mul_w(self, w: f32) -> Self {
        self * w as f64
    }
}

fn forward<T: Elem>(x: &[T], h: usize, w: usize) -> Vec<T> {
    let (th, tw) = (taps(h, 2 * h), taps(w, 2 * w));
    let (ow, plane_in, plane_out) = (2 * w, h * w, 4 * h * w);
    let mut y = vec![T::default(); x.len() * 4];
    y.par_chunks_mut(plane_out)
        .zip(x.par_chunks(plane_in))
        .for_each(|(yp, xp)| {
            // Along W into a (H, 2W) buffer, then along H.
            let mut t = vec![T::default(); h * ow];
            for (row_t, row_x) in t.chunks_mut(ow).zip(xp.chunks(w)) {
                for (o, &(i0, i1, w0, w1)) in row_t.iter_mut().zip(&tw) {
                    *o = row_x[i0].mul_w(w0) + row_x[i1].mul_w(w1);
                }
            }
            for (row_y, &(i0, i1, w0, w1)) in yp.chunks_mut(ow).zip(&th) {
                let (a, b) = (&t[i0 * ow..(i0 + 1) * ow], &t[i1 * ow..(i1 + 1) * ow]);
                for ((o, &va), &vb) in row_y.iter_mut().zip(a).zip(b) {
                    *o = va.mul_w(w0) + vb.mul_w(w1);
                }
            }
        });
    y
}

/// The adjoint of [`forward`]: `dy (.., 2H, 2W)` -> `dx (.., H, W)`.
fn backward<T: Elem>(dy: &[T], h: usize, w: usize) -> Vec<T> {
    let (th, tw) = (taps(h, 2 * h), taps(w, 2 * w));
    let (ow, plane_in, plane_out) = (2 * w, h * w, 4 * h * w);
    let mut dx = vec![T::default(); dy.len() / 4];
    dx.par_chunks_mut(plane_in)
        .zip(dy.par_chunks(plane_out))
        .for_each(|(dxp, dyp)| {
            // Transpose of the H pass into a (H, 2W) buffer, then of the W pass.
            let mut t = vec![T::default(); h * ow];
            for (row_dy, &(i0, i1, w0, w1)) in dyp.chunks(ow).zip(&th) {
                for (k, &g) in row_dy.iter().enumerate() {
                    t[i0 * ow + k] = t[i0 * ow + k] + g.mul_w(w0);
                    t[i1 * ow + k] = t[i1 * ow + k] + g.mul_w(w1);
                }
            }
            for (row_dx, row_t) in dxp.chunks_mut(w).zip(t.chunks(ow)) {
                for (&g, &(i0, i1, w0, w1)) in row_t.iter().zip(&tw) {
                    row_dx[i0] = row_dx[i0] + g.mul_w(w0);
                    row_dx[i1] = row_dx[i1] + g.mul_w(w1);
                }
            }
        });
    dx
}

impl CustomOp1 for Up2x {
    fn name(&self) -> &'static str {
        "daa_kernels::upsample_bilinear2x"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, h, w) = l.shape().dims4()?;
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(forward(contiguous_slice(v, l)?, h, w)),
            CpuStorage::F64(v) => CpuStorage::F64(forward(contiguous_slice(v, l)?, h, w)),
            _ => candle_core::bail!("upsample_bilinear2x: f32 or f64 expected"),
        };
        Ok((out, Shape::from((b, c, 2 * h, 2 * w))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (_, _, h, w) = arg.dims4()?;
        Ok(Some(grad.contiguous()?.apply_op1(Up2xBwd { h, w })?))
    }
}

impl CustomOp1 for Up2xBwd {
    fn name(&self) -> &'static str {
        "daa_kernels::upsample_bilinear2x_bwd"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, _, _) = l.shape().dims4()?;
        let (h, w) = (self.h, self.w);
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(backward(contiguous_slice(v, l)?, h, w)),
            CpuStorage::F64(v) => CpuStorage::F64(backward(contiguous_slice(v, l)?, h, w)),
            _ => candle_core::bail!("upsample_bilinear2x: f32 or f64 expected"),
        };
        Ok((out, Shape::from((b, c, h, w))))
    }
}
