//! The node types of the picking plugin (thin wrappers around the pure modules).

use crate::components::Components;
use crate::metrics::{self, EvalConfig, InstanceMap, Mode, Normalise, Pt, Tomo, CZII_CLASSES};
use crate::probmap::{self, BlobOptions, ProbClass, ProbHeader};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tomoflow_cryo::image::write_atomic;
use tomoflow_cryo::particles::{ClassInfo, Particle, ParticleTable, TomogramInfo};
use tomoflow_sdk::prelude::*;
use tomoflow_sdk::volume::ChunkMeta;

type Meta = serde_json::Map<String, serde_json::Value>;

/// Class labels of a `labels` chunk as u32, whatever the stored integer type.
fn labels_u32(msg: &Message) -> Result<(ChunkMeta, Vec<u32>)> {
    let meta = ChunkMeta::from_message(msg).map_err(anyhow::Error::msg)?;
    let t = msg.tensor("data").map_err(anyhow::Error::msg)?;
    let v: Vec<u32> = match t.dtype() {
        DType::U8 => t
            .as_slice::<u8>()
            .map_err(anyhow::Error::msg)?
            .iter()
            .map(|&v| v as u32)
            .collect(),
        DType::U16 => t
            .as_slice::<u16>()
            .map_err(anyhow::Error::msg)?
            .iter()
            .map(|&v| v as u32)
            .collect(),
        DType::U32 => t.as_slice::<u32>().map_err(anyhow::Error::msg)?.to_vec(),
        d => bail!("labels must be u8, u16 or u32, not {}", d.name()),
    };
    if v.len() != meta.len() {
        bail!(
            "labels chunk has {} voxels but its geometry says {:?}",
            v.len(),
            meta.shape
        );
    }
    Ok((meta, v))
}

fn table_from(meta: &Meta, what: &str) -> Result<ParticleTable> {
    ParticleTable::from_json(&serde_json::Value::Object(meta.clone()))
        .with_context(|| format!("{what}: expected a `particles` message"))
}

// ---------------------------------------------------------------------------------------------
// labels-to-probabilities

fn quarter() -> f64 {
    0.25
}
fn one_f32() -> f32 {
    1.0
}

/// How `labels-to-probabilities` renders.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RenderMode {
    /// A Gaussian blob at each particle of the table (what a well-trained centre-heatmap
    /// network outputs).
    #[default]
    Blobs,
    /// The one-hot class label map (what a segmentation network outputs).
    Masks,
}

/// Parameters of `labels-to-probabilities`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct L2pParams {
    /// `blobs` (default) or `masks`.
    #[serde(default)]
    pub mode: RenderMode,
    /// Blob sigma as a fraction of the class radius.
    #[serde(default = "quarter")]
    pub sigma_fraction: f64,
    /// Blob peak value.
    #[serde(default = "one_f32")]
    pub peak: f32,
    /// Amplitude of uniform noise added (from the node's seed; 0 = clean).
    #[serde(default)]
    pub noise: f32,
    /// Classes to render, in channel order (default: every class of the table with particles).
    #[serde(default)]
    pub classes: Option<Vec<String>>,
}

/// `labels-to-probabilities`: synthetic per-class probability maps from ground truth.
pub struct LabelsToProbabilitiesNode {
    p: L2pParams,
    seed: u64,
    table: Option<ParticleTable>,
    pending: Vec<Message>,
}

