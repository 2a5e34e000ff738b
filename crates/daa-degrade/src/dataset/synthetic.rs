use rand_chacha::ChaCha8Rng;

use super::{PairSource, UnpairedFolder};
use crate::{Degradation, Image, Result};

/// Clean photos plus a degradation: pairs `(degrade(crop), crop)` made on the fly.
///
/// The crop (and flip) is drawn first, then the degradation, both from the sample's RNG.
#[derive(Debug)]
pub struct SyntheticPairs {
    clean: UnpairedFolder,
    degradation: Degradation,
}

impl SyntheticPairs {
    /// Pairs from `clean` degraded by `degradation` (validated here).
    pub fn new(clean: UnpairedFolder, degradation: Degradation) -> Result<Self> {
        degradation.validate()?;
        Ok(Self { clean, degradation })
    }
}

impl PairSource for SyntheticPairs {
    fn len(&self) -> usize {
        self.clean.len()
    }

    fn patch(&self, index: usize, patch: usize, rng: &mut ChaCha8Rng) -> Result<(Image, Image)> {
        let clean = self.clean.patch(index, patch, rng)?;
        let degraded = self.degradation.apply(&clean, rng)?;
        Ok((degraded, clean))
    }

    fn full(&self, index: usize, rng: &mut ChaCha8Rng) -> Result<(Image, Image, String)> {
        let (clean, name) = self.clean.image(index)?;
        let degraded = self.degradation.apply(&clean, rng)?;
        Ok((degraded, clean, name))
    }

    fn smallest_size(&self) -> Result<Option<(usize, usize)>> {
        self.clean.smallest_size()
    }
}
