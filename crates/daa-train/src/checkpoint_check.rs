//! Checks on a restorer checkpoint before and after its weights load: what kind of file it
//! is, whether its metadata asks for an absurd network, whether its tensors are floats, and
//! whether every weight is finite. Only the safetensors header is read before building.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use candle_nn::VarMap;
use daa_backbones::BackboneConfig;

use crate::{Error, Result};

/// A safetensors header: string metadata and, per tensor, its dtype and shape.
#[derive(Debug, Default)]
pub(crate) struct Header {
    pub metadata: HashMap<String, String>,
    pub tensors: Vec<(String, String, Vec<u64>)>,
}

impl Header {
    /// Number of values the file holds.
    fn values(&self) -> f64 {
        self.tensors
            .iter()
            .map(|(_, _, s)| s.iter().map(|&d| d as f64).product::<f64>())
            .sum()
    }
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Reads the header of a safetensors file (an 8-byte length, then JSON) without its data.
pub(crate) fn read_header(path: &Path) -> Result<Header> {
    if path.is_dir() {
        return Err(bad(
            path,
            "is a folder, not a checkpoint file (name a .safetensors file in it, e.g. restorer-best.safetensors)",
        ));
    }
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n).map_err(|_| {
        bad(
            path,
            "not a safetensors file: shorter than its 8-byte header",
        )
    })?;
    let n = u64::from_le_bytes(n);
    if n > 100 << 20 || n + 8 > file_len {
        return Err(bad(
            path,
            format!("not a safetensors file: header length {n} in a file of {file_len} bytes"),
        ));
    }
    let mut json = vec![0u8; n as usize];
    f.read_exact(&mut json).map_err(|e| Error::io(path, e))?;
    let value: serde_json::Value = serde_json::from_slice(&json).map_err(|e| {
        bad(
            path,
            format!("not a safetensors file: header is not JSON: {e}"),
        )
    })?;
    let Some(obj) = value.as_object() else {
        return Err(bad(
            path,
            "not a safetensors file: header is not a JSON object",
        ));
    };
    let mut header = Header::default();
    for (name, v) in obj {
        if name == "__metadata__" {
            if let Some(m) = v.as_object() {
                for (k, val) in m {
                    if let Some(s) = val.as_str() {
                        header.metadata.insert(k.clone(), s.to_string());
                    }
                }
            }
            continue;
        }
        let dtype = v["dtype"].as_str().unwrap_or("?").to_string();
        let shape = v["shape"]
            .as_array()
            .map(|a| a.iter().filter_map(|d| d.as_u64()).collect())
            .unwrap_or_default();
        header.tensors.push((name.clone(), dtype, shape));
    }
    Ok(header)
}

/// Refuses files that are not restorer checkpoints: daa's diffusion and optimizer files (by
/// their `daa.format`), and files whose tensor names are those of one.
pub(crate) fn check_kind(path: &Path, header: &Header) -> Result<()> {
    let what = match header.metadata.get("daa.format").map(String::as_str) {
        Some("daa-diffusion-v1") => Some("a diffusion-network checkpoint (diffusion-<step>)"),
        Some("daa-dann-v1") => Some("a DANN domain-classifier checkpoint (dann-<step>)"),
        Some("daa-optimizer-v1") => Some("an optimizer-state checkpoint (optimizer-<step>)"),
        _ if header
            .tensors
            .iter()
            .any(|(n, _, _)| n.starts_with("opt.") || n.starts_with("adam.")) =>
        {
            Some("an optimizer-state checkpoint")
        }
        _ => None,
    };
    match what {
        Some(w) => Err(bad(
            path,
            format!("this is {w}, not a restorer; pass restorer-<step>.safetensors or restorer-best.safetensors"),
        )),
        None => Ok(()),
    }
}

