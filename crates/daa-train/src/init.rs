//! Reproducible weight initialisation.
//!
//! candle's CPU device cannot be seeded, so weights created through a plain `VarMap` differ on
//! every run. [`seeded_var_builder`] creates each variable from a ChaCha8 stream seeded by
//! `(seed, variable name)`, following the layer's `Init` hint (constant, uniform, normal,
//! Kaiming), so a run's weights are a pure function of its seed whatever the device and
//! whatever order the layers are built in.

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::init::{Init, NormalOrUniform};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

struct Seeded {
    varmap: VarMap,
    seed: u64,
}

fn name_seed(seed: u64, name: &str) -> u64 {
    // FNV-1a over the name, mixed with the seed.
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn values(init: Init, shape: &Shape, rng: &mut rand_chacha::ChaCha8Rng) -> Vec<f32> {
    let n = shape.elem_count();
    let uniform = |lo: f64, up: f64, rng: &mut rand_chacha::ChaCha8Rng| -> Vec<f32> {
        (0..n).map(|_| rng.random_range(lo..up) as f32).collect()
    };
    let normal = |mean: f64, std: f64, rng: &mut rand_chacha::ChaCha8Rng| -> Vec<f32> {
        (0..n)
            .map(|_| {
                let z: f64 = StandardNormal.sample(rng);
                (mean + std * z) as f32
            })
            .collect()
    };
    match init {
        Init::Const(v) => vec![v as f32; n],
        Init::Uniform { lo, up } => uniform(lo, up, rng),
        Init::Randn { mean, stdev } => normal(mean, stdev, rng),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
            match dist {
                NormalOrUniform::Uniform => uniform(-(3f64.sqrt()) * std, 3f64.sqrt() * std, rng),
                NormalOrUniform::Normal => normal(0.0, std, rng),
            }
        }
    }
}

/// The reference's init on top of the layer's hint: conv and linear biases, whose candle
/// default is uniform, start at zero (their weights already default to Kaiming normal, fan-in,
/// gain sqrt(2)).
fn reference_init(name: &str, hint: Init) -> Init {
    match hint {
        Init::Uniform { .. } if name.ends_with("bias") => Init::Const(0.0),
        other => other,
    }
}

impl SimpleBackend for Seeded {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut data = self
            .varmap
            .data()
            .lock()
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        if let Some(v) = data.get(name) {
            if v.shape() != &s {
                candle_core::bail!("shape mismatch on {name}: {s:?} <> {:?}", v.shape());
            }
            return Ok(v.as_tensor().clone());
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(name_seed(self.seed, name));
        let t = Tensor::from_vec(
            values(reference_init(name, h), &s, &mut rng),
            s,
            &Device::Cpu,
        )?
        .to_dtype(dtype)?
        .to_device(dev)?;
        let var = Var::from_tensor(&t)?;
        let t = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        candle_core::bail!("seeded var builder: {name} must be requested with a shape")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap
            .data()
            .lock()
            .map(|d| d.contains_key(name))
            .unwrap_or(false)
    }
}

/// A `VarBuilder` that creates variables in `varmap`, each initialised from `(seed, name)`.
pub fn seeded_var_builder(
    varmap: &VarMap,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> VarBuilder<'static> {
    VarBuilder::from_backend(
        Box::new(Seeded {
            varmap: varmap.clone(),
            seed,
        }),
        dtype,
        device.clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use daa_backbones::{BackboneConfig, UNetConfig};

    fn weights(seed: u64) -> Result<Vec<f32>> {
        let varmap = VarMap::new();
        BackboneConfig::UNet(UNetConfig::tiny()).build(seeded_var_builder(
            &varmap,
            seed,
            DType::F32,
            &Device::Cpu,
        ))?;
        let data = varmap
            .data()
            .lock()
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        data["down_path.1.block.0.weight"]
            .as_tensor()
            .flatten_all()?
            .to_vec1()
    }

    #[test]
    fn same_seed_same_weights_other_seed_other_weights() -> Result<()> {
        assert_eq!(weights(3)?, weights(3)?);
        assert_ne!(weights(3)?, weights(4)?);
        // candle's conv default is Kaiming-normal (fan_in, ReLU gain): for a 3x3 conv with 8
        // input channels std = sqrt(2 / 72) ~ 0.1667; 1152 samples estimate it within a few %.
        let w = weights(3)?;
        let std = (w.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / w.len() as f64).sqrt();
        assert!((std - 0.1667).abs() < 0.012, "{std}");
        Ok(())
    }

    /// The reference's init: Kaiming-normal weights and zero biases on every conv and linear,
    /// the restorer's and the diffusion network's (its `cond_embed` MLP included).
    #[test]
    fn every_bias_starts_at_zero() -> Result<()> {
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, 5, DType::F32, &Device::Cpu);
        BackboneConfig::UNet(UNetConfig::tiny()).build(vb.pp("restorer"))?;
        daa_diffusion::CondUNet::new(vb.pp("diffusion"), &daa_diffusion::CondUNetConfig::tiny())?;
        let data = varmap
            .data()
            .lock()
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let biases: Vec<_> = data.iter().filter(|(k, _)| k.ends_with("bias")).collect();
        assert!(biases.iter().any(|(k, _)| k.contains("cond_embed")));
        assert!(biases.iter().any(|(k, _)| k.starts_with("restorer.last")));
        for (name, v) in biases {
            let m = v.as_tensor().abs()?.max_all()?.to_scalar::<f32>()?;
            assert_eq!(m, 0.0, "{name} starts at {m}");
        }
        let w = data["diffusion.cond_embed.0.weight"].as_tensor();
        let n = w.elem_count() as f64;
        let std = (w.sqr()?.sum_all()?.to_scalar::<f32>()? as f64 / n).sqrt();
        // Linear(16, 64): fan-in 16, std = sqrt(2 / 16) = 0.354.
        assert!((std - 0.354).abs() < 0.03, "{std}");
        Ok(())
    }
}
