//! Restormer and Uformer through the `daa` binary: the smoke preset trains them (vanilla and
//! DA, two steps at tiny scale) and `daa restore` uses the checkpoint, its metadata or `--arch`.
//! `--method dann` trains the same way and writes its classifier beside the restorer.

mod common;
use common::{daa, p, stderr};

/// Trains `backbone` with `method` for two steps, then restores an odd-sized image with the
/// checkpoint, once from its metadata and once naming the architecture. Returns the folder
/// (the run is in `run/`).
fn train_and_restore(backbone: &str, method: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let run = d.join("run");
    let out = daa(&[
        "train",
        "--preset",
        "smoke",
        "--backbone",
        backbone,
        "--method",
        method,
        "--steps",
        "2",
        "--run-dir",
        p(&run),
    ]);
    assert!(
        out.status.success(),
        "{backbone} {method}: {}",
        stderr(&out)
    );
    let ckpt = run.join("restorer-2.safetensors");
    assert!(ckpt.is_file(), "{backbone} {method}: no {}", ckpt.display());
    image::RgbImage::from_fn(19, 13, |x, y| {
        image::Rgb([(x * 11) as u8, (y * 17) as u8, 90])
    })
    .save(d.join("in.png"))
    .unwrap_or_else(|e| panic!("{e}"));
    let arch = format!("{backbone}-tiny");
    let (input, output) = (d.join("in.png"), d.join("out.png"));
    for extra in [&[][..], &["--arch", arch.as_str()][..]] {
        let mut args = vec![
            "restore",
            "-i",
            p(&input),
            "-o",
            p(&output),
            "--checkpoint",
            p(&ckpt),
        ];
        args.extend_from_slice(extra);
        let out = daa(&args);
        assert!(
            out.status.success(),
            "{backbone} {extra:?}: {}",
            stderr(&out)
        );
        let img = image::open(d.join("out.png")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((img.width(), img.height()), (19, 13));
    }
    dir
}

#[test]
fn restormer_trains_vanilla_and_da_and_restores() {
    train_and_restore("restormer", "vanilla");
    train_and_restore("restormer", "da");
}

#[test]
fn uformer_trains_vanilla_and_da_and_restores() {
    train_and_restore("uformer", "vanilla");
    train_and_restore("uformer", "da");
}

#[test]
fn dann_trains_through_the_cli_with_its_classifier_and_restores() {
    for backbone in ["unet", "uformer"] {
        let dir = train_and_restore(backbone, "dann");
        let run = dir.path().join("run");
        assert!(run.join("dann-2.safetensors").is_file(), "{backbone}");
        assert!(!run.join("diffusion-2.safetensors").exists(), "{backbone}");
        let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap_or_default();
        assert!(metrics.contains("\"loss_domain\""), "{backbone}: {metrics}");
    }
}
