//! The CPU convolution engine behind [`crate::conv2d`]: im2col in bounded chunks, each
//! multiplied by one gemm call (the `gemm` crate, the one candle's matmul uses).
//!
//! Per image the output is `Y (O, P) = W (O, CKK) . cols (CKK, P)` with `P = OH*OW`, written
//! straight into the NCHW output (no transpose copy). `cols` is built for at most
//! [`CONV_SCRATCH_BYTES`] of positions at a time, so a 512x512 image with 512 input channels
//! needs a few MB of scratch instead of gigabytes. The backward recomputes the chunks rather
//! than keeping the full im2col matrix alive between forward and backward:
//! `dcols = W^T . dY` (then col2im into dX) and `dW += dY . cols^T`.
//!
//! Determinism: every sum has a fixed order that depends on the shapes and the chunk size
//! only, not on the number of threads or on scheduling (the weight gradient is summed in a
//! fixed number of groups of images, each sequential, added in group order).

use std::cell::RefCell;

use ::gemm::Parallelism;
use rayon::prelude::*;

use crate::conv::Conv2dGeometry;
use crate::cpu_conv_wide::{self as wide, WIDE_MIN_CHANNELS};

/// The most im2col scratch one thread holds at a time, in bytes.
pub const CONV_SCRATCH_BYTES: usize = 4 << 20;

/// The most bytes the weight gradient's per-group partial sums may take together.
const PARTIALS_BYTES: usize = 32 << 20;

/// Most groups the weight gradient is split into (each a partial sum over a run of images).
const MAX_GROUPS: usize = 4;

/// f32 or f64.
pub(crate) trait Elem:
    Copy + Default + Send + Sync + std::ops::AddAssign + std::ops::Add<Output = Self> + 'static
{
    const ONE: Self;
    /// LeakyReLU with slope `k`: `max(x, k * x)`, as [`crate::leaky_relu`] computes it.
    fn leaky(self, k: Self) -> Self;
    /// Runs `f` on a scratch buffer of `n` elements (contents unspecified), reused across
    /// calls on the same thread so that chunks do not page-fault fresh memory each time.
    fn with_scratch<R>(n: usize, f: impl FnOnce(&mut [Self]) -> R) -> R;
}

macro_rules! elem {
    ($t:ty, $tls:ident) => {
        thread_local! {
            static $tls: RefCell<Vec<$t>> = const { RefCell::new(Vec::new()) };
        }
        impl Elem for $t {
            const ONE: Self = 1.0;
            fn leaky(self, k: Self) -> Self {
                self.max(self * k)
            }
            fn with_scratch<R>(n: usize, f: impl FnOnce(&mut [Self]) -> R) -> R {
                // Taken out while in use: a nested call on this thread (rayon work stealing
                // inside a parallel gemm) gets a fresh buffer instead of a borrow panic.
                let mut buf = $tls.with(|c| std::mem::take(&mut *c.borrow_mut()));
                if buf.len() < n {
                    buf = vec![Self::default(); n];
                }
                let r = f(&mut buf[..n]);
                if buf.len() * std::mem::size_of::<Self>() <= 2 * CONV_SCRATCH_BYTES {
                    $tls.with(|c| *c.borrow_mut() = buf);
                }
                r
            }
        }
    };
}
elem!(f32, SCRATCH_F32);
elem!(f64, SCRATCH_F64);

