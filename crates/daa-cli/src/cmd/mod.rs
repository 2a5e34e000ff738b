//! One module per subcommand.

pub mod eval;
pub mod experiment;
pub mod restore;
pub mod train;

use anyhow::{bail, Context, Result};
use candle_core::Device;

/// `cpu` or `cuda:N` (`cuda` alone means `cuda:0`).
pub fn parse_device(s: &str) -> Result<Device> {
    match s {
        "cpu" => Ok(Device::Cpu),
        _ => {
            let Some(rest) = s.strip_prefix("cuda") else {
                bail!("unknown device {s:?} (use cpu or cuda:N)")
            };
            let ordinal = match rest.strip_prefix(':') {
                Some(n) => n
                    .parse()
                    .with_context(|| format!("bad device ordinal in {s:?}"))?,
                None if rest.is_empty() => 0,
                None => bail!("unknown device {s:?} (use cpu or cuda:N)"),
            };
            if !candle_core::utils::cuda_is_available() {
                bail!("device {s} requested but this daa was built without CUDA (build with --features cuda)");
            }
            Device::new_cuda(ordinal).with_context(|| format!("opening {s}"))
        }
    }
}
