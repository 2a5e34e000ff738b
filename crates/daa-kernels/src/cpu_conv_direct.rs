//! AVX-512 microkernels for the 3x3 stride-1 f32 convs of [`crate::cpu_conv_wide`].
//!
//! The shifted-gemm form computes a 3x3 conv as nine gemm calls, each summing over only the
//! `C` input channels (16-64 in the CPU presets): every call packs its right operand and
//! loads and stores every output tile once more. These kernels keep a tile of
//! `MR` output channels x `16 * NV` (wide) output positions in registers across all nine taps
//! and all input channels, reading the zero-padded band in place, so each output is stored
//! once and nothing is packed but the weights (once per op).
//!
//! - [`forward_band`]: `Yw (O, n) = init + sum over taps and c of W_tap (O, C) . Xp[:, shift..]`,
//!   the forward and (with the kernel flipped and transposed) the input gradient.
//! - [`filter_t`]: `dW[o, c, tap] (+)= sum over n of dY[o, n] . Xp[c, shift(tap) + n]`,
//!   the weight gradient, with 16 or 32 output channels as the lanes and 18-27 weights per
//!   lane in registers over a whole stack of bands (`dY` transposed to positions x channels).
//!
//! Used only where the CPU has AVX-512F (checked once at run time, [`available`]); elsewhere
//! the shifted gemms run, and [`crate::cpu_conv_wide`] picks them also where they measured
//! faster (small bands, the largest weight gradients). Every sum has an order fixed by the
//! shapes and the band, not by the threads: the forward sums channel by channel and tap by tap
//! in one accumulator per output; the weight gradient position by position, then bands and
//! images in order.

use gemm::Parallelism;
use rayon::prelude::*;

/// Output channels per register tile (weights broadcast from the packed block).
pub(crate) const MR: usize = 8;
/// 16-lane vectors of output positions per register tile of the forward.
const NV: usize = 3;
/// Output positions per register tile of the forward.
const TILE: usize = 16 * NV;
/// Taps of a 3x3 kernel.
const KK: usize = 9;

/// Whether these kernels can run here: an x86-64 CPU with AVX-512F (checked once).
pub(crate) fn available() -> bool {
    use std::sync::OnceLock;
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::arch::is_x86_feature_detected!("avx512f"))
}

/// The weights of a 3x3 conv packed for [`forward_band`]: for each block of [`MR`] output
/// channels, `[c][tap][MR]` (zeros for channels past `o`). `w_at(out, in, tap)` reads one.
pub(crate) fn pack(o: usize, c: usize, w_at: impl Fn(usize, usize, usize) -> f32) -> Vec<f32> {
    let blocks = o.div_ceil(MR);
    let mut p = vec![0f32; blocks * c * KK * MR];
    for (b, block) in p.chunks_exact_mut(c * KK * MR).enumerate() {
        for ci in 0..c {
            for t in 0..KK {
                for m in 0..MR.min(o - b * MR) {
                    block[(ci * KK + t) * MR + m] = w_at(b * MR + m, ci, t);
                }
            }
        }
    }
    p
}

/// Splits `0..n` into `parts` runs of whole tiles of `tile` (the last may be shorter).
fn runs(n: usize, tile: usize, parts: usize) -> Vec<(usize, usize)> {
    let tiles = n.div_ceil(tile);
    let per = tiles.div_ceil(parts.max(1)).max(1);
    (0..tiles)
        .step_by(per)
        .map(|t0| (t0 * tile, ((t0 + per) * tile).min(n)))
        .collect()
}

/// `yw (o, n)` (row stride `n`) `= init[row] + sum over c, taps` of the packed weights `wpk`
/// ([`pack`]) times the band `xp`: `c` planes of `plane` values, tap `(ky, kx)` read at
/// offset `ky * wp + kx`. `init` is the bias (or zeros). Every element of `yw` is written.
///
/// # Safety
/// [`available`] must be true; `xp` holds `c * plane` values with
/// `plane >= n + 2 * wp + 2`; `yw` holds `o * n`; `wpk` is `pack(o, c, ..)`; `init` has `o`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn forward_band(
    xp: &[f32],
    plane: usize,
    wp: usize,
    c: usize,
    wpk: &[f32],
    init: &[f32],
    yw: &mut [f32],
    o: usize,
    n: usize,
    par: Parallelism,
) {
    debug_assert!(xp.len() >= c * plane && plane >= n + 2 * wp + 2 && yw.len() >= o * n);
    debug_assert!(wpk.len() == o.div_ceil(MR) * c * KK * MR && init.len() == o);
    let offs: [usize; KK] = std::array::from_fn(|t| (t / 3) * wp + t % 3);
    let ywp = crate::cpu_conv::SendPtr(yw.as_mut_ptr());
    let run = |(n0, n1): (usize, usize)| {
        let yw = ywp;
        for t0 in (n0..n1).step_by(TILE) {
            let len = TILE.min(n1 - t0);
            for (b, w) in wpk.chunks_exact(c * KK * MR).enumerate() {
                let rows = MR.min(o - b * MR);
                let mut bias = [0f32; MR];
                bias[..rows].copy_from_slice(&init[b * MR..b * MR + rows]);
                // SAFETY: as the function's contract; rows b*MR.. of columns t0..t0+len are
                // this call's alone (runs are disjoint).
                unsafe {
                    let dst = yw.get().add(b * MR * n + t0);
                    x86::fwd_tile(
                        xp.as_ptr().add(t0),
                        plane,
                        c,
                        &offs,
                        w,
                        bias,
                        len,
                        dst,
                        n,
                        rows,
                    );
                }
            }
        }
    };
    match par {
        Parallelism::Rayon(t) if t > 1 => runs(n, TILE, t).into_par_iter().for_each(run),
        _ => run((0, n)),
    }
}

