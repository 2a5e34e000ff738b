//! The training loop: data producer thread, optimizer steps, logging, evaluation, checkpoints.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use daa_backbones::parameter_count;
use daa_degrade::{
    collate, sample_rng, save_image, Image, PairSource, PairedFolder, SyntheticPairs,
    UnpairedFolder,
};
use daa_diffusion::{AdaptationLoss, CondUNet, NoiseSchedule};
use rand::seq::SliceRandom;

use crate::checkpoint::{load_into, periodic_checkpoints, save_tensors, varmap_tensors};
use crate::step::{step_losses, Adaptation, Batch, LossParts};
use crate::{
    evaluate, save_restorer, Adam, DataSpec, Error, EvalReport, Event, Method, Result, TargetSpec,
    TileConfig, TrainConfig,
};

/// Salts that give each random stream of a run its own sequence from the one seed.
const SALT_ORDER: u64 = 0x6461_615f_6f72_6472;
const SALT_TARGET: u64 = 0x7461_7267_6574_0001;
const SALT_EX: u64 = 0x6578_636c_6561_6e02;
const SALT_STEP: u64 = 0x7374_6570_0000_0003;
const SALT_DIFFUSION: u64 = 0x6469_6666_0000_0004;
const SALT_MATERIALIZE: u64 = 0x6d61_7465_7269_0005;

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
pub(crate) fn open_pairs(
    spec: &DataSpec,
    cfg: &TrainConfig,
    augment: bool,
) -> Result<Box<dyn PairSource>> {
    Ok(match spec {
        DataSpec::Synthetic {
            clean_dir,
            degradation,
        } => {
            let clean =
                UnpairedFolder::open(clean_dir, augment, cfg.small_images, cfg.cache_images)?;
            Box::new(SyntheticPairs::new(clean, degradation.clone())?)
        }
        DataSpec::Paired {
            input_dir,
            target_dir,
        } => Box::new(PairedFolder::open(
            input_dir,
            target_dir,
            augment,
            cfg.small_images,
            cfg.cache_images,
        )?),
    })
}

/// The order in which epoch `epoch` visits the `n` images: a seeded permutation.
fn epoch_order(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut sample_rng(seed ^ SALT_ORDER, epoch, u64::MAX));
    order
}

/// Global sample `g` of a stream over `n` images: `(epoch, image index)`.
fn pick(seed: u64, n: usize, g: u64, cache: &mut Option<(u64, Vec<usize>)>) -> (u64, usize) {
    let epoch = g / n as u64;
    if cache.as_ref().is_none_or(|(e, _)| *e != epoch) {
        *cache = Some((epoch, epoch_order(seed, epoch, n)));
    }
    let idx = cache
        .as_ref()
        .map(|(_, o)| o[(g % n as u64) as usize])
        .unwrap_or(0);
    (epoch, idx)
}

/// The data of a run, opened (and so checked) before training.
struct Data {
    source: Box<dyn PairSource>,
    target: Option<UnpairedFolder>,
    ex_clean: Option<UnpairedFolder>,
}

/// Batch `step` on the CPU. A pure function of (config, step): sample `k` of step `s` is
/// global sample `g = s * B + k` of each stream; the source stream visits image
/// `order(epoch)[g % N]` with RNG `sample_rng(seed, epoch, g)`, and the target and Ex streams
/// do the same with their own salts (independent crops). Resuming at any step reproduces them.
fn make_batch(data: &Data, cfg: &TrainConfig, step: usize) -> Result<Batch> {
    let p = cfg.patch_size;
    let (mut xs, mut ys, mut xr, mut ex) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut c_s, mut c_r, mut c_e) = (None, None, None);
    for k in 0..cfg.batch_size {
        let g = (step * cfg.batch_size + k) as u64;
        let (epoch, idx) = pick(cfg.seed, data.source.len(), g, &mut c_s);
        let (x, y) = data
            .source
            .patch(idx, p, &mut sample_rng(cfg.seed, epoch, g))?;
        xs.push(x);
        ys.push(y);
        if let Some(t) = &data.target {
            let seed = cfg.seed ^ SALT_TARGET;
            let (epoch, idx) = pick(seed, t.len(), g, &mut c_r);
            xr.push(t.patch(idx, p, &mut sample_rng(seed, epoch, g))?);
        }
        if let Some(e) = &data.ex_clean {
            let seed = cfg.seed ^ SALT_EX;
            let (epoch, idx) = pick(seed, e.len(), g, &mut c_e);
            ex.push(e.patch(idx, p, &mut sample_rng(seed, epoch, g))?);
        }
    }
    let opt = |v: Vec<Image>| -> Result<Option<Tensor>> {
        if v.is_empty() {
            Ok(None)
        } else {
            Ok(Some(collate(&v)?))
        }
    };
    Ok(Batch {
        source_input: collate(&xs)?,
        source_target: collate(&ys)?,
        target_input: opt(xr)?,
        ex_clean: opt(ex)?,
    })
}

