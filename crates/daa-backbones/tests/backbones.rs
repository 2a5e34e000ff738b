//! Shape, parameter-count, weight-name and gradient-reach tests for every backbone.

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{Optimizer, VarBuilder, VarMap, SGD};
use daa_backbones::{
    parameter_count, BackboneConfig, DnCnnConfig, NafNetConfig, RestormerConfig, UNetConfig,
    UformerConfig,
};

fn tiny_configs() -> Vec<BackboneConfig> {
    vec![
        BackboneConfig::UNet(UNetConfig::tiny()),
        BackboneConfig::DnCnn(DnCnnConfig::tiny()),
        BackboneConfig::NafNet(NafNetConfig::tiny()),
        BackboneConfig::Restormer(RestormerConfig::tiny()),
        BackboneConfig::Uformer(UformerConfig::tiny()),
    ]
}

fn build(cfg: &BackboneConfig) -> Result<(VarMap, daa_backbones::Backbone)> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let net = cfg.build(vb)?;
    Ok((varmap, net))
}

#[test]
fn paper_unet_has_the_papers_parameter_count() -> Result<()> {
    let (varmap, _) = build(&BackboneConfig::UNet(UNetConfig::paper()))?;
    assert_eq!(parameter_count(&varmap), 8_559_171);
    Ok(())
}

#[test]
fn cpu_unet_parameter_count_is_documented() -> Result<()> {
    let (varmap, _) = build(&BackboneConfig::UNet(UNetConfig::cpu()))?;
    assert_eq!(parameter_count(&varmap), 536_211);
    Ok(())
}

#[test]
fn paper_unet_uses_the_official_tensor_names() -> Result<()> {
    let (varmap, _) = build(&BackboneConfig::UNet(UNetConfig::paper()))?;
    let data = varmap
        .data()
        .lock()
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let mut keys: Vec<String> = data.keys().cloned().collect();
    keys.sort();
    let mut want = Vec::new();
    for i in 0..4 {
        for j in [0, 2] {
            for p in ["weight", "bias"] {
                want.push(format!("down_path.{i}.block.{j}.{p}"));
            }
        }
    }
    for i in 0..3 {
        for p in ["weight", "bias"] {
            want.push(format!("up_path.{i}.conv_up.{p}"));
            for j in [0, 2] {
                want.push(format!("up_path.{i}.conv_block.block.{j}.{p}"));
            }
        }
    }
    want.push("last.weight".into());
    want.push("last.bias".into());
    want.sort();
    assert_eq!(keys, want);
    Ok(())
}

#[test]
fn nafnet_weight_names_follow_the_reference() -> Result<()> {
    let (varmap, _) = build(&BackboneConfig::NafNet(NafNetConfig::tiny()))?;
    let data = varmap
        .data()
        .lock()
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    for key in [
        "intro.weight",
        "encoders.0.0.conv1.weight",
        "encoders.0.0.conv2.weight",
        "encoders.0.0.sca.1.weight",
        "encoders.1.0.beta",
        "downs.1.weight",
        "middle_blks.0.gamma",
        "ups.0.0.weight",
        "decoders.1.0.norm2.weight",
        "ending.bias",
    ] {
        assert!(data.contains_key(key), "missing {key}");
    }
    assert!(!data.contains_key("ups.0.0.bias"), "ups convs have no bias");
    Ok(())
}

#[test]
fn odd_sizes_restore_to_the_same_shape() -> Result<()> {
    for cfg in tiny_configs() {
        let (_, net) = build(&cfg)?;
        let x = Tensor::rand(0f32, 1., (2, 3, 19, 27), &Device::Cpu)?;
        let y = net.restore(&x, false)?;
        assert_eq!(y.dims(), &[2, 3, 19, 27], "{}", cfg.name());
        assert!(
            net.residual(&x, false).is_err() || net.size_multiple() == 1,
            "{}",
            cfg.name()
        );
    }
    Ok(())
}

