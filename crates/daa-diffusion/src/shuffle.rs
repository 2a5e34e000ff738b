//! The channel-shuffling masks (docs/method.md section 2, steps 4-5). The swap itself and the
//! concatenation into the diffusion network's input are one fused op,
//! `daa_kernels::swap_condition`.

use rand::Rng;

/// Per-sample Bernoulli(0.5) swap masks: `true` means "swap this sample's two slots".
pub fn swap_mask<R: Rng + ?Sized>(batch: usize, rng: &mut R) -> Vec<bool> {
    (0..batch).map(|_| rng.random_bool(0.5)).collect()
}
