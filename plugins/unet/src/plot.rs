//! Training curves and class overlays as PNG.
//!
//! Curves (plotters): step on x; the training loss per step (light blue) and its moving average
//! (blue) on the left axis, from 0 to the largest loss; the validation mean Dice (orange line with
//! squares) on the right axis, from 0 to 1; a legend naming the three.

use crate::train::HistoryRow;
use anyhow::Result;
use tomoflow_cryo::image::Rgb;
use tomoflow_cryo::plot::plotters::prelude::*;
use tomoflow_cryo::plot::{self, colour, err, FONT};

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

/// Loss and validation curves as a PNG (720 × 380 pixels).
pub fn curves_png(rows: &[HistoryRow]) -> Result<Vec<u8>> {
    let blue = colour([31, 119, 180]);
    let light = colour([170, 198, 232]);
    let orange = colour([255, 127, 14]);
    let last = rows.last().map_or(1, |r| r.step).max(1);
    let max_loss = rows
        .iter()
        .map(|r| r.loss)
        .filter(|l| l.is_finite())
        .fold(1e-12, f64::max);
    // Moving average over ~2 % of the run.
    let k = (rows.len() / 50).max(1);
    let avg: Vec<(u64, f64)> = rows
        .windows(k)
        .map(|win| {
            let mean = win.iter().map(|r| r.loss).sum::<f64>() / k as f64;
            (win[win.len() - 1].step, mean)
        })
        .collect();
    let vals: Vec<(u64, f64)> = rows
        .iter()
        .filter_map(|r| r.val_dice.map(|d| (r.step, d.clamp(0.0, 1.0))))
        .collect();
    let finite = |&(s, l): &(u64, f64)| l.is_finite().then_some((s, l.min(max_loss)));
    plot::png(720, 380, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .right_y_label_area_size(60)
            .build_cartesian_2d(0u64..last, 0f64..max_loss * 1.02)
            .map_err(err)?
            .set_secondary_coord(0u64..last, 0f64..1.0);
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("training loss")
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 15))
            .light_line_style(WHITE)
            .y_label_formatter(&|v| tick(*v))
            .draw()
            .map_err(err)?;
        chart
            .configure_secondary_axes()
            .y_desc("validation Dice")
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 15))
            .y_label_formatter(&|v| format!("{v:.2}"))
            .draw()
            .map_err(err)?;
        let steps = rows.iter().map(|r| (r.step, r.loss));
        chart
            .draw_series(LineSeries::new(steps.filter_map(|p| finite(&p)), light))
            .map_err(err)?
            .label("loss per step")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], light.stroke_width(2)));
        chart
            .draw_series(LineSeries::new(
                avg.iter().filter_map(finite),
                blue.stroke_width(2),
            ))
            .map_err(err)?
            .label("loss, moving average")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], blue.stroke_width(2)));
        chart
            .draw_secondary_series(LineSeries::new(
                vals.iter().copied(),
                orange.stroke_width(2),
            ))
            .map_err(err)?
            .label("validation mean Dice")
            .legend(move |(x, y)| {
                Rectangle::new([(x + 4, y - 4), (x + 12, y + 4)], orange.filled())
            });
        chart
            .draw_secondary_series(vals.iter().map(|&p| {
                EmptyElement::at(p) + Rectangle::new([(-3, -3), (3, 3)], orange.filled())
            }))
            .map_err(err)?;
        plot::legend(&mut chart, SeriesLabelPosition::UpperRight, 13)
    })
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
        let px = tomoflow_cryo::image::Rgb::from_png(&png).unwrap().px;
        let count = |c: [u8; 3]| px.chunks(3).filter(|p| p == &c).count();
        // the moving average (blue) and the validation markers (orange) are drawn
        assert!(
            count([31, 119, 180]) > 200,
            "blue {}",
            count([31, 119, 180])
        );
        assert!(
            count([255, 127, 14]) > 50,
            "orange {}",
            count([255, 127, 14])
        );
        // an empty history still draws the axes
        assert_eq!(&curves_png(&[]).unwrap()[1..4], b"PNG");
    }
}
