//! JPEG compression as a degradation step: a quality range, checked and drawn from, and an
//! in-memory encode/decode round trip.

use rand::Rng;

use crate::{Error, Image, Result};

/// Checks a JPEG quality range: `[0, 0]` (no JPEG) or `1 <= lo <= hi <= 100`.
pub(crate) fn jpeg_ok(q: [u8; 2]) -> Result<()> {
    if q[0] > q[1] || q[1] > 100 || (q[0] == 0 && q[1] != 0) {
        return Err(Error::Param(format!(
            "jpeg_quality must be [0, 0] or 1 <= lo <= hi <= 100, got {q:?}"
        )));
    }
    Ok(())
}

/// JPEG round trip at a quality drawn from `q`, or the image itself for `[0, 0]`.
pub(crate) fn maybe_jpeg(img: Image, q: [u8; 2], rng: &mut impl Rng) -> Result<Image> {
    if q[1] == 0 {
        return Ok(img);
    }
    jpeg_roundtrip(&img, rng.random_range(q[0]..=q[1]))
}

/// JPEG round trip at `quality` (1..=100) through the `image` crate's encoder and decoder.
pub(crate) fn jpeg_roundtrip(img: &Image, quality: u8) -> Result<Image> {
    let (w, h) = (img.width(), img.height());
    let n = w * h;
    let mut rgb = image::RgbImage::new(w as u32, h as u32);
    for (i, p) in rgb.pixels_mut().enumerate() {
        for c in 0..3 {
            p.0[c] = crate::io::quantize_u8(img.data()[c * n + i]);
        }
    }
    let mut buf = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, quality)
        .encode_image(&rgb)
        .map_err(|e| Error::Param(format!("jpeg encode: {e}")))?;
    let dec = image::load_from_memory_with_format(&buf, image::ImageFormat::Jpeg)
        .map_err(|e| Error::Param(format!("jpeg decode: {e}")))?
        .to_rgb8();
    let mut data = vec![0f32; 3 * n];
    for (i, p) in dec.pixels().enumerate() {
        for c in 0..3 {
            data[c * n + i] = p.0[c] as f32 / 255.0;
        }
    }
    Image::from_planar(w, h, data)
}
