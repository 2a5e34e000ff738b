//! The conditional noise predictor: an ADM / Palette-style U-Net.

mod attention;
mod blocks;
mod model;

pub use model::{CondUNet, CondUNetConfig};
