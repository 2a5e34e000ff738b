//! End-to-end runs of the engine on tiny presets: learning, reproducibility, checkpoints, resume.

use std::path::Path;

use candle_core::Device;
use daa_degrade::Degradation;
use daa_train::{load_restorer, train, DataSpec, Method, TargetSpec, TrainConfig};

fn smoke(steps: usize) -> TrainConfig {
    TrainConfig {
        steps,
        ..TrainConfig::smoke()
    }
}

fn run(cfg: &TrainConfig, dir: &Path, resume: bool) -> daa_train::TrainSummary {
    train(cfg, dir, &Device::Cpu, resume, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"))
}

/// The checkpoint's tensors by name (the file's metadata order may vary between writes).
fn weights(path: &Path) -> Vec<(String, Vec<f32>)> {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let mut out: Vec<(String, Vec<f32>)> = tensors
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
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn same_weights(a: &Path, b: &Path) -> bool {
    weights(a) == weights(b)
}

fn losses(dir: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["loss_total"].as_f64())
        .collect()
}

#[test]
fn run_folder_holds_config_metrics_checkpoints_and_eval() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let s = run(&smoke(4), dir.path(), false);
    for f in [
        "config.json",
        "metrics.jsonl",
        "train_state.json",
        "restorer-4.safetensors",
        "restorer-2.safetensors",
        "diffusion-4.safetensors",
        "optimizer-4.safetensors",
        "restorer-best.safetensors",
        "eval.json",
        "eval.md",
        "target_train/input/astronaut_0.png",
    ] {
        assert!(dir.path().join(f).exists(), "missing {f}");
    }
    assert_eq!(losses(dir.path()).len(), 4);
    assert!(losses(dir.path()).iter().all(|l| l.is_finite()));
    assert_eq!(s.final_eval.images.len(), 4);
    let saved = std::fs::read_to_string(dir.path().join("config.json")).unwrap_or_default();
    assert_eq!(
        TrainConfig::from_json(&saved).unwrap_or_else(|e| panic!("{e}")),
        smoke(4)
    );
    let (_, net, _) =
        load_restorer(&s.checkpoint, &Device::Cpu, None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(net.size_multiple(), 4);
    // An existing run is not overwritten without --resume.
    assert!(train(&smoke(4), dir.path(), &Device::Cpu, false, &mut |_| {}).is_err());
}

#[test]
fn the_seed_reproduces_a_run_and_another_seed_does_not() {
    let (a, b, c) = (
        tempfile::tempdir(),
        tempfile::tempdir(),
        tempfile::tempdir(),
    );
    let (a, b, c) = (
        a.unwrap_or_else(|e| panic!("{e}")),
        b.unwrap_or_else(|e| panic!("{e}")),
        c.unwrap_or_else(|e| panic!("{e}")),
    );
    run(&smoke(3), a.path(), false);
    run(&smoke(3), b.path(), false);
    run(
        &TrainConfig {
            seed: 1,
            ..smoke(3)
        },
        c.path(),
        false,
    );
    assert!(same_weights(
        &a.path().join("restorer-3.safetensors"),
        &b.path().join("restorer-3.safetensors")
    ));
    assert!(same_weights(
        &a.path().join("diffusion-3.safetensors"),
        &b.path().join("diffusion-3.safetensors")
    ));
    assert_eq!(losses(a.path()), losses(b.path()));
    assert_ne!(losses(a.path()), losses(c.path()));
    // The vanilla path reproduces too.
    let (d, e) = (tempfile::tempdir(), tempfile::tempdir());
    let (d, e) = (
        d.unwrap_or_else(|e| panic!("{e}")),
        e.unwrap_or_else(|e| panic!("{e}")),
    );
    let vanilla = TrainConfig {
        method: Method::Vanilla,
        ..smoke(3)
    };
    run(&vanilla, d.path(), false);
    run(&vanilla, e.path(), false);
    assert_eq!(losses(d.path()), losses(e.path()));
    assert!(!d.path().join("diffusion-3.safetensors").exists());
}

#[test]
fn resuming_from_a_checkpoint_equals_an_uninterrupted_run() {
    let (full, part) = (tempfile::tempdir(), tempfile::tempdir());
    let (full, part) = (
        full.unwrap_or_else(|e| panic!("{e}")),
        part.unwrap_or_else(|e| panic!("{e}")),
    );
    let cfg = TrainConfig {
        checkpoint_every: 2,
        keep_last: 5,
        ..smoke(4)
    };
    run(&cfg, full.path(), false);
    run(
        &TrainConfig {
            steps: 2,
            ..cfg.clone()
        },
        part.path(),
        false,
    );
    run(&cfg, part.path(), true);
    assert!(same_weights(
        &full.path().join("restorer-4.safetensors"),
        &part.path().join("restorer-4.safetensors")
    ));
    assert!(same_weights(
        &full.path().join("diffusion-4.safetensors"),
        &part.path().join("diffusion-4.safetensors")
    ));
    assert_eq!(losses(full.path()), losses(part.path()));
}

#[test]
fn the_ema_is_saved_and_resumed_from_its_own_file() {
    let (full, part) = (tempfile::tempdir(), tempfile::tempdir());
    let (full, part) = (
        full.unwrap_or_else(|e| panic!("{e}")),
        part.unwrap_or_else(|e| panic!("{e}")),
    );
    let cfg = TrainConfig {
        checkpoint_every: 2,
        keep_last: 5,
        ema_decay: 0.9,
        method: Method::Vanilla,
        ..smoke(4)
    };
    run(&cfg, full.path(), false);
    run(
        &TrainConfig {
            steps: 2,
            ..cfg.clone()
        },
        part.path(),
        false,
    );
    run(&cfg, part.path(), true);
    let (a, b) = (
        full.path().join("restorer-ema-4.safetensors"),
        part.path().join("restorer-ema-4.safetensors"),
    );
    assert!(same_weights(&a, &b));
    assert!(
        !same_weights(&a, &full.path().join("restorer-4.safetensors")),
        "the EMA differs from the raw weights"
    );
}

#[test]
fn a_short_vanilla_run_learns_to_denoise() {
    // 150 steps of the tiny U-Net on AWGN beat the noisy input on the held-out photos.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut cfg = TrainConfig {
        method: Method::Vanilla,
        steps: 150,
        batch_size: 8,
        checkpoint_every: 0,
        ..TrainConfig::smoke()
    };
    cfg.eval.data = match &cfg.eval.data {
        DataSpec::Synthetic { clean_dir, .. } => DataSpec::Synthetic {
            clean_dir: clean_dir.clone(),
            degradation: Degradation::denoise_source(),
        },
        other => other.clone(),
    };
    let s = run(&cfg, dir.path(), false);
    let r = &s.final_eval;
    assert!(
        r.mean_restored.psnr > r.mean_input.psnr + 0.5,
        "{}",
        r.to_markdown()
    );
}

