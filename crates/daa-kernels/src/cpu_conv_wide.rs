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
//!
//! For 3x3 f32 convs on a CPU with AVX-512F or AVX2 + FMA the nine gemms of a band are
//! replaced by the microkernels of [`crate::cpu_conv_direct`] (same padded band, same wide
//! output), where they measured faster: the forward and input gradient on bands of at least
//! `DIRECT_MIN_POSITIONS` positions, the weight gradient whenever the output channels are
//! a multiple of the vector's lanes (16, or 8 with AVX2). The gemms get the weights as one
//! contiguous matrix per tap.

use crate::conv::Conv2dGeometry;
use ::gemm::Parallelism;

use crate::cpu_conv::{mm, mm_strided, run_tasks, sum_groups, Elem, SendPtr, CONV_SCRATCH_BYTES};

/// Fewest input channels (of the forward, or output channels for the input gradient) for
/// which the shifted-gemm form is used: below it each gemm has too short a sum.
pub const WIDE_MIN_CHANNELS: usize = 8;

/// Whether `g` (input channels `c`) runs in the shifted-gemm form.
pub(crate) fn applies(g: &Conv2dGeometry, c: usize) -> bool {
    g.stride == 1 && g.k > 1 && g.padding < g.k && c >= WIDE_MIN_CHANNELS
}

/// `s` as f32 values when `T` is f32.
fn as_f32<T: Elem>(s: &[T]) -> Option<&[f32]> {
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>())
        // SAFETY: T is f32.
        .then(|| unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<f32>(), s.len()) })
}

/// `s` as f32 values when `T` is f32.
fn as_f32_mut<T: Elem>(s: &mut [T]) -> Option<&mut [f32]> {
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>())
        // SAFETY: T is f32.
        .then(|| unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<f32>(), s.len()) })
}

#[cfg(target_arch = "x86_64")]
use crate::cpu_conv_direct::Isa;
/// No vector kernels off x86-64.
#[cfg(not(target_arch = "x86_64"))]
#[derive(Clone, Copy)]
enum Isa {}

/// The instruction set with which the kernels of `cpu_conv_direct` run `g` (3x3) in `T` (f32)
/// here, if they do (read once per op).
fn direct<T: Elem>(g: &Conv2dGeometry) -> Option<Isa> {
    #[cfg(target_arch = "x86_64")]
    {
        let f32 = std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>();
        crate::cpu_conv_direct::isa().filter(|_| g.k == 3 && f32)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = g;
        None
    }
}

/// Fewest (wide) output positions per band for which the forward and input gradient run the
/// direct kernels: on fewer (the 6x6 maps of the CPU U-Net, 48 positions per image) the
/// shifted gemms were faster (measured on 8 images of 64-128 channels).
const DIRECT_MIN_POSITIONS: usize = 96;

/// How one op splits each image's output rows into bands.
#[derive(Clone, Copy)]
struct Bands {
    /// The padded row length.
    wp: usize,
    /// Output rows per band (the last band of an image may have fewer).
    rows: usize,
    /// Bands per image.
    count: usize,
    /// Values of one channel's padded plane for a full band.
    plane_max: usize,
}

/// One band of one image, as [`Bands::pad`] laid it out.
struct Span {
    /// Its first output row.
    r0: usize,
    /// Its output rows.
    n_rows: usize,
    /// Values of one channel's padded plane: `n + (k - 1) * (wp + 1)`.
    plane: usize,
    /// Its (wide) output positions, `n_rows * wp`.
    n: usize,
}

impl Bands {
    /// Bands of `chunk` output positions (rounded to whole rows; 0 = as many rows as fit the
    /// scratch budget for `g.c + c_out` channels of `T`).
    fn new<T>(g: &Conv2dGeometry, c_out: usize, chunk: usize) -> Self {
        let (k, wp, oh) = (g.k, g.w + 2 * g.padding, g.oh());
        let rows = if chunk == 0 {
            // A band of r rows holds c_in * (r + k - 1) padded input lines and c_out * r
            // output lines (one row at least, whatever the budget).
            let size = std::mem::size_of::<T>();
            let fixed = g.c * (k - 1) * wp * size;
            let per_row = (g.c + c_out) * wp * size;
            CONV_SCRATCH_BYTES.saturating_sub(fixed) / per_row.max(1)
        } else {
            chunk / g.ow().max(1)
        };
        let rows = rows.clamp(1, oh.max(1));
        Bands {
            wp,
            rows,
            count: oh.div_ceil(rows),
            plane_max: (rows + k - 1) * wp + k - 1,
        }
    }

