//! Parity with the project's own PyTorch re-implementation (scripts/reference_nets.py): the
//! same weights, loaded by their official names, give the same outputs within 1e-5 relative.
//! Regenerate the fixture with `python3 scripts/reference_nets.py` (torch, safetensors).

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use daa_backbones::{BackboneConfig, UNetConfig};
use daa_diffusion::{CondUNet, CondUNetConfig};

fn fixture() -> HashMap<String, Tensor> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/parity.safetensors");
    candle_core::safetensors::load(&path, &Device::Cpu).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

fn relative_error(ours: &Tensor, theirs: &Tensor) -> f64 {
    let err = (ours - theirs)
        .and_then(|d| d.abs()?.max_all()?.to_scalar::<f32>())
        .unwrap_or(f32::INFINITY);
    let scale = theirs
        .abs()
        .and_then(|t| t.max_all()?.to_scalar::<f32>())
        .unwrap_or(0.0);
    err as f64 / scale.max(1e-12) as f64
}

#[test]
fn restorer_unet_matches_pytorch() {
    let t = fixture();
    let vb = VarBuilder::from_tensors(t.clone(), DType::F32, &Device::Cpu);
    let net = BackboneConfig::UNet(UNetConfig::tiny())
        .build(vb.pp("restorer"))
        .unwrap_or_else(|e| panic!("{e}"));
    let ours = net
        .residual(&t["unet_input"], false)
        .unwrap_or_else(|e| panic!("{e}"));
    let err = relative_error(&ours, &t["unet_residual"]);
    assert!(err < 1e-5, "relative error {err}");
}

#[test]
fn cond_unet_matches_pytorch() {
    let t = fixture();
    let vb = VarBuilder::from_tensors(t.clone(), DType::F32, &Device::Cpu);
    let net = CondUNet::new(vb.pp("diffusion"), &CondUNetConfig::tiny())
        .unwrap_or_else(|e| panic!("{e}"));
    let ours = net
        .forward_t(&t["cond_input"], &t["cond_gamma"], None)
        .unwrap_or_else(|e| panic!("{e}"));
    let err = relative_error(&ours, &t["cond_output"]);
    assert!(err < 1e-5, "relative error {err}");
}
