//! `picks-overlay`: the central XY slice of a tomogram with the ground truth (circles of each
//! particle's cross-section with the slice) and the picks (crosses), both in their class's
//! colour, and a legend band below naming the slice and the classes, as a PNG — what a person
//! looks at to judge a picker. `image-write` exports it.

use crate::plot::COLOURS;
use anyhow::{anyhow, Context, Result};
use schemars::JsonSchema;
use serde::Deserialize;
use std::path::PathBuf;
use tomoflow_cryo::image::{to_u8_robust, write_atomic, Rgb};
use tomoflow_cryo::particles::{ClassInfo, ParticleTable};
use tomoflow_cryo::plot::{self, plotters::prelude::*};
use tomoflow_sdk::prelude::*;
use tomoflow_sdk::volume::Assembler;

/// The outline of a circle.
fn circle(img: &mut Rgb, cx: f64, cy: f64, r: f64, c: [u8; 3]) {
    let n = ((2.0 * std::f64::consts::PI * r).ceil() as usize).max(8) * 2;
    for i in 0..n {
        let a = i as f64 / n as f64 * std::f64::consts::TAU;
        img.set(
            (cx + r * a.cos()).round() as i64,
            (cy + r * a.sin()).round() as i64,
            c,
        );
    }
}

/// A `+` of half-width `r`.
fn cross(img: &mut Rgb, cx: f64, cy: f64, r: i64, c: [u8; 3]) {
    let (x, y) = (cx.round() as i64, cy.round() as i64);
    for d in -r..=r {
        img.set(x + d, y, c);
        img.set(x, y + d, c);
    }
}

/// Draw `truth` and `picks` over slice `z` (voxel index) of a `(ny, nx)` grey image.
pub fn overlay(
    gray: &[u8],
    ny: usize,
    nx: usize,
    z: usize,
    truth: &ParticleTable,
    picks: &ParticleTable,
) -> Result<Vec<u8>> {
    // Small slices are enlarged (nearest neighbour) to at least 384 pixels on the long side.
    let k = (384 / nx.max(ny).max(1)).max(1);
    let (w, h) = (nx * k, ny * k);
    let mut legend_classes = picks.classes.clone();
    for c in &truth.classes {
        if !legend_classes.iter().any(|l| l.name == c.name) {
            legend_classes.push(c.clone());
        }
    }
    let legend = Legend::new(w, z, &legend_classes)?;
    let band = legend.rows * LEGEND_ROW;
    let mut img = Rgb {
        w,
        h: h + band,
        px: (0..w * h)
            .flat_map(|i| {
                let g = gray[(i / w / k) * nx + (i % w) / k];
                [g, g, g]
            })
            .chain(std::iter::repeat_n(32, w * band * 3))
            .collect(),
    };
    // Voxel (x, y) centre in image pixels.
    let at = |v: f64| (v + 0.5) * k as f64 - 0.5;
    let radius = |t: &ParticleTable, id: u32| {
        t.classes
            .iter()
            .find(|c| c.id == id)
            .map_or(0.0, |c| c.radius_a / t.tomogram.voxel_size[2])
    };
    // One colour per class name, in the legend's order (the picks' classes, then truth-only ones).
    let names: Vec<&str> = legend_classes.iter().map(|c| c.name.as_str()).collect();
    let colour_of =
        |name: &str| COLOURS[names.iter().position(|n| *n == name).unwrap_or(0) % COLOURS.len()];
    for p in &truth.particles {
        let [x, y, pz] = truth.voxel_coords(p);
        let r = radius(truth, p.class_id);
        let dz = pz - z as f64;
        if dz.abs() < r {
            circle(
                &mut img,
                at(x),
                at(y),
                (r * r - dz * dz).sqrt() * k as f64,
                colour_of(&p.class),
            );
        }
    }
    for p in &picks.particles {
        let [x, y, pz] = picks.voxel_coords(p);
        let r = radius(picks, p.class_id).max(2.0);
        if (pz - z as f64).abs() < r {
            cross(&mut img, at(x), at(y), 2 + k as i64, colour_of(&p.class));
        }
    }
    legend.draw(&mut img, h)?;
    img.png()
}

/// Height of one row of the legend band (dark grey) under the slice, in pixels.
const LEGEND_ROW: usize = 24;

/// What a legend item shows before its label.
#[derive(Clone, Copy)]
enum Mark {
    None,
    /// A class: its circle (truth) and cross (pick) in its colour.
    Class([u8; 3]),
}

