//! The training loop: data producer thread, optimizer steps, logging, evaluation, checkpoints.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use daa_backbones::parameter_count;
use daa_degrade::{collate, sample_rng, PairSource, PairedFolder, SyntheticPairs, UnpairedFolder};
use rand::seq::SliceRandom;

use crate::checkpoint::{load_into, periodic_checkpoints, save_tensors};
use crate::{charbonnier, evaluate, save_restorer, Adam, DataSpec, Error, EvalReport, Event, Result, TileConfig, TrainConfig};

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// The run folder.
    pub run_dir: PathBuf,
    /// Steps done.
    pub steps: usize,
    /// The final evaluation on the held-out set.
    pub final_eval: EvalReport,
    /// The final restorer checkpoint.
    pub checkpoint: PathBuf,
}

/// Opens a [`DataSpec`] as a pair source. Every file is checked here, before training starts.
pub(crate) fn open_pairs(spec: &DataSpec, cfg: &TrainConfig, augment: bool) -> Result<Box<dyn PairSource>> {
    Ok(match spec {
        DataSpec::Synthetic { clean_dir, degradation } => {
            let clean = UnpairedFolder::open(clean_dir, augment, cfg.small_images, cfg.cache_images)?;
            Box::new(SyntheticPairs::new(clean, degradation.clone())?)
        }
        DataSpec::Paired { input_dir, target_dir } => {
            Box::new(PairedFolder::open(input_dir, target_dir, augment, cfg.small_images, cfg.cache_images)?)
        }
    })
}

/// The order in which epoch `epoch` visits the `n` images: a seeded permutation.
fn epoch_order(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut sample_rng(seed ^ 0x6461_615f_6f72_6472, epoch, u64::MAX));
    order
}

/// Batch `step` as `(input, target)` CPU tensors. A pure function of (config, step): sample
/// `k` of step `s` is global sample `g = s * B + k`, image `order(epoch)[g % N]`, with RNG
/// `sample_rng(seed, epoch, g)`. So resuming at any step reproduces the same batches.
fn make_batch(data: &dyn PairSource, cfg: &TrainConfig, step: usize) -> Result<(Tensor, Tensor)> {
    let n = data.len();
    let mut inputs = Vec::with_capacity(cfg.batch_size);
    let mut targets = Vec::with_capacity(cfg.batch_size);
    let mut order: Option<(u64, Vec<usize>)> = None;
    for k in 0..cfg.batch_size {
        let g = (step * cfg.batch_size + k) as u64;
        let epoch = g / n as u64;
        if order.as_ref().is_none_or(|(e, _)| *e != epoch) {
            order = Some((epoch, epoch_order(cfg.seed, epoch, n)));
        }
        let idx = order.as_ref().map(|(_, o)| o[(g % n as u64) as usize]).unwrap_or(0);
        let (x, y) = data.patch(idx, cfg.patch_size, &mut sample_rng(cfg.seed, epoch, g))?;
        inputs.push(x);
        targets.push(y);
    }
    Ok((collate(&inputs)?, collate(&targets)?))
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Config(e.to_string()))?;
    crate::write_atomic(path, |tmp| std::fs::write(tmp, text + "\n").map_err(|e| Error::io(tmp, e)))
}

/// The state needed to continue a run, beside each checkpoint.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct TrainState {
    step: usize,
    best_psnr: Option<f64>,
}

struct RunFiles {
    dir: PathBuf,
    metrics: std::fs::File,
}

impl RunFiles {
    fn log(&mut self, value: serde_json::Value) -> Result<()> {
        writeln!(self.metrics, "{value}").map_err(|e| Error::io(self.dir.join("metrics.jsonl"), e))
    }
}

