//! CondUNet size and names, gradient reach, the swap, the hinge and the ablation switches.

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use daa_diffusion::{
    condition, contrastive_hinge, scalar, swap_slots, AdaptationConfig, AdaptationInputs,
    AdaptationLoss, CondUNet, CondUNetConfig, NoiseSchedule, Variant,
};
use rand::SeedableRng;

fn rng(seed: u64) -> rand_chacha::ChaCha8Rng {
    rand_chacha::ChaCha8Rng::seed_from_u64(seed)
}

fn build(cfg: &CondUNetConfig) -> Result<(VarMap, CondUNet)> {
    let varmap = VarMap::new();
    let net = CondUNet::new(
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        cfg,
    )?;
    Ok((varmap, net))
}

fn count(varmap: &VarMap) -> usize {
    varmap.all_vars().iter().map(|v| v.elem_count()).sum()
}

#[test]
fn paper_cond_unet_has_the_papers_parameter_count_and_names() -> Result<()> {
    let (varmap, _) = build(&CondUNetConfig::paper())?;
    assert_eq!(count(&varmap), 62_643_075);
    let data = varmap
        .data()
        .lock()
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    for key in [
        "cond_embed.0.weight",
        "cond_embed.2.bias",
        "input_blocks.0.0.weight",
        "input_blocks.1.0.in_layers.0.weight",
        "input_blocks.1.0.in_layers.2.weight",
        "input_blocks.1.0.emb_layers.1.weight",
        "input_blocks.1.0.out_layers.0.bias",
        "input_blocks.1.0.out_layers.3.weight",
        "input_blocks.3.0.in_layers.2.weight",
        "input_blocks.4.0.skip_connection.weight",
        "middle_block.1.qkv.weight",
        "middle_block.1.proj_out.bias",
        "middle_block.1.norm.weight",
        "output_blocks.2.1.in_layers.2.weight",
        "output_blocks.11.0.skip_connection.weight",
        "out.0.weight",
        "out.2.weight",
    ] {
        assert!(data.contains_key(key), "missing {key}");
    }
    assert_eq!(data["middle_block.1.qkv.weight"].dims(), &[1536, 512, 1]);
    assert!(!data.contains_key("input_blocks.12.0.in_layers.0.weight"));
    Ok(())
}

#[test]
fn forward_shape_and_bad_input() -> Result<()> {
    let (_, net) = build(&CondUNetConfig::tiny())?;
    let x = Tensor::randn(0f32, 1., (2, 9, 8, 12), &Device::Cpu)?;
    let g = Tensor::new(&[0.3f32, 0.9], &Device::Cpu)?;
    assert_eq!(net.forward_t(&x, &g, None)?.dims(), &[2, 3, 8, 12]);
    assert!(net.forward_t(&x.narrow(1, 0, 6)?, &g, None).is_err());
    assert!(net.forward_t(&x.narrow(3, 0, 7)?, &g, None).is_err());
    assert!(CondUNet::new(
        VarBuilder::zeros(DType::F32, &Device::Cpu),
        &CondUNetConfig {
            groups: 7,
            ..CondUNetConfig::tiny()
        }
    )
    .is_err());
    Ok(())
}

/// Every variable, attention included, gets a finite non-zero gradient: the softmax used has a
/// backward (candle's fused softmax_last_dim would silently give none).
#[test]
fn every_cond_unet_variable_gets_a_gradient() -> Result<()> {
    let (varmap, net) = build(&CondUNetConfig::tiny())?;
    let x = Tensor::randn(0f32, 1., (2, 9, 8, 8), &Device::Cpu)?;
    let g = Tensor::new(&[0.3f32, 0.9], &Device::Cpu)?;
    let target = Tensor::randn(0f32, 1., (2, 3, 8, 8), &Device::Cpu)?;
    let mut dropout = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
    let loss = (net.forward_t(&x, &g, Some(&mut dropout))? - target)?
        .sqr()?
        .mean_all()?;
    let grads = loss.backward()?;
    let data = varmap
        .data()
        .lock()
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    for (name, var) in data.iter() {
        let gr = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let v: Vec<f32> = gr.flatten_all()?.to_vec1()?;
        assert!(
            v.iter().all(|x| x.is_finite()),
            "non-finite gradient for {name}"
        );
        assert!(v.iter().any(|x| *x != 0.0), "zero gradient for {name}");
    }
    Ok(())
}

