//! Stride-1 convolutions without im2col: `k*k` shifted gemms over a zero-padded copy.
//!
//! With the input of one image zero-padded to `(C, Hp, Wp)` and stored row after row, the
//! input pixel under kernel tap `(ky, kx)` of output `(oy, ox)` sits at flat offset
//! `(oy + ky) * Wp + ox + kx`: for a fixed tap, the whole output is one contiguous window of
//! the padded planes, shifted by `ky * Wp + kx`. So the forward is
//! `Yw (O, OH*Wp) = sum over taps  W[:, :, ky, kx] (O, C) . Xp[:, shift..] (C, OH*Wp)`, a
//! "wide" output with `Wp - OW` unused columns per row that are dropped when copying out.
//! Each product is one gemm call reading the padded copy in place, so the `C*k*k`-fold im2col
//! copy (and the backward's col2im) is gone; what remains is one padded copy of the input
//! (`C*Hp*Wp`) and one of the output.
//!
//! - The input gradient is the same operation on `dy`, with the kernel flipped and its
//!   in/out channels swapped (padding `k - 1 - p`).
//! - The weight gradient is, per tap, `dW[:, :, ky, kx] += dYw (O, OH*Wp) . Xp[:, shift..]^T`,
//!   with the unused columns of `dYw` zero.
//!
//! Work is split into bands of output rows (bounded scratch per thread, as in
//! [`crate::cpu_conv`]); every sum has an order fixed by the shapes and the band size.
//! For the small channel counts of the CPU presets (16-64 channels at 48x48) this is
//! 1.2-2x faster per pass than im2col + gemm; with few input channels (the RGB input layer)
//! each gemm is too thin and im2col stays ahead, see [`applies`].

use crate::conv::Conv2dGeometry;
use crate::cpu_conv::{mm, mm_strided, run_tasks, sum_groups, Elem, SendPtr, CONV_SCRATCH_BYTES};

/// Fewest input channels (of the forward, or output channels for the input gradient) for
/// which the shifted-gemm form is used: below it each gemm has too short a sum.
pub const WIDE_MIN_CHANNELS: usize = 8;

/// Whether `g` (input channels `c`) runs in the shifted-gemm form.
pub(crate) fn applies(g: &Conv2dGeometry, c: usize) -> bool {
    g.stride == 1 && g.k > 1 && g.padding < g.k && c >= WIDE_MIN_CHANNELS
}

/// The padded row length, and the number of output rows per band: `chunk` output positions
/// (rounded to whole rows; 0 = as many rows as fit the scratch budget for `c_in + c_out`
/// channels).
fn band_rows<T>(g: &Conv2dGeometry, c_in: usize, c_out: usize, chunk: usize) -> (usize, usize) {
    let wp = g.w + 2 * g.padding;
    let oh = g.oh();
    let rows = if chunk == 0 {
        // A band of r rows holds c_in * (r + k - 1) padded input lines and c_out * r output
        // lines (one row at least, whatever the budget).
        let size = std::mem::size_of::<T>();
        let fixed = c_in * (g.k - 1) * wp * size;
        let per_row = (c_in + c_out) * wp * size;
        CONV_SCRATCH_BYTES.saturating_sub(fixed) / per_row.max(1)
    } else {
        chunk / g.ow().max(1)
    };
    (wp, rows.clamp(1, oh.max(1)))
}

/// Copies rows `r0 .. r0 + rows + k - 1` of the padded image (padded coordinates) of `x`
/// `(C, H, W)` into `xp`: channel planes of `plane` elements, each `(rows + k - 1) * wp`
/// values followed by `k - 1` zeros (read by the last taps of the last row, for unused
/// columns only).
fn pad_band<T: Elem>(x: &[T], xp: &mut [T], g: &Conv2dGeometry, r0: usize, rows: usize) {
    let (k, p, wp) = (g.k, g.padding, g.w + 2 * g.padding);
    let lines = rows + k - 1;
    let plane = lines * wp + k - 1;
    for c in 0..g.c {
        let src = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        let dst = &mut xp[c * plane..(c + 1) * plane];
        for l in 0..lines {
            let line = &mut dst[l * wp..(l + 1) * wp];
            match (r0 + l).checked_sub(p).filter(|&iy| iy < g.h) {
                Some(iy) => {
                    line[..p].fill(T::default());
                    line[p..p + g.w].copy_from_slice(&src[iy * g.w..(iy + 1) * g.w]);
                    line[p + g.w..].fill(T::default());
                }
                None => line.fill(T::default()),
            }
        }
        dst[lines * wp..].fill(T::default());
    }
}

