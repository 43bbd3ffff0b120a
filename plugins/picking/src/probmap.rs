//! The `probabilities` data kind: per-class probability maps streamed as z-slab chunks.
//!
//! A message carries `meta.chunk` (a [`ChunkMeta`], triples (z, y, x)), `meta.classes` (the
//! foreground classes, in channel order: `{id, name, radius_A}`), `meta.tomogram` (the
//! tomogram's name) and one tensor `data`, f32 of shape `[K, z, y, x]` with `K` =
//! `classes.len()` and `(z, y, x)` = `chunk.shape`: channel `k` is the probability of class
//! `classes[k]` (background is not sent). Class-major layout keeps each class's block contiguous,
//! which is what per-class peak detection reads.
//!
//! This module also renders synthetic maps from ground truth ([`render_blobs`]) so that pickers
//! can be tested without a trained network.

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};
use tomoflow_cryo::particles::ParticleTable;
use tomoflow_sdk::volume::ChunkMeta;
use tomoflow_sdk::{Message, Tensor};

/// A class of a probability map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbClass {
    /// Class number (label value, RELION `rlnClassNumber`).
    pub id: u32,
    /// Class name.
    pub name: String,
    /// Particle radius in Å.
    #[serde(rename = "radius_A", alias = "radius_a")]
    pub radius_a: f64,
}

/// Everything about a probability chunk except its voxels.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbHeader {
    /// Chunk geometry.
    pub chunk: ChunkMeta,
    /// Classes in channel order.
    pub classes: Vec<ProbClass>,
    /// Tomogram name.
    pub tomogram: String,
}

/// Build a `probabilities` message; `data` is `[K, z, y, x]` for the chunk's block.
pub fn prob_message(h: &ProbHeader, data: Vec<f32>) -> Message {
    let k = h.classes.len();
    let [z, y, x] = h.chunk.shape;
    assert_eq!(data.len(), k * z * y * x, "probability data size");
    let mut m = serde_json::Map::new();
    m.insert(
        "chunk".into(),
        serde_json::to_value(&h.chunk).expect("serialisable"),
    );
    m.insert(
        "classes".into(),
        serde_json::to_value(&h.classes).expect("serialisable"),
    );
    m.insert(
        "tomogram".into(),
        serde_json::Value::String(h.tomogram.clone()),
    );
    Message {
        meta: m,
        tensors: vec![("data".into(), Tensor::from_vec(data, &[k, z, y, x]))],
    }
}

/// Parse a `probabilities` message, checking that the tensor matches the geometry.
pub fn parse_prob(msg: &Message) -> Result<(ProbHeader, &[f32])> {
    let chunk = ChunkMeta::from_message(msg).map_err(|e| anyhow!("probabilities: {e}"))?;
    let classes: Vec<ProbClass> = serde_json::from_value(
        msg.meta
            .get("classes")
            .cloned()
            .ok_or_else(|| anyhow!("probabilities: message has no `classes` list"))?,
    )
    .map_err(|e| anyhow!("probabilities: bad `classes`: {e}"))?;
    if classes.is_empty() {
        bail!("probabilities: `classes` is empty");
    }
    let tomogram = msg
        .meta
        .get("tomogram")
        .and_then(|v| v.as_str())
        .unwrap_or("tomogram")
        .to_string();
    let t = msg
        .tensor("data")
        .map_err(|e| anyhow!("probabilities: {e}"))?;
    let data = t
        .as_slice::<f32>()
        .map_err(|e| anyhow!("probabilities: tensor `data` must be f32: {e}"))?;
    let want = classes.len() * chunk.len();
    if data.len() != want {
        bail!(
            "probabilities: tensor `data` has {} values but {} classes x block {:?} need {}",
            data.len(),
            classes.len(),
            chunk.shape,
            want
        );
    }
    Ok((
        ProbHeader {
            chunk,
            classes,
            tomogram,
        },
        data,
    ))
}

/// Deterministic uniform noise in [0, 1) for (seed, class, global voxel index): independent of
/// how the volume is chunked.
pub fn hash_noise(seed: u64, class: usize, index: u64) -> f32 {
    let mut z = seed
        ^ (class as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 40) as f32 / (1u64 << 24) as f32
}

/// Options of [`render_blobs`].
#[derive(Debug, Clone)]
pub struct BlobOptions {
    /// Gaussian sigma as a fraction of the class radius.
    pub sigma_fraction: f64,
    /// Peak value of a blob.
    pub peak: f32,
    /// Amplitude of additive uniform noise (0 = clean).
    pub noise: f32,
    /// Seed of the noise.
    pub seed: u64,
}