/// Degrades every clean photo `variants` times into `dir/input` (and keeps the clean copies in
/// `dir/gt`, which training never reads). Skipped when `dir/input` is already complete, as on
/// resume; the content is a pure function of the seed anyway.
fn materialize_target(
    dir: &Path,
    clean_dir: &Path,
    degradation: &daa_degrade::Degradation,
    variants: usize,
    cfg: &TrainConfig,
) -> Result<PathBuf> {
    let input = dir.join("input");
    let gt = dir.join("gt");
    let clean = UnpairedFolder::open(clean_dir, false, cfg.small_images, false)?;
    let expected = clean.len() * variants;
    let done = std::fs::read_dir(&input).map(|d| d.count()).unwrap_or(0);
    if done == expected {
        return Ok(input);
    }
    for d in [&input, &gt] {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    for i in 0..clean.len() {
        let (img, name) = clean.image(i)?;
        for v in 0..variants {
            let mut rng = sample_rng(cfg.seed ^ SALT_MATERIALIZE, v as u64, i as u64);
            let degraded = degradation.apply(&img, &mut rng)?;
            save_image(input.join(format!("{name}_{v}.png")), &degraded)?;
            save_image(gt.join(format!("{name}_{v}.png")), &img)?;
        }
    }
    Ok(input)
}

fn named_vars(varmap: &VarMap, prefix: &str) -> Result<Vec<(String, Var)>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|e| Error::Config(e.to_string()))?;
    Ok(data
        .iter()
        .filter(|(k, _)| !k.ends_with("running_mean") && !k.ends_with("running_var"))
        .map(|(k, v)| (format!("{prefix}{k}"), v.clone()))
        .collect())
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Config(e.to_string()))?;
    crate::write_atomic(path, |tmp| {
        std::fs::write(tmp, text + "\n").map_err(|e| Error::io(tmp, e))
    })
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
pub fn train(
    cfg: &TrainConfig,
    run_dir: &Path,
    device: &Device,
    resume: bool,
    on_event: &mut dyn FnMut(&Event),
) -> Result<TrainSummary> {
    train_until(
        cfg,
        run_dir,
        device,
        resume,
        &AtomicBool::new(false),
        on_event,
    )
}

