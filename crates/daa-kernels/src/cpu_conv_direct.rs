//! AVX-512 and AVX2 microkernels for the 3x3 stride-1 f32 convs of [`crate::cpu_conv_wide`].
//!
//! The shifted-gemm form computes a 3x3 conv as nine gemm calls, each summing over only the
//! `C` input channels (16-64 in the CPU presets): every call packs its right operand and
//! loads and stores every output tile once more. These kernels keep a tile of
//! `MR` output channels x `NV` vectors of (wide) output positions in registers across all nine taps
//! and all input channels, reading the zero-padded band in place, so each output is stored
//! once and nothing is packed but the weights (once per op).
//!
//! - [`forward_band`]: `Yw (O, n) = init + sum over taps and c of W_tap (O, C) . Xp[:, shift..]`,
//!   the forward and (with the kernel flipped and transposed) the input gradient.
//! - [`filter_t`]: `dW[o, c, tap] (+)= sum over n of dY[o, n] . Xp[c, shift(tap) + n]`,
//!   the weight gradient, with 8-32 output channels as the lanes and 9-27 weights per
//!   lane in registers over a whole stack of bands (`dY` transposed to positions x channels).
//!
//! Two instruction sets, picked once at run time ([`isa`]): AVX-512F (16 lanes, 32 registers:
//! 8 x 48 forward tiles, 16-32 output channels per weight-gradient job) and AVX2 + FMA (8
//! lanes, 16 registers: 6 x 16 tiles, 8 output channels). Both add the same products in the
//! same order for every output, so they give the same bits. Elsewhere
//! the shifted gemms run, and [`crate::cpu_conv_wide`] picks them also where they measured
//! faster (small bands, the largest weight gradients). Every sum has an order fixed by the
//! shapes and the band, not by the threads: the forward sums channel by channel and tap by tap
//! in one accumulator per output; the weight gradient position by position, then bands and
//! images in order.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use gemm::Parallelism;
use rayon::prelude::*;

/// Taps of a 3x3 kernel.
const KK: usize = 9;

/// The vector instruction set the kernels run with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    /// AVX-512F: 16 f32 lanes, 32 registers.
    Avx512,
    /// AVX2 and FMA: 8 f32 lanes, 16 registers.
    Avx2,
}

impl Isa {
    /// f32 lanes of one vector.
    pub(crate) fn lanes(self) -> usize {
        match self {
            Isa::Avx512 => 16,
            Isa::Avx2 => 8,
        }
    }
    /// Output channels per register tile of the forward.
    fn mr(self) -> usize {
        match self {
            Isa::Avx512 => avx512::MR,
            Isa::Avx2 => avx2::MR,
        }
    }
    /// Output positions per register tile of the forward.
    fn tile(self) -> usize {
        match self {
            Isa::Avx512 => avx512::NV * 16,
            Isa::Avx2 => avx2::NV * 8,
        }
    }
}

/// Tests set this to run the AVX2 kernels on a CPU that has AVX-512F.
pub(crate) static AVX2_ONLY: AtomicBool = AtomicBool::new(false);

/// The instruction set these kernels use here, if any: AVX-512F, else AVX2 with FMA (checked
/// once). Callers read it once per op and pass it down.
pub(crate) fn isa() -> Option<Isa> {
    static DETECTED: OnceLock<Option<Isa>> = OnceLock::new();
    let found = *DETECTED.get_or_init(|| {
        if std::arch::is_x86_feature_detected!("avx512f") {
            Some(Isa::Avx512)
        } else if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
        {
            Some(Isa::Avx2)
        } else {
            None
        }
    });
    match found {
        Some(Isa::Avx512) if AVX2_ONLY.load(Ordering::Relaxed) => Some(Isa::Avx2),
        other => other,
    }
}

