//! One module per subcommand.

pub mod bench;
pub mod data;
pub mod eval;
pub mod experiment;
pub mod restore;
pub mod samples;
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

/// The backbone configuration named by `--arch` (`unet-paper`, `nafnet-cpu`, ...: daa-train's
/// one registry of networks by name and scale).
pub fn arch(name: &str) -> Result<daa_backbones::BackboneConfig> {
    Ok(daa_train::arch(name)?)
}

/// The value range a restorer works in: `--range` when given (`unit` or `signed`), else the
/// checkpoint's `daa.range` metadata (`unit` when it has none, as older and converted
/// checkpoints).
pub fn restorer_range(
    checkpoint: &std::path::Path,
    flag: Option<&str>,
) -> Result<daa_train::ValueRange> {
    match flag {
        None => Ok(daa_train::restorer_range(checkpoint)?),
        Some("unit") => Ok(daa_train::ValueRange::Unit),
        Some("signed") => Ok(daa_train::ValueRange::Signed),
        Some(other) => bail!("unknown --range {other:?} (use unit or signed)"),
    }
}

/// Prints a line above the progress bar, or to stderr when the bar is hidden (output is not a
/// terminal, as in CI or a pipe), where indicatif would drop it.
pub fn say(bar: &indicatif::ProgressBar, msg: String) {
    if bar.is_hidden() {
        note(msg);
    } else {
        bar.println(msg);
    }
}

/// Writes a line to stderr. A closed stream (`daa train 2>&1 | head -1`) loses the line and
/// nothing else: logging must never stop a command (eprintln! would panic).
/// An error and its causes on one line, `a: b: c`, leaving out a cause whose text the line
/// already holds (errors that print their source, like an I/O error with its path, would
/// otherwise repeat it).
pub fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

pub fn note(msg: impl std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{msg}");
}

/// Writes a line to stdout; like [`note`], a closed stream is not an error.
pub fn out(msg: impl std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{msg}");
}
