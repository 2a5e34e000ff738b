//! Parameter counts and tensor names of the paper configurations of Restormer and Uformer.
//!
//! The networks are built on a VarBuilder backend that records each requested name and shape
//! and hands back a broadcast zero (no memory, no random init), so pinning the 26 M and 50 M
//! parameter models costs milliseconds.
//!
//! The checked-in key lists (`tests/data/*_keys.txt`, `name [shape]` per line, sorted) are
//! the tensor names and shapes of the reference implementations' `state_dict()` minus buffers
//! (Uformer's `relative_position_index`), i.e. what a converted release checkpoint holds;
//! `tests/data/golden_transformers.py` writes them with the reference code.

use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use daa_backbones::{BackboneConfig, RestormerConfig, UformerConfig};

/// `(name, shape)` of every requested tensor.
type Requests = Vec<(String, Vec<usize>)>;

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Requests>>);

impl SimpleBackend for Recorder {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        self.0
            .lock()
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?
            .push((name.to_string(), s.dims().to_vec()));
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }
    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        candle_core::bail!("recorder: no shape for {name}")
    }
    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

/// Sorted `(name, shape)` of every tensor the network requests.
fn tensors(cfg: &BackboneConfig) -> Result<Requests> {
    let rec = Recorder::default();
    let vb = VarBuilder::from_backend(Box::new(rec.clone()), DType::F32, Device::Cpu);
    cfg.build(vb)?;
    let mut v = rec
        .0
        .lock()
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?
        .clone();
    v.sort();
    Ok(v)
}

fn count(cfg: &BackboneConfig) -> Result<usize> {
    Ok(tensors(cfg)?
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum())
}

/// Compares the sorted `name [shape]` list with `tests/data/{file}`.
fn check_keys(cfg: &BackboneConfig, file: &str) -> Result<()> {
    let got: Vec<String> = tensors(cfg)?
        .iter()
        .map(|(n, s)| format!("{n} {s:?}"))
        .collect();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(file);
    let want = std::fs::read_to_string(&path)?;
    let want: Vec<&str> = want.lines().collect();
    assert_eq!(got.len(), want.len(), "{file}: number of tensors");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w, "{file}");
    }
    Ok(())
}

/// 26,126,644 is the parameter count of the reference's `Restormer()` with its defaults
/// (`LayerNorm_type='WithBias'`), the configuration of its deraining and motion / defocus
/// deblurring models (Deraining.yml, Deblurring_Restormer.yml in the reference): the paper's
/// "26.1 M". Recounted by hand from the reference's layer shapes: a block at `c` channels with
/// `h = int(2.66 c)` holds `4c^2 + 27c + heads + 3ch + 18h` plus `4c` for the two norms.
#[test]
fn paper_restormer_has_26_126_644_parameters() -> Result<()> {
    assert_eq!(
        count(&BackboneConfig::Restormer(RestormerConfig::paper()))?,
        26_126_644
    );
    Ok(())
}

/// The reference's denoising models (Gaussian and real denoising, `LayerNorm_type: BiasFree`)
/// drop the 14,976 LayerNorm biases: 26,111,668 parameters.
#[test]
fn denoising_restormer_has_26_111_668_parameters() -> Result<()> {
    assert_eq!(
        count(&BackboneConfig::Restormer(RestormerConfig::denoise()))?,
        26_111_668
    );
    Ok(())
}

/// Uformer-B as the reference builds it (`Uformer(embed_dim=32, win_size=8, depths=[1, 2, 8,
/// 8, 2, 8, 8, 2, 1], modulator=True)`, its SIDD/GoPro model): 50,880,946 parameters, the
/// paper's "50.88 M"; Uformer-S 20,628,317 ("20.63 M") and Uformer-T 5,230,413 ("5.23 M").
/// Recounted by hand from the reference's layer shapes (see docs/backbones.md).
#[test]
fn uformer_paper_configurations_have_the_reference_parameter_counts() -> Result<()> {
    assert_eq!(
        count(&BackboneConfig::Uformer(UformerConfig::paper()))?,
        50_880_946
    );
    assert_eq!(
        count(&BackboneConfig::Uformer(UformerConfig::small()))?,
        20_628_317
    );
    assert_eq!(
        count(&BackboneConfig::Uformer(UformerConfig::tiny_paper()))?,
        5_230_413
    );
    Ok(())
}

#[test]
fn paper_restormer_uses_the_reference_tensor_names_and_shapes() -> Result<()> {
    check_keys(
        &BackboneConfig::Restormer(RestormerConfig::paper()),
        "restormer_paper_keys.txt",
    )
}

