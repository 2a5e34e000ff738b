//! The `daa` binary end to end: train a smoke model, restore PNG/JPEG of odd sizes, and fail
//! with one-line errors on bad input.

mod common;
use common::{daa, p, stderr};

use std::path::{Path, PathBuf};

/// Trains the smoke preset for 2 steps and returns the checkpoint.
fn checkpoint(dir: &Path) -> PathBuf {
    let run = dir.join("run");
    let out = daa(&[
        "train",
        "--preset",
        "smoke",
        "--steps",
        "2",
        "--run-dir",
        p(&run),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("restored") && stdout.contains("input"),
        "{stdout}"
    );
    run.join("restorer-2.safetensors")
}

fn odd_image(w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 9) as u8, (y * 4) as u8, 128]))
}

#[test]
fn restores_png_and_jpeg_of_odd_size_and_folders() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let ckpt = checkpoint(d);
    odd_image(37, 29)
        .save(d.join("in.png"))
        .unwrap_or_else(|e| panic!("{e}"));
    odd_image(45, 23)
        .save(d.join("in.jpg"))
        .unwrap_or_else(|e| panic!("{e}"));
    for (src, dst, size) in [
        ("in.png", "out.png", (37, 29)),
        ("in.jpg", "out.jpg", (45, 23)),
    ] {
        let out = daa(&[
            "restore",
            "-i",
            p(&d.join(src)),
            "-o",
            p(&d.join(dst)),
            "--checkpoint",
            p(&ckpt),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let img = image::open(d.join(dst)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((img.width(), img.height()), size);
    }
    // Tiled inference gives an image of the same size too.
    let out = daa(&[
        "restore",
        "-i",
        p(&d.join("in.png")),
        "-o",
        p(&d.join("tiled.png")),
        "--checkpoint",
        p(&ckpt),
        "--tile",
        "16",
        "--overlap",
        "4",
        "--tile-pad",
        "4",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let img = image::open(d.join("tiled.png")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((img.width(), img.height()), (37, 29));

    // A folder with one corrupt file: the others are restored, the exit status says so.
    let folder = d.join("folder");
    std::fs::create_dir_all(&folder).unwrap_or_else(|e| panic!("{e}"));
    odd_image(20, 20)
        .save(folder.join("a.png"))
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(folder.join("broken.png"), b"not a png").unwrap_or_else(|e| panic!("{e}"));
    let out = daa(&[
        "restore",
        "-i",
        p(&folder),
        "-o",
        p(&d.join("restored")),
        "--checkpoint",
        p(&ckpt),
    ]);
    assert!(!out.status.success());
    assert!(d.join("restored/a.png").exists());
    assert!(stderr(&out).contains("broken.png"), "{}", stderr(&out));
}

#[test]
fn bad_input_gives_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let ckpt = checkpoint(d);
    std::fs::write(d.join("corrupt.jpg"), b"\xff\xd8\xff garbage")
        .unwrap_or_else(|e| panic!("{e}"));
    let out = daa(&[
        "restore",
        "-i",
        p(&d.join("corrupt.jpg")),
        "-o",
        p(&d.join("o.png")),
        "--checkpoint",
        p(&ckpt),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("corrupt.jpg"),
        "{err}"
    );
    assert!(!d.join("o.png").exists());

    // A checkpoint that is not one.
    let out = daa(&[
        "restore",
        "-i",
        p(&d.join("corrupt.jpg")),
        "-o",
        p(&d.join("o.png")),
        "--checkpoint",
        p(&d.join("corrupt.jpg")),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));

    // A config file with an unknown key.
    std::fs::write(d.join("cfg.json"), r#"{"preset": "x", "bogus": 1}"#)
        .unwrap_or_else(|e| panic!("{e}"));
    let out = daa(&[
        "train",
        "--config",
        p(&d.join("cfg.json")),
        "--run-dir",
        p(&d.join("r")),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cfg.json"), "{}", stderr(&out));

    // Out-of-range values.
    let out = daa(&[
        "train",
        "--preset",
        "smoke",
        "--patch-size",
        "30",
        "--run-dir",
        p(&d.join("r")),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("patch_size"), "{}", stderr(&out));
}

#[test]
fn print_config_shows_the_resolved_preset() {
    let out = daa(&[
        "train",
        "--preset",
        "denoise",
        "--steps",
        "7",
        "--print-config",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["steps"], 7);
    assert_eq!(v["backbone"]["kind"], "unet");
}

/// Tensors under their official names without daa metadata (what another converter would
/// write) restore with `--arch`; a 1x1 image restores too (replicate-padded inside).
#[test]
fn official_names_without_metadata_load_with_arch() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../daa-backbones/tests/data/parity_unet.safetensors");
    let all = candle_core::safetensors::load(&fixture, &candle_core::Device::Cpu)
        .unwrap_or_else(|e| panic!("{e}"));
    let restorer: std::collections::HashMap<String, candle_core::Tensor> = all
        .into_iter()
        .filter_map(|(k, t)| Some((k.strip_prefix("restorer.")?.to_string(), t)))
        .collect();
    let ckpt = d.join("converted.safetensors");
    candle_core::safetensors::save(&restorer, &ckpt).unwrap_or_else(|e| panic!("{e}"));
    image::RgbImage::from_pixel(1, 1, image::Rgb([200, 10, 90]))
        .save(d.join("one.png"))
        .unwrap_or_else(|e| panic!("{e}"));

    let out = daa(&[
        "restore",
        "-i",
        p(&d.join("one.png")),
        "-o",
        p(&d.join("o.png")),
        "--checkpoint",
        p(&ckpt),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--arch"), "{}", stderr(&out));

    let out = daa(&[
        "restore",
        "-i",
        p(&d.join("one.png")),
        "-o",
        p(&d.join("o.png")),
        "--checkpoint",
        p(&ckpt),
        "--arch",
        "unet-tiny",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let img = image::open(d.join("o.png")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((img.width(), img.height()), (1, 1));

    let out = daa(&[
        "restore",
        "-i",
        p(&d.join("one.png")),
        "-o",
        p(&d.join("o.png")),
        "--checkpoint",
        p(&ckpt),
        "--arch",
        "unet-paper",
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the wrong architecture is an error"
    );
    // Caught by the size check before loading (or, for a near size, by the missing tensors).
    let err = stderr(&out);
    assert!(
        err.contains("does not match these weights") || err.contains("tensors missing"),
        "{err}"
    );
}

#[test]
fn samples_sheet_has_three_rows_and_columns() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = dir.path().join("sheet.png");
    let o = daa(&["samples", "-o", p(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let img = image::open(&out).unwrap_or_else(|e| panic!("{e}"));
    // The held-out monarch photo is 320x213.
    assert_eq!((img.width(), img.height()), (960, 639));
}

#[test]
fn oracle_training_and_json_evaluation_on_both_domains() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let run = dir.path().join("oracle");
    let out = daa(&[
        "train",
        "--preset",
        "smoke",
        "--steps",
        "2",
        "--oracle",
        "--run-dir",
        p(&run),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap_or_default())
            .unwrap_or_default();
    assert_eq!(cfg["method"], "vanilla");
    assert_eq!(
        cfg["train_data"]["degradation"]["kind"], "camera",
        "trained on target pairs"
    );
    let ckpt = run.join("restorer-2.safetensors");
    let mut inputs = Vec::new();
    for domain in ["target", "source"] {
        let out = daa(&[
            "eval",
            "--checkpoint",
            p(&ckpt),
            "--preset",
            "smoke",
            "--domain",
            domain,
            "--json",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        assert_eq!(v["domain"], domain);
        assert!(v["psnr"].as_f64().is_some_and(f64::is_finite));
        inputs.push(v["input_psnr"].as_f64().unwrap_or(0.0));
    }
    assert_ne!(inputs[0], inputs[1], "the two domains degrade differently");
}

#[test]
fn data_prepare_flattens_a_layout_for_eval() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // SIDD validation blocks (the .mat fixture of daa-degrade) become PNG pairs.
    let sidd = Path::new(env!("CARGO_MANIFEST_DIR")).join("../daa-degrade/tests/data/sidd_val");
    let out_dir = dir.path().join("sidd");
    let out = daa(&[
        "data",
        "prepare",
        "--layout",
        "sidd-val",
        "--root",
        p(&sidd),
        "--out",
        p(&out_dir),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    for side in ["input", "target"] {
        let n = std::fs::read_dir(out_dir.join(side))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(n, 6, "{side}");
    }
    let img = image::open(out_dir.join("target/01_02.png")).map(|i| i.to_rgb8());
    assert!(img
        .is_ok_and(|i| i.dimensions() == (12, 16) && i.get_pixel(4, 3).0[1] == 12 + 21 + 12 + 50));
    // The prepared pairs serve as a training run's held-out set.
    let run = dir.path().join("run");
    let trained = daa(&[
        "train",
        "--preset",
        "smoke",
        "--steps",
        "1",
        "--run-dir",
        p(&run),
        "--test-input",
        p(&out_dir.join("input")),
        "--test-target",
        p(&out_dir.join("target")),
    ]);
    assert!(trained.status.success(), "{}", stderr(&trained));
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap_or_default())
            .unwrap_or_default();
    assert!(
        cfg["eval"]["data"]["input_dir"]
            .as_str()
            .is_some_and(|d| d.ends_with("input")),
        "{cfg}"
    );
    let report = std::fs::read_to_string(run.join("eval.md")).unwrap_or_default();
    assert!(report.contains("01_02"), "{report}");
    // Preparing into a folder that is not empty is refused; a wrong split names the layout.
    let again = daa(&[
        "data",
        "prepare",
        "--layout",
        "sidd-val",
        "--root",
        p(&sidd),
        "--out",
        p(&out_dir),
    ]);
    assert!(!again.status.success() && stderr(&again).contains("not empty"));
    let train = daa(&[
        "data",
        "prepare",
        "--layout",
        "sidd-val",
        "--split",
        "train",
        "--root",
        p(&sidd),
        "--out",
        p(&dir.path().join("x")),
    ]);
    assert!(!train.status.success() && stderr(&train).contains("no train split"));
    // A root that does not exist is named as given, not as a sub-folder of it.
    let missing = dir.path().join("nonexist");
    let none = daa(&[
        "data",
        "prepare",
        "--layout",
        "sidd-medium",
        "--root",
        p(&missing),
        "--out",
        p(&dir.path().join("y")),
    ]);
    let err = stderr(&none);
    assert!(
        !none.status.success() && err.contains("does not exist"),
        "{err}"
    );
    assert!(!err.contains("Data"), "{err}");
}

#[test]
fn held_out_images_too_small_for_ssim_are_refused_before_training() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for side in ["input", "target"] {
        let d = dir.path().join(side);
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
        odd_image(9, 30)
            .save(d.join("a.png"))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let run = dir.path().join("run");
    let out = daa(&[
        "train",
        "--preset",
        "smoke",
        "--steps",
        "2",
        "--run-dir",
        p(&run),
        "--test-input",
        p(&dir.path().join("input")),
        "--test-target",
        p(&dir.path().join("target")),
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("at least 11x11") && err.contains("9x30"),
        "{err}"
    );
    assert!(!run.join("restorer-2.safetensors").exists(), "no step ran");
}

#[test]
fn threads_flag_sets_the_tensor_thread_count() {
    let out = daa(&[
        "-j",
        "1",
        "bench",
        "--methods",
        "vanilla",
        "--steps",
        "1",
        "--warmup",
        "0",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(line.contains("\"threads\":1"), "{line}");
}
