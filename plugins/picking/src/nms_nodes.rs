//! `pick-nms` and `pick-nms-tuned`: peaks of probability maps with greedy spherical NMS.

use crate::nms::{NmsOptions, Picker};
use crate::probmap;
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use tomoflow_cryo::particles::{ClassInfo, Particle, ParticleTable, TomogramInfo};
use tomoflow_sdk::prelude::*;

type Meta = serde_json::Map<String, serde_json::Value>;

pub(crate) fn half() -> f64 {
    0.5
}
pub(crate) fn default_threshold() -> f32 {
    0.5
}
pub(crate) fn one_usize() -> usize {
    1
}
fn yes() -> bool {
    true
}

/// Parameters of `pick-nms` and `pick-nms-tuned`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NmsParams {
    /// Score threshold of every class (the detection floor).
    #[serde(default = "default_threshold")]
    pub threshold: f32,
    /// Per-class thresholds by class name (override `threshold` and the model's).
    #[serde(default)]
    pub thresholds: BTreeMap<String, f32>,
    /// Use the per-class thresholds that a calibrated model passes on with its probability
    /// maps (`model-calibrate`) for the classes `thresholds` does not name; `false`: use
    /// `threshold` for them.
    #[serde(default = "yes")]
    pub model_thresholds: bool,
    /// Local-maximum neighbourhood: half-width `floor(radius_fraction x r / voxel)` voxels.
    #[serde(default = "half")]
    pub radius_fraction: f64,
    /// Two picks cannot be closer than `nms_fraction x (r_i + r_j)` Å.
    #[serde(default = "half")]
    pub nms_fraction: f64,
    /// Gaussian smoothing sigma in Å before detection (default: none).
    #[serde(default, rename = "smooth_A")]
    pub smooth_a: Option<f64>,
    /// Minimum supporting volume: voxels within `radius_fraction x r` of the peak at or above
    /// the threshold.
    #[serde(default = "one_usize")]
    pub min_voxels: usize,
    /// Class radii in Å by name (override the map's `radius_A`).
    #[serde(default)]
    pub radii: BTreeMap<String, f64>,
    /// Place each pick at the probability-weighted centroid of its supporting voxels (within
    /// `radius_fraction x r` of the peak, at or above the threshold) instead of the peak voxel:
    /// a network trained on balls gives each particle a plateau whose maximum can lie anywhere
    /// on it.
    #[serde(default)]
    pub centroid: bool,
}

fn check_nms(p: &NmsParams) -> Result<()> {
    if !(p.radius_fraction >= 0.0 && p.nms_fraction >= 0.0) {
        bail!("pick-nms: radius_fraction and nms_fraction must be >= 0");
    }
    if let Some(s) = p.smooth_a {
        if !(s >= 0.0 && s.is_finite()) {
            bail!("pick-nms: smooth_A must be >= 0 Å");
        }
    }
    Ok(())
}

/// Turn picks into a particle table message (positions in Å and voxels).
fn picks_message(picks: &crate::nms::Picks, method: &str) -> Result<Message> {
    let classes: Vec<ClassInfo> = picks
        .classes
        .iter()
        .map(|c| ClassInfo {
            id: c.id,
            name: c.name.clone(),
            radius_a: c.radius_a,
        })
        .collect();
    let particles: Vec<Particle> = picks
        .picks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let v = c.centre;
            let cl = &picks.classes[c.class];
            Particle {
                class: cl.name.clone(),
                class_id: cl.id,
                x: picks.origin[2] + v[2] * picks.voxel[2],
                y: picks.origin[1] + v[1] * picks.voxel[1],
                z: picks.origin[0] + v[0] * picks.voxel[0],
                rot: 0.0,
                tilt: 0.0,
                psi: 0.0,
                q: [1.0, 0.0, 0.0, 0.0],
                instance: i as u32 + 1,
                score: c.score as f64,
            }
        })
        .collect();
    let table = ParticleTable {
        tomogram: TomogramInfo {
            name: picks.tomogram.clone(),
            shape: picks.shape,
            voxel_size: picks.voxel,
            origin: picks.origin,
        },
        classes,
        particles,
    };
    let mut v = serde_json::to_value(&table)?;
    if let Some(arr) = v["particles"].as_array_mut() {
        for (p, c) in arr.iter_mut().zip(&picks.picks) {
            p["voxel"] = serde_json::json!(c.centre.map(|v| v.round() as i64));
            p["support"] = serde_json::json!(c.support);
        }
    }
    v["report"] = serde_json::json!({"method": method, "candidates": picks.candidates, "picks": picks.picks.len()});
    Ok(Message::json(v))
}

