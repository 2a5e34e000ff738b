//! # daa-backbones: restoration networks
//!
//! Pure networks, no training code: the paper's U-Net restorer, DnCNN, NAFNet, Restormer and
//! Uformer, behind one [`BackboneConfig`] enum. Every network predicts a **residual**:
//! `restore(x) = x + R(x)`. Input and output are NCHW, RGB, `[0, 1]`. Weights live in a candle `VarBuilder` whose paths
//! are the official tensor names, so the same code creates fresh weights or loads a checkpoint.
//!
//! Place in the crate graph: depends on `candle-core`, `candle-nn` and `daa-kernels` (conv).
//!
//! [`Backbone::residual_and_features`] also returns each network's bottleneck features, for
//! feature-space domain adaptation.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use daa_backbones::{BackboneConfig, UNetConfig};
//!
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let net = BackboneConfig::UNet(UNetConfig::tiny()).build(vb)?;
//! let x = Tensor::rand(0f32, 1f32, (1, 3, 21, 30), &Device::Cpu)?; // any size
//! let y = net.restore(&x, false)?; // replicate-padded to a multiple of 8 inside, cropped back
//! assert_eq!(y.dims(), &[1, 3, 21, 30]);
//! # Ok::<(), candle_core::Error>(())
//! ```

mod backbone;
mod common;
mod dncnn;
mod nafnet;
mod restormer;
mod uformer;
mod unet;

pub use backbone::{Backbone, BackboneConfig};
pub use common::{
    layer_norm_last_dim, pad_replicate_to_multiple, softmax_last_dim,
    upsample_bilinear2x_align_corners, upsample_bilinear2x_align_corners_reference,
};
pub use dncnn::{DnCnn, DnCnnConfig};
pub use nafnet::{NafNet, NafNetConfig};
pub use restormer::{LayerNormType, Restormer, RestormerConfig};
pub use uformer::{Uformer, UformerConfig};
pub use unet::{UNet, UNetConfig};

/// Number of scalar parameters in a `VarMap` (trainable variables only).
pub fn parameter_count(varmap: &candle_nn::VarMap) -> usize {
    varmap.all_vars().iter().map(|v| v.elem_count()).sum()
}
