use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use candle_core::Device;
use daa_train::{Event, Method, Overrides, Precision, TrainConfig, ValueRange, PRESETS};
use indicatif::{ProgressBar, ProgressStyle};

/// Flags of `daa train`. Settings come from `--preset` (default `denoise`) or `--config`,
/// then each flag given overrides one field. The resolved config is saved in the run folder.
#[derive(clap::Args)]
// `--steps -1` and `--lr -1` reach the value parser and the config check, which name the flag
// and the value, instead of reading as an unknown argument `-1`.
#[command(allow_negative_numbers = true)]
pub struct Args {
    /// A named preset: denoise (DA on a CPU, embedded photos), denoise-vanilla (its supervised
    /// baseline), deblur, derain (the other tasks on a CPU), denoise-paper, deblur-paper,
    /// derain-paper (the paper's networks and settings, GPU scale), smoke (tests). Default:
    /// denoise; with --resume, the run's own.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(PRESETS))]
    preset: Option<String>,
    /// A JSON config file (as written to a run's config.json) instead of a preset.
    #[arg(long, conflicts_with = "preset")]
    config: Option<PathBuf>,
    /// Run folder (default: runs/<preset>-<unix time>).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Continue the run in --run-dir from its last checkpoint, with its saved config.json
    /// (flags given now still override; only --steps may differ from the original run).
    #[arg(long, requires = "run_dir")]
    resume: bool,
    /// Optimizer steps.
    #[arg(long)]
    steps: Option<usize>,
    /// Batch size.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Training patch side.
    #[arg(long)]
    patch_size: Option<usize>,
    /// Learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// The run's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Restoration network at the preset's scale (unet, dncnn, nafnet, restormer, uformer), or
    /// with its scale (unet-cpu, nafnet-tiny, restormer-paper, ...).
    #[arg(long)]
    backbone: Option<String>,
    /// Train on clean photos from this folder (degraded by the preset's degradation).
    #[arg(long, conflicts_with_all = ["train_input", "train_target"])]
    train_clean: Option<PathBuf>,
    /// Train on aligned pairs: degraded inputs...
    #[arg(long, requires = "train_target")]
    train_input: Option<PathBuf>,
    /// ...and their clean targets (paired by file name).
    #[arg(long, requires = "train_input")]
    train_target: Option<PathBuf>,
    /// Evaluate on clean held-out photos from this folder (degraded like the training data).
    #[arg(long, conflicts_with = "test_input")]
    test_clean: Option<PathBuf>,
    /// Or evaluate on held-out pairs: degraded inputs (e.g. `daa data prepare` output)...
    #[arg(long, requires = "test_target")]
    test_input: Option<PathBuf>,
    /// ...and their clean targets, paired by file name.
    #[arg(long, requires = "test_input")]
    test_target: Option<PathBuf>,
    /// Training method: vanilla (source pairs only), da (noise-space adaptation), da-ex, dann
    /// (feature-space baseline: domain classifier with gradient reversal).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(Method::names()))]
    method: Option<String>,
    /// Value range the networks train in: unit ([0, 1], the reference's for denoising) or
    /// signed ([-1, 1], its for deraining and deblurring). Default: the preset's.
    #[arg(long, value_parser = ["unit", "signed"])]
    range: Option<String>,
    /// Arithmetic of the convolutions: f32, or bf16 (convs forward and backward in bf16 through
    /// autocast; weights, Adam, GroupNorm statistics and losses stay f32; docs/cuda.md). bf16
    /// is for GPUs: on a CPU it rounds around an f32 conv and is slower. Default: f32.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(Precision::names()))]
    precision: Option<String>,
    /// Target-domain ("real") training inputs: a folder of degraded images, no references.
    #[arg(long)]
    real_dir: Option<PathBuf>,
    /// Final weight of the noise loss (the paper: 0.2).
    #[arg(long)]
    lambda: Option<f64>,
    /// Steps over which lambda ramps up (at this run's batch size; stored as samples).
    #[arg(long, conflicts_with = "ramp_samples")]
    ramp_steps: Option<usize>,
    /// Training samples over which lambda ramps up (continuous ramp from 0).
    #[arg(long)]
    ramp_samples: Option<u64>,
    /// Turn channel shuffling off (ablation).
    #[arg(long)]
    no_shuffle: bool,
    /// Turn the residual-swapping contrastive term off (ablation).
    #[arg(long)]
    no_contrastive: bool,
    /// Smallest diffusion step sampled (1..=999).
    #[arg(long)]
    t_min: Option<usize>,
    /// Largest diffusion step sampled (1..=999).
    #[arg(long)]
    t_max: Option<usize>,
    /// EMA decay of the restorer's weights (e.g. 0.999; 0 = off). Evaluation then uses the EMA.
    #[arg(long)]
    ema: Option<f64>,
    /// Oracle (the upper bound of a domain-adaptation comparison): supervised on target-domain
    /// pairs, i.e. the preset's target degradation applied to its clean training photos.
    #[arg(long, conflicts_with_all = ["method", "train_input"])]
    oracle: bool,
    /// For da-ex: a folder of unpaired clean images to noise.
    #[arg(long)]
    ex_clean: Option<PathBuf>,
    /// Save a checkpoint every N steps (0: only at the end).
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// Periodic checkpoints to keep (the best and the last are kept too).
    #[arg(long)]
    keep_last: Option<usize>,
    /// Evaluate every N steps (0: only at the end).
    #[arg(long)]
    eval_every: Option<usize>,
    /// Print the resolved config as JSON and exit.
    #[arg(long)]
    print_config: bool,
}

