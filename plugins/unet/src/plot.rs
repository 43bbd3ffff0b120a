//! Pictures without fonts: training curves and class overlays as PNG.
//!
//! Curves: step on x; the training loss (blue, its moving average darker) scaled to the plot
//! height from 0 to its maximum; validation mean Dice (orange squares, 0 to 1). Grid lines at
//! quarters.

use crate::train::HistoryRow;
use anyhow::Result;
use tomoflow_cryo::image::Rgb;

/// Class colours (RGB) for overlays, cycled; background has none.
pub const COLOURS: [[u8; 3]; 8] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [188, 189, 34],
];

/// Loss and validation curves as a PNG.
pub fn curves_png(rows: &[HistoryRow]) -> Result<Vec<u8>> {
    let (w, h, m) = (640usize, 320usize, 20.0f64);
    let mut cv = Rgb::filled(w, h, [255; 3]);
    let (pw, ph) = (w as f64 - 2.0 * m, h as f64 - 2.0 * m);
    for q in 0..=4 {
        let y = m + ph * q as f64 / 4.0;
        cv.line((m, y), (m + pw, y), [225, 225, 225], 1);
        let x = m + pw * q as f64 / 4.0;
        cv.line((x, m), (x, m + ph), [225, 225, 225], 1);
    }
    cv.line((m, m + ph), (m + pw, m + ph), [0, 0, 0], 1);
    cv.line((m, m), (m, m + ph), [0, 0, 0], 1);
    if rows.is_empty() {
        return cv.png();
    }
    let last = rows.last().map_or(1, |r| r.step).max(1) as f64;
    let max_loss = rows
        .iter()
        .map(|r| r.loss)
        .filter(|l| l.is_finite())
        .fold(1e-12, f64::max);
    let pt = |step: u64, v: f64| {
        (
            m + pw * step as f64 / last,
            m + ph * (1.0 - v.clamp(0.0, 1.0)),
        )
    };
    for pair in rows.windows(2) {
        cv.line(
            pt(pair[0].step, pair[0].loss / max_loss),
            pt(pair[1].step, pair[1].loss / max_loss),
            [160, 190, 230],
            1,
        );
    }
    // Moving average over ~2 % of the run.
    let k = (rows.len() / 50).max(1);
    let avg: Vec<(u64, f64)> = rows
        .windows(k)
        .map(|win| {
            (
                win[win.len() - 1].step,
                win.iter().map(|r| r.loss).sum::<f64>() / k as f64,
            )
        })
        .collect();
    for pair in avg.windows(2) {
        cv.line(
            pt(pair[0].0, pair[0].1 / max_loss),
            pt(pair[1].0, pair[1].1 / max_loss),
            [31, 119, 180],
            1,
        );
    }
    let vals: Vec<(u64, f64)> = rows
        .iter()
        .filter_map(|r| r.val_dice.map(|d| (r.step, d)))
        .collect();
    for pair in vals.windows(2) {
        cv.line(
            pt(pair[0].0, pair[0].1),
            pt(pair[1].0, pair[1].1),
            [255, 127, 14],
            1,
        );
    }
    for &(s, d) in &vals {
        let (x, y) = pt(s, d);
        for dy in -2..=2 {
            for dx in -2..=2 {
                cv.set(x as i64 + dx, y as i64 + dy, [255, 127, 14]);
            }
        }
    }
    cv.png()
}

/// A grey slice with the classes of `classes` (0 = none) blended in colour; slices smaller than
/// 384 pixels on the long side are enlarged (nearest neighbour).
pub fn overlay_png(gray: &[u8], classes: &[u8], w: usize, h: usize) -> Result<Vec<u8>> {
    let k = (384 / w.max(h).max(1)).max(1);
    let mut cv = Rgb::filled(w * k, h * k, [255; 3]);
    for i in 0..w * h * k * k {
        let src = (i / (w * k) / k) * w + (i % (w * k)) / k;
        let g = gray[src] as f32;
        let c = if classes[src] == 0 {
            [g as u8; 3]
        } else {
            let col = COLOURS[(classes[src] as usize - 1) % COLOURS.len()];
            std::array::from_fn(|j| (0.45 * g + 0.55 * col[j] as f32) as u8)
        };
        cv.px[i * 3..i * 3 + 3].copy_from_slice(&c);
    }
    cv.png()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_are_a_png() {
        let rows: Vec<HistoryRow> = (1..=30)
            .map(|s| HistoryRow {
                step: s,
                loss: 1.0 / s as f64,
                lr: 1e-3,
                val_dice: (s % 10 == 0).then_some(0.5),
                val_class_dice: vec![],
            })
            .collect();
        let png = curves_png(&rows).unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }
}