/// One band of one image for [`filter_t`]: its zero-padded input (`c` planes of `plane`
/// values, `plane >= n + 2 * wp + 2`) and its output gradient transposed to `(n, o)`.
#[derive(Clone, Copy)]
pub(crate) struct Band {
    pub(crate) xp: *const f32,
    pub(crate) plane: usize,
    pub(crate) dyt: *const f32,
    pub(crate) n: usize,
}
unsafe impl Send for Band {}
unsafe impl Sync for Band {}

/// The weight gradient of a stack of bands, `dw[(oi * c + ci) * 9 + tap]` set (`first`) or
/// increased by the sum over the bands and over `m < n` of
/// `dyt[m * o + oi] * xp[ci * plane + ky * wp + kx + m]`; `o` a multiple of 16.
///
/// 16 (or 32) output channels are the lanes of the accumulators, kept in registers over all
/// positions of all bands, one after the other: the sum of each weight is a plain sequence
/// (no reduction across lanes), and small maps (8x8 at 512 channels) cost no more per
/// position than large ones. Each job moves its 144-432 sums between the lanes and dW's
/// layout once per stack.
///
/// # Safety
/// [`available`] must be true; each band as [`Band`] says, its `dyt` holding `n * o` values;
/// `dw` holds `o * c * 9`; `o % 16 == 0`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn filter_t(
    bands: &[Band],
    wp: usize,
    c: usize,
    o: usize,
    dw: &mut [f32],
    first: bool,
    par: Parallelism,
) {
    debug_assert!(o.is_multiple_of(16) && dw.len() >= c * KK * o);
    debug_assert!(bands.iter().all(|b| b.plane >= b.n + 2 * wp + 2));
    let offs: [usize; KK] = std::array::from_fn(|t| (t / 3) * wp + t % 3);
    // Lanes: 32 output channels and one input channel (18 sums) where o allows, else 16 and
    // three input channels (27 sums).
    let (ov, cj) = if o.is_multiple_of(32) { (2, 1) } else { (1, 3) };
    let (oblocks, cgroups) = (o / (16 * ov), c.div_ceil(cj));
    let dwp = crate::cpu_conv::SendPtr(dw.as_mut_ptr());
    let one = |job: usize| {
        let dw = dwp;
        let (ob, cg) = (job / cgroups, job % cgroups);
        let (o0, c0) = (ob * 16 * ov, cg * cj);
        // SAFETY: as the function's contract; the sums (c0.., o0..) are this job's alone.
        unsafe {
            let (d, ldw) = (dw.get().add((o0 * c + c0) * KK), c * KK);
            let at = (o0, c0, o);
            match (ov, c.min(c0 + cj) - c0) {
                (2, _) => x86::filter_t::<2, 1, 9>(bands, at, &offs, d, ldw, first),
                (_, 3) => x86::filter_t::<1, 3, 27>(bands, at, &offs, d, ldw, first),
                (_, 2) => x86::filter_t::<1, 2, 18>(bands, at, &offs, d, ldw, first),
                _ => x86::filter_t::<1, 1, 9>(bands, at, &offs, d, ldw, first),
            }
        }
    };
    match par {
        Parallelism::Rayon(t) if t > 1 => (0..oblocks * cgroups).into_par_iter().for_each(one),
        _ => (0..oblocks * cgroups).for_each(one),
    }
}

// Register tiles are indexed by constant loop bounds so that the compiler unrolls them and
// keeps every accumulator in a register.
#[allow(clippy::needless_range_loop)]
mod x86 {
    use super::{KK, MR, NV};
    use std::arch::x86_64::*;

    /// Lane mask for the first `len - 16 * v` (at most 16, at least 0) of vector `v`.
    fn lane_mask(len: usize, v: usize) -> __mmask16 {
        let left = len.saturating_sub(16 * v).min(16);
        ((1u32 << left) - 1) as __mmask16
    }

