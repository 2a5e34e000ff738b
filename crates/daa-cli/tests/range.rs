//! `daa train --range signed` records the range in its checkpoints, and `daa eval` and
//! `daa restore` apply it from the checkpoint's metadata (`--range` overrides it).

mod common;
use common::p;

use std::path::Path;
use std::process::{Command, Output};

fn daa(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_daa"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap_or_else(|e| panic!("running daa: {e}"));
    assert!(
        out.status.success(),
        "daa {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)))
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

#[test]
fn eval_and_restore_apply_the_range_a_checkpoint_was_trained_in() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let run = d.join("run");
    daa(&[
        "train",
        "--preset",
        "smoke",
        "--steps",
        "2",
        "--range",
        "signed",
        "--run-dir",
        p(&run),
    ]);
    assert_eq!(json(&read(&run.join("config.json")))["range"], "signed");

    // The run's own final evaluation is reproduced from the checkpoint alone.
    let ck = run.join("restorer-2.safetensors");
    let trained = json(&read(&run.join("eval.json")))["mean_restored"]["psnr"].as_f64();
    let eval = |extra: &[&str]| -> Option<f64> {
        let mut args = vec![
            "eval",
            "--checkpoint",
            p(&ck),
            "--preset",
            "smoke",
            "--json",
        ];
        args.extend_from_slice(extra);
        json(&daa(&args).stdout)["psnr"].as_f64()
    };
    let from_metadata = eval(&[]);
    assert!(
        trained.is_some() && from_metadata == trained,
        "{from_metadata:?} vs {trained:?}"
    );
    assert_ne!(eval(&["--range", "unit"]), trained);

    let img = d.join("x.png");
    image::RgbImage::from_fn(40, 24, |x, y| {
        image::Rgb([(x * 6) as u8, (y * 9) as u8, ((x + y) * 3) as u8])
    })
    .save(&img)
    .unwrap_or_else(|e| panic!("{e}"));
    let restore = |name: &str, extra: &[&str]| -> Vec<u8> {
        let out = d.join(name);
        let mut args = vec![
            "restore",
            "-i",
            p(&img),
            "-o",
            p(&out),
            "--checkpoint",
            p(&ck),
        ];
        args.extend_from_slice(extra);
        daa(&args);
        image::open(&out)
            .unwrap_or_else(|e| panic!("{out:?}: {e}"))
            .to_rgb8()
            .into_raw()
    };
    let default = restore("default.png", &[]);
    assert_eq!(default, restore("signed.png", &["--range", "signed"]));
    assert_ne!(default, restore("unit.png", &["--range", "unit"]));
}