/// [`train`], stopping cleanly when `stop` becomes true (e.g. on Ctrl-C): the current step is
/// checkpointed and [`Error::Interrupted`] returned; `--resume` continues from there.
pub fn train_until(
    cfg: &TrainConfig,
    run_dir: &Path,
    device: &Device,
    resume: bool,
    stop: &AtomicBool,
    on_event: &mut dyn FnMut(&Event),
) -> Result<TrainSummary> {
    cfg.validate()?;
    let adapt = cfg.method != Method::Vanilla;
    // Open (and so check) every dataset before anything is written or trained.
    let source = open_pairs(&cfg.train_data, cfg, cfg.augment)?;
    let eval_data = open_pairs(&cfg.eval.data, cfg, false)?;
    // SSIM's 11x11 window must fit every held-out image: say so now, not at the first eval.
    if let Some((w, h)) = eval_data.smallest_size()? {
        let border = 2 * cfg.eval.metric.crop_border;
        if w < 11 + border || h < 11 + border {
            return Err(Error::Config(format!(
                "held-out images must be at least {0}x{0} pixels (SSIM's 11x11 window after a \
                 crop border of {1}); the smallest is {w}x{h}",
                11 + border,
                cfg.eval.metric.crop_border
            )));
        }
    }
    let mut target = match (&cfg.adaptation.target, adapt) {
        (TargetSpec::Folder { dir }, true) => Some(UnpairedFolder::open(
            dir,
            cfg.augment,
            cfg.small_images,
            cfg.cache_images,
        )?),
        (TargetSpec::Synthetic { clean_dir, .. }, true) => {
            UnpairedFolder::open(clean_dir, false, cfg.small_images, false)?;
            None
        }
        _ => None,
    };
    let ex_clean = if cfg.method == Method::DaEx {
        Some(UnpairedFolder::open(
            &cfg.adaptation.ex_clean_dir,
            cfg.augment,
            cfg.small_images,
            cfg.cache_images,
        )?)
    } else {
        None
    };

    let state_path = run_dir.join("train_state.json");
    let resuming = state_path.exists();
    if resuming && !resume {
        return Err(Error::Config(format!("{run_dir:?} already holds a run; pass --resume to continue it or choose another folder")));
    }
    std::fs::create_dir_all(run_dir).map_err(|e| Error::io(run_dir, e))?;
    if resuming {
        let saved = std::fs::read_to_string(run_dir.join("config.json"))
            .map_err(|e| Error::io(run_dir.join("config.json"), e))?;
        let saved = TrainConfig::from_json(&saved)?;
        if (TrainConfig {
            steps: cfg.steps,
            ..saved.clone()
        }) != *cfg
        {
            return Err(Error::Config("the run's saved config.json differs from this config (other than steps); resume with the same settings".into()));
        }
    }
    write_json(&run_dir.join("config.json"), cfg)?;
    if let (
        TargetSpec::Synthetic {
            clean_dir,
            degradation,
            variants,
        },
        true,
    ) = (&cfg.adaptation.target, adapt)
    {
        let dir = materialize_target(
            &run_dir.join("target_train"),
            clean_dir,
            degradation,
            *variants,
            cfg,
        )?;
        target = Some(UnpairedFolder::open(
            dir,
            cfg.augment,
            cfg.small_images,
            cfg.cache_images,
        )?);
    }
    let data = Data {
        source,
        target,
        ex_clean,
    };

    let varmap = VarMap::new();
    let net = cfg.backbone.build(crate::seeded_var_builder(
        &varmap,
        cfg.seed,
        DType::F32,
        device,
    ))?;
    let mut named = named_vars(&varmap, "restorer.")?;
    let d_varmap = VarMap::new();
    let mut diffusion = None;
    if adapt {
        let a = &cfg.adaptation;
        let unet = CondUNet::new(
            crate::seeded_var_builder(&d_varmap, cfg.seed ^ SALT_DIFFUSION, DType::F32, device),
            &a.diffusion,
        )?;
        let loss = AdaptationLoss::new(NoiseSchedule::paper(), a.loss.clone())?;
        named.extend(named_vars(&d_varmap, "diffusion.")?);
        diffusion = Some((unet, loss));
    }
    let mut opt = Adam::new(named, cfg.optim)?;
    // The EMA copy of the restorer: its own variables and network, updated after every step.
    let ema = if cfg.ema_decay > 0.0 {
        let vm = VarMap::new();
        let ema_net =
            cfg.backbone
                .build(crate::seeded_var_builder(&vm, cfg.seed, DType::F32, device))?;
        ema_update(&vm, &varmap, 0.0)?;
        Some((vm, ema_net))
    } else {
        None
    };

    let mut state = TrainState {
        step: 0,
        best_psnr: None,
    };
    if resuming {
        let text = std::fs::read_to_string(&state_path).map_err(|e| Error::io(&state_path, e))?;
        state = serde_json::from_str(&text).map_err(|e| Error::Checkpoint {
            path: state_path.clone(),
            reason: e.to_string(),
        })?;
        load_into(
            &varmap,
            &run_dir.join(format!("restorer-{}.safetensors", state.step)),
            device,
        )?;
        if adapt {
            load_into(
                &d_varmap,
                &run_dir.join(format!("diffusion-{}.safetensors", state.step)),
                device,
            )?;
        }
        if let Some((vm, _)) = &ema {
            // The EMA is restored from its own file, not re-started from the raw weights.
            let path = run_dir.join(format!("restorer-ema-{}.safetensors", state.step));
            load_into(vm, &path, device)?;
        }
        let opt_path = run_dir.join(format!("optimizer-{}.safetensors", state.step));
        let tensors =
            candle_core::safetensors::load(&opt_path, device).map_err(|e| Error::Checkpoint {
                path: opt_path.clone(),
                reason: e.to_string(),
            })?;
        opt.load_state(&tensors, state.step as u64)?;
        tracing::info!(step = state.step, "resumed");
    }

    if resuming {
        truncate_metrics(&run_dir.join("metrics.jsonl"), state.step)?;
    }
    let metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run_dir.join("metrics.jsonl"))
        .map_err(|e| Error::io(run_dir.join("metrics.jsonl"), e))?;
    let mut files = RunFiles {
        dir: run_dir.to_path_buf(),
        metrics,
    };
    on_event(&Event::Started {
        start_step: state.step,
        total_steps: cfg.steps,
        parameters: parameter_count(&varmap),
    });

    let tiles = TileConfig::default();
    let nets = Nets {
        restorer: &varmap,
        diffusion: adapt.then_some(&d_varmap),
        ema: ema.as_ref().map(|(vm, _)| vm),
    };
    let eval_net = ema.as_ref().map(|(_, n)| n).unwrap_or(&net);
    let eval_vars = ema.as_ref().map(|(vm, _)| vm).unwrap_or(&varmap);
    let mut last_ckpt = None;
    let start = state.step;
    std::thread::scope(|scope| -> Result<()> {
        let (tx, rx) = mpsc::sync_channel::<Result<Batch>>(4);
        let data = &data;
        scope.spawn(move || {
            for step in start..cfg.steps {
                if tx.send(make_batch(data, cfg, step)).is_err() {
                    break;
                }
            }
        });
        let adaptation = diffusion.as_ref().map(|(unet, loss)| Adaptation {
            unet,
            loss,
            lambda_max: cfg.adaptation.lambda_max,
            ramp_steps: cfg.adaptation.ramp_steps,
        });
        let mut t_log = Instant::now();
        let mut steps_since_log = 0usize;
        let mut nonfinite = 0usize;
        for step in start..cfg.steps {
            if stop.load(Ordering::SeqCst) {
                // Ctrl-C: save where we are (unless that step is already saved) and stop.
                if state.step != step || last_ckpt.is_none() {
                    state.step = step;
                    let p = checkpoint(run_dir, &nets, &opt, cfg, &state)?;
                    on_event(&Event::Checkpoint { path: p });
                }
                return Err(Error::Interrupted { step });
            }
            let batch = rx
                .recv()
                .map_err(|_| Error::Config("data producer stopped".into()))??;
            let batch = to_device(batch, device)?;
            let mut rng = sample_rng(cfg.seed ^ SALT_STEP, step as u64, 0);
            if let Some(a) = &adaptation {
                a.unet
                    .reseed_dropout(rand::RngCore::next_u64(&mut sample_rng(
                        cfg.seed ^ SALT_DIFFUSION,
                        step as u64,
                        0,
                    )));
            }
            let parts = step_losses(
                &batch,
                &net,
                adaptation.as_ref(),
                cfg.charbonnier_eps,
                step,
                &mut rng,
            )?;
            let values = loss_values(&parts)?;
            let total = values[0].1;
            let done = step + 1;
            // A non-finite loss or gradient skips the step (the weights stay as they are).
            let grads = if total.is_finite() {
                Some(parts.total.backward()?)
            } else {
                None
            };
            let finite_grads = match &grads {
                Some(g) => opt.gradients_finite(g)?,
                None => false,
            };
            if !finite_grads {
                nonfinite += 1;
                tracing::warn!(
                    step = done,
                    loss = total,
                    in_a_row = nonfinite,
                    "non-finite loss or gradient, step skipped"
                );
                on_event(&Event::SkippedStep {
                    step: done,
                    in_a_row: nonfinite,
                });
                if nonfinite >= cfg.max_nonfinite_steps {
                    return Err(Error::Diverged(format!("{nonfinite} non-finite losses in a row at step {done}; lower the learning rate")));
                }
                continue;
            }
            nonfinite = 0;
            if let Some(g) = &grads {
                opt.step(g)?;
            }
            if let Some((vm, _)) = &ema {
                ema_update(vm, &varmap, cfg.ema_decay)?;
            }
            steps_since_log += 1;
            if done % cfg.log_every == 0 || done == cfg.steps {
                let sps = t_log.elapsed().as_secs_f64() / steps_since_log.max(1) as f64;
                let mut line = serde_json::Map::new();
                line.insert("step".into(), done.into());
                for (k, v) in &values {
                    line.insert(
                        if *k == "lambda" {
                            "lambda".to_string()
                        } else {
                            format!("loss_{k}")
                        },
                        (*v).into(),
                    );
                }
                line.insert("lr".into(), cfg.optim.lr.into());
                line.insert("sec_per_step".into(), sps.into());
                tracing::info!(
                    step = done,
                    loss_total = total,
                    lambda = parts.lambda,
                    "train"
                );
                files.log(serde_json::Value::Object(line))?;
                on_event(&Event::Step {
                    step: done,
                    total_steps: cfg.steps,
                    losses: values.clone(),
                    lr: cfg.optim.lr,
                    seconds_per_step: sps,
                });
                t_log = Instant::now();
                steps_since_log = 0;
            }
            let eval_now = cfg.eval.every > 0 && done % cfg.eval.every == 0 && done != cfg.steps;
            if eval_now {
                let report = evaluate(
                    eval_net,
                    eval_data.as_ref(),
                    &cfg.eval.metric,
                    cfg.eval.seed,
                    device,
                    tiles,
                    None,
                )?;
                record_eval(
                    &mut files, &mut state, eval_vars, cfg, done, &report, on_event,
                )?;
            }
            let ckpt_now =
                (cfg.checkpoint_every > 0 && done % cfg.checkpoint_every == 0) || done == cfg.steps;
            if ckpt_now {
                state.step = done;
                let p = checkpoint(run_dir, &nets, &opt, cfg, &state)?;
                on_event(&Event::Checkpoint { path: p.clone() });
                last_ckpt = Some(p);
            }
        }
        Ok(())
    })?;

    let eval_dir = run_dir.join("eval");
    let report = evaluate(
        eval_net,
        eval_data.as_ref(),
        &cfg.eval.metric,
        cfg.eval.seed,
        device,
        tiles,
        Some(&eval_dir),
    )?;
    record_eval(
        &mut files, &mut state, eval_vars, cfg, cfg.steps, &report, on_event,
    )?;
    write_json(&run_dir.join("eval.json"), &report)?;
    crate::write_atomic(&run_dir.join("eval.md"), |tmp| {
        std::fs::write(tmp, report.to_markdown()).map_err(|e| Error::io(tmp, e))
    })?;
    let checkpoint = match last_ckpt {
        Some(p) => p,
        None => run_dir.join(format!("restorer-{}.safetensors", state.step)),
    };
    Ok(TrainSummary {
        run_dir: run_dir.to_path_buf(),
        steps: cfg.steps,
        final_eval: report,
        checkpoint,
    })
}

