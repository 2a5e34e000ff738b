//! Datasets: paired folders, unpaired folders, and clean photos plus a degradation.

mod layouts;
mod paired;
mod synthetic;
mod unpaired;

pub use layouts::{Layout, LayoutPair, PairImage, Split};
pub use paired::PairedFolder;
pub use synthetic::SyntheticPairs;
pub use unpaired::UnpairedFolder;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use rand_chacha::ChaCha8Rng;

use crate::{load_image, Error, Image, Result};

/// A source of aligned (degraded input, clean target) pairs.
///
/// All randomness comes from the `rng` argument (see [`crate::sample_rng`]), so a sample is
/// a pure function of its index and seed, whichever thread produces it.
pub trait PairSource: Send + Sync {
    /// Number of distinct images.
    fn len(&self) -> usize;
    /// True when there are no images (never true for an opened dataset).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// A random `patch x patch` crop of pair `index` (same window and flip for both).
    fn patch(&self, index: usize, patch: usize, rng: &mut ChaCha8Rng) -> Result<(Image, Image)>;
    /// The whole pair `index` and its name, for evaluation.
    fn full(&self, index: usize, rng: &mut ChaCha8Rng) -> Result<(Image, Image, String)>;
    /// The smallest width and the smallest height among the whole images (from file headers,
    /// nothing decoded), or `None` when the source cannot tell without decoding.
    fn smallest_size(&self) -> Result<Option<(usize, usize)>> {
        Ok(None)
    }
}

/// Smallest width and height of `files`.
fn smallest<'a>(files: impl Iterator<Item = &'a CachedFile>) -> Result<Option<(usize, usize)>> {
    let mut out: Option<(usize, usize)> = None;
    for f in files {
        let (w, h) = f.size()?;
        out = Some(match out {
            Some((a, b)) => (a.min(w), b.min(h)),
            None => (w, h),
        });
    }
    Ok(out)
}

/// Stacks same-size images into a `(B, 3, H, W)` CPU tensor.
pub fn collate(images: &[Image]) -> Result<Tensor> {
    let Some(first) = images.first() else {
        return Err(Error::Param("collate: empty batch".into()));
    };
    let (w, h) = (first.width(), first.height());
    let mut data = Vec::with_capacity(images.len() * 3 * w * h);
    for img in images {
        if (img.width(), img.height()) != (w, h) {
            return Err(Error::Param(format!(
                "collate: mixed sizes {w}x{h} and {}x{}",
                img.width(),
                img.height()
            )));
        }
        data.extend_from_slice(img.data());
    }
    Ok(Tensor::from_vec(
        data,
        (images.len(), 3, h, w),
        &Device::Cpu,
    )?)
}

const EXTENSIONS: [&str; 8] = ["png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp", "ppm"];

/// The image files directly inside `dir` (by extension, case-insensitive), sorted by name.
/// A missing folder, an unreadable one, one without images, or a broken symlink among the
/// images is an error. An `embedded:` folder lists the photos compiled into the binary
/// ([`crate::embedded`]).
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let (files, broken) = scan_images(dir)?;
    if let Some(b) = broken.first() {
        return Err(Error::Image {
            path: b.clone(),
            reason: format!("broken symlink ({} in {dir:?})", broken.len()),
        });
    }
    Ok(files)
}

/// The image files directly inside `dir`, sorted, and apart from them the image names that
/// are broken symlinks (or otherwise not readable files), sorted. Errors as [`list_images`]
/// for a missing or unreadable folder, and when it holds no image name at all.
pub fn scan_images(dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let derr = |reason: String| Error::Dataset {
        path: dir.to_path_buf(),
        reason,
    };
    if let Some(files) = crate::embedded::list(dir) {
        if files.is_empty() {
            return Err(derr(format!(
                "no such embedded folder (known: {})",
                crate::embedded::folders().join(", ")
            )));
        }
        return Ok((files, Vec::new()));
    }
    let entries = std::fs::read_dir(dir).map_err(|e| derr(format!("cannot list folder: {e}")))?;
    let (mut files, mut broken) = (Vec::new(), Vec::new());
    for entry in entries {
        let path = entry.map_err(|e| derr(e.to_string()))?.path();
        let is_img = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
        if !is_img {
            continue;
        }
        if path.is_file() {
            files.push(path);
        } else if !path.exists() {
            // exists() follows links: a name that is there but leads nowhere.
            broken.push(path);
        }
    }
    if files.is_empty() && broken.is_empty() {
        return Err(derr(format!(
            "no images found (extensions: {})",
            EXTENSIONS.join(", ")
        )));
    }
    files.sort();
    broken.sort();
    Ok((files, broken))
}

/// The file stem used to pair files across folders.
fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Reads the header of `path` and returns its size; used to find bad files at open time.
fn probe(path: &Path) -> Result<(usize, usize)> {
    if let Some(bytes) = crate::embedded::bytes(path) {
        let img = crate::decode_image(bytes, path)?;
        return Ok((img.width(), img.height()));
    }
    let meta = std::fs::metadata(path).map_err(|e| Error::Image {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if meta.len() == 0 {
        return Err(Error::Image {
            path: path.to_path_buf(),
            reason: "file is empty".into(),
        });
    }
    let (w, h) = image::image_dimensions(path).map_err(|e| Error::Image {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok((w as usize, h as usize))
}

/// A decoded image kept in memory after first use when caching is on.
#[derive(Debug)]
struct CachedFile {
    path: PathBuf,
    cached: OnceLock<Image>,
}

impl CachedFile {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            cached: OnceLock::new(),
        }
    }

    /// An image already decoded (from a container file); `path` names it in messages.
    fn in_memory(path: PathBuf, img: Image) -> Self {
        let cached = OnceLock::new();
        let _ = cached.set(img);
        Self { path, cached }
    }

    /// The pixel size, from the cache or the file header.
    fn size(&self) -> Result<(usize, usize)> {
        match self.cached.get() {
            Some(img) => Ok((img.width(), img.height())),
            None => probe(&self.path),
        }
    }

    fn load(&self, cache: bool) -> Result<Image> {
        if let Some(img) = self.cached.get() {
            return Ok(img.clone());
        }
        let img = load_image(&self.path)?;
        if cache {
            let _ = self.cached.set(img.clone());
        }
        Ok(img)
    }
}
