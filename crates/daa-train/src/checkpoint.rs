use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use daa_backbones::{Backbone, BackboneConfig};
use daa_diffusion::ValueRange;

use crate::{Error, Result};

/// The `daa.format` metadata value of a restorer checkpoint written by daa.
pub const RESTORER_FORMAT: &str = "daa-restorer-v1";

/// At most this many bytes of the target's name go into its temporary name, so the
/// temporary name stays short (under 80 bytes) whatever the target's length: a name of
/// 245-255 bytes, legal itself, must not fail on a temporary name past the 255-byte limit.
const TMP_NAME_PREFIX: usize = 32;

/// The temporary file beside `path` that [`write_atomic`] fills:
/// `.{first 32 bytes of the name}.{pid}.{n}.tmp`, unique per process and call.
fn tmp_path(path: &Path) -> std::path::PathBuf {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut keep = name.len().min(TMP_NAME_PREFIX);
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    path.with_file_name(format!(".{}.{}.{n}.tmp", &name[..keep], std::process::id()))
}

/// Writes a file atomically: `write` fills a temporary file beside `path` (a short name, see
/// [`TMP_NAME_PREFIX`]), which is synced and then renamed over `path`. On any failure the
/// temporary file is removed and whatever was at `path` before stays intact.
pub fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = tmp_path(path);
    let result = write(&tmp).and_then(|()| {
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Saves named tensors plus string metadata as safetensors, atomically.
pub(crate) fn save_tensors(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
    metadata: HashMap<String, String>,
) -> Result<()> {
    write_atomic(path, |tmp| {
        let mut items: Vec<(&String, &Tensor)> = tensors.iter().collect();
        items.sort_by(|a, b| a.0.cmp(b.0));
        safetensors::serialize_to_file(items, Some(metadata), tmp).map_err(|e| {
            Error::Checkpoint {
                path: path.to_path_buf(),
                reason: format!("cannot write: {e}"),
            }
        })?;
        sort_header(tmp)
    })
}

/// Rewrites the JSON header of the safetensors file at `path` with its keys sorted. safetensors
/// writes the `__metadata__` map in `HashMap` order, which changes from run to run, so two
/// identical checkpoints differed in bytes and `cmp`/`sha256sum` could not show that a resumed
/// run equals an uninterrupted one. The sorted header has the same length (the same entries),
/// so it is overwritten in place; the tensor data does not move.
fn sort_header(path: &Path) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    fn sorted(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let mut entries: Vec<_> = m.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                serde_json::Value::Object(
                    entries.into_iter().map(|(k, v)| (k, sorted(v))).collect(),
                )
            }
            other => other,
        }
    }
    let io = |e| Error::io(path, e);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io)?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(io)?;
    let n = u64::from_le_bytes(len) as usize;
    let mut header = vec![0u8; n];
    f.read_exact(&mut header).map_err(io)?;
    let value: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| Error::Checkpoint {
            path: path.to_path_buf(),
            reason: format!("unreadable header just written: {e}"),
        })?;
    let mut out = serde_json::to_vec(&sorted(value)).map_err(|e| Error::Checkpoint {
        path: path.to_path_buf(),
        reason: format!("cannot write the header: {e}"),
    })?;
    if out.len() > n {
        return Ok(()); // cannot happen (same entries); keep safetensors' own header
    }
    out.resize(n, b' ');
    f.seek(SeekFrom::Start(8)).map_err(io)?;
    f.write_all(&out).map_err(io)
}

pub(crate) fn varmap_tensors(varmap: &VarMap) -> Result<HashMap<String, Tensor>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::Poisoned("variable map"))?;
    Ok(data
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect())
}

/// The metadata key of the value range a restorer was trained in (`unit` or `signed`).
pub const RANGE_KEY: &str = "daa.range";

/// Saves a restorer's weights with its configuration in the file's metadata
/// (`daa.format`, `daa.backbone` as JSON, `daa.range`: the value range it was trained in), so
/// `daa restore` needs nothing else.
pub fn save_restorer(
    path: &Path,
    varmap: &VarMap,
    cfg: &BackboneConfig,
    range: ValueRange,
) -> Result<()> {
    let json = serde_json::to_string(cfg).map_err(|e| Error::Json {
        path: path.to_path_buf(),
        source: e,
    })?;
    let meta = HashMap::from([
        ("daa.format".to_string(), RESTORER_FORMAT.to_string()),
        ("daa.backbone".to_string(), json),
        (RANGE_KEY.to_string(), range_name(range).to_string()),
    ]);
    save_tensors(path, &varmap_tensors(varmap)?, meta)
}

fn range_name(range: ValueRange) -> &'static str {
    match range {
        ValueRange::Unit => "unit",
        ValueRange::Signed => "signed",
    }
}

/// The value range the restorer in `path` was trained in, from its `daa.range` metadata: the
/// range its input is mapped into and its output mapped back from. A checkpoint without it
/// (written before the range was a setting, or converted from another tool) is `unit`; any
/// other value is an error naming it.
pub fn restorer_range(path: &Path) -> Result<ValueRange> {
    let meta = read_metadata(path)?;
    match meta.get(RANGE_KEY).map(String::as_str) {
        None | Some("unit") => Ok(ValueRange::Unit),
        Some("signed") => Ok(ValueRange::Signed),
        Some(other) => Err(Error::Checkpoint {
            path: path.to_path_buf(),
            reason: format!("unknown {RANGE_KEY} metadata {other:?} (known: unit, signed)"),
        }),
    }
}

