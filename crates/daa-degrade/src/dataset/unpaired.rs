use std::path::Path;

use rand_chacha::ChaCha8Rng;

use super::{list_images, probe, smallest, stem, CachedFile};
use crate::{random_crop, Error, Image, Result, SmallImagePolicy};

/// A folder of images with no partners: clean photos to degrade, or real degraded inputs.
#[derive(Debug)]
pub struct UnpairedFolder {
    files: Vec<CachedFile>,
    augment: bool,
    policy: SmallImagePolicy,
    cache: bool,
}

impl UnpairedFolder {
    /// Opens `dir`, checking that every image's header reads. See
    /// [`super::PairedFolder::open`] for the flags.
    pub fn open(
        dir: impl AsRef<Path>,
        augment: bool,
        policy: SmallImagePolicy,
        cache: bool,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        let paths = list_images(dir)?;
        for p in &paths {
            probe(p)?;
        }
        let files = paths.into_iter().map(CachedFile::new).collect();
        Ok(Self {
            files,
            augment,
            policy,
            cache,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Always false for an opened folder.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Image `index` (modulo the length), whole, with its name.
    pub fn image(&self, index: usize) -> Result<(Image, String)> {
        let f = &self.files[index % self.files.len()];
        Ok((f.load(self.cache)?, stem(&f.path)))
    }

    /// The smallest width and height among the images (from their headers).
    pub fn smallest_size(&self) -> Result<Option<(usize, usize)>> {
        smallest(self.files.iter())
    }

    /// A random crop of image `index`, augmented when the folder was opened with `augment`.
    pub fn patch(&self, index: usize, patch: usize, rng: &mut ChaCha8Rng) -> Result<Image> {
        let (img, _) = self.image(index)?;
        random_crop(&[&img], patch, self.augment, self.policy, rng)?
            .pop()
            .ok_or_else(|| Error::Param("crop returned no image".into()))
    }
}
