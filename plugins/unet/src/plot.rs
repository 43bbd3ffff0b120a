//! Training curves and class overlays as PNG.
//!
//! Curves: step on x; the training loss (blue, its moving average darker) from 0 to its maximum,
//! numbered on the left axis; validation mean Dice (orange squares) from 0 to 1, numbered on the
//! right axis. Grid lines at quarters, numbered; axis titles in the canvas's pixel font.

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
    const BLUE: [u8; 3] = [31, 119, 180];
    const ORANGE: [u8; 3] = [255, 127, 14];
    const INK: [u8; 3] = [60, 60, 60];
    let (w, h) = (640usize, 340usize);
    let (ml, mr, mt, mb) = (52.0f64, 52.0f64, 24.0f64, 40.0f64);
    let mut cv = Rgb::filled(w, h, [255; 3]);
    let (pw, ph) = (w as f64 - ml - mr, h as f64 - mt - mb);
    for q in 0..=4 {
        let y = mt + ph * q as f64 / 4.0;
        cv.line((ml, y), (ml + pw, y), [225, 225, 225], 1);
        let x = ml + pw * q as f64 / 4.0;
        cv.line((x, mt), (x, mt + ph), [225, 225, 225], 1);
    }
    cv.line((ml, mt + ph), (ml + pw, mt + ph), [0, 0, 0], 1);
    cv.line((ml, mt), (ml, mt + ph), [0, 0, 0], 1);
    cv.text(ml as i64, 6, "training loss", BLUE, 2);
    let title = "validation Dice";
    cv.text(
        (ml + pw) as i64 - Rgb::text_width(title, 2),
        6,
        title,
        ORANGE,
        2,
    );
    let xlabel = "step";
    cv.text(
        (ml + pw / 2.0) as i64 - Rgb::text_width(xlabel, 2) / 2,
        h as i64 - 12,
        xlabel,
        INK,
        2,
    );
    if rows.is_empty() {
        return cv.png();
    }
    let last = rows.last().map_or(1, |r| r.step).max(1) as f64;
    let max_loss = rows
        .iter()
        .map(|r| r.loss)
        .filter(|l| l.is_finite())
        .fold(1e-12, f64::max);
    for q in 0..=4 {
        let f = q as f64 / 4.0;
        let y = (mt + ph * (1.0 - f)) as i64 - 5;
        let loss = tick(max_loss * f);
        cv.text(ml as i64 - 5 - Rgb::text_width(&loss, 2), y, &loss, BLUE, 2);
        cv.text((ml + pw) as i64 + 5, y, &format!("{f:.2}"), ORANGE, 2);
        let step = format!("{}", (last * f).round());
        let x = (ml + pw * f) as i64 - Rgb::text_width(&step, 2) / 2;
        cv.text(x, (mt + ph) as i64 + 5, &step, INK, 2);
    }
    let pt = |step: u64, v: f64| {
        (
            ml + pw * step as f64 / last,
            mt + ph * (1.0 - v.clamp(0.0, 1.0)),
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
            BLUE,
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
            ORANGE,
            1,
        );
    }
    for &(s, d) in &vals {
        let (x, y) = pt(s, d);
        cv.square(x, y, 2, ORANGE);
    }
    cv.png()
}

/// An axis number with three significant figures at most (`1.23`, `12.3`, `123`).
fn tick(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
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
