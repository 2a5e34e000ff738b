//! Checking a config before any file is touched, and reading one from JSON (older runs'
//! config.json files included).

use super::types::{DataSpec, ScheduleConfig, TargetSpec, TrainConfig};
use crate::{Error, Result};

fn bad(message: String) -> Result<()> {
    Err(Error::Config(message))
}

impl TrainConfig {
    /// The lambda ramp in samples seen; a legacy `ramp_steps` counts `batch_size` samples a
    /// step.
    pub fn lambda_ramp(&self) -> daa_diffusion::LambdaRamp {
        let a = &self.adaptation;
        let ramp_samples = match a.ramp_steps {
            Some(steps) if a.ramp_samples == 0 => (steps * self.batch_size) as u64,
            _ => a.ramp_samples,
        };
        daa_diffusion::LambdaRamp {
            lambda_max: a.lambda_max,
            ramp_samples,
            quantum_samples: a.ramp_quantum_samples,
        }
    }

    /// Checks ranges and consistency; called before any file is touched.
    pub fn validate(&self) -> Result<()> {
        self.validate_training()?;
        self.validate_optimizer()?;
        if self.method.adapts() {
            self.validate_adaptation()?;
        }
        for spec in [&self.train_data, &self.eval.data] {
            if let DataSpec::Synthetic { degradation, .. } = spec {
                degradation.validate()?;
            }
        }
        Ok(())
    }

    fn validate_training(&self) -> Result<()> {
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1".into());
        }
        if self.steps == 0 {
            return bad("steps must be at least 1".into());
        }
        let m = self.backbone.size_multiple();
        if self.patch_size == 0 || !self.patch_size.is_multiple_of(m) {
            return bad(format!(
                "patch_size {} must be a positive multiple of {m} for {}",
                self.patch_size,
                self.backbone.name()
            ));
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return bad(format!(
                "ema_decay must be in [0, 1), got {}",
                self.ema_decay
            ));
        }
        if self.log_every == 0 {
            return bad("log_every must be at least 1".into());
        }
        if self.max_nonfinite_steps == 0 {
            return bad("max_nonfinite_steps must be at least 1".into());
        }
        Ok(())
    }

    fn validate_optimizer(&self) -> Result<()> {
        let o = &self.optim;
        let finite = [
            ("lr (--lr)", o.lr),
            ("beta1", o.beta1),
            ("beta2", o.beta2),
            ("eps", o.eps),
            ("weight_decay", o.weight_decay),
            ("charbonnier_eps", self.charbonnier_eps),
        ];
        if let Some((name, v)) = finite.iter().find(|(_, v)| !v.is_finite()) {
            return bad(format!("{name} must be a finite number, got {v}"));
        }
        // Name the one setting at fault (not all five), in the flag's terms.
        let checks = [
            (o.lr > 0.0, "lr (--lr)", o.lr, "must be positive, e.g. 2e-4"),
            (
                (0.0..1.0).contains(&o.beta1),
                "beta1",
                o.beta1,
                "must be in [0, 1)",
            ),
            (
                (0.0..1.0).contains(&o.beta2),
                "beta2",
                o.beta2,
                "must be in [0, 1)",
            ),
            (o.eps > 0.0, "eps", o.eps, "must be positive"),
            (
                o.weight_decay >= 0.0,
                "weight_decay",
                o.weight_decay,
                "must be 0 or more",
            ),
        ];
        if let Some((_, name, value, rule)) = checks.iter().find(|c| !c.0) {
            return bad(format!("optimizer {name} is {value}; it {rule}"));
        }
        if self.charbonnier_eps <= 0.0 {
            return bad("charbonnier_eps must be positive".into());
        }
        Ok(())
    }

    fn validate_adaptation(&self) -> Result<()> {
        let a = &self.adaptation;
        let schedule = a.schedule.build()?;
        if let Some(loss) = a.loss_config(self.method) {
            loss.validate(schedule.len())
                .map_err(|e| Error::Config(e.to_string()))?;
        }
        if !a.lambda_max.is_finite() || a.lambda_max < 0.0 {
            return bad(format!(
                "lambda_max must be finite and >= 0, got {}",
                a.lambda_max
            ));
        }
        let m = a.diffusion.size_multiple();
        if self.method.uses_diffusion() && !self.patch_size.is_multiple_of(m) {
            return bad(format!(
                "patch_size {} must be a multiple of {m} for the diffusion network",
                self.patch_size
            ));
        }
        let d = &a.dann;
        if d.hidden == 0 || !d.lambda_max.is_finite() || d.lambda_max < 0.0 {
            return bad(format!(
                "dann settings out of range: hidden {} (at least 1), lambda_max {} (finite, >= 0)",
                d.hidden, d.lambda_max
            ));
        }
        if let TargetSpec::Synthetic {
            degradation,
            variants,
            ..
        } = &a.target
        {
            degradation.validate()?;
            if *variants == 0 {
                return bad("target variants must be at least 1".into());
            }
        }
        Ok(())
    }

    /// Parses a config file's JSON, rejecting unknown keys. Configs written by older versions
    /// load too: their `adaptation.loss.variant` must agree with `method` (it is now derived
    /// from it) and a missing `adaptation.schedule` is the paper's, which they all used.
    pub fn from_json(text: &str) -> Result<Self> {
        let mut value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        migrate(&mut value)?;
        serde_json::from_value(value).map_err(|e| Error::Config(e.to_string()))
    }
}

