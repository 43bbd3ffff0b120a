//! Precision-recall curves as a PNG: recall on x (0..1), precision on y (0..1), numbered grid
//! lines every 0.25, one polyline per class in the colour order of [`COLOURS`] (the classes'
//! order in the metrics), the F-beta-optimal point as a filled square, and a legend of
//! coloured squares with the class names (bottom left, same order).

use anyhow::Result;
use tomoflow_cryo::image::Rgb;

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

/// A curve: (recall, precision) points and the index of the highlighted point.
pub struct Curve {
    /// Class name (legend).
    pub name: String,
    /// Points (recall, precision).
    pub points: Vec<(f64, f64)>,
    /// Highlighted point (best F-beta).
    pub best: Option<usize>,
}

/// Render the curves to PNG bytes (`size × size` pixels).
pub fn pr_png(curves: &[Curve], size: usize) -> Result<Vec<u8>> {
    let size = size.max(64);
    let mut c = Rgb::filled(size, size, [255; 3]);
    let m = (size as f64 * 0.1).max(36.0);
    let span = size as f64 - 1.5 * m;
    let map = |r: f64, p: f64| {
        (
            m + r.clamp(0.0, 1.0) * span,
            m * 0.5 + (1.0 - p.clamp(0.0, 1.0)) * span,
        )
    };
    const INK: [u8; 3] = [60, 60, 60];
    for k in 0..=4 {
        let t = k as f64 / 4.0;
        let g = if k == 0 { [0, 0, 0] } else { [220, 220, 220] };
        c.line(map(t, 0.0), map(t, 1.0), g, 1);
        c.line(map(0.0, t), map(1.0, t), g, 1);
        let label = format!("{t:.2}");
        let (x, y) = map(t, 0.0);
        c.text(
            x as i64 - Rgb::text_width(&label, 2) / 2,
            y as i64 + 5,
            &label,
            INK,
            2,
        );
        let (x, y) = map(0.0, t);
        c.text(
            x as i64 - 5 - Rgb::text_width(&label, 2),
            y as i64 - 5,
            &label,
            INK,
            2,
        );
    }
    c.line(map(0.0, 0.0), map(1.0, 0.0), [0, 0, 0], 1);
    c.line(map(0.0, 0.0), map(0.0, 1.0), [0, 0, 0], 1);
    let (x, y) = map(0.5, 0.0);
    c.text(
        x as i64 - Rgb::text_width("recall", 2) / 2,
        y as i64 + 20,
        "recall",
        INK,
        2,
    );
    c.text(4, 4, "precision", INK, 2);
    for (i, cu) in curves.iter().enumerate() {
        let col = COLOURS[i % COLOURS.len()];
        for w in cu.points.windows(2) {
            c.line(map(w[0].0, w[0].1), map(w[1].0, w[1].1), col, 2);
        }
        if cu.points.len() == 1 {
            let (x, y) = map(cu.points[0].0, cu.points[0].1);
            c.square(x, y, 1, col);
        }
        if let Some(b) = cu.best.and_then(|b| cu.points.get(b)) {
            let (x, y) = map(b.0, b.1);
            c.square(x, y, 4, col);
        }
        // legend, bottom left, inside the plot
        let (lx, ly) = map(0.04, 0.0);
        let ly = ly - 14.0 * (curves.len() - i) as f64;
        c.square(lx + 4.0, ly + 4.0, 4, col);
        c.text(lx as i64 + 14, ly as i64, &cu.name, col, 2);
    }
    c.png()
}
