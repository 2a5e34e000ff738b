use anyhow::Result;

use crate::{cargo, run_echoed};

/// `cargo xtask ci`: the same checks as `.ci/run`.
#[derive(clap::Args)]
pub struct Ci {}

impl Ci {
    pub fn run(self) -> Result<()> {
        run_echoed(cargo(["fmt", "--all", "--check"]))?;
        run_echoed(cargo([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
        run_echoed(cargo(["test", "--workspace"]))
    }
}
