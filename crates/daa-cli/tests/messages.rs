//! What the `daa` binary says when a run fails or a flag is wrong: a diverged run exits
//! non-zero, negative numbers reach the value check, and eval reports what it measured.

mod common;
use common::{daa, p, stderr};

#[test]
fn a_diverged_run_exits_non_zero_and_names_no_missing_file() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let run = dir.path().join("run");
    let out = daa(&[
        "train",
        "--preset",
        "smoke",
        "--steps",
        "4",
        "--lr",
        "1e30",
        "--run-dir",
        p(&run),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: training diverged") && last.contains("no checkpoint"),
        "{last}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("safetensors"), "{stdout}");
    assert!(!run.join("restorer-best.safetensors").exists());
}

#[test]
fn negative_numbers_are_values_not_unknown_arguments() {
    let out = daa(&["train", "--preset", "smoke", "--steps", "-1"]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(!err.contains("unexpected argument"), "{err}");
    assert!(err.contains("'-1'") && err.contains("--steps"), "{err}");

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = daa(&[
        "train",
        "--preset",
        "smoke",
        "--lr",
        "-1",
        "--run-dir",
        p(&dir.path().join("run")),
    ]);
    let err = stderr(&out);
    assert!(!out.status.success());
    let last = err.lines().last().unwrap_or_default();
    // One setting named, no debug struct and no list of the other settings.
    assert!(
        last.contains("lr (--lr) is -1") && !last.contains('{') && !last.contains("beta1"),
        "{last}"
    );
}

#[test]
fn eval_help_and_json_say_which_degradation_was_used() {
    let out = daa(&["eval", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    let clean_dir = help
        .split("--clean-dir")
        .nth(1)
        .and_then(|s| s.split("--sigma").next())
        .unwrap_or_default();
    assert!(
        clean_dir.contains("target domain") && !clean_dir.contains("degraded with AWGN"),
        "{clean_dir}"
    );

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let run = dir.path().join("run");
    let out = daa(&[
        "train",
        "--preset",
        "smoke",
        "--steps",
        "1",
        "--run-dir",
        p(&run),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ckpt = run.join("restorer-1.safetensors");
    let eval = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "eval",
            "--checkpoint",
            p(&ckpt),
            "--preset",
            "smoke",
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = daa(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    };
    let awgn = eval(&["--sigma", "25"]);
    assert_eq!(awgn["domain"], "awgn", "{awgn}");
    assert_eq!(awgn["sigma"], 25.0, "{awgn}");
    let target = eval(&[]);
    assert_eq!(target["domain"], "target", "{target}");
    assert_ne!(awgn["input_psnr"], target["input_psnr"]);

    let out = daa(&[
        "eval",
        "--checkpoint",
        p(&ckpt),
        "--sigma",
        "25",
        "--domain",
        "source",
    ]);
    assert!(!out.status.success(), "--sigma with --domain is refused");
    let out = daa(&[
        "eval",
        "--checkpoint",
        p(&ckpt),
        "--preset",
        "smoke",
        "--sigma",
        "-5",
    ]);
    let err = stderr(&out);
    assert!(
        !out.status.success() && !err.contains("unexpected argument"),
        "{err}"
    );
}

#[test]
fn bench_checks_every_flag_before_timing_anything() {
    // A bad method after a good one is refused before the good one runs (nothing timed).
    for methods in ["da,nope", "vanilla,,da"] {
        let out = daa(&[
            "bench",
            "--methods",
            methods,
            "--steps",
            "1",
            "--warmup",
            "0",
        ]);
        let err = stderr(&out);
        assert!(!out.status.success(), "{methods}: {err}");
        assert!(
            err.contains("--methods") && err.contains("unknown method"),
            "{err}"
        );
        assert!(out.stdout.is_empty(), "{methods}: timed before refusing");
    }
    let out = daa(&["bench", "--steps", "0"]);
    assert!(!out.status.success() && stderr(&out).contains("--steps"));
}

#[test]
fn zero_threads_is_refused_not_read_as_one() {
    let out = daa(&["-j", "0", "bench", "--steps", "1"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("--threads") && err.contains('0'), "{err}");
    assert!(out.stdout.is_empty(), "timed before refusing");
}

#[test]
fn a_non_finite_learning_rate_is_named_with_its_value() {
    for v in ["nan", "inf"] {
        let out = daa(&["train", "--preset", "smoke", "--steps", "1", "--lr", v]);
        let err = stderr(&out);
        assert!(!out.status.success(), "--lr {v}: {err}");
        assert!(
            err.contains("--lr") && err.to_lowercase().contains(v),
            "{err}"
        );
    }
}

#[test]
fn resume_with_another_preset_is_refused_not_ignored() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let run = dir.path().join("run");
    let first = daa(&[
        "train",
        "--preset",
        "smoke",
        "--steps",
        "1",
        "--run-dir",
        p(&run),
    ]);
    assert!(first.status.success(), "{}", stderr(&first));
    let out = daa(&[
        "train",
        "--resume",
        "--preset",
        "deblur",
        "--steps",
        "2",
        "--run-dir",
        p(&run),
    ]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("--preset deblur") && err.contains("preset smoke"),
        "{err}"
    );
    assert!(!run.join("restorer-2.safetensors").exists());
    // The same preset, or none, continues the run.
    let same = daa(&[
        "train",
        "--resume",
        "--preset",
        "smoke",
        "--steps",
        "2",
        "--run-dir",
        p(&run),
    ]);
    assert!(same.status.success(), "{}", stderr(&same));
}
