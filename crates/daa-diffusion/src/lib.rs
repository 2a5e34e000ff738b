//! # daa-diffusion: noise-space domain adaptation as a reusable crate
//!
//! The diffusion half of *Denoising as Adaptation* (Liao et al., ICLR 2025, arXiv:2406.18516):
//! the linear noise schedule with continuous noise levels ([`NoiseSchedule`]), the noise-level
//! embedding ([`gamma_embedding`], [`NoiseLevelEmbedding`]), the conditional noise predictor
//! ([`CondUNet`], ADM/Palette style), the channel-shuffling masks ([`swap_mask`]; the swap
//! itself is `daa_kernels::swap_condition`), and the adaptation loss ([`AdaptationLoss`]) whose gradient pulls a
//! restorer's outputs on "real" inputs toward the clean distribution.
//!
//! The API knows nothing about restoration networks: give it tensors (a clean image, two
//! degraded inputs, and your network's two residuals) and add the returned loss to yours.
//! Images are NCHW RGB in the value range your restorer works in, `[0, 1]` or `[-1, 1]`
//! ([`ValueRange`]; the reference denoises in `[0, 1]`, derains and deblurs in `[-1, 1]`): the
//! diffusion network sees them as they are. Every random draw of a step can be sampled
//! ([`AdaptationLoss::draw`]) or given ([`AdaptationDraws`]). Place in the crate graph: depends
//! on `candle-core` and `candle-nn`.
//!
//! Adapting a toy restorer (one conv predicting a residual) in a few lines:
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{conv2d, Conv2dConfig, Module, Optimizer, VarBuilder, VarMap};
//! use daa_diffusion::{AdaptationConfig, AdaptationInputs, AdaptationLoss, CondUNet, CondUNetConfig, NoiseSchedule};
//! use rand::SeedableRng;
//!
//! let dev = Device::Cpu;
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
//! let restorer = conv2d(3, 3, 3, Conv2dConfig { padding: 1, ..Default::default() }, vb.pp("restorer"))?;
//! let unet = CondUNet::new(vb.pp("diffusion"), &CondUNetConfig::tiny())?;
//! let loss_fn = AdaptationLoss::new(NoiseSchedule::paper(), AdaptationConfig::paper())?;
//! let mut opt = candle_nn::AdamW::new(varmap.all_vars(), candle_nn::ParamsAdamW { lr: 1e-4, weight_decay: 0.0, ..Default::default() })?;
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);         // noise levels, noise, swaps
//! let mut dropout = rand_chacha::ChaCha8Rng::seed_from_u64(1);     // the CondUNet's dropout masks
//!
//! let clean = Tensor::rand(0f32, 1., (2, 3, 16, 16), &dev)?;        // source clean target
//! let x_s = (&clean + Tensor::randn(0f32, 0.1, (2, 3, 16, 16), &dev)?)?; // source (synthetic) input
//! let x_r = Tensor::rand(0f32, 1., (2, 3, 16, 16), &dev)?;          // target ("real") input
//! let (r_s, r_r) = (restorer.forward(&x_s)?, restorer.forward(&x_r)?);
//! let parts = loss_fn.compute(&unet, &AdaptationInputs {
//!     clean: &clean, source_input: &x_s, target_input: &x_r, source_residual: &r_s, target_residual: &r_r,
//! }, &mut rng, Some(&mut dropout))?;
//! let rec = ((&x_s + &r_s)? - &clean)?.abs()?.mean_all()?;               // your restoration loss
//! let total = (rec + (parts.noise * 0.2)?)?;                              // + lambda * L_noise
//! opt.backward_step(&total)?;                                              // one step over both networks
//! # Ok::<(), candle_core::Error>(())
//! ```
#![warn(missing_docs)]

mod adaptation;
mod embeddings;
mod schedule;
mod shuffle;
mod unet;

pub use adaptation::{
    contrastive_hinge, gaussian_like, lambda_ramp, scalar, to_diffusion_space, AdaptationConfig,
    AdaptationDraws, AdaptationInputs, AdaptationLoss, AdaptationParts, LambdaRamp, ValueRange,
    Variant,
};
pub use embeddings::{gamma_embedding, NoiseLevelEmbedding};
pub use schedule::{q_sample, NoiseSchedule};
pub use shuffle::swap_mask;
pub use unet::{CondUNet, CondUNetConfig};
