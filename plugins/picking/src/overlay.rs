//! `picks-overlay`: the central XY slice of a tomogram with the ground truth (white circles of
//! each particle's cross-section with the slice) and the picks (crosses in their class colour)
//! drawn on it, as a PNG — what a person looks at to judge a picker. `image-write` exports it.

use crate::plot::COLOURS;
use anyhow::{anyhow, Context, Result};
use schemars::JsonSchema;
use serde::Deserialize;
use std::path::PathBuf;
use tomoflow_cryo::image::{to_u8_robust, write_atomic, Rgb};
use tomoflow_cryo::particles::ParticleTable;
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
    let mut img = Rgb {
        w,
        h,
        px: (0..w * h)
            .flat_map(|i| {
                let g = gray[(i / w / k) * nx + (i % w) / k];
                [g, g, g]
            })
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
                [255, 255, 255],
            );
        }
    }
    let class_index = |id: u32| picks.classes.iter().position(|c| c.id == id).unwrap_or(0);
    for p in &picks.particles {
        let [x, y, pz] = picks.voxel_coords(p);
        let r = radius(picks, p.class_id).max(2.0);
        if (pz - z as f64).abs() < r {
            cross(
                &mut img,
                at(x),
                at(y),
                2 + k as i64,
                COLOURS[class_index(p.class_id) % COLOURS.len()],
            );
        }
    }
    img.png()
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
        let n = png.len();
        let mut meta = serde_json::Map::new();
        meta.insert(
            "image".into(),
            serde_json::json!({"width": nx, "height": ny, "z": z}),
        );
        ctx.emit(
            "image",
            Message {
                meta,
                tensors: vec![("png".into(), Tensor::from_vec(png, &[n]))],
            },
        )
    }
}

impl NodeDef for OverlayNode {
    type Params = OverlayParams;
    const NAME: &'static str = "picks-overlay";
    const DOC: &'static str = "A PNG of a tomogram slice (central XY by default) with the ground truth (white circles: each particle's cross-section with the slice) and the picks (crosses in their class colour) drawn on it. Export the `image` to `.png`.";
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
        let t = msg.tensor("png").map_err(|e| anyhow!("image: {e}"))?;
        self.png = Some(
            t.as_slice::<u8>()
                .map_err(|e| anyhow!("image: {e}"))?
                .to_vec(),
        );
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
