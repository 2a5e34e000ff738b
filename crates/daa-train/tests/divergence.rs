//! A run that diverges fails, and keeps no checkpoint with non-finite or exploded weights.

use std::path::Path;

use candle_core::Device;
use daa_train::{train, Error, Method, TrainConfig, WEIGHT_LIMIT};

/// The largest |w| in a safetensors file (NaN when any value is not finite).
fn max_abs(path: &Path) -> f32 {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let mut m = 0f32;
    for t in tensors.values() {
        let v: Vec<f32> = t
            .to_dtype(candle_core::DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1())
            .unwrap_or_else(|e| panic!("{e}"));
        for x in v {
            if !x.is_finite() {
                return f32::NAN;
            }
            m = m.max(x.abs());
        }
    }
    m
}

fn safetensors_in(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    v.sort();
    v
}

#[test]
fn a_huge_learning_rate_fails_the_run_and_saves_no_exploded_weights() {
    for method in [Method::Vanilla, Method::Da] {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut cfg = TrainConfig {
            method,
            steps: 6,
            checkpoint_every: 1,
            ..TrainConfig::smoke()
        };
        cfg.eval.every = 1;
        cfg.optim.lr = 1e30;
        let result = train(&cfg, dir.path(), &Device::Cpu, false, &mut |_| {});
        let err = match result {
            Err(Error::Diverged(m)) => m,
            Err(e) => panic!("{method}: another error than divergence: {e}"),
            Ok(s) => panic!("{method}: reported success, checkpoint {:?}", s.checkpoint),
        };
        assert!(err.contains("step 1"), "{method}: {err}");
        for path in safetensors_in(dir.path()) {
            let m = max_abs(&path);
            assert!(m.is_finite() && m <= WEIGHT_LIMIT, "{path:?} holds |w| {m}");
        }
        assert!(
            !dir.path().join("restorer-best.safetensors").exists(),
            "{method}: a diverged step became the best"
        );
    }
}

/// Trains the smoke preset's vanilla run at lr 2 (seed 7), checkpointing every
/// `checkpoint_every` steps, in a new folder; returns the divergence message and the folder.
/// lr 2 keeps every weight under WEIGHT_LIMIT but sends the restorer's outputs past f32's
/// range: from step 2 the loss is infinite.
fn overflowing_run(checkpoint_every: usize) -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut cfg = TrainConfig {
        method: Method::Vanilla,
        steps: 10,
        checkpoint_every,
        seed: 7,
        ..TrainConfig::smoke()
    };
    cfg.optim.lr = 2.0;
    let err = match train(&cfg, dir.path(), &Device::Cpu, false, &mut |_| {}) {
        Err(Error::Diverged(m)) => m,
        Err(e) => panic!("another error than divergence: {e}"),
        Ok(s) => panic!("reported success, checkpoint {:?}", s.checkpoint),
    };
    (err, dir)
}

#[test]
fn outputs_that_overflow_stop_the_run_instead_of_being_skipped_and_saved() {
    // Skipping such steps used to end the run "successfully" at 6 dB with those weights saved
    // as restorer-best.
    let (err, dir) = overflowing_run(5);
    assert!(err.contains("restoration loss"), "{err}");
    assert!(
        safetensors_in(dir.path()).is_empty(),
        "nothing is saved from a diverged run: {:?}",
        safetensors_in(dir.path())
    );
}

#[test]
fn a_checkpoint_of_the_weights_that_exploded_is_not_offered_for_resuming() {
    // Checkpointing every step: restorer-1 holds the weights whose loss is inf at step 2, so
    // the error must not present it as the checkpoint to go back to.
    let (err, _dir) = overflowing_run(1);
    assert!(
        err.contains("restorer-1") && err.contains("do not resume from it"),
        "{err}"
    );
}

#[test]
fn the_error_names_the_last_checkpoint_kept_which_exists() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut cfg = TrainConfig {
        steps: 2,
        checkpoint_every: 1,
        ..TrainConfig::smoke()
    };
    train(&cfg, dir.path(), &Device::Cpu, false, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    // Continue the healthy run at a learning rate that explodes the weights (the run's saved
    // config says the same, so resume accepts it).
    cfg.optim.lr = 1e30;
    cfg.steps = 4;
    let json = serde_json::to_string_pretty(&TrainConfig {
        steps: 2,
        ..cfg.clone()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("config.json"), json).unwrap_or_else(|e| panic!("{e}"));
    let err = train(&cfg, dir.path(), &Device::Cpu, true, &mut |_| {})
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    let kept = dir.path().join("restorer-2.safetensors");
    assert!(
        err.contains("diverged")
            && err.contains("step 3")
            && err.contains(&kept.display().to_string()),
        "{err}"
    );
    assert!(max_abs(&kept) <= WEIGHT_LIMIT);
    assert!(!dir.path().join("restorer-3.safetensors").exists());

    // From the start: nothing was saved, and the message says so.
    let fresh = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let err = train(&cfg, fresh.path(), &Device::Cpu, false, &mut |_| {})
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("no checkpoint was written"), "{err}");
}

/// `(step, loss_total)` of each training line of metrics.jsonl.
fn losses(dir: &Path) -> Vec<(u64, f64)> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v["step"].as_u64()?, v["loss_total"].as_f64()?)))
        .collect()
}

#[test]
fn a_new_run_after_one_that_diverged_logs_itself_only() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (reused, clean) = (dir.path().join("reused"), dir.path().join("clean"));
    let mut bad = TrainConfig {
        steps: 3,
        ..TrainConfig::smoke()
    };
    bad.optim.lr = 1e30;
    assert!(train(&bad, &reused, &Device::Cpu, false, &mut |_| {}).is_err());
    assert!(!losses(&reused).is_empty(), "the failed run logged step 1");
    // No checkpoint was kept, so a new run may use the folder; its log must not start with
    // the failed run's lines.
    let good = TrainConfig {
        steps: 3,
        ..TrainConfig::smoke()
    };
    for d in [&reused, &clean] {
        train(&good, d, &Device::Cpu, false, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(losses(&reused), losses(&clean));
    // TensorBoard: the new session starts at step 1, which drops the failed run's events.
    let newest = std::fs::read_dir(&reused)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("tfevents"))
        .max()
        .unwrap_or_default();
    let bytes = std::fs::read(&newest).unwrap_or_else(|e| panic!("{newest:?}: {e}"));
    let events = daa_train::tensorboard::read_events(&bytes).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(&events[1].what, Some(daa_train::tensorboard::What::SessionLog(l)) if l.status == 1)
            && events[1].step == 1,
        "{:?}",
        events[1]
    );
}
