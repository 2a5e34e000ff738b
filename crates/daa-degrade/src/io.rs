use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder, ImageReader};

use crate::{Error, Image, Result};

/// Largest image accepted, in pixels (width * height): 64 megapixels, about 768 MiB as
/// planar f32. Larger files are refused with an error instead of exhausting memory.
pub const MAX_PIXELS: u64 = 64 * 1024 * 1024;

fn img_err(path: &Path, reason: impl ToString) -> Error {
    Error::Image {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Reads an image file as planar RGB in `[0, 1]`.
///
/// 8- and 16-bit PNG, JPEG, BMP, TIFF and WebP are read; grayscale is replicated to three
/// channels, alpha is dropped (not composited), 16-bit values keep their precision, and the
/// EXIF orientation of JPEG files is applied. Empty, truncated, corrupt or unsupported files
/// and images over [`MAX_PIXELS`] are errors naming the path. An `embedded:` path reads a
/// photo compiled into the binary ([`crate::embedded`]).
pub fn load_image(path: impl AsRef<Path>) -> Result<Image> {
    let path = path.as_ref();
    if let Some(bytes) = crate::embedded::bytes(path) {
        return decode_image(bytes, path);
    }
    let meta = std::fs::metadata(path).map_err(|e| img_err(path, e))?;
    if meta.is_dir() {
        return Err(img_err(path, "is a directory"));
    }
    let bytes = std::fs::read(path).map_err(|e| img_err(path, e))?;
    decode_image(&bytes, path)
}

/// Decodes an image held in memory, as [`load_image`] does for a file; `path` only names the
/// source in errors.
pub fn decode_image(bytes: &[u8], path: &Path) -> Result<Image> {
    Ok(from_dynamic(&decode_dynamic(bytes, path)?))
}

fn decode_dynamic(bytes: &[u8], path: &Path) -> Result<DynamicImage> {
    if bytes.is_empty() {
        return Err(img_err(path, "file is empty"));
    }
    let reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| img_err(path, e))?;
    if reader.format().is_none() {
        return Err(img_err(path, "not a recognised image format"));
    }
    let mut decoder = reader.into_decoder().map_err(|e| img_err(path, e))?;
    let (w, h) = decoder.dimensions();
    if w as u64 * h as u64 > MAX_PIXELS {
        return Err(img_err(
            path,
            format!("{w}x{h} is larger than the limit of {MAX_PIXELS} pixels; crop or downscale it first"),
        ));
    }
    if w == 0 || h == 0 {
        return Err(img_err(path, format!("image of size {w}x{h}")));
    }
    let orientation = decoder.orientation().ok();
    let mut dynimg = DynamicImage::from_decoder(decoder).map_err(|e| img_err(path, e))?;
    if let Some(o) = orientation {
        dynimg.apply_orientation(o);
    }
    Ok(dynimg)
}

/// What [`load_image`] drops and a restored copy should give back: the alpha plane (`[0, 1]`,
/// row-major) and whether the file had more than 8 bits per channel.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceFormat {
    /// The alpha channel, when the file has one.
    pub alpha: Option<Vec<f32>>,
    /// True for 16-bit (or float) files.
    pub high_depth: bool,
}

/// Reads an image as [`load_image`] does, and also its alpha channel and bit depth, so that
/// [`save_image_as`] can write the restored RGB back with the same alpha and depth.
pub fn load_image_keep(path: impl AsRef<Path>) -> Result<(Image, SourceFormat)> {
    let path = path.as_ref();
    let bytes = match crate::embedded::bytes(path) {
        Some(b) => b.to_vec(),
        None => {
            let meta = std::fs::metadata(path).map_err(|e| img_err(path, e))?;
            if meta.is_dir() {
                return Err(img_err(path, "is a directory"));
            }
            std::fs::read(path).map_err(|e| img_err(path, e))?
        }
    };
    let dynimg = decode_dynamic(&bytes, path)?;
    let high_depth = is_high_depth(&dynimg);
    let alpha = dynimg.color().has_alpha().then(|| {
        dynimg
            .to_rgba32f()
            .pixels()
            .map(|p| p.0[3])
            .collect::<Vec<f32>>()
    });
    Ok((from_dynamic(&dynimg), SourceFormat { alpha, high_depth }))
}

/// Writes `img` with the alpha plane and bit depth of `format` where the file format allows
/// (alpha: PNG, TIFF, WebP; 16 bits: PNG, TIFF), otherwise as [`save_image`] does. Atomic.
pub fn save_image_as(path: impl AsRef<Path>, img: &Image, format: &SourceFormat) -> Result<()> {
    let path = path.as_ref();
    let werr = |reason: String| Error::Write {
        path: path.to_path_buf(),
        reason,
    };
    let file_format = image::ImageFormat::from_path(path)
        .map_err(|_| werr("unknown image extension (use .png or .jpg)".into()))?;
    use image::ImageFormat as F;
    let alpha_ok = matches!(file_format, F::Png | F::Tiff | F::WebP);
    let deep_ok = matches!(file_format, F::Png | F::Tiff);
    let (w, h) = (img.width(), img.height());
    let n = w * h;
    let alpha = format.alpha.as_deref().filter(|a| alpha_ok && a.len() == n);
    let at = |c: usize, i: usize| -> f32 {
        match c {
            3 => alpha.map_or(1.0, |a| a[i]),
            _ => img.data()[c * n + i],
        }
    };
    let channels = if alpha.is_some() { 4 } else { 3 };
    let dynimg = if format.high_depth && deep_ok {
        let q = |v: f32| (v.clamp(0.0, 1.0) * 65535.0).round() as u16;
        let data: Vec<u16> = (0..n)
            .flat_map(|i| (0..channels).map(move |c| (i, c)))
            .map(|(i, c)| q(at(c, i)))
            .collect();
        if channels == 4 {
            image::ImageBuffer::from_raw(w as u32, h as u32, data).map(DynamicImage::ImageRgba16)
        } else {
            image::ImageBuffer::from_raw(w as u32, h as u32, data).map(DynamicImage::ImageRgb16)
        }
    } else {
        let data: Vec<u8> = (0..n)
            .flat_map(|i| (0..channels).map(move |c| (i, c)))
            .map(|(i, c)| quantize_u8(at(c, i)))
            .collect();
        if channels == 4 {
            image::ImageBuffer::from_raw(w as u32, h as u32, data).map(DynamicImage::ImageRgba8)
        } else {
            image::ImageBuffer::from_raw(w as u32, h as u32, data).map(DynamicImage::ImageRgb8)
        }
    };
    let dynimg = dynimg.ok_or_else(|| werr(format!("buffer does not match {w}x{h}")))?;
    write_via_tmp(path, &dynimg, file_format)
}