/// Parameters of a backbone from its configuration alone, in f64 so absurd sizes cannot
/// overflow. Exact for the U-Net and DnCNN, within a few percent for NAFNet.
pub(crate) fn parameters(cfg: &BackboneConfig) -> f64 {
    let conv = |cin: f64, cout: f64, k: f64| k * k * cin * cout + cout;
    match cfg {
        BackboneConfig::UNet(c) => {
            let w = c.width as f64;
            let mut p = 0.0;
            let mut prev = c.in_channels as f64;
            for i in 0..c.depth {
                let ch = w * 2f64.powi(i as i32);
                p += conv(prev, ch, 3.0) + conv(ch, ch, 3.0);
                prev = ch;
            }
            for level in (0..c.depth.saturating_sub(1)).rev() {
                let ch = w * 2f64.powi(level as i32);
                p += conv(prev, ch, 3.0) + conv(2.0 * ch, ch, 3.0) + conv(ch, ch, 3.0);
                prev = ch;
            }
            p + conv(prev, c.out_channels as f64, 3.0)
        }
        BackboneConfig::DnCnn(c) => {
            let w = c.width as f64;
            let hidden = c.depth.saturating_sub(2) as f64;
            conv(3.0, w, 3.0) + hidden * (conv(w, w, 3.0) + 4.0 * w) + conv(w, 3.0, 3.0)
        }
        BackboneConfig::Restormer(c) => {
            // A transformer block of c channels: MDTA (qkv 1x1 + 3x3 depthwise, projection) about
            // 4c^2, GDFN with hidden h = expansion * c about 3hc: within ~10% of the real count.
            let block = |ch: f64| 4.0 * ch * ch + 3.0 * c.ffn_expansion_factor * ch * ch;
            let w = c.dim as f64;
            let enc: f64 = (0..4)
                .map(|i| c.num_blocks[i] as f64 * block(w * 2f64.powi(i as i32)))
                .sum();
            let dec: f64 = (0..3)
                .map(|i| c.num_blocks[i] as f64 * block(w * 2f64.powi(i as i32 + 1).min(8.0)))
                .sum();
            enc + dec + c.num_refinement_blocks as f64 * block(2.0 * w) + 2.0 * conv(3.0, w, 3.0)
        }
        BackboneConfig::Uformer(c) => {
            // A LeWin block of c channels: attention 4c^2, LeFF 2 * mlp_ratio * c^2; encoder
            // levels at 2^i * embed_dim, the bottleneck at 2^n, decoder levels at twice the
            // encoder's width (concatenated skips): an estimate within a few tens of percent.
            let block = |ch: f64| (4.0 + 2.0 * c.mlp_ratio) * ch * ch;
            let w = c.embed_dim as f64;
            let n = c.depths.len();
            c.depths
                .iter()
                .enumerate()
                .map(|(i, &d)| {
                    let level = if i < n / 2 { i } else { n - 1 - i };
                    let mult = if i < n / 2 { 1.0 } else { 2.0 };
                    d as f64 * block(mult * w * 2f64.powi(level as i32))
                })
                .sum::<f64>()
                + 2.0 * conv(3.0, w, 3.0)
        }
        BackboneConfig::NafNet(c) => {
            // A NAFBlock of c channels: 1x1 convs c->2c, c->c (x3), c->2c, a 3x3 depthwise conv
            // on 2c, two LayerNorms and two scales: about 7c^2 + 30c.
            let block = |ch: f64| 7.0 * ch * ch + 30.0 * ch;
            let w = c.width as f64;
            let mut p = 2.0 * conv(3.0, w, 3.0);
            let mut ch = w;
            for (&enc, &dec) in c.enc_blocks.iter().zip(&c.dec_blocks) {
                p += (enc + dec) as f64 * block(ch)
                    + conv(ch, 2.0 * ch, 2.0)
                    + conv(2.0 * ch, 4.0 * ch, 1.0);
                ch *= 2.0;
            }
            p + c.middle_blocks as f64 * block(ch)
        }
    }
}

/// Refuses a configuration whose network would need far more weights than the file holds
/// (metadata edited or corrupted), or more memory than the machine has, before anything is
/// allocated; the message gives the estimate.
pub(crate) fn check_size(path: &Path, cfg: &BackboneConfig, header: &Header) -> Result<()> {
    let params = parameters(cfg);
    let bytes = 4.0 * params;
    let gib = |b: f64| b / (1u64 << 30) as f64;
    let held = header.values();
    if params > 2.0 * held.max(1.0) {
        return Err(bad(
            path,
            format!(
                "its {} configuration needs about {params:.3e} parameters ({:.2} GiB) but the \
                 file holds {held:.0} values: the architecture (from the metadata or --arch) does not \
                 match these weights",
                cfg.name(),
                gib(bytes)
            ),
        ));
    }
    if let Some(avail) = available_memory() {
        if bytes > avail as f64 {
            return Err(bad(
                path,
                format!(
                    "the network needs about {:.2} GiB for its weights alone; {:.2} GiB is available",
                    gib(bytes),
                    gib(avail as f64)
                ),
            ));
        }
    }
    Ok(())
}