/// Drops the lines logged after step `step` (by a run killed after its last checkpoint), so
/// that the resumed run's log reads as one uninterrupted run.
fn truncate_metrics(path: &Path, step: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s as usize <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    crate::write_atomic(path, |tmp| {
        std::fs::write(tmp, kept).map_err(|e| Error::io(tmp, e))
    })
}

struct Nets<'a> {
    restorer: &'a VarMap,
    diffusion: Option<&'a VarMap>,
    ema: Option<&'a VarMap>,
}

/// `ema = decay * ema + (1 - decay) * raw` for every variable (decay 0 copies).
fn ema_update(ema: &VarMap, raw: &VarMap, decay: f64) -> Result<()> {
    let raw = raw
        .data()
        .lock()
        .map_err(|e| Error::Config(e.to_string()))?;
    let ema = ema
        .data()
        .lock()
        .map_err(|e| Error::Config(e.to_string()))?;
    for (name, r) in raw.iter() {
        let Some(e) = ema.get(name) else { continue };
        let r = r.as_tensor().detach();
        let new = if decay == 0.0 {
            r
        } else {
            ((e.as_tensor().detach() * decay)? + (r * (1.0 - decay))?)?
        };
        e.set(&new)?;
    }
    Ok(())
}

fn to_device(b: Batch, device: &Device) -> Result<Batch> {
    let mv = |t: Option<Tensor>| -> Result<Option<Tensor>> {
        Ok(match t {
            Some(t) => Some(t.to_device(device)?),
            None => None,
        })
    };
    Ok(Batch {
        source_input: b.source_input.to_device(device)?,
        source_target: b.source_target.to_device(device)?,
        target_input: mv(b.target_input)?,
        ex_clean: mv(b.ex_clean)?,
    })
}