/// A raw pointer that tasks writing disjoint regions may share.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr<T>(pub(crate) *mut T);
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}
impl<T> SendPtr<T> {
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

/// Output positions per im2col chunk by default for elements of `elem_bytes` bytes: as many
/// as fit in [`CONV_SCRATCH_BYTES`] (at least one, at most the whole image).
pub fn conv_chunk_len(g: &Conv2dGeometry, elem_bytes: usize) -> usize {
    let fit = CONV_SCRATCH_BYTES / (g.ckk() * elem_bytes).max(1);
    fit.clamp(1, (g.oh() * g.ow()).max(1))
}

/// Output positions per chunk: `chunk` if given, else [`conv_chunk_len`].
fn chunk_len<T>(g: &Conv2dGeometry, chunk: usize) -> usize {
    let p = g.oh() * g.ow();
    let fit = conv_chunk_len(g, std::mem::size_of::<T>());
    let n = if chunk == 0 { fit } else { chunk };
    n.clamp(1, p.max(1))
}

/// A 1x1, stride-1, unpadded conv reads its input as the cols matrix, without a copy.
fn is_pointwise(g: &Conv2dGeometry) -> bool {
    g.k == 1 && g.stride == 1 && g.padding == 0
}

/// Runs `n` tasks: in parallel with a single-threaded gemm each when there are enough of them
/// to keep every thread busy, else one after the other with a parallel gemm.
pub(crate) fn run_tasks(n: usize, f: impl Fn(usize, Parallelism) + Send + Sync) {
    let threads = rayon::current_num_threads();
    if threads <= 1 {
        (0..n).for_each(|t| f(t, Parallelism::None));
    } else if n >= threads {
        (0..n).into_par_iter().for_each(|t| f(t, Parallelism::None));
    } else {
        (0..n).for_each(|t| f(t, Parallelism::Rayon(threads)));
    }
}

/// `dst (m, n), row stride dst_rs` (+)= `lhs (m, k) . rhs (k, n)`, each operand given by its
/// row and column strides in elements.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn mm<T: Elem>(
    dims: (usize, usize, usize),
    dst: *mut T,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const T,
    lhs_strides: (usize, usize),
    rhs: *const T,
    rhs_strides: (usize, usize),
    par: Parallelism,
) {
    mm_strided(
        dims,
        dst,
        (dst_rs, 1),
        accumulate,
        lhs,
        lhs_strides,
        rhs,
        rhs_strides,
        par,
    )
}

/// [`mm`] with the destination's row and column strides both given.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn mm_strided<T: Elem>(
    (m, n, k): (usize, usize, usize),
    dst: *mut T,
    (dst_rs, dst_cs): (usize, usize),
    accumulate: bool,
    lhs: *const T,
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: *const T,
    (rhs_rs, rhs_cs): (usize, usize),
    par: Parallelism,
) {
    // gemm: dst = alpha * dst + beta * lhs . rhs (dst read only when `accumulate`).
    ::gemm::gemm(
        m,
        n,
        k,
        dst,
        dst_cs as isize,
        dst_rs as isize,
        accumulate,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        T::ONE,
        T::ONE,
        false,
        false,
        false,
        par,
    )
}

/// The input index along one axis of output index `o` and kernel tap `t`, if inside.
#[inline]
fn src(o: usize, t: usize, g: &Conv2dGeometry, n: usize) -> Option<usize> {
    let i = (o * g.stride + t) as isize - g.padding as isize;
    (i >= 0 && (i as usize) < n).then_some(i as usize)
}

/// Walks the output positions `p0..p0+n` as runs within one output row: `f(q, oy, ox0, len)`
/// with `q` the offset of the run in the chunk.
#[inline]
fn for_runs(
    g: &Conv2dGeometry,
    p0: usize,
    n: usize,
    mut f: impl FnMut(usize, usize, usize, usize),
) {
    let ow = g.ow();
    let mut q = 0;
    while q < n {
        let p = p0 + q;
        let (oy, ox0) = (p / ow, p % ow);
        let len = (ow - ox0).min(n - q);
        f(q, oy, ox0, len);
        q += len;
    }
}

/// For stride 1: the run `ox0..ox0+len` at tap `kx` reads `ix = ox + kx - pad`; returns the
/// sub-run `(lo, hi)` (offsets in the run) whose `ix` lies inside `0..w`.
#[inline]
fn inside_run(g: &Conv2dGeometry, ox0: usize, len: usize, kx: usize) -> (usize, usize) {
    let shift = kx as isize - g.padding as isize;
    let lo = (-shift - ox0 as isize).clamp(0, len as isize) as usize;
    let hi = (g.w as isize - shift - ox0 as isize).clamp(lo as isize, len as isize) as usize;
    (lo, hi)
}