impl LabelsToProbabilitiesNode {
    fn render(&self, ctx: &mut Ctx, msg: &Message) -> Result<()> {
        let t = self.table.as_ref().expect("table present");
        let (chunk, labels) = labels_u32(msg)?;
        if chunk.full_shape != t.tomogram.shape {
            bail!(
                "labels-to-probabilities: the label map's shape {:?} differs from the particle table's tomogram {:?}",
                chunk.full_shape,
                t.tomogram.shape
            );
        }
        let names: Vec<String> = match &self.p.classes {
            Some(c) => c.clone(),
            None => t
                .classes
                .iter()
                .filter(|c| t.particles.iter().any(|p| p.class == c.name))
                .map(|c| c.name.clone())
                .collect(),
        };
        let mut classes = Vec::new();
        for n in &names {
            let c = t.classes.iter().find(|c| &c.name == n).ok_or_else(|| {
                anyhow!(
                    "labels-to-probabilities: no class {n:?} in the particle table ({})",
                    t.classes
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            classes.push(ProbClass {
                id: c.id,
                name: c.name.clone(),
                radius_a: c.radius_a,
            });
        }
        if classes.is_empty() {
            bail!("labels-to-probabilities: no class to render (the table has no particles)");
        }
        // the output chunk is the core of the input chunk
        let core = ChunkMeta {
            offset: chunk.core_offset,
            shape: chunk.core_shape,
            ..chunk.clone()
        };
        let core_labels = tomoflow_core(&chunk, &labels);
        let data = match self.p.mode {
            RenderMode::Blobs => probmap::render_blobs(
                t,
                &classes,
                &core,
                &BlobOptions {
                    sigma_fraction: self.p.sigma_fraction,
                    peak: self.p.peak,
                    noise: self.p.noise,
                    seed: self.seed,
                },
            ),
            RenderMode::Masks => {
                probmap::render_masks(&core_labels, &classes, &core, self.p.noise, self.seed)
            }
        };
        let h = ProbHeader {
            chunk: core,
            classes,
            tomogram: t.tomogram.name.clone(),
        };
        ctx.emit("probabilities", probmap::prob_message(&h, data))
    }
}

/// The core voxels of a chunk.
fn tomoflow_core<T: Copy>(meta: &ChunkMeta, data: &[T]) -> Vec<T> {
    let [_, by, bx] = meta.shape;
    let mut out = Vec::with_capacity(meta.core_shape.iter().product());
    for z in 0..meta.core_shape[0] {
        for y in 0..meta.core_shape[1] {
            let lz = meta.core_offset[0] - meta.offset[0] + z;
            let ly = meta.core_offset[1] - meta.offset[1] + y;
            let lx = meta.core_offset[2] - meta.offset[2];
            let s = (lz * by + ly) * bx + lx;
            out.extend_from_slice(&data[s..s + meta.core_shape[2]]);
        }
    }
    out
}

impl Node for LabelsToProbabilitiesNode {
    fn process(&mut self, ctx: &mut Ctx, input: usize, msg: Message) -> Result<()> {
        if input == 0 {
            if self.table.is_some() {
                bail!("labels-to-probabilities: more than one particle table arrived");
            }
            self.table = Some(table_from(&msg.meta, "labels-to-probabilities")?);
            for m in std::mem::take(&mut self.pending) {
                self.render(ctx, &m)?;
            }
            Ok(())
        } else if self.table.is_some() {
            self.render(ctx, &msg)
        } else {
            self.pending.push(msg);
            Ok(())
        }
    }
    fn finish(&mut self, ctx: &mut Ctx) -> Result<()> {
        if self.table.is_none() {
            bail!("labels-to-probabilities: no particle table arrived");
        }
        if !self.pending.is_empty() {
            for m in std::mem::take(&mut self.pending) {
                self.render(ctx, &m)?;
            }
        }
        Ok(())
    }
}

impl NodeDef for LabelsToProbabilitiesNode {
    type Params = L2pParams;
    const NAME: &'static str = "labels-to-probabilities";
    const DOC: &'static str = "Synthetic per-class probability maps from ground truth, to test pickers without a network.\n\n\
        `mode: blobs` (default): a Gaussian of sigma `sigma_fraction` x class radius and height `peak` at each particle of the table (max where blobs overlap); \
        `mode: masks`: the one-hot class label map. Optional uniform noise of amplitude `noise` (seeded; independent of chunking), clamped to [0, 1]. \
        Streams: one output chunk per label chunk (its core).";
    const INPUTS: &'static [Port] = &[
        port(
            "particles",
            "particles",
            "ground-truth particle table (classes, positions, radii)",
        ),
        port(
            "labels",
            "labels",
            "class label map: gives the geometry and chunking (and the masks)",
        ),
    ];
    const OUTPUTS: &'static [Port] = &[port(
        "probabilities",
        "probabilities",
        "per-class probability maps [K, z, y, x] per z-slab",
    )];
    fn check(p: &L2pParams) -> Result<()> {
        if p.sigma_fraction.is_nan() || p.sigma_fraction <= 0.0 {
            bail!("labels-to-probabilities: sigma_fraction must be > 0");
        }
        if !(0.0..=1.0).contains(&p.noise) {
            bail!("labels-to-probabilities: noise must lie in [0, 1]");
        }
        Ok(())
    }
    fn create(p: L2pParams, info: &NodeInfo) -> Result<Self> {
        Ok(LabelsToProbabilitiesNode {
            p,
            seed: info.seed,
            table: None,
            pending: Vec::new(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// pick-components

/// Parameters of `pick-components`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ComponentsParams {
    /// Threshold of every class on the argmax class's probability.
    #[serde(default = "crate::nms_nodes::default_threshold")]
    pub threshold: f32,
    /// Per-class thresholds by name.
    #[serde(default)]
    pub thresholds: BTreeMap<String, f32>,
    /// Components with fewer voxels are dropped.
    #[serde(default = "crate::nms_nodes::one_usize")]
    pub min_voxels: usize,
}

struct CompState {
    h: ProbHeader,
    planes: BTreeMap<usize, Vec<f32>>,
    next: usize,
    cc: Components,
}

/// `pick-components`: connected components of the argmax map.
pub struct PickComponentsNode {
    p: ComponentsParams,
    tomos: BTreeMap<String, CompState>,
}

impl Node for PickComponentsNode {
    fn process(&mut self, ctx: &mut Ctx, _input: usize, msg: Message) -> Result<()> {
        let (h, data) = probmap::parse_prob(&msg)?;
        let st = self.tomos.entry(h.tomogram.clone()).or_insert_with(|| {
            let th = h
                .classes
                .iter()
                .map(|c| {
                    self.p
                        .thresholds
                        .get(&c.name)
                        .copied()
                        .unwrap_or(self.p.threshold)
                })
                .collect();
            CompState {
                h: h.clone(),
                planes: BTreeMap::new(),
                next: 0,
                cc: Components::new(
                    h.chunk.full_shape[1],
                    h.chunk.full_shape[2],
                    th,
                    self.p.min_voxels,
                ),
            }
        });
        if st.h.classes != h.classes || st.h.chunk.full_shape != h.chunk.full_shape {
            bail!(
                "pick-components: chunks of tomogram {:?} disagree on classes or shape",
                h.tomogram
            );
        }
        let c = &h.chunk;
        let [_, ny, nx] = c.full_shape;
        if c.core_shape[1] != ny || c.core_shape[2] != nx {
            bail!("pick-components: chunks must be z-slabs covering whole planes");
        }
        let k = h.classes.len();
        let plane = ny * nx;
        let block = c.len();
        for z in c.core_offset[0]..c.core_offset[0] + c.core_shape[0] {
            let lz = z - c.offset[0];
            let mut p = vec![0f32; k * plane];
            for ch in 0..k {
                for y in 0..ny {
                    let s = ch * block
                        + (lz * c.shape[1] + y + c.core_offset[1] - c.offset[1]) * c.shape[2]
                        + c.core_offset[2]
                        - c.offset[2];
                    p[ch * plane + y * nx..ch * plane + (y + 1) * nx]
                        .copy_from_slice(&data[s..s + nx]);
                }
            }
            st.planes.insert(z, p);
        }
        while let Some(p) = st.planes.remove(&st.next) {
            st.cc.plane(&p);
            st.next += 1;
        }
        ctx.check_cancelled()
    }
    fn finish(&mut self, ctx: &mut Ctx) -> Result<()> {
        if self.tomos.is_empty() {
            bail!("pick-components: no probability map arrived");
        }
        for (name, st) in std::mem::take(&mut self.tomos) {
            if st.next != st.h.chunk.full_shape[0] {
                bail!(
                    "pick-components: the map of {name:?} is incomplete: plane {} never arrived",
                    st.next
                );
            }
            let comps = st.cc.finish();
            let c = &st.h.chunk;
            // reuse the NMS output layout: voxel = rounded centroid, positions from the centroid
            let classes: Vec<ClassInfo> =
                st.h.classes
                    .iter()
                    .map(|c| ClassInfo {
                        id: c.id,
                        name: c.name.clone(),
                        radius_a: c.radius_a,
                    })
                    .collect();
            let particles: Vec<Particle> = comps
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let cl = &st.h.classes[m.class];
                    Particle {
                        class: cl.name.clone(),
                        class_id: cl.id,
                        x: c.origin[2] + m.centroid[2] * c.voxel_size[2],
                        y: c.origin[1] + m.centroid[1] * c.voxel_size[1],
                        z: c.origin[0] + m.centroid[0] * c.voxel_size[0],
                        rot: 0.0,
                        tilt: 0.0,
                        psi: 0.0,
                        q: [1.0, 0.0, 0.0, 0.0],
                        instance: i as u32 + 1,
                        score: m.score as f64,
                    }
                })
                .collect();
            let table = ParticleTable {
                tomogram: TomogramInfo {
                    name: name.clone(),
                    shape: c.full_shape,
                    voxel_size: c.voxel_size,
                    origin: c.origin,
                },
                classes,
                particles,
            };
            let mut v = serde_json::to_value(&table)?;
            if let Some(arr) = v["particles"].as_array_mut() {
                for (p, m) in arr.iter_mut().zip(&comps) {
                    p["voxel"] = serde_json::json!(m.centroid);
                    p["support"] = serde_json::json!(m.voxels);
                }
            }
            v["report"] = serde_json::json!({"method": "components", "picks": comps.len()});
            ctx.info(format!(
                "pick-components: {name}: {} components",
                comps.len()
            ));
            ctx.emit("particles", Message::json(v))?;
        }
        Ok(())
    }
}

impl NodeDef for PickComponentsNode {
    type Params = ComponentsParams;
    const NAME: &'static str = "pick-components";
    const DOC: &'static str = "Pick particles as connected components of the argmax map (6-connected voxels of one class whose probability is at least the class threshold), \
        at the probability-weighted centroid, score = the component's maximum probability; components smaller than `min_voxels` are dropped. Streams plane by plane.";
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
    fn create(p: ComponentsParams, _info: &NodeInfo) -> Result<Self> {
        Ok(PickComponentsNode {
            p,
            tomos: BTreeMap::new(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// evaluate

fn czii_radii() -> BTreeMap<String, f64> {
    CZII_CLASSES
        .iter()
        .map(|(n, r, _)| (n.to_string(), *r))
        .collect()
}
fn czii_weights() -> BTreeMap<String, f64> {
    CZII_CLASSES
        .iter()
        .map(|(n, _, w)| (n.to_string(), *w))
        .collect()
}
fn four() -> f64 {
    4.0
}

/// Matching rule of `evaluate`.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ModeParam {
    /// The official CZII metric (default).
    #[default]
    Czii,
    /// One-to-one optimal assignment within the radius.
    Matched,
}

/// Normalisation of the class-weighted mean.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NormaliseParam {
    /// Σ weights of the classes with ground truth (default).
    #[default]
    Evaluated,
    /// Σ of every weight in `weights` (the official code's `sum(weights.values())`).
    Configured,
}

/// Parameters of `evaluate`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvalParams {
    /// `czii` (default) or `matched`.
    #[serde(default)]
    pub mode: ModeParam,
    /// β of F-beta.
    #[serde(default = "four")]
    pub beta: f64,
    /// β of the F-score that the tuned thresholds (`best_threshold`, port `thresholds`)
    /// maximise; default: `beta`. 1 tunes for F1.
    #[serde(default)]
    pub tune_beta: Option<f64>,
    /// Hit radius = distance_multiplier x class radius.
    #[serde(default = "crate::nms_nodes::half")]
    pub distance_multiplier: f64,
    /// Class radii in Å (default: the CZII table; classes not listed use the truth table's).
    #[serde(default = "czii_radii")]
    pub radii: BTreeMap<String, f64>,
    /// Class weights (default: CZII's; classes not listed weigh 1).
    #[serde(default = "czii_weights")]
    pub weights: BTreeMap<String, f64>,
    /// `evaluated` (default) or `configured`.
    #[serde(default)]
    pub normalise: NormaliseParam,
}

/// Parameters of `evaluate-shrec`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShrecParams {
    /// Dilation of the instance masks, in voxels (ball radius).
    #[serde(default = "one_f64")]
    pub dilation: f64,
    /// β of F-beta.
    #[serde(default = "four")]
    pub beta: f64,
    /// Class weights (default: CZII's).
    #[serde(default = "czii_weights")]
    pub weights: BTreeMap<String, f64>,
    /// Class radii in Å (used for the confusion table only).
    #[serde(default = "czii_radii")]
    pub radii: BTreeMap<String, f64>,
}
fn one_f64() -> f64 {
    1.0
}

fn pts(t: &ParticleTable) -> Vec<Pt> {
    t.particles
        .iter()
        .map(|p| Pt {
            class: p.class.clone(),
            p: [p.x, p.y, p.z],
            score: p.score,
            instance: p.instance,
        })
        .collect()
}

/// Picks and truth collected by tomogram name.
#[derive(Default)]
struct Collected {
    picks: BTreeMap<String, Vec<Pt>>,
    truth: BTreeMap<String, Vec<Pt>>,
    radii: BTreeMap<String, f64>,
}

impl Collected {
    fn add(&mut self, input: usize, meta: &Meta) -> Result<()> {
        let t = table_from(
            meta,
            if input == 0 {
                "evaluate (picks)"
            } else {
                "evaluate (truth)"
            },
        )?;
        if input == 1 {
            for c in &t.classes {
                self.radii.entry(c.name.clone()).or_insert(c.radius_a);
            }
        }
        let m = if input == 0 {
            &mut self.picks
        } else {
            &mut self.truth
        };
        m.entry(t.tomogram.name.clone())
            .or_default()
            .extend(pts(&t));
        Ok(())
    }
    fn tomos(&mut self, ctx: &Ctx) -> Result<Vec<Tomo>> {
        if self.truth.is_empty() {
            bail!("evaluate: no ground-truth table arrived");
        }
        for n in self.picks.keys() {
            if !self.truth.contains_key(n) {
                ctx.warn(format!(
                    "evaluate: picks of tomogram {n:?} have no ground truth and are ignored"
                ));
            }
        }
        Ok(std::mem::take(&mut self.truth)
            .into_iter()
            .map(|(name, truth)| Tomo {
                picks: self.picks.remove(&name).unwrap_or_default(),
                name,
                truth,
            })
            .collect())
    }
}

/// The metrics message: the report plus a flat `table` (one row per class and `overall`).
fn report_messages(r: &metrics::Report) -> Result<(Message, Message)> {
    let mut v = serde_json::to_value(r)?;
    let mut table: Vec<serde_json::Value> = r
        .classes
        .iter()
        .map(|c| {
            serde_json::json!({"class": c.name, "picks": c.picks, "truth": c.truth, "tp": c.tp, "fp": c.fp, "fn": c.fn_,
                "precision": c.precision, "recall": c.recall, "f1": c.f1, "fbeta": c.fbeta, "weight": c.weight,
                "best_threshold": c.best_threshold, "best_score": c.best_score})
        })
        .collect();
    let o = &r.overall;
    table.push(serde_json::json!({"class": "overall", "picks": null, "truth": null, "tp": o["tp"], "fp": o["fp"], "fn": o["fn"],
        "precision": o["precision"], "recall": o["recall"], "f1": o["f1"], "fbeta": o["score"], "weight": o["weight_sum"],
        "best_threshold": null, "best_score": null}));
    v["table"] = serde_json::Value::Array(table);
    let th: BTreeMap<&str, Option<f64>> = r
        .classes
        .iter()
        .map(|c| (c.name.as_str(), c.best_threshold))
        .collect();
    let t = serde_json::json!({"thresholds": th, "beta": r.tune_beta, "mode": r.mode,
        "criterion": format!("max F-score with beta = {}", r.tune_beta)});
    Ok((Message::json(v), Message::json(t)))
}

/// `evaluate`: score picks against ground truth (modes `czii`, `matched`).
pub struct EvaluateNode {
    p: EvalParams,
    c: Collected,
}

impl Node for EvaluateNode {
    fn process(&mut self, _ctx: &mut Ctx, input: usize, msg: Message) -> Result<()> {
        self.c.add(input, &msg.meta)
    }
    fn finish(&mut self, ctx: &mut Ctx) -> Result<()> {
        let tomos = self.c.tomos(ctx)?;
        let cfg = EvalConfig {
            mode: match self.p.mode {
                ModeParam::Czii => Mode::Czii,
                ModeParam::Matched => Mode::Matched,
            },
            beta: self.p.beta,
            tune_beta: self.p.tune_beta.unwrap_or(self.p.beta),
            distance_multiplier: self.p.distance_multiplier,
            radii: self.p.radii.clone(),
            weights: self.p.weights.clone(),
            normalise: match self.p.normalise {
                NormaliseParam::Evaluated => Normalise::Evaluated,
                NormaliseParam::Configured => Normalise::Configured,
            },
        };
        let r = metrics::evaluate(&cfg, &tomos, &self.c.radii, &BTreeMap::new(), 0.0)?;
        log_report(ctx, &r);
        let (m, t) = report_messages(&r)?;
        ctx.emit("metrics", m)?;
        ctx.emit("thresholds", t)
    }
}

fn log_report(ctx: &Ctx, r: &metrics::Report) {
    for c in &r.classes {
        ctx.info(format!(
            "evaluate: {:<22} TP {:>4} FP {:>4} FN {:>4}  P {:.3} R {:.3} F1 {:.3} F{} {:.3}",
            c.name, c.tp, c.fp, c.fn_, c.precision, c.recall, c.f1, r.beta, c.fbeta
        ));
    }
    ctx.info(format!(
        "evaluate: score (weighted F-beta) {:.4}",
        r.overall["score"].as_f64().unwrap_or(0.0)
    ));
}

const EVAL_OUTPUTS: &[Port] = &[
    port("metrics", "metrics", "per-class and overall TP/FP/FN/precision/recall/F1/F-beta, per-tomogram counts, PR curves, confusion, and a flat `table`"),
    port("thresholds", "metrics", "per-class score thresholds maximising the F-score with beta = tune_beta ({\"thresholds\": {class: t}}), for pick-nms-tuned"),
];

impl NodeDef for EvaluateNode {
    type Params = EvalParams;
    const NAME: &'static str = "evaluate";
    const DOC: &'static str = "Score picks against ground truth per class and over all tomograms (tables are matched by tomogram name).\n\n\
        `mode: czii` reproduces the CZII CryoET Object Identification metric exactly (ball query of distance_multiplier x r from each truth point, distance <= radius; \
        TP = distinct truth points hit, FP = picks - TP, FN = truth - TP, summed over tomograms; F-beta with beta = 4; class-weighted mean). \
        `mode: matched`: one-to-one optimal assignment within the same radius (Hungarian). Also: PR curves over the score threshold, the threshold per class that maximises F-beta, or the F-score with `tune_beta` (port `thresholds`), class confusion.";
    const INPUTS: &'static [Port] = &[
        port(
            "picks",
            "particles",
            "picked particles (one or more tables)",
        ),
        port("truth", "particles", "ground truth (one or more tables)"),
    ];
    const OUTPUTS: &'static [Port] = EVAL_OUTPUTS;
    fn check(p: &EvalParams) -> Result<()> {
        if !(p.beta > 0.0 && p.distance_multiplier > 0.0 && p.tune_beta.is_none_or(|b| b > 0.0)) {
            bail!("evaluate: beta, tune_beta and distance_multiplier must be > 0");
        }
        if p.weights.values().any(|w| w.is_nan() || *w < 0.0) {
            bail!("evaluate: weights must be >= 0");
        }
        Ok(())
    }
    fn create(p: EvalParams, _info: &NodeInfo) -> Result<Self> {
        Ok(EvaluateNode {
            p,
            c: Collected::default(),
        })
    }
}

/// `evaluate-shrec`: the SHREC 2021 rule (picks inside dilated instance masks).
pub struct EvaluateShrecNode {
    p: ShrecParams,
    c: Collected,
    inst: tomoflow_sdk::volume::Assembler<u32>,
}

impl Node for EvaluateShrecNode {
    fn process(&mut self, _ctx: &mut Ctx, input: usize, msg: Message) -> Result<()> {
        if input == 2 {
            let (meta, data) = labels_u32(&msg)?;
            let m = tomoflow_sdk::volume::chunk_message(&meta, data);
            self.inst.add(&m)
        } else {
            self.c.add(input, &msg.meta)
        }
    }
    fn finish(&mut self, ctx: &mut Ctx) -> Result<()> {
        let tomos = self.c.tomos(ctx)?;
        if tomos.len() != 1 {
            bail!(
                "evaluate-shrec: one instance map scores one tomogram, but the truth names {}",
                tomos.len()
            );
        }
        let vol = std::mem::take(&mut self.inst).finish()?;
        let im = InstanceMap {
            data: vol.data,
            shape: vol.shape,
            voxel: vol.voxel_size,
            origin: vol.origin,
        };
        let cfg = EvalConfig {
            mode: Mode::Shrec,
            beta: self.p.beta,
            tune_beta: self.p.beta,
            distance_multiplier: 0.5,
            radii: self.p.radii.clone(),
            weights: self.p.weights.clone(),
            normalise: Normalise::Evaluated,
        };
        let inst = BTreeMap::from([(tomos[0].name.clone(), im)]);
        let r = metrics::evaluate(&cfg, &tomos, &self.c.radii, &inst, self.p.dilation)?;
        log_report(ctx, &r);
        let (m, t) = report_messages(&r)?;
        ctx.emit("metrics", m)?;
        ctx.emit("thresholds", t)
    }
}

impl NodeDef for EvaluateShrecNode {
    type Params = ShrecParams;
    const NAME: &'static str = "evaluate-shrec";
    const DOC: &'static str = "Score picks with the SHREC 2021 rule: a pick hits a particle when its rounded voxel lies in the particle's instance mask dilated by a ball of `dilation` voxels; \
        TP = distinct particles hit by picks of their class, FP = picks - TP, FN = truth - TP. Same report as `evaluate`.";
    const INPUTS: &'static [Port] = &[
        port("picks", "particles", "picked particles"),
        port(
            "truth",
            "particles",
            "ground truth (its `instance` ids name the instance map's labels)",
        ),
        port("instances", "labels", "instance id map"),
    ];
    const OUTPUTS: &'static [Port] = EVAL_OUTPUTS;
    fn check(p: &ShrecParams) -> Result<()> {
        if !(p.dilation >= 0.0 && p.beta > 0.0) {
            bail!("evaluate-shrec: dilation must be >= 0 and beta > 0");
        }
        Ok(())
    }
    fn create(p: ShrecParams, _info: &NodeInfo) -> Result<Self> {
        Ok(EvaluateShrecNode {
            p,
            c: Collected::default(),
            inst: Default::default(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// metrics exporters

/// Parameters of the metrics exporters.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PathParams {
    /// Target file (filled in by the engine from the workflow's `exports:`).
    pub path: String,
}

/// `metrics-csv-write`: the flat `table` of a metrics document as CSV.
pub struct MetricsCsvWriteNode {
    path: PathBuf,
    metas: Vec<Meta>,
}

/// CSV of the `table` arrays of metrics documents (columns from the first row).
pub fn metrics_csv(metas: &[Meta]) -> Result<String> {
    let mut rows: Vec<&serde_json::Map<String, serde_json::Value>> = Vec::new();
    for m in metas {
        let t = m.get("table").and_then(|t| t.as_array()).ok_or_else(|| anyhow!("metrics-csv-write: the metrics document has no `table` (only evaluate's `metrics` output has one)"))?;
        for r in t {
            rows.push(
                r.as_object()
                    .ok_or_else(|| anyhow!("metrics-csv-write: `table` rows must be objects"))?,
            );
        }
    }
    let cols: Vec<&String> = rows.first().map(|r| r.keys().collect()).unwrap_or_default();
    let mut s = cols
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(",");
    s.push('\n');
    for r in rows {
        let line: Vec<String> = cols
            .iter()
            .map(|c| match r.get(*c) {
                None | Some(serde_json::Value::Null) => String::new(),
                Some(serde_json::Value::String(v)) if v.contains([',', '"']) => {
                    format!("\"{}\"", v.replace('"', "\"\""))
                }
                Some(serde_json::Value::String(v)) => v.clone(),
                Some(v) => v.to_string(),
            })
            .collect();
        s.push_str(&line.join(","));
        s.push('\n');
    }
    Ok(s)
}

impl Node for MetricsCsvWriteNode {
    fn process(&mut self, _ctx: &mut Ctx, _input: usize, msg: Message) -> Result<()> {
        self.metas.push(msg.meta);
        Ok(())
    }
    fn finish(&mut self, _ctx: &mut Ctx) -> Result<()> {
        write_atomic(&self.path, metrics_csv(&self.metas)?.as_bytes())
    }
}

impl NodeDef for MetricsCsvWriteNode {
    type Params = PathParams;
    const NAME: &'static str = "metrics-csv-write";
    const DOC: &'static str = "Export the per-class metrics table of `evaluate` as CSV (class, picks, truth, tp, fp, fn, precision, recall, f1, fbeta, weight, best_threshold, best_score; last row `overall` with the weighted F-beta score).";
    const INPUTS: &'static [Port] = &[port("metrics", "metrics", "evaluate's metrics")];
    const OUTPUTS: &'static [Port] = &[];
    const EXPORT_EXTENSIONS: &'static [&'static str] = &["csv"];
    fn create(p: PathParams, info: &NodeInfo) -> Result<Self> {
        Ok(MetricsCsvWriteNode {
            path: info.resolve(&p.path),
            metas: Vec::new(),
        })
    }
}

/// `pr-png-write`: precision-recall curves of `evaluate` as a PNG.
pub struct PrPngWriteNode {
    path: PathBuf,
    metas: Vec<Meta>,
}

/// The curves of a metrics document, in its class order.
pub fn curves_of(meta: &Meta) -> Result<Vec<crate::plot::Curve>> {
    let classes = meta
        .get("classes")
        .and_then(|c| c.as_array())
        .ok_or_else(|| {
            anyhow!(
                "pr-png-write: the metrics document has no `classes` (connect evaluate.metrics)"
            )
        })?;
    let curves = meta
        .get("pr_curves")
        .and_then(|c| c.as_object())
        .ok_or_else(|| anyhow!("pr-png-write: the metrics document has no `pr_curves`"))?;
    let mut out = Vec::new();
    for c in classes {
        let name = c["name"].as_str().unwrap_or_default();
        let best_t = c["best_threshold"].as_f64();
        let pts = curves
            .get(name)
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default();
        let points: Vec<(f64, f64)> = pts
            .iter()
            .map(|p| {
                (
                    p["recall"].as_f64().unwrap_or(0.0),
                    p["precision"].as_f64().unwrap_or(0.0),
                )
            })
            .collect();
        // The point of the picks kept at the threshold: the last one at or above it.
        let best = best_t.and_then(|t| {
            pts.iter()
                .rposition(|p| p["threshold"].as_f64().is_some_and(|s| s >= t))
                .map(|i| (i, t))
        });
        out.push(crate::plot::Curve {
            name: name.to_string(),
            points,
            best,
        });
    }
    Ok(out)
}

impl Node for PrPngWriteNode {
    fn process(&mut self, _ctx: &mut Ctx, _input: usize, msg: Message) -> Result<()> {
        self.metas.push(msg.meta);
        Ok(())
    }
    fn finish(&mut self, _ctx: &mut Ctx) -> Result<()> {
        let m = self
            .metas
            .first()
            .ok_or_else(|| anyhow!("pr-png-write: no metrics arrived"))?;
        write_atomic(&self.path, &crate::plot::pr_png(&curves_of(m)?, 480)?)
    }
}

impl NodeDef for PrPngWriteNode {
    type Params = PathParams;
    const NAME: &'static str = "pr-png-write";
    const DOC: &'static str = "Export the precision-recall curves of `evaluate` as a 480x480 PNG: recall on x, precision on y (0..1, numbered grid every 0.25, axis titles), one colour per class in the metrics' class order \
        (blue, orange, green, red, purple, brown, pink, grey; the legend, bottom left inside the plot, names each class), the tuned-threshold point (`best_threshold`) as a filled square.";
    const INPUTS: &'static [Port] = &[port("metrics", "metrics", "evaluate's metrics")];
    const OUTPUTS: &'static [Port] = &[];
    const EXPORT_EXTENSIONS: &'static [&'static str] = &["png"];
    fn create(p: PathParams, info: &NodeInfo) -> Result<Self> {
        Ok(PrPngWriteNode {
            path: info.resolve(&p.path),
            metas: Vec::new(),
        })
    }
}