/// Per-class thresholds from a `metrics` message: `{"thresholds": {name: t}}` (what
/// `evaluate` emits on its `thresholds` port).
pub(crate) fn parse_thresholds(meta: &Meta) -> Result<BTreeMap<String, f32>> {
    let t = meta.get("thresholds").ok_or_else(|| {
        anyhow!(
            "thresholds input: message has no `thresholds` object (connect evaluate.thresholds)"
        )
    })?;
    let m: BTreeMap<String, Option<f32>> =
        serde_json::from_value(t.clone()).map_err(|e| anyhow!("thresholds input: {e}"))?;
    Ok(m.into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect())
}

/// Shared state of `pick-nms` and `pick-nms-tuned`.
pub struct NmsCore {
    p: NmsParams,
    pickers: BTreeMap<String, Picker>,
    tuned: Option<BTreeMap<String, f32>>,
    /// Detection floor per class name, as chosen for the first map.
    floors: BTreeMap<String, f32>,
}

impl NmsCore {
    fn new(p: NmsParams) -> NmsCore {
        NmsCore {
            p,
            pickers: BTreeMap::new(),
            tuned: None,
            floors: BTreeMap::new(),
        }
    }
    fn chunk(&mut self, ctx: &mut Ctx, msg: Message) -> Result<()> {
        let (mut h, data) = probmap::parse_prob(&msg)?;
        for c in h.classes.iter_mut() {
            if let Some(r) = self.p.radii.get(&c.name) {
                c.radius_a = *r;
            }
        }
        if !self.pickers.contains_key(&h.tomogram) {
            let model: BTreeMap<String, f32> = match msg.meta.get("thresholds") {
                Some(t) if self.p.model_thresholds => serde_json::from_value(t.clone())
                    .map_err(|e| anyhow!("the probability maps' `thresholds`: {e}"))?,
                _ => BTreeMap::new(),
            };
            if !model.is_empty() {
                ctx.info(format!("pick-nms: the model's thresholds {model:?}"));
            }
            let floors: Vec<f32> = h
                .classes
                .iter()
                .map(|c| {
                    self.p
                        .thresholds
                        .get(&c.name)
                        .or_else(|| model.get(&c.name))
                        .copied()
                        .unwrap_or(self.p.threshold)
                })
                .collect();
            self.floors
                .extend(h.classes.iter().map(|c| c.name.clone()).zip(floors.clone()));
            let opts = NmsOptions {
                radius_fraction: self.p.radius_fraction,
                nms_fraction: self.p.nms_fraction,
                smooth_a: self.p.smooth_a,
                min_voxels: self.p.min_voxels,
                floors,
                centroid: self.p.centroid,
            };
            let pk = Picker::new(&h, opts)?;
            ctx.debug(format!(
                "pick-nms: {} classes, halo {} planes",
                h.classes.len(),
                pk.halo()
            ));
            self.pickers.insert(h.tomogram.clone(), pk);
        }
        let pk = self.pickers.get_mut(&h.tomogram).expect("picker");
        let c: &Ctx = ctx;
        let par = |n: usize, f: &(dyn Fn(usize) + Sync)| c.parallel_for(n, f);
        pk.push(&h, data, &par)?;
        ctx.check_cancelled()
    }
    fn finish(&mut self, ctx: &mut Ctx) -> Result<()> {
        if self.pickers.is_empty() {
            bail!("pick-nms: no probability map arrived");
        }
        for (_, pk) in std::mem::take(&mut self.pickers) {
            let th: Option<Vec<f32>> = match &self.tuned {
                None => None,
                Some(t) => {
                    let mut v = Vec::new();
                    for c in pk.classes() {
                        let floor = self
                            .floors
                            .get(&c.name)
                            .copied()
                            .unwrap_or(self.p.threshold);
                        let x = t.get(&c.name).copied().unwrap_or(floor);
                        if x < floor {
                            ctx.warn(format!("pick-nms: tuned threshold {x} of {} is below the detection floor {floor}: peaks between them are missing; lower `threshold`", c.name));
                        }
                        v.push(x);
                    }
                    Some(v)
                }
            };
            let picks = pk.finish(th.as_deref())?;
            ctx.info(format!(
                "pick-nms: {}: {} picks from {} candidates",
                picks.tomogram,
                picks.picks.len(),
                picks.candidates
            ));
            ctx.emit("particles", picks_message(&picks, "nms")?)?;
        }
        Ok(())
    }
}

