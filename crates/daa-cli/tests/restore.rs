//! `daa restore` never overwrites what it reads, checks its outputs before any work, keeps
//! alpha and 16 bits, and refuses checkpoints that would restore garbage or exhaust memory.

mod common;
use common::{daa, p, stderr};

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

/// A run folder of the smoke preset trained for 2 steps, shared by the tests of this file.
fn run_dir() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let run = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("restore-tests-{}", std::process::id()))
            .join("run");
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
        run
    })
}

fn ckpt() -> PathBuf {
    run_dir().join("restorer-2.safetensors")
}

fn restore(input: &Path, output: &Path, extra: &[&str]) -> Output {
    let ck = ckpt();
    let mut args = vec![
        "restore",
        "-i",
        p(input),
        "-o",
        p(output),
        "--checkpoint",
        p(&ck),
    ];
    args.extend_from_slice(extra);
    daa(&args)
}

fn write_rgb(path: &Path, w: u32, h: u32) {
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 9) as u8, (y * 5) as u8, 90]))
        .save(path)
        .unwrap_or_else(|e| panic!("{path:?}: {e}"));
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn restore_never_overwrites_its_input() {
    let dir = tmp();
    let d = dir.path();
    write_rgb(&d.join("x.png"), 20, 16);
    let before = std::fs::read(d.join("x.png")).unwrap_or_else(|e| panic!("{e}"));
    for out_path in [d.join("x.png"), d.join("sub/../x.png")] {
        std::fs::create_dir_all(d.join("sub")).unwrap_or_else(|e| panic!("{e}"));
        let out = restore(&d.join("x.png"), &out_path, &[]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("is the input"), "{}", stderr(&out));
    }
    assert_eq!(std::fs::read(d.join("x.png")).ok(), Some(before.clone()));

    // A folder onto itself, however spelled, is refused; a subfolder is fine (only the
    // folder's own files are read, so outputs are never restored again).
    let folder = d.join("in");
    std::fs::create_dir_all(&folder).unwrap_or_else(|e| panic!("{e}"));
    write_rgb(&folder.join("a.png"), 20, 16);
    for out_dir in [folder.clone(), folder.join("."), d.join("sub/../in")] {
        let out = restore(&folder, &out_dir, &[]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("input folder"), "{}", stderr(&out));
    }
    let out = restore(&folder, &folder.join("restored"), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(folder.join("restored/a.png").is_file());
}

#[test]
fn name_collisions_are_refused_before_any_work_and_ext_suffix_avoid_them() {
    let dir = tmp();
    let d = dir.path();
    let folder = d.join("in");
    std::fs::create_dir_all(&folder).unwrap_or_else(|e| panic!("{e}"));
    for ext in ["png", "jpg", "bmp", "tiff", "webp"] {
        write_rgb(&folder.join(format!("good.{ext}")), 20, 16);
    }
    let out = restore(&folder, &d.join("out"), &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("good.png") && err.contains("--ext auto"),
        "{err}"
    );
    assert!(
        !d.join("out").exists(),
        "nothing is written when names collide"
    );

    let out = restore(
        &folder,
        &d.join("out"),
        &["--ext", "auto", "--suffix", "restored"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    for ext in ["png", "jpg", "bmp", "tiff", "webp"] {
        let f = d.join("out").join(format!("good_restored.{ext}"));
        let img = image::open(&f).unwrap_or_else(|e| panic!("{f:?}: {e}"));
        assert_eq!((img.width(), img.height()), (20, 16));
    }

    // A suffix that is a path is refused before anything is read or written.
    for bad in ["../../x", "a/b", ""] {
        let out = restore(&folder, &d.join("out2"), &["--suffix", bad]);
        assert!(!out.status.success(), "--suffix {bad:?} was accepted");
        assert!(stderr(&out).contains("--suffix"), "{}", stderr(&out));
        assert!(
            !d.join("out2").exists(),
            "--suffix {bad:?}: nothing is written"
        );
    }
}

#[cfg(unix)]
#[test]
fn broken_symlinks_are_reported_and_counted() {
    let dir = tmp();
    let d = dir.path();
    let folder = d.join("in");
    std::fs::create_dir_all(&folder).unwrap_or_else(|e| panic!("{e}"));
    write_rgb(&folder.join("a.png"), 20, 16);
    std::os::unix::fs::symlink(d.join("gone.png"), folder.join("b.png"))
        .unwrap_or_else(|e| panic!("{e}"));
    let out = restore(&folder, &d.join("out"), &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("b.png") && err.contains("broken symlink"),
        "{err}"
    );
    assert!(err.contains("restored 1 of 2"), "{err}");
    assert!(d.join("out/a.png").is_file());
}

#[test]
fn outputs_are_checked_before_the_network_loads() {
    let dir = tmp();
    let d = dir.path();
    write_rgb(&d.join("x.png"), 20, 16);
    // The checkpoint does not exist: an output error must come first.
    let missing = d.join("no-checkpoint.safetensors");
    for (out_path, says) in [
        (d.join("nonexist/out.png"), "does not exist"),
        (d.join("out.xyz"), "extension"),
        (d.join("noext"), "extension"),
    ] {
        let out = daa(&[
            "restore",
            "-i",
            p(&d.join("x.png")),
            "-o",
            p(&out_path),
            "--checkpoint",
            p(&missing),
        ]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
        assert!(!stderr(&out).contains("no-checkpoint"), "{}", stderr(&out));
    }
}

#[test]
fn output_names_up_to_255_bytes_are_written() {
    let dir = tmp();
    let d = dir.path();
    write_rgb(&d.join("x.png"), 20, 16);
    for len in [245, 251, 255] {
        let name = format!("{}.png", "a".repeat(len - 4));
        let out = restore(&d.join("x.png"), &d.join(&name), &[]);
        assert!(out.status.success(), "{len}: {}", stderr(&out));
        assert!(d.join(&name).is_file());
    }
    let leftovers: Vec<_> = std::fs::read_dir(d)
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn alpha_and_16_bits_are_kept() {
    let dir = tmp();
    let d = dir.path();
    let rgba = image::RgbaImage::from_fn(24, 20, |x, y| {
        image::Rgba([(x * 9) as u8, (y * 5) as u8, 90, (x * 10 + y) as u8])
    });
    rgba.save(d.join("a.png")).unwrap_or_else(|e| panic!("{e}"));
    let deep: image::ImageBuffer<image::Rgb<u16>, Vec<u16>> =
        image::ImageBuffer::from_fn(24, 20, |x, y| {
            image::Rgb([(x * 2000) as u16, (y * 3001 + 7) as u16, 40_001])
        });
    deep.save(d.join("d.png")).unwrap_or_else(|e| panic!("{e}"));

    let out = restore(&d.join("a.png"), &d.join("a_out.png"), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let back = image::open(d.join("a_out.png")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back.color(), image::ColorType::Rgba8);
    let alpha: Vec<u8> = back.to_rgba8().pixels().map(|p| p.0[3]).collect();
    let want: Vec<u8> = rgba.pixels().map(|p| p.0[3]).collect();
    assert_eq!(alpha, want, "alpha is carried through unchanged");

    let out = restore(&d.join("d.png"), &d.join("d_out.png"), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let back = image::open(d.join("d_out.png")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back.color(), image::ColorType::Rgb16);
    // 16-bit output has values that are not multiples of 257 (a widened 8-bit image's are).
    let v = back.to_rgb16();
    assert!(v.pixels().flat_map(|p| p.0).any(|c| c % 257 != 0));
}

#[test]
fn tiles_too_small_for_the_network_are_refused() {
    let dir = tmp();
    let d = dir.path();
    write_rgb(&d.join("x.png"), 40, 30);
    let out = restore(&d.join("x.png"), &d.join("o.png"), &["--tile", "1"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("too small"), "{}", stderr(&out));
    assert!(!d.join("o.png").exists());
    // A budget too small for any useful tile still gives the smallest valid tile, and a
    // budget that is not a size is refused.
    let out = restore(&d.join("x.png"), &d.join("o.png"), &["--max-memory", "1K"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = restore(
        &d.join("x.png"),
        &d.join("o.png"),
        &["--max-memory", "lots"],
    );
    assert!(!out.status.success());
    // Absurd tiling values are refused by the parser (they overflowed the tiling arithmetic,
    // a panic in debug builds), and the largest accepted ones still restore.
    for flag in ["--tile", "--overlap", "--tile-pad"] {
        let out = restore(
            &d.join("x.png"),
            &d.join("o.png"),
            &[flag, "18446744073709551615"],
        );
        assert!(!out.status.success());
        assert!(stderr(&out).contains("allowed"), "{}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    }
    let out = restore(
        &d.join("x.png"),
        &d.join("o.png"),
        &["--tile", "1048576", "--tile-pad", "1000000"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let dir = tmp();
    let d = dir.path();
    write_rgb(&d.join("x.png"), 20, 16);
    let ck = ckpt();
    let out = daa(&[
        "-v",
        "restore",
        "-i",
        p(&d.join("x.png")),
        "-o",
        p(&d.join("o.png")),
        "--checkpoint",
        p(&ck),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("INFO"), "the info log is there: {err}");
    assert!(!err.contains('\x1b'), "no ANSI escape codes: {err:?}");
}

/// The safetensors header (JSON) and data of `path`.
fn read_st(path: &Path) -> (serde_json::Value, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{e}"));
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default()) as usize;
    let header = serde_json::from_slice(&bytes[8..8 + n]).unwrap_or_else(|e| panic!("{e}"));
    (header, bytes[8 + n..].to_vec())
}

fn write_st(path: &Path, header: &serde_json::Value, data: &[u8]) {
    let json = serde_json::to_vec(header).unwrap_or_else(|e| panic!("{e}"));
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out.extend_from_slice(data);
    std::fs::write(path, out).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn bad_checkpoints_are_refused_with_what_is_wrong() {
    let dir = tmp();
    let d = dir.path();
    write_rgb(&d.join("x.png"), 20, 16);
    let try_ck = |ck: &Path| {
        daa(&[
            "restore",
            "-i",
            p(&d.join("x.png")),
            "-o",
            p(&d.join("o.png")),
            "--checkpoint",
            p(ck),
        ])
    };
    let (header, data) = read_st(&ckpt());
    let first = header
        .as_object()
        .and_then(|o| o.keys().find(|k| *k != "__metadata__").cloned())
        .unwrap_or_default();

    // NaN in one weight.
    let mut nan = data.clone();
    let start = header[&first]["data_offsets"][0].as_u64().unwrap_or(0) as usize;
    nan[start..start + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    write_st(&d.join("nan.safetensors"), &header, &nan);
    let out = try_ck(&d.join("nan.safetensors"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("non-finite") && stderr(&out).contains(&first),
        "{}",
        stderr(&out)
    );
    assert!(!d.join("o.png").exists());

    // Integer weights (same byte size) are not cast silently.
    let mut ints = header.clone();
    ints[&first]["dtype"] = serde_json::json!("I32");
    write_st(&d.join("int.safetensors"), &ints, &data);
    let out = try_ck(&d.join("int.safetensors"));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("I32"), "{}", stderr(&out));

    // Metadata asking for an absurd network is refused at once, with the estimate.
    let mut huge = header.clone();
    huge["__metadata__"]["daa.backbone"] = serde_json::json!(
        r#"{"kind":"unet","in_channels":3,"out_channels":3,"width":100000,"depth":30,"slope":0.2}"#
    );
    write_st(&d.join("huge.safetensors"), &huge, &data);
    let t0 = std::time::Instant::now();
    let out = try_ck(&d.join("huge.safetensors"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("parameters") && stderr(&out).contains("GiB"),
        "{}",
        stderr(&out)
    );
    assert!(t0.elapsed().as_secs() < 60, "refused before allocating");

    // The other files of a run folder say what they are.
    for (file, says) in [
        ("diffusion-2.safetensors", "diffusion"),
        ("optimizer-2.safetensors", "optimizer"),
    ] {
        let out = try_ck(&run_dir().join(file));
        assert!(!out.status.success());
        assert!(stderr(&out).contains(says), "{file}: {}", stderr(&out));
    }
}

#[test]
fn sidd_medium_prepares_without_a_split_flag() {
    let dir = tmp();
    let d = dir.path();
    let scene = d.join("SIDD_Medium_Srgb/Data/0001_001_S6_00100_00060_3200_L");
    std::fs::create_dir_all(&scene).unwrap_or_else(|e| panic!("{e}"));
    write_rgb(&scene.join("0001_NOISY_SRGB_010.PNG"), 16, 16);
    write_rgb(&scene.join("0001_GT_SRGB_010.PNG"), 16, 16);
    let out = daa(&[
        "data",
        "prepare",
        "--layout",
        "sidd-medium",
        "--root",
        p(&d.join("SIDD_Medium_Srgb")),
        "--out",
        p(&d.join("prepared")),
        "--copy",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        d.join("prepared/input")
            .read_dir()
            .map(|r| r.count())
            .unwrap_or(0)
            == 1
    );
}
