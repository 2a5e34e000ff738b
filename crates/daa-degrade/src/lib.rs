//! # daa-degrade: images, degradations and datasets
//!
//! The data layer of daa. It reads and writes images (8/16-bit PNG, JPEG, grayscale and
//! alpha handled, every failure an [`Error`] naming the path), synthesises degradations as
//! pure functions of `(image, params, rng)`, and serves training samples from paired
//! folders, unpaired folders, or clean photos plus a degradation.
//!
//! Place in the crate graph: depends on `candle-core` (to hand out tensors) and `image`,
//! never on networks. Images are stored as [`Image`]: planar RGB, `f32` in `[0, 1]`.
//! Tensors it yields are NCHW, RGB, `[0, 1]`, on the CPU; the engine moves them.
//!
//! ```
//! use daa_degrade::{Image, Degradation, AwgnParams, sample_rng};
//! let clean = Image::filled(32, 24, [0.5, 0.4, 0.3]);
//! let deg = Degradation::Awgn(AwgnParams { sigma_min: 0.0, sigma_max: 75.0 });
//! let mut rng = sample_rng(7, 0, 0);
//! let noisy = deg.apply(&clean, &mut rng)?;
//! assert_eq!((noisy.width(), noisy.height()), (32, 24));
//! let t = noisy.to_tensor()?; // (1, 3, 24, 32)
//! assert_eq!(t.dims(), &[1, 3, 24, 32]);
//! # Ok::<(), daa_degrade::Error>(())
//! ```

mod blur;
mod blur_kernel;
mod camera;
mod correlated_noise;
mod dataset;
pub mod embedded;
mod error;
mod image_buf;
mod io;
mod jpeg;
mod noise;
mod pipeline;
mod rain;
mod ranges;
mod srgb;
mod transforms;

pub use blur::{MotionBlurParams, ShakeParams};
pub use blur_kernel::{convolve, BlurKernel};
pub use camera::{camera_noise, CameraParams};
pub use correlated_noise::{correlated_noise, CorrelatedNoiseParams};
pub use dataset::{
    collate, list_images, scan_images, Layout, LayoutPair, PairImage, PairSource, PairedFolder,
    Split, SyntheticPairs, UnpairedFolder,
};
pub use error::{Error, Result};
pub use image_buf::Image;
pub use io::{
    decode_image, load_image, load_image_keep, save_image, save_image_as, SourceFormat, MAX_PIXELS,
    WRITE_EXTENSIONS,
};
pub use noise::{awgn, AwgnParams};
pub use pipeline::Degradation;
pub use rain::{RainParams, StormParams};
pub use transforms::{augment, pad_reflect_to, random_crop, Crop, SmallImagePolicy};

use rand::SeedableRng;

/// The RNG every sample uses: a ChaCha8 stream seeded from `(seed, epoch, index)`.
///
/// Each sample owns its generator, so results do not depend on loader threads or on
/// the order in which samples are produced, and a run reproduces from its seed.
pub fn sample_rng(seed: u64, epoch: u64, index: u64) -> rand_chacha::ChaCha8Rng {
    rand_chacha::ChaCha8Rng::seed_from_u64(mix(mix(mix(seed) ^ epoch) ^ index))
}

/// SplitMix64 finaliser: spreads nearby integers over the whole 64-bit range.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
