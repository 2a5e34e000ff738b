//! PNG figures for experiment reports: line charts of training logs and image grids.
//!
//! Drawn with the `image` crate and the public-domain 8x8 bitmap font of `font8x8`, so the
//! figures need no system fonts and look the same on every machine.

use std::path::Path;

use anyhow::{Context, Result};
use font8x8::UnicodeFonts;
use image::{Rgb, RgbImage};

const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const BLACK: Rgb<u8> = Rgb([0, 0, 0]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);
/// Line colours (colour-blind-safe palette of Okabe and Ito).
const COLOURS: [Rgb<u8>; 7] = [
    Rgb([0, 114, 178]),
    Rgb([213, 94, 0]),
    Rgb([0, 158, 115]),
    Rgb([204, 121, 167]),
    Rgb([230, 159, 0]),
    Rgb([86, 180, 233]),
    Rgb([0, 0, 0]),
];

/// Writes `text` with its top-left corner at (x, y), each font pixel `scale` pixels wide.
pub fn text(img: &mut RgbImage, x: i64, y: i64, s: &str, colour: Rgb<u8>, scale: u32) {
    for (i, ch) in s.chars().enumerate() {
        let Some(glyph) = font8x8::BASIC_FONTS.get(ch) else {
            continue;
        };
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let px = x + (i as i64 * 8 + col) * scale as i64 + dx as i64;
                        let py = y + row as i64 * scale as i64 + dy as i64;
                        put(img, px, py, colour);
                    }
                }
            }
        }
    }
}

fn put(img: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, c);
    }
}

/// A line two pixels thick from (x0, y0) to (x1, y1).
fn line(img: &mut RgbImage, (x0, y0): (f64, f64), (x1, y1): (f64, f64), c: Rgb<u8>) {
    let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
    for i in 0..=n {
        let t = i as f64 / n as f64;
        let (x, y) = (x0 + t * (x1 - x0), y0 + t * (y1 - y0));
        for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            put(img, x.round() as i64 + dx, y.round() as i64 + dy, c);
        }
    }
}