/// Render the block of chunk `chunk` for `classes`: channel `k` is the maximum over the
/// particles of class `classes[k]` of `peak × exp(−d² / (2σ²))`, σ = `sigma_fraction × radius`
/// (cut at 4σ), plus `noise × u` with `u` uniform in [0, 1), clamped to [0, 1]. `[K, z, y, x]`.
pub fn render_blobs(
    table: &ParticleTable,
    classes: &[ProbClass],
    chunk: &ChunkMeta,
    o: &BlobOptions,
) -> Vec<f32> {
    let [bz, by, bx] = chunk.shape;
    let n = bz * by * bx;
    let mut out = vec![0f32; classes.len() * n];
    let vs = chunk.voxel_size;
    let org = chunk.origin;
    for (k, c) in classes.iter().enumerate() {
        let sigma = o.sigma_fraction * c.radius_a;
        let cut = 4.0 * sigma;
        let inv = 1.0 / (2.0 * sigma * sigma);
        let ch = &mut out[k * n..(k + 1) * n];
        for p in table.particles.iter().filter(|p| p.class == c.name) {
            let pos = [p.z, p.y, p.x];
            let mut lo = [0usize; 3];
            let mut hi = [0usize; 3];
            let mut empty = false;
            for a in 0..3 {
                let v = (pos[a] - org[a]) / vs[a];
                let l = ((pos[a] - cut - org[a]) / vs[a])
                    .ceil()
                    .max(chunk.offset[a] as f64);
                let h = ((pos[a] + cut - org[a]) / vs[a])
                    .floor()
                    .min((chunk.offset[a] + chunk.shape[a]) as f64 - 1.0);
                let _ = v;
                if h < l {
                    empty = true;
                    break;
                }
                lo[a] = l as usize;
                hi[a] = h as usize;
            }
            if empty {
                continue;
            }
            for z in lo[0]..=hi[0] {
                let dz = org[0] + z as f64 * vs[0] - pos[0];
                for y in lo[1]..=hi[1] {
                    let dy = org[1] + y as f64 * vs[1] - pos[1];
                    let row = ((z - chunk.offset[0]) * by + (y - chunk.offset[1])) * bx;
                    for x in lo[2]..=hi[2] {
                        let dx = org[2] + x as f64 * vs[2] - pos[2];
                        let d2 = dz * dz + dy * dy + dx * dx;
                        if d2 <= cut * cut {
                            let v = o.peak * (-d2 * inv).exp() as f32;
                            let cell = &mut ch[row + x - chunk.offset[2]];
                            if v > *cell {
                                *cell = v;
                            }
                        }
                    }
                }
            }
        }
        if o.noise > 0.0 {
            let [fz, fy, fx] = chunk.full_shape;
            let _ = fz;
            for z in 0..bz {
                for y in 0..by {
                    for x in 0..bx {
                        let g = (((chunk.offset[0] + z) * fy + chunk.offset[1] + y) * fx
                            + chunk.offset[2]
                            + x) as u64;
                        let i = (z * by + y) * bx + x;
                        ch[i] = (ch[i] + o.noise * hash_noise(o.seed, k, g)).clamp(0.0, 1.0);
                    }
                }
            }
        }
    }
    out
}

/// One-hot maps of a class label block: channel `k` is 1 where the label equals
/// `classes[k].id`, else 0 (plus noise as in [`render_blobs`]).
pub fn render_masks(
    labels: &[u32],
    classes: &[ProbClass],
    chunk: &ChunkMeta,
    noise: f32,
    seed: u64,
) -> Vec<f32> {
    let n = labels.len();
    let mut out = vec![0f32; classes.len() * n];
    let [_, by, bx] = chunk.shape;
    let [_, fy, fx] = chunk.full_shape;
    for (k, c) in classes.iter().enumerate() {
        let ch = &mut out[k * n..(k + 1) * n];
        for (i, (&l, v)) in labels.iter().zip(ch.iter_mut()).enumerate() {
            let mut p = if l == c.id { 1.0 } else { 0.0 };
            if noise > 0.0 {
                let (z, y, x) = (i / (by * bx), (i / bx) % by, i % bx);
                let g = (((chunk.offset[0] + z) * fy + chunk.offset[1] + y) * fx
                    + chunk.offset[2]
                    + x) as u64;
                p = (p * (1.0 - noise) + noise * hash_noise(seed, k, g)).clamp(0.0, 1.0);
            }
            *v = p;
        }
    }
    out
}