/// The legend under the slice: the slice index, what the circles are, and each class's colour,
/// laid out left to right in as many rows as the image's width needs.
struct Legend {
    /// (mark, label, x, row) of each item.
    items: Vec<(Mark, String, i32, usize)>,
    rows: usize,
}

impl Legend {
    fn new(width: usize, z: usize, classes: &[ClassInfo]) -> Result<Legend> {
        let mut labels = vec![(
            Mark::None,
            format!("z = {z}; circles truth, crosses picks:"),
        )];
        labels.extend(
            classes
                .iter()
                .enumerate()
                .map(|(i, c)| (Mark::Class(COLOURS[i % COLOURS.len()]), c.name.clone())),
        );
        let (mut x, mut row, mut items) = (6i32, 0usize, Vec::new());
        for (mark, label) in labels {
            let mark_w = if matches!(mark, Mark::None) { 0 } else { 28 };
            let item_w = mark_w + plot::text_size(&label, 13.0)?.0 as i32;
            if x > 6 && x + item_w > width as i32 - 4 {
                (x, row) = (6, row + 1);
            }
            items.push((mark, label, x, row));
            x += item_w + 14;
        }
        Ok(Legend {
            items,
            rows: row + 1,
        })
    }

    fn draw(&self, img: &mut Rgb, top: usize) -> Result<()> {
        plot::draw_on(img, |a| {
            let font = (plot::FONT, 13).into_font().color(&WHITE);
            for (mark, label, x, row) in &self.items {
                let (x, y) = (*x, (top + row * LEGEND_ROW + LEGEND_ROW / 2) as i32);
                let text_x = match *mark {
                    Mark::None => x,
                    Mark::Class(c) => {
                        a.draw(&Circle::new((x + 5, y), 5, plot::colour(c)))
                            .map_err(plot::err)?;
                        let c = plot::colour(c).stroke_width(2);
                        a.draw(&PathElement::new([(x + 14, y), (x + 24, y)], c))
                            .map_err(plot::err)?;
                        a.draw(&PathElement::new([(x + 19, y - 5), (x + 19, y + 5)], c))
                            .map_err(plot::err)?;
                        x + 28
                    }
                };
                a.draw_text(label, &font, (text_x, y - 6))
                    .map_err(plot::err)?;
            }
            Ok(())
        })
    }
}

/// Parameters of `picks-overlay`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OverlayParams {
    /// Slice (z voxel index); default: the central one.
    #[serde(default)]
    pub z: Option<usize>,
}

/// `picks-overlay`.
pub struct OverlayNode {
    p: OverlayParams,
    tomo: Assembler<f32>,
    truth: Option<ParticleTable>,
    picks: Option<ParticleTable>,
}

impl Node for OverlayNode {
    fn process(&mut self, _ctx: &mut Ctx, input: usize, msg: Message) -> Result<()> {
        let table = || {
            ParticleTable::from_json(&serde_json::Value::Object(msg.meta.clone()))
                .context("expected a `particles` message")
        };
        match input {
            0 => self.tomo.add(&msg).context("tomogram")?,
            1 => self.picks = Some(table()?),
            _ => self.truth = Some(table()?),
        }
        Ok(())
    }
    fn finish(&mut self, ctx: &mut Ctx) -> Result<()> {
        let vol = std::mem::take(&mut self.tomo)
            .finish()
            .context("tomogram")?;
        let [nz, ny, nx] = vol.shape;
        let z = self.p.z.unwrap_or(nz / 2);
        if z >= nz {
            anyhow::bail!("z = {z} is outside the tomogram (0..{nz})");
        }
        let gray = to_u8_robust(&vol.data[z * ny * nx..(z + 1) * ny * nx]);
        let picks = self
            .picks
            .take()
            .ok_or_else(|| anyhow!("no picks received"))?;
        let truth = self
            .truth
            .take()
            .ok_or_else(|| anyhow!("no ground truth received"))?;
        let png = overlay(&gray, ny, nx, z, &truth, &picks)?;
        ctx.emit(
            "image",
            image::image_message(png, nx, ny, serde_json::json!({"z": z})),
        )
    }
}

