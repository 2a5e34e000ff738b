//! A run's TensorBoard event file, parsed back: record framing and CRCs, the tags of every
//! loss part, lambda and the evaluation, and the same numbers as metrics.jsonl.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Device;
use daa_train::tensorboard::{read_events, What};
use daa_train::{train, TrainConfig};

fn event_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("events.out.tfevents."))
        .collect();
    v.sort();
    v
}

/// `(step, tag) -> value` of every scalar in `path`.
fn scalars(path: &Path) -> BTreeMap<(i64, String), f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{e}"));
    let events = read_events(&bytes).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    assert_eq!(
        events[0].what,
        Some(What::FileVersion("brain.Event:2".into()))
    );
    let mut out = BTreeMap::new();
    for e in &events[1..] {
        if let Some(What::Summary(s)) = &e.what {
            for v in &s.value {
                let value = v
                    .simple_value()
                    .unwrap_or_else(|| panic!("{} at {}: no simple_value", v.tag, e.step));
                out.insert((e.step, v.tag.clone()), value);
            }
        }
    }
    out
}

#[test]
fn the_event_file_holds_each_loss_part_lambda_and_eval_scores() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut cfg = TrainConfig {
        steps: 4,
        log_every: 2,
        ..TrainConfig::smoke()
    };
    cfg.eval.every = 2;
    train(&cfg, dir.path(), &Device::Cpu, false, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    let files = event_files(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let got = scalars(&files[0]);

    // Every number of metrics.jsonl is in the event file under its tag, at its step.
    let metrics = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap_or_default();
    let mut expected = 0;
    for line in metrics.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        let step = v["step"].as_i64().unwrap_or(-1);
        for (key, value) in v.as_object().into_iter().flatten() {
            let tag = match key.as_str() {
                "step" => continue,
                "lambda" | "lr" | "sec_per_step" => key.clone(),
                k if k.starts_with("loss_") => format!("loss/{}", &k[5..]),
                k if k.starts_with("eval_") => format!("eval/{}", &k[5..]),
                k => format!("eval/{k}"),
            };
            let want = value.as_f64().unwrap_or(f64::NAN) as f32;
            assert_eq!(
                got.get(&(step, tag.clone())),
                Some(&want),
                "{tag} at {step}"
            );
            expected += 1;
        }
    }
    assert_eq!(got.len(), expected, "nothing but the metrics: {got:?}");
    for tag in [
        "loss/total",
        "loss/rec",
        "loss/diff_pos",
        "loss/diff_neg",
        "loss/contrastive",
        "loss/noise",
        "lambda",
    ] {
        assert!(got.contains_key(&(2, tag.into())), "{tag}");
        assert!(got.contains_key(&(4, tag.into())), "{tag}");
    }
    for tag in [
        "eval/psnr",
        "eval/ssim",
        "eval/input_psnr",
        "eval/input_ssim",
    ] {
        assert!(
            got.contains_key(&(2, tag.into())),
            "{tag} at the eval interval"
        );
        assert!(got.contains_key(&(4, tag.into())), "{tag} at the end");
    }

    // A resumed run adds a file that starts a session at its step (TensorBoard then drops
    // what earlier files hold after it) and logs the steps after.
    let cfg = TrainConfig { steps: 6, ..cfg };
    train(&cfg, dir.path(), &Device::Cpu, true, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    let files = event_files(dir.path());
    assert_eq!(files.len(), 2, "{files:?}");
    let newer = files
        .iter()
        .find(|f| scalars(f).keys().any(|(s, _)| *s == 6))
        .unwrap_or_else(|| panic!("no file logs step 6"));
    let bytes = std::fs::read(newer).unwrap_or_default();
    let events = read_events(&bytes).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(&events[1].what, Some(What::SessionLog(l)) if l.status == 1)
            && events[1].step == 5,
        "{:?}",
        events[1]
    );
    assert!(scalars(newer).keys().all(|(s, _)| *s > 4));
}