fn column(dir: &Path, key: &str) -> Vec<f64> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v[key].as_f64())
        .collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

#[test]
fn a_tiny_da_run_has_finite_decreasing_loss_parts() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cfg = TrainConfig {
        steps: 40,
        batch_size: 4,
        checkpoint_every: 0,
        ..TrainConfig::smoke()
    };
    run(&cfg, dir.path(), false);
    for key in [
        "loss_total",
        "loss_rec",
        "loss_diff_pos",
        "loss_diff_neg",
        "loss_contrastive",
        "loss_noise",
        "lambda",
    ] {
        let v = column(dir.path(), key);
        assert_eq!(v.len(), 40, "{key}");
        assert!(v.iter().all(|x| x.is_finite()), "{key}: {v:?}");
    }
    let lambda = column(dir.path(), "lambda");
    assert_eq!(lambda[0], 0.0);
    assert!(lambda[39] > 0.19);
    for key in ["loss_rec", "loss_diff_pos", "loss_noise"] {
        let v = column(dir.path(), key);
        assert!(
            mean(&v[30..]) < mean(&v[..10]),
            "{key} did not decrease: {v:?}"
        );
    }
}

#[test]
fn training_never_reads_target_ground_truth() {
    // Run A materialises a synthetic target domain (degraded inputs + clean copies). Run B
    // trains on a copy of A's degraded inputs alone, with no clean file anywhere: identical.
    let (a, b, t) = (
        tempfile::tempdir(),
        tempfile::tempdir(),
        tempfile::tempdir(),
    );
    let (a, b, t) = (
        a.unwrap_or_else(|e| panic!("{e}")),
        b.unwrap_or_else(|e| panic!("{e}")),
        t.unwrap_or_else(|e| panic!("{e}")),
    );
    let cfg = TrainConfig {
        steps: 3,
        ..TrainConfig::smoke()
    };
    run(&cfg, a.path(), false);
    let inputs = a.path().join("target_train/input");
    assert!(a.path().join("target_train/gt").exists());
    for e in std::fs::read_dir(&inputs)
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
    {
        std::fs::copy(e.path(), t.path().join(e.file_name())).unwrap_or_else(|e| panic!("{e}"));
    }
    let mut cfg_b = cfg.clone();
    cfg_b.adaptation.target = TargetSpec::Folder {
        dir: t.path().to_path_buf(),
    };
    run(&cfg_b, b.path(), false);
    assert!(!b.path().join("target_train").exists());
    assert_eq!(losses(a.path()), losses(b.path()));
    assert!(same_weights(
        &a.path().join("restorer-3.safetensors"),
        &b.path().join("restorer-3.safetensors")
    ));
}