/// A short label for an axis value.
fn tick_label(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// A line chart of `series` (name, points) with a title and axis names, as PNG.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_name: &str,
    y_name: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    let (w, h) = (760u32, 420u32);
    let (left, right, top, bottom) = (70.0, 210.0, 44.0, 50.0);
    let mut img = RgbImage::from_pixel(w, h, WHITE);
    let pts = series
        .iter()
        .flat_map(|s| s.1.iter())
        .filter(|p| p.1.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    (y0, y1) = (y0 - pad, y1 + pad);
    let (pw, ph) = (w as f64 - left - right, h as f64 - top - bottom);
    let sx = |x: f64| left + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| top + (1.0 - (y - y0) / (y1 - y0)) * ph;
    for i in 0..=4 {
        let fy = y0 + (y1 - y0) * i as f64 / 4.0;
        let py = sy(fy);
        line(&mut img, (left, py), (left + pw, py), GRID);
        text(&mut img, 4, py as i64 - 4, &tick_label(fy), BLACK, 1);
        let fx = x0 + (x1 - x0) * i as f64 / 4.0;
        let px = sx(fx);
        line(&mut img, (px, top), (px, top + ph), GRID);
        let label = tick_label(fx);
        text(
            &mut img,
            px as i64 - 4 * label.len() as i64,
            (top + ph) as i64 + 6,
            &label,
            BLACK,
            1,
        );
    }
    line(&mut img, (left, top + ph), (left + pw, top + ph), BLACK);
    line(&mut img, (left, top), (left, top + ph), BLACK);
    for (k, (name, points)) in series.iter().enumerate() {
        let c = COLOURS[k % COLOURS.len()];
        let finite: Vec<&(f64, f64)> = points.iter().filter(|p| p.1.is_finite()).collect();
        for pair in finite.windows(2) {
            line(
                &mut img,
                (sx(pair[0].0), sy(pair[0].1)),
                (sx(pair[1].0), sy(pair[1].1)),
                c,
            );
        }
        let ly = top as i64 + 10 + 18 * k as i64;
        let lx = (left + pw) as i64 + 14;
        line(
            &mut img,
            (lx as f64, ly as f64 + 3.0),
            (lx as f64 + 18.0, ly as f64 + 3.0),
            c,
        );
        text(&mut img, lx + 24, ly, name, BLACK, 1);
    }
    text(&mut img, left as i64, 4, title, BLACK, 2);
    text(
        &mut img,
        (left + pw / 2.0) as i64 - 4 * x_name.len() as i64,
        h as i64 - 18,
        x_name,
        BLACK,
        1,
    );
    text(&mut img, 4, top as i64 - 14, y_name, BLACK, 1);
    img.save(path).with_context(|| format!("writing {path:?}"))
}

/// A grid of equally sized tiles (`rows[r][c]`) under a header of column labels, as PNG.
pub fn grid(path: &Path, columns: &[&str], rows: &[Vec<RgbImage>]) -> Result<()> {
    let (tw, th) = rows
        .first()
        .and_then(|r| r.first())
        .map(|t| (t.width(), t.height()))
        .context("empty grid")?;
    let (gap, head) = (4u32, 20u32);
    let w = columns.len() as u32 * (tw + gap) + gap;
    let h = head + rows.len() as u32 * (th + gap) + gap;
    let mut img = RgbImage::from_pixel(w, h, WHITE);
    for (c, name) in columns.iter().enumerate() {
        let x = gap + c as u32 * (tw + gap);
        let label: String = name.chars().take((tw / 8) as usize).collect();
        text(
            &mut img,
            (x + tw / 2) as i64 - 4 * label.len() as i64,
            6,
            &label,
            BLACK,
            1,
        );
    }
    for (r, row) in rows.iter().enumerate() {
        for (c, tile) in row.iter().enumerate() {
            let (x, y) = (
                gap + c as u32 * (tw + gap),
                head + gap + r as u32 * (th + gap),
            );
            image::imageops::replace(&mut img, tile, x as i64, y as i64);
        }
    }
    img.save(path).with_context(|| format!("writing {path:?}"))
}

/// The centre `side x side` crop of an image file (or the whole image when smaller), padded
/// with white to `side x side`.
pub fn centre_tile(path: &Path, side: u32) -> Result<RgbImage> {
    let img = image::open(path)
        .with_context(|| format!("reading {path:?}"))?
        .to_rgb8();
    Ok(centre_crop(&img, side))
}

/// The centre `side x side` crop of `img`, padded with white when smaller.
pub fn centre_crop(img: &RgbImage, side: u32) -> RgbImage {
    let (cw, ch) = (img.width().min(side), img.height().min(side));
    let (x, y) = ((img.width() - cw) / 2, (img.height() - ch) / 2);
    let crop = image::imageops::crop_imm(img, x, y, cw, ch).to_image();
    let mut tile = RgbImage::from_pixel(side, side, WHITE);
    image::imageops::replace(
        &mut tile,
        &crop,
        ((side - cw) / 2) as i64,
        ((side - ch) / 2) as i64,
    );
    tile
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_draws_each_series_in_its_colour() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("daa-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let p = dir.join("c.png");
        let s = vec![
            ("a".to_string(), vec![(0.0, 1.0), (10.0, 0.5)]),
            (
                "b".to_string(),
                vec![(0.0, 0.2), (10.0, 0.9), (20.0, f64::NAN)],
            ),
        ];
        line_chart(&p, "t", "step", "loss", &s)?;
        let img = image::open(&p)?.to_rgb8();
        for c in &COLOURS[..2] {
            assert!(img.pixels().filter(|px| *px == c).count() > 100, "{c:?}");
        }
        assert!(!img.pixels().any(|px| *px == COLOURS[2]));
        let g = dir.join("g.png");
        let tile = RgbImage::from_pixel(16, 16, Rgb([9, 9, 9]));
        grid(
            &g,
            &["x", "y"],
            &[vec![tile.clone(), tile.clone()], vec![tile.clone(), tile]],
        )?;
        let gi = image::open(&g)?.to_rgb8();
        assert_eq!(gi.dimensions(), (2 * 20 + 4, 20 + 2 * 20 + 4));
        assert_eq!(gi.pixels().filter(|px| px.0 == [9, 9, 9]).count(), 4 * 256);
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn centre_crop_pads_small_images() {
        let img = RgbImage::from_pixel(10, 4, Rgb([1, 2, 3]));
        let t = centre_crop(&img, 8);
        assert_eq!(t.dimensions(), (8, 8));
        assert_eq!(t.pixels().filter(|p| p.0 == [1, 2, 3]).count(), 32);
    }
}