/// The named loss values of a step, `total` first (names as in the logs).
fn loss_values(p: &LossParts) -> Result<Vec<(&'static str, f64)>> {
    let v = |t: &Tensor| -> Result<f64> { Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?) };
    let mut out = vec![("total", v(&p.total)?), ("rec", v(&p.rec)?)];
    for (name, t) in [
        ("diff_pos", &p.diff_pos),
        ("diff_neg", &p.diff_neg),
        ("contrastive", &p.contrastive),
        ("noise", &p.noise),
    ] {
        if let Some(t) = t {
            out.push((name, v(t)?));
        }
    }
    if p.noise.is_some() {
        out.push(("lambda", p.lambda));
    }
    Ok(out)
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
    files.log(
        serde_json::json!({"step": step, "eval_psnr": r.psnr, "eval_ssim": r.ssim,
        "input_psnr": report.mean_input.psnr, "input_ssim": report.mean_input.ssim}),
    )?;
    if state.best_psnr.is_none_or(|b| r.psnr > b) {
        state.best_psnr = Some(r.psnr);
        save_restorer(
            &files.dir.join("restorer-best.safetensors"),
            varmap,
            &cfg.backbone,
        )?;
    }
    on_event(&Event::Evaluated {
        step,
        report: report.clone(),
    });
    Ok(())
}

