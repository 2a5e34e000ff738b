//! PNG figures for experiment reports: line charts of training logs and image grids.
//!
//! Charts are drawn by `plotters` on its bitmap backend and saved with `image`. plotters draws
//! text with a TrueType font from the system (its `ttf` feature) or one the caller embeds
//! (`ab_glyph`), and a fresh machine may have no fonts at all; so text goes through
//! [`BitmapText`], a backend wrapper that draws the public-domain 8x8 bitmap font of `font8x8`.
//! The figures need no font files and look the same on every machine.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use font8x8::UnicodeFonts;
use image::{Rgb, RgbImage};
use plotters::prelude::*;
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind,
};

const WHITE_PX: Rgb<u8> = Rgb([255, 255, 255]);
/// Line colours (colour-blind-safe palette of Okabe and Ito).
const COLOURS: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
];

/// A drawing backend that forwards everything to `B` except text, which it draws with the 8x8
/// bitmap font scaled by a whole factor ([`glyph_scale`]).
pub struct BitmapText<B> {
    inner: B,
}

impl<B> BitmapText<B> {
    /// Wraps `inner`.
    pub fn new(inner: B) -> Self {
        Self { inner }
    }
}

/// The plotters font size drawn with 8x8 glyphs at scale 1. Some of plotters' layout (the
/// legend box) measures text with its font-less estimate, `0.7 * size / 1.24^2` pixels per
/// character, rather than asking the backend; at this size that estimate is the 8 pixels a
/// glyph takes, so those boxes fit the text.
const TEXT: f64 = 8.0 * 1.24 * 1.24 / 0.7;

/// The pixel scale of the 8x8 font for a text of plotters font size `size`.
fn glyph_scale(size: f64) -> i32 {
    ((size / TEXT).round() as i32).max(1)
}