    /// Zero-pads band `band` of image `bi` of `x (B, C, H, W)` into `xp` ([`pad_band`]).
    fn pad<T: Elem>(
        &self,
        x: &[T],
        xp: &mut [T],
        g: &Conv2dGeometry,
        bi: usize,
        band: usize,
    ) -> Span {
        let per_in = g.c * g.h * g.w;
        let r0 = band * self.rows;
        let n_rows = self.rows.min(g.oh() - r0);
        pad_band(&x[bi * per_in..(bi + 1) * per_in], xp, g, r0, n_rows);
        Span {
            r0,
            n_rows,
            plane: (n_rows + g.k - 1) * self.wp + g.k - 1,
            n: n_rows * self.wp,
        }
    }
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

/// `kk` row-major `(rows, cols)` matrices, one per tap: `m[t][r][c] = at(r, c, t)` (gemm packs
/// contiguous rows faster than the weights' stride-`k*k` columns).
fn tap_matrices<T: Elem>(
    rows: usize,
    cols: usize,
    kk: usize,
    at: impl Fn(usize, usize, usize) -> T,
) -> Vec<T> {
    // In 16 x 16 tiles of (row, col), so that both the weights and the result are read and
    // written within a few cache lines at a time.
    const B: usize = 16;
    let mut m = vec![T::default(); kk * rows * cols];
    for r0 in (0..rows).step_by(B) {
        for c0 in (0..cols).step_by(B) {
            for t in 0..kk {
                for r in r0..rows.min(r0 + B) {
                    for c in c0..cols.min(c0 + B) {
                        m[(t * rows + r) * cols + c] = at(r, c, t);
                    }
                }
            }
        }
    }
    m
}

/// `yw (o, n) = bias + sum over taps` of one gemm per tap: `W_tap (o, c) . Xp[:, shift..]`
/// with `shift = ky * wp + kx` into the padded band `xp` (planes of `plane` values).
fn tap_gemms<T: Elem>(
    xp: &[T],
    w: &[T],
    yw: &mut [T],
    bias: Option<&[T]>,
    (o, n, c): (usize, usize, usize),
    (k, wp, plane): (usize, usize, usize),
    par: Parallelism,
) {
    if let Some(bias) = bias {
        for (row, &bv) in yw.chunks_exact_mut(n).zip(bias) {
            row.fill(bv);
        }
    }
    for ky in 0..k {
        for kx in 0..k {
            let first = ky == 0 && kx == 0 && bias.is_none();
            // Yw (O, n) (+)= W_tap (O, C) . Xp[:, shift..shift + n] (C, n)
            unsafe {
                mm::<T>(
                    (o, n, c),
                    yw.as_mut_ptr(),
                    n,
                    !first,
                    w[(ky * k + kx) * o * c..].as_ptr(),
                    (c, 1),
                    xp.as_ptr().add(ky * wp + kx),
                    (plane, 1),
                    par,
                )
            }
        }
    }
}

/// `y (B, O, OH, OW) = conv(x (B, C, H, W))` for the stride-1 geometry `g`, the weights given
/// per tap by `lhs`; `bias` (O) if given, then LeakyReLU with `slope` if given. Every element
/// of the result is written.
#[allow(clippy::too_many_arguments)]
fn conv<T: Elem>(
    x: &[T],
    taps: &dyn Fn() -> Vec<T>,
    pack: &dyn Fn(Isa) -> Vec<f32>,
    o: usize,
    bias: Option<&[T]>,
    g: &Conv2dGeometry,
    chunk: usize,
    slope: Option<T>,
) -> Vec<T> {
    let (k, oh, ow) = (g.k, g.oh(), g.ow());
    let bs = Bands::new::<T>(g, o, chunk);
    let (wp, rows, bands, plane_max) = (bs.wp, bs.rows, bs.count, bs.plane_max);
    let len = g.b * o * oh * ow;
    // The weights packed for the direct kernels, if they run (on full bands large enough).
    let packed = direct::<T>(g)
        .filter(|_| rows * wp >= DIRECT_MIN_POSITIONS)
        .map(|isa| (isa, pack(isa)));
    let packed = packed.as_ref().map(|(isa, w)| (*isa, w.as_slice()));
    // The weights per tap for gemm, if some band runs the gemms (the last band may be short).
    let last = oh.saturating_sub(bands.saturating_sub(1) * rows) * wp;
    let gemm_w = (packed.is_none() || last < DIRECT_MIN_POSITIONS).then(taps);
    let gemm_w = gemm_w.as_deref().unwrap_or_default();
    let mut y: Vec<T> = Vec::with_capacity(len);
    let yp = SendPtr(y.spare_capacity_mut().as_mut_ptr().cast::<T>());
    run_tasks(g.b * bands, |t, par| {
        let (bi, band) = (t / bands, t % bands);
        T::with_scratch(g.c * plane_max + o * rows * wp, |scratch| {
            let (xp, yw) = scratch.split_at_mut(g.c * plane_max);
            let Span {
                r0,
                n_rows,
                plane,
                n,
            } = bs.pad(x, xp, g, bi, band);
            let yw = &mut yw[..o * n];
            match packed {
                #[cfg(target_arch = "x86_64")]
                Some((isa, wpk)) if n >= DIRECT_MIN_POSITIONS => {
                    let init = match bias.and_then(as_f32) {
                        Some(b) => b.to_vec(),
                        None => vec![0f32; o],
                    };
                    let xf = as_f32(xp).unwrap_or_default();
                    let yf = as_f32_mut(yw).unwrap_or_default();
                    // SAFETY: `packed` is given only when `direct` gave `isa` (f32, 3x3): xf
                    // holds g.c planes of `plane = n + 2 * wp + 2` values, yf o * n, and wpk
                    // packs the o x g.c kernel for `isa`.
                    unsafe {
                        crate::cpu_conv_direct::forward_band(
                            isa, xf, plane, wp, g.c, wpk, &init, yf, o, n, par,
                        )
                    }
                }
                _ => tap_gemms(xp, gemm_w, yw, bias, (o, n, g.c), (k, wp, plane), par),
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
    // Per tap t, W[:, :, t] as a row-major (O, C) matrix.
    let taps = move || tap_matrices(o, g.c, k * k, |oi, ci, t| w[oi * ckk + ci * k * k + t]);
    #[cfg(target_arch = "x86_64")]
    let pack = move |isa| {
        let wf = as_f32(w).unwrap_or_default();
        crate::cpu_conv_direct::pack(isa, o, g.c, |oi, ci, t| wf[oi * ckk + ci * 9 + t])
    };
    #[cfg(not(target_arch = "x86_64"))]
    let pack = |_: Isa| Vec::new();
    conv(x, &taps, &pack, o, bias, g, chunk, slope)
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
    // Per tap t, W[:, :, k*k-1-t]^T as a row-major (C, O) matrix.
    let kk = k * k;
    let taps = move || tap_matrices(g.c, o, kk, |ci, oi, t| w[oi * ckk + ci * kk + kk - 1 - t]);
    // The forward of dy: out channel = x's channel ci, in channel = y's channel oi, taps
    // flipped.
    #[cfg(target_arch = "x86_64")]
    let pack = move |isa| {
        let wf = as_f32(w).unwrap_or_default();
        crate::cpu_conv_direct::pack(isa, g.c, o, |ci, oi, t| wf[oi * ckk + ci * 9 + 8 - t])
    };
    #[cfg(not(target_arch = "x86_64"))]
    let pack = |_: Isa| Vec::new();
    conv(dy, &taps, &pack, g.c, None, &gt, chunk, None)
}

/// `dst[j * dst_rs + i] = src[i * src_rs + j]` for `i < rows`, `j < cols`, in 16 x 16 tiles
/// (both sides stay in cache when the row strides are large).
fn transpose(
    src: &[f32],
    src_rs: usize,
    dst: &mut [f32],
    dst_rs: usize,
    (rows, cols): (usize, usize),
) {
    const B: usize = 16;
    for i0 in (0..rows).step_by(B) {
        for j0 in (0..cols).step_by(B) {
            for j in j0..cols.min(j0 + B) {
                let d = &mut dst[j * dst_rs..];
                for i in i0..rows.min(i0 + B) {
                    d[i] = src[i * src_rs + j];
                }
            }
        }
    }
}

/// Most weights for which the direct weight gradient keeps the caller's groups of images.
#[cfg(target_arch = "x86_64")]
const DIRECT_FILTER_GROUPED_WEIGHTS: usize = 1 << 20;

/// The weight gradient `(O, C, 3, 3)` with the vector kernel
/// [`crate::cpu_conv_direct::filter_t`]: per group of images, the padded input and `dy`
/// transposed to `(positions, O)` of as many bands as fit [`CONV_SCRATCH_BYTES`] are laid out
/// side by side, and each stack is summed in one call (the sums stay in registers across its
/// bands); the groups' partial sums are added in group order.
#[cfg(target_arch = "x86_64")]
fn filter_direct(
    isa: Isa,
    x: &[f32],
    dy: &[f32],
    g: &Conv2dGeometry,
    o: usize,
    bs: Bands,
    groups: usize,
) -> Vec<f32> {
    use crate::cpu_conv_direct::Band;
    let (k, oh, ow) = (g.k, g.oh(), g.ow());
    let (wp, rows, bands, plane_max) = (bs.wp, bs.rows, bs.count, bs.plane_max);
    // One band's room: its padded input and its transposed dy.
    let unit = g.c * plane_max + o * rows * wp;
    let stack = (CONV_SCRATCH_BYTES / 4 / unit.max(1)).clamp(1, (g.b * bands).max(1));
    let size = o * g.c * k * k;
    // Large weights (over 1M, 4 MB): one group, in parallel over the weights, so that the
    // sums are stored once per stack instead of once per group and stack.
    let groups = if size > DIRECT_FILTER_GROUPED_WEIGHTS {
        1
    } else {
        groups
    };
    let mut partials: Vec<f32> = Vec::with_capacity(groups * size);
    let pp = SendPtr(partials.spare_capacity_mut().as_mut_ptr().cast::<f32>());
    run_tasks(groups, |gi, par| {
        let (b0, b1) = (gi * g.b / groups, (gi + 1) * g.b / groups);
        // Disjoint per task: partial sum gi, every element written by the first stack.
        let dw = unsafe { std::slice::from_raw_parts_mut(pp.get().add(gi * size), size) };
        let units: Vec<(usize, usize)> = (b0..b1)
            .flat_map(|bi| (0..bands).map(move |band| (bi, band)))
            .collect();
        f32::with_scratch(stack * unit, |scratch| {
            for (si, chunk_units) in units.chunks(stack).enumerate() {
                let mut laid = Vec::with_capacity(chunk_units.len());
                for (slot, &(bi, band)) in scratch.chunks_exact_mut(unit).zip(chunk_units) {
                    let (xp, dyt) = slot.split_at_mut(g.c * plane_max);
                    let Span {
                        r0,
                        n_rows,
                        plane,
                        n,
                    } = bs.pad(x, xp, g, bi, band);
                    // dyt (n, o): position (r, col) of the band, channel oi; zero for the
                    // unused columns.
                    let dyb = &dy[bi * o * oh * ow..(bi + 1) * o * oh * ow];
                    for r in 0..n_rows {
                        let line = &mut dyt[r * wp * o..(r + 1) * wp * o];
                        let (used, unused) = line.split_at_mut(ow * o);
                        unused.fill(0.0);
                        transpose(&dyb[(r0 + r) * ow..], oh * ow, used, o, (o, ow));
                    }
                    laid.push(Band {
                        xp: xp.as_ptr(),
                        plane,
                        dyt: dyt.as_ptr(),
                        n,
                    });
                }
                // SAFETY: `isa` came from `direct` (f32, 3x3) and fits o; each band's xp
                // holds g.c planes of `plane = n + 2 * wp + 2` values and its dyt n * o; dw
                // holds o * c * 9.
                unsafe {
                    crate::cpu_conv_direct::filter_t(isa, &laid, wp, g.c, o, dw, si == 0, par)
                };
            }
        })
    });
    // Every group wrote all `size` elements of its part (see above).
    unsafe { partials.set_len(groups * size) };
    sum_groups(partials, size)
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
    let bs = Bands::new::<T>(g, o, chunk);
    let (wp, rows, bands, plane_max) = (bs.wp, bs.rows, bs.count, bs.plane_max);
    let size = o * ckk;
    #[cfg(target_arch = "x86_64")]
    if let Some(isa) = direct::<T>(g).filter(|&isa| crate::cpu_conv_direct::filter_fits(isa, o)) {
        let dw = filter_direct(
            isa,
            as_f32(x).unwrap_or_default(),
            as_f32(dy).unwrap_or_default(),
            g,
            o,
            bs,
            groups,
        );
        let mut dw = std::mem::ManuallyDrop::new(dw);
        let (ptr, len, cap) = (dw.as_mut_ptr(), dw.len(), dw.capacity());
        // SAFETY: T is f32 (checked by `direct`), so the allocation and elements are T's.
        return unsafe { Vec::from_raw_parts(ptr.cast::<T>(), len, cap) };
    }
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
                    let Span {
                        r0,
                        n_rows,
                        plane,
                        n,
                    } = bs.pad(x, xp, g, bi, band);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 11) as f64 / (1u64 << 52) as f64 - 1.0
            })
            .collect()
    }

    fn to32(v: &[f64]) -> Vec<f32> {
        v.iter().map(|&x| x as f32).collect()
    }

    /// Largest |a - b| over the largest |b| (at least 1).
    fn rel(a: &[f32], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(1f64, |m, v| m.max(v.abs()));
        let d = a
            .iter()
            .zip(b)
            .fold(0f64, |m, (&x, &y)| m.max((x as f64 - y).abs()));
        d / scale
    }

    /// The three passes in f32 (the vector kernels where the CPU has them) against the same
    /// passes in f64 (shifted gemms): shapes that leave partial register tiles (widths,
    /// output channels not a multiple of 8), several bands, batch 1 (parallel inside a band)
    /// and batch 3.
    fn check(threads: usize) {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let mut seed = 1;
        for &(b, c, h, w, o, p) in &[
            (1, 8, 5, 1, 1, 1),
            (1, 8, 9, 13, 3, 1),
            (3, 16, 12, 12, 16, 1),
            (1, 9, 7, 30, 17, 0),
            (2, 16, 6, 47, 8, 2),
            (1, 33, 11, 5, 9, 1),
            (3, 12, 16, 21, 24, 1),
            // The direct weight gradient: 32 output channels (two vectors of lanes), and 16
            // with 3k + 2 and 3k + 1 input channels; forward bands of >= 96 positions.
            (1, 8, 20, 30, 32, 1),
            (2, 17, 9, 11, 16, 1),
            (1, 10, 13, 17, 16, 0),
            (2, 9, 6, 20, 48, 2),
            // Bands of over 2 MB: one band per stack, so the weight gradient's sums leave
            // the registers and come back between the images of a group.
            (2, 16, 300, 64, 16, 1),
        ] {
            let g = Conv2dGeometry {
                b,
                c,
                h,
                w,
                k: 3,
                stride: 1,
                padding: p,
            };
            let (oh, ow) = (g.oh(), g.ow());
            seed += 1;
            let x = values(b * c * h * w, seed);
            let wt = values(o * c * 9, seed + 100);
            let bias = values(o, seed + 200);
            let dy = values(b * o * oh * ow, seed + 300);
            for chunk in [0, ow, 3 * ow] {
                let case = (b, c, h, w, o, p, chunk, threads);
                pool.install(|| {
                    let y64 = forward(&x, &wt, Some(&bias), &g, chunk, Some(0.2));
                    let y32 = forward(
                        &to32(&x),
                        &to32(&wt),
                        Some(&to32(&bias)),
                        &g,
                        chunk,
                        Some(0.2f32),
                    );
                    assert!(
                        rel(&y32, &y64) < 1e-5,
                        "forward {case:?}: {}",
                        rel(&y32, &y64)
                    );
                    let dx64 = backward_data(&dy, &wt, &g, chunk);
                    let dx32 = backward_data(&to32(&dy), &to32(&wt), &g, chunk);
                    assert!(
                        rel(&dx32, &dx64) < 1e-5,
                        "input grad {case:?}: {}",
                        rel(&dx32, &dx64)
                    );
                    for groups in [1, 2] {
                        let groups = groups.min(b);
                        let dw64 = backward_filter(&x, &dy, &g, chunk, groups);
                        let dw32 = backward_filter(&to32(&x), &to32(&dy), &g, chunk, groups);
                        assert!(
                            rel(&dw32, &dw64) < 1e-5,
                            "weight grad {case:?} groups {groups}: {}",
                            rel(&dw32, &dw64)
                        );
                    }
                });
            }
        }
    }

    #[test]
    fn f32_passes_match_f64_on_one_thread() {
        check(1);
    }

    #[test]
    fn f32_passes_match_f64_on_three_threads() {
        check(3);
    }

    /// Held by the tests that force the AVX2 kernels, so that one does not switch them off
    /// under the other.
    #[cfg(target_arch = "x86_64")]
    static AVX2_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// The same shapes on the AVX2 kernels, forced on a CPU that has AVX-512F. (Other tests
    /// running meanwhile may take the AVX2 kernels too: those give the AVX-512 bits, or, with 8
    /// output channels, sums within the tolerances of the tests above.)
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn f32_passes_match_f64_on_avx2() {
        use crate::cpu_conv_direct::AVX2_ONLY;
        use std::sync::atomic::Ordering;
        let _one_at_a_time = AVX2_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        AVX2_ONLY.store(true, Ordering::Relaxed);
        let r = std::panic::catch_unwind(|| check(2));
        AVX2_ONLY.store(false, Ordering::Relaxed);
        if let Err(e) = r {
            std::panic::resume_unwind(e);
        }
    }

    /// The AVX2 kernels (forced on a CPU with AVX-512F) against the f64 gemm path, and bit for
    /// bit against the AVX-512 kernels wherever both run the same passes (the same products
    /// in the same order; with 8 output channels only AVX2 runs the direct weight gradient).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_kernels_match_f64_and_the_avx512_bits() {
        use crate::cpu_conv_direct::{isa, AVX2_ONLY};
        use std::sync::atomic::Ordering;
        if isa().is_none() {
            eprintln!("neither AVX-512F nor AVX2 + FMA here: nothing to test");
            return;
        }
        let _one_at_a_time = AVX2_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        for &(b, c, h, w, o) in &[(2, 16, 30, 37, 16), (1, 9, 20, 30, 8), (3, 20, 7, 50, 40)] {
            let g = Conv2dGeometry {
                b,
                c,
                h,
                w,
                k: 3,
                stride: 1,
                padding: 1,
            };
            let case = (b, c, h, w, o);
            let x = values(b * c * h * w, 11);
            let wt = values(o * c * 9, 12);
            let bias = values(o, 13);
            let dy = values(b * o * h * w, 14);
            let (x32, w32, b32, dy32) = (to32(&x), to32(&wt), to32(&bias), to32(&dy));
            let groups = 2.min(b);
            let run = || {
                (
                    forward(&x32, &w32, Some(&b32), &g, 0, Some(0.1f32)),
                    backward_data(&dy32, &w32, &g, 0),
                    backward_filter(&x32, &dy32, &g, 0, groups),
                )
            };
            let wide = run();
            AVX2_ONLY.store(true, Ordering::Relaxed);
            let narrow = run();
            AVX2_ONLY.store(false, Ordering::Relaxed);
            let y64 = forward(&x, &wt, Some(&bias), &g, 0, Some(0.1));
            let dx64 = backward_data(&dy, &wt, &g, 0);
            let dw64 = backward_filter(&x, &dy, &g, 0, groups);
            assert!(rel(&narrow.0, &y64) < 1e-5, "AVX2 forward {case:?}");
            assert!(rel(&narrow.1, &dx64) < 1e-5, "AVX2 input grad {case:?}");
            assert!(rel(&narrow.2, &dw64) < 1e-5, "AVX2 weight grad {case:?}");
            if isa() == Some(Isa::Avx512) {
                assert!(wide.0 == narrow.0 && wide.1 == narrow.1, "{case:?}");
                if o % 16 == 0 {
                    assert!(wide.2 == narrow.2, "AVX2 and AVX-512 weight grads {case:?}");
                }
            }
        }
    }

    /// The f32 results do not depend on the number of threads, bit for bit.
    #[test]
    fn f32_passes_are_the_same_on_any_thread_count() {
        let g = Conv2dGeometry {
            b: 1,
            c: 16,
            h: 19,
            w: 23,
            k: 3,
            stride: 1,
            padding: 1,
        };
        // 32 output channels: every pass on the direct kernels where the CPU has them.
        let o = 32;
        let x = to32(&values(16 * 19 * 23, 7));
        let wt = to32(&values(o * 16 * 9, 8));
        let dy = to32(&values(o * 19 * 23, 9));
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap_or_else(|e| panic!("{e}"));
            pool.install(|| {
                (
                    forward(&x, &wt, None, &g, 0, None),
                    backward_data(&dy, &wt, &g, 0),
                    backward_filter(&x, &dy, &g, 0, 1),
                )
            })
        };
        let one = run(1);
        for threads in [2, 3] {
            assert!(one == run(threads), "{threads} threads differ from one");
        }
    }
}
