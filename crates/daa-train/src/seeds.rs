//! Every random stream of a run, derived from its one seed. Each stream has its own salt, so
//! that the streams are independent, and each draw is a pure function of (seed, salt, step or
//! sample), so that a resumed run draws what an uninterrupted one would.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The salts that give each random stream of a run its own sequence from the one seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Salt {
    /// The order in which each epoch visits the source images.
    Order,
    /// Target-domain crops.
    Target,
    /// Unpaired clean crops (the Ex variant).
    Ex,
    /// A step's noise levels, noise and swap masks.
    Step,
    /// The diffusion network's weights, and its dropout masks.
    Diffusion,
    /// The synthetic target domain written before training.
    Materialize,
    /// DANN's domain classifier's weights.
    Dann,
}

impl Salt {
    fn value(self) -> u64 {
        match self {
            Self::Order => 0x6461_615f_6f72_6472,
            Self::Target => 0x7461_7267_6574_0001,
            Self::Ex => 0x6578_636c_6561_6e02,
            Self::Step => 0x7374_6570_0000_0003,
            Self::Diffusion => 0x6469_6666_0000_0004,
            Self::Materialize => 0x6d61_7465_7269_0005,
            Self::Dann => 0x6461_6e6e_0000_0006,
        }
    }
}

/// The seed of a stream: `seed ^ salt`.
pub(crate) fn salted(seed: u64, salt: Salt) -> u64 {
    seed ^ salt.value()
}

/// The RNG of step `step`'s noise levels, noise and condition swaps.
pub(crate) fn step_rng(seed: u64, step: usize) -> ChaCha8Rng {
    daa_degrade::sample_rng(salted(seed, Salt::Step), step as u64, 0)
}

/// The RNG of step `step`'s dropout masks in the diffusion network.
pub(crate) fn dropout_rng(seed: u64, step: usize) -> ChaCha8Rng {
    let mut derive = daa_degrade::sample_rng(salted(seed, Salt::Diffusion), step as u64, 0);
    ChaCha8Rng::seed_from_u64(derive.next_u64())
}
