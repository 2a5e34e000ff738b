//! The diffusion network's condition: `cat[y_noisy, slot A, slot B]` with the channel-shuffling
//! swap of docs/method.md section 2 (steps 4-5) done in the same pass.
//!
//! Built from candle ops, the condition costs two `where_cond` selects over broadcast masks and
//! a concatenation, forward, and as many passes backward; a DA step builds it twice. Here it is
//! one copy forward and one copy backward (the backward of a slot swap is the same swap).

use crate::conv::contiguous_slice;
use candle_core::{CpuStorage, CustomOp1, CustomOp3, Device, Layout, Result, Shape, Tensor};

/// The reference from candle ops: per sample `i`, `cat[y[i], b[i], a[i]]` where `swap[i]`,
/// else `cat[y[i], a[i], b[i]]`. Differentiable on every device.
pub fn swap_condition_reference(
    y: &Tensor,
    a: &Tensor,
    b: &Tensor,
    swap: &[bool],
) -> Result<Tensor> {
    let (n, c, h, w) = a.dims4()?;
    let m: Vec<u8> = swap.iter().map(|&s| s as u8).collect();
    let m = Tensor::from_vec(m, (n, 1, 1, 1), &Device::Cpu)?
        .to_device(a.device())?
        .broadcast_as((n, c, h, w))?;
    Tensor::cat(&[y, &m.where_cond(b, a)?, &m.where_cond(a, b)?], 1)
}

fn check(y: &Tensor, a: &Tensor, b: &Tensor, swap: &[bool]) -> Result<()> {
    let (n, _, h, w) = a.dims4()?;
    let (yn, _, yh, yw) = y.dims4()?;
    if b.dims() != a.dims() || (yn, yh, yw) != (n, h, w) || swap.len() != n {
        candle_core::bail!(
            "swap_condition: y {:?}, a {:?}, b {:?}, {} swap flags",
            y.shape(),
            a.shape(),
            b.shape(),
            swap.len()
        );
    }
    if y.dtype() != a.dtype() || b.dtype() != a.dtype() {
        candle_core::bail!("swap_condition: mixed dtypes");
    }
    Ok(())
}

/// `cat[y, A, B]` on channels, `(A, B) = (b, a)` for samples with `swap[i]`, else `(a, b)`.
/// `y: (N, Cy, H, W)`, `a, b: (N, C, H, W)`; gradients reach all three inputs. CPU f32/f64 and
/// CUDA f32/f64/bf16 run one fused copy; other devices and dtypes use
/// [`swap_condition_reference`].
pub fn swap_condition(y: &Tensor, a: &Tensor, b: &Tensor, swap: &[bool]) -> Result<Tensor> {
    check(y, a, b, swap)?;
    if !crate::fused_op_supported(a.device(), a.dtype()) {
        return swap_condition_reference(y, a, b, swap);
    }
    y.contiguous()?.apply_op3(
        &a.contiguous()?,
        &b.contiguous()?,
        SwapCat {
            swap: swap.to_vec(),
        },
    )
}

struct SwapCat {
    swap: Vec<bool>,
}

/// Per sample: `y` plane block, then the two slots in swapped or natural order.
fn swap_cat<T: Copy>(y: &[T], a: &[T], b: &[T], swap: &[bool], ny: usize, ns: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(y.len() + a.len() + b.len());
    for (i, &s) in swap.iter().enumerate() {
        let (sa, sb) = (&a[i * ns..(i + 1) * ns], &b[i * ns..(i + 1) * ns]);
        out.extend_from_slice(&y[i * ny..(i + 1) * ny]);
        let (first, second) = if s { (sb, sa) } else { (sa, sb) };
        out.extend_from_slice(first);
        out.extend_from_slice(second);
    }
    out
}

impl CustomOp3 for SwapCat {
    fn name(&self) -> &'static str {
        "daa_kernels::swap_condition"
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
        let (n, cy, h, w) = l1.shape().dims4()?;
        let (_, c, _, _) = l2.shape().dims4()?;
        let (ny, ns) = (cy * h * w, c * h * w);
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(y), CpuStorage::F32(a), CpuStorage::F32(b)) => {
                CpuStorage::F32(swap_cat(
                    contiguous_slice(y, l1)?,
                    contiguous_slice(a, l2)?,
                    contiguous_slice(b, l3)?,
                    &self.swap,
                    ny,
                    ns,
                ))
            }
            (CpuStorage::F64(y), CpuStorage::F64(a), CpuStorage::F64(b)) => {
                CpuStorage::F64(swap_cat(
                    contiguous_slice(y, l1)?,
                    contiguous_slice(a, l2)?,
                    contiguous_slice(b, l3)?,
                    &self.swap,
                    ny,
                    ns,
                ))
            }
            _ => candle_core::bail!("swap_condition: f32 or f64 inputs of one dtype expected"),
        };
        Ok((out, Shape::from((n, cy + 2 * c, h, w))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (n, cy, h, w) = l1.shape().dims4()?;
        let (_, c, _, _) = l2.shape().dims4()?;
        let out = crate::slots_cuda::forward(
            [s1, s2, s3],
            [l1, l2, l3],
            &self.swap,
            cy * h * w,
            c * h * w,
        )?;
        Ok((out, Shape::from((n, cy + 2 * c, h, w))))
    }

    fn bwd(
        &self,
        y: &Tensor,
        a: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (cy, c) = (y.dim(1)?, a.dim(1)?);
        let gy = grad.narrow(1, 0, cy)?;
        let slots = grad
            .narrow(1, cy, 2 * c)?
            .contiguous()?
            .apply_op1(SwapHalves {
                swap: self.swap.clone(),
            })?;
        Ok((
            Some(gy),
            Some(slots.narrow(1, 0, c)?),
            Some(slots.narrow(1, c, c)?),
        ))
    }
}

/// Swaps the two channel halves of the samples flagged in `swap` (its own inverse and its own
/// backward).
struct SwapHalves {
    swap: Vec<bool>,
}

fn swap_halves<T: Copy>(x: &[T], swap: &[bool], half: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(x.len());
    for (i, &s) in swap.iter().enumerate() {
        let sample = &x[i * 2 * half..(i + 1) * 2 * half];
        let (first, second) = sample.split_at(half);
        if s {
            out.extend_from_slice(second);
            out.extend_from_slice(first);
        } else {
            out.extend_from_slice(sample);
        }
    }
    out
}

impl CustomOp1 for SwapHalves {
    fn name(&self) -> &'static str {
        "daa_kernels::swap_halves"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, c2, h, w) = l.shape().dims4()?;
        let half = c2 / 2 * h * w;
        let out = match s {
            CpuStorage::F32(x) => {
                CpuStorage::F32(swap_halves(contiguous_slice(x, l)?, &self.swap, half))
            }
            CpuStorage::F64(x) => {
                CpuStorage::F64(swap_halves(contiguous_slice(x, l)?, &self.swap, half))
            }
            _ => candle_core::bail!("swap_condition: f32 or f64 gradient expected"),
        };
        Ok((out, l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (_, c2, h, w) = l.shape().dims4()?;
        let out = crate::slots_cuda::halves(s, l, &self.swap, c2 / 2 * h * w)?;
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1(SwapHalves {
            swap: self.swap.clone(),
        })?))
    }
}
