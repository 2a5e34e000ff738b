//! Parameter ranges `[lo, hi]`, as every degradation's parameters give them: drawing a value
//! from one and checking its bounds.

use rand::Rng;

use crate::{Error, Result};

/// A value drawn uniformly from the inclusive range `r` (or `r[0]` when it is a point).
pub(crate) fn draw(r: [f32; 2], rng: &mut impl Rng) -> f32 {
    if r[1] > r[0] {
        rng.random_range(r[0]..=r[1])
    } else {
        r[0]
    }
}

/// Checks that the range `r` named `name` is finite and `lo <= r[0] <= r[1] <= hi`.
pub(crate) fn ordered(name: &str, r: [f32; 2], lo: f32, hi: f32) -> Result<()> {
    if r[0].is_finite() && r[1].is_finite() && lo <= r[0] && r[0] <= r[1] && r[1] <= hi {
        Ok(())
    } else {
        Err(Error::Param(format!(
            "{name} range {r:?} must satisfy {lo} <= lo <= hi <= {hi}"
        )))
    }
}
