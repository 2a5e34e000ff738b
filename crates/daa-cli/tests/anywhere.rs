//! The `daa` binary works wherever it is: a copy in an unrelated folder, run from another
//! unrelated folder, trains the smoke preset, writes the samples sheet and runs the
//! condition-noise experiment on the photos compiled into it, and no preset names a path of
//! the checkout it was built in.

use std::path::Path;
use std::process::{Command, Output};

fn run(bin: &Path, cwd: &Path, args: &[&str]) -> Output {
    // A freshly copied binary can be "busy" (ETXTBSY) for a moment: another test thread that
    // forked while the copy's file was open for writing holds that descriptor until it execs.
    for attempt in 0.. {
        match Command::new(bin)
            .args(args)
            .current_dir(cwd)
            .env_remove("RUST_LOG")
            .output()
        {
            Ok(out) => return out,
            Err(e) if e.raw_os_error() == Some(26) && attempt < 50 => {
                std::thread::sleep(std::time::Duration::from_millis(100))
            }
            Err(e) => panic!("running {bin:?}: {e}"),
        }
    }
    unreachable!()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn presets_name_no_path_of_the_build_checkout() {
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|e| panic!("{e}"));
    let cwd = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for preset in daa_train::PRESETS {
        let out = run(
            Path::new(env!("CARGO_BIN_EXE_daa")),
            cwd.path(),
            &["train", "--preset", preset, "--print-config"],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let json = String::from_utf8_lossy(&out.stdout);
        assert!(
            !json.contains(checkout.to_string_lossy().as_ref()) && !json.contains("datasets/"),
            "preset {preset} names a build-machine path: {json}"
        );
        assert!(json.contains("embedded:photos/"), "{json}");
    }
}

#[test]
fn a_copied_binary_trains_and_writes_samples_from_an_unrelated_folder() {
    let home = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cwd = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let bin = home.path().join("daa");
    std::fs::copy(env!("CARGO_BIN_EXE_daa"), &bin).unwrap_or_else(|e| panic!("{e}"));

    let out = run(
        &bin,
        cwd.path(),
        &[
            "train",
            "--preset",
            "smoke",
            "--steps",
            "1",
            "--run-dir",
            "run",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(cwd.path().join("run/restorer-1.safetensors").is_file());

    // The default output lands in the current folder, not in a docs/ that may not exist.
    let out = run(&bin, cwd.path(), &["samples"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let sheet = image::open(cwd.path().join("samples.jpg")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sheet.width() % 3, 0);

    let out = run(
        &bin,
        cwd.path(),
        &[
            "experiment",
            "condition-noise",
            "--sigmas",
            "0,50",
            "--steps",
            "1",
            "--batch-size",
            "1",
            "--patch-size",
            "16",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    // A folder of the user's own photos replaces the embedded ones; a missing one is named.
    let out = run(
        &bin,
        cwd.path(),
        &[
            "experiment",
            "condition-noise",
            "--photos",
            "nowhere",
            "--steps",
            "1",
        ],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("nowhere"), "{}", stderr(&out));
}
