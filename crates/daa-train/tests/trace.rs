//! The seeded-run trace: losses, checkpoints and the final evaluation of short smoke runs of
//! each method, compared bit for bit with `tests/data/trace.json`, recorded before the
//! restructuring of issue 13. Any change to what a seeded run computes fails here.
//!
//! Re-record (only when a change of numbers is intended, and say why in the commit):
//! `DAA_RECORD_TRACE=1 cargo test -p daa-train --test trace`.
//!
//! Floating-point results depend on the CPU's vector units (gemm picks AVX-512, AVX2 or FMA
//! kernels at run time) and may depend on the thread count, so the fixture names the machine
//! it was recorded on. On the same kind of machine everything must be identical; on another
//! kind the losses and scores are compared to a relative 1e-4 and checkpoint hashes are not
//! compared (the test says so on stderr).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use daa_train::{train, Method, TrainConfig};
use serde_json::{json, Value};

const STEPS: usize = 4;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/trace.json")
}

/// What decides floating-point results on a CPU: architecture, vector units, threads.
fn machine() -> String {
    #[allow(unused_mut)]
    let mut features: Vec<&str> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    for (name, on) in [
        ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
        ("avx2", std::arch::is_x86_feature_detected!("avx2")),
        ("fma", std::arch::is_x86_feature_detected!("fma")),
    ] {
        if on {
            features.push(name);
        }
    }
    format!(
        "{} [{}] threads={}",
        std::env::consts::ARCH,
        features.join(","),
        candle_core::utils::get_num_threads()
    )
}

/// The smoke preset with `method`, 4 steps, a checkpoint every 2 steps, all kept.
fn config(method: Method) -> TrainConfig {
    let mut cfg = TrainConfig::smoke();
    cfg.steps = STEPS;
    cfg.checkpoint_every = 2;
    cfg.keep_last = 5;
    cfg.method = method;
    cfg
}

/// FNV-1a (64 bit) over every tensor of a safetensors file, in name order: name, dtype,
/// shape and the little-endian bytes of its values.
fn tensor_hash(path: &Path) -> String {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let sorted: BTreeMap<String, candle_core::Tensor> = tensors.into_iter().collect();
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (name, t) in &sorted {
        assert_eq!(t.dtype(), DType::F32, "{path:?}: {name} is not f32");
        eat(name.as_bytes());
        eat(format!("{:?}", t.dims()).as_bytes());
        let values: Vec<f32> = t
            .flatten_all()
            .and_then(|t| t.to_vec1())
            .unwrap_or_else(|e| panic!("{path:?}: {name}: {e}"));
        for v in values {
            eat(&v.to_le_bytes());
        }
    }
    format!("{h:016x}")
}

/// One run's trace: every logged number but the timing, the checkpoint hashes and the final
/// scores (as exact decimal strings of the `f64`s).
fn trace(method: Method) -> Value {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let summary = train(
        &config(method),
        dir.path(),
        &Device::Cpu,
        false,
        &mut |_| {},
    )
    .unwrap_or_else(|e| panic!("{method:?}: {e}"));
    let text = std::fs::read_to_string(dir.path().join("metrics.jsonl"))
        .unwrap_or_else(|e| panic!("metrics.jsonl: {e}"));
    let metrics: Vec<Value> = text
        .lines()
        .map(|l| {
            let mut v: serde_json::Map<String, Value> =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
            v.remove("sec_per_step");
            Value::Object(
                v.into_iter()
                    .map(|(k, v)| (k, Value::String(v.to_string())))
                    .collect(),
            )
        })
        .collect();
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    files.sort();
    let checkpoints: serde_json::Map<String, Value> = files
        .iter()
        .map(|f| (f.clone(), Value::String(tensor_hash(&dir.path().join(f)))))
        .collect();
    let r = &summary.final_eval;
    json!({
        "metrics": metrics,
        "checkpoints": checkpoints,
        "eval": {
            "restored_psnr": r.mean_restored.psnr.to_string(),
            "restored_ssim": r.mean_restored.ssim.to_string(),
            "input_psnr": r.mean_input.psnr.to_string(),
            "input_ssim": r.mean_input.ssim.to_string(),
        },
    })
}

/// Every number of `v` (strings holding numbers included), in order.
fn numbers(v: &Value, out: &mut Vec<f64>) {
    match v {
        Value::String(s) => {
            if let Ok(x) = s.parse::<f64>() {
                out.push(x);
            }
        }
        Value::Number(n) => out.extend(n.as_f64()),
        Value::Array(a) => a.iter().for_each(|x| numbers(x, out)),
        Value::Object(o) => o.values().for_each(|x| numbers(x, out)),
        _ => {}
    }
}

#[test]
fn seeded_runs_match_the_recorded_trace() {
    let runs: serde_json::Map<String, Value> = [
        ("da", Method::Da),
        ("vanilla", Method::Vanilla),
        ("da-ex", Method::DaEx),
    ]
    .into_iter()
    .map(|(name, m)| (name.to_string(), trace(m)))
    .collect();
    let got = json!({ "machine": machine(), "steps": STEPS, "runs": runs });
    if std::env::var_os("DAA_RECORD_TRACE").is_some() {
        let text = serde_json::to_string_pretty(&got).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(fixture(), text + "\n").unwrap_or_else(|e| panic!("{e}"));
        return;
    }
    let text = std::fs::read_to_string(fixture()).unwrap_or_else(|e| panic!("{e}"));
    let want: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    if want["machine"] == got["machine"] {
        assert_eq!(
            want["runs"], got["runs"],
            "a seeded run no longer reproduces the recorded trace"
        );
        return;
    }
    eprintln!(
        "trace recorded on {}, running on {}: comparing numbers to 1e-4, not checkpoint hashes",
        want["machine"], got["machine"]
    );
    for name in ["da", "vanilla", "da-ex"] {
        for part in ["metrics", "eval"] {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            numbers(&want["runs"][name][part], &mut a);
            numbers(&got["runs"][name][part], &mut b);
            assert_eq!(a.len(), b.len(), "{name} {part}: different fields");
            for (x, y) in a.iter().zip(&b) {
                assert!(
                    (x - y).abs() <= 1e-4 * x.abs().max(1e-3),
                    "{name} {part}: {x} vs {y}"
                );
            }
        }
        assert_eq!(
            want["runs"][name]["checkpoints"]
                .as_object()
                .map(|o| o.keys().collect::<Vec<_>>()),
            got["runs"][name]["checkpoints"]
                .as_object()
                .map(|o| o.keys().collect::<Vec<_>>()),
            "{name}: different checkpoint files"
        );
    }
}
