use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand_chacha::ChaCha8Rng;

use super::{list_images, probe, smallest, stem, CachedFile, PairSource};
use crate::{random_crop, Error, Image, Result, SmallImagePolicy};

/// Two folders of aligned images, `input/NAME.*` with `target/NAME.*`, paired by file stem.
///
/// Opening checks every file's header: a name present on one side only, two files with the
/// same stem in one folder, an unreadable file, or a pair whose sizes differ is an error
/// listing the offending names, before any training starts.
#[derive(Debug)]
pub struct PairedFolder {
    root: PathBuf,
    pairs: Vec<(String, CachedFile, CachedFile)>,
    augment: bool,
    policy: SmallImagePolicy,
    cache: bool,
}

fn by_stem(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut map = BTreeMap::new();
    for path in list_images(dir)? {
        let s = stem(&path);
        if let Some(prev) = map.insert(s.clone(), path.clone()) {
            return Err(Error::Dataset {
                path: dir.to_path_buf(),
                reason: format!("two files share the name {s:?}: {prev:?} and {path:?}"),
            });
        }
    }
    Ok(map)
}

fn list_names(names: &[&String]) -> String {
    const MAX: usize = 10;
    let shown: Vec<&str> = names.iter().take(MAX).map(|s| s.as_str()).collect();
    let more = names.len().saturating_sub(MAX);
    if more > 0 {
        format!("{} (and {more} more)", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

impl PairedFolder {
    /// Opens `input_dir` / `target_dir`. Random crops are augmented with the 8 flips/rotations
    /// when `augment` is set; images smaller than the patch follow `policy`; decoded images
    /// stay in memory when `cache` is set.
    pub fn open(
        input_dir: impl AsRef<Path>,
        target_dir: impl AsRef<Path>,
        augment: bool,
        policy: SmallImagePolicy,
        cache: bool,
    ) -> Result<Self> {
        let (input_dir, target_dir) = (input_dir.as_ref(), target_dir.as_ref());
        let inputs = by_stem(input_dir)?;
        let targets = by_stem(target_dir)?;
        let only_in: Vec<&String> = inputs
            .keys()
            .filter(|k| !targets.contains_key(*k))
            .collect();
        let only_tg: Vec<&String> = targets
            .keys()
            .filter(|k| !inputs.contains_key(*k))
            .collect();
        if !only_in.is_empty() || !only_tg.is_empty() {
            let mut reason = String::from("unpaired files:");
            if !only_in.is_empty() {
                reason += &format!(" only in {input_dir:?}: {};", list_names(&only_in));
            }
            if !only_tg.is_empty() {
                reason += &format!(" only in {target_dir:?}: {};", list_names(&only_tg));
            }
            return Err(Error::Dataset {
                path: input_dir.to_path_buf(),
                reason,
            });
        }
        let mut pairs = Vec::with_capacity(inputs.len());
        for (name, ipath) in inputs {
            let tpath = targets[&name].clone();
            let (isz, tsz) = (probe(&ipath)?, probe(&tpath)?);
            if isz != tsz {
                return Err(Error::Dataset {
                    path: input_dir.to_path_buf(),
                    reason: format!(
                        "pair {name:?} differs in size: input {}x{}, target {}x{}",
                        isz.0, isz.1, tsz.0, tsz.1
                    ),
                });
            }
            pairs.push((name, CachedFile::new(ipath), CachedFile::new(tpath)));
        }
        Ok(Self {
            root: input_dir.to_path_buf(),
            pairs,
            augment,
            policy,
            cache,
        })
    }

    /// Opens a list of pairs, e.g. a dataset layout's ([`crate::Layout::pairs`]), with the
    /// checks of [`PairedFolder::open`] (readable headers, equal sizes, unique names).
    /// `root` names the dataset in messages.
    pub fn from_pairs(
        root: impl AsRef<Path>,
        list: Vec<crate::LayoutPair>,
        augment: bool,
        policy: SmallImagePolicy,
        cache: bool,
    ) -> Result<Self> {
        let root = root.as_ref();
        let mut seen = std::collections::BTreeSet::new();
        let mut pairs = Vec::with_capacity(list.len());
        for p in list {
            if !seen.insert(p.name.clone()) {
                return Err(Error::Dataset {
                    path: root.to_path_buf(),
                    reason: format!("two pairs share the name {:?}", p.name),
                });
            }
            let file = |side: crate::PairImage, tag: &str| match side {
                crate::PairImage::File(path) => CachedFile::new(path),
                crate::PairImage::Memory(img) => {
                    CachedFile::in_memory(root.join(format!("{}:{tag}", p.name)), img)
                }
            };
            let (i, t) = (file(p.input, "input"), file(p.target, "target"));
            let (isz, tsz) = (i.size()?, t.size()?);
            if isz != tsz {
                return Err(Error::Dataset {
                    path: i.path.clone(),
                    reason: format!(
                        "pair {:?} differs in size: input {}x{}, target {}x{}",
                        p.name, isz.0, isz.1, tsz.0, tsz.1
                    ),
                });
            }
            pairs.push((p.name, i, t));
        }
        if pairs.is_empty() {
            return Err(Error::Dataset {
                path: root.to_path_buf(),
                reason: "no pairs".into(),
            });
        }
        Ok(Self {
            root: root.to_path_buf(),
            pairs,
            augment,
            policy,
            cache,
        })
    }

    /// The whole pair `index` (modulo the length) and its name.
    pub fn pair(&self, index: usize) -> Result<(Image, Image, String)> {
        self.load(index)
    }

    /// The pair names (file stems), in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.pairs.iter().map(|p| p.0.as_str())
    }

    /// The input folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn load(&self, index: usize) -> Result<(Image, Image, String)> {
        let (name, i, t) = &self.pairs[index % self.pairs.len()];
        Ok((i.load(self.cache)?, t.load(self.cache)?, name.clone()))
    }
}

impl PairSource for PairedFolder {
    fn len(&self) -> usize {
        self.pairs.len()
    }

    fn patch(&self, index: usize, patch: usize, rng: &mut ChaCha8Rng) -> Result<(Image, Image)> {
        let (i, t, _) = self.load(index)?;
        let mut out = random_crop(&[&i, &t], patch, self.augment, self.policy, rng)?.into_iter();
        match (out.next(), out.next()) {
            (Some(a), Some(b)) => Ok((a, b)),
            _ => Err(Error::Param("crop returned too few images".into())),
        }
    }

    fn full(&self, index: usize, _rng: &mut ChaCha8Rng) -> Result<(Image, Image, String)> {
        self.load(index)
    }

    fn smallest_size(&self) -> Result<Option<(usize, usize)>> {
        smallest(self.pairs.iter().map(|p| &p.1))
    }
}
