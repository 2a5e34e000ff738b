//! Wall time of one forward + backward pass of each CPU preset (batch 8, 48x48, the CPU
//! training preset's patch), for comparing the backbones' cost:
//! `RAYON_NUM_THREADS=1 cargo run --release -p daa-backbones --example step_time`.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use daa_backbones::{
    parameter_count, BackboneConfig, NafNetConfig, RestormerConfig, UNetConfig, UformerConfig,
};

fn main() -> candle_core::Result<()> {
    let (b, s) = (8, 48);
    for cfg in [
        BackboneConfig::UNet(UNetConfig::cpu()),
        BackboneConfig::NafNet(NafNetConfig::cpu()),
        BackboneConfig::Restormer(RestormerConfig::cpu()),
        BackboneConfig::Uformer(UformerConfig::cpu()),
    ] {
        let varmap = VarMap::new();
        let net = cfg.build(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
        let x = Tensor::rand(0f32, 1., (b, 3, s, s), &Device::Cpu)?;
        let mut times = Vec::new();
        for _ in 0..5 {
            let t = std::time::Instant::now();
            let loss = net.restore(&x, true)?.sqr()?.mean_all()?;
            let _grads = loss.backward()?;
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        eprintln!(
            "{:10} {:>9} params  forward+backward, batch {b}, {s}x{s}: median of 5 {:.2} s",
            cfg.name(),
            parameter_count(&varmap),
            times[2]
        );
    }
    Ok(())
}
