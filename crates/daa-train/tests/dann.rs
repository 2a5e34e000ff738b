//! DANN (`--method dann`): the domain classifier's loss against PyTorch, the gradient reversal
//! into the features, the step on every backbone, a smoke run and exact resume.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use daa_train::{
    backbone, backbone_names, domain_loss, gradient_reversal, load_restorer, train, Batch,
    DannSettings, DomainClassifier, Method, Models, Scale, TrainConfig,
};

type R<T> = Result<T, Box<dyn std::error::Error>>;

/// `sin(0.37 i + k) * 0.8` over the flat index `i`, as in the torch snippet below.
fn fill(shape: &[usize], k: f64) -> candle_core::Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| ((i as f64 * 0.37 + k).sin() * 0.8) as f32)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
}

/// A 4 -> 3 channel classifier with the snippet's weights, and its variables.
fn fixed_classifier() -> R<(DomainClassifier, VarMap)> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let settings = DannSettings {
        hidden: 3,
        lambda_max: 1.0,
    };
    let net = DomainClassifier::new(vb, 4, &settings)?;
    let values = [
        ("conv1.weight", fill(&[3, 4, 3, 3], 1.0)?),
        ("conv1.bias", fill(&[3], 2.0)?),
        ("conv2.weight", fill(&[3, 3, 3, 3], 3.0)?),
        ("conv2.bias", fill(&[3], 4.0)?),
        ("head.weight", fill(&[1, 3], 5.0)?),
        ("head.bias", fill(&[1], 6.0)?),
    ];
    {
        let data = varmap.data().lock().map_err(|_| "poisoned")?;
        assert_eq!(data.len(), values.len(), "classifier variables");
        for (name, v) in &values {
            data.get(*name).ok_or(format!("no {name}"))?.set(v)?;
        }
    }
    Ok((net, varmap))
}

/// The snippet's source and target features, `(2, 4, 4, 4)` each.
fn fixed_features() -> R<(Tensor, Tensor)> {
    let n = 2 * 4 * 4 * 4;
    let s: Vec<f32> = (0..n).map(|i| (i as f64 * 0.1).sin() as f32).collect();
    let t: Vec<f32> = (0..n)
        .map(|i| ((i as f64 * 0.07).cos() * 2.0) as f32)
        .collect();
    Ok((
        Tensor::from_vec(s, (2, 4, 4, 4), &Device::Cpu)?,
        Tensor::from_vec(t, (2, 4, 4, 4), &Device::Cpu)?,
    ))
}

/// Golden values from PyTorch 2.15 (float64):
/// ```python
/// import torch, torch.nn.functional as F
/// torch.set_default_dtype(torch.float64)
/// C, H = 4, 3
/// def fill(shape, k):
///     n = 1
///     for d in shape: n *= d
///     return (torch.sin(torch.arange(n) * 0.37 + k) * 0.8).reshape(shape)
/// w1, b1 = fill((H, C, 3, 3), 1.0), fill((H,), 2.0)
/// w2, b2 = fill((H, H, 3, 3), 3.0), fill((H,), 4.0)
/// wh, bh = fill((1, H), 5.0), fill((1,), 6.0)
/// fs = torch.sin(torch.arange(2 * C * 4 * 4) * 0.1).reshape(2, C, 4, 4)
/// ft = (torch.cos(torch.arange(2 * C * 4 * 4) * 0.07) * 2).reshape(2, C, 4, 4)
/// def clf(x):
///     x = F.leaky_relu(F.conv2d(x, w1, b1, stride=2, padding=1), 0.2)
///     x = F.leaky_relu(F.conv2d(x, w2, b2, stride=2, padding=1), 0.2)
///     return F.linear(x.mean((2, 3)), wh, bh).squeeze(1)
/// zs, zt = clf(fs), clf(ft)
/// loss = F.binary_cross_entropy_with_logits(torch.cat([zs, zt]),
///                                           torch.cat([torch.zeros(2), torch.ones(2)]))
/// print(zs.tolist(), zt.tolist(), loss.item())
/// ```
#[test]
fn golden_domain_classifier_logits_and_loss_match_pytorch() -> R<()> {
    let (net, _vars) = fixed_classifier()?;
    let (fs, ft) = fixed_features()?;
    let (zs, zt) = (net.forward(&fs)?, net.forward(&ft)?);
    let round = |v: f32| (v * 1e4).round() / 1e4;
    let zs: Vec<f32> = zs.to_vec1::<f32>()?.into_iter().map(round).collect();
    let zt: Vec<f32> = zt.to_vec1::<f32>()?.into_iter().map(round).collect();
    assert_eq!(zs, vec![0.1127, 0.1239]);
    assert_eq!(zt, vec![-0.2430, 0.0599]);
    let loss = domain_loss(&net.forward(&fs)?, &net.forward(&ft)?)?.to_scalar::<f32>()?;
    assert!((loss - 0.748_442_3).abs() < 1e-5, "loss {loss}");
    // A classifier that separates the domains perfectly has a small loss; the wrong way round,
    // a large one.
    let z = |v: &[f32]| Tensor::new(v, &Device::Cpu);
    let right = domain_loss(&z(&[-9.0, -9.0])?, &z(&[9.0, 9.0])?)?.to_scalar::<f32>()?;
    let wrong = domain_loss(&z(&[9.0, 9.0])?, &z(&[-9.0, -9.0])?)?.to_scalar::<f32>()?;
    assert!(
        right < 1e-3 && (wrong - 9.0).abs() < 1e-3,
        "{right} {wrong}"
    );
    Ok(())
}

