//! GroupNorm fused with what follows it in the diffusion U-Net's residual blocks: the
//! time-embedding modulation `* (1 + scale) + shift` and SiLU, as one CPU op with a one-op
//! backward.
//!
//! From candle ops the out-path of a residual block is five ops forward (GroupNorm, `scale + 1`,
//! a broadcast product, a broadcast sum, SiLU) and about twenty backward (SiLU's gradient alone
//! is five full-size ops plus a zeroed accumulator); candle runs them on one thread. Here the
//! forward is one pass per (sample, group) and the backward two, on the rayon pool. The GroupNorm
//! part is computed exactly as [`crate::group_norm`] computes it (f64 statistics, one rounding),
//! and the rest in the input's dtype in candle's order, so the forward gives the same bits as
//! [`group_norm_silu_reference`]; the backward sums in f64 and agrees to float tolerance.

use crate::conv::contiguous_slice;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// The reference from candle ops: `silu(group_norm(xs) * (1 + scale) + shift)`, with
/// `scale, shift: (B, C)` when given, else `silu(group_norm(xs))`.
pub fn group_norm_silu_reference(
    xs: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    groups: usize,
    eps: f64,
    modulation: Option<(&Tensor, &Tensor)>,
) -> Result<Tensor> {
    let h = crate::group_norm(xs, gamma, beta, groups, eps)?;
    let h = match modulation {
        Some((scale, shift)) => {
            let (b, c) = (xs.dim(0)?, xs.dim(1)?);
            let mut shape = vec![1; xs.rank()];
            (shape[0], shape[1]) = (b, c);
            h.broadcast_mul(&(scale.reshape(shape.as_slice())? + 1.0)?)?
                .broadcast_add(&shift.reshape(shape.as_slice())?)?
        }
        None => h,
    };
    h.silu()
}

/// `silu(group_norm(xs, gamma, beta) * (1 + scale) + shift)` over `xs: (B, C, ...)`, with
/// `gamma, beta: (C,)` and, when `modulation` is given, `scale, shift: (B, C)` (a residual
/// block's time embedding); without it `silu(group_norm(xs))`. Differentiable in every input.
/// CPU f32/f64: one fused op; CPU bf16/f16: the f32 op, rounded once; other devices: the
/// reference ([`group_norm_silu_reference`], whose GroupNorm is [`crate::group_norm`]).
pub fn group_norm_silu(
    xs: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    groups: usize,
    eps: f64,
    modulation: Option<(&Tensor, &Tensor)>,
) -> Result<Tensor> {
    if xs.rank() < 3 {
        candle_core::bail!(
            "group_norm_silu: expected (B, C, ...) input, got {:?}",
            xs.shape()
        );
    }
    let (b, c) = (xs.dim(0)?, xs.dim(1)?);
    if groups == 0 || c % groups != 0 || gamma.dims() != [c] || beta.dims() != [c] {
        candle_core::bail!(
            "group_norm_silu: {c} channels, {groups} groups, gamma {:?}, beta {:?}",
            gamma.shape(),
            beta.shape()
        );
    }
    if let Some((scale, shift)) = modulation {
        if scale.elem_count() != b * c || shift.elem_count() != b * c {
            candle_core::bail!(
                "group_norm_silu: scale {:?} and shift {:?} must hold (B, C) = ({b}, {c}) values",
                scale.shape(),
                shift.shape()
            );
        }
    }
    if !xs.device().is_cpu() {
        return group_norm_silu_reference(xs, gamma, beta, groups, eps, modulation);
    }
    if matches!(xs.dtype(), DType::BF16 | DType::F16) {
        let f = |t: &Tensor| t.to_dtype(DType::F32);
        let m = match modulation {
            Some((s, t)) => Some((f(s)?, f(t)?)),
            None => None,
        };
        return group_norm_silu(
            &f(xs)?,
            &f(gamma)?,
            &f(beta)?,
            groups,
            eps,
            m.as_ref().map(|(s, t)| (s, t)),
        )?
        .to_dtype(xs.dtype());
    }
    if !matches!(xs.dtype(), DType::F32 | DType::F64) {
        return group_norm_silu_reference(xs, gamma, beta, groups, eps, modulation);
    }
    // Every small input in one tensor (the op has two inputs): gamma, beta, then per sample
    // scale and shift. candle's cat backward hands each its slice of the gradient.
    let mut params = vec![gamma.clone(), beta.clone()];
    if let Some((scale, shift)) = modulation {
        params.push(
            Tensor::cat(&[scale.reshape((b, c))?, shift.reshape((b, c))?], 1)?.flatten_all()?,
        );
    }
    let params = Tensor::cat(&params, 0)?;
    let mode = Mode {
        groups,
        eps,
        modulated: modulation.is_some(),
        act: true,
    };
    xs.contiguous()?.apply_op2(&params, NormAct(mode))
}

