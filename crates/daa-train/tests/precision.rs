//! `precision: bf16` (`--precision bf16`): the convolutions of a step compute in bf16 (conv
//! autocast) while weights, Adam and losses stay f32. On the CPU a bf16 step's loss parts must
//! track the f32 step's (same seed, same weights, same batch) within bf16 rounding, and differ
//! from them (so the bf16 path really ran).

use candle_core::{DType, Device, Tensor};
use daa_train::{Batch, Method, Models, Precision, TrainConfig};

/// The losses of two consecutive steps of a fresh model pair at `precision` (whose weights
/// must still be f32 after them).
fn two_steps(method: Method, precision: Precision, batch: &Batch) -> Vec<Vec<(&'static str, f64)>> {
    let cfg = TrainConfig {
        method,
        precision,
        ..TrainConfig::smoke()
    };
    let mut models = Models::new(&cfg, &Device::Cpu).unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    for step in 0..2 {
        // Past the ramp's start, so the noise loss weighs in.
        let o = models
            .train_step(batch, 100 + step, cfg.seed)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(o.applied, "{precision:?} step {step}: {:?}", o.losses);
        out.push(o.losses);
    }
    for var in models.restorer_vars.all_vars() {
        assert_eq!(var.dtype(), DType::F32, "the weights stay f32");
    }
    out
}

#[test]
fn a_bf16_step_tracks_the_f32_step() {
    let cfg = TrainConfig::smoke();
    let (b, p) = (cfg.batch_size, cfg.patch_size);
    // A fixed, image-like batch (smooth ramps plus a pattern), the same for both runs.
    let img = |phase: f32| {
        let v: Vec<f32> = (0..b * 3 * p * p)
            .map(|i| 0.5 + 0.4 * ((i as f32) * 0.013 + phase).sin())
            .collect();
        Tensor::from_vec(v, (b, 3, p, p), &Device::Cpu).unwrap_or_else(|e| panic!("{e}"))
    };
    let batch = Batch {
        source_input: img(0.3),
        source_target: img(0.0),
        target_input: Some(img(1.1)),
        ex_clean: None,
    };
    for method in [Method::Vanilla, Method::Da] {
        let f32s = two_steps(method, Precision::F32, &batch);
        let bf16s = two_steps(method, Precision::Bf16, &batch);
        let mut max_rel: f64 = 0.0;
        for (a, b) in f32s.iter().flatten().zip(bf16s.iter().flatten()) {
            assert_eq!(a.0, b.0);
            assert!(b.1.is_finite(), "{method:?} {}: {}", b.0, b.1);
            let rel = (a.1 - b.1).abs() / a.1.abs().max(1e-3);
            eprintln!(
                "{method:?} {}: f32 {} bf16 {} (rel {rel:.2e})",
                a.0, a.1, b.1
            );
            // bf16 keeps 8 bits of mantissa (relative rounding 2^-9 = 2e-3 per cast); through
            // the networks' depth the loss parts were measured within 1% of f32's.
            assert!(
                rel < 3e-2,
                "{method:?} {}: f32 {} vs bf16 {}",
                a.0,
                a.1,
                b.1
            );
            max_rel = max_rel.max(rel);
        }
        assert!(
            max_rel > 0.0,
            "{method:?}: bf16 gave f32's losses bit for bit"
        );
    }
}

#[test]
fn precision_round_trips_and_old_configs_read_as_f32() {
    let cfg = TrainConfig {
        precision: Precision::Bf16,
        ..TrainConfig::smoke()
    };
    let json = serde_json::to_string(&cfg).unwrap_or_else(|e| panic!("{e}"));
    assert!(json.contains(r#""precision":"bf16""#), "{json}");
    let back = TrainConfig::from_json(&json).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back.precision, Precision::Bf16);
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
    v.as_object_mut().map(|o| o.remove("precision"));
    let old = TrainConfig::from_json(&v.to_string()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(old.precision, Precision::F32);
    assert!("f16".parse::<Precision>().is_err());
}