/// Reads the safetensors metadata of `path`.
pub(crate) fn read_metadata(path: &Path) -> Result<HashMap<String, String>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| Error::Checkpoint {
            path: path.to_path_buf(),
            reason: format!("not a safetensors file: {e}"),
        })?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

/// Loads every variable of `varmap` from `path`; a missing tensor or a shape mismatch is an
/// error naming it.
pub(crate) fn load_into(varmap: &VarMap, path: &Path, device: &Device) -> Result<()> {
    let tensors = candle_core::safetensors::load(path, device).map_err(|e| Error::Checkpoint {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::Poisoned("variable map"))?;
    let mut missing: Vec<&String> = data.keys().filter(|k| !tensors.contains_key(*k)).collect();
    missing.sort();
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(8).map(|s| s.as_str()).collect();
        return Err(Error::Checkpoint {
            path: path.to_path_buf(),
            reason: format!(
                "{} tensors missing, e.g. {}",
                missing.len(),
                shown.join(", ")
            ),
        });
    }
    for (name, var) in data.iter() {
        let t = &tensors[name];
        if t.shape() != var.shape() {
            return Err(Error::Checkpoint {
                path: path.to_path_buf(),
                reason: format!(
                    "{name} has shape {:?}, the network wants {:?}",
                    t.shape(),
                    var.shape()
                ),
            });
        }
        var.set(&t.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

/// Loads a restorer. The architecture comes from the file's `daa.backbone` metadata, or from
/// `arch` when given (needed for checkpoints converted from other tools). Returns the config,
/// the network and its variables.
pub fn load_restorer(
    path: &Path,
    device: &Device,
    arch: Option<&BackboneConfig>,
) -> Result<(BackboneConfig, Backbone, VarMap)> {
    let header = crate::checkpoint_check::read_header(path)?;
    crate::checkpoint_check::check_kind(path, &header)?;
    let meta = read_metadata(path)?;
    let cfg = match (arch, meta.get("daa.backbone")) {
        (Some(a), _) => a.clone(),
        (None, Some(json)) => serde_json::from_str(json).map_err(|e| Error::Checkpoint {
            path: path.to_path_buf(),
            reason: format!("bad daa.backbone metadata: {e}"),
        })?,
        (None, None) => {
            return Err(Error::Checkpoint {
                path: path.to_path_buf(),
                reason: "no daa.backbone metadata; name the architecture (e.g. --arch unet-paper)"
                    .into(),
            })
        }
    };
    crate::checkpoint_check::check_size(path, &cfg, &header)?;
    crate::checkpoint_check::check_dtypes(path, &header)?;
    let varmap = VarMap::new();
    let net = cfg.build(VarBuilder::from_varmap(&varmap, DType::F32, device))?;
    load_into(&varmap, path, device)?;
    crate::checkpoint_check::check_finite(path, &varmap)?;
    Ok((cfg, net, varmap))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_short_whatever_the_target_name() {
        for name in [
            "a".to_string(),
            "restorer-best.safetensors".to_string(),
            format!("{}.safetensors", "r".repeat(243)),
            "é".repeat(127),
        ] {
            let tmp = tmp_path(&Path::new("/x").join(&name));
            let n = tmp.file_name().map_or(usize::MAX, |n| n.len());
            assert!(n < 80, "{} bytes: {n}", name.len());
            assert!(tmp.to_string_lossy().ends_with(".tmp"));
        }
        let p = Path::new("/x/y.json");
        assert_ne!(
            tmp_path(p),
            tmp_path(p),
            "two writes never share a temporary file"
        );
    }

    #[test]
    fn a_255_byte_name_is_written_atomically() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        // 255 bytes: the longest name ext4, tmpfs, XFS and btrfs allow.
        let path = dir.path().join(format!("{}.safetensors", "r".repeat(243)));
        assert_eq!(path.file_name().map(|n| n.len()), Some(255));
        for text in ["first", "second"] {
            write_atomic(&path, |tmp| {
                std::fs::write(tmp, text).map_err(|e| Error::io(tmp, e))
            })?;
            let read = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            assert_eq!(read, text);
        }
        let entries = std::fs::read_dir(dir.path()).map_err(|e| Error::io("dir", e))?;
        assert_eq!(entries.count(), 1, "no temporary file left");
        Ok(())
    }

    #[test]
    fn identical_checkpoints_are_identical_bytes() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let dev = Device::Cpu;
        let tensors: HashMap<String, Tensor> = ["b", "a", "c.w", "c.b"]
            .iter()
            .enumerate()
            .map(|(i, k)| Ok((k.to_string(), Tensor::full(i as f32, (2, 3), &dev)?)))
            .collect::<candle_core::Result<_>>()?;
        let meta = || -> HashMap<String, String> {
            (0..8)
                .map(|i| (format!("daa.k{i}"), format!("v{i}")))
                .collect()
        };
        let mut files = Vec::new();
        for i in 0..5 {
            // A new HashMap each time: safetensors alone wrote its entries in a new order.
            let path = dir.path().join(format!("{i}.safetensors"));
            save_tensors(&path, &tensors, meta())?;
            files.push(std::fs::read(&path).map_err(|e| Error::io(&path, e))?);
        }
        assert!(files.windows(2).all(|w| w[0] == w[1]), "bytes differ");
        let back = candle_core::safetensors::load(dir.path().join("0.safetensors"), &dev)?;
        assert_eq!(back["c.w"].to_vec2::<f32>()?, vec![vec![2f32; 3]; 2]);
        Ok(())
    }
}
