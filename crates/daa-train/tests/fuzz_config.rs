//! Property-based fuzzing of config parsing: mutated config JSON must parse and validate, or
//! fail with an error, never panic. A longer run: `PROPTEST_CASES=100000 cargo test --release
//! -p daa-train --test fuzz_config`.

use daa_train::TrainConfig;
use proptest::prelude::*;

fn base() -> String {
    serde_json::to_string(&TrainConfig::smoke()).unwrap_or_default()
}

proptest! {
    #[test]
    fn mutated_config_text_never_panics(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<char>()), 0..8),
        cut in any::<prop::sample::Index>(),
        do_cut in any::<bool>(),
    ) {
        let mut chars: Vec<char> = base().chars().collect();
        for (at, c) in edits {
            let i = at.index(chars.len());
            chars[i] = c;
        }
        if do_cut {
            let n = cut.index(chars.len());
            chars.truncate(n);
        }
        let text: String = chars.into_iter().collect();
        if let Ok(cfg) = TrainConfig::from_json(&text) {
            let _ = cfg.validate();
        }
    }

    #[test]
    fn any_numbers_in_the_config_validate_without_panicking(
        batch in any::<u32>(), steps in any::<u32>(), patch in any::<u32>(),
        lr in any::<f64>(), beta1 in any::<f64>(), decay in any::<f64>(), lam in any::<f64>(),
        t_min in any::<u16>(), t_max in any::<u16>(), sigma in any::<f32>(),
    ) {
        let mut v = serde_json::to_value(TrainConfig::smoke()).unwrap_or_default();
        v["batch_size"] = batch.into();
        v["steps"] = steps.into();
        v["patch_size"] = patch.into();
        v["optim"]["lr"] = serde_json::json!(lr);
        v["optim"]["beta1"] = serde_json::json!(beta1);
        v["ema_decay"] = serde_json::json!(decay);
        v["adaptation"]["lambda_max"] = serde_json::json!(lam);
        v["adaptation"]["loss"]["t_min"] = t_min.into();
        v["adaptation"]["loss"]["t_max"] = t_max.into();
        v["train_data"]["degradation"]["sigma_max"] = serde_json::json!(sigma);
        if let Ok(cfg) = TrainConfig::from_json(&v.to_string()) {
            let _ = cfg.validate();
        }
    }
}
