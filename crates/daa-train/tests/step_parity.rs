//! Step parity with PyTorch autograd (issue 14): three training steps of daa, fed the weights,
//! batches and every random draw that `scripts/reference_step.py` fixed (t, gamma, eps, both
//! swap masks, dropout masks), must give the reference's losses within 1e-5 relative, its
//! first-step gradients, and its weights after three Adam steps within 1e-4. One test per
//! scenario: vanilla and DA in both value ranges, and the ablations (no shuffle, no
//! contrastive, t in [900, 999], da-ex). Regenerate the fixtures with
//! `python3 scripts/reference_step.py` (torch, safetensors).

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use daa_backbones::{Backbone, BackboneConfig, UNetConfig};
use daa_diffusion::{
    AdaptationConfig, AdaptationDraws, AdaptationLoss, CondUNet, CondUNetConfig, LambdaRamp,
    NoiseSchedule, ValueRange, Variant,
};
use daa_train::{step_losses_with, Adam, Batch, OptimConfig, StepNetworks};

#[derive(serde::Deserialize)]
struct Adamw {
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
}

#[derive(serde::Deserialize)]
struct RestorerSize {
    width: usize,
    depth: usize,
}

#[derive(serde::Deserialize)]
struct DiffusionSize {
    width: usize,
    mults: Vec<usize>,
    res_blocks: usize,
    head_ch: usize,
    groups: usize,
    dropout: f64,
}

/// The scenario's settings, as the script wrote them into the fixture's metadata.
#[derive(serde::Deserialize)]
struct Settings {
    method: String,
    range: ValueRange,
    lr: f64,
    shuffle: bool,
    contrastive: bool,
    t_min: usize,
    t_max: usize,
    margin: f64,
    charbonnier_eps: f64,
    lambda_max: f64,
    ramp_samples: u64,
    ramp_quantum: u64,
    batch: usize,
    steps: usize,
    adam: Adamw,
    restorer: RestorerSize,
    diffusion: DiffusionSize,
}

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/step")
}

fn load(name: &str) -> Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
    let path = data_dir().join(format!("{name}.safetensors"));
    let bytes =
        std::fs::read(&path).map_err(|e| candle_core::Error::Msg(format!("{path:?}: {e}")))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| candle_core::Error::Msg(format!("{path:?}: {e}")))?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)?;
    Ok((tensors, meta.metadata().clone().unwrap_or_default()))
}

fn get<'a>(t: &'a HashMap<String, Tensor>, key: &str) -> Result<&'a Tensor> {
    t.get(key)
        .ok_or_else(|| candle_core::Error::Msg(format!("fixture lacks {key}")))
}

fn scalar(t: &HashMap<String, Tensor>, key: &str) -> Result<f64> {
    get(t, key)?
        .to_dtype(DType::F64)?
        .flatten_all()?
        .get(0)?
        .to_scalar()
}

/// Builds a network through `build` on a fresh VarMap, then overwrites every variable with the
/// fixture's tensor `{prefix}.{name}`; returns the variables by fixture name.
fn with_weights<T>(
    init: &HashMap<String, Tensor>,
    prefix: &str,
    build: impl FnOnce(VarBuilder) -> Result<T>,
) -> Result<(T, Vec<(String, Var)>)> {
    let varmap = VarMap::new();
    let net = build(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
    let data = varmap
        .data()
        .lock()
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let mut vars = Vec::new();
    for (name, var) in data.iter() {
        let key = format!("{prefix}.{name}");
        var.set(get(init, &key)?)?;
        vars.push((key, var.clone()));
    }
    let expected = init
        .keys()
        .filter(|k| k.starts_with(&format!("{prefix}.")))
        .count();
    assert_eq!(
        vars.len(),
        expected,
        "{prefix}: variable count differs from the fixture"
    );
    Ok((net, vars))
}

/// Largest |a - b| over two tensors of the same shape.
fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    (a - b)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_dtype(DType::F64)?
        .to_scalar()
}

fn max_abs(a: &Tensor) -> Result<f64> {
    a.abs()?
        .flatten_all()?
        .max(0)?
        .to_dtype(DType::F64)?
        .to_scalar()
}

/// Replays the fixture's dropout keep-masks as the bit stream daa's dropout consumes: each
/// 64-bit word holds four 16-bit uniforms; 0 is below any threshold (dropped), 0xffff above
/// (kept). Asking for more words than the masks hold is an error of the test.
struct ReplayDropout {
    words: std::vec::IntoIter<u64>,
}