#[test]
fn swap_exchanges_slots_per_sample_only() -> Result<()> {
    let dev = Device::Cpu;
    // Sample i of slot a is filled with 10 + i, of slot b with 20 + i; channels carry +0.1 * c.
    let mk = |base: f32| -> Result<Tensor> {
        let v: Vec<f32> = (0..4)
            .flat_map(|i| {
                (0..3).flat_map(move |c| std::iter::repeat_n(base + i as f32 + 0.1 * c as f32, 4))
            })
            .collect();
        Tensor::from_vec(v, (4, 3, 2, 2), &dev)
    };
    let (a, b) = (mk(10.0)?, mk(20.0)?);
    let mask = [true, false, false, true];
    let (sa, sb) = swap_slots(&a, &b, &mask)?;
    for (i, &swapped) in mask.iter().enumerate() {
        let (wa, wb) = if swapped { (&b, &a) } else { (&a, &b) };
        assert_eq!(
            sa.get(i)?.to_vec3::<f32>()?,
            wa.get(i)?.to_vec3::<f32>()?,
            "sample {i}"
        );
        assert_eq!(
            sb.get(i)?.to_vec3::<f32>()?,
            wb.get(i)?.to_vec3::<f32>()?,
            "sample {i}"
        );
    }
    // The noisy target always stays in channels 0..2.
    let y = Tensor::zeros((4, 3, 2, 2), DType::F32, &dev)?;
    let c = condition(&y, &sa, &sb)?;
    assert_eq!(c.dims(), &[4, 9, 2, 2]);
    assert_eq!(
        c.narrow(1, 0, 3)?.abs()?.sum_all()?.to_scalar::<f32>()?,
        0.0
    );
    // Gradients reach both sources through the select.
    let (va, vb) = (Var::from_tensor(&a)?, Var::from_tensor(&b)?);
    let (sa, sb) = swap_slots(va.as_tensor(), vb.as_tensor(), &mask)?;
    let grads = ((sa * 2.0)? + (sb * 3.0)?)?.sum_all()?.backward()?;
    let ga = grads
        .get(va.as_tensor())
        .map(|g| g.flatten_all().and_then(|g| g.to_vec1::<f32>()))
        .transpose()?
        .unwrap_or_default();
    // Swapped samples of `a` went to slot b (weight 3), the others stayed in slot a (weight 2).
    assert_eq!(ga[0], 3.0);
    assert_eq!(ga[12], 2.0);
    assert!(grads.get(vb.as_tensor()).is_some());
    assert!(swap_slots(&a, &b, &[true]).is_err());
    Ok(())
}

#[test]
fn hinge_is_zero_when_negative_exceeds_positive_by_the_margin() -> Result<()> {
    let t = |v: f32| Tensor::new(v, &Device::Cpu);
    assert_eq!(scalar(&contrastive_hinge(&t(0.1)?, &t(0.3)?, 0.1)?)?, 0.0);
    assert_eq!(scalar(&contrastive_hinge(&t(0.1)?, &t(0.2)?, 0.1)?)?, 0.0);
    assert!((scalar(&contrastive_hinge(&t(0.3)?, &t(0.3)?, 0.1)?)? - 0.1).abs() < 1e-7);
    assert!((scalar(&contrastive_hinge(&t(0.5)?, &t(0.3)?, 0.1)?)? - 0.3).abs() < 1e-7);
    Ok(())
}

struct Setup {
    clean: Tensor,
    x_s: Tensor,
    x_r: Tensor,
    r_s: Var,
    r_r: Var,
}

fn setup() -> Result<Setup> {
    let dev = Device::Cpu;
    let clean = Tensor::rand(0f32, 1., (4, 3, 8, 8), &dev)?;
    let x_s = (&clean + Tensor::randn(0f32, 0.1, (4, 3, 8, 8), &dev)?)?;
    let x_r = Tensor::rand(0f32, 1., (4, 3, 8, 8), &dev)?;
    let r_s = Var::from_tensor(&Tensor::randn(0f32, 0.05, (4, 3, 8, 8), &dev)?)?;
    let r_r = Var::from_tensor(&Tensor::randn(0f32, 0.05, (4, 3, 8, 8), &dev)?)?;
    Ok(Setup {
        clean,
        x_s,
        x_r,
        r_s,
        r_r,
    })
}