/// What the op computes after the normalisation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mode {
    pub groups: usize,
    pub eps: f64,
    /// `* (1 + scale) + shift` per (sample, channel), read from `params[2C..]`.
    pub modulated: bool,
    /// SiLU at the end.
    pub act: bool,
}

pub(crate) mod float {
    use std::ops::{Add, Div, Mul, Neg, Sub};

    /// f32 and f64, with the arithmetic the kernels need.
    pub trait Float:
        Copy
        + Send
        + Sync
        + 'static
        + Add<Output = Self>
        + Sub<Output = Self>
        + Mul<Output = Self>
        + Div<Output = Self>
        + Neg<Output = Self>
    {
        fn to_f64(self) -> f64;
        fn from_f64(v: f64) -> Self;
        fn exp(self) -> Self;
    }
    impl Float for f32 {
        fn to_f64(self) -> f64 {
            self as f64
        }
        fn from_f64(v: f64) -> Self {
            v as f32
        }
        fn exp(self) -> Self {
            f32::exp(self)
        }
    }
    impl Float for f64 {
        fn to_f64(self) -> f64 {
            self
        }
        fn from_f64(v: f64) -> Self {
            v
        }
        fn exp(self) -> Self {
            f64::exp(self)
        }
    }
}
use float::Float;

/// Independent partial sums per loop: the f64 additions of one sum form a chain of dependent
/// instructions, so a single accumulator runs at the adder's latency; `LANES` of them (added
/// together in a fixed order at the end) keep the result deterministic.
const LANES: usize = 8;

/// `sum of f(v)` over `x` in f64, in [`LANES`] partial sums.
fn lane_sum<T: Float>(x: &[T], f: impl Fn(f64) -> f64) -> f64 {
    let mut lanes = [0f64; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l += f(v.to_f64());
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|v| f(v.to_f64())).sum();
    lanes.iter().sum::<f64>() + tail
}

/// Per (batch, group): mean and reciprocal standard deviation, in f64.
pub(crate) fn stats<T: Float>(x: &[T], eps: f64) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = lane_sum(x, |v| v) / n;
    let q = lane_sum(x, |v| (v - mean) * (v - mean));
    (mean, 1.0 / (q / n + eps).sqrt())
}

/// The per-channel constants of one (sample, channel): gamma, beta, `1 + scale`, shift.
struct Chan<T> {
    gamma: f64,
    beta: f64,
    scale1: T,
    shift: T,
}

fn chan<T: Float>(params: &[T], c: usize, bi: usize, ch: usize, mode: Mode) -> Chan<T> {
    let (one, zero) = (T::from_f64(1.0), T::from_f64(0.0));
    let (scale1, shift) = if mode.modulated {
        let e = &params[2 * c + bi * 2 * c..];
        // candle's `scale + 1.0` is the affine `scale * 1 + 1`.
        (e[ch] * one + one, e[c + ch])
    } else {
        (one, zero)
    };
    Chan {
        gamma: params[ch].to_f64(),
        beta: params[c + ch].to_f64(),
        scale1,
        shift,
    }
}

/// The GroupNorm output of one element, rounded once (as [`crate::group_norm`] gives it).
#[inline(always)]
fn normed<T: Float>(x: T, mean: f64, rstd: f64, k: &Chan<T>) -> T {
    T::from_f64((x.to_f64() - mean) * rstd * k.gamma + k.beta)
}

/// The pre-activation `z` from the normalised value, in candle's order.
#[inline(always)]
fn pre_act<T: Float>(n: T, k: &Chan<T>, modulated: bool) -> T {
    if modulated {
        n * k.scale1 + k.shift
    } else {
        n
    }
}

#[inline(always)]
fn silu<T: Float>(z: T) -> T {
    z / (T::from_f64(1.0) + (-z).exp())
}

