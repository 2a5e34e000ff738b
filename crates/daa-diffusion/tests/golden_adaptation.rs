//! Golden values of [`AdaptationLoss`]: a fixed tiny input, a fixed seed and the CondUNet of the
//! parity fixture give the `d_pos`, `d_neg`, hinge and noise loss that an independent PyTorch
//! computation (float64) gives for the same draws.
//!
//! The fixture `tests/data/golden_adaptation.safetensors` holds the inputs, the draws the loss
//! makes from [`SEED`] (t, gamma, eps, both swap masks) and the expected values. It is made in
//! two steps: this test writes the draws, scripts/golden_adaptation.py computes the rest:
//!
//! ```text
//! DAA_WRITE_ADAPTATION_DRAWS=/tmp/draws.safetensors \
//!     cargo test -p daa-diffusion --test golden_adaptation
//! python3 scripts/golden_adaptation.py /tmp/draws.safetensors
//! ```
//!
//! The script's core, with `net` the reference CondUNet of scripts/reference_nets.py in float64:
//!
//! ```text
//! y_noisy = sqrt(g) * (2 clean - 1) + sqrt(1 - g) * eps
//! def d(a, b, swap):                                    # a, b: restored images in [0, 1]
//!     A, B = where(swap, b, a), where(swap, a, b)
//!     return mean((eps - net(cat[y_noisy, 2A - 1, 2B - 1], gamma))^2)
//! d_pos = d(x_s + r_s, x_r + r_r, pos_swapped); d_neg = d(x_s + r_r, x_r + r_s, neg_swapped)
//! hinge = max(0, d_pos - d_neg + 0.1); noise = (d_pos + hinge) / 2
//! ```
//!
//! The network runs in eval mode (`train = false`): no dropout, so no dropout randomness.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use daa_diffusion::{
    gaussian_like, scalar, swap_mask, AdaptationConfig, AdaptationInputs, AdaptationLoss, CondUNet,
    CondUNetConfig, NoiseSchedule,
};
use rand::SeedableRng;

/// The seed the loss draws its noise levels, noise and masks from.
const SEED: u64 = 2024;
/// Batch and image size of the fixture's inputs.
const SHAPE: (usize, usize, usize, usize) = (3, 3, 16, 16);

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn load(name: &str) -> HashMap<String, Tensor> {
    let path = data(name);
    candle_core::safetensors::load(&path, &Device::Cpu).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// The draws [`AdaptationLoss::compute`] makes from a fresh `ChaCha8Rng::seed_from_u64(SEED)`,
/// in its order: per sample `(t, gamma)`, then `eps`, then the positive and negative swap masks.
fn replay_draws() -> Result<HashMap<String, Tensor>> {
    let schedule = NoiseSchedule::paper();
    let cfg = AdaptationConfig::paper();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(SEED);
    let (b, ..) = SHAPE;
    let (t, gamma): (Vec<i64>, Vec<f32>) = (0..b)
        .map(|_| schedule.sample_gamma(cfg.t_min, cfg.t_max, &mut rng))
        .map(|(t, g)| (t as i64, g as f32))
        .unzip();
    let eps = gaussian_like(&Tensor::zeros(SHAPE, DType::F32, &Device::Cpu)?, &mut rng)?;
    let mask =
        |m: Vec<bool>| Tensor::new(m.iter().map(|&s| s as u8).collect::<Vec<_>>(), &Device::Cpu);
    let pos = mask(swap_mask(b, &mut rng))?;
    let neg = mask(swap_mask(b, &mut rng))?;
    Ok(HashMap::from([
        ("t".to_string(), Tensor::new(t, &Device::Cpu)?),
        ("gamma".to_string(), Tensor::new(gamma, &Device::Cpu)?),
        ("eps".to_string(), eps),
        ("pos_swapped".to_string(), pos),
        ("neg_swapped".to_string(), neg),
    ]))
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    (a.to_dtype(DType::F64)? - b.to_dtype(DType::F64)?)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f64>()
}

#[test]
fn seeded_draws_are_the_fixtures() -> Result<()> {
    let draws = replay_draws()?;
    if let Some(path) = std::env::var_os("DAA_WRITE_ADAPTATION_DRAWS") {
        candle_core::safetensors::save(&draws, &path)?;
        return Ok(());
    }
    let fixture = load("golden_adaptation.safetensors");
    for (name, ours) in &draws {
        let theirs = &fixture[name];
        assert_eq!(ours.dims(), theirs.dims(), "{name}");
        assert_eq!(max_abs_diff(ours, theirs)?, 0.0, "draw {name} changed");
    }
    Ok(())
}

#[test]
fn adaptation_loss_matches_the_independent_computation() -> Result<()> {
    if std::env::var_os("DAA_WRITE_ADAPTATION_DRAWS").is_some() {
        return Ok(());
    }
    let f = load("golden_adaptation.safetensors");
    let weights = load("parity_cond_unet.safetensors");
    let vb = VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
    let net = CondUNet::new(vb.pp("diffusion"), &CondUNetConfig::tiny())?;
    let loss = AdaptationLoss::new(NoiseSchedule::paper(), AdaptationConfig::paper())?;
    // The fixture's script works in [0, 1] and maps every image to [-1, 1] (`2 x - 1`) where it
    // enters the diffusion network; AdaptationLoss takes its images in the range the restorer
    // works in and never remaps, so it is fed the signed range: images `2 x - 1`, residuals `2 r`.
    let signed = |x: &Tensor| x.affine(2.0, -1.0);
    let (clean, x_s, x_r) = (
        signed(&f["clean"])?,
        signed(&f["source_input"])?,
        signed(&f["target_input"])?,
    );
    let (r_s, r_r) = (
        f["source_residual"].affine(2.0, 0.0)?,
        f["target_residual"].affine(2.0, 0.0)?,
    );
    let inputs = AdaptationInputs {
        clean: &clean,
        source_input: &x_s,
        target_input: &x_r,
        source_residual: &r_s,
        target_residual: &r_r,
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(SEED);
    let parts = loss.compute(&net, &inputs, &mut rng, None)?;

    // The draws the loss reports are the fixture's.
    let t: Vec<usize> = f["t"]
        .to_vec1::<i64>()?
        .iter()
        .map(|&t| t as usize)
        .collect();
    let flags = |name: &str| -> Result<Vec<bool>> {
        Ok(f[name].to_vec1::<u8>()?.iter().map(|&v| v != 0).collect())
    };
    assert_eq!(parts.t, t);
    assert_eq!(parts.pos_swapped, flags("pos_swapped")?);
    assert_eq!(parts.neg_swapped, Some(flags("neg_swapped")?));

    let (Some(d_neg), Some(hinge)) = (&parts.d_neg, &parts.contrastive) else {
        panic!("the paper's config computes the negative pass and the hinge");
    };
    for (name, ours) in [
        ("d_pos", &parts.d_pos),
        ("d_neg", d_neg),
        ("hinge", hinge),
        ("noise", &parts.noise),
    ] {
        let ours = scalar(ours)?;
        let expected = f[name].to_vec1::<f64>()?[0];
        // float32 against float64 over 2,304 squared errors.
        let tol = 1e-5 * expected.abs().max(1e-2);
        assert!(
            (ours - expected).abs() <= tol,
            "{name}: ours {ours}, expected {expected}"
        );
    }
    // The fixture exercises the hinge: it is active, so noise != d_pos.
    assert!(f["hinge"].to_vec1::<f64>()?[0] > 0.0);
    Ok(())
}
