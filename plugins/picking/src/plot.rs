//! Precision-recall curves as a PNG without any font: recall on x (0..1), precision on y
//! (0..1), grid lines every 0.25, one polyline per class in the colour order of [`COLOURS`]
//! (the classes' order in the metrics), the F-beta-optimal point as a filled square, and a
//! legend of coloured squares (top right, same order).

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
    /// Points (recall, precision).
    pub points: Vec<(f64, f64)>,
    /// Highlighted point (best F-beta).
    pub best: Option<usize>,
}

/// Render the curves to PNG bytes (`size × size` pixels).
pub fn pr_png(curves: &[Curve], size: usize) -> Result<Vec<u8>> {
    let size = size.max(64);
    let mut c = Rgb::filled(size, size, [255; 3]);
    let m = size as f64 * 0.08;
    let span = size as f64 - 2.0 * m;
    let map = |r: f64, p: f64| {
        (
            m + r.clamp(0.0, 1.0) * span,
            m + (1.0 - p.clamp(0.0, 1.0)) * span,
        )
    };
    for k in 0..=4 {
        let t = k as f64 / 4.0;
        let g = if k == 0 { [0, 0, 0] } else { [220, 220, 220] };
        c.line(map(t, 0.0), map(t, 1.0), g, 1);
        c.line(map(0.0, t), map(1.0, t), g, 1);
    }
    c.line(map(0.0, 0.0), map(1.0, 0.0), [0, 0, 0], 1);
    c.line(map(0.0, 0.0), map(0.0, 1.0), [0, 0, 0], 1);
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
        // legend
        let lx = size as f64 - m * 0.6;
        let ly = m + i as f64 * m * 0.5;
        c.square(lx, ly, (m * 0.15) as i64, col);
    }
    c.png()
}