impl ReplayDropout {
    fn new(keep: &[u8]) -> Self {
        let words: Vec<u64> = keep
            .chunks(4)
            .map(|c| {
                c.iter().enumerate().fold(0u64, |w, (k, &m)| {
                    w | if m != 0 { 0xffffu64 << (16 * k) } else { 0 }
                })
            })
            .collect();
        Self {
            words: words.into_iter(),
        }
    }

    fn left(&self) -> usize {
        self.words.len()
    }
}

impl rand::RngCore for ReplayDropout {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }

    fn next_u64(&mut self) -> u64 {
        match self.words.next() {
            Some(w) => w,
            None => panic!("dropout drew more masks than the reference"),
        }
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let w = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&w[..chunk.len()]);
        }
    }
}

fn run(name: &str) -> Result<()> {
    let (init, _) = load("init")?;
    let (fx, meta) = load(name)?;
    let s: Settings = serde_json::from_str(
        meta.get("settings")
            .ok_or_else(|| candle_core::Error::Msg(format!("{name}: no settings")))?,
    )
    .map_err(|e| candle_core::Error::Msg(format!("{name}: settings: {e}")))?;
    let dev = Device::Cpu;

    let rcfg = BackboneConfig::UNet(UNetConfig {
        width: s.restorer.width,
        depth: s.restorer.depth,
        ..UNetConfig::paper()
    });
    let (restorer, mut vars): (Backbone, _) = with_weights(&init, "restorer", |vb| rcfg.build(vb))?;
    let adapt = s.method != "vanilla";
    let dcfg = CondUNetConfig {
        width: s.diffusion.width,
        mults: s.diffusion.mults.clone(),
        res_blocks: s.diffusion.res_blocks,
        head_channels: s.diffusion.head_ch,
        groups: s.diffusion.groups,
        dropout: s.diffusion.dropout,
        ..CondUNetConfig::paper()
    };
    let unet = if adapt {
        let (unet, dvars) = with_weights(&init, "diffusion", |vb| CondUNet::new(vb, &dcfg))?;
        vars.extend(dvars);
        Some(unet)
    } else {
        None
    };
    let loss = AdaptationLoss::new(
        NoiseSchedule::paper(),
        AdaptationConfig {
            shuffle: s.shuffle,
            contrastive: s.contrastive,
            margin: s.margin,
            t_min: s.t_min,
            t_max: s.t_max,
            variant: if s.method == "da_ex" {
                Variant::Ex
            } else {
                Variant::Paired
            },
        },
    )?;
    let ramp = LambdaRamp {
        lambda_max: s.lambda_max,
        ramp_samples: s.ramp_samples,
        quantum_samples: s.ramp_quantum,
    };
    let initial: Vec<(String, Tensor)> = vars
        .iter()
        .map(|(n, v)| Ok((n.clone(), v.as_tensor().copy()?)))
        .collect::<Result<_>>()?;
    let mut adam = Adam::new(
        vars.clone(),
        OptimConfig {
            lr: s.lr,
            beta1: s.adam.beta1,
            beta2: s.adam.beta2,
            eps: s.adam.eps,
            weight_decay: s.adam.weight_decay,
        },
    )?;

    for k in 0..s.steps {
        // The fixture's batches are [0, 1] images; the training step maps them into the
        // scenario's range with the function `Models::train_step` uses.
        let b =
            |n: &str| -> Result<Tensor> { Ok(get(&init, &format!("batch{}.{n}", k % 2))?.clone()) };
        let batch = Batch {
            source_input: b("source_input")?,
            source_target: b("source_target")?,
            target_input: adapt.then(|| b("target_input")).transpose()?,
            ex_clean: (s.method == "da_ex").then(|| b("ex_clean")).transpose()?,
        }
        .from_unit(s.range)?;
        let key = |n: &str| format!("step{k}.{n}");
        let mask = |n: &str| -> Result<Option<Vec<bool>>> {
            fx.get(&key(n))
                .map(|t| Ok(t.to_vec1::<u8>()?.into_iter().map(|v| v != 0).collect()))
                .transpose()
        };
        let draws = if adapt {
            Some(AdaptationDraws {
                t: get(&fx, &key("t"))?
                    .to_vec1::<i64>()?
                    .into_iter()
                    .map(|t| t as usize)
                    .collect(),
                gamma: get(&fx, &key("gamma"))?
                    .to_vec1::<f32>()?
                    .into_iter()
                    .map(f64::from)
                    .collect(),
                eps: get(&fx, &key("eps"))?.clone(),
                pos_swapped: mask("pos_swap")?.unwrap_or_default(),
                neg_swapped: mask("neg_swap")?,
            })
        } else {
            None
        };
        let mut dropout = ReplayDropout::new(&match fx.get(&key("dropout")) {
            Some(t) => t.to_vec1::<u8>()?,
            None => Vec::new(),
        });
        let samples_seen = (k * s.batch) as u64;
        let lambda = if adapt { ramp.at(samples_seen) } else { 0.0 };
        assert!(
            (lambda - scalar(&fx, &key("lambda"))?).abs() < 1e-12,
            "{name} step {k}: lambda {lambda} vs the reference's {}",
            scalar(&fx, &key("lambda"))?
        );
        let parts = step_losses_with(
            &batch,
            &StepNetworks {
                restorer: &restorer,
                adaptation: unet.as_ref().map(|u| (u, &loss)),
            },
            s.charbonnier_eps,
            lambda,
            draws.as_ref(),
            &mut dropout,
        )?;
        assert_eq!(
            dropout.left(),
            0,
            "{name} step {k}: dropout masks left unused"
        );

        // Losses: 1e-5 relative. The hinge is a difference of two ~1.6 values, so its error is
        // measured against the size of what it subtracts.
        let check = |what: &str, ours: Option<&Tensor>, scale: Option<f64>| -> Result<()> {
            let Some(ours) = ours else {
                assert!(
                    !fx.contains_key(&key(what)),
                    "{name} step {k}: no {what} computed"
                );
                return Ok(());
            };
            let theirs = scalar(&fx, &key(what))?;
            let ours = ours.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            let scale = scale.unwrap_or(theirs.abs()).max(1e-12);
            let rel = (ours - theirs).abs() / scale;
            assert!(
                rel < 1e-5,
                "{name} step {k}: {what} {ours} vs {theirs} (rel {rel:.2e})"
            );
            Ok(())
        };
        check("total", Some(&parts.total), None)?;
        check("rec", Some(&parts.rec), None)?;
        check("d_pos", parts.diff_pos.as_ref(), None)?;
        check("d_neg", parts.diff_neg.as_ref(), None)?;
        check("noise", parts.noise.as_ref(), None)?;
        let hinge_scale = match (&parts.diff_pos, &parts.diff_neg) {
            (Some(p), Some(n)) => Some(
                p.to_dtype(DType::F64)?.to_scalar::<f64>()?.abs()
                    + n.to_dtype(DType::F64)?.to_scalar::<f64>()?.abs(),
            ),
            _ => None,
        };
        check("contrastive", parts.contrastive.as_ref(), hinge_scale)?;

        let grads = parts.total.backward()?;
        if k == 0 {
            // Gradients of the first step: within 1e-4 of the largest gradient of the network.
            let mut off = Vec::new();
            for prefix in ["restorer", "diffusion"] {
                let named: Vec<_> = vars.iter().filter(|(n, _)| n.starts_with(prefix)).collect();
                let mut scale = 0f64;
                for (n, _) in &named {
                    scale = scale.max(max_abs(get(&fx, &format!("grad0.{n}"))?)?);
                }
                for (n, v) in named {
                    let g = grads.get(v.as_tensor()).ok_or_else(|| {
                        candle_core::Error::Msg(format!("{name}: no gradient for {n}"))
                    })?;
                    let d = max_abs_diff(g, get(&fx, &format!("grad0.{n}"))?)?;
                    if d > 1e-4 * scale {
                        off.push(format!("{n} by {d:.3e} (largest {scale:.3e})"));
                    }
                }
            }
            assert!(off.is_empty(), "{name}: gradients off: {}", off.join(", "));
        }
        adam.step(&grads)?;
    }

    // Weights after the last step: within 1e-4, and each variable must have moved.
    for ((n, v), (_, w0)) in vars.iter().zip(&initial) {
        let want = get(&fx, &format!("final.{n}"))?;
        let d = max_abs_diff(v.as_tensor(), want)?;
        assert!(
            d < 1e-4,
            "{name}: {n} off by {d:.3e} after {} steps",
            s.steps
        );
        assert!(
            max_abs_diff(v.as_tensor(), w0)? > 0.0,
            "{name}: {n} never moved"
        );
    }
    let _ = dev;
    Ok(())
}

macro_rules! scenario {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() -> Result<()> {
            run(stringify!($name))
        }
    )*};
}

scenario!(
    vanilla_unit,
    vanilla_signed,
    da_unit,
    da_signed,
    no_shuffle,
    no_contrastive,
    t_900_999,
    da_ex,
);
