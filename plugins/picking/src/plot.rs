//! Precision-recall curves as a PNG (plotters): recall on x, precision on y, both 0..1 with a
//! numbered grid; one line per class in the colour order of [`COLOURS`] (the classes' order in
//! the metrics); the tuned-threshold point (`best_threshold`) as a filled square labelled with
//! its threshold; a legend naming each class (bottom left).

use anyhow::Result;
use tomoflow_cryo::plot::plotters::prelude::*;
use tomoflow_cryo::plot::{self, colour, err, FONT};

/// Class colours (RGB), cycled.
pub const COLOURS: [[u8; 3]; 8] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
];

/// A curve: (recall, precision) points and the highlighted point.
pub struct Curve {
    /// Class name (legend).
    pub name: String,
    /// Points (recall, precision).
    pub points: Vec<(f64, f64)>,
    /// Highlighted point (the tuned threshold) and its threshold.
    pub best: Option<(usize, f64)>,
}

/// Render the curves to PNG bytes (`size × size` pixels, at least 200).
pub fn pr_png(curves: &[Curve], size: usize) -> Result<Vec<u8>> {
    let size = size.max(200) as u32;
    plot::png(size, size, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(14)
            .x_label_area_size(42)
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..1.03, 0f64..1.03)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_labels(5)
            .y_labels(5)
            .x_desc("recall")
            .y_desc("precision")
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .light_line_style(WHITE)
            .x_label_formatter(&|v| format!("{v:.2}"))
            .y_label_formatter(&|v| format!("{v:.2}"))
            .draw()
            .map_err(err)?;
        for (i, cu) in curves.iter().enumerate() {
            let col = colour(COLOURS[i % COLOURS.len()]);
            let clamp = |&(r, p): &(f64, f64)| (r.clamp(0.0, 1.0), p.clamp(0.0, 1.0));
            chart
                .draw_series(LineSeries::new(
                    cu.points.iter().map(clamp),
                    col.stroke_width(2),
                ))
                .map_err(err)?
                .label(cu.name.as_str())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], col.filled()));
            if cu.points.len() == 1 {
                let p = clamp(&cu.points[0]);
                chart
                    .draw_series(std::iter::once(Circle::new(p, 3, col.filled())))
                    .map_err(err)?;
            }
            if let Some((b, t)) = cu.best.and_then(|(b, t)| cu.points.get(b).map(|p| (p, t))) {
                // the threshold, written towards the middle of the plot
                let (r, p) = clamp(b);
                let at = (if r > 0.5 { -44 } else { 8 }, if p > 0.5 { 6 } else { -20 });
                let marker = EmptyElement::at((r, p))
                    + Rectangle::new([(-5, -5), (5, 5)], col.filled())
                    + Text::new(format!("{t:.2}"), at, (FONT, 13).into_font().color(&col));
                chart.draw_series(std::iter::once(marker)).map_err(err)?;
            }
        }
        if !curves.is_empty() {
            plot::legend(&mut chart, SeriesLabelPosition::LowerLeft, 14)?;
        }
        Ok(())
    })
}