#[test]
fn the_reversal_layer_hands_the_features_the_negated_scaled_gradient() -> R<()> {
    let (net, vars) = fixed_classifier()?;
    let (fs, ft) = fixed_features()?;
    let (fs, ft) = (Var::from_tensor(&fs)?, Var::from_tensor(&ft)?);
    let grads_of = |scale: Option<f64>| -> R<(Vec<f32>, Vec<f32>)> {
        let through = |x: &Var| match scale {
            Some(s) => gradient_reversal(x.as_tensor(), s),
            None => Ok(x.as_tensor().clone()),
        };
        let loss = domain_loss(&net.forward(&through(&fs)?)?, &net.forward(&through(&ft)?)?)?;
        let g = loss.backward()?;
        let flat = |x: &Var| -> R<Vec<f32>> {
            Ok(g.get(x.as_tensor())
                .ok_or("no gradient")?
                .flatten_all()?
                .to_vec1()?)
        };
        // The classifier itself is trained the ordinary way.
        for (name, v) in vars.data().lock().map_err(|_| "poisoned")?.iter() {
            assert!(g.get(v.as_tensor()).is_some(), "{name} got no gradient");
        }
        Ok((flat(&fs)?, flat(&ft)?))
    };
    let (plain_s, plain_t) = grads_of(None)?;
    let (rev_s, rev_t) = grads_of(Some(0.4))?;
    assert!(plain_s.iter().any(|g| g.abs() > 1e-4));
    for (plain, rev) in [(plain_s, rev_s), (plain_t, rev_t)] {
        for (p, r) in plain.iter().zip(&rev) {
            assert!(
                (r + 0.4 * p).abs() <= 1e-6 + 1e-5 * p.abs(),
                "{r} vs -0.4 * {p}"
            );
        }
    }
    Ok(())
}

#[test]
fn a_dann_step_trains_every_backbone_and_its_classifier() -> R<()> {
    for name in backbone_names() {
        let cfg = TrainConfig {
            method: Method::Dann,
            backbone: backbone(name, Scale::Tiny)?,
            ..TrainConfig::smoke()
        };
        let dev = Device::Cpu;
        let mut models = Models::new(&cfg, &dev)?;
        let (b, p) = (cfg.batch_size, cfg.patch_size);
        let rand = || Tensor::rand(0f32, 1., (b, 3, p, p), &dev);
        let batch = Batch {
            source_input: rand()?,
            source_target: rand()?,
            target_input: Some(rand()?),
            ex_clean: None,
        };
        let before = models
            .dann
            .as_ref()
            .ok_or("no classifier")?
            .varmap
            .all_vars()
            .iter()
            .map(|v| v.as_tensor().flatten_all()?.to_vec1::<f32>())
            .collect::<candle_core::Result<Vec<_>>>()?;
        // Step 3 of the smoke ramp: lambda > 0, so the restorer gets the reversed gradient.
        let out = models.train_step(&batch, 3, cfg.seed)?;
        assert!(out.applied, "{name}: step skipped");
        let names: Vec<&str> = out.losses.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["total", "rec", "domain", "lambda"], "{name}");
        assert!(out.losses.iter().all(|(_, v)| v.is_finite()), "{name}");
        assert!(
            out.lambda > 0.0 && out.lambda <= 1.0,
            "{name}: {}",
            out.lambda
        );
        assert!(
            models.diffusion.is_none(),
            "{name}: dann trains no diffusion net"
        );
        let after = models
            .dann
            .as_ref()
            .ok_or("no classifier")?
            .varmap
            .all_vars()
            .iter()
            .map(|v| v.as_tensor().flatten_all()?.to_vec1::<f32>())
            .collect::<candle_core::Result<Vec<_>>>()?;
        assert_ne!(before, after, "{name}: the classifier did not train");
    }
    Ok(())
}

