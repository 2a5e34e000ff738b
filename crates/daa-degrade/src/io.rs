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
/// and images over [`MAX_PIXELS`] are errors naming the path.
pub fn load_image(path: impl AsRef<Path>) -> Result<Image> {
    let path = path.as_ref();
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
            format!("{w}x{h} is larger than the limit of {MAX_PIXELS} pixels; tile it first"),
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
    Ok(from_dynamic(&dynimg))
}

fn from_dynamic(img: &DynamicImage) -> Image {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let n = w * h;
    let mut data = vec![0f32; 3 * n];
    let high_depth = matches!(
        img,
        DynamicImage::ImageLuma16(_)
            | DynamicImage::ImageLumaA16(_)
            | DynamicImage::ImageRgb16(_)
            | DynamicImage::ImageRgba16(_)
            | DynamicImage::ImageRgb32F(_)
            | DynamicImage::ImageRgba32F(_)
    );
    if high_depth {
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

/// Writes an image as 8-bit RGB, format from the extension (`.png`, `.jpg`/`.jpeg`, `.bmp`,
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
    let tmp = tmp_path(path);
    let res = DynamicImage::ImageRgb8(buf).save_with_format(&tmp, format);
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(werr(e.to_string()));
    }
    std::fs::rename(&tmp, path).map_err(|e| werr(e.to_string()))
}

/// `[0, 1]` float to 8-bit: clamp first, then round to nearest.
pub(crate) fn quantize_u8(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}
