//! A run's configuration: the types, the named presets (and the registry of networks by
//! scale), the overrides that `daa train`'s flags apply, and validation.

mod overrides;
mod presets;
mod types;
mod validate;

pub use overrides::Overrides;
pub use presets::{arch, arch_names, backbone, backbone_names, Scale, PRESETS};
pub use types::{
    AdaptationSettings, DataSpec, EvalConfig, LossSettings, Method, OptimConfig, Precision,
    ScheduleConfig, TargetSpec, TrainConfig,
};
