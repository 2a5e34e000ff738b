//! Training progress when stderr is not a terminal (CI, a pipe, `2> log`): no bar and no
//! escape codes, about ten plain lines with steps, ETA, latest losses and seconds per step.

use std::process::Command;

#[test]
fn without_a_terminal_progress_is_plain_lines_with_eta() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let run = dir.path().join("run");
    let out = Command::new(env!("CARGO_BIN_EXE_daa"))
        .args(["train", "--preset", "smoke", "--steps", "20", "--run-dir"])
        .arg(&run)
        .env_remove("RUST_LOG")
        .output()
        .unwrap_or_else(|e| panic!("running daa: {e}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        !err.contains('\u{1b}') && !err.contains('\r'),
        "escape codes or carriage returns on a pipe: {err:?}"
    );
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("step ") && l.contains(", ETA "))
        .collect();
    assert!((5..=11).contains(&lines.len()), "{err}");
    let last = lines.last().copied().unwrap_or_default();
    assert!(
        last.starts_with("step 20/20, ETA 0:00:00: total "),
        "{last}"
    );
    assert!(
        last.contains(" rec ") && last.ends_with(" s/step"),
        "{last}"
    );
    // The ETA is H:MM:SS.
    let eta = lines[0].split(", ETA ").nth(1).unwrap_or_default();
    let eta = eta.split(':').take(3).collect::<Vec<_>>();
    assert!(eta.len() == 3 && eta[1].len() == 2, "{}", lines[0]);
}
