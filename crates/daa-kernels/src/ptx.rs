//! PTX of `kernels/*.cu`, compiled by build.rs (only with the `cuda` feature). candle caches
//! loaded modules by name, so each module name is a unique constant.

/// GroupNorm forward and backward (`kernels/group_norm.cu`).
pub(crate) const GROUP_NORM: &str = include_str!(concat!(env!("OUT_DIR"), "/group_norm.ptx"));
/// Module name of [`GROUP_NORM`].
pub(crate) const GROUP_NORM_MODULE: &str = "daa_kernels::group_norm";
/// The fused swap + concatenation of the diffusion condition (`kernels/swap_condition.cu`).
pub(crate) const SWAP_CONDITION: &str =
    include_str!(concat!(env!("OUT_DIR"), "/swap_condition.ptx"));
/// Module name of [`SWAP_CONDITION`].
pub(crate) const SWAP_CONDITION_MODULE: &str = "daa_kernels::swap_condition";
