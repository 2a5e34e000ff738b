//! # daa-kernels: custom ops where candle is too slow
//!
//! candle's CPU conv2d backward computes the input gradient with a naive transposed
//! convolution and the weight gradient as a convolution whose kernel is the whole feature map;
//! a training step of a small U-Net spends most of its time there. [`conv2d`] keeps candle's
//! autograd but runs forward, input gradient and weight gradient itself: a 3x3 stride-1 f32
//! conv with at least 8 input channels on microkernels of its own (AVX-512F or AVX2 + FMA,
//! picked at run time; output tiles kept in registers across all taps), other stride-1 convs
//! with at least 8 input channels as one gemm per kernel tap over a zero-padded copy of the input
//! (no im2col), any other through bounded im2col chunks ([`im2col`], [`col2im`]).
//! [`conv2d_bias_leaky_relu`] fuses the activation. The other ops fuse what candle runs as
//! many single-threaded passes: [`group_norm_silu`], [`leaky_relu`], [`avg_pool2x2`],
//! [`upsample_nearest2x`], [`upsample_bilinear2x`], [`mul_mask`], [`adam_update`]; and
//! [`on_pool`] runs a training step on the pool these ops use.
//!
//! Place in the crate graph: the leaf, on `candle-core` only. On CUDA (the `cuda` feature)
//! [`group_norm`] and [`swap_condition`] run kernels of their own (`kernels/*.cu`, compiled to
//! PTX by build.rs), in f32, f64 and bf16; with the `cudnn` feature [`conv2d`] runs cuDNN's
//! forward, backward-data and backward-filter (see [`conv_tf32`], [`conv_benchmark`]), and
//! without it candle's conv2d. docs/cuda.md says which op runs in which type.
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
mod adam;
mod conv;
#[cfg(feature = "cudnn")]
mod conv_cudnn;
mod conv_settings;
mod cpu_conv;
#[cfg(target_arch = "x86_64")]
mod cpu_conv_direct;
mod cpu_conv_wide;
mod group_norm;
#[cfg(feature = "cuda")]
mod group_norm_cuda;
mod norm_act;
mod pool;
#[cfg(feature = "cuda")]
mod ptx;
mod slots;
#[cfg(feature = "cuda")]
mod slots_cuda;
mod upsample;

pub use activation::{leaky_relu, leaky_relu_reference, mul_mask};
pub use adam::{adam_update, adam_update_reference, AdamStep};
pub use conv::{
    col2im, conv2d, conv2d_bias, conv2d_bias_leaky_relu, conv2d_chunked, im2col, Conv2d,
    Conv2dGeometry, CONV_SCRATCH_BYTES,
};
pub use conv_settings::{
    conv_autocast, conv_autocast_dtype, conv_benchmark, conv_tf32, set_conv_benchmark,
    set_conv_tf32, ConvAutocast,
};
pub use cpu_conv::conv_chunk_len;
pub use group_norm::{group_norm, group_norm_reference};
pub use norm_act::{group_norm_silu, group_norm_silu_reference};
pub use pool::{avg_pool2x2, upsample_nearest2x};
pub use slots::{swap_condition, swap_condition_reference};
pub use upsample::upsample_bilinear2x;

/// Whether the fused ops ([`group_norm`], [`swap_condition`]) have a kernel of their own for
/// this device and dtype: CPU f32/f64, and CUDA f32/f64/bf16 with the `cuda` feature. Elsewhere
/// they run their candle-op references.
pub(crate) fn fused_op_supported(device: &candle_core::Device, dtype: candle_core::DType) -> bool {
    use candle_core::DType;
    match device {
        candle_core::Device::Cpu => matches!(dtype, DType::F32 | DType::F64),
        #[cfg(feature = "cuda")]
        candle_core::Device::Cuda(_) => matches!(dtype, DType::F32 | DType::F64 | DType::BF16),
        _ => false,
    }
}

/// Runs `f` on a thread of the rayon pool that the CPU kernels use, and returns its result
/// (inline when called from such a thread already). A training step driven from a pool thread
/// takes part in every parallel kernel it starts, instead of handing each one to the pool and
/// sleeping until it is done: no thread beyond `-j` competes for the cores, and the pool's
/// threads are not woken from sleep for every op.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}
