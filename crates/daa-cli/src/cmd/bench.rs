use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use daa_backbones::{BackboneConfig, UNetConfig};
use daa_diffusion::{AdaptationConfig, AdaptationLoss, CondUNet, CondUNetConfig, NoiseSchedule};
use daa_train::{seeded_var_builder, step_losses, Adam, Adaptation, Batch, OptimConfig};

/// Flags of `daa bench`: times full training steps (forward, backward, Adam) on random data.
/// Prints one JSON line per method with the median milliseconds; `cargo xtask bench` compares
/// them with scripts/bench_torch.py.
#[derive(clap::Args)]
pub struct Args {
    /// Network sizes: cpu (the denoise preset's: U-Net width 16, CondUNet width 16, batch 8,
    /// 48x48), paper (U-Net 8.56 M + CondUNet 62.6 M, batch 24, 128x128) or paper-small
    /// (the paper networks at batch 2, 64x64).
    #[arg(long, default_value = "cpu")]
    preset: String,
    /// Comma-separated: vanilla, da.
    #[arg(long, default_value = "vanilla,da")]
    methods: String,
    /// Timed steps (after warm-up).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
}

impl Args {
    pub fn run(self, device: &Device) -> Result<()> {
        let (r_cfg, d_cfg, b, p) = match self.preset.as_str() {
            "cpu" => (UNetConfig::cpu(), CondUNetConfig::cpu(), 8, 48),
            "paper" => (UNetConfig::paper(), CondUNetConfig::paper(), 24, 128),
            "paper-small" => (UNetConfig::paper(), CondUNetConfig::paper(), 2, 64),
            other => bail!("unknown bench preset {other:?} (cpu, paper, paper-small)"),
        };
        for method in self.methods.split(',') {
            if !matches!(method, "vanilla" | "da") {
                bail!("unknown method {method:?} (vanilla, da)");
            }
            let varmap = VarMap::new();
            let net = BackboneConfig::UNet(r_cfg.clone()).build(seeded_var_builder(
                &varmap,
                0,
                DType::F32,
                device,
            ))?;
            let d_varmap = VarMap::new();
            let unet = CondUNet::new(seeded_var_builder(&d_varmap, 1, DType::F32, device), &d_cfg)?;
            let loss = AdaptationLoss::new(NoiseSchedule::paper(), AdaptationConfig::paper())?;
            let mut vars: Vec<_> = varmap
                .data()
                .lock()
                .map(|d| {
                    d.iter()
                        .map(|(k, v)| (format!("r.{k}"), v.clone()))
                        .collect()
                })
                .unwrap_or_default();
            if method == "da" {
                vars.extend(
                    d_varmap
                        .data()
                        .lock()
                        .map(|d| {
                            d.iter()
                                .map(|(k, v)| (format!("d.{k}"), v.clone()))
                                .collect::<Vec<_>>()
                        })
                        .unwrap_or_default(),
                );
            }
            let mut opt = Adam::new(
                vars,
                OptimConfig {
                    lr: 1e-4,
                    ..OptimConfig::paper_denoise()
                },
            )?;
            let rand = || Tensor::rand(0f32, 1., (b, 3, p, p), device);
            let batch = Batch {
                source_input: rand()?,
                source_target: rand()?,
                target_input: Some(rand()?),
                ex_clean: None,
            };
            let adaptation = Adaptation {
                unet: &unet,
                loss: &loss,
                lambda_max: 0.2,
                ramp_steps: 0,
            };
            let mut rng = daa_degrade::sample_rng(0, 0, 0);
            let mut times = Vec::new();
            for i in 0..self.warmup + self.steps {
                let t0 = Instant::now();
                let parts = step_losses(
                    &batch,
                    &net,
                    (method == "da").then_some(&adaptation),
                    1e-3,
                    1000,
                    &mut rng,
                )?;
                opt.step(&parts.total.backward()?)?;
                device.synchronize()?;
                if i >= self.warmup {
                    times.push(t0.elapsed().as_secs_f64() * 1e3);
                }
            }
            times.sort_by(|a, b| a.total_cmp(b));
            let median = times[times.len() / 2];
            #[allow(clippy::print_stdout)]
            {
                println!(
                    "{}",
                    serde_json::json!({"impl": "daa", "threads": candle_core::utils::get_num_threads(), "preset": self.preset, "method": method, "median_ms": (median * 100.0).round() / 100.0, "peak_rss_mb": peak_rss_mb()})
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