/// `pick-nms`: peaks of probability maps with greedy spherical NMS.
pub struct PickNmsNode(NmsCore);

const NMS_DOC: &str = "Pick particles from per-class probability maps: optional Gaussian smoothing (`smooth_A`), local maxima in a box of half-width floor(radius_fraction x r / voxel) per class, \
    per-class thresholds, a minimum supporting volume, and greedy spherical NMS by score across classes (no two picks closer than nms_fraction x (r_i + r_j)). \
    Streams over z-slabs, buffering only the planes within the halo (k_z + smoothing radius); the picks equal those of the whole volume. \
    Output: a particle table (x/y/z in Å at voxel centres, or with `centroid` at the probability-weighted centroid of the supporting voxels; plus `voxel` [z, y, x] and `support`), score = probability.";

impl Node for PickNmsNode {
    fn process(&mut self, ctx: &mut Ctx, _input: usize, msg: Message) -> Result<()> {
        self.0.chunk(ctx, msg)
    }
    fn finish(&mut self, ctx: &mut Ctx) -> Result<()> {
        self.0.finish(ctx)
    }
}

impl NodeDef for PickNmsNode {
    type Params = NmsParams;
    const NAME: &'static str = "pick-nms";
    const DOC: &'static str = NMS_DOC;
    const INPUTS: &'static [Port] = &[port(
        "probabilities",
        "probabilities",
        "per-class probability maps",
    )];
    const OUTPUTS: &'static [Port] = &[port(
        "particles",
        "particles",
        "picks, one table per tomogram",
    )];
    fn check(p: &NmsParams) -> Result<()> {
        check_nms(p)
    }
    fn create(p: NmsParams, _info: &NodeInfo) -> Result<Self> {
        Ok(PickNmsNode(NmsCore::new(p)))
    }
}

/// `pick-nms-tuned`: `pick-nms` with per-class thresholds from a `metrics` input.
pub struct PickNmsTunedNode(NmsCore);

impl Node for PickNmsTunedNode {
    fn process(&mut self, ctx: &mut Ctx, input: usize, msg: Message) -> Result<()> {
        if input == 1 {
            let t = parse_thresholds(&msg.meta)?;
            self.0.tuned.get_or_insert_with(BTreeMap::new).extend(t);
            Ok(())
        } else {
            self.0.chunk(ctx, msg)
        }
    }
    fn finish(&mut self, ctx: &mut Ctx) -> Result<()> {
        if self.0.tuned.is_none() {
            bail!("pick-nms-tuned: no thresholds message arrived");
        }
        self.0.finish(ctx)
    }
}

impl NodeDef for PickNmsTunedNode {
    type Params = NmsParams;
    const NAME: &'static str = "pick-nms-tuned";
    const DOC: &'static str = "pick-nms with per-class score thresholds from a `metrics` input (evaluate's `thresholds` port, tuned on a validation set).\n\n\
        Peaks are detected down to `threshold`/`thresholds` (the floor) and the tuned thresholds applied before the suppression; classes the input does not list keep the floor.";
    const INPUTS: &'static [Port] = &[
        port(
            "probabilities",
            "probabilities",
            "per-class probability maps",
        ),
        port(
            "thresholds",
            "metrics",
            "per-class thresholds: {\"thresholds\": {class: t}}",
        ),
    ];
    const OUTPUTS: &'static [Port] = &[port(
        "particles",
        "particles",
        "picks, one table per tomogram",
    )];
    fn check(p: &NmsParams) -> Result<()> {
        check_nms(p)
    }
    fn create(p: NmsParams, _info: &NodeInfo) -> Result<Self> {
        Ok(PickNmsTunedNode(NmsCore::new(p)))
    }
}