pub(crate) fn forward<T: Float>(x: &[T], params: &[T], b: usize, c: usize, mode: Mode) -> Vec<T> {
    let groups = mode.groups;
    let cg = c / groups;
    let spatial = x.len() / (b * c);
    let n = cg * spatial;
    // Written straight into fresh memory on the pool (no zero fill first on this thread).
    let mut y: Vec<T> = Vec::with_capacity(x.len());
    y.spare_capacity_mut()
        .par_chunks_mut(n)
        .zip(x.par_chunks(n))
        .enumerate()
        .for_each(|(i, (yo, xi))| {
            let (bi, grp) = (i / groups, i % groups);
            let (mean, rstd) = stats(xi, mode.eps);
            for cc in 0..cg {
                let k = chan(params, c, bi, grp * cg + cc, mode);
                let (xs, ys) = (
                    &xi[cc * spatial..(cc + 1) * spatial],
                    &mut yo[cc * spatial..(cc + 1) * spatial],
                );
                for (y, &x) in ys.iter_mut().zip(xs) {
                    let z = pre_act(normed(x, mean, rstd, &k), &k, mode.modulated);
                    y.write(if mode.act { silu(z) } else { z });
                }
            }
        });
    // Every element was written: the chunks cover x.len() (B * groups chunks of n).
    unsafe { y.set_len(x.len()) };
    y
}

/// The backward of [`forward`]: one buffer holding `dx` (the input's length) followed by the
/// gradient of `params` (its length).
#[allow(clippy::needless_range_loop)] // four sums indexed by channel
pub(crate) fn backward<T: Float>(
    x: &[T],
    params: &[T],
    dy: &[T],
    b: usize,
    c: usize,
    mode: Mode,
) -> Vec<T> {
    let groups = mode.groups;
    let cg = c / groups;
    let spatial = x.len() / (b * c);
    let n = cg * spatial;
    let mut out = vec![T::from_f64(0.0); x.len() + params.len()];
    let (dx, dparams) = out.split_at_mut(x.len());
    // Per (sample, group): dgamma, dbeta, dscale, dshift of its channels.
    let partial: Vec<[Vec<f64>; 4]> = dx
        .par_chunks_mut(n)
        .zip(x.par_chunks(n).zip(dy.par_chunks(n)))
        .enumerate()
        .map(|(i, (dxo, (xi, gi)))| {
            let (bi, grp) = (i / groups, i % groups);
            let (mean, rstd) = stats(xi, mode.eps);
            let mut sums = [
                vec![0f64; cg],
                vec![0f64; cg],
                vec![0f64; cg],
                vec![0f64; cg],
            ];
            // Lanes of m1 and m2 (over the group) and of this channel's four sums (see
            // LANES): element j of a channel adds into lane j % LANES.
            let (mut m1l, mut m2l) = ([0f64; LANES], [0f64; LANES]);
            for cc in 0..cg {
                let k = chan(params, c, bi, grp * cg + cc, mode);
                let r = cc * spatial..(cc + 1) * spatial;
                let mut acc = [[0f64; LANES]; 4];
                for (j, ((d, &x), &g)) in dxo[r.clone()]
                    .iter_mut()
                    .zip(&xi[r.clone()])
                    .zip(&gi[r])
                    .enumerate()
                {
                    let l = j % LANES;
                    let nv = normed(x, mean, rstd, &k);
                    // dL/dz: SiLU's gradient in candle's form, sigmoid * (1 - y) + y.
                    let dz = if mode.act {
                        let z = pre_act(nv, &k, mode.modulated);
                        // One exp for both: the same bits as `1 / (exp(-z) + 1)` and `silu(z)`.
                        let (one, e) = (T::from_f64(1.0), (-z).exp());
                        let sig = one / (e + one);
                        let y = z / (one + e);
                        g * (sig * (one - y) + y)
                    } else {
                        g
                    };
                    let dn = if mode.modulated {
                        acc[2][l] += (dz * nv).to_f64();
                        acc[3][l] += dz.to_f64();
                        dz * k.scale1
                    } else {
                        dz
                    };
                    let (dn, xhat) = (dn.to_f64(), (x.to_f64() - mean) * rstd);
                    acc[0][l] += dn * xhat;
                    acc[1][l] += dn;
                    let dxhat = dn * k.gamma;
                    m1l[l] += dxhat;
                    m2l[l] += dxhat * xhat;
                    // Keep dL/dn for the second pass.
                    *d = T::from_f64(dn);
                }
                for (sum, lanes) in sums.iter_mut().zip(acc) {
                    sum[cc] = lanes.iter().sum();
                }
            }
            let m1 = m1l.iter().sum::<f64>() / n as f64;
            let m2 = m2l.iter().sum::<f64>() / n as f64;
            for cc in 0..cg {
                let gamma = params[grp * cg + cc].to_f64();
                let r = cc * spatial..(cc + 1) * spatial;
                for (d, &x) in dxo[r.clone()].iter_mut().zip(&xi[r]) {
                    let xhat = (x.to_f64() - mean) * rstd;
                    *d = T::from_f64(rstd * (d.to_f64() * gamma - m1 - xhat * m2));
                }
            }
            sums
        })
        .collect();
    // Fixed order of summation over the batch: deterministic.
    let (mut dgamma, mut dbeta) = (vec![0f64; c], vec![0f64; c]);
    for (i, [dg, db, ds, dt]) in partial.iter().enumerate() {
        let (bi, grp) = (i / groups, i % groups);
        for cc in 0..cg {
            let ch = grp * cg + cc;
            dgamma[ch] += dg[cc];
            dbeta[ch] += db[cc];
            if mode.modulated {
                dparams[2 * c + bi * 2 * c + ch] = T::from_f64(ds[cc]);
                dparams[2 * c + bi * 2 * c + c + ch] = T::from_f64(dt[cc]);
            }
        }
    }
    for ch in 0..c {
        dparams[ch] = T::from_f64(dgamma[ch]);
        dparams[c + ch] = T::from_f64(dbeta[ch]);
    }
    out
}

