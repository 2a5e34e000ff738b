//! The conditional noise predictor: an ADM / Palette-style U-Net.

mod attention;
mod blocks;
mod model;

pub(crate) use model::reborrow;
pub use model::{CondUNet, CondUNetConfig};