impl NodeDef for OverlayNode {
    type Params = OverlayParams;
    const NAME: &'static str = "picks-overlay";
    const DOC: &'static str = "A PNG of a tomogram slice (central XY by default) with the ground truth (circles: each particle's cross-section with the slice) and the picks (crosses) drawn on it, both in their class's colour, with a legend. Export the `image` to `.png`.";
    const INPUTS: &'static [Port] = &[
        port("tomogram", "volume", "the tomogram the picks are in"),
        port("picks", "particles", "picks"),
        port("truth", "particles", "ground truth"),
    ];
    const OUTPUTS: &'static [Port] = &[port("image", "image", "PNG bytes (tensor `png`)")];
    fn create(p: OverlayParams, _info: &NodeInfo) -> Result<Self> {
        Ok(OverlayNode {
            p,
            tomo: Assembler::new(),
            truth: None,
            picks: None,
        })
    }
}

/// Parameters of `image-write`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageWriteParams {
    /// Target file (filled in by the engine from the workflow's `exports:`).
    pub path: String,
}

/// `image-write`.
pub struct ImageWriteNode {
    path: PathBuf,
    png: Option<Vec<u8>>,
}

impl Node for ImageWriteNode {
    fn process(&mut self, _ctx: &mut Ctx, _input: usize, msg: Message) -> Result<()> {
        self.png = Some(image::image_png(&msg)?.to_vec());
        Ok(())
    }
    fn finish(&mut self, _ctx: &mut Ctx) -> Result<()> {
        let png = self
            .png
            .take()
            .ok_or_else(|| anyhow!("no image received"))?;
        write_atomic(&self.path, &png)
    }
}

impl NodeDef for ImageWriteNode {
    type Params = ImageWriteParams;
    const NAME: &'static str = "image-write";
    const DOC: &'static str = "Export an `image` (PNG bytes) to a `.png` file.";
    const INPUTS: &'static [Port] = &[port("image", "image", "image to write")];
    const OUTPUTS: &'static [Port] = &[];
    const EXPORT_EXTENSIONS: &'static [&'static str] = &["png"];
    fn create(p: ImageWriteParams, info: &NodeInfo) -> Result<Self> {
        Ok(ImageWriteNode {
            path: info.resolve(&p.path),
            png: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tomoflow_cryo::particles::{Particle, TomogramInfo};

    fn table(x: f64, score: f64) -> ParticleTable {
        ParticleTable {
            tomogram: TomogramInfo {
                name: "t".into(),
                shape: [8, 32, 32],
                voxel_size: [10.0; 3],
                origin: [0.0; 3],
            },
            classes: vec![ClassInfo {
                id: 1,
                name: "ribosome".into(),
                radius_a: 60.0,
            }],
            particles: vec![Particle {
                class: "ribosome".into(),
                class_id: 1,
                x,
                y: 160.0,
                z: 40.0,
                rot: 0.0,
                tilt: 0.0,
                psi: 0.0,
                q: [1.0, 0.0, 0.0, 0.0],
                instance: 1,
                score,
            }],
        }
    }

    #[test]
    fn truth_picks_and_legend_are_drawn() {
        let gray = vec![128u8; 32 * 32];
        let png = overlay(&gray, 32, 32, 4, &table(160.0, 1.0), &table(100.0, 0.9)).unwrap();
        let Rgb { w, h, px } = Rgb::from_png(&png).unwrap();
        // 32 voxels enlarged 12 times, plus the legend band (one row: it fits)
        assert_eq!((w, h), (384, 384 + LEGEND_ROW));
        let slice = &px[..384 * 384 * 3];
        let band = &px[384 * 384 * 3..];
        let count = |b: &[u8], c: [u8; 3]| b.chunks(3).filter(|p| p == &c).count();
        // the truth circle and the pick cross, both in the class's colour, in the slice
        assert!(count(slice, COLOURS[0]) > 100);
        assert_eq!(
            count(slice, [255; 3]),
            0,
            "nothing white: truth is coloured by class"
        );
        // the legend: white (anti-aliased) text and the class colour on the dark band
        let bright = band
            .chunks(3)
            .filter(|p| p.iter().all(|&v| v > 180))
            .count();
        assert!(bright > 50, "{bright} bright pixels in the legend");
        assert!(count(band, COLOURS[0]) > 5);
        // on a narrow slice the legend wraps into more rows instead of being cut off
        let many: Vec<ClassInfo> = (0..6)
            .map(|i| ClassInfo {
                id: i + 1,
                name: format!("virus-like-particle-{i}"),
                radius_a: 60.0,
            })
            .collect();
        let narrow = Legend::new(380, 16, &many).unwrap();
        assert!(narrow.rows >= 3, "{} rows", narrow.rows);
        for (_, label, x, _) in &narrow.items {
            let w = plot::text_size(label, 13.0).unwrap().0 as i32;
            assert!(x + w <= 380, "{label} ends at {}", x + w);
        }
    }
}