/// The weights as gemm's left operand for tap `(ky, kx)`: a pointer and (row, column)
/// strides of the `(out, in)` matrix.
type TapLhs<T> = dyn Fn(usize, usize) -> (*const T, (usize, usize)) + Sync;

/// `y (B, O, OH, OW) = conv(x (B, C, H, W))` for the stride-1 geometry `g`, the weights given
/// per tap by `lhs`; `bias` (O) if given, then LeakyReLU with `slope` if given. Every element
/// of the result is written.
fn conv<T: Elem>(
    x: &[T],
    lhs: &TapLhs<T>,
    o: usize,
    bias: Option<&[T]>,
    g: &Conv2dGeometry,
    chunk: usize,
    slope: Option<T>,
) -> Vec<T> {
    let (k, oh, ow) = (g.k, g.oh(), g.ow());
    let (wp, rows) = band_rows::<T>(g, g.c, o, chunk);
    let bands = oh.div_ceil(rows);
    let per_in = g.c * g.h * g.w;
    let plane_max = (rows + k - 1) * wp + k - 1;
    let len = g.b * o * oh * ow;
    let mut y: Vec<T> = Vec::with_capacity(len);
    let yp = SendPtr(y.spare_capacity_mut().as_mut_ptr().cast::<T>());
    run_tasks(g.b * bands, |t, par| {
        let (bi, band) = (t / bands, t % bands);
        let r0 = band * rows;
        let n_rows = rows.min(oh - r0);
        let plane = (n_rows + k - 1) * wp + k - 1;
        let n = n_rows * wp;
        T::with_scratch(g.c * plane_max + o * rows * wp, |scratch| {
            let (xp, yw) = scratch.split_at_mut(g.c * plane_max);
            pad_band(&x[bi * per_in..(bi + 1) * per_in], xp, g, r0, n_rows);
            let yw = &mut yw[..o * n];
            if let Some(bias) = bias {
                for (row, &bv) in yw.chunks_exact_mut(n).zip(bias) {
                    row.fill(bv);
                }
            }
            for ky in 0..k {
                for kx in 0..k {
                    let (w, strides) = lhs(ky, kx);
                    let first = ky == 0 && kx == 0 && bias.is_none();
                    // Yw (O, n) (+)= W_tap (O, C) . Xp[:, shift..shift + n] (C, n)
                    unsafe {
                        mm::<T>(
                            (o, n, g.c),
                            yw.as_mut_ptr(),
                            n,
                            !first,
                            w,
                            strides,
                            xp.as_ptr().add(ky * wp + kx),
                            (plane, 1),
                            par,
                        )
                    }
                }
            }
            for oi in 0..o {
                for r in 0..n_rows {
                    let src = &mut yw[oi * n + r * wp..oi * n + r * wp + ow];
                    if let Some(k) = slope {
                        src.iter_mut().for_each(|v| *v = v.leaky(k));
                    }
                    // Disjoint per task: rows r0..r0+n_rows of image bi, every channel.
                    unsafe {
                        let dst = yp.get().add(((bi * o + oi) * oh + r0 + r) * ow);
                        std::ptr::copy_nonoverlapping(src.as_ptr(), dst, ow);
                    }
                }
            }
        })
    });
    // Every element was written above (all images, bands, channels, rows, columns).
    unsafe { y.set_len(len) };
    y
}

/// `x (B, C, H, W)`, `w (O, C, k, k)`, `bias (O,)` -> `y (B, O, OH, OW)`, then LeakyReLU with
/// `slope` if given.
pub(crate) fn forward<T: Elem>(
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    g: &Conv2dGeometry,
    chunk: usize,
    slope: Option<T>,
) -> Vec<T> {
    let (k, ckk) = (g.k, g.ckk());
    let o = w.len() / ckk.max(1);
    let wp = SendPtr(w.as_ptr().cast_mut());
    // W[:, :, ky, kx] as (O, C): rows step C*k*k, columns k*k.
    let lhs = move |ky: usize, kx: usize| {
        let p = wp;
        (p.get().cast_const().wrapping_add(ky * k + kx), (ckk, k * k))
    };
    conv(x, &lhs, o, bias, g, chunk, slope)
}

