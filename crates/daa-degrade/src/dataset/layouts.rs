//! The folder layouts of the paper's real datasets, as their authors distribute them.
//!
//! [`Layout::pairs`] turns a dataset root into a list of (input, ground truth) pairs, which
//! [`PairedFolder::from_pairs`](super::PairedFolder::from_pairs) opens for training or
//! evaluation and `daa data prepare` materialises as the flat `input/` + `target/` folders
//! every `daa` command reads. Layouts (paths relative to the root the user names):
//!
//! | layout | split | files |
//! |---|---|---|
//! | `sidd-medium` | train | `Data/<scene>/<id>_NOISY_SRGB_<n>.PNG` with `<id>_GT_SRGB_<n>.PNG` beside it |
//! | `sidd-val` | test | `ValidationNoisyBlocksSrgb.mat`, `ValidationGtBlocksSrgb.mat` (40 x 32 blocks of 256 x 256, MATLAB v5) |
//! | `gopro` | train, test | `<split>/<sequence>/blur/<name>.png` with `<split>/<sequence>/sharp/<name>.png` |
//! | `realblur-j` | train, test | the official lists `RealBlur_J_<split>_list.txt`: lines of two root-relative paths, ground truth and blurred |
//! | `rain13k` | any | `input/<name>` with `target/<name>` (the layout of Rain13K and its test sets) |
//! | `spa` | train, test | lists `real_world.txt` (train) / `real_test_1000.txt` (test): lines of two root-relative paths, rainy and clean |
//!
//! In the two-path lists the ground truth is the path with a `gt` folder or name part
//! (`gt`, `*_gt`, `gt_*`); when neither or both have one, the layout's documented order
//! decides.

use std::path::{Path, PathBuf};

use crate::{Error, Image, Result};

/// A dataset split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Training images.
    Train,
    /// Test / validation images.
    Test,
}

impl Split {
    fn name(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Test => "test",
        }
    }
}

/// One of the paper's datasets' layouts (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// SIDD-Medium sRGB pairs (training).
    SiddMedium,
    /// SIDD validation blocks in their `.mat` files (testing).
    SiddVal,
    /// GoPro_Large.
    GoPro,
    /// RealBlur-J with the official split lists.
    RealBlurJ,
    /// Rain13K and its test sets (`input/`, `target/`).
    Rain13k,
    /// SPA-Data with its list files.
    Spa,
}

/// Where the pixels of one side of a pair live.
#[derive(Debug, Clone, PartialEq)]
pub enum PairImage {
    /// An image file.
    File(PathBuf),
    /// An image decoded from a container (the SIDD `.mat` blocks).
    Memory(Image),
}

/// One (degraded input, ground truth) pair of a dataset, with a unique name.
#[derive(Debug, Clone, PartialEq)]
pub struct LayoutPair {
    /// A name unique within the split, usable as a file stem.
    pub name: String,
    /// The degraded input.
    pub input: PairImage,
    /// The ground truth.
    pub target: PairImage,
}

impl std::str::FromStr for Layout {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "sidd-medium" => Self::SiddMedium,
            "sidd-val" => Self::SiddVal,
            "gopro" => Self::GoPro,
            "realblur-j" => Self::RealBlurJ,
            "rain13k" => Self::Rain13k,
            "spa" => Self::Spa,
            _ => {
                return Err(Error::Param(format!(
                    "unknown dataset layout {s:?}; known: {}",
                    Layout::NAMES.join(", ")
                )))
            }
        })
    }
}