/// Brings an older config's JSON to the current layout (see [`TrainConfig::from_json`]).
fn migrate(value: &mut serde_json::Value) -> Result<()> {
    let method = value["method"].as_str().unwrap_or_default().to_string();
    let Some(adaptation) = value.get_mut("adaptation").and_then(|a| a.as_object_mut()) else {
        return Ok(());
    };
    if !adaptation.contains_key("schedule") {
        let paper = serde_json::to_value(ScheduleConfig::paper())
            .map_err(|e| Error::Config(e.to_string()))?;
        adaptation.insert("schedule".into(), paper);
    }
    let Some(loss) = adaptation.get_mut("loss").and_then(|l| l.as_object_mut()) else {
        return Ok(());
    };
    if let Some(variant) = loss.remove("variant") {
        let expected = match method.as_str() {
            "da-ex" => "ex",
            _ => "paired",
        };
        if method != "vanilla" && variant.as_str() != Some(expected) {
            return bad(format!(
                "method {method:?} with adaptation.loss.variant {variant} (a config of an older \
                 daa): the variant now follows from the method; remove it, or set method to \
                 \"da-ex\" for \"ex\" and \"da\" for \"paired\""
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_configs_with_a_variant_and_no_schedule_still_load() -> Result<()> {
        let cfg = TrainConfig::smoke();
        let mut v = serde_json::to_value(&cfg).map_err(|e| Error::Config(e.to_string()))?;
        v["adaptation"]["loss"]["variant"] = "paired".into();
        if let Some(a) = v["adaptation"].as_object_mut() {
            a.remove("schedule");
        }
        assert_eq!(TrainConfig::from_json(&v.to_string())?, cfg);
        v["adaptation"]["loss"]["variant"] = "ex".into();
        let err = TrainConfig::from_json(&v.to_string())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("variant"), "{err}");
        v["method"] = "da-ex".into();
        let ex = TrainConfig::from_json(&v.to_string())?;
        assert_eq!(ex.method, crate::Method::DaEx);
        Ok(())
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected() -> Result<()> {
        let mut v =
            serde_json::to_value(TrainConfig::smoke()).map_err(|e| Error::Config(e.to_string()))?;
        v["batch_sise"] = 3.into();
        assert!(TrainConfig::from_json(&v.to_string()).is_err());
        let mut cfg = TrainConfig::smoke();
        cfg.patch_size = 30;
        assert!(cfg.validate().is_err());
        let mut cfg = TrainConfig::smoke();
        cfg.optim.lr = -1.0;
        assert!(cfg.validate().is_err());
        let mut cfg = TrainConfig::smoke();
        cfg.adaptation.schedule.steps = 500;
        assert!(cfg.validate().is_err(), "t_max 999 needs 1000 steps");
        Ok(())
    }

    /// The ramp is counted in samples: its values at chosen steps follow the samples seen,
    /// whatever the batch; old configs' `ramp_steps` read as steps at their batch size.
    #[test]
    fn lambda_ramp_counts_samples_and_reads_old_ramp_steps() -> Result<()> {
        let paper = TrainConfig::denoise_paper();
        let r = paper.lambda_ramp();
        assert_eq!((r.ramp_samples, r.quantum_samples), (19_650_000, 65_500));
        // Epoch 1 (samples 0..65,500): 0.2 tanh(5 / 600), the reference's first-epoch lambda.
        let first = 0.2 * (5.0f64 / 600.0).tanh();
        for step in [0, 1, 2_728] {
            assert!((r.at(step * 24) - first).abs() < 1e-15, "step {step}");
        }
        // Step 2,730 at batch 24 has seen 65,520 samples: epoch 2.
        assert!((r.at(2_730 * 24) - 0.2 * (10.0f64 / 600.0).tanh()).abs() < 1e-15);
        // Full weight from epoch 300 on: 0.2 (2 / (1 + e^-5) - 1) = 0.19732286.
        assert!((r.at(299 * 65_500) - 0.197_322_86).abs() < 1e-7);
        // The smoke preset: 4 samples (2 steps at batch 2), continuous from 0.
        let smoke = TrainConfig::smoke();
        assert_eq!(smoke.lambda_ramp().at(0), 0.0);
        assert_eq!(smoke.lambda_ramp().progress(2), 0.5);
        // A config written with `ramp_steps` (before samples) keeps its schedule.
        let mut v = serde_json::to_value(&smoke).map_err(|e| Error::Config(e.to_string()))?;
        if let Some(a) = v["adaptation"].as_object_mut() {
            a.remove("ramp_samples");
            a.remove("ramp_quantum_samples");
            a.insert("ramp_steps".into(), 2.into());
        }
        let old = TrainConfig::from_json(&v.to_string())?;
        assert_eq!(old.lambda_ramp(), smoke.lambda_ramp());
        Ok(())
    }
}