fn write_via_tmp(path: &Path, img: &DynamicImage, format: image::ImageFormat) -> Result<()> {
    let werr = |reason: String| Error::Write {
        path: path.to_path_buf(),
        reason,
    };
    let tmp = tmp_path(path);
    if let Err(e) = img.save_with_format(&tmp, format) {
        let _ = std::fs::remove_file(&tmp);
        return Err(werr(e.to_string()));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        werr(e.to_string())
    })
}

fn is_high_depth(img: &DynamicImage) -> bool {
    matches!(
        img,
        DynamicImage::ImageLuma16(_)
            | DynamicImage::ImageLumaA16(_)
            | DynamicImage::ImageRgb16(_)
            | DynamicImage::ImageRgba16(_)
            | DynamicImage::ImageRgb32F(_)
            | DynamicImage::ImageRgba32F(_)
    )
}

fn from_dynamic(img: &DynamicImage) -> Image {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let n = w * h;
    let mut data = vec![0f32; 3 * n];
    if is_high_depth(img) {
        let rgb = img.to_rgb32f();
        for (i, p) in rgb.pixels().enumerate() {
            for c in 0..3 {
                data[c * n + i] = p.0[c];
            }
        }
    } else {
        let rgb = img.to_rgb8();
        for (i, p) in rgb.pixels().enumerate() {
            for c in 0..3 {
                data[c * n + i] = p.0[c] as f32 / 255.0;
            }
        }
    }
    // from_planar cannot fail here: sizes come from a decoded image (w, h >= 1 checked by image).
    Image::from_planar(w, h, data).unwrap_or_else(|_| Image::filled(1, 1, [0.0; 3]))
}

/// Writes an image as 8-bit RGB (see [`save_image_as`] to keep alpha and 16 bits), format from the extension (`.png`, `.jpg`/`.jpeg`, `.bmp`,
/// `.tif`/`.tiff`, `.webp`). Values are clamped to `[0, 1]` then rounded (never truncated).
/// The file is written to a temporary name beside the target, then renamed into place.
pub fn save_image(path: impl AsRef<Path>, img: &Image) -> Result<()> {
    let path = path.as_ref();
    let werr = |reason: String| Error::Write {
        path: path.to_path_buf(),
        reason,
    };
    let format = image::ImageFormat::from_path(path)
        .map_err(|_| werr("unknown image extension (use .png or .jpg)".into()))?;
    let (w, h) = (img.width(), img.height());
    let n = w * h;
    let mut buf = image::RgbImage::new(w as u32, h as u32);
    for (i, p) in buf.pixels_mut().enumerate() {
        for c in 0..3 {
            p.0[c] = quantize_u8(img.data()[c * n + i]);
        }
    }
    write_via_tmp(path, &DynamicImage::ImageRgb8(buf), format)
}

/// `[0, 1]` float to 8-bit: clamp first, then round to nearest.
pub(crate) fn quantize_u8(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// A hidden temporary name beside `path`: `.<name>.<pid>.tmp`, with `<name>` shortened (at a
/// character boundary) so the whole stays within the 255-byte limit of common file systems.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let suffix = format!(".{}.tmp", std::process::id());
    let mut keep = name.len().min(255 - 1 - suffix.len());
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    path.with_file_name(format!(".{}{suffix}", &name[..keep]))
}

/// Image file extensions the writer knows (lowercase).
pub const WRITE_EXTENSIONS: [&str; 7] = ["png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp"];

#[cfg(test)]
mod tests {
    use super::*;

    /// PPM is in the dataset extensions, so it must decode (the `pnm` feature of `image`).
    #[test]
    fn ppm_images_load() -> Result<()> {
        let mut bytes = b"P6\n2 1\n255\n".to_vec();
        bytes.extend_from_slice(&[255, 0, 0, 0, 0, 255]);
        let img = decode_image(&bytes, Path::new("x.ppm"))?;
        assert_eq!((img.width(), img.height()), (2, 1));
        Ok(())
    }

    #[test]
    fn temporary_names_stay_within_255_bytes() {
        for len in [1, 200, 245, 251, 255] {
            let name = format!("{}.png", "é".repeat(len / 2)).into_bytes();
            let name = String::from_utf8_lossy(&name[..]).into_owned();
            let tmp = tmp_path(&Path::new("/x").join(&name));
            let n = tmp.file_name().map_or(0, |n| n.len());
            assert!(n <= 255, "{len}: {n}");
            assert!(tmp.to_string_lossy().ends_with(".tmp"));
        }
    }
}
