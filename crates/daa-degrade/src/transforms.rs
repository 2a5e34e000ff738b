use rand::Rng;

use crate::{Error, Image, Result};

/// What to do with an image smaller than the training patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmallImagePolicy {
    /// Reflect-pad the image (mirror without repeating the edge) up to the patch size.
    /// Images smaller than half the patch are padded by repeated reflection.
    #[default]
    ReflectPad,
    /// Refuse: an error naming the size.
    Error,
}

/// A crop window: top-left corner and the dihedral augmentation to apply (0..8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crop {
    /// Left column.
    pub x: usize,
    /// Top row.
    pub y: usize,
    /// One of the 8 flips/rotations (see [`augment`]).
    pub mode: u8,
}

impl Crop {
    /// Draws a crop of size `patch` inside a `width x height` image, and an augmentation
    /// (`mode` 0 when `augment` is false).
    pub fn random(
        width: usize,
        height: usize,
        patch: usize,
        augment: bool,
        rng: &mut impl Rng,
    ) -> Self {
        let x = rng.random_range(0..=width.saturating_sub(patch));
        let y = rng.random_range(0..=height.saturating_sub(patch));
        let mode = if augment { rng.random_range(0..8u8) } else { 0 };
        Self { x, y, mode }
    }

    /// Cuts `img` with this window and applies the augmentation.
    pub fn apply(&self, img: &Image, patch: usize) -> Image {
        augment(&img.crop(self.x, self.y, patch, patch), self.mode)
    }
}

/// Crops the same random `patch x patch` window from every image and applies the same one of
/// the 8 flips/rotations to each, so that pairs stay aligned. All images must share one size;
/// smaller images are handled by `policy`.
pub fn random_crop(
    images: &[&Image],
    patch: usize,
    augment: bool,
    policy: SmallImagePolicy,
    rng: &mut impl Rng,
) -> Result<Vec<Image>> {
    let Some(first) = images.first() else {
        return Ok(Vec::new());
    };
    let (w, h) = (first.width(), first.height());
    if let Some(other) = images.iter().find(|i| (i.width(), i.height()) != (w, h)) {
        return Err(Error::Param(format!(
            "images to crop together differ in size: {w}x{h} and {}x{}",
            other.width(),
            other.height()
        )));
    }
    let padded: Vec<Image>;
    let images: Vec<&Image> = if w < patch || h < patch {
        match policy {
            SmallImagePolicy::Error => {
                return Err(Error::Param(format!(
                    "image {w}x{h} is smaller than the patch {patch}"
                )))
            }
            SmallImagePolicy::ReflectPad => {
                padded = images
                    .iter()
                    .map(|i| pad_reflect_to(i, patch, patch))
                    .collect();
                padded.iter().collect()
            }
        }
    } else {
        images.to_vec()
    };
    let crop = Crop::random(images[0].width(), images[0].height(), patch, augment, rng);
    Ok(images.iter().map(|i| crop.apply(i, patch)).collect())
}

/// Reflect index `i` into `0..n` (mirror without repeating the edge, repeatedly).
pub(crate) fn reflect(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let m = i.rem_euclid(period);
    (if m < n as isize { m } else { period - m }) as usize
}

/// Pads `img` by reflection (bottom and right) to at least `min_w x min_h`.
pub fn pad_reflect_to(img: &Image, min_w: usize, min_h: usize) -> Image {
    let (w, h) = (img.width(), img.height());
    let (nw, nh) = (w.max(min_w), h.max(min_h));
    let mut data = Vec::with_capacity(3 * nw * nh);
    for c in 0..3 {
        for y in 0..nh {
            let sy = reflect(y as isize, h);
            for x in 0..nw {
                data.push(img.get(c, sy, reflect(x as isize, w)));
            }
        }
    }
    Image::from_planar(nw, nh, data).unwrap_or_else(|_| img.clone())
}

/// One of the 8 elements of the dihedral group: `mode & 4` transposes, `mode & 2` flips
/// vertically, `mode & 1` flips horizontally (applied in that order). Mode 0 is the identity.
pub fn augment(img: &Image, mode: u8) -> Image {
    let (w, h) = (img.width(), img.height());
    let transpose = mode & 4 != 0;
    let (ow, oh) = if transpose { (h, w) } else { (w, h) };
    let mut data = Vec::with_capacity(3 * w * h);
    for c in 0..3 {
        for oy in 0..oh {
            for ox in 0..ow {
                let (mut x, mut y) = (ox, oy);
                if mode & 1 != 0 {
                    x = ow - 1 - x;
                }
                if mode & 2 != 0 {
                    y = oh - 1 - y;
                }
                let (sx, sy) = if transpose { (y, x) } else { (x, y) };
                data.push(img.get(c, sy, sx));
            }
        }
    }
    Image::from_planar(ow, oh, data).unwrap_or_else(|_| img.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(w: usize, h: usize) -> Image {
        let data = (0..3 * w * h).map(|i| i as f32).collect();
        Image::from_planar(w, h, data).unwrap_or_else(|_| Image::filled(1, 1, [0.0; 3]))
    }

    #[test]
    fn eight_modes_are_distinct_and_invertible_in_size() {
        let img = ramp(5, 3);
        let outs: Vec<Image> = (0..8).map(|m| augment(&img, m)).collect();
        for i in 0..8 {
            for j in i + 1..8 {
                assert_ne!(outs[i], outs[j], "modes {i} and {j}");
            }
        }
        assert_eq!(augment(&img, 0), img);
        assert_eq!((outs[4].width(), outs[4].height()), (3, 5));
    }

    #[test]
    fn reflect_indices() {
        let got: Vec<usize> = (-3..8).map(|i| reflect(i, 4)).collect();
        assert_eq!(got, vec![3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1]);
        assert_eq!(reflect(5, 1), 0);
    }

    #[test]
    fn small_images_pad_or_fail() {
        let img = ramp(5, 3);
        let mut rng = crate::sample_rng(0, 0, 0);
        let out = random_crop(&[&img], 8, true, SmallImagePolicy::ReflectPad, &mut rng)
            .unwrap_or_default();
        assert_eq!((out[0].width(), out[0].height()), (8, 8));
        assert!(random_crop(&[&img], 8, true, SmallImagePolicy::Error, &mut rng).is_err());
    }
}
