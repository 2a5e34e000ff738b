//! Process-wide switches of the cuDNN convolution (the `cudnn` feature); without it they are
//! recorded and have no effect.
//!
//! - TF32: whether f32 convolutions may use TF32 tensor cores (10-bit mantissa products, f32
//!   accumulation). On by default, as in PyTorch (`torch.backends.cudnn.allow_tf32`); the
//!   environment variable `DAA_CUDNN_TF32=0` or [`set_conv_tf32`]`(false)` forces strict f32.
//! - Benchmark: whether the algorithm of each new convolution shape is chosen by timing the
//!   candidates once (`cudnnFind*`, as `torch.backends.cudnn.benchmark = True`) or by cuDNN's
//!   heuristics. On by default; `DAA_CUDNN_BENCHMARK=0` or [`set_conv_benchmark`]`(false)`
//!   uses the heuristics.

use std::sync::atomic::{AtomicU8, Ordering};

const UNSET: u8 = 2;
static TF32: AtomicU8 = AtomicU8::new(UNSET);
static BENCHMARK: AtomicU8 = AtomicU8::new(UNSET);

fn get(flag: &AtomicU8, var: &str) -> bool {
    match flag.load(Ordering::Relaxed) {
        UNSET => {
            let on = !matches!(
                std::env::var(var).as_deref(),
                Ok("0") | Ok("false") | Ok("off")
            );
            flag.store(on as u8, Ordering::Relaxed);
            on
        }
        v => v == 1,
    }
}

/// Allows (or forbids) TF32 tensor-core math in f32 convolutions on CUDA.
pub fn set_conv_tf32(allow: bool) {
    TF32.store(allow as u8, Ordering::Relaxed);
}

/// Whether f32 convolutions on CUDA may use TF32 (default true; `DAA_CUDNN_TF32=0` turns it off).
pub fn conv_tf32() -> bool {
    get(&TF32, "DAA_CUDNN_TF32")
}

/// Chooses cuDNN algorithms by timing them (true) or by heuristics (false).
pub fn set_conv_benchmark(on: bool) {
    BENCHMARK.store(on as u8, Ordering::Relaxed);
}

/// Whether cuDNN algorithms are chosen by timing (default true; `DAA_CUDNN_BENCHMARK=0` turns
/// it off).
pub fn conv_benchmark() -> bool {
    get(&BENCHMARK, "DAA_CUDNN_BENCHMARK")
}

thread_local! {
    static CONV_AUTOCAST: std::cell::Cell<Option<candle_core::DType>> =
        const { std::cell::Cell::new(None) };
}

/// While alive, f32 convolutions ([`crate::conv2d`], [`crate::conv2d_bias`]) called on this
/// thread compute in another dtype (PyTorch's autocast, for convolutions only): inputs and
/// weights are cast to it, the conv runs in it (forward and, through the casts' backward,
/// backward), and its output is cast back to f32, so everything around the conv (weights,
/// GroupNorm statistics, losses, Adam) stays f32. Dropping the guard restores the previous
/// setting. Made by [`conv_autocast`].
#[must_use = "autocast lasts as long as the guard"]
pub struct ConvAutocast {
    prev: Option<candle_core::DType>,
}

/// Starts convolution autocast to `dtype` on this thread (bf16 on CUDA: tensor cores with f32
/// accumulation; on the CPU, bf16 convolutions round their inputs and output to bf16 and
/// compute in f32). `DType::F32` turns it off for the guard's lifetime.
pub fn conv_autocast(dtype: candle_core::DType) -> ConvAutocast {
    let dtype = (dtype != candle_core::DType::F32).then_some(dtype);
    ConvAutocast {
        prev: CONV_AUTOCAST.with(|c| c.replace(dtype)),
    }
}

impl Drop for ConvAutocast {
    fn drop(&mut self) {
        CONV_AUTOCAST.with(|c| c.set(self.prev));
    }
}

/// The dtype f32 convolutions compute in on this thread (`None`: f32).
pub fn conv_autocast_dtype() -> Option<candle_core::DType> {
    CONV_AUTOCAST.with(|c| c.get())
}
