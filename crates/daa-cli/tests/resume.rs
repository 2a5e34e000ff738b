//! Kill the CLI with SIGKILL at a random step after a checkpoint, resume, and compare with an
//! uninterrupted run: the loss trace and the final weights must be equal bit for bit.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const ARGS: [&str; 9] = [
    "train",
    "--preset",
    "smoke",
    "--steps",
    "40",
    "--checkpoint-every",
    "2",
    "--keep-last",
    "50",
];

fn daa() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_daa"));
    c.env_remove("RUST_LOG");
    c
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap_or_default()
}

fn trace(dir: &Path) -> Vec<(u64, f64)> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v["step"].as_u64()?, v["loss_total"].as_f64()?)))
        .collect()
}

fn tensors(path: &Path) -> Vec<(String, Vec<f32>)> {
    let t = candle_core::safetensors::load(path, &candle_core::Device::Cpu)
        .unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let mut v: Vec<(String, Vec<f32>)> = t
        .into_iter()
        .map(|(k, t)| {
            (
                k,
                t.flatten_all()
                    .and_then(|t| t.to_vec1())
                    .unwrap_or_default(),
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn saved_step(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("train_state.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["step"].as_u64())
        .unwrap_or(0)
}

#[test]
fn sigkill_then_resume_equals_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (full, killed) = (dir.path().join("full"), dir.path().join("killed"));
    let out = daa()
        .args(ARGS)
        .args(["--run-dir", p(&full)])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A kill point after a checkpoint, varied from run to run.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let after = 2 * (1 + nanos as u64 % 8); // 2, 4, ..., 16
    let mut child = daa()
        .args(ARGS)
        .args(["--run-dir", p(&killed)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let t0 = Instant::now();
    while saved_step(&killed) < after && t0.elapsed() < Duration::from_secs(300) {
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap_or_else(|e| panic!("{e}")); // SIGKILL on Unix
    let status = child.wait().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !status.success(),
        "the run finished before it could be killed"
    );
    let at = saved_step(&killed);
    assert!(at >= after && at < 40, "killed after step {at}");

    let out = daa()
        .args(ARGS)
        .args(["--run-dir", p(&killed), "--resume"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    assert_eq!(trace(&full).len(), 40);
    assert_eq!(
        trace(&full),
        trace(&killed),
        "loss traces differ (killed after step {at})"
    );
    for f in [
        "restorer-40.safetensors",
        "diffusion-40.safetensors",
        "optimizer-40.safetensors",
    ] {
        assert!(
            tensors(&full.join(f)) == tensors(&killed.join(f)),
            "{f} differs (killed after step {at})"
        );
    }
}

#[test]
fn ctrl_c_saves_a_checkpoint_and_exits() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let run = dir.path().join("run");
    let child = daa()
        .args([
            "train",
            "--preset",
            "smoke",
            "--steps",
            "400",
            "--checkpoint-every",
            "0",
            "--run-dir",
            p(&run),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    // Wait until training runs (the target inputs are materialised first), then send SIGINT.
    let t0 = Instant::now();
    while !run.join("target_train/input/sail_0.png").exists()
        && t0.elapsed() < Duration::from_secs(120)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(killed.success());
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    let step = saved_step(&run);
    assert!(step > 0 && step < 400, "saved step {step}");
    assert!(run.join(format!("restorer-{step}.safetensors")).exists());
    // It continues from there with the run's saved settings: no preset or flag repeated.
    let out = daa()
        .args([
            "train",
            "--steps",
            &(step + 2).to_string(),
            "--run-dir",
            p(&run),
            "--resume",
        ])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(saved_step(&run), step + 2);
}

/// Waits until a run in `run` trains (its target inputs are written first), then a little more.
fn wait_for_training(run: &Path) {
    let t0 = Instant::now();
    while !run.join("target_train/input/sail_0.png").exists()
        && t0.elapsed() < Duration::from_secs(120)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1500));
}

#[test]
fn sigterm_saves_a_checkpoint_like_ctrl_c() {
    // SLURM, Docker and systemd stop a job with SIGTERM.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let run = dir.path().join("run");
    let child = daa()
        .args([
            "train",
            "--preset",
            "smoke",
            "--steps",
            "400",
            "--checkpoint-every",
            "0",
            "--run-dir",
            p(&run),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    wait_for_training(&run);
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(killed.success());
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    let step = saved_step(&run);
    assert!(step > 0 && step < 400, "saved step {step}");
    assert!(run.join(format!("restorer-{step}.safetensors")).exists());
}

#[test]
fn a_closed_output_pipe_never_kills_training() {
    // `daa train ... 2>&1 | head -0`: both streams go to a pipe nobody reads any more.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let run = dir.path().join("run");
    let (reader, writer) = std::io::pipe().unwrap_or_else(|e| panic!("{e}"));
    drop(reader);
    let status = daa()
        .args([
            "train",
            "--preset",
            "smoke",
            "--steps",
            "4",
            "--run-dir",
            p(&run),
        ])
        .stdout(writer.try_clone().unwrap_or_else(|e| panic!("{e}")))
        .stderr(writer)
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "{status:?}");
    assert_eq!(saved_step(&run), 4);
    assert!(run.join("restorer-4.safetensors").exists());
    assert!(run.join("eval.json").exists());
}