impl Args {
    /// The flags as overrides of the preset or config file.
    fn overrides(&self) -> Result<Overrides> {
        let pair = |i: &Option<PathBuf>, t: &Option<PathBuf>| i.clone().zip(t.clone());
        Ok(Overrides {
            steps: self.steps,
            batch_size: self.batch_size,
            patch_size: self.patch_size,
            lr: self.lr,
            seed: self.seed,
            checkpoint_every: self.checkpoint_every,
            keep_last: self.keep_last,
            ema_decay: self.ema,
            eval_every: self.eval_every,
            method: self.method.as_deref().map(str::parse).transpose()?,
            range: match self.range.as_deref() {
                None => None,
                Some("signed") => Some(ValueRange::Signed),
                Some("unit") => Some(ValueRange::Unit),
                Some(other) => anyhow::bail!("unknown --range {other:?} (use unit or signed)"),
            },
            precision: self.precision.as_deref().map(str::parse).transpose()?,
            real_dir: self.real_dir.clone(),
            lambda_max: self.lambda,
            ramp_steps: self.ramp_steps,
            ramp_samples: self.ramp_samples,
            no_shuffle: self.no_shuffle,
            no_contrastive: self.no_contrastive,
            t_min: self.t_min,
            t_max: self.t_max,
            oracle: self.oracle,
            ex_clean_dir: self.ex_clean.clone(),
            backbone: self.backbone.clone(),
            train_clean: self.train_clean.clone(),
            train_pairs: pair(&self.train_input, &self.train_target),
            test_clean: self.test_clean.clone(),
            test_pairs: pair(&self.test_input, &self.test_target),
        })
    }

    fn resolve(&self) -> Result<TrainConfig> {
        // --resume continues with the run's own saved config (flags still override), so the
        // preset and flags of the first invocation need not be repeated.
        let saved = self
            .run_dir
            .as_ref()
            .map(|d| d.join("config.json"))
            .filter(|p| self.resume && p.exists());
        let mut cfg = match self.config.as_ref().or(saved.as_ref()) {
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| format!("reading {p:?}"))?;
                TrainConfig::from_json(&text).with_context(|| format!("parsing {p:?}"))?
            }
            None => TrainConfig::preset(self.preset.as_deref().unwrap_or("denoise"))?,
        };
        if let (Some(asked), Some(_), None) = (&self.preset, &saved, &self.config) {
            if *asked != cfg.preset {
                bail!(
                    "--preset {asked} does not match the run being resumed (preset {}): --resume \
                     continues the run's saved settings; drop --preset, or start a new run in \
                     another --run-dir",
                    cfg.preset
                );
            }
        }
        self.overrides()?.apply(&mut cfg)?;
        Ok(cfg)
    }

    pub fn run(self, device: &Device) -> Result<()> {
        let cfg = self.resolve()?;
        if self.print_config {
            #[allow(clippy::print_stdout)]
            {
                println!("{}", serde_json::to_string_pretty(&cfg)?);
            }
            return Ok(());
        }
        let run_dir = self.run_dir.clone().unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            PathBuf::from("runs").join(format!("{}-{t}", cfg.preset))
        });
        super::note(format!(
            "training {} with {} ({} preset) for {} steps in {run_dir:?}",
            cfg.backbone.name(),
            cfg.method,
            cfg.preset,
            cfg.steps
        ));
        let mut progress = TrainProgress::new(cfg.steps);
        let bar = progress.bar.clone();
        let mut on_event = |e: &Event| match e {
            Event::Started {
                start_step,
                parameters,
                ..
            } => {
                progress.started(*start_step);
                super::say(&bar, format!("restorer: {parameters} parameters"));
            }
            Event::Progress { step, .. } => progress.step(*step),
            Event::Step {
                losses,
                seconds_per_step,
                ..
            } => progress.losses(losses, *seconds_per_step),
            Event::SkippedStep { step, in_a_row } => {
                super::say(
                    &bar,
                    format!(
                        "warning: non-finite loss at step {step}, skipped ({in_a_row} in a row)"
                    ),
                );
            }
            Event::Evaluated { step, report } => super::say(
                &bar,
                format!(
                    "step {step}: held-out PSNR {:.2} dB, SSIM {:.4} (input {:.2} dB, {:.4})",
                    report.mean_restored.psnr,
                    report.mean_restored.ssim,
                    report.mean_input.psnr,
                    report.mean_input.ssim
                ),
            ),
            Event::Checkpoint { .. } => {}
            Event::Warning { message } => super::say(&bar, format!("warning: {message}")),
        };
        // Ctrl-C and SIGTERM set the flag; the engine checkpoints the current step and stops.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        ctrlc::set_handler(move || flag.store(true, std::sync::atomic::Ordering::SeqCst))
            .context("installing the Ctrl-C / SIGTERM handler")?;
        let summary =
            daa_train::train_until(&cfg, &run_dir, device, self.resume, &stop, &mut on_event);
        bar.finish_and_clear();
        let summary = summary?;
        let r = &summary.final_eval;
        let gain = r.mean_restored.psnr - r.mean_input.psnr;
        // Written without panicking: a closed stdout (`daa train | head -1`) loses these lines,
        // never the run, which is saved by now.
        super::out(format!(
            "\nHeld-out evaluation after {} steps ({} images):\n\n{}\nrestored {:.2} dB / {:.4} vs input {:.2} dB / {:.4} ({gain:+.2} dB)\nrun folder: {}  (checkpoint: {})",
            summary.steps,
            r.images.len(),
            r.to_markdown(),
            r.mean_restored.psnr,
            r.mean_restored.ssim,
            r.mean_input.psnr,
            r.mean_input.ssim,
            summary.run_dir.display(),
            summary.checkpoint.display()
        ));
        Ok(())
    }
}