fn dann_smoke(steps: usize) -> TrainConfig {
    TrainConfig {
        method: Method::Dann,
        steps,
        checkpoint_every: 2,
        keep_last: 5,
        ..TrainConfig::smoke()
    }
}

fn run(cfg: &TrainConfig, dir: &Path, resume: bool) -> R<daa_train::TrainSummary> {
    Ok(train(cfg, dir, &Device::Cpu, resume, &mut |_| {})?)
}

fn column(dir: &Path, key: &str) -> Vec<f64> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v[key].as_f64())
        .collect()
}

fn weights(path: &Path) -> R<Vec<(String, Vec<f32>)>> {
    let mut out = Vec::new();
    for (k, t) in candle_core::safetensors::load(path, &Device::Cpu)? {
        out.push((k, t.flatten_all()?.to_vec1()?));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

#[test]
fn a_dann_run_saves_its_classifier_logs_its_loss_and_resumes_exactly() -> R<()> {
    let (full, part) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let s = run(&dann_smoke(4), full.path(), false)?;
    for f in [
        "dann-4.safetensors",
        "dann-2.safetensors",
        "restorer-4.safetensors",
    ] {
        assert!(full.path().join(f).exists(), "missing {f}");
    }
    assert!(!full.path().join("diffusion-4.safetensors").exists());
    let domain = column(full.path(), "loss_domain");
    let lambda = column(full.path(), "lambda");
    assert_eq!(domain.len(), 4);
    assert!(
        domain.iter().all(|v| v.is_finite() && *v > 0.0),
        "{domain:?}"
    );
    assert_eq!(lambda[0], 0.0);
    assert!(
        lambda.windows(2).all(|w| w[1] >= w[0]) && lambda[3] > 0.5,
        "{lambda:?}"
    );
    // The restorer is an ordinary restorer checkpoint; the classifier's file is not one.
    load_restorer(&s.checkpoint, &Device::Cpu, None)?;
    let err = load_restorer(&full.path().join("dann-4.safetensors"), &Device::Cpu, None)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("DANN"), "{err}");
    // Stopped at step 2 and resumed: the same weights, classifier included, and losses.
    run(&dann_smoke(2), part.path(), false)?;
    run(&dann_smoke(4), part.path(), true)?;
    for f in ["restorer-4.safetensors", "dann-4.safetensors"] {
        assert_eq!(
            weights(&full.path().join(f))?,
            weights(&part.path().join(f))?,
            "{f} differs after resume"
        );
    }
    assert_eq!(
        column(full.path(), "loss_total"),
        column(part.path(), "loss_total")
    );
    Ok(())
}

#[test]
fn configs_without_dann_settings_load_and_bad_settings_are_refused() -> R<()> {
    let cfg = TrainConfig::smoke();
    let mut value = serde_json::to_value(&cfg)?;
    let removed = value["adaptation"]
        .as_object_mut()
        .and_then(|a| a.remove("dann"));
    assert!(removed.is_some(), "config.json carries the dann settings");
    assert_eq!(TrainConfig::from_json(&value.to_string())?, cfg);
    for (hidden, lambda_max) in [(0, 1.0), (8, -0.5), (8, f64::NAN)] {
        let mut bad = dann_smoke(2);
        bad.adaptation.dann = DannSettings { hidden, lambda_max };
        let err = bad
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("dann settings"),
            "{hidden} {lambda_max}: {err:?}"
        );
    }
    Ok(())
}
