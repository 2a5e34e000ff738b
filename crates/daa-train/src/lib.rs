//! # daa-train: the training engine, metrics, checkpoints and inference helpers
//!
//! Wires `daa-degrade` (data) and `daa-backbones` / `daa-diffusion` (networks) into a plain
//! training loop: Charbonnier loss, an Adam whose state the engine owns (so resume is exact),
//! config as serde types with named presets and overrides, a run folder with the resolved
//! config, JSONL metrics, atomic safetensors checkpoints, and PSNR/SSIM evaluation with
//! explicit conventions. `docs/architecture.md` walks through the modules.
//!
//! Place in the crate graph: depends on the four libraries and `safetensors`; the `daa`
//! binary (daa-cli) is a thin layer over it.
//!
//! ```no_run
//! use daa_train::{train, TrainConfig};
//! let mut cfg = TrainConfig::smoke();
//! cfg.steps = 10;
//! let summary = train(&cfg, std::path::Path::new("runs/example"), &candle_core::Device::Cpu,
//!     false, &mut |_event| {})?;
//! println!("restored PSNR {:.2} dB", summary.final_eval.mean_restored.psnr);
//! # Ok::<(), daa_train::Error>(())
//! ```

mod checkpoint;
mod checkpoint_check;
mod config;
mod dann;
mod data;
mod engine;
mod error;
mod eval;
mod events;
pub mod experiments;
mod init;
mod log;
mod loss;
pub mod metrics;
mod model;
mod optim;
mod restore;
mod run_dir;
mod seeds;
mod step;
pub mod tensorboard;

pub use checkpoint::{
    load_restorer, restorer_range, save_restorer, write_atomic, RANGE_KEY, RESTORER_FORMAT,
};
pub use config::{
    arch, arch_names, backbone, backbone_names, AdaptationSettings, DataSpec, EvalConfig,
    LossSettings, Method, OptimConfig, Overrides, Precision, Scale, ScheduleConfig, TargetSpec,
    TrainConfig, PRESETS,
};
/// The value range a run trains in (`TrainConfig::range`), from `daa-diffusion`.
pub use daa_diffusion::ValueRange;
pub use dann::{domain_loss, gradient_reversal, Dann, DannSettings, DomainClassifier};
pub use data::{open_eval, open_pairs, OpenOptions, TrainData};
pub use engine::{train, train_until, TrainSummary, REC_LOSS_LIMIT, WEIGHT_LIMIT};
pub use error::{Error, Result};
pub use eval::{evaluate, EvalReport, ImageScores, Scores};
pub use events::Event;
pub use init::seeded_var_builder;
pub use loss::charbonnier;
pub use model::{Diffusion, Ema, Models, StepOutcome};
pub use optim::Adam;
pub use restore::{bytes_per_pixel, restore_image, tile_for_budget, TileConfig};
pub use run_dir::{steps_to_prune, CheckpointKind, RunDir, TrainState};
pub use step::{step_losses, step_losses_with, Adaptation, Batch, LossParts, StepNetworks};
