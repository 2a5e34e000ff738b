use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use daa_train::{Batch, Method, Models, Precision, TrainConfig};

/// Flags of `daa bench`: times full training steps (forward, backward, Adam) on random data,
/// through the same model pair and step as `daa train`. Prints one JSON line per method with
/// the median milliseconds; `cargo xtask bench` compares them with scripts/bench_torch.py.
#[derive(clap::Args)]
pub struct Args {
    /// Network sizes: cpu (the denoise preset's: U-Net width 16, CondUNet width 16, batch 8,
    /// 48x48), paper (the denoise-paper preset's: U-Net 8.56 M + CondUNet 62.6 M, batch 24,
    /// 128x128) or paper-small (the paper networks at batch 2, 64x64).
    #[arg(long, default_value = "cpu")]
    preset: String,
    /// Comma-separated: vanilla, da, dann.
    #[arg(long, default_value = "vanilla,da")]
    methods: String,
    /// Timed steps (after warm-up), at least 1.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    steps: u64,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Arithmetic of the convolutions: f32 or bf16 (see `daa train --precision`).
    #[arg(long, default_value = "f32", value_parser = clap::builder::PossibleValuesParser::new(Precision::names()))]
    precision: String,
}

impl Args {
    pub fn run(self, device: &Device) -> Result<()> {
        let base = match self.preset.as_str() {
            "cpu" => TrainConfig::denoise(),
            "paper" => TrainConfig::denoise_paper(),
            "paper-small" => TrainConfig {
                batch_size: 2,
                patch_size: 64,
                ..TrainConfig::denoise_paper()
            },
            other => bail!("unknown bench preset {other:?} (cpu, paper, paper-small)"),
        };
        // Every method is checked before any is timed (a typo must not cost a long run).
        let methods = self
            .methods
            .split(',')
            .map(|name| {
                let method: Method = name
                    .trim()
                    .parse()
                    .with_context(|| format!("--methods {:?}", self.methods))?;
                if method == Method::DaEx {
                    bail!("bench times vanilla, da and dann; da-ex's step is da's positive pass");
                }
                Ok(method)
            })
            .collect::<Result<Vec<_>>>()?;
        let steps = self.steps as usize;
        for method in methods {
            let cfg = TrainConfig {
                method,
                precision: self.precision.parse()?,
                ..base.clone()
            };
            let mut models = Models::new(&cfg, device)?;
            let (b, p) = (cfg.batch_size, cfg.patch_size);
            let rand = || Tensor::rand(0f32, 1., (b, 3, p, p), device);
            let batch = Batch {
                source_input: rand()?,
                source_target: rand()?,
                target_input: method.adapts().then(rand).transpose()?,
                ex_clean: None,
            };
            // Past the lambda ramp, so the adaptation loss weighs in as in most of a run.
            let step = (cfg.lambda_ramp().ramp_samples / b.max(1) as u64) as usize;
            let mut times = Vec::new();
            for i in 0..self.warmup + steps {
                let t0 = Instant::now();
                models.train_step(&batch, step + i, cfg.seed)?;
                device.synchronize()?;
                if i >= self.warmup {
                    times.push(t0.elapsed().as_secs_f64() * 1e3);
                }
            }
            times.sort_by(|a, b| a.total_cmp(b));
            let median = times.get(times.len() / 2).copied().unwrap_or(f64::NAN);
            #[allow(clippy::print_stdout)]
            {
                println!(
                    "{}",
                    serde_json::json!({"impl": "daa", "threads": candle_core::utils::get_num_threads(), "preset": self.preset, "method": method.name(), "precision": self.precision, "median_ms": (median * 100.0).round() / 100.0, "peak_rss_mb": peak_rss_mb()})
                );
            }
        }
        Ok(())
    }
}

/// The process's peak resident memory in MiB (`VmHWM` of /proc/self/status; null elsewhere).
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((kb / 1024.0 * 10.0).round() / 10.0)
}