/// `x: (C, H, W)` of one image -> `cols: (CKK, n)` for output positions `p0..p0+n`.
fn im2col_t<T: Elem>(x: &[T], cols: &mut [T], g: &Conv2dGeometry, p0: usize, n: usize) {
    let k = g.k;
    for c in 0..g.c {
        let plane = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for ky in 0..k {
            for kx in 0..k {
                let j = (c * k + ky) * k + kx;
                let row = &mut cols[j * n..(j + 1) * n];
                for_runs(g, p0, n, |q, oy, ox0, len| {
                    let dst = &mut row[q..q + len];
                    let Some(iy) = src(oy, ky, g, g.h) else {
                        dst.fill(T::default());
                        return;
                    };
                    let line = &plane[iy * g.w..(iy + 1) * g.w];
                    if g.stride == 1 {
                        let (lo, hi) = inside_run(g, ox0, len, kx);
                        dst[..lo].fill(T::default());
                        dst[hi..].fill(T::default());
                        if hi > lo {
                            let i0 = (ox0 + lo + kx) - g.padding;
                            dst[lo..hi].copy_from_slice(&line[i0..i0 + (hi - lo)]);
                        }
                    } else {
                        for (i, d) in dst.iter_mut().enumerate() {
                            *d = match src(ox0 + i, kx, g, g.w) {
                                Some(ix) => line[ix],
                                None => T::default(),
                            };
                        }
                    }
                });
            }
        }
    }
}

/// Adjoint of [`im2col_t`]: adds `cols: (CKK, n)` into `x: (C, H, W)`.
fn col2im_t_add<T: Elem>(cols: &[T], x: &mut [T], g: &Conv2dGeometry, p0: usize, n: usize) {
    let k = g.k;
    for c in 0..g.c {
        let plane = &mut x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for ky in 0..k {
            for kx in 0..k {
                let j = (c * k + ky) * k + kx;
                let row = &cols[j * n..(j + 1) * n];
                for_runs(g, p0, n, |q, oy, ox0, len| {
                    let Some(iy) = src(oy, ky, g, g.h) else {
                        return;
                    };
                    let line = &mut plane[iy * g.w..(iy + 1) * g.w];
                    let s = &row[q..q + len];
                    if g.stride == 1 {
                        let (lo, hi) = inside_run(g, ox0, len, kx);
                        if hi > lo {
                            let i0 = (ox0 + lo + kx) - g.padding;
                            for (d, v) in line[i0..i0 + (hi - lo)].iter_mut().zip(&s[lo..hi]) {
                                *d += *v;
                            }
                        }
                    } else {
                        for (i, v) in s.iter().enumerate() {
                            if let Some(ix) = src(ox0 + i, kx, g, g.w) {
                                line[ix] += *v;
                            }
                        }
                    }
                });
            }
        }
    }
}

/// `x (B, C, H, W)`, `w (O, C, k, k)` -> `y (B, O, OH, OW)`.
pub(crate) fn forward<T: Elem>(x: &[T], w: &[T], g: &Conv2dGeometry, chunk: usize) -> Vec<T> {
    forward_bias(x, w, None, g, chunk, None)
}

/// `x (B, C, H, W)`, `w (O, C, k, k)`, `bias (O,)` -> `y (B, O, OH, OW)`: the bias is written
/// first and the gemm adds onto it (no separate pass over the output); with `slope`, each
/// task then applies LeakyReLU to the part of the output it wrote.
pub(crate) fn forward_bias<T: Elem>(
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    g: &Conv2dGeometry,
    chunk: usize,
    slope: Option<T>,
) -> Vec<T> {
    if wide::applies(g, g.c) {
        return wide::forward(x, w, bias, g, chunk, slope);
    }
    let (ckk, p) = (g.ckk(), g.oh() * g.ow());
    let o = w.len() / ckk.max(1);
    let n = chunk_len::<T>(g, chunk);
    let chunks = p.div_ceil(n);
    let len = g.b * o * p;
    let mut y: Vec<T> = Vec::with_capacity(len);
    let yp = SendPtr(y.spare_capacity_mut().as_mut_ptr().cast::<T>());
    let per_in = g.c * g.h * g.w;
    run_tasks(g.b * chunks, |t, par| {
        let (bi, ci) = (t / chunks, t % chunks);
        let (p0, len) = (ci * n, n.min(p - ci * n));
        let xb = &x[bi * per_in..(bi + 1) * per_in];
        // Disjoint per task: image bi, columns p0..p0+len of its (O, P) output.
        let dst = unsafe { yp.get().add(bi * o * p + p0) };
        if let Some(bias) = bias {
            for (oi, &bv) in bias.iter().enumerate() {
                unsafe { std::slice::from_raw_parts_mut(dst.add(oi * p), len) }.fill(bv);
            }
        }
        let accumulate = bias.is_some();
        if is_pointwise(g) {
            unsafe {
                mm::<T>(
                    (o, len, ckk),
                    dst,
                    p,
                    accumulate,
                    w.as_ptr(),
                    (ckk, 1),
                    xb.as_ptr().add(p0),
                    (p, 1),
                    par,
                )
            }
        } else {
            T::with_scratch(ckk * len, |cols| {
                im2col_t(xb, cols, g, p0, len);
                unsafe {
                    mm::<T>(
                        (o, len, ckk),
                        dst,
                        p,
                        accumulate,
                        w.as_ptr(),
                        (ckk, 1),
                        cols.as_ptr(),
                        (len, 1),
                        par,
                    )
                }
            })
        }
        if let Some(k) = slope {
            for oi in 0..o {
                let row = unsafe { std::slice::from_raw_parts_mut(dst.add(oi * p), len) };
                row.iter_mut().for_each(|v| *v = v.leaky(k));
            }
        }
    });
    // Every element was written: each task's columns, for every output channel, either by
    // the bias fill or by a non-accumulating gemm.
    unsafe { y.set_len(len) };
    y
}

