//! Restormer and Uformer against the reference PyTorch implementations.
//!
//! The fixtures in `tests/data/golden_*.safetensors` hold a state_dict of the reference model
//! (github.com/swz30/Restormer at 861974ad, github.com/ZhendongWang6/Uformer at 4ce7d9b9) with
//! seeded random weights, an input, the reference's output minus the input and its bottleneck
//! features, all in float64; `tests/data/golden_transformers.py` writes them (see its header).
//! Loading the state_dict through our tensor names is itself the check that the reference's
//! weights load; the forward passes must then agree to float64 round-off.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use daa_backbones::{BackboneConfig, LayerNormType, RestormerConfig, UformerConfig};

fn fixture(name: &str) -> Result<std::collections::HashMap<String, Tensor>> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    candle_core::safetensors::load(path, &Device::Cpu)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()
}

/// Builds `cfg` from the fixture's weights (strictly: every tensor the network asks for must
/// be there with the right shape) and compares residual and features with the reference.
fn check(cfg: BackboneConfig, file: &str) -> Result<()> {
    let tensors = fixture(file)?;
    let get = |k: &str| {
        tensors
            .get(k)
            .cloned()
            .ok_or_else(|| candle_core::Error::Msg(format!("{file}: no {k}")))
    };
    let (x, want_res, want_feats) = (
        get("golden.input")?,
        get("golden.residual")?,
        get("golden.features")?,
    );
    let vb = VarBuilder::from_tensors(tensors.clone(), DType::F64, &Device::Cpu);
    let net = cfg.build(vb)?;
    let (res, feats) = net.residual_and_features(&x, false)?;
    assert_eq!(res.dims(), want_res.dims(), "{file}");
    assert_eq!(feats.dims(), want_feats.dims(), "{file}");
    let scale = want_res.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?;
    let d_res = max_abs_diff(&res, &want_res)?;
    let d_feats = max_abs_diff(&feats, &want_feats)?;
    assert!(
        scale > 1e-3,
        "{file}: degenerate fixture, residual scale {scale}"
    );
    assert!(
        d_res < 1e-9 * scale.max(1.0),
        "{file}: residual differs by {d_res}"
    );
    assert!(d_feats < 1e-9, "{file}: features differ by {d_feats}");
    Ok(())
}

#[test]
fn restormer_matches_the_reference() -> Result<()> {
    check(
        BackboneConfig::Restormer(RestormerConfig {
            dim: 4,
            ..RestormerConfig::tiny()
        }),
        "golden_restormer_tiny.safetensors",
    )
}

#[test]
fn bias_free_restormer_matches_the_reference() -> Result<()> {
    check(
        BackboneConfig::Restormer(RestormerConfig {
            dim: 4,
            num_blocks: [2, 1, 1, 2],
            num_refinement_blocks: 2,
            heads: [1, 2, 2, 4],
            ffn_expansion_factor: 2.66,
            bias: false,
            layer_norm: LayerNormType::BiasFree,
        }),
        "golden_restormer_biasfree.safetensors",
    )
}

/// Four levels with shifted windows at 32x32, 16x16 and 8x8 and none at the 2x2 bottleneck,
/// the modulator in the decoder.
#[test]
fn uformer_matches_the_reference() -> Result<()> {
    check(
        BackboneConfig::Uformer(UformerConfig {
            embed_dim: 2,
            depths: vec![1, 2, 1, 1, 2, 1, 1, 2, 1],
            num_heads: vec![1, 1, 2, 2, 4, 4, 2, 2, 1],
            win_size: 2,
            mlp_ratio: 2.0,
            qkv_bias: true,
            shift: true,
            modulator: true,
        }),
        "golden_uformer_small.safetensors",
    )
}