/// The weights of a 3x3 conv packed for [`forward_band`] with `isa`: for each block of
/// `MR` output channels, `[c][tap][MR]` (zeros for channels past `o`). `w_at(out, in, tap)`
/// reads one.
pub(crate) fn pack(
    isa: Isa,
    o: usize,
    c: usize,
    w_at: impl Fn(usize, usize, usize) -> f32,
) -> Vec<f32> {
    let mr = isa.mr();
    let blocks = o.div_ceil(mr);
    let mut p = vec![0f32; blocks * c * KK * mr];
    for (b, block) in p.chunks_exact_mut(c * KK * mr).enumerate() {
        for ci in 0..c {
            for t in 0..KK {
                for m in 0..mr.min(o - b * mr) {
                    block[(ci * KK + t) * mr + m] = w_at(b * mr + m, ci, t);
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
/// `isa` came from [`isa`]; `xp` holds `c * plane` values with `plane >= n + 2 * wp + 2`;
/// `yw` holds `o * n`; `wpk` is `pack(isa, o, c, ..)`; `init` has `o`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn forward_band(
    isa: Isa,
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
    let (mr, tile) = (isa.mr(), isa.tile());
    debug_assert!(xp.len() >= c * plane && plane >= n + 2 * wp + 2 && yw.len() >= o * n);
    debug_assert!(wpk.len() == o.div_ceil(mr) * c * KK * mr && init.len() == o);
    let offs: [usize; KK] = std::array::from_fn(|t| (t / 3) * wp + t % 3);
    let ywp = crate::cpu_conv::SendPtr(yw.as_mut_ptr());
    let run = |(n0, n1): (usize, usize)| {
        let yw = ywp;
        for t0 in (n0..n1).step_by(tile) {
            let len = tile.min(n1 - t0);
            for (b, w) in wpk.chunks_exact(c * KK * mr).enumerate() {
                let rows = mr.min(o - b * mr);
                let bias = &init[b * mr..b * mr + rows];
                // SAFETY: as the function's contract; rows b*mr.. of columns t0..t0+len are
                // this call's alone (runs are disjoint).
                unsafe {
                    let x = xp.as_ptr().add(t0);
                    let dst = yw.get().add(b * mr * n + t0);
                    match isa {
                        Isa::Avx512 => {
                            avx512::fwd_tile(x, plane, c, &offs, w, bias, len, dst, n, rows)
                        }
                        Isa::Avx2 => avx2::fwd_tile(x, plane, c, &offs, w, bias, len, dst, n, rows),
                    }
                }
            }
        }
    };
    match par {
        Parallelism::Rayon(t) if t > 1 => runs(n, tile, t).into_par_iter().for_each(run),
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

/// Whether [`filter_t`] takes `o` output channels with `isa`: a positive multiple of its
/// lanes.
pub(crate) fn filter_fits(isa: Isa, o: usize) -> bool {
    o > 0 && o.is_multiple_of(isa.lanes())
}

/// The weight gradient of a stack of bands, `dw[(oi * c + ci) * 9 + tap]` set (`first`) or
/// increased by the sum over the bands and over `m < n` of
/// `dyt[m * o + oi] * xp[ci * plane + ky * wp + kx + m]`.
///
/// The output channels are the lanes of the accumulators (16-32 with AVX-512, 8 with AVX2),
/// kept in registers over all positions of all bands, one after the other: the sum of each
/// weight is a plain sequence (no reduction across lanes), and small maps (8x8 at 512
/// channels) cost no more per position than large ones. Each job moves its 72-432 sums
/// between the lanes and dW's layout once per stack.
///
/// # Safety
/// `isa` came from [`isa`] and `filter_fits(isa, o)`; each band as [`Band`] says, its `dyt`
/// holding `n * o` values; `dw` holds `o * c * 9`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn filter_t(
    isa: Isa,
    bands: &[Band],
    wp: usize,
    c: usize,
    o: usize,
    dw: &mut [f32],
    first: bool,
    par: Parallelism,
) {
    debug_assert!(filter_fits(isa, o) && dw.len() >= c * KK * o);
    debug_assert!(bands.iter().all(|b| b.plane >= b.n + 2 * wp + 2));
    let offs: [usize; KK] = std::array::from_fn(|t| (t / 3) * wp + t % 3);
    // AVX-512: 32 output channels and one input channel (18 sums) where o allows, else 16
    // and three input channels (27 sums). AVX2: 8 output channels, one input channel (9).
    let (ov, cj) = match isa {
        Isa::Avx512 if o.is_multiple_of(32) => (2, 1),
        Isa::Avx512 => (1, 3),
        Isa::Avx2 => (1, 1),
    };
    let (oblocks, cgroups) = (o / (isa.lanes() * ov), c.div_ceil(cj));
    let dwp = crate::cpu_conv::SendPtr(dw.as_mut_ptr());
    let one = |job: usize| {
        let dw = dwp;
        let (ob, cg) = (job / cgroups, job % cgroups);
        let (o0, c0) = (ob * isa.lanes() * ov, cg * cj);
        // SAFETY: as the function's contract; the sums (o0.., c0..) are this job's alone.
        unsafe {
            let (d, ldw) = (dw.get().add((o0 * c + c0) * KK), c * KK);
            let at = (o0, c0, o);
            match (isa, ov, c.min(c0 + cj) - c0) {
                (Isa::Avx2, _, _) => avx2::filter_t::<1, 1, 9>(bands, at, &offs, d, ldw, first),
                (_, 2, _) => avx512::filter_t::<2, 1, 9>(bands, at, &offs, d, ldw, first),
                (_, _, 3) => avx512::filter_t::<1, 3, 27>(bands, at, &offs, d, ldw, first),
                (_, _, 2) => avx512::filter_t::<1, 2, 18>(bands, at, &offs, d, ldw, first),
                _ => avx512::filter_t::<1, 1, 9>(bands, at, &offs, d, ldw, first),
            }
        }
    };
    match par {
        Parallelism::Rayon(t) if t > 1 => (0..oblocks * cgroups).into_par_iter().for_each(one),
        _ => (0..oblocks * cgroups).for_each(one),
    }
}

/// Lane masks and masked loads and stores, per instruction set.
mod masks {
    use std::arch::x86_64::*;

    /// The first `left` (at most 16) lanes.
    pub(super) fn m512(left: usize) -> __mmask16 {
        ((1u32 << left.min(16)) - 1) as __mmask16
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn load512(m: __mmask16, p: *const f32) -> __m512 {
        _mm512_maskz_loadu_ps(m, p)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn store512(m: __mmask16, p: *mut f32, v: __m512) {
        _mm512_mask_storeu_ps(p, m, v)
    }

    /// The first `left` (at most 8) lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn m256(left: usize) -> __m256i {
        let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(left.min(8) as i32), idx)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn load256(m: __m256i, p: *const f32) -> __m256 {
        _mm256_maskload_ps(p, m)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn store256(m: __m256i, p: *mut f32, v: __m256) {
        _mm256_maskstore_ps(p, m, v)
    }
}

/// The register-tile kernels for one instruction set. Register tiles are indexed by constant
/// loop bounds so that the compiler unrolls them and keeps every accumulator in a register.
macro_rules! kernels {
    ($name:ident, $feat:literal, $v:ty, $m:ty, lanes $l:literal, mr $mr:literal, nv $nv:literal,
     $zero:ident, $set1:ident, $load:ident, $store:ident, $fma:ident,
     $mask:ident, $mload:ident, $mstore:ident) => {
        #[allow(clippy::needless_range_loop)]
        mod $name {
            use super::masks::{$mask, $mload, $mstore};
            use super::{Band, KK};
            use std::arch::x86_64::*;

            /// Output channels per register tile of the forward.
            pub(super) const MR: usize = $mr;
            /// Lanes per vector.
            const L: usize = $l;
            /// Vectors of positions per register tile of the forward.
            pub(super) const NV: usize = $nv;

            /// One register tile of the forward: `rows` (at most `MR`) output channels x
            /// `len` (at most `NV * L`) positions.
            #[allow(clippy::too_many_arguments)]
            #[target_feature(enable = $feat)]
            pub(super) unsafe fn fwd_tile(
                xp: *const f32,
                plane: usize,
                c: usize,
                offs: &[usize; KK],
                wpk: &[f32],
                bias: &[f32],
                len: usize,
                dst: *mut f32,
                ld: usize,
                rows: usize,
            ) {
                let mut b = [0f32; MR];
                b[..rows].copy_from_slice(&bias[..rows]);
                let mut masks = [$mask(0); NV];
                for v in 0..NV {
                    masks[v] = $mask(len.saturating_sub(L * v));
                }
                if len == L * NV {
                    tile::<false>(xp, plane, c, offs, wpk, b, masks, dst, ld, rows)
                } else {
                    tile::<true>(xp, plane, c, offs, wpk, b, masks, dst, ld, rows)
                }
            }

            #[allow(clippy::too_many_arguments)]
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn tile<const MASKED: bool>(
                xp: *const f32,
                plane: usize,
                c: usize,
                offs: &[usize; KK],
                wpk: &[f32],
                bias: [f32; MR],
                masks: [$m; NV],
                dst: *mut f32,
                ld: usize,
                rows: usize,
            ) {
                let mut acc = [[$zero(); NV]; MR];
                for m in 0..MR {
                    let b = $set1(bias[m]);
                    for a in acc[m].iter_mut() {
                        *a = b;
                    }
                }
                let mut wq = wpk.as_ptr();
                for ci in 0..c {
                    let xc = xp.add(ci * plane);
                    for &off in offs {
                        let xs = xc.add(off);
                        let mut xv = [$zero(); NV];
                        for v in 0..NV {
                            xv[v] = if MASKED {
                                $mload(masks[v], xs.add(L * v))
                            } else {
                                $load(xs.add(L * v))
                            };
                        }
                        for m in 0..MR {
                            let w = $set1(*wq.add(m));
                            for v in 0..NV {
                                acc[m][v] = $fma(w, xv[v], acc[m][v]);
                            }
                        }
                        wq = wq.add(MR);
                    }
                }
                for (m, row) in acc.iter().enumerate().take(rows) {
                    let d = dst.add(m * ld);
                    for (v, a) in row.iter().enumerate() {
                        if MASKED {
                            $mstore(masks[v], d.add(L * v), *a);
                        } else {
                            $store(d.add(L * v), *a);
                        }
                    }
                }
            }

            /// The sums of [`super::filter_t`] for output channels `o0 .. o0 + L * OV`
            /// (lanes) and input channels `c0 .. c0 + CJ` (`J = 9 * CJ` sums per lane), over
            /// all `bands`: `dw[(L * v + l) * ldw + j]` (+)= the sum over bands and `m < n`
            /// of `dyt[m * ld + o0 + L * v + l] * xp[(c0 + j / 9) * plane + offs[j % 9] + m]`.
            #[allow(clippy::too_many_arguments)]
            #[target_feature(enable = $feat)]
            pub(super) unsafe fn filter_t<const OV: usize, const CJ: usize, const J: usize>(
                bands: &[Band],
                (o0, c0, ld): (usize, usize, usize),
                offs: &[usize; KK],
                dw: *mut f32,
                ldw: usize,
                first: bool,
            ) {
                debug_assert!(J == 9 * CJ);
                // The sums of output channel o0 + l are dw[l * ldw .. l * ldw + J] (in dW's
                // own layout), moved to and from the lanes through `tmp`.
                let mut tmp = [[0f32; L]; J];
                let mut acc = [[$zero(); J]; OV];
                if !first {
                    for v in 0..OV {
                        for l in 0..L {
                            let src = dw.add((L * v + l) * ldw);
                            for j in 0..J {
                                tmp[j][l] = *src.add(j);
                            }
                        }
                        for j in 0..J {
                            acc[v][j] = $load(tmp[j].as_ptr());
                        }
                    }
                }
                for b in bands {
                    let dy = b.dyt.add(o0);
                    let x = b.xp.add(c0 * b.plane);
                    for m in 0..b.n {
                        let mut d = [$zero(); OV];
                        for v in 0..OV {
                            d[v] = $load(dy.add(m * ld + L * v));
                        }
                        for cj in 0..CJ {
                            let xc = x.add(cj * b.plane + m);
                            for t in 0..KK {
                                let xb = $set1(*xc.add(offs[t]));
                                for v in 0..OV {
                                    acc[v][cj * KK + t] = $fma(d[v], xb, acc[v][cj * KK + t]);
                                }
                            }
                        }
                    }
                }
                for v in 0..OV {
                    for j in 0..J {
                        $store(tmp[j].as_mut_ptr(), acc[v][j]);
                    }
                    for l in 0..L {
                        let dst = dw.add((L * v + l) * ldw);
                        for j in 0..J {
                            *dst.add(j) = tmp[j][l];
                        }
                    }
                }
            }
        }
    };
}

// AVX-512: 8 x 3 accumulators + 3 inputs + 1 weight of 32 registers.
kernels!(avx512, "avx512f", __m512, __mmask16, lanes 16, mr 8, nv 3,
    _mm512_setzero_ps, _mm512_set1_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_fmadd_ps,
    m512, load512, store512);
// AVX2: 6 x 2 accumulators + 2 inputs + 1 weight of 16 registers (4 x 3 spilled one).
kernels!(avx2, "avx2,fma", __m256, __m256i, lanes 8, mr 6, nv 2,
    _mm256_setzero_ps, _mm256_set1_ps, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_fmadd_ps,
    m256, load256, store256);