impl<B: DrawingBackend> DrawingBackend for BitmapText<B> {
    type ErrorType = B::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }
    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.ensure_prepared()
    }
    fn present(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.present()
    }
    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_pixel(point, color)
    }
    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_line(from, to, style)
    }
    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_rect(upper_left, bottom_right, style, fill)
    }
    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_path(path, style)
    }
    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.fill_polygon(vert, style)
    }

    fn estimate_text_size<TStyle: BackendTextStyle>(
        &self,
        text: &str,
        style: &TStyle,
    ) -> Result<(u32, u32), DrawingErrorKind<Self::ErrorType>> {
        let s = glyph_scale(style.size()) as u32;
        Ok((8 * s * text.chars().count() as u32, 8 * s))
    }

    /// Draws `text` anchored at `pos` as plotters' own text drawing does: the anchor picks the
    /// corner or centre of the text box, and the transform rotates the box about `pos`.
    fn draw_text<TStyle: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &TStyle,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let s = glyph_scale(style.size());
        let (width, height) = (8 * s * text.chars().count() as i32, 8 * s);
        let dx = match style.anchor().h_pos {
            HPos::Left => 0,
            HPos::Right => -width,
            HPos::Center => -width / 2,
        };
        let dy = match style.anchor().v_pos {
            VPos::Top => 0,
            VPos::Center => -height / 2,
            VPos::Bottom => -height,
        };
        let transform = style.transform();
        let (w, h) = self.get_size();
        for (i, ch) in text.chars().enumerate() {
            let Some(glyph) = font8x8::BASIC_FONTS.get(ch) else {
                continue;
            };
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits & (1 << col) == 0 {
                        continue;
                    }
                    for (py, px) in (0..s).flat_map(|py| (0..s).map(move |px| (py, px))) {
                        let x = (i as i32 * 8 + col) * s + px + dx;
                        let y = row as i32 * s + py + dy;
                        let (x, y) = transform.transform(x, y);
                        let (x, y) = (pos.0 + x, pos.1 + y);
                        if x >= 0 && y >= 0 && x < w as i32 && y < h as i32 {
                            self.inner.draw_pixel((x, y), color)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Draws on a `w x h` white RGB canvas through [`BitmapText`] and returns it as an image.
fn render(
    (w, h): (u32, u32),
    background: Option<&RgbImage>,
    draw: impl FnOnce(&DrawingArea<BitmapText<BitMapBackend<'_>>, plotters::coord::Shift>) -> Result<()>,
) -> Result<RgbImage> {
    let mut buf = match background {
        Some(img) => img.as_raw().clone(),
        None => vec![255u8; (w * h * 3) as usize],
    };
    {
        let area =
            BitmapText::new(BitMapBackend::with_buffer(&mut buf, (w, h))).into_drawing_area();
        draw(&area)?;
        area.present().map_err(|e| anyhow!("drawing: {e}"))?;
    }
    RgbImage::from_raw(w, h, buf).context("chart buffer has the wrong size")
}

/// Finite range of the values, padded by 5% (a point becomes a unit range).
fn padded_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-6);
    (lo - pad, hi + pad)
}

/// A line chart of `series` (name, points) with a title, axis names and a legend, as PNG.
/// Non-finite values are left out.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_name: &str,
    y_name: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let points = || series.iter().flat_map(|s| s.1.iter()).filter(finite);
    let (x0, mut x1) = {
        let (lo, hi) = points().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
            (lo.min(p.0), hi.max(p.0))
        });
        if lo > hi {
            (0.0, 1.0)
        } else {
            (lo, hi)
        }
    };
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    let (y0, y1) = padded_range(points().map(|p| p.1));
    let img = render((760, 420), None, |area| {
        let err = |e| anyhow!("drawing chart {title:?}: {e}");
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 2.0 * TEXT))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(x_name)
            .y_desc(y_name)
            .label_style(("sans-serif", TEXT))
            .axis_desc_style(("sans-serif", TEXT))
            .light_line_style(WHITE)
            .bold_line_style(RGBColor(225, 225, 225))
            .draw()
            .map_err(err)?;
        for (k, (name, pts)) in series.iter().enumerate() {
            let colour = COLOURS[k % COLOURS.len()];
            chart
                .draw_series(LineSeries::new(
                    pts.iter().filter(finite).copied(),
                    Color::stroke_width(&colour, 2),
                ))
                .map_err(err)?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], Color::stroke_width(&colour, 2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(("sans-serif", TEXT))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        Ok(())
    })?;
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
    let mut tiles = RgbImage::from_pixel(w, h, WHITE_PX);
    for (r, row) in rows.iter().enumerate() {
        for (c, tile) in row.iter().enumerate() {
            let (x, y) = (
                gap + c as u32 * (tw + gap),
                head + gap + r as u32 * (th + gap),
            );
            image::imageops::replace(&mut tiles, tile, x as i64, y as i64);
        }
    }
    let img = render((w, h), Some(&tiles), |area| {
        for (c, name) in columns.iter().enumerate() {
            let x = gap + c as u32 * (tw + gap) + tw / 2;
            let label: String = name.chars().take((tw / 8) as usize).collect();
            let style = TextStyle::from(("sans-serif", TEXT).into_font())
                .color(&BLACK)
                .pos(plotters::style::text_anchor::Pos::new(
                    HPos::Center,
                    VPos::Top,
                ));
            area.draw_text(&label, &style, (x as i32, 6))
                .map_err(|e| anyhow!("drawing grid label {label:?}: {e}"))?;
        }
        Ok(())
    })?;
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
    let mut tile = RgbImage::from_pixel(side, side, WHITE_PX);
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

    fn px(c: RGBColor) -> Rgb<u8> {
        Rgb([c.0, c.1, c.2])
    }

    #[test]
    fn chart_draws_each_series_in_its_colour_and_labels_it() -> Result<()> {
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
        assert_eq!(img.dimensions(), (760, 420));
        for c in &COLOURS[..2] {
            let n = img.pixels().filter(|q| **q == px(*c)).count();
            assert!(n > 100, "{c:?}: {n} pixels");
        }
        assert!(!img.pixels().any(|q| *q == px(COLOURS[2])));
        // Text (title, ticks, legend) is drawn: black pixels beyond the axis lines.
        let black = img.pixels().filter(|q| q.0 == [0, 0, 0]).count();
        assert!(black > 1500, "{black} black pixels");
        let g = dir.join("g.png");
        let tile = RgbImage::from_pixel(16, 16, Rgb([9, 9, 9]));
        grid(
            &g,
            &["x", "y"],
            &[vec![tile.clone(), tile.clone()], vec![tile.clone(), tile]],
        )?;
        let gi = image::open(&g)?.to_rgb8();
        assert_eq!(gi.dimensions(), (2 * 20 + 4, 20 + 2 * 20 + 4));
        assert_eq!(gi.pixels().filter(|q| q.0 == [9, 9, 9]).count(), 4 * 256);
        // The two column labels sit in the header.
        let header_ink = (0..20)
            .flat_map(|y| (0..gi.width()).map(move |x| (x, y)))
            .filter(|&(x, y)| gi.get_pixel(x, y).0 == [0, 0, 0])
            .count();
        assert!(header_ink > 10, "{header_ink}");
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn bitmap_text_anchors_and_rotates_like_plotters() -> Result<()> {
        // An "I" centred on (20, 20), then the same rotated by 270 degrees: the glyph's
        // vertical bar becomes horizontal.
        let ink = |transform: FontTransform| -> Result<(u32, u32)> {
            let img = render((40, 40), None, |area| {
                let style = TextStyle::from(("sans-serif", TEXT).into_font())
                    .color(&BLACK)
                    .transform(transform)
                    .pos(plotters::style::text_anchor::Pos::new(
                        HPos::Center,
                        VPos::Center,
                    ));
                area.draw_text("I", &style, (20, 20))
                    .map_err(|e| anyhow!("{e}"))?;
                Ok(())
            })?;
            let pts: Vec<(u32, u32)> = img
                .enumerate_pixels()
                .filter(|p| p.2 .0 == [0, 0, 0])
                .map(|p| (p.0, p.1))
                .collect();
            assert!(!pts.is_empty());
            assert!(pts
                .iter()
                .all(|&(x, y)| (14..=26).contains(&x) && (14..=26).contains(&y)));
            let span = |f: fn(&(u32, u32)) -> u32| {
                pts.iter().map(f).max().unwrap_or(0) - pts.iter().map(f).min().unwrap_or(0)
            };
            Ok((span(|p| p.0), span(|p| p.1)))
        };
        let (w, h) = ink(FontTransform::None)?;
        let (rw, rh) = ink(FontTransform::Rotate270)?;
        assert!(h > w, "upright I: {w} x {h}");
        assert_eq!((rw, rh), (h, w));
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
