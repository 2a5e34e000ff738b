//! # daa-kernels: custom ops where candle is too slow
//!
//! candle's CPU conv2d backward computes the input gradient with a naive transposed
//! convolution and the weight gradient as a convolution whose kernel is the whole feature map;
//! a training step of a small U-Net spends most of its time there. [`conv2d`] keeps candle's
//! autograd but routes the convolution through [`im2col`] (a custom op whose backward is
//! [`col2im`]) and one matrix product, so forward, input gradient and weight gradient are all
//! single large gemm calls.
//!
//! Place in the crate graph: the leaf, on `candle-core` only. On CUDA devices [`conv2d`] falls
//! back to candle's conv2d for now.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! let x = Tensor::randn(0f32, 1., (2, 3, 9, 7), &Device::Cpu)?;
//! let w = Tensor::randn(0f32, 1., (4, 3, 3, 3), &Device::Cpu)?;
//! let ours = daa_kernels::conv2d(&x, &w, 1, 1)?;
//! let theirs = x.conv2d(&w, 1, 1, 1, 1)?;
//! assert!((ours - theirs)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-4);
//! # Ok::<(), candle_core::Error>(())
//! ```
#![warn(missing_docs)]

mod activation;
mod conv;
mod cpu_conv;
mod group_norm;
mod slots;

pub use activation::{leaky_relu, leaky_relu_reference};
pub use conv::{
    col2im, conv2d, conv2d_bias, conv2d_chunked, im2col, Conv2d, Conv2dGeometry, CONV_SCRATCH_BYTES,
};
pub use cpu_conv::conv_chunk_len;
pub use group_norm::{group_norm, group_norm_reference};
pub use slots::{swap_condition, swap_condition_reference};