    /// One register tile of the forward: `MR` rows x `len` (at most `16 * NV`) positions.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn fwd_tile(
        xp: *const f32,
        plane: usize,
        c: usize,
        offs: &[usize; KK],
        wpk: &[f32],
        bias: [f32; MR],
        len: usize,
        dst: *mut f32,
        ld: usize,
        rows: usize,
    ) {
        if len == 16 * NV {
            tile::<false>(xp, plane, c, offs, wpk, bias, [0xffff; NV], dst, ld, rows)
        } else {
            let masks = std::array::from_fn(|v| lane_mask(len, v));
            tile::<true>(xp, plane, c, offs, wpk, bias, masks, dst, ld, rows)
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const MASKED: bool>(
        xp: *const f32,
        plane: usize,
        c: usize,
        offs: &[usize; KK],
        wpk: &[f32],
        bias: [f32; MR],
        masks: [__mmask16; NV],
        dst: *mut f32,
        ld: usize,
        rows: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); NV]; MR];
        for m in 0..MR {
            let b = _mm512_set1_ps(bias[m]);
            for a in acc[m].iter_mut() {
                *a = b;
            }
        }
        let mut wq = wpk.as_ptr();
        for ci in 0..c {
            let xc = xp.add(ci * plane);
            for &off in offs {
                let xs = xc.add(off);
                let mut xv = [_mm512_setzero_ps(); NV];
                for v in 0..NV {
                    xv[v] = if MASKED {
                        _mm512_maskz_loadu_ps(masks[v], xs.add(16 * v))
                    } else {
                        _mm512_loadu_ps(xs.add(16 * v))
                    };
                }
                for m in 0..MR {
                    let w = _mm512_set1_ps(*wq.add(m));
                    for v in 0..NV {
                        acc[m][v] = _mm512_fmadd_ps(w, xv[v], acc[m][v]);
                    }
                }
                wq = wq.add(MR);
            }
        }
        for (m, row) in acc.iter().enumerate().take(rows) {
            let d = dst.add(m * ld);
            for (v, a) in row.iter().enumerate() {
                if MASKED {
                    _mm512_mask_storeu_ps(d.add(16 * v), masks[v], *a);
                } else {
                    _mm512_storeu_ps(d.add(16 * v), *a);
                }
            }
        }
    }

    /// The sums of [`super::filter_t`] for output channels `o0 .. o0 + 16 * OV` (lanes) and
    /// input channels `c0 .. c0 + CJ` (`J = 9 * CJ` sums per lane), over all `bands`:
    /// `dw[(16 * v + l) * ldw + j]` (+)= the sum over bands and `m < n` of
    /// `dyt[m * ld + o0 + 16 * v + l] * xp[(c0 + j / 9) * plane + offs[j % 9] + m]`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn filter_t<const OV: usize, const CJ: usize, const J: usize>(
        bands: &[super::Band],
        (o0, c0, ld): (usize, usize, usize),
        offs: &[usize; KK],
        dw: *mut f32,
        ldw: usize,
        first: bool,
    ) {
        debug_assert!(J == 9 * CJ);
        // The sums of output channel o0 + l are dw[l * ldw .. l * ldw + J] (in dW's own
        // layout), moved to and from the lanes through `tmp`.
        let mut tmp = [[0f32; 16]; J];
        let mut acc = [[_mm512_setzero_ps(); J]; OV];
        if !first {
            for v in 0..OV {
                for l in 0..16 {
                    let src = dw.add((16 * v + l) * ldw);
                    for j in 0..J {
                        tmp[j][l] = *src.add(j);
                    }
                }
                for j in 0..J {
                    acc[v][j] = _mm512_loadu_ps(tmp[j].as_ptr());
                }
            }
        }
        for b in bands {
            let dy = b.dyt.add(o0);
            let x = b.xp.add(c0 * b.plane);
            for m in 0..b.n {
                let mut d = [_mm512_setzero_ps(); OV];
                for v in 0..OV {
                    d[v] = _mm512_loadu_ps(dy.add(m * ld + 16 * v));
                }
                for cj in 0..CJ {
                    let xc = x.add(cj * b.plane + m);
                    for t in 0..KK {
                        let xb = _mm512_set1_ps(*xc.add(offs[t]));
                        for v in 0..OV {
                            acc[v][cj * KK + t] = _mm512_fmadd_ps(d[v], xb, acc[v][cj * KK + t]);
                        }
                    }
                }
            }
        }
        for v in 0..OV {
            for j in 0..J {
                _mm512_storeu_ps(tmp[j].as_mut_ptr(), acc[v][j]);
            }
            for l in 0..16 {
                let dst = dw.add((16 * v + l) * ldw);
                for j in 0..J {
                    *dst.add(j) = tmp[j][l];
                }
            }
        }
    }
}