fn compute(
    net: &CondUNet,
    s: &Setup,
    cfg: AdaptationConfig,
    seed: u64,
) -> Result<daa_diffusion::AdaptationParts> {
    let loss = AdaptationLoss::new(NoiseSchedule::paper(), cfg)?;
    let inputs = AdaptationInputs {
        clean: &s.clean,
        source_input: &s.x_s,
        target_input: &s.x_r,
        source_residual: s.r_s.as_tensor(),
        target_residual: s.r_r.as_tensor(),
    };
    let mut dropout = rng(seed);
    loss.compute(net, &inputs, &mut rng(seed), Some(&mut dropout))
}

#[test]
fn the_noise_loss_reaches_both_residuals() -> Result<()> {
    let (_, net) = build(&CondUNetConfig::tiny())?;
    let s = setup()?;
    for cfg in [
        AdaptationConfig::paper(),
        AdaptationConfig {
            contrastive: false,
            ..AdaptationConfig::paper()
        },
    ] {
        let parts = compute(&net, &s, cfg, 3)?;
        let grads = parts.noise.backward()?;
        for (name, v) in [("source residual", &s.r_s), ("target residual", &s.r_r)] {
            let g = grads
                .get(v.as_tensor())
                .unwrap_or_else(|| panic!("no gradient to the {name}"));
            assert!(
                g.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0,
                "zero gradient to the {name}"
            );
        }
    }
    Ok(())
}

#[test]
fn ablation_switches_do_what_they_say() -> Result<()> {
    let (_, net) = build(&CondUNetConfig::tiny())?;
    let s = setup()?;
    let full = compute(&net, &s, AdaptationConfig::paper(), 5)?;
    assert!(full.d_neg.is_some() && full.contrastive.is_some());
    let expect =
        (scalar(&full.d_pos)? + scalar(full.contrastive.as_ref().unwrap_or(&full.d_pos))?) / 2.0;
    assert!((scalar(&full.noise)? - expect).abs() < 1e-6);
    let (pos, neg) = (
        full.pos_swapped.clone(),
        full.neg_swapped.clone().unwrap_or_default(),
    );
    assert_eq!(pos.len(), 4);
    assert_eq!(neg.len(), 4);

    // Over many seeds the two masks are independent and both take both values.
    let (mut differ, mut any_swap) = (false, false);
    for seed in 0..12 {
        let p = compute(&net, &s, AdaptationConfig::paper(), seed)?;
        differ |= Some(&p.pos_swapped) != p.neg_swapped.as_ref();
        any_swap |= p.pos_swapped.iter().any(|&x| x);
    }
    assert!(differ && any_swap);

    let no_shuffle = compute(
        &net,
        &s,
        AdaptationConfig {
            shuffle: false,
            ..AdaptationConfig::paper()
        },
        5,
    )?;
    assert!(no_shuffle.pos_swapped.iter().all(|&x| !x));
    assert!(no_shuffle
        .neg_swapped
        .unwrap_or_default()
        .iter()
        .all(|&x| !x));

    let no_con = compute(
        &net,
        &s,
        AdaptationConfig {
            contrastive: false,
            ..AdaptationConfig::paper()
        },
        5,
    )?;
    assert!(no_con.d_neg.is_none() && no_con.contrastive.is_none());
    assert_eq!(scalar(&no_con.noise)?, scalar(&no_con.d_pos)?);

    let ex = compute(
        &net,
        &s,
        AdaptationConfig {
            variant: Variant::Ex,
            ..AdaptationConfig::paper()
        },
        5,
    )?;
    assert!(ex.d_neg.is_none());

    for (lo, hi) in [(1, 100), (900, 999)] {
        let p = compute(
            &net,
            &s,
            AdaptationConfig {
                t_min: lo,
                t_max: hi,
                ..AdaptationConfig::paper()
            },
            5,
        )?;
        assert!(p.t.iter().all(|t| (lo..=hi).contains(t)), "{:?}", p.t);
    }
    assert!(AdaptationLoss::new(
        NoiseSchedule::paper(),
        AdaptationConfig {
            t_max: 1000,
            ..AdaptationConfig::paper()
        }
    )
    .is_err());

    // The same seed gives the same loss.
    let again = compute(&net, &s, AdaptationConfig::paper(), 5)?;
    assert_eq!(scalar(&again.noise)?, scalar(&full.noise)?);
    Ok(())
}