/// Every trainable variable must receive a finite, non-zero gradient (candle's fused norms and
/// bilinear upsampling give none). NAFNet's `beta`/`gamma` start at zero, which blocks the
/// gradient of the block's inner convs at initialisation exactly as in PyTorch, so the check is
/// made after one SGD step, when every path is open.
#[test]
fn every_variable_gets_a_finite_nonzero_gradient() -> Result<()> {
    for cfg in tiny_configs() {
        let (varmap, net) = build(&cfg)?;
        let x = Tensor::rand(0f32, 1., (2, 3, 16, 16), &Device::Cpu)?;
        let target = Tensor::rand(0f32, 1., (2, 3, 16, 16), &Device::Cpu)?;
        let loss_of =
            || -> Result<Tensor> { (net.restore(&x, true)? - &target)?.sqr()?.mean_all() };
        let mut vars: Vec<(String, Var)> = {
            let data = varmap
                .data()
                .lock()
                .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            data.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        // BatchNorm running statistics are state, not trainable parameters.
        vars.retain(|(k, _)| !k.ends_with("running_mean") && !k.ends_with("running_var"));
        let mut sgd = SGD::new(vars.iter().map(|(_, v)| v.clone()).collect(), 0.1)?;
        sgd.backward_step(&loss_of()?)?;
        let grads = loss_of()?.backward()?;
        for (name, var) in &vars {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{}: no gradient for {name}", cfg.name()));
            let g: Vec<f32> = g.flatten_all()?.to_vec1()?;
            assert!(
                g.iter().all(|v| v.is_finite()),
                "{}: non-finite gradient for {name}",
                cfg.name()
            );
            assert!(
                g.iter().any(|v| *v != 0.0),
                "{}: zero gradient for {name}",
                cfg.name()
            );
        }
    }
    Ok(())
}

#[test]
fn a_few_steps_overfit_one_batch() -> Result<()> {
    for cfg in tiny_configs() {
        let (varmap, net) = build(&cfg)?;
        let target = Tensor::rand(0f32, 1., (2, 3, 16, 16), &Device::Cpu)?;
        let x = (&target + Tensor::randn(0f32, 0.2, (2, 3, 16, 16), &Device::Cpu)?)?;
        let mut opt = candle_nn::AdamW::new(
            varmap.all_vars(),
            candle_nn::ParamsAdamW {
                lr: 1e-3,
                weight_decay: 0.0,
                ..Default::default()
            },
        )?;
        let loss = |net: &daa_backbones::Backbone| -> Result<f32> {
            (net.restore(&x, true)? - &target)?
                .sqr()?
                .mean_all()?
                .to_scalar::<f32>()
        };
        let first = loss(&net)?;
        for _ in 0..30 {
            let l = (net.restore(&x, true)? - &target)?.sqr()?.mean_all()?;
            opt.backward_step(&l)?;
        }
        let last = loss(&net)?;
        assert!(last < 0.8 * first, "{}: loss {first} -> {last}", cfg.name());
    }
    Ok(())
}

#[test]
fn config_round_trips_through_json_and_rejects_unknown_keys() {
    for cfg in tiny_configs() {
        let s = serde_json::to_string(&cfg).unwrap_or_default();
        let back: BackboneConfig = serde_json::from_str(&s).unwrap_or_else(|e| panic!("{e}: {s}"));
        assert_eq!(back, cfg);
    }
    let bad = r#"{"kind":"unet","in_channels":3,"out_channels":3,"width":8,"depth":3,"slope":0.2,"widht":3}"#;
    assert!(serde_json::from_str::<BackboneConfig>(bad).is_err());
}

#[test]
fn invalid_configs_are_errors_not_panics() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let bad = BackboneConfig::UNet(UNetConfig {
        depth: 0,
        ..UNetConfig::tiny()
    });
    assert!(bad.build(vb.clone()).is_err());
    let bad = BackboneConfig::NafNet(NafNetConfig {
        dec_blocks: vec![1],
        ..NafNetConfig::tiny()
    });
    assert!(bad.build(vb).is_err());
}

/// Autograd gradients equal central finite differences (in f64) for a sample of weights of
/// every backbone: catches a wrong backward in the hand-written ops (bilinear upsampling as
/// matmuls, LayerNorm2d, the depthwise conv, replicate padding).
#[test]
fn gradients_match_finite_differences() -> Result<()> {
    for cfg in tiny_configs() {
        let varmap = VarMap::new();
        let net = cfg.build(VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu))?;
        let mut vars: Vec<(String, Var)> = {
            let data = varmap
                .data()
                .lock()
                .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            data.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars.retain(|(k, _)| !k.ends_with("running_mean") && !k.ends_with("running_var"));
        // Open NAFNet's zero-initialised gates so every path carries gradient.
        for (k, v) in &vars {
            if k.ends_with("beta") || k.ends_with("gamma") {
                v.set(&(v.ones_like()? * 0.5)?)?;
            }
        }
        let x = Tensor::rand(0f64, 1., (2, 3, 13, 10), &Device::Cpu)?;
        let target = Tensor::rand(0f64, 1., (2, 3, 13, 10), &Device::Cpu)?;
        // Eval mode (running statistics) so the loss is a fixed function of the weights.
        let loss = || -> Result<f64> {
            (net.restore(&x, false)? - &target)?
                .sqr()?
                .mean_all()?
                .to_scalar::<f64>()
        };
        let grads = (net.restore(&x, false)? - &target)?
            .sqr()?
            .mean_all()?
            .backward()?;
        for (name, var) in &vars {
            let g = grads
                .get(var.as_tensor())
                .ok_or_else(|| candle_core::Error::Msg(format!("no grad {name}")))?;
            let g: Vec<f64> = g.flatten_all()?.to_vec1()?;
            let w0: Vec<f64> = var.as_tensor().flatten_all()?.to_vec1()?;
            // Check the first and the largest-gradient entries.
            let imax = g
                .iter()
                .enumerate()
                .fold(0, |m, (i, v)| if v.abs() > g[m].abs() { i } else { m });
            for i in [0, imax] {
                // Central differences at three steps; the best one must agree. A ReLU input
                // within h of zero (random weights and inputs) makes one step measure the kink,
                // not the gradient; smaller steps make that rarer, larger ones round less.
                let mut fds = Vec::new();
                for h in [1e-5, 1e-6, 1e-7] {
                    let mut w = w0.clone();
                    w[i] = w0[i] + h;
                    var.set(&Tensor::from_vec(w.clone(), var.shape(), &Device::Cpu)?)?;
                    let lp = loss()?;
                    w[i] = w0[i] - h;
                    var.set(&Tensor::from_vec(w, var.shape(), &Device::Cpu)?)?;
                    let lm = loss()?;
                    var.set(&Tensor::from_vec(w0.clone(), var.shape(), &Device::Cpu)?)?;
                    fds.push((lp - lm) / (2.0 * h));
                }
                let fd = fds.iter().copied().fold(fds[0], |b, f| {
                    if (f - g[i]).abs() < (b - g[i]).abs() {
                        f
                    } else {
                        b
                    }
                });
                let tol = 1e-6 + 1e-4 * fd.abs().max(g[i].abs());
                assert!(
                    (fd - g[i]).abs() < tol,
                    "{}: {name}[{i}] autograd {} vs finite differences {fds:?}",
                    cfg.name(),
                    g[i]
                );
            }
        }
    }
    Ok(())
}