/// Refuses a CPU training config whose restorer activations alone cannot fit in the memory
/// available (a huge `--batch-size` or `--patch-size` otherwise ends in the OOM killer or an
/// allocation abort). The estimate is a lower bound: the restorer's inference activations per
/// pixel ([`crate::bytes_per_pixel`]) times the pixels of one batch, once per domain it sees;
/// backward, the diffusion network and Adam come on top, so only clear cases are refused.
pub(crate) fn check_training_memory(cfg: &crate::TrainConfig) -> Result<()> {
    let Some(avail) = available_memory() else {
        return Ok(());
    };
    let passes = if cfg.method.adapts() { 2.0 } else { 1.0 };
    let pixels = cfg.batch_size as f64 * (cfg.patch_size as f64).powi(2);
    let bytes = passes * pixels * crate::bytes_per_pixel(&cfg.backbone) as f64;
    if bytes > avail as f64 {
        let gib = |b: f64| b / (1u64 << 30) as f64;
        return Err(Error::Config(format!(
            "batch {} of {}x{} patches needs at least {:.1} GiB for the restorer's activations \
             alone, and {:.1} GiB is available: lower --batch-size or --patch-size",
            cfg.batch_size,
            cfg.patch_size,
            cfg.patch_size,
            gib(bytes),
            gib(avail as f64)
        )));
    }
    Ok(())
}

/// `MemAvailable` of /proc/meminfo, in bytes (Linux); `None` elsewhere.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Refuses tensors that are not floating point (an integer tensor would be cast silently).
pub(crate) fn check_dtypes(path: &Path, header: &Header) -> Result<()> {
    const FLOATS: [&str; 4] = ["F32", "F16", "BF16", "F64"];
    if let Some((name, dtype, _)) = header
        .tensors
        .iter()
        .find(|(_, d, _)| !FLOATS.contains(&d.as_str()))
    {
        return Err(bad(
            path,
            format!("tensor {name} is {dtype}; restorer weights must be floating point (F32, F16, BF16 or F64)"),
        ));
    }
    Ok(())
}

/// Refuses weights that hold NaN or infinity (they restore to a black image), naming the
/// first such tensor and how many values are bad.
pub(crate) fn check_finite(path: &Path, varmap: &VarMap) -> Result<()> {
    let data = varmap
        .data()
        .lock()
        .map_err(|e| Error::Config(format!("varmap lock poisoned: {e}")))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let values = data[name]
            .as_tensor()
            .flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?;
        let n_bad = values.iter().filter(|v| !v.is_finite()).count();
        if n_bad > 0 {
            return Err(bad(
                path,
                format!(
                    "tensor {name} holds {n_bad} non-finite value(s) (NaN or infinity) of {}; \
                     the run that wrote it diverged",
                    values.len()
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use daa_backbones::{DnCnnConfig, NafNetConfig, UNetConfig};

    fn built(cfg: &BackboneConfig) -> f64 {
        let varmap = VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(
            &varmap,
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        );
        cfg.build(vb).unwrap_or_else(|e| panic!("{e}"));
        varmap
            .all_vars()
            .iter()
            .map(|v| v.elem_count() as f64)
            .sum()
    }

    #[test]
    fn parameter_estimates_match_the_built_networks() {
        for cfg in [
            BackboneConfig::UNet(UNetConfig::paper()),
            BackboneConfig::UNet(UNetConfig::cpu()),
            BackboneConfig::DnCnn(DnCnnConfig::cpu()),
            BackboneConfig::NafNet(NafNetConfig::cpu()),
        ] {
            let (est, real) = (parameters(&cfg), built(&cfg));
            assert!(
                (est / real - 1.0).abs() < 0.15,
                "{cfg:?}: estimate {est}, built {real}"
            );
        }
        assert_eq!(
            parameters(&BackboneConfig::UNet(UNetConfig::paper())),
            8_559_171.0
        );
    }
}