#[test]
fn paper_uformer_uses_the_reference_tensor_names_and_shapes() -> Result<()> {
    check_keys(
        &BackboneConfig::Uformer(UformerConfig::paper()),
        "uformer_paper_keys.txt",
    )
}

/// A few names and shapes spelled out from the reference code, independent of the lists.
#[test]
fn reference_names_spot_checks() -> Result<()> {
    let r = tensors(&BackboneConfig::Restormer(RestormerConfig::paper()))?;
    let has = |v: &[(String, Vec<usize>)], n: &str, s: &[usize]| {
        assert!(
            v.iter().any(|(k, sh)| k == n && sh == s),
            "missing {n} {s:?}"
        )
    };
    has(&r, "patch_embed.proj.weight", &[48, 3, 3, 3]);
    has(&r, "encoder_level1.0.norm1.body.weight", &[48]);
    has(&r, "encoder_level1.0.norm1.body.bias", &[48]);
    has(&r, "encoder_level1.3.attn.temperature", &[1, 1, 1]);
    has(&r, "latent.7.attn.temperature", &[8, 1, 1]);
    has(&r, "encoder_level2.0.attn.qkv.weight", &[288, 96, 1, 1]);
    has(
        &r,
        "encoder_level2.0.attn.qkv_dwconv.weight",
        &[288, 1, 3, 3],
    );
    has(
        &r,
        "encoder_level1.0.ffn.project_in.weight",
        &[254, 48, 1, 1],
    );
    has(&r, "encoder_level1.0.ffn.dwconv.weight", &[254, 1, 3, 3]);
    has(
        &r,
        "encoder_level1.0.ffn.project_out.weight",
        &[48, 127, 1, 1],
    );
    has(&r, "down1_2.body.0.weight", &[24, 48, 3, 3]);
    has(&r, "up4_3.body.0.weight", &[768, 384, 3, 3]);
    has(&r, "reduce_chan_level3.weight", &[192, 384, 1, 1]);
    has(&r, "decoder_level1.3.attn.qkv.weight", &[288, 96, 1, 1]);
    has(&r, "refinement.3.ffn.project_out.weight", &[96, 255, 1, 1]);
    has(&r, "output.weight", &[3, 96, 3, 3]);
    assert!(!r.iter().any(|(k, _)| k == "output.bias"), "bias=False");
    let u = tensors(&BackboneConfig::Uformer(UformerConfig::paper()))?;
    has(&u, "input_proj.proj.0.weight", &[32, 3, 3, 3]);
    has(
        &u,
        "encoderlayer_0.blocks.0.attn.relative_position_bias_table",
        &[225, 1],
    );
    has(
        &u,
        "encoderlayer_0.blocks.0.attn.qkv.to_q.weight",
        &[32, 32],
    );
    has(
        &u,
        "encoderlayer_0.blocks.0.attn.qkv.to_kv.weight",
        &[64, 32],
    );
    has(
        &u,
        "encoderlayer_0.blocks.0.mlp.linear1.0.weight",
        &[128, 32],
    );
    has(
        &u,
        "encoderlayer_0.blocks.0.mlp.dwconv.0.weight",
        &[128, 1, 3, 3],
    );
    has(&u, "dowsample_0.conv.0.weight", &[64, 32, 4, 4]);
    has(
        &u,
        "conv.blocks.1.attn.relative_position_bias_table",
        &[225, 16],
    );
    has(&u, "upsample_0.deconv.0.weight", &[512, 256, 2, 2]);
    has(&u, "decoderlayer_0.blocks.7.modulator.weight", &[64, 512]);
    has(&u, "decoderlayer_3.blocks.0.attn.proj.weight", &[64, 64]);
    has(&u, "output_proj.proj.0.weight", &[3, 64, 3, 3]);
    assert!(
        !u.iter()
            .any(|(k, _)| k.starts_with("encoderlayer") && k.contains("modulator")),
        "the reference puts modulators in the decoder only"
    );
    Ok(())
}

/// The CPU presets' sizes, as documented in docs/backbones.md.
#[test]
fn cpu_presets_have_the_documented_parameter_counts() -> Result<()> {
    assert_eq!(
        count(&BackboneConfig::Restormer(RestormerConfig::cpu()))?,
        785_768
    );
    assert_eq!(
        count(&BackboneConfig::Uformer(UformerConfig::cpu()))?,
        314_442
    );
    Ok(())
}