/// Writes `restorer-{step}`, `diffusion-{step}` (adaptation), `optimizer-{step}` and
/// `train_state.json` (last, so that a crash mid-way leaves the previous state pointing at
/// complete files), then prunes old ones.
fn checkpoint(
    dir: &Path,
    nets: &Nets,
    opt: &Adam,
    cfg: &TrainConfig,
    state: &TrainState,
) -> Result<PathBuf> {
    let path = dir.join(format!("restorer-{}.safetensors", state.step));
    save_restorer(&path, nets.restorer, &cfg.backbone)?;
    if let Some(d) = nets.diffusion {
        let json = serde_json::to_string(&cfg.adaptation.diffusion)
            .map_err(|e| Error::Config(e.to_string()))?;
        let meta = HashMap::from([
            ("daa.format".to_string(), "daa-diffusion-v1".to_string()),
            ("daa.diffusion".to_string(), json),
        ]);
        save_tensors(
            &dir.join(format!("diffusion-{}.safetensors", state.step)),
            &varmap_tensors(d)?,
            meta,
        )?;
    }
    if let Some(e) = nets.ema {
        save_restorer(
            &dir.join(format!("restorer-ema-{}.safetensors", state.step)),
            e,
            &cfg.backbone,
        )?;
    }
    let opt_path = dir.join(format!("optimizer-{}.safetensors", state.step));
    let meta = HashMap::from([("daa.format".to_string(), "daa-optimizer-v1".to_string())]);
    save_tensors(&opt_path, &opt.state_tensors(), meta)?;
    write_json(&dir.join("train_state.json"), state)?;
    let periodic = periodic_checkpoints(dir);
    let keep = cfg.keep_last.max(1);
    for (step, p) in periodic.iter().take(periodic.len().saturating_sub(keep)) {
        let _ = std::fs::remove_file(p);
        for kind in ["optimizer", "diffusion", "restorer-ema"] {
            let _ = std::fs::remove_file(dir.join(format!("{kind}-{step}.safetensors")));
        }
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