/// Training progress: steps, seconds per step, ETA and the latest losses. On a terminal, an
/// indicatif bar on stderr; on a pipe or file (CI, `2> log`) indicatif draws nothing, and about
/// ten plain lines with the same facts are written instead, without escape codes.
struct TrainProgress {
    bar: ProgressBar,
    total: usize,
    /// When timing began and at which step (a resumed run's earlier steps are not timed).
    since: Option<(Instant, usize)>,
    /// The latest logged losses and seconds per step, as shown.
    latest: String,
}

impl TrainProgress {
    fn new(total: usize) -> Self {
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} step {pos}/{len} {bar:30} {elapsed_precise}, ETA {eta_precise} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Self {
            bar,
            total,
            since: None,
            latest: String::new(),
        }
    }

    /// Training starts at `start_step` (non-zero when resuming).
    fn started(&mut self, start_step: usize) {
        self.bar.set_position(start_step as u64);
        // The jump to a resumed step is not speed: estimate the ETA from the steps run now.
        self.bar.reset_eta();
        self.since = Some((Instant::now(), start_step));
    }

    /// The remaining time from the mean time per step since the start, once a step is done.
    fn eta(&self, step: usize) -> Option<Duration> {
        let (t0, s0) = self.since?;
        let done = step.checked_sub(s0).filter(|&d| d > 0)?;
        let per_step = t0.elapsed().as_secs_f64() / done as f64;
        Some(Duration::from_secs_f64(
            per_step * self.total.saturating_sub(step) as f64,
        ))
    }

    /// Step `step` is done.
    fn step(&mut self, step: usize) {
        self.bar.set_position(step as u64);
        let every = (self.total / 10).max(1);
        if self.bar.is_hidden() && (step.is_multiple_of(every) || step == self.total) {
            let eta = self.eta(step).map_or("?".into(), hms);
            let latest = match self.latest.is_empty() {
                true => String::new(),
                false => format!(": {}", self.latest),
            };
            super::note(format!("step {step}/{}, ETA {eta}{latest}", self.total));
        }
    }

    /// The losses logged at a log interval.
    fn losses(&mut self, losses: &[(&'static str, f64)], seconds_per_step: f64) {
        let shown: Vec<String> = losses
            .iter()
            .filter(|(k, _)| {
                self.bar.is_hidden() || matches!(*k, "total" | "rec" | "noise" | "lambda")
            })
            .map(|(k, v)| format!("{k} {v:.4}"))
            .collect();
        self.latest = format!("{} | {seconds_per_step:.2} s/step", shown.join(" "));
        self.bar.set_message(self.latest.clone());
    }
}

/// `H:MM:SS`.
fn hms(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}