fn derr(path: &Path, reason: impl Into<String>) -> Error {
    Error::Dataset {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Sorted entries of `dir` that satisfy `keep`.
fn entries(dir: &Path, keep: impl Fn(&Path) -> bool) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| derr(dir, format!("cannot list folder: {e}")))?;
    let mut v = Vec::new();
    for e in rd {
        let p = e.map_err(|e| derr(dir, e.to_string()))?.path();
        if keep(&p) {
            v.push(p);
        }
    }
    v.sort();
    Ok(v)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// True when a path component is `gt`, or a name part around `_`/`-`/`.` is `gt` or `GT`.
fn looks_gt(p: &str) -> bool {
    p.split(['/', '\\']).any(|c| {
        c.split(['_', '-', '.'])
            .any(|t| t.eq_ignore_ascii_case("gt"))
    })
}

/// Pairs from a list file of lines `a b` (root-relative). `gt_first` is the documented order.
fn from_list(root: &Path, list: &Path, gt_first: bool) -> Result<Vec<LayoutPair>> {
    let text = std::fs::read_to_string(list)
        .map_err(|e| derr(list, format!("cannot read split list: {e}")))?;
    let mut pairs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.is_empty() {
            continue;
        }
        if cols.len() != 2 {
            return Err(derr(
                list,
                format!("line {}: expected two paths, got {:?}", i + 1, line),
            ));
        }
        let (a, b) = (
            cols[0].trim_start_matches('/'),
            cols[1].trim_start_matches('/'),
        );
        let (gt, inp) = match (looks_gt(a), looks_gt(b)) {
            (true, false) => (a, b),
            (false, true) => (b, a),
            _ if gt_first => (a, b),
            _ => (b, a),
        };
        let (gt, inp) = (root.join(gt), root.join(inp));
        for p in [&gt, &inp] {
            if !p.is_file() {
                return Err(derr(list, format!("line {}: no file {p:?}", i + 1)));
            }
        }
        // Unique name: the input's path below the root with separators flattened.
        let rel = inp.strip_prefix(root).unwrap_or(&inp);
        let name = rel
            .with_extension("")
            .to_string_lossy()
            .replace(['/', '\\'], "_");
        pairs.push(LayoutPair {
            name,
            input: PairImage::File(inp),
            target: PairImage::File(gt),
        });
    }
    Ok(pairs)
}

/// Reads a SIDD block array `(blocks, per_block, h, w, 3)` of `u8` from a MATLAB v5 file.
fn sidd_blocks(path: &Path, var: &str) -> Result<(Vec<usize>, Vec<u8>)> {
    let f = std::fs::File::open(path).map_err(|e| derr(path, format!("cannot open: {e}")))?;
    let mat = matfile::MatFile::parse(std::io::BufReader::new(f))
        .map_err(|e| derr(path, format!("not a readable MATLAB v5 file: {e:?}")))?;
    let arr = mat
        .find_by_name(var)
        .ok_or_else(|| derr(path, format!("no variable {var:?}")))?;
    let size = arr.size().clone();
    if size.len() != 5 || size[4] != 3 {
        return Err(derr(
            path,
            format!("{var} has shape {size:?}, expected (blocks, n, h, w, 3)"),
        ));
    }
    match arr.data() {
        matfile::NumericData::UInt8 { real, .. } => Ok((size, real.clone())),
        _ => Err(derr(path, format!("{var} is not uint8"))),
    }
}

/// Block `(a, b)` of a column-major `(A, B, H, W, 3)` array as an [`Image`].
fn block(size: &[usize], data: &[u8], a: usize, b: usize) -> Result<Image> {
    let (na, nb, h, w) = (size[0], size[1], size[2], size[3]);
    let mut planar = vec![0f32; 3 * h * w];
    for c in 0..3 {
        for x in 0..w {
            for y in 0..h {
                let idx = a + na * (b + nb * (y + h * (x + w * c)));
                planar[c * h * w + y * w + x] = data[idx] as f32 / 255.0;
            }
        }
    }
    Image::from_planar(w, h, planar)
}

impl Layout {
    /// The names [`str::parse`] accepts.
    pub const NAMES: [&'static str; 6] = [
        "sidd-medium",
        "sidd-val",
        "gopro",
        "realblur-j",
        "rain13k",
        "spa",
    ];

