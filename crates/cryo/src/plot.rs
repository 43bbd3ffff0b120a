//! Plots with [`plotters`], drawn into memory and returned as PNG bytes. Text uses a font compiled
//! into the library (a subset of DejaVu Sans, `fonts/`), so plots need no system fonts, no
//! fontconfig and no network: a plugin on a bare cluster node draws the same picture.

use crate::image::Rgb;
use anyhow::{anyhow, Result};
use plotters::coord::{CoordTranslate, Shift};
use plotters::prelude::*;
use std::sync::OnceLock;

pub use plotters;

/// The font family name plots use (the embedded DejaVu Sans subset is registered under it).
pub const FONT: &str = "sans-serif";

static FONT_BYTES: &[u8] = include_bytes!("../fonts/DejaVuSans-subset.ttf");

/// Register the embedded font (once per loaded library).
fn register_font() -> Result<()> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(anyhow!("the embedded plot font could not be loaded"))
    }
}

/// The drawing area a plot draws on.
pub type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Draw a `w × h` pixel picture on a white background with `draw`; returns PNG bytes.
pub fn png<F>(w: u32, h: u32, draw: F) -> Result<Vec<u8>>
where
    F: FnOnce(&Area<'_>) -> Result<()>,
{
    let mut img = Rgb::filled(w as usize, h as usize, [255; 3]);
    draw_on(&mut img, draw)?;
    img.png()
}

/// Draw on an existing picture (text and shapes over an image made pixel by pixel).
pub fn draw_on<F>(img: &mut Rgb, draw: F) -> Result<()>
where
    F: FnOnce(&Area<'_>) -> Result<()>,
{
    register_font()?;
    let root =
        BitMapBackend::with_buffer(&mut img.px, (img.w as u32, img.h as u32)).into_drawing_area();
    draw(&root)?;
    root.present().map_err(err)
}

/// Draw a chart's series legend at `position` with labels `size` pixels high, in a
/// translucent white box with a light grey border: the look of every tomoflow plot.
pub fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
    size: u32,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .label_font((FONT, size))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .draw()
        .map_err(err)
}

/// Width and height in pixels of `text` in the plot font at `size` pixels.
pub fn text_size(text: &str, size: f64) -> Result<(u32, u32)> {
    register_font()?;
    (FONT, size).into_font().box_size(text).map_err(err)
}

/// A plotters colour from `[r, g, b]`.
pub fn colour(c: [u8; 3]) -> RGBColor {
    RGBColor(c[0], c[1], c[2])
}

/// Turn a plotters error into an `anyhow` error (plotters' errors borrow the backend's type).
pub fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("plot: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ink(png: &[u8]) -> usize {
        let img = Rgb::from_png(png).unwrap();
        img.px.chunks(3).filter(|p| p != &[255, 255, 255]).count()
    }

    #[test]
    fn text_is_drawn_with_the_embedded_font() {
        let blank = png(120, 40, |_| Ok(())).unwrap();
        assert_eq!(ink(&blank), 0);
        let draw = |s: &'static str| {
            png(120, 40, move |a| {
                a.draw_text(s, &(FONT, 20).into_font().color(&BLACK), (4, 8))
                    .map_err(err)
            })
            .unwrap()
        };
        let (one, other) = (draw("recall"), draw("Dice ≥ 0.8 Å"));
        // glyphs cover a fair part of the text box, and different text draws differently
        assert!(ink(&one) > 100, "{} pixels inked", ink(&one));
        assert!(ink(&other) > 100);
        assert_ne!(one, other);
    }
}
