//! `cargo xtask`: experiments and project checks. It runs cargo as a subprocess and never
//! links the daa crates, so it builds in seconds and needs no CUDA.

mod bench;
mod ci;
mod experiment;
mod plot;
mod reproduce;
mod train;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "daa's experiments and checks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train a task's preset through the `daa` CLI (release build).
    Train(train::Train),
    /// Time daa's train steps against the same steps in PyTorch.
    Bench(bench::Bench),
    /// What CI runs: fmt, clippy -D warnings, the test suite.
    Ci(ci::Ci),
    /// Train and compare vanilla, DA, its ablations and an oracle on a task's domains.
    Reproduce(reproduce::Reproduce),
    /// Run an experiment through the `daa` CLI and write its report under docs/.
    Experiment(experiment::Experiment),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    std::env::set_current_dir(workspace_root()).context("entering the workspace root")?;
    match cli.cmd {
        Cmd::Train(t) => t.run(),
        Cmd::Bench(b) => b.run(),
        Cmd::Ci(c) => c.run(),
        Cmd::Experiment(e) => e.run(),
        Cmd::Reproduce(r) => r.run(),
    }
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `cargo` as Cargo itself was invoked (honours `$CARGO`).
pub fn cargo<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(args: I) -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.args(args);
    c
}

/// Prints the command, runs it, and turns a non-zero exit into an error naming it.
pub fn run_echoed(mut c: Command) -> Result<()> {
    let shown = format!(
        "{} {}",
        c.get_program().to_string_lossy(),
        c.get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    eprintln!("$ {shown}");
    let status = c.status().with_context(|| format!("starting `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed with {status}");
    }
    Ok(())
}