/// The forward op: `(x, params)`.
struct NormAct(Mode);

impl CustomOp2 for NormAct {
    fn name(&self) -> &'static str {
        "daa_kernels::group_norm_silu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = l1.shape().dims();
        let (b, c) = (dims[0], dims[1]);
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(p)) => CpuStorage::F32(forward(
                contiguous_slice(x, l1)?,
                contiguous_slice(p, l2)?,
                b,
                c,
                self.0,
            )),
            (CpuStorage::F64(x), CpuStorage::F64(p)) => CpuStorage::F64(forward(
                contiguous_slice(x, l1)?,
                contiguous_slice(p, l2)?,
                b,
                c,
                self.0,
            )),
            _ => candle_core::bail!("group_norm_silu: f32 or f64 inputs of one dtype expected"),
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dparams) = backward_op(x, params, grad, self.0)?;
        Ok((Some(dx), Some(dparams)))
    }
}

/// Runs the packed backward on the CPU and splits it into `dx` and `dparams`.
pub(crate) fn backward_op(
    x: &Tensor,
    params: &Tensor,
    grad: &Tensor,
    mode: Mode,
) -> Result<(Tensor, Tensor)> {
    let packed = x.apply_op3(params, &grad.contiguous()?, NormActBwd(mode))?;
    let numel = x.elem_count();
    let dx = packed.narrow(0, 0, numel)?.reshape(x.shape())?;
    let dparams = packed.narrow(0, numel, params.elem_count())?;
    Ok((dx, dparams))
}

/// The backward op: `(x, params, dy)` -> `[dx | dparams]`.
struct NormActBwd(Mode);

impl CustomOp3 for NormActBwd {
    fn name(&self) -> &'static str {
        "daa_kernels::group_norm_silu_bwd"
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
        let dims = l1.shape().dims();
        let (b, c) = (dims[0], dims[1]);
        let len = l1.shape().elem_count() + l2.shape().elem_count();
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(p), CpuStorage::F32(g)) => {
                CpuStorage::F32(backward(
                    contiguous_slice(x, l1)?,
                    contiguous_slice(p, l2)?,
                    contiguous_slice(g, l3)?,
                    b,
                    c,
                    self.0,
                ))
            }
            (CpuStorage::F64(x), CpuStorage::F64(p), CpuStorage::F64(g)) => {
                CpuStorage::F64(backward(
                    contiguous_slice(x, l1)?,
                    contiguous_slice(p, l2)?,
                    contiguous_slice(g, l3)?,
                    b,
                    c,
                    self.0,
                ))
            }
            _ => candle_core::bail!("group_norm_silu: f32 or f64 inputs of one dtype expected"),
        };
        Ok((out, Shape::from(len)))
    }
}