    /// The pairs of `split` under `root`, in a stable order. Missing files, an unexpected
    /// split, or an empty result is an error naming the path.
    pub fn pairs(self, root: &Path, split: Split) -> Result<Vec<LayoutPair>> {
        let bad_split = || {
            derr(
                root,
                format!("layout {self:?} has no {} split", split.name()),
            )
        };
        let pairs = match self {
            Self::SiddMedium => {
                if split != Split::Train {
                    return Err(bad_split());
                }
                let mut pairs = Vec::new();
                for scene in entries(&root.join("Data"), |p| p.is_dir())? {
                    for noisy in entries(&scene, |p| file_name(p).contains("_NOISY_SRGB_"))? {
                        let gt = noisy.with_file_name(file_name(&noisy).replace("_NOISY_", "_GT_"));
                        if !gt.is_file() {
                            return Err(derr(&noisy, format!("no ground truth {gt:?}")));
                        }
                        pairs.push(LayoutPair {
                            name: stem(&noisy),
                            input: PairImage::File(noisy),
                            target: PairImage::File(gt),
                        });
                    }
                }
                pairs
            }
            Self::SiddVal => {
                if split != Split::Test {
                    return Err(bad_split());
                }
                let (ns, noisy) = sidd_blocks(
                    &root.join("ValidationNoisyBlocksSrgb.mat"),
                    "ValidationNoisyBlocksSrgb",
                )?;
                let (gs, gt) = sidd_blocks(
                    &root.join("ValidationGtBlocksSrgb.mat"),
                    "ValidationGtBlocksSrgb",
                )?;
                if ns != gs {
                    return Err(derr(
                        root,
                        format!("noisy blocks {ns:?} vs ground truth {gs:?}"),
                    ));
                }
                let mut pairs = Vec::new();
                for a in 0..ns[0] {
                    for b in 0..ns[1] {
                        pairs.push(LayoutPair {
                            name: format!("{a:02}_{b:02}"),
                            input: PairImage::Memory(block(&ns, &noisy, a, b)?),
                            target: PairImage::Memory(block(&gs, &gt, a, b)?),
                        });
                    }
                }
                pairs
            }
            Self::GoPro => {
                let mut pairs = Vec::new();
                for seq in entries(&root.join(split.name()), |p| p.is_dir())? {
                    for blur in entries(&seq.join("blur"), |p| p.is_file())? {
                        let sharp = seq.join("sharp").join(file_name(&blur));
                        if !sharp.is_file() {
                            return Err(derr(&blur, format!("no sharp image {sharp:?}")));
                        }
                        pairs.push(LayoutPair {
                            name: format!("{}_{}", file_name(&seq), stem(&blur)),
                            input: PairImage::File(blur),
                            target: PairImage::File(sharp),
                        });
                    }
                }
                pairs
            }
            Self::RealBlurJ => from_list(
                root,
                &root.join(format!("RealBlur_J_{}_list.txt", split.name())),
                true,
            )?,
            Self::Rain13k => {
                let mut pairs = Vec::new();
                for input in crate::list_images(&root.join("input"))? {
                    let target = root.join("target").join(file_name(&input));
                    if !target.is_file() {
                        return Err(derr(&input, format!("no target {target:?}")));
                    }
                    pairs.push(LayoutPair {
                        name: stem(&input),
                        input: PairImage::File(input),
                        target: PairImage::File(target),
                    });
                }
                pairs
            }
            Self::Spa => {
                let list = match split {
                    Split::Train => "real_world.txt",
                    Split::Test => "real_test_1000.txt",
                };
                from_list(root, &root.join(list), false)?
            }
        };
        if pairs.is_empty() {
            return Err(derr(
                root,
                format!("no {} pairs found for layout {self:?}", split.name()),
            ));
        }
        Ok(pairs)
    }
}