/// Trains a restorer as `cfg` says, in `run_dir` (created; an existing run there is resumed
/// when `resume` is set, and refused otherwise). `on_event` receives progress.
pub fn train(cfg: &TrainConfig, run_dir: &Path, device: &Device, resume: bool, on_event: &mut dyn FnMut(&Event)) -> Result<TrainSummary> {
    cfg.validate()?;
    // Open (and so check) every dataset before anything is written or trained.
    let train_data = open_pairs(&cfg.train_data, cfg, cfg.augment)?;
    let eval_data = open_pairs(&cfg.eval.data, cfg, false)?;

    let state_path = run_dir.join("train_state.json");
    let resuming = state_path.exists();
    if resuming && !resume {
        return Err(Error::Config(format!("{run_dir:?} already holds a run; pass --resume to continue it or choose another folder")));
    }
    std::fs::create_dir_all(run_dir).map_err(|e| Error::io(run_dir, e))?;
    if resuming {
        let saved = std::fs::read_to_string(run_dir.join("config.json")).map_err(|e| Error::io(run_dir.join("config.json"), e))?;
        let saved = TrainConfig::from_json(&saved)?;
        if (TrainConfig { steps: cfg.steps, ..saved.clone() }) != *cfg {
            return Err(Error::Config("the run's saved config.json differs from this config (other than steps); resume with the same settings".into()));
        }
    }
    write_json(&run_dir.join("config.json"), cfg)?;

    let varmap = VarMap::new();
    let net = cfg.backbone.build(crate::seeded_var_builder(&varmap, cfg.seed, DType::F32, device))?;
    let named: Vec<_> = {
        let data = varmap.data().lock().map_err(|e| Error::Config(e.to_string()))?;
        data.iter()
            .filter(|(k, _)| !k.ends_with("running_mean") && !k.ends_with("running_var"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let mut opt = Adam::new(named, cfg.optim)?;

    let mut state = TrainState { step: 0, best_psnr: None };
    if resuming {
        let text = std::fs::read_to_string(&state_path).map_err(|e| Error::io(&state_path, e))?;
        state = serde_json::from_str(&text).map_err(|e| Error::Checkpoint { path: state_path.clone(), reason: e.to_string() })?;
        load_into(&varmap, &run_dir.join(format!("restorer-{}.safetensors", state.step)), device)?;
        let opt_path = run_dir.join(format!("optimizer-{}.safetensors", state.step));
        let tensors = candle_core::safetensors::load(&opt_path, device)
            .map_err(|e| Error::Checkpoint { path: opt_path.clone(), reason: e.to_string() })?;
        opt.load_state(&tensors, state.step as u64)?;
        tracing::info!(step = state.step, "resumed");
    }

    let metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run_dir.join("metrics.jsonl"))
        .map_err(|e| Error::io(run_dir.join("metrics.jsonl"), e))?;
    let mut files = RunFiles { dir: run_dir.to_path_buf(), metrics };
    on_event(&Event::Started { start_step: state.step, total_steps: cfg.steps, parameters: parameter_count(&varmap) });

    let tiles = TileConfig::default();
    let mut last_ckpt = None;
    let start = state.step;
    std::thread::scope(|scope| -> Result<()> {
        let (tx, rx) = mpsc::sync_channel::<Result<(Tensor, Tensor)>>(4);
        let data = train_data.as_ref();
        scope.spawn(move || {
            for step in start..cfg.steps {
                if tx.send(make_batch(data, cfg, step)).is_err() {
                    break;
                }
            }
        });
        let mut t_log = Instant::now();
        let mut steps_since_log = 0usize;
        let mut nonfinite = 0usize;
        for step in start..cfg.steps {
            let (xs, ys) = rx.recv().map_err(|_| Error::Config("data producer stopped".into()))??;
            let (xs, ys) = (xs.to_device(device)?, ys.to_device(device)?);
            // Patches are multiples of the size multiple (validated), so no padding is needed.
            let restored = (&xs + net.residual(&xs, true)?)?;
            let loss = charbonnier(&restored, &ys, cfg.charbonnier_eps)?;
            let loss_v = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            let done = step + 1;
            if !loss_v.is_finite() {
                nonfinite += 1;
                tracing::warn!(step = done, loss = loss_v, in_a_row = nonfinite, "non-finite loss, step skipped");
                on_event(&Event::SkippedStep { step: done, in_a_row: nonfinite });
                if nonfinite >= cfg.max_nonfinite_steps {
                    return Err(Error::Diverged(format!("{nonfinite} non-finite losses in a row at step {done}; lower the learning rate")));
                }
                continue;
            }
            nonfinite = 0;
            opt.step(&loss.backward()?)?;
            steps_since_log += 1;
            if done % cfg.log_every == 0 || done == cfg.steps {
                let sps = t_log.elapsed().as_secs_f64() / steps_since_log.max(1) as f64;
                let losses = vec![("total", loss_v), ("rec", loss_v)];
                tracing::info!(step = done, loss_rec = loss_v, lr = cfg.optim.lr, "train");
                files.log(serde_json::json!({"step": done, "loss_total": loss_v, "loss_rec": loss_v, "lr": cfg.optim.lr, "sec_per_step": sps}))?;
                on_event(&Event::Step { step: done, total_steps: cfg.steps, losses, lr: cfg.optim.lr, seconds_per_step: sps });
                t_log = Instant::now();
                steps_since_log = 0;
            }
            let eval_now = cfg.eval.every > 0 && done % cfg.eval.every == 0 && done != cfg.steps;
            if eval_now {
                let report = evaluate(&net, eval_data.as_ref(), &cfg.eval.metric, cfg.eval.seed, device, tiles, None)?;
                record_eval(&mut files, &mut state, &varmap, cfg, done, &report, on_event)?;
            }
            let ckpt_now = (cfg.checkpoint_every > 0 && done % cfg.checkpoint_every == 0) || done == cfg.steps;
            if ckpt_now {
                state.step = done;
                last_ckpt = Some(checkpoint(run_dir, &varmap, &opt, cfg, &state)?);
                if let Some(p) = &last_ckpt {
                    on_event(&Event::Checkpoint { path: p.clone() });
                }
            }
        }
        Ok(())
    })?;

    let eval_dir = run_dir.join("eval");
    let report = evaluate(&net, eval_data.as_ref(), &cfg.eval.metric, cfg.eval.seed, device, tiles, Some(&eval_dir))?;
    record_eval(&mut files, &mut state, &varmap, cfg, cfg.steps, &report, on_event)?;
    write_json(&run_dir.join("eval.json"), &report)?;
    crate::write_atomic(&run_dir.join("eval.md"), |tmp| std::fs::write(tmp, report.to_markdown()).map_err(|e| Error::io(tmp, e)))?;
    let checkpoint = match last_ckpt {
        Some(p) => p,
        None => run_dir.join(format!("restorer-{}.safetensors", state.step)),
    };
    Ok(TrainSummary { run_dir: run_dir.to_path_buf(), steps: cfg.steps, final_eval: report, checkpoint })
}

fn record_eval(
    files: &mut RunFiles,
    state: &mut TrainState,
    varmap: &VarMap,
    cfg: &TrainConfig,
    step: usize,
    report: &EvalReport,
    on_event: &mut dyn FnMut(&Event),
) -> Result<()> {
    let r = &report.mean_restored;
    tracing::info!(step, psnr = r.psnr, ssim = r.ssim, "eval");
    files.log(serde_json::json!({"step": step, "eval_psnr": r.psnr, "eval_ssim": r.ssim,
        "input_psnr": report.mean_input.psnr, "input_ssim": report.mean_input.ssim}))?;
    if state.best_psnr.is_none_or(|b| r.psnr > b) {
        state.best_psnr = Some(r.psnr);
        save_restorer(&files.dir.join("restorer-best.safetensors"), varmap, &cfg.backbone)?;
    }
    on_event(&Event::Evaluated { step, report: report.clone() });
    Ok(())
}

/// Writes `restorer-{step}`, `optimizer-{step}` and `train_state.json` (last, so that a crash
/// mid-way leaves the previous state pointing at complete files), then prunes old ones.
fn checkpoint(dir: &Path, varmap: &VarMap, opt: &Adam, cfg: &TrainConfig, state: &TrainState) -> Result<PathBuf> {
    let path = dir.join(format!("restorer-{}.safetensors", state.step));
    save_restorer(&path, varmap, &cfg.backbone)?;
    let opt_path = dir.join(format!("optimizer-{}.safetensors", state.step));
    let meta = HashMap::from([("daa.format".to_string(), "daa-optimizer-v1".to_string())]);
    save_tensors(&opt_path, &opt.state_tensors(), meta)?;
    write_json(&dir.join("train_state.json"), state)?;
    let periodic = periodic_checkpoints(dir);
    let keep = cfg.keep_last.max(1);
    for (step, p) in periodic.iter().take(periodic.len().saturating_sub(keep)) {
        let _ = std::fs::remove_file(p);
        let _ = std::fs::remove_file(dir.join(format!("optimizer-{step}.safetensors")));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_orders_are_permutations_that_change_per_epoch() {
        let a = epoch_order(1, 0, 10);
        let b = epoch_order(1, 1, 10);
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..10).collect::<Vec<_>>());
        assert_ne!(a, b);
        assert_eq!(a, epoch_order(1, 0, 10));
    }
}
