//! Helpers shared by the CLI test files (each file is its own crate and uses what it needs).
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// Runs the built `daa` with `args` (RUST_LOG cleared, so output is what a user sees).
pub fn daa(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_daa"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap_or_else(|e| panic!("running daa: {e}"))
}

/// The process's stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A path as `&str` for an argument list (the test folders are UTF-8).
pub fn p(path: &Path) -> &str {
    path.to_str().unwrap_or_default()
}