#[test]
fn an_unwritable_run_folder_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("a_file");
    std::fs::write(&file, b"x").unwrap_or_else(|e| panic!("{e}"));
    let err = train(
        &smoke(2),
        &file.join("run"),
        &Device::Cpu,
        false,
        &mut |_| {},
    )
    .err();
    assert!(err
        .map(|e| e.to_string())
        .unwrap_or_default()
        .contains("a_file"));
}

#[test]
fn a_missing_dataset_fails_before_training() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut cfg = smoke(2);
    cfg.train_data = daa_train::DataSpec::Paired {
        input_dir: "/nonexistent/in".into(),
        target_dir: "/nonexistent/gt".into(),
    };
    let err = train(
        &cfg,
        &dir.path().join("run"),
        &Device::Cpu,
        false,
        &mut |_| {},
    )
    .err();
    assert!(err
        .map(|e| e.to_string())
        .unwrap_or_default()
        .contains("/nonexistent/in"));
    assert!(
        !dir.path().join("run").exists(),
        "nothing is written when the data is bad"
    );
}

#[test]
fn a_failed_checkpoint_write_is_an_error_and_keeps_the_previous_one() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // A directory where step 4's checkpoint should go makes its rename fail (as a full disk
    // would make the write fail; root ignores permission bits, so those cannot be used here).
    std::fs::create_dir_all(dir.path().join("restorer-4.safetensors/blocker"))
        .unwrap_or_else(|e| panic!("{e}"));
    let cfg = TrainConfig {
        checkpoint_every: 2,
        ..smoke(4)
    };
    let err = train(&cfg, dir.path(), &Device::Cpu, false, &mut |_| {})
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("restorer-4.safetensors"), "{err}");
    let state = std::fs::read_to_string(dir.path().join("train_state.json")).unwrap_or_default();
    assert!(state.contains("\"step\": 2"), "{state}");
    load_restorer(
        &dir.path().join("restorer-2.safetensors"),
        &Device::Cpu,
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind");
}

#[test]
fn diverging_training_stops_with_a_message() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut cfg = TrainConfig {
        method: Method::Vanilla,
        max_nonfinite_steps: 3,
        steps: 60,
        checkpoint_every: 0,
        ..smoke(60)
    };
    cfg.optim.lr = 1e30;
    let err = train(&cfg, dir.path(), &Device::Cpu, false, &mut |_| {})
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    // The weights go to 1e30 at step 1: caught there, before any non-finite loss.
    assert!(err.contains("diverged") && err.contains("step 1"), "{err}");
}

#[test]
fn deblur_and_derain_presets_train_end_to_end() {
    for preset in ["deblur", "derain"] {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let full = TrainConfig::preset(preset).unwrap_or_else(|e| panic!("{e}"));
        let smoke = TrainConfig::smoke();
        // The task's data and metric at the smoke preset's sizes.
        let cfg = TrainConfig {
            train_data: full.train_data,
            eval: full.eval,
            adaptation: daa_train::AdaptationSettings {
                target: full.adaptation.target,
                ..smoke.adaptation.clone()
            },
            steps: 2,
            ..smoke
        };
        let s = run(&cfg, dir.path(), false);
        assert!(s.final_eval.mean_restored.psnr.is_finite(), "{preset}");
        assert_eq!(s.final_eval.metric.y_channel, preset == "derain");
        assert!(losses(dir.path()).iter().all(|l| l.is_finite()), "{preset}");
    }
}