/// `residual_and_features` is the same forward pass as `residual`, its features have the
/// documented shape, and the features carry gradient back to the encoder (what a DANN domain
/// classifier on them needs).
#[test]
fn bottleneck_features_have_the_documented_shape_and_gradient() -> Result<()> {
    for cfg in tiny_configs() {
        let (varmap, net) = build(&cfg)?;
        let (h, w) = (16, 24);
        let x = Tensor::rand(0f32, 1., (2, 3, h, w), &Device::Cpu)?;
        let (res, feats) = net.residual_and_features(&x, false)?;
        let diff = (&res - net.residual(&x, false)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-6, "{}: residual differs by {diff}", cfg.name());
        let (c, fh, fw) = net.features_shape(h, w);
        assert_eq!(feats.dims(), &[2, c, fh, fw], "{}", cfg.name());
        assert!(fh < h || cfg.name() == "dncnn", "{}", cfg.name());
        // Padded inputs: the features are those of the padded image.
        let odd = Tensor::rand(0f32, 1., (1, 3, 13, 21), &Device::Cpu)?;
        let (restored, feats) = net.restore_and_features(&odd, false)?;
        assert_eq!(restored.dims(), &[1, 3, 13, 21], "{}", cfg.name());
        let m = net.size_multiple();
        let (c, fh, fw) = net.features_shape(13usize.div_ceil(m) * m, 21usize.div_ceil(m) * m);
        assert_eq!(feats.dims(), &[1, c, fh, fw], "{}", cfg.name());
        // Gradient from the features alone reaches the first layer's weights.
        let grads = feats.sqr()?.mean_all()?.backward()?;
        let data = varmap
            .data()
            .lock()
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let first = [
            "down_path.0.block.0.weight",
            "head.weight",
            "intro.weight",
            "patch_embed.proj.weight",
            "input_proj.proj.0.weight",
        ]
        .iter()
        .find_map(|k| data.get(*k))
        .ok_or_else(|| candle_core::Error::Msg(format!("{}: no first layer", cfg.name())))?;
        let g = grads
            .get(first.as_tensor())
            .ok_or_else(|| candle_core::Error::Msg(format!("{}: no grad", cfg.name())))?;
        let gmax = g.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(gmax > 0.0 && gmax.is_finite(), "{}: {gmax}", cfg.name());
    }
    Ok(())
}

#[test]
fn transformer_configs_reject_bad_heads_and_depths() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let bad = [
        BackboneConfig::Restormer(RestormerConfig {
            heads: [3, 2, 2, 4],
            ..RestormerConfig::tiny()
        }),
        BackboneConfig::Restormer(RestormerConfig {
            dim: 0,
            ..RestormerConfig::tiny()
        }),
        BackboneConfig::Restormer(RestormerConfig {
            ffn_expansion_factor: f64::NAN,
            ..RestormerConfig::tiny()
        }),
        BackboneConfig::Uformer(UformerConfig {
            depths: vec![1, 1, 1, 1],
            ..UformerConfig::tiny()
        }),
        BackboneConfig::Uformer(UformerConfig {
            num_heads: vec![1, 2, 4],
            ..UformerConfig::tiny()
        }),
        BackboneConfig::Uformer(UformerConfig {
            num_heads: vec![3, 2, 4, 4, 2],
            ..UformerConfig::tiny()
        }),
        BackboneConfig::Uformer(UformerConfig {
            win_size: 0,
            ..UformerConfig::tiny()
        }),
    ];
    for cfg in bad {
        let err = cfg.build(vb.clone());
        assert!(err.is_err(), "{cfg:?} was accepted");
    }
}
