//! The channel-shuffling layer and residual swapping (METHOD.md section 2, steps 4-5).

use candle_core::{Device, Result, Tensor};
use rand::Rng;

/// Per-sample Bernoulli(0.5) swap masks: `true` means "swap this sample's two slots".
pub fn swap_mask<R: Rng + ?Sized>(batch: usize, rng: &mut R) -> Vec<bool> {
    (0..batch).map(|_| rng.random_bool(0.5)).collect()
}

/// Swaps the two condition slots per sample: where `mask[i]`, sample `i` gets `(b[i], a[i])`,
/// elsewhere `(a[i], b[i])`. Both inputs are `(B, C, H, W)`; channel order inside a slot never
/// changes. Gradients flow to both `a` and `b` (it is a select, not a copy).
pub fn swap_slots(a: &Tensor, b: &Tensor, mask: &[bool]) -> Result<(Tensor, Tensor)> {
    let (n, c, h, w) = a.dims4()?;
    if b.dims() != a.dims() {
        candle_core::bail!(
            "swap_slots: slot shapes differ: {:?} vs {:?}",
            a.shape(),
            b.shape()
        );
    }
    if mask.len() != n {
        candle_core::bail!(
            "swap_slots: mask of length {} for a batch of {n}",
            mask.len()
        );
    }
    let m: Vec<u8> = mask.iter().map(|&s| s as u8).collect();
    let m = Tensor::from_vec(m, (n, 1, 1, 1), &Device::Cpu)?
        .to_device(a.device())?
        .broadcast_as((n, c, h, w))?;
    Ok((m.where_cond(b, a)?, m.where_cond(a, b)?))
}

/// Builds the diffusion network's input `cat[y_noisy, slot_a, slot_b]` on channels.
pub fn condition(y_noisy: &Tensor, slot_a: &Tensor, slot_b: &Tensor) -> Result<Tensor> {
    Tensor::cat(&[y_noisy, slot_a, slot_b], 1)
}
