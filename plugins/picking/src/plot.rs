//! Precision-recall curves as a PNG without any font: recall on x (0..1), precision on y
//! (0..1), grid lines every 0.25, one polyline per class in the colour order of [`COLOURS`]
//! (the classes' order in the metrics), the F-beta-optimal point as a filled square, and a
//! legend of coloured squares (top right, same order).

use anyhow::Result;

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

struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>,
}

impl Canvas {
    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.w && (y as usize) < self.h {
            let i = (y as usize * self.w + x as usize) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }
    fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), c: [u8; 3], thick: i64) {
        let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
        for s in 0..=n {
            let t = s as f64 / n as f64;
            let (x, y) = (x0 + t * (x1 - x0), y0 + t * (y1 - y0));
            for dy in -thick / 2..=thick / 2 {
                for dx in -thick / 2..=thick / 2 {
                    self.set(x.round() as i64 + dx, y.round() as i64 + dy, c);
                }
            }
        }
    }
    fn square(&mut self, x: f64, y: f64, r: i64, c: [u8; 3]) {
        for dy in -r..=r {
            for dx in -r..=r {
                self.set(x.round() as i64 + dx, y.round() as i64 + dy, c);
            }
        }
    }
}

/// Render the curves to PNG bytes (`size × size` pixels).
pub fn pr_png(curves: &[Curve], size: usize) -> Result<Vec<u8>> {
    let size = size.max(64);
    let mut c = Canvas {
        w: size,
        h: size,
        px: vec![255; size * size * 3],
    };
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
    let mut out = Vec::new();
    {
        let mut e = png::Encoder::new(&mut out, size as u32, size as u32);
        e.set_color(png::ColorType::Rgb);
        e.set_depth(png::BitDepth::Eight);
        let mut w = e.write_header()?;
        w.write_image_data(&c.px)?;
    }
    Ok(out)
}