/// The first `size` elements of `partials` plus each following run of `size`, in that order
/// for every element (so the same bits whatever the threads), on the rayon pool.
pub(crate) fn sum_groups<T: Elem>(mut partials: Vec<T>, size: usize) -> Vec<T> {
    const PIECE: usize = 1 << 14;
    let (dw, rest) = partials.split_at_mut(size);
    dw.par_chunks_mut(PIECE)
        .enumerate()
        .for_each(|(ci, piece)| {
            let range = ci * PIECE..ci * PIECE + piece.len();
            for part in rest.chunks(size) {
                for (d, v) in piece.iter_mut().zip(&part[range.clone()]) {
                    *d += *v;
                }
            }
        });
    partials.truncate(size);
    partials
}

/// `dy (B, O, P)` -> the bias gradient `(O,)`: per channel, a sequential sum over images and
/// positions (parallel over channels only, so the order is fixed).
pub(crate) fn bias_grad<T: Elem>(dy: &[T], b: usize, o: usize) -> Vec<T> {
    let p = dy.len() / (b * o).max(1);
    (0..o)
        .into_par_iter()
        .map(|oi| {
            let mut acc = T::default();
            for bi in 0..b {
                let row = &dy[(bi * o + oi) * p..(bi * o + oi + 1) * p];
                // Eight partial sums let the loop vectorise; their order is fixed.
                let mut lanes = [T::default(); 8];
                let mut it = row.chunks_exact(8);
                for c in &mut it {
                    for (l, v) in lanes.iter_mut().zip(c) {
                        *l += *v;
                    }
                }
                for v in it.remainder() {
                    lanes[0] += *v;
                }
                for l in lanes {
                    acc += l;
                }
            }
            acc
        })
        .collect()
}