fn train_err(cfg: &TrainConfig, dir: &Path, resume: bool) -> String {
    match train(cfg, dir, &Device::Cpu, resume, &mut |_| {}) {
        Ok(_) => panic!("training in {dir:?} (resume {resume}) should have been refused"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_run_folder_is_never_clobbered_and_resume_needs_a_run() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let run_dir = dir.path().join("run");
    // --resume on a missing or an empty folder: nothing to resume.
    let err = train_err(&smoke(2), &run_dir, true);
    assert!(err.contains("no run to resume"), "{err}");
    std::fs::create_dir_all(&run_dir).unwrap_or_else(|e| panic!("{e}"));
    let err = train_err(&smoke(2), &run_dir, true);
    assert!(err.contains("no run to resume"), "{err}");
    run(&smoke(4), &run_dir, false);
    let ckpt = run_dir.join("restorer-4.safetensors");
    let before = weights(&ckpt);
    // A new run over it: refused, saying what is there.
    let err = train_err(&smoke(4), &run_dir, false);
    assert!(err.contains("already holds a run (at step 4)"), "{err}");
    // --resume with no more steps than done: nothing to do.
    let err = train_err(&smoke(4), &run_dir, true);
    assert!(err.contains("nothing to do"), "{err}");
    let err = train_err(&smoke(3), &run_dir, true);
    assert!(err.contains("already at step 4"), "{err}");
    // Checkpoints without train_state.json: neither resumed from step 0 nor overwritten.
    std::fs::remove_file(run_dir.join("train_state.json")).unwrap_or_else(|e| panic!("{e}"));
    let err = train_err(&smoke(6), &run_dir, true);
    assert!(
        err.contains("restorer-2, restorer-4") && err.contains("no train_state.json"),
        "{err}"
    );
    let err = train_err(&smoke(4), &run_dir, false);
    assert!(err.contains("holds checkpoints"), "{err}");
    assert_eq!(weights(&ckpt), before, "the checkpoint is untouched");
}

/// `train_state.json` records the best held-out PSNR, the final evaluation's included, so
/// that a resumed run replaces `restorer-best` only with a better model.
#[test]
fn the_best_score_survives_into_the_resumed_run() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let read = |name: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(d.join(name)).unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"))
    };
    let first = run(&smoke(2), d, false);
    let psnr2 = first.final_eval.mean_restored.psnr;
    assert_eq!(read("train_state.json")["best_psnr"].as_f64(), Some(psnr2));
    let best2 = weights(&d.join("restorer-best.safetensors"));
    let second = run(&smoke(4), d, true);
    let psnr4 = second.final_eval.mean_restored.psnr;
    assert_eq!(
        read("train_state.json")["best_psnr"].as_f64(),
        Some(psnr2.max(psnr4))
    );
    let best4 = weights(&d.join("restorer-best.safetensors"));
    assert_eq!(best4 == best2, psnr4 <= psnr2, "psnr {psnr2} then {psnr4}");
}

/// A second run into a folder another process is training in is refused before it writes
/// anything (the lock is per open file, so one process can play both).
#[test]
fn a_run_folder_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let held = daa_train::RunDir::new(dir.path())
        .lock()
        .unwrap_or_else(|e| panic!("{e}"));
    let err = train(&smoke(2), dir.path(), &Device::Cpu, false, &mut |_| {})
        .err()
        .unwrap_or_else(|| panic!("a run into a locked folder must be refused"));
    assert!(
        err.to_string().contains("in use by another daa process"),
        "{err}"
    );
    assert!(!dir.path().join("config.json").exists(), "nothing written");
    drop(held);
    run(&smoke(2), dir.path(), false);
}

/// A batch whose activations cannot fit in memory is refused before anything is allocated
/// (it used to end in the OOM killer or an allocation abort).
#[test]
fn a_batch_too_large_for_memory_is_refused_up_front() {
    if !std::path::Path::new("/proc/meminfo").exists() {
        return; // the check reads MemAvailable (Linux)
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cfg = TrainConfig {
        patch_size: 100_000,
        ..smoke(2)
    };
    let err = train(&cfg, dir.path(), &Device::Cpu, false, &mut |_| {})
        .err()
        .unwrap_or_else(|| panic!("a 100000-pixel patch must be refused"));
    assert!(
        err.to_string()
            .contains("lower --batch-size or --patch-size"),
        "{err}"
    );
    assert!(!dir.path().join("config.json").exists(), "nothing written");
}