/// `dy (B, O, OH, OW)`, `w (O, C, k, k)` -> `dx (B, C, H, W)`: the forward of `dy` with the
/// kernel flipped and transposed, padding `k - 1 - p`.
pub(crate) fn backward_data<T: Elem>(
    dy: &[T],
    w: &[T],
    g: &Conv2dGeometry,
    chunk: usize,
) -> Vec<T> {
    let (k, ckk) = (g.k, g.ckk());
    let o = w.len() / ckk.max(1);
    let gt = Conv2dGeometry {
        c: o,
        h: g.oh(),
        w: g.ow(),
        padding: k - 1 - g.padding,
        ..*g
    };
    let wp = SendPtr(w.as_ptr().cast_mut());
    // W[:, :, k-1-ky, k-1-kx]^T as (C, O): rows step k*k, columns C*k*k.
    let lhs = move |ky: usize, kx: usize| {
        let p = wp;
        let tap = (k - 1 - ky) * k + (k - 1 - kx);
        (p.get().cast_const().wrapping_add(tap), (k * k, ckk))
    };
    conv(dy, &lhs, g.c, None, &gt, chunk, None)
}

/// `x (B, C, H, W)`, `dy (B, O, OH, OW)` -> `dw (O, C, k, k)`, summed per image and band in
/// a fixed number of groups of images (as [`crate::cpu_conv::backward_filter`]).
/// `g.b` must be at least 1 (the op returns zeros for an empty batch before calling this).
pub(crate) fn backward_filter<T: Elem>(
    x: &[T],
    dy: &[T],
    g: &Conv2dGeometry,
    chunk: usize,
    groups: usize,
) -> Vec<T> {
    let (k, ckk, oh, ow) = (g.k, g.ckk(), g.oh(), g.ow());
    let o = dy.len() / (g.b * oh * ow).max(1);
    let (wp, rows) = band_rows::<T>(g, g.c, o, chunk);
    let bands = oh.div_ceil(rows);
    let per_in = g.c * g.h * g.w;
    let plane_max = (rows + k - 1) * wp + k - 1;
    let size = o * ckk;
    // Each group's first gemm writes its whole partial sum (no zero fill first).
    let mut partials: Vec<T> = Vec::with_capacity(groups * size);
    let pp = SendPtr(partials.spare_capacity_mut().as_mut_ptr().cast::<T>());
    run_tasks(groups, |gi, par| {
        let (b0, b1) = (gi * g.b / groups, (gi + 1) * g.b / groups);
        // Disjoint per task: partial sum gi.
        let dw = unsafe { pp.get().add(gi * size) };
        let mut first = true;
        T::with_scratch(g.c * plane_max + o * rows * wp, |scratch| {
            let (xp, dyw) = scratch.split_at_mut(g.c * plane_max);
            for bi in b0..b1 {
                let dyb = &dy[bi * o * oh * ow..(bi + 1) * o * oh * ow];
                for band in 0..bands {
                    let r0 = band * rows;
                    let n_rows = rows.min(oh - r0);
                    let plane = (n_rows + k - 1) * wp + k - 1;
                    let n = n_rows * wp;
                    pad_band(&x[bi * per_in..(bi + 1) * per_in], xp, g, r0, n_rows);
                    let dyw = &mut dyw[..o * n];
                    for oi in 0..o {
                        for r in 0..n_rows {
                            let line = &mut dyw[oi * n + r * wp..oi * n + (r + 1) * wp];
                            let src = (oi * oh + r0 + r) * ow;
                            line[..ow].copy_from_slice(&dyb[src..src + ow]);
                            line[ow..].fill(T::default());
                        }
                    }
                    for ky in 0..k {
                        for kx in 0..k {
                            // dW_tap (O, C) += dYw (O, n) . Xp[:, shift..shift + n]^T (n, C)
                            unsafe {
                                mm_strided::<T>(
                                    (o, g.c, n),
                                    dw.add(ky * k + kx),
                                    (ckk, k * k),
                                    !first,
                                    dyw.as_ptr(),
                                    (n, 1),
                                    xp.as_ptr().add(ky * wp + kx),
                                    (1, plane),
                                    par,
                                )
                            }
                        }
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