/// `dy (B, O, OH, OW)`, `w (O, C, k, k)` -> `dx (B, C, H, W)`.
pub(crate) fn backward_data<T: Elem>(
    dy: &[T],
    w: &[T],
    g: &Conv2dGeometry,
    chunk: usize,
) -> Vec<T> {
    let (ckk, p) = (g.ckk(), g.oh() * g.ow());
    let o = w.len() / ckk.max(1);
    if wide::applies(g, o) {
        return wide::backward_data(dy, w, g, chunk);
    }
    let n = chunk_len::<T>(g, chunk);
    let chunks = p.div_ceil(n);
    let per_in = g.c * g.h * g.w;
    // Each task initialises its own image's part (zeros, or the non-accumulating gemm), so
    // that no zero fill runs on the calling thread first.
    let mut dx: Vec<T> = Vec::with_capacity(g.b * per_in);
    let dxp = SendPtr(dx.spare_capacity_mut().as_mut_ptr().cast::<T>());
    // One task per image: the chunks of one image add into overlapping parts of its dx.
    run_tasks(g.b, |bi, par| {
        let dyb = &dy[bi * o * p..(bi + 1) * o * p];
        // Disjoint per task: image bi's dx.
        let dst = unsafe { dxp.get().add(bi * per_in) };
        if is_pointwise(g) {
            // dx (C, P) = W^T (C, O) . dy (O, P), every element written
            unsafe {
                mm::<T>(
                    (ckk, p, o),
                    dst,
                    p,
                    false,
                    w.as_ptr(),
                    (1, ckk),
                    dyb.as_ptr(),
                    (p, 1),
                    par,
                )
            }
            return;
        }
        // All-zero bytes are 0.0 in f32 and f64.
        let dxb = unsafe {
            std::ptr::write_bytes(dst, 0, per_in);
            std::slice::from_raw_parts_mut(dst, per_in)
        };
        T::with_scratch(ckk * n, |cols| {
            for ci in 0..chunks {
                let (p0, len) = (ci * n, n.min(p - ci * n));
                let cols = &mut cols[..ckk * len];
                // dcols (CKK, len) = W^T (CKK, O) . dy[:, p0..p0+len] (O, len)
                unsafe {
                    mm::<T>(
                        (ckk, len, o),
                        cols.as_mut_ptr(),
                        len,
                        false,
                        w.as_ptr(),
                        (1, ckk),
                        dyb.as_ptr().add(p0),
                        (p, 1),
                        par,
                    )
                }
                col2im_t_add(cols, dxb, g, p0, len);
            }
        });
    });
    // Every image's part was written by its task.
    unsafe { dx.set_len(g.b * per_in) };
    dx
}

/// `x (B, C, H, W)`, `dy (B, O, OH, OW)` -> `dw (O, C, k, k)`. `g.b` must be at least 1 (the op
/// returns zeros for an empty batch before calling this).
pub(crate) fn backward_filter<T: Elem>(
    x: &[T],
    dy: &[T],
    g: &Conv2dGeometry,
    chunk: usize,
) -> Vec<T> {
    let (ckk, p) = (g.ckk(), g.oh() * g.ow());
    let o = dy.len() / (g.b * p).max(1);
    let n = chunk_len::<T>(g, chunk);
    let chunks = p.div_ceil(n);
    let per_in = g.c * g.h * g.w;
    let size = o * ckk;
    // A fixed number of groups (shapes only), each a sequential sum over its images.
    let groups = (PARTIALS_BYTES / (size * std::mem::size_of::<T>()).max(1))
        .clamp(1, MAX_GROUPS)
        .min(g.b.max(1));
    if wide::applies(g, WIDE_MIN_CHANNELS) {
        // The weight gradient's gemms sum over positions, so few channels do not thin them.
        return wide::backward_filter(x, dy, g, chunk, groups);
    }
    // Each group's first gemm writes its whole partial sum (no zero fill first).
    let mut partials: Vec<T> = Vec::with_capacity(groups * size);
    let pp = SendPtr(partials.spare_capacity_mut().as_mut_ptr().cast::<T>());
    run_tasks(groups, |gi, par| {
        let (b0, b1) = (gi * g.b / groups, (gi + 1) * g.b / groups);
        // Disjoint per task: partial sum gi.
        let dst = unsafe { pp.get().add(gi * size) };
        let mut first = true;
        T::with_scratch(if is_pointwise(g) { 0 } else { ckk * n }, |cols| {
            for bi in b0..b1 {
                let xb = &x[bi * per_in..(bi + 1) * per_in];
                let dyb = &dy[bi * o * p..(bi + 1) * o * p];
                for ci in 0..chunks {
                    let (p0, len) = (ci * n, n.min(p - ci * n));
                    // dW (O, CKK) += dy[:, p0..p0+len] (O, len) . cols^T (len, CKK)
                    let (rhs, rhs_strides) = if is_pointwise(g) {
                        (unsafe { xb.as_ptr().add(p0) }, (1, p))
                    } else {
                        let cols = &mut cols[..ckk * len];
                        im2col_t(xb, cols, g, p0, len);
                        (cols.as_ptr(), (1, len))
                    };
                    unsafe {
                        mm::<T>(
                            (o, ckk, len),
                            dst,
                            ckk,
                            !first,
                            dyb.as_ptr().add(p0),
                            (p, 1),
                            rhs,
                            rhs_strides,
                            par,
                        )
                    }
                    first = false;
                }
            }
        });
    });
    // Every group wrote all `size` elements of its part (see above).
    unsafe { partials.set_len(groups * size) };
    sum_groups(partials, size)
}
