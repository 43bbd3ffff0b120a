//! Second-stage classification of picks by the density around them ([`crate::shape`]):
//!
//! - `shape-classifier-train`: learn a linear discriminant from tomograms with their true
//!   particle tables (features from starts jittered around the true centres, as picks are);
//! - `pick-reclassify`: re-decide the class of picks among a group of classes, and move each
//!   to the centre the features found;
//! - `picks-threshold`: keep the picks at or above their class's score threshold (tuned by
//!   `evaluate` on validation picks of the same pipeline);
//! - `shape-classifier-write` / `shape-classifier-read`: the classifier as a JSON file.

use crate::shape::{
    gaussian, Lda, MatchOptions, MatchTemplate, Matcher, Microscope, Prepared, Sampling,
    ShapeOptions, Transfer,
};
use anyhow::{anyhow, bail, Context, Result};
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tomoflow_cryo::particles::ParticleTable;
use tomoflow_cryo::rng::Rng;
use tomoflow_sdk::gather::Origin;
use tomoflow_sdk::prelude::*;
use tomoflow_sdk::volume::Assembler;

/// One class the classifier knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShapeClass {
    /// Class name.
    pub name: String,
    /// Class number.
    pub id: u32,
    /// Training samples (particles x copies).
    pub samples: usize,
    /// Leave-one-tomogram-out accuracy of the class (`None` with one training tomogram).
    pub cv_accuracy: Option<f64>,
}

/// What travels on `shape_classifier` ports (as the message's JSON metadata).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShapeClassifier {
    /// Voxel size in Å the features were learned at.
    pub voxel_size: f64,
    /// Feature settings, in voxels.
    pub options: ShapeOptions,
    /// The classes, in the order of the discriminant's means.
    pub classes: Vec<ShapeClass>,
    /// The discriminant.
    pub lda: Lda,
    /// Leave-one-tomogram-out confusion: `confusion[true][called]`, in class order.
    pub cv_confusion: Vec<Vec<usize>>,
    /// Templates matched (their best correlations are the last features).
    pub templates: Vec<MatchTemplate>,
    /// How they are matched (`None` without templates).
    pub matching: Option<MatchOptions>,
    /// Per matched template, the offset subtracted from its correlation before the best one
    /// names a pick (fitted on the training samples; empty with fewer than two templates).
    #[serde(default)]
    pub matched_bias: Vec<f64>,
    /// Of the training samples of the matched classes, the fraction that the best-correlating
    /// template (after `matched_bias`) names right (`None` with fewer than two templates).
    #[serde(default)]
    pub matched_accuracy: Option<f64>,
}

/// The template whose correlation minus its bias is highest, among `allowed`.
fn best_template(cc: &[f64], bias: &[f64], allowed: &[usize]) -> Option<usize> {
    allowed.iter().copied().max_by(|&a, &b| {
        let b0 = |t: usize| bias.get(t).copied().unwrap_or(0.0);
        (cc[a] - b0(a)).total_cmp(&(cc[b] - b0(b)))
    })
}

/// Biases that maximise how often the best-correlating template names a sample's class
/// right: coordinate ascent over a grid of ±0.1 (correlations are in [-1, 1]), the first
/// template's bias held at 0. `samples`: (correlations, own template). Returns the biases and
/// the accuracy.
fn fit_template_bias(samples: &[(&[f64], usize)], nt: usize) -> (Vec<f64>, f64) {
    let all: Vec<usize> = (0..nt).collect();
    let accuracy = |b: &[f64]| {
        samples
            .iter()
            .filter(|(cc, own)| best_template(cc, b, &all) == Some(*own))
            .count() as f64
            / samples.len().max(1) as f64
    };
    let mut bias = vec![0.0; nt];
    let mut best = accuracy(&bias);
    for _ in 0..3 {
        for t in 1..nt {
            for i in -50..=50 {
                let mut b = bias.clone();
                b[t] = i as f64 * 0.002;
                let a = accuracy(&b);
                // Ties go to the smaller offset.
                if a > best || (a == best && b[t].abs() < bias[t].abs()) {
                    (best, bias) = (a, b);
                }
            }
        }
    }
    (bias, best)
}

/// What is seen from a start.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    /// The centre of the density found from the start (z, y, x voxels).
    pub centre: [f64; 3],
    /// The shape features, then the best correlation with each matched template.
    pub features: Vec<f64>,
    /// Per matched template, where its best correlation was found (z, y, x voxels).
    pub matched_at: Vec<[f64; 3]>,
    /// Per matched template, its correlation there on its own ball ([`crate::shape::Fit::local_cc`]).
    pub local_cc: Vec<f64>,
}

/// Where a start leads and what is seen there.
pub fn describe(
    prep: &Prepared,
    matcher: Option<&Matcher>,
    start: [f64; 3],
    o: &ShapeOptions,
) -> Seen {
    let (centre, mut features) = prep.features(start, o);
    let (mut matched_at, mut local_cc) = (Vec::new(), Vec::new());
    if let Some(m) = matcher {
        for fit in m.best(prep, centre, start) {
            features.push(fit.cc);
            matched_at.push(fit.at);
            local_cc.push(fit.local_cc);
        }
    }
    Seen {
        centre,
        features,
        matched_at,
        local_cc,
    }
}

impl ShapeClassifier {
    /// The message carrying it.
    pub fn to_message(&self) -> Result<Message> {
        let mut v = serde_json::to_value(self)?;
        v["kind"] = "shape_classifier".into();
        Ok(Message::json(v))
    }
    /// Read it from a message.
    pub fn from_message(msg: &Message) -> Result<ShapeClassifier> {
        serde_json::from_value(serde_json::Value::Object(msg.meta.clone())).context(
            "expected a `shape_classifier` message (connect shape-classifier-train.classifier)",
        )
    }
}

/// Name of the class of empty ice.
pub const BACKGROUND: &str = "background";

/// The class the classifier learns for the rims of particles (not a particle class).
pub const RIM: &str = "rim";

fn eighty() -> f64 {
    80.0
}
fn fifteen() -> f64 {
    15.0
}
fn one_fifty() -> f64 {
    150.0
}
fn three() -> usize {
    3
}
fn four() -> usize {
    4
}
fn thirty() -> f64 {
    30.0
}
fn five_hundred() -> usize {
    500
}
fn one() -> usize {
    1
}
fn ten() -> f64 {
    10.0
}
fn forty() -> usize {
    40
}
fn ridge() -> f64 {
    1e-3
}

/// Parameters of `shape-classifier-train`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainParams {
    /// Radius in Å of the ball in which the centre and the moments are measured (about the
    /// radius of the smaller classes to tell apart).
    #[serde(default = "eighty", rename = "window_A")]
    pub window_a: f64,
    /// Gaussian smoothing sigma in Å of the density the centre and moments are measured on.
    #[serde(default = "fifteen", rename = "smoothing_A")]
    pub smoothing_a: f64,
    /// Outer radius in Å of the radial profiles.
    #[serde(default = "one_fifty", rename = "profile_radius_A")]
    pub profile_radius_a: f64,
    /// Centre iterations from each start.
    #[serde(default = "three")]
    pub iterations: usize,
    /// Training starts per true particle.
    #[serde(default = "four")]
    pub copies: usize,
    /// Starts are the true centre plus a uniform offset in [-jitter, jitter] Å per axis (what
    /// a picker's error looks like).
    #[serde(default = "thirty", rename = "jitter_A")]
    pub jitter_a: f64,
    /// Ridge added to the pooled covariance, as a fraction of its mean variance.
    #[serde(default = "ridge")]
    pub ridge: f64,
    /// Samples of empty ice per tomogram, learnt as the class `background` (starts at random
    /// positions at least a particle radius plus `window_A` from every true particle), so that
    /// `pick-reclassify` can reject picks on nothing. 0: no background class.
    #[serde(default = "forty")]
    pub background: usize,
    /// Samples per tomogram on the rims of the true particles, learnt as the class `rim`
    /// (starts between 1 and 1.5 radii from a particle's centre and farther than its radius
    /// from every other particle), so that `pick-reclassify` can reject picks on the edge of a
    /// large particle (a virus-like particle's shell looks like a small particle to a
    /// template). 0: no rim class.
    #[serde(default)]
    pub rims: usize,
    /// Classes whose templates are matched: the best normalised cross-correlation of the
    /// (low-passed) template over `orientations` rotations and ±`match_shift` voxels becomes a
    /// feature. Costly (about 0.1 s per pick and template at 500 orientations); worth it for
    /// classes that the shape alone confuses.
    #[serde(default)]
    pub matched: Vec<String>,
    /// Orientations tried per matched template, uniform on SO(3).
    #[serde(default = "five_hundred")]
    pub orientations: usize,
    /// Translations tried around the centre, voxels per axis.
    #[serde(default = "one")]
    pub match_shift: usize,
    /// Radius in Å of a search for each template's best position around the start itself (the
    /// pick), instead of `match_shift` about the density's centroid; 0: off. With it,
    /// `pick-reclassify` moves a pick called a matched class to where that template fits best.
    #[serde(default, rename = "match_search_A")]
    pub match_search_a: f64,
    /// The microscope of the tomograms, e.g. `{voltage: 300, cs: 2.7, amplitude_contrast: 0.07,
    /// defocus: 3.0}` (kV, mm, fraction, µm underfocus): each rotated template is filtered by
    /// its CTF before it is compared. Default: no CTF.
    #[serde(default)]
    pub ctf: Option<Microscope>,
    /// The tomograms were phase-flipped (`recon-*`'s default `ctf_correction`): the templates
    /// get |CTF|; false: −CTF (contrast kept positive at low frequency either way).
    #[serde(default = "yes")]
    pub phase_flipped: bool,
    /// Tilt range of the series, degrees about y, e.g. `[-60, 60]`: each rotated template loses
    /// the missing wedge before it is compared. Default: none removed.
    #[serde(default)]
    pub tilt_range: Option<[f64; 2]>,
    /// Gaussian low-pass sigma in Å applied to the templates.
    #[serde(default = "ten", rename = "template_smoothing_A")]
    pub template_smoothing_a: f64,
    /// Classes to learn (default: every class of the particle tables).
    #[serde(default)]
    pub classes: Vec<String>,
}

fn options(p: &TrainParams, voxel: f64) -> ShapeOptions {
    ShapeOptions {
        window: p.window_a / voxel,
        sigma: p.smoothing_a / voxel,
        profile_radius: (p.profile_radius_a / voxel).round().max(1.0) as usize,
        iterations: p.iterations,
    }
}

/// `shape-classifier-train`.
pub struct ShapeTrainNode {
    p: TrainParams,
    seed: u64,
    tomos: BTreeMap<String, (Origin, Assembler<f32>)>,
    tables: Vec<(Origin, ParticleTable)>,
    templates: Vec<RawTemplate>,
}

/// A class template as it arrives on a `templates` port (docs/data-kinds.md).
#[derive(Debug, Clone)]
pub struct RawTemplate {
    /// Class name.
    pub name: String,
    /// Voxel size, Å.
    pub voxel_size: f64,
    /// Class radius, Å.
    pub radius_a: f64,
    /// Box shape (z, y, x).
    pub shape: [usize; 3],
    /// Potential.
    pub data: Vec<f32>,
}

impl RawTemplate {
    /// Read the fields matching needs from a `templates` message.
    pub fn from_message(msg: &Message) -> Result<RawTemplate> {
        let m = msg
            .meta
            .get("template")
            .ok_or_else(|| anyhow!("templates: message has no `template` metadata"))?;
        let f = |k: &str| {
            m.get(k)
                .and_then(|v| v.as_f64())
                .ok_or_else(|| anyhow!("templates: metadata lacks `{k}`"))
        };
        let shape: [usize; 3] = serde_json::from_value(m["shape"].clone())
            .map_err(|e| anyhow!("templates: shape: {e}"))?;
        let data = msg
            .tensor("data")
            .map_err(anyhow::Error::msg)?
            .as_slice::<f32>()
            .map_err(anyhow::Error::msg)?
            .to_vec();
        if data.len() != shape.iter().product::<usize>() {
            bail!("templates: data does not match shape {shape:?}");
        }
        Ok(RawTemplate {
            name: m["name"].as_str().unwrap_or("?").to_string(),
            voxel_size: f("voxel_size")?,
            radius_a: f("radius_A")?,
            shape,
            data,
        })
    }
}

impl Node for ShapeTrainNode {
    fn process(&mut self, _ctx: &mut Ctx, input: usize, msg: Message) -> Result<()> {
        let o = Origin::of(&msg);
        if input == 0 {
            self.tomos
                .entry(o.id.clone())
                .or_insert_with(|| (o, Assembler::new()))
                .1
                .add(&msg)
                .context("tomograms")?;
        } else if input == 1 {
            let t = ParticleTable::from_json(&serde_json::Value::Object(msg.meta.clone()))
                .context("particles: expected a particle table")?;
            self.tables.push((o, t));
        } else {
            self.templates.push(RawTemplate::from_message(&msg)?);
        }
        Ok(())
    }

    fn finish(&mut self, ctx: &mut Ctx) -> Result<()> {
        if self.tomos.is_empty() {
            bail!("shape-classifier-train: no tomogram arrived");
        }
        let tomos = std::mem::take(&mut self.tomos);
        let n = tomos.len() as u64;
        let mut pairs = Vec::new();
        for (id, (o, asm)) in tomos {
            let covering: Vec<&ParticleTable> = self
                .tables
                .iter()
                .filter(|(to, _)| to.covers(&o))
                .map(|(_, t)| t)
                .collect();
            let table = match covering.as_slice() {
                [one] => (*one).clone(),
                [] => bail!("shape-classifier-train: no particle table for tomogram {id:?}: connect the tables of the same replicates (gathered inputs are paired by their sweep coordinates)"),
                many => bail!("shape-classifier-train: {} particle tables match tomogram {id:?}; gather them from the same instances as the tomograms", many.len()),
            };
            pairs.push((id, asm, table));
        }
        let c: &Ctx = ctx;
        let model = train(pairs, &self.templates, &self.p, self.seed, &|i| {
            c.progress(i as u64, n);
            c.check_cancelled()
        })?;
        for k in &model.classes {
            ctx.info(format!(
                "shape-classifier-train: {}: {} samples, leave-one-tomogram-out accuracy {}",
                k.name,
                k.samples,
                k.cv_accuracy.map_or("n/a".into(), |a| format!("{a:.3}"))
            ));
        }
        if let Some(a) = model.matched_accuracy {
            ctx.info(format!(
                "shape-classifier-train: the matched classes told apart by the best-correlating template alone: accuracy {a:.3}"
            ));
        }
        ctx.emit("classifier", model.to_message()?)
    }
}

/// Fit a classifier to `(name, tomogram, true particles)` triples; `step(i)` is called after
/// the `i`-th tomogram (progress, cancellation).
pub fn train(
    tomos: Vec<(String, Assembler<f32>, ParticleTable)>,
    templates: &[RawTemplate],
    p: &TrainParams,
    seed: u64,
    step: &dyn Fn(usize) -> Result<()>,
) -> Result<ShapeClassifier> {
    // Classes: those asked for, or every class of the tables, in id order.
    let mut known: BTreeMap<u32, String> = BTreeMap::new();
    for (_, _, t) in &tomos {
        for c in &t.classes {
            known.insert(c.id, c.name.clone());
        }
    }
    let classes: Vec<(u32, String)> = if p.classes.is_empty() {
        known.into_iter().collect()
    } else {
        p.classes
            .iter()
            .map(|n| {
                known
                    .iter()
                    .find(|(_, k)| *k == n)
                    .map(|(id, k)| (*id, k.clone()))
                    .ok_or_else(|| {
                        anyhow!(
                            "shape-classifier-train: class `{n}` is in no particle table (known: {})",
                            known.values().cloned().collect::<Vec<_>>().join(", ")
                        )
                    })
            })
            .collect::<Result<_>>()?
    };
    if classes.len() < 2 {
        bail!(
            "shape-classifier-train: need at least two classes, got {}",
            classes.len()
        );
    }
    let mut rng = Rng::new(seed);
    let mut voxel = None;
    let mut opts = None;
    let mut matcher: Option<(Matcher, Vec<MatchTemplate>, MatchOptions)> = None;
    // Samples per tomogram: (features, class index).
    let mut per_tomo: Vec<Vec<(Vec<f64>, usize)>> = Vec::new();
    for (i, (id, asm, table)) in tomos.into_iter().enumerate() {
        let vol = asm.finish().context("tomograms")?;
        let v = vol.voxel_size[2];
        if (vol.voxel_size[0] - v).abs() > 1e-3 * v || (vol.voxel_size[1] - v).abs() > 1e-3 * v {
            bail!(
                "shape-classifier-train: voxels must be cubic, tomogram {id:?} has {:?} Å",
                vol.voxel_size
            );
        }
        match voxel {
            None => voxel = Some(v),
            Some(v0) if (v - v0).abs() > 0.01 * v0 => bail!(
                "shape-classifier-train: tomograms of different voxel sizes ({v0} and {v} Å); resample them to one"
            ),
            _ => {}
        }
        let o = *opts.get_or_insert_with(|| options(p, v));
        if matcher.is_none() && !p.matched.is_empty() {
            let t = match_templates(templates, &p.matched, v, p.template_smoothing_a)?;
            let mo = MatchOptions {
                orientations: p.orientations,
                seed,
                shift: p.match_shift,
                search: (p.match_search_a / v).ceil() as usize,
                transfer: (p.ctf.is_some() || p.tilt_range.is_some()).then_some(Transfer {
                    voxel_size: v,
                    ctf: p.ctf,
                    phase_flipped: p.phase_flipped,
                    tilt_range: p.tilt_range,
                }),
                sampling: Sampling::Spiral,
            };
            matcher = Some((Matcher::new(&t, &mo), t, mo));
        }
        let m = matcher.as_ref().map(|m| &m.0);
        let prep = Prepared::new(vol.data, vol.shape, o.sigma)
            .with_context(|| format!("shape-classifier-train: tomogram {id:?}"))?;
        let jitter = p.jitter_a / v;
        let mut starts = Vec::new();
        for part in &table.particles {
            let Some(ci) = classes.iter().position(|(cid, _)| *cid == part.class_id) else {
                continue;
            };
            let [x, y, z] = table.voxel_coords(part);
            for _ in 0..p.copies {
                let start = [
                    z + rng.range(-jitter, jitter),
                    y + rng.range(-jitter, jitter),
                    x + rng.range(-jitter, jitter),
                ];
                starts.push((start, ci));
            }
        }
        // Every true particle: its centre (z, y, x) and its class radius, voxels.
        let sites: Vec<([f64; 3], f64)> = table
            .particles
            .iter()
            .map(|q| {
                let [x, y, z] = table.voxel_coords(q);
                let r = table
                    .classes
                    .iter()
                    .find(|c| c.id == q.class_id)
                    .map_or(0.0, |c| c.radius_a / v);
                ([z, y, x], r)
            })
            .collect();
        if p.background > 0 {
            let bg = classes.len();
            let [nz, ny, nx] = prep.shape();
            let (mut found, mut tries) = (0, 0);
            while found < p.background && tries < 1000 * p.background {
                tries += 1;
                let c = [
                    rng.range(0.0, nz as f64 - 1.0),
                    rng.range(0.0, ny as f64 - 1.0),
                    rng.range(0.0, nx as f64 - 1.0),
                ];
                // At least a particle radius plus the window from every particle.
                let clear = sites.iter().all(|(s, r)| {
                    let d2 = (s[0] - c[0]).powi(2) + (s[1] - c[1]).powi(2) + (s[2] - c[2]).powi(2);
                    d2 > (r + o.window).powi(2)
                });
                if clear {
                    starts.push((c, bg));
                    found += 1;
                }
            }
            if found == 0 {
                bail!("shape-classifier-train: tomogram {id:?} has no empty ice a window away from its particles; set `background: 0`");
            }
        }
        if p.rims > 0 && !table.particles.is_empty() {
            let rim = classes.len() + usize::from(p.background > 0);
            // Only particles of a class with a radius have a rim.
            let rimmed: Vec<usize> = (0..sites.len()).filter(|&i| sites[i].1 > 0.0).collect();
            if rimmed.is_empty() {
                bail!("shape-classifier-train: tomogram {id:?}: no particle has a class radius, so no rim; set `rims: 0`");
            }
            let shape = prep.shape().map(|n| n as f64 - 1.0);
            let (mut found, mut tries) = (0, 0);
            while found < p.rims && tries < 1000 * p.rims {
                tries += 1;
                let (centre, r) = sites[rimmed[rng.below(rimmed.len() as u64) as usize]];
                let dir = [rng.normal(), rng.normal(), rng.normal()];
                let norm = dir.iter().map(|d| d * d).sum::<f64>().sqrt().max(1e-12);
                let dist = r * rng.range(1.0, 1.5);
                let c: [f64; 3] = std::array::from_fn(|a| centre[a] + dir[a] / norm * dist);
                let inside = (0..3).all(|a| c[a] >= 0.0 && c[a] <= shape[a]);
                let clear = sites.iter().all(|(s, rs)| {
                    (s[0] - c[0]).powi(2) + (s[1] - c[1]).powi(2) + (s[2] - c[2]).powi(2)
                        >= rs * rs - 1e-9
                });
                if inside && clear {
                    starts.push((c, rim));
                    found += 1;
                }
            }
            if found == 0 {
                bail!("shape-classifier-train: tomogram {id:?}: no rim start clear of the other particles; set `rims: 0`");
            }
        }
        let samples: Vec<(Vec<f64>, usize)> = starts
            .par_iter()
            .map(|(st, ci)| (describe(&prep, m, *st, &o).features, *ci))
            .collect();
        per_tomo.push(samples);
        step(i + 1)?;
    }
    let o = opts.ok_or_else(|| anyhow!("shape-classifier-train: no tomogram"))?;
    let mut classes = classes;
    if p.background > 0 {
        classes.push((0, BACKGROUND.to_string()));
    }
    if p.rims > 0 {
        classes.push((0, RIM.to_string()));
    }
    let k = classes.len();
    let all: Vec<&(Vec<f64>, usize)> = per_tomo.iter().flatten().collect();
    if let Some((_, name)) = classes
        .iter()
        .enumerate()
        .find(|(i, _)| !all.iter().any(|r| r.1 == *i))
        .map(|(_, c)| c)
    {
        bail!("shape-classifier-train: no training sample of class `{name}` (no particle of it, or no place for it); drop it from `classes`, or set `background`/`rims` to 0");
    }
    let fit = |rows: &[&(Vec<f64>, usize)]| -> Result<Lda> {
        let x: Vec<Vec<f64>> = rows.iter().map(|r| r.0.clone()).collect();
        let y: Vec<usize> = rows.iter().map(|r| r.1).collect();
        Lda::fit(&x, &y, k, p.ridge)
    };
    let lda = fit(&all).context("shape-classifier-train")?;
    // Leave one tomogram out: fit on the others, classify its samples.
    let mut confusion = vec![vec![0usize; k]; k];
    if per_tomo.len() > 1 {
        let all_classes: Vec<usize> = (0..k).collect();
        for t in 0..per_tomo.len() {
            let rest: Vec<&(Vec<f64>, usize)> = per_tomo
                .iter()
                .enumerate()
                .filter(|(u, _)| *u != t)
                .flat_map(|(_, s)| s.iter())
                .collect();
            let Ok(m) = fit(&rest) else { continue };
            for (x, c) in &per_tomo[t] {
                confusion[*c][m.classify(x, &all_classes).0] += 1;
            }
        }
    }
    let cls: Vec<ShapeClass> = classes
        .iter()
        .enumerate()
        .map(|(i, (id, name))| {
            let row: usize = confusion[i].iter().sum();
            ShapeClass {
                name: name.clone(),
                id: *id,
                samples: all.iter().filter(|r| r.1 == i).count(),
                cv_accuracy: (row > 0).then(|| confusion[i][i] as f64 / row as f64),
            }
        })
        .collect();
    let (templates, matching) = match matcher {
        Some((_, t, mo)) => (t, Some(mo)),
        None => (Vec::new(), None),
    };
    // Template matching alone: the matched class whose template correlates best.
    let nt = templates.len();
    let matched: Vec<(&[f64], usize)> = all
        .iter()
        .filter_map(|(x, c)| {
            let own = templates.iter().position(|t| t.name == classes[*c].1)?;
            Some((&x[x.len() - nt..], own))
        })
        .collect();
    let (matched_bias, matched_accuracy) = if nt > 1 && !matched.is_empty() {
        let (b, a) = fit_template_bias(&matched, nt);
        (b, Some(a))
    } else {
        (Vec::new(), None)
    };
    Ok(ShapeClassifier {
        voxel_size: voxel.expect("at least one tomogram"),
        options: o,
        classes: cls,
        lda,
        cv_confusion: confusion,
        templates,
        matching,
        matched_bias,
        matched_accuracy,
    })
}

/// The templates of the `matched` classes, low-passed by `sigma_a` Å, at voxel size `v`, all
/// compared on one ball (the largest class radius plus a voxel), so that their correlations
/// are comparable: on balls of each class's own radius, the leave-one-tomogram-out accuracy of
/// β-galactosidase / thyroglobulin was 0.49 / 0.55, on one ball 0.61 / 0.66.
fn match_templates(
    templates: &[RawTemplate],
    matched: &[String],
    v: f64,
    sigma_a: f64,
) -> Result<Vec<MatchTemplate>> {
    let radius = templates
        .iter()
        .filter(|t| matched.contains(&t.name))
        .map(|t| t.radius_a / v + 1.0)
        .fold(0.0, f64::max);
    matched
        .iter()
        .map(|n| {
            let t = templates.iter().find(|t| &t.name == n).ok_or_else(|| {
                anyhow!(
                    "shape-classifier-train: no template of `{n}` among the templates ({})",
                    templates.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
                )
            })?;
            if (t.voxel_size - v).abs() > 0.01 * v {
                bail!(
                    "shape-classifier-train: the template of `{n}` is at {} Å per voxel, the tomograms at {v} Å; make the templates at the tomograms' voxel size",
                    t.voxel_size
                );
            }
            Ok(MatchTemplate {
                name: n.clone(),
                shape: t.shape,
                data: gaussian(&t.data, t.shape, sigma_a / v),
                radius,
                locate_radius: t.radius_a / v + 1.0,
            })
        })
        .collect()
}

impl NodeDef for ShapeTrainNode {
    type Params = TrainParams;
    const NAME: &'static str = "shape-classifier-train";
    const DOC: &'static str = "Learn to tell particle classes apart by the density around them: a second stage after a segmentation network that finds particles but confuses classes of similar size.\n\n\
        Each true particle gives `copies` samples from starts jittered by up to `jitter_A` per axis (as a picker misses the centre). From each start the centre is found as the centroid of the positive density \
        (smoothed by `smoothing_A`) within `window_A`, iterated; the features are the mass, radius of gyration and principal extents of that density, and radial profiles of the tomogram about the centre out to `profile_radius_A`, \
        along z and across it (the missing wedge). For the `matched` classes, the best normalised cross-correlation of each class template is added: templates low-passed, rotated to `orientations` uniform orientations, \
        each filtered by the microscope's CTF (`ctf`) and missing wedge (`tilt_range`), compared over translations (±`match_shift` about the centre, or a search of radius `match_search_A` about the start). \
        Empty ice (`background`) and the rims of particles (`rims`) are learnt as classes of their own. A linear discriminant (pooled covariance, `ridge`) is fitted to the features; its leave-one-tomogram-out accuracy per class is logged and stored, \
        and so is how often the best-correlating template (after fitted per-template offsets) names a matched class right. See docs/picking.md, \"Second stage\".";
    const INPUTS: &'static [Port] = &[
        port(
            "tomograms",
            "volume",
            "training tomograms (gathered, `node.port[*]`)",
        ),
        port(
            "particles",
            "particles",
            "their true particle tables (gathered from the same instances)",
        ),
        port(
            "templates",
            "templates",
            "the class templates (used for the `matched` classes)",
        ),
    ];
    const OUTPUTS: &'static [Port] = &[port(
        "classifier",
        "shape_classifier",
        "the discriminant, its feature settings and its cross-validated accuracy",
    )];
    fn check(p: &TrainParams) -> Result<()> {
        let pos = |v: f64, what: &str| -> Result<()> {
            if !(v > 0.0 && v.is_finite()) {
                bail!("shape-classifier-train: {what} must be > 0 Å, got {v}");
            }
            Ok(())
        };
        pos(p.window_a, "window_A")?;
        pos(p.profile_radius_a, "profile_radius_A")?;
        if !(p.smoothing_a >= 0.0 && p.smoothing_a.is_finite()) {
            bail!("shape-classifier-train: smoothing_A must be >= 0 Å");
        }
        if !(p.jitter_a >= 0.0 && p.jitter_a.is_finite()) {
            bail!("shape-classifier-train: jitter_A must be >= 0 Å");
        }
        if p.copies == 0 {
            bail!("shape-classifier-train: copies must be >= 1");
        }
        if !(p.ridge >= 0.0 && p.ridge.is_finite()) {
            bail!("shape-classifier-train: ridge must be >= 0");
        }
        if !(p.match_search_a >= 0.0 && p.match_search_a.is_finite()) {
            bail!("shape-classifier-train: match_search_A must be >= 0 Å");
        }
        if let Some(m) = &p.ctf {
            m.validate().context("shape-classifier-train")?;
        }
        if p.matched.is_empty() {
            for (set, name) in [
                (p.ctf.is_some(), "ctf"),
                (p.tilt_range.is_some(), "tilt_range"),
                (p.match_search_a > 0.0, "match_search_A"),
            ] {
                if set {
                    bail!("shape-classifier-train: `{name}` applies to matched templates; list classes in `matched` or drop it");
                }
            }
        } else if p.orientations == 0 {
            bail!("shape-classifier-train: orientations must be >= 1 with `matched` classes");
        }
        if let Some([lo, hi]) = p.tilt_range {
            if !(-90.0..=90.0).contains(&lo) || !(-90.0..=90.0).contains(&hi) || lo >= hi {
                bail!("shape-classifier-train: tilt_range must be [min, max] degrees with -90 <= min < max <= 90, got [{lo}, {hi}]");
            }
        }
        Ok(())
    }
    fn create(p: TrainParams, info: &NodeInfo) -> Result<Self> {
        Ok(ShapeTrainNode {
            p,
            seed: info.seed,
            tomos: BTreeMap::new(),
            tables: Vec::new(),
            templates: Vec::new(),
        })
    }
}

fn yes() -> bool {
    true
}

/// Parameters of `pick-reclassify`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReclassifyParams {
    /// The group of classes to re-decide: a pick of one of them gets the nearest of them
    /// (default: every class of the classifier). Picks of other classes pass unchanged.
    #[serde(default)]
    pub classes: Vec<String>,
    /// Move each re-decided pick, within `window_A`, to where its class's template fits best
    /// (a classifier trained with `match_search_A`) or else to the density's centroid.
    #[serde(default = "yes")]
    pub recentre: bool,
    /// Drop the re-decided picks whose nearest class is `background` (empty ice) or `rim` (the
    /// edge of a particle), when the classifier learnt them.
    #[serde(default = "yes")]
    pub reject_background: bool,
    /// When the discriminant calls a pick one of the group's matched classes (templates the
    /// classifier matched), let the best-correlating of those templates name it: on β-
    /// galactosidase and thyroglobulin it is right more often than the discriminant.
    #[serde(default = "yes")]
    pub name_by_template: bool,
    /// Replace the score of each pick named by template with that template's best correlation
    /// (the network's score is kept as `network_score`); tune thresholds on it downstream.
    /// `nms_fraction` then weighs these correlations against the other classes' network
    /// scores (probabilities, usually higher): an untouched pick wins a tie of places.
    #[serde(default)]
    pub template_score: bool,
    /// With `template_score`: score each pick by its template's correlation on the template's
    /// own ball (`template_local_cc`: template matching's local correlation under a mask of the
    /// particle's size) instead of the common ball. Suppression still ranks the picks by the
    /// common-ball correlation, which compares templates of different sizes fairly.
    #[serde(default)]
    pub local_score: bool,
    /// After re-deciding and recentring, drop a pick when a better one (higher score, or with
    /// `local_score` higher common-ball correlation) lies closer than `nms_fraction × (r_i +
    /// r_j)` Å (the classes' radii), as pick-nms does; 0: keep all.
    #[serde(default = "half")]
    pub nms_fraction: f64,
    /// Per class, the radius in Å around its picks within which no pick of another class can
    /// be a particle, whatever `nms_fraction` allows: e.g. a VLP's outer radius plus the
    /// smallest half-width of its neighbours, to drop picks on its shell (its picks must be
    /// centred: `pick-nms` with `centroid`).
    #[serde(default, rename = "exclusion_A")]
    pub exclusion_a: BTreeMap<String, f64>,
}

fn half() -> f64 {
    0.5
}

/// `pick-reclassify`.
pub struct ReclassifyNode {
    p: ReclassifyParams,
    picks: Vec<serde_json::Map<String, serde_json::Value>>,
    tomo: Assembler<f32>,
    classifier: Option<ShapeClassifier>,
}

impl Node for ReclassifyNode {
    fn process(&mut self, _ctx: &mut Ctx, input: usize, msg: Message) -> Result<()> {
        match input {
            0 => self.picks.push(msg.meta),
            1 => self.tomo.add(&msg).context("tomogram")?,
            _ => self.classifier = Some(ShapeClassifier::from_message(&msg)?),
        }
        Ok(())
    }

    fn finish(&mut self, ctx: &mut Ctx) -> Result<()> {
        let model = self
            .classifier
            .take()
            .ok_or_else(|| anyhow!("pick-reclassify: no classifier arrived"))?;
        let vol = std::mem::take(&mut self.tomo)
            .finish()
            .context("pick-reclassify: tomogram")?;
        let r = Reclassifier::new(&model, &self.p, vol)?;
        for mut meta in std::mem::take(&mut self.picks) {
            let n = r.apply(&mut meta, &|m| ctx.warn(m))?;
            ctx.info(format!(
                "pick-reclassify: {}: of {} picks, {} changed class, {} were dropped as empty ice or a rim and {} as too close to a better one",
                n.tomogram, n.picks, n.changed, n.rejected, n.merged
            ));
            ctx.emit("particles", Message::json(serde_json::Value::Object(meta)))?;
        }
        Ok(())
    }
}

/// A classifier bound to one tomogram and one group of classes.
pub struct Reclassifier<'a> {
    model: &'a ShapeClassifier,
    group: Vec<usize>,
    /// The classes that are not particles: `background` and `rim`.
    reject: Vec<usize>,
    /// Drop the picks that look most like a `reject` class (else they keep their best group class).
    reject_background: bool,
    recentre: bool,
    prep: Prepared,
    matcher: Option<Matcher>,
    shape: [usize; 3],
    /// (template index, class index) of the group's matched classes, when at least two of
    /// them name picks by template.
    named_by_template: Vec<(usize, usize)>,
    template_score: bool,
    local_score: bool,
    nms_fraction: f64,
    exclusion: BTreeMap<String, f64>,
}

impl<'a> Reclassifier<'a> {
    /// Check the voxel size and the group, and prepare the tomogram.
    pub fn new(
        model: &'a ShapeClassifier,
        p: &ReclassifyParams,
        vol: tomoflow_sdk::volume::Volume<f32>,
    ) -> Result<Reclassifier<'a>> {
        let v = vol.voxel_size[2];
        if (v - model.voxel_size).abs() > 0.01 * model.voxel_size {
            bail!(
                "pick-reclassify: the classifier was trained at {} Å per voxel, the tomogram has {v} Å; resample the tomogram (or train at its voxel size)",
                model.voxel_size
            );
        }
        let group: Vec<usize> = if p.classes.is_empty() {
            (0..model.classes.len())
                .filter(|&i| ![BACKGROUND, RIM].contains(&model.classes[i].name.as_str()))
                .collect()
        } else {
            p.classes
                .iter()
                .map(|n| {
                    model
                        .classes
                        .iter()
                        .position(|c| &c.name == n)
                        .ok_or_else(|| {
                            anyhow!(
                                "pick-reclassify: class `{n}` is not one the classifier knows ({})",
                                model
                                    .classes
                                    .iter()
                                    .map(|c| c.name.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        })
                })
                .collect::<Result<_>>()?
        };
        let shape = vol.shape;
        let prep =
            Prepared::new(vol.data, vol.shape, model.options.sigma).context("pick-reclassify")?;
        let mut named_by_template: Vec<(usize, usize)> = model
            .templates
            .iter()
            .enumerate()
            .filter_map(|(t, tm)| {
                let c = model.classes.iter().position(|c| c.name == tm.name)?;
                group.contains(&c).then_some((t, c))
            })
            .collect();
        // Classifiers saved before the offsets were fitted keep naming by the discriminant.
        if !p.name_by_template || named_by_template.len() < 2 || model.matched_bias.is_empty() {
            named_by_template.clear();
        }
        Ok(Reclassifier {
            model,
            group,
            reject: (0..model.classes.len())
                .filter(|&i| [BACKGROUND, RIM].contains(&model.classes[i].name.as_str()))
                .collect(),
            reject_background: p.reject_background,
            recentre: p.recentre,
            prep,
            matcher: model.matching.map(|mo| Matcher::new(&model.templates, &mo)),
            shape,
            named_by_template,
            template_score: p.template_score,
            local_score: p.local_score,
            nms_fraction: p.nms_fraction,
            exclusion: p.exclusion_a.clone(),
        })
    }

    /// Re-decide the picks of a particle-table message in place.
    pub fn apply(
        &self,
        meta: &mut serde_json::Map<String, serde_json::Value>,
        warn: &dyn Fn(String),
    ) -> Result<Outcome> {
        let (model, o) = (self.model, self.model.options);
        let table = ParticleTable::from_json(&serde_json::Value::Object(meta.clone()))
            .context("pick-reclassify: picks: expected a particle table")?;
        if table.tomogram.shape != self.shape {
            warn(format!(
                "pick-reclassify: picks of {:?} are for a {:?} volume, the tomogram is {:?}",
                table.tomogram.name, table.tomogram.shape, self.shape
            ));
        }
        let mut out = Outcome {
            tomogram: table.tomogram.name.clone(),
            picks: table.particles.len(),
            ..Outcome::default()
        };
        let choices: Vec<usize> = self.group.iter().chain(&self.reject).copied().collect();
        let rows = meta
            .get_mut("particles")
            .and_then(|p| p.as_array_mut())
            .ok_or_else(|| anyhow!("pick-reclassify: picks have no `particles` list"))?;
        // Features of the picks to re-decide, in parallel.
        let in_group = |class: &str| self.group.iter().any(|&g| model.classes[g].name == class);
        // (the pick in voxels (z, y, x), what is seen from it)
        let seen: Vec<Option<([f64; 3], Seen)>> = table
            .particles
            .par_iter()
            .map(|part| {
                in_group(&part.class).then(|| {
                    let [x, y, z] = table.voxel_coords(part);
                    (
                        [z, y, x],
                        describe(&self.prep, self.matcher.as_ref(), [z, y, x], &o),
                    )
                })
            })
            .collect();
        let mut keep = vec![true; rows.len()];
        // What suppression ranks a pick by, when not its score.
        let mut ranks: Vec<Option<f64>> = vec![None; rows.len()];
        for ((((row, part), keep), rank), seen) in rows
            .iter_mut()
            .zip(&table.particles)
            .zip(keep.iter_mut())
            .zip(ranks.iter_mut())
            .zip(seen)
        {
            let Some(([z, y, x], seen)) = seen else {
                continue;
            };
            let (mut best, post) = model.lda.classify(&seen.features, &choices);
            if self.reject.contains(&best) {
                if self.reject_background {
                    *keep = false;
                    out.rejected += 1;
                    continue;
                }
                // The most likely particle class: the group comes first in `choices`.
                best = self.group[(0..self.group.len())
                    .max_by(|&a, &b| post[a].total_cmp(&post[b]))
                    .expect("a group class")];
            }
            // The matched templates' correlations end the features.
            let cc = &seen.features[seen.features.len() - model.templates.len()..];
            if self.named_by_template.iter().any(|&(_, c)| c == best) {
                let allowed: Vec<usize> = self.named_by_template.iter().map(|m| m.0).collect();
                let t = best_template(cc, &model.matched_bias, &allowed).expect("two or more");
                best = self
                    .named_by_template
                    .iter()
                    .find(|m| m.0 == t)
                    .expect("allowed")
                    .1;
                if self.template_score {
                    row["network_score"] = row["score"].clone();
                    row["score"] = if self.local_score {
                        *rank = Some(cc[t]);
                        seen.local_cc[t]
                    } else {
                        cc[t]
                    }
                    .into();
                }
            }
            let to = &model.classes[best];
            let info = table
                .classes
                .iter()
                .find(|c| c.name == to.name)
                .ok_or_else(|| {
                    anyhow!(
                        "pick-reclassify: the picks' class table has no `{}`",
                        to.name
                    )
                })?;
            if to.name != part.class {
                out.changed += 1;
            }
            row["class"] = to.name.clone().into();
            row["class_id"] = info.id.into();
            row["shape_posterior"] = serde_json::Value::Object(
                choices
                    .iter()
                    .zip(&post)
                    .map(|(&g, p)| (model.classes[g].name.clone(), (*p).into()))
                    .collect(),
            );
            if model.matching.is_some() {
                let by_template = |v: &[f64]| {
                    serde_json::Value::Object(
                        model
                            .templates
                            .iter()
                            .zip(v)
                            .map(|(t, c)| (t.name.clone(), (*c).into()))
                            .collect(),
                    )
                };
                row["template_cc"] = by_template(cc);
                row["template_local_cc"] = by_template(&seen.local_cc);
            }
            // The centre: where the class's template fits best when it was searched for, else
            // the density's centroid.
            let c = match model.matching {
                Some(mo) if mo.search > 0 => model
                    .templates
                    .iter()
                    .position(|t| t.name == to.name)
                    .map_or(seen.centre, |k| seen.matched_at[k]),
                _ => seen.centre,
            };
            if self.recentre {
                move_to(row, &table, [z, y, x], c, o.window);
            }
        }
        let mut k = keep.iter();
        rows.retain(|_| *k.next().expect("one flag per row"));
        if self.nms_fraction > 0.0 || !self.exclusion.is_empty() {
            let rank = kept_ranks(rows, &ranks, &keep);
            out.merged = suppress(rows, &table, self.nms_fraction, &self.exclusion, &rank);
        }
        Ok(out)
    }
}

/// Move a particle-table row from `pick` to `c` (z, y, x voxels) when that is at most `window`
/// voxels away.
fn move_to(
    row: &mut serde_json::Value,
    table: &ParticleTable,
    pick: [f64; 3],
    c: [f64; 3],
    window: f64,
) {
    let moved = (0..3).map(|a| (c[a] - pick[a]).powi(2)).sum::<f64>().sqrt();
    if moved <= window {
        let t = &table.tomogram;
        row["x"] = (t.origin[2] + c[2] * t.voxel_size[2]).into();
        row["y"] = (t.origin[1] + c[1] * t.voxel_size[1]).into();
        row["z"] = (t.origin[0] + c[0] * t.voxel_size[0]).into();
        if row.get("voxel").is_some() {
            row["voxel"] = serde_json::json!(c.map(|v| v.round() as i64));
        }
    }
}

/// What `pick-reclassify` did to one table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// The tomogram's name.
    pub tomogram: String,
    /// Picks in.
    pub picks: usize,
    /// Picks given another class.
    pub changed: usize,
    /// Picks dropped as empty ice.
    pub rejected: usize,
    /// Picks dropped because a better one lies too close (after recentring).
    pub merged: usize,
}

/// What suppression ranks each kept row by: `ranks` and `keep` are one per row before the
/// rejected rows were removed from `rows`; a row without a rank of its own ranks by its score.
fn kept_ranks(rows: &[serde_json::Value], ranks: &[Option<f64>], keep: &[bool]) -> Vec<f64> {
    let kept: Vec<Option<f64>> = ranks
        .iter()
        .zip(keep)
        .filter(|(_, &k)| k)
        .map(|(r, _)| *r)
        .collect();
    assert_eq!(kept.len(), rows.len(), "one rank per kept row");
    rows.iter()
        .zip(kept)
        .map(|(row, r)| r.unwrap_or_else(|| row["score"].as_f64().unwrap_or(0.0)))
        .collect()
}

/// Greedy non-maximum suppression of particle-table rows by `rank` (one per row, higher
/// first): a row is dropped when a kept one lies closer than `fraction × (r_i + r_j)` Å (radii
/// from the table's classes) or, for rows of different classes, than either class's
/// `exclusion` radius (Å). Returns how many were dropped; the order of the rest is kept.
fn suppress(
    rows: &mut Vec<serde_json::Value>,
    table: &ParticleTable,
    fraction: f64,
    exclusion: &BTreeMap<String, f64>,
    rank: &[f64],
) -> usize {
    assert_eq!(rank.len(), rows.len(), "one rank per row");
    let class = |i: usize| rows[i]["class"].as_str().unwrap_or("");
    let radius = |i: usize| {
        table
            .classes
            .iter()
            .find(|k| k.name == class(i))
            .map_or(0.0, |k| k.radius_a)
    };
    let excl = |i: usize| exclusion.get(class(i)).copied().unwrap_or(0.0);
    let limit = |i: usize, j: usize| {
        let f = fraction * (radius(i) + radius(j));
        if class(i) == class(j) {
            f
        } else {
            f.max(excl(i)).max(excl(j))
        }
    };
    let rmax = table.classes.iter().map(|k| k.radius_a).fold(0.0, f64::max);
    let emax = exclusion.values().copied().fold(0.0, f64::max);
    let reach = (2.0 * fraction * rmax).max(emax);
    let pos = |i: usize| ["x", "y", "z"].map(|a| rows[i][a].as_f64().unwrap_or(0.0));
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|&a, &b| rank[b].total_cmp(&rank[a]).then(a.cmp(&b)));
    let mut keep = vec![false; rows.len()];
    for i in crate::nms::suppress_in_order(order, pos, limit, reach) {
        keep[i] = true;
    }
    let before = rows.len();
    let mut k = keep.iter();
    rows.retain(|_| *k.next().expect("one flag per row"));
    before - rows.len()
}

impl NodeDef for ReclassifyNode {
    type Params = ReclassifyParams;
    const NAME: &'static str = "pick-reclassify";
    const DOC: &'static str = "Re-decide the class of picks by the density around them, with a classifier from shape-classifier-train: every pick of a class in `classes` gets the nearest class of that group \
        (the others pass unchanged) or, with `reject_background` and a classifier that learnt empty ice or rims, is dropped when one of those is nearer; its `shape_posterior` is recorded, and each matched template's correlation on the common ball (`template_cc`) and on its own ball (`template_local_cc`). \
        Among the group's matched classes the best-correlating template names the pick (`name_by_template`), and with `template_score` its correlation becomes the pick's score. With `recentre` the pick moves to where that template fits best \
        (with a searching classifier) or to the density's centroid; then picks closer than `nms_fraction × (r_i + r_j)` to a better one are dropped, or of another class within a class's `exclusion_A` (a VLP's shell). \
        Tune per-class thresholds on validation picks of the same pipeline and apply them with picks-threshold.";
    const INPUTS: &'static [Port] = &[
        port("picks", "particles", "picks of one tomogram"),
        port("tomogram", "volume", "the tomogram they were picked in"),
        port(
            "classifier",
            "shape_classifier",
            "from shape-classifier-train",
        ),
    ];
    const OUTPUTS: &'static [Port] = &[port(
        "particles",
        "particles",
        "the picks with classes re-decided",
    )];
    fn check(p: &ReclassifyParams) -> Result<()> {
        if !(p.nms_fraction >= 0.0 && p.nms_fraction.is_finite()) {
            bail!(
                "pick-reclassify: nms_fraction must be >= 0, got {}",
                p.nms_fraction
            );
        }
        for (c, r) in &p.exclusion_a {
            if !(*r >= 0.0 && r.is_finite()) {
                bail!("pick-reclassify: exclusion_A of `{c}` must be >= 0 Å, got {r}");
            }
        }
        if p.local_score && !p.template_score {
            bail!("pick-reclassify: local_score chooses which template correlation scores a pick; it needs template_score: true");
        }
        Ok(())
    }
    fn create(p: ReclassifyParams, _info: &NodeInfo) -> Result<Self> {
        Ok(ReclassifyNode {
            p,
            picks: Vec::new(),
            tomo: Assembler::new(),
            classifier: None,
        })
    }
}

/// Parameters of `picks-threshold`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ThresholdParams {}

/// `picks-threshold`.
pub struct PicksThresholdNode {
    picks: Vec<serde_json::Map<String, serde_json::Value>>,
    thresholds: Option<BTreeMap<String, f32>>,
}

impl Node for PicksThresholdNode {
    fn process(&mut self, _ctx: &mut Ctx, input: usize, msg: Message) -> Result<()> {
        if input == 0 {
            self.picks.push(msg.meta);
        } else {
            let t = crate::nms_nodes::parse_thresholds(&msg.meta)?;
            self.thresholds.get_or_insert_with(BTreeMap::new).extend(t);
        }
        Ok(())
    }
    fn finish(&mut self, ctx: &mut Ctx) -> Result<()> {
        let th = self
            .thresholds
            .take()
            .ok_or_else(|| anyhow!("picks-threshold: no thresholds message arrived"))?;
        for mut meta in std::mem::take(&mut self.picks) {
            let rows = meta
                .get_mut("particles")
                .and_then(|p| p.as_array_mut())
                .ok_or_else(|| anyhow!("picks-threshold: picks have no `particles` list"))?;
            let before = rows.len();
            rows.retain(|r| {
                let class = r["class"].as_str().unwrap_or("");
                let score = r["score"].as_f64().unwrap_or(1.0);
                th.get(class).is_none_or(|&t| score >= t as f64)
            });
            ctx.info(format!(
                "picks-threshold: kept {} of {before} picks",
                rows.len()
            ));
            ctx.emit("particles", Message::json(serde_json::Value::Object(meta)))?;
        }
        Ok(())
    }
}

impl NodeDef for PicksThresholdNode {
    type Params = ThresholdParams;
    const NAME: &'static str = "picks-threshold";
    const DOC: &'static str = "Keep the picks whose score reaches their class's threshold, from a `metrics` input (evaluate's `thresholds` port, tuned on validation picks made the same way). Classes the input does not list keep every pick.";
    const INPUTS: &'static [Port] = &[
        port("picks", "particles", "picks of one tomogram"),
        port(
            "thresholds",
            "metrics",
            "per-class thresholds: {\"thresholds\": {class: t}}",
        ),
    ];
    const OUTPUTS: &'static [Port] = &[port("particles", "particles", "the picks kept")];
    fn create(_p: ThresholdParams, _info: &NodeInfo) -> Result<Self> {
        Ok(PicksThresholdNode {
            picks: Vec::new(),
            thresholds: None,
        })
    }
}

/// Parameters of `shape-classifier-read`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadParams {
    /// The `.json` file shape-classifier-write exported (its content is part of the cache key).
    #[schemars(extend("x-tomoflow" = "input-file"))]
    pub path: String,
}

/// `shape-classifier-write`: a classifier as JSON.
pub struct ShapeWriteNode {
    path: std::path::PathBuf,
    model: Option<ShapeClassifier>,
}

impl Node for ShapeWriteNode {
    fn process(&mut self, _ctx: &mut Ctx, _input: usize, msg: Message) -> Result<()> {
        self.model = Some(ShapeClassifier::from_message(&msg)?);
        Ok(())
    }
    fn finish(&mut self, _ctx: &mut Ctx) -> Result<()> {
        let m = self
            .model
            .take()
            .ok_or_else(|| anyhow!("shape-classifier-write: no classifier arrived"))?;
        let mut v = serde_json::to_value(&m)?;
        v["kind"] = "shape_classifier".into();
        let mut s = serde_json::to_string_pretty(&v)?;
        s.push('\n');
        tomoflow_cryo::image::write_atomic(&self.path, s.as_bytes())
    }
}

impl NodeDef for ShapeWriteNode {
    type Params = crate::nodes::PathParams;
    const NAME: &'static str = "shape-classifier-write";
    const DOC: &'static str =
        "Export a shape classifier as JSON (read it back with shape-classifier-read).";
    const INPUTS: &'static [Port] = &[port("classifier", "shape_classifier", "the classifier")];
    const OUTPUTS: &'static [Port] = &[];
    const EXPORT_EXTENSIONS: &'static [&'static str] = &["json"];
    fn create(p: crate::nodes::PathParams, info: &NodeInfo) -> Result<Self> {
        Ok(ShapeWriteNode {
            path: info.resolve(&p.path),
            model: None,
        })
    }
}

/// `shape-classifier-read`: a classifier from a JSON file `shape-classifier-write` wrote.
pub struct ShapeReadNode {
    path: std::path::PathBuf,
}

impl Node for ShapeReadNode {
    fn process(&mut self, _ctx: &mut Ctx, _input: usize, _msg: Message) -> Result<()> {
        Ok(())
    }
    fn finish(&mut self, ctx: &mut Ctx) -> Result<()> {
        let text = std::fs::read_to_string(&self.path).with_context(|| {
            format!("shape-classifier-read: cannot read {}", self.path.display())
        })?;
        let v: serde_json::Value = serde_json::from_str(&text).with_context(|| {
            format!("shape-classifier-read: {} is not JSON", self.path.display())
        })?;
        let m: ShapeClassifier = serde_json::from_value(v).with_context(|| {
            format!(
                "shape-classifier-read: {} is not a shape classifier (export one with `to: FILE.json` from shape-classifier-train.classifier)",
                self.path.display()
            )
        })?;
        let d = m.options.dims() + m.templates.len();
        let k = m.classes.len();
        if m.lda.centre.len() != d
            || m.lda.scale.len() != d
            || m.lda.precision.len() != d * d
            || m.lda.means.len() != k
            || m.lda.means.iter().any(|r| r.len() != d)
            || k < 2
        {
            bail!(
                "shape-classifier-read: {}: {k} classes and {d} features do not match the discriminant's sizes",
                self.path.display()
            );
        }
        ctx.emit("classifier", m.to_message()?)
    }
}

impl NodeDef for ShapeReadNode {
    type Params = ReadParams;
    const NAME: &'static str = "shape-classifier-read";
    const DOC: &'static str = "Load a shape classifier that shape-classifier-write exported (`.json`), to re-decide picks in a later workflow.";
    const INPUTS: &'static [Port] = &[];
    const OUTPUTS: &'static [Port] = &[port("classifier", "shape_classifier", "the classifier")];
    fn create(p: ReadParams, info: &NodeInfo) -> Result<Self> {
        Ok(ShapeReadNode {
            path: info.resolve(&p.path),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape::tests::balls;
    use tomoflow_cryo::particles::{ClassInfo, Particle, TomogramInfo};
    use tomoflow_sdk::volume::Volume;

    const SHAPE: [usize; 3] = [32, 48, 48];
    const VOXEL: f64 = 10.0;

    /// Two kinds of balls of similar mass on a grid: `small` (radius 3.5, density 1.5) and
    /// `large` (radius 4.5, density 1), alternating, with noise.
    fn scene(seed: u64) -> (Vec<f32>, ParticleTable) {
        let mut rng = Rng::new(seed);
        let mut v = balls(SHAPE, &[], seed);
        let mut particles = Vec::new();
        let grid = [8.0, 24.0, 40.0];
        for (i, (z, y, x)) in grid[..2]
            .iter()
            .flat_map(|&z| grid.iter().flat_map(move |&y| grid.map(|x| (z, y, x))))
            .enumerate()
        {
            let c = [
                z + rng.range(-1.0, 1.0),
                y + rng.range(-1.0, 1.0),
                x + rng.range(-1.0, 1.0),
            ];
            let small = (i + seed as usize).is_multiple_of(2);
            let (r, rho) = if small { (3.5, 1.5) } else { (4.5, 1.0) };
            for (j, o) in v.iter_mut().enumerate() {
                let (vz, vy, vx) = (
                    j / (SHAPE[1] * SHAPE[2]),
                    j / SHAPE[2] % SHAPE[1],
                    j % SHAPE[2],
                );
                let d2 = (vz as f64 - c[0]).powi(2)
                    + (vy as f64 - c[1]).powi(2)
                    + (vx as f64 - c[2]).powi(2);
                if d2 <= r * r {
                    *o += rho;
                }
            }
            particles.push(Particle {
                class: if small { "small" } else { "large" }.into(),
                class_id: if small { 1 } else { 2 },
                x: c[2] * VOXEL,
                y: c[1] * VOXEL,
                z: c[0] * VOXEL,
                rot: 0.0,
                tilt: 0.0,
                psi: 0.0,
                q: [1.0, 0.0, 0.0, 0.0],
                instance: i as u32 + 1,
                score: 1.0,
            });
        }
        let table = ParticleTable {
            tomogram: TomogramInfo {
                name: format!("TS_{seed}"),
                shape: SHAPE,
                voxel_size: [VOXEL; 3],
                origin: [0.0; 3],
            },
            classes: vec![
                ClassInfo {
                    id: 1,
                    name: "small".into(),
                    radius_a: 35.0,
                },
                ClassInfo {
                    id: 2,
                    name: "large".into(),
                    radius_a: 45.0,
                },
            ],
            particles,
        };
        (v, table)
    }

    fn assembled(v: Vec<f32>, voxel: f64) -> Assembler<f32> {
        let vol = Volume {
            data: v,
            shape: SHAPE,
            voxel_size: [voxel; 3],
            origin: [0.0; 3],
        };
        let mut a = Assembler::new();
        for m in vol.to_messages(8, 0) {
            a.add(&m).unwrap();
        }
        a
    }

    fn params() -> TrainParams {
        serde_json::from_value(
            serde_json::json!({"window_A": 60, "profile_radius_A": 80, "jitter_A": 20}),
        )
        .unwrap()
    }

    fn reclassify_params(classes: &[&str], recentre: bool) -> ReclassifyParams {
        serde_json::from_value(serde_json::json!({"classes": classes, "recentre": recentre}))
            .unwrap()
    }

    #[test]
    fn template_offsets_undo_a_template_that_correlates_higher_with_everything() {
        // Template 0 correlates 0.05 higher with every particle: by the plain best
        // correlation all are called class 0; with the fitted offset each is named right.
        let mut rng = Rng::new(3);
        let rows: Vec<(Vec<f64>, usize)> = (0..200)
            .map(|i| {
                let own = i % 2;
                let noise = 0.01 * rng.normal();
                let cc = if own == 0 {
                    vec![0.40 + noise, 0.32]
                } else {
                    vec![0.40 + noise, 0.38]
                };
                (cc, own)
            })
            .collect();
        let samples: Vec<(&[f64], usize)> = rows.iter().map(|(c, o)| (c.as_slice(), *o)).collect();
        let plain = samples
            .iter()
            .filter(|(cc, own)| best_template(cc, &[], &[0, 1]) == Some(*own))
            .count();
        assert!(plain < 110, "{plain} of 200 by the plain best correlation");
        let (bias, acc) = fit_template_bias(&samples, 2);
        assert_eq!(bias[0], 0.0);
        assert!(acc > 0.95, "accuracy {acc}, offsets {bias:?}");
        assert!(bias[1] < -0.01 && bias[1] > -0.09, "{bias:?}");
        // Restricted to one template, it is the one named.
        assert_eq!(best_template(&[0.9, 0.1], &bias, &[1]), Some(1));
    }

    #[test]
    fn suppression_keeps_the_better_of_two_close_picks() {
        let (_, mut table) = scene(1);
        table.particles.truncate(2);
        let mut close = table.particles[0].clone();
        close.x += 30.0; // a `large` pick: 30 Å < 0.5 × (45 + 45)
        close.score = 0.5;
        table.particles[0].score = 0.9;
        table.particles.push(close);
        let mut v = serde_json::to_value(&table).unwrap();
        let rows = v["particles"].as_array_mut().unwrap();
        let none = BTreeMap::new();
        let by_score = scores(rows);
        assert_eq!(suppress(rows, &table, 0.5, &none, &by_score), 1);
        assert_eq!(scores(rows), [0.9, 1.0]);
        // At a smaller fraction (0.25 × 90 = 22.5 Å < 30 Å) both stay.
        let mut v = serde_json::to_value(&table).unwrap();
        let rows = v["particles"].as_array_mut().unwrap();
        assert_eq!(suppress(rows, &table, 0.25, &none, &by_score), 0);
        // Ranked by something other than the score, the other of the two stays.
        let mut v = serde_json::to_value(&table).unwrap();
        let rows = v["particles"].as_array_mut().unwrap();
        assert_eq!(suppress(rows, &table, 0.5, &none, &[0.1, 1.0, 0.2]), 1);
        assert_eq!(scores(rows), [1.0, 0.5]);
    }

    /// Ranks stay with their rows when rejected rows are removed; rows without one rank by
    /// their score.
    #[test]
    fn kept_ranks_follow_the_rows_that_stay() {
        let rows: Vec<serde_json::Value> = [0.5, 0.7]
            .iter()
            .map(|s| serde_json::json!({ "score": s }))
            .collect();
        let ranks = [None, Some(9.0), Some(0.3)];
        assert_eq!(kept_ranks(&rows, &ranks, &[true, false, true]), [0.5, 0.3]);
        assert_eq!(kept_ranks(&rows, &ranks, &[false, true, true]), [9.0, 0.3]);
    }

    fn scores(rows: &[serde_json::Value]) -> Vec<f64> {
        rows.iter().map(|r| r["score"].as_f64().unwrap()).collect()
    }

    /// A class's exclusion radius drops the picks of other classes within it (a VLP's shell),
    /// not those of its own class, and not beyond it.
    #[test]
    fn an_exclusion_radius_drops_other_classes_on_the_shell() {
        let (_, mut table) = scene(1);
        table.particles.truncate(1);
        let big = table.particles[0].clone();
        assert_eq!(big.class, "large");
        table.particles[0].score = 0.9;
        let at = |class: &str, id: u32, dx: f64| {
            let mut p = big.clone();
            (p.class, p.class_id, p.score) = (class.into(), id, 0.5);
            p.x += dx;
            p
        };
        // 100 Å away: beyond 0.5 × (45 + 35) = 40 Å; within an exclusion of 120 Å but for
        // the pick of its own class; 150 Å away: beyond it.
        table.particles.extend([
            at("small", 1, 100.0),
            at("large", 2, -100.0),
            at("small", 1, 150.0),
        ]);
        let run = |excl: &[(&str, f64)]| {
            let mut v = serde_json::to_value(&table).unwrap();
            let rows = v["particles"].as_array_mut().unwrap();
            let e: BTreeMap<String, f64> = excl.iter().map(|(c, r)| (c.to_string(), *r)).collect();
            let rank = scores(rows);
            suppress(rows, &table, 0.5, &e, &rank);
            rows.iter()
                .map(|r| (r["x"].as_f64().unwrap() - big.x).round())
                .collect::<Vec<f64>>()
        };
        assert_eq!(run(&[]), [0.0, 100.0, -100.0, 150.0]);
        assert_eq!(run(&[("large", 120.0)]), [0.0, -100.0, 150.0]);
    }

    #[test]
    fn matching_settings_without_matched_templates_are_refused() {
        for extra in [
            serde_json::json!({"ctf": {"defocus": 3.0}}),
            serde_json::json!({"tilt_range": [-60, 60]}),
            serde_json::json!({"match_search_A": 40}),
            serde_json::json!({"matched": ["small"], "orientations": 0}),
            serde_json::json!({"matched": ["small"], "tilt_range": [60, -60]}),
            serde_json::json!({"matched": ["small"], "ctf": {"defocus": 3.0, "voltage": -1}}),
        ] {
            let mut v = serde_json::to_value(serde_json::json!({})).unwrap();
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            let p: TrainParams = serde_json::from_value(v).unwrap();
            let e = ShapeTrainNode::check(&p).unwrap_err().to_string();
            assert!(e.starts_with("shape-classifier-train"), "{extra}: {e}");
        }
    }

    #[test]
    fn rims_are_learnt_as_a_class_of_their_own() {
        let tomos = (1..3)
            .map(|s| {
                let (v, t) = scene(s);
                (format!("TS_{s}"), assembled(v, VOXEL), t)
            })
            .collect();
        let mut p = params();
        p.rims = 10;
        let m = train(tomos, &[], &p, 7, &|_| Ok(())).unwrap();
        let names: Vec<&str> = m.classes.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["small", "large", BACKGROUND, RIM]);
        assert_eq!(m.classes[3].samples, 2 * 10);
        // The default group leaves both non-particle classes out.
        let (v, _) = scene(4);
        let r = Reclassifier::new(
            &m,
            &reclassify_params(&[], true),
            assembled(v, VOXEL).finish().unwrap(),
        )
        .unwrap();
        assert_eq!(
            (r.group.as_slice(), r.reject.as_slice()),
            (&[0, 1][..], &[2, 3][..])
        );
    }

    fn model() -> ShapeClassifier {
        let tomos = (1..4)
            .map(|s| {
                let (v, t) = scene(s);
                (format!("TS_{s}"), assembled(v, VOXEL), t)
            })
            .collect();
        train(tomos, &[], &params(), 7, &|_| Ok(())).unwrap()
    }

    #[test]
    fn reclassify_fixes_wrong_classes_and_recentres() {
        let m = model();
        assert_eq!(
            m.classes
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            ["small", "large", BACKGROUND]
        );
        for c in &m.classes {
            // Empty ice in this packed scene is never more than a window from a particle, and
            // its starts drift onto them: its own accuracy is not asserted, the rejection is.
            if c.name == BACKGROUND {
                assert!(c.samples > 0);
            } else {
                assert_eq!(c.samples, 3 * 9 * 4, "3 scenes x 9 particles x 4 copies");
                assert!(c.cv_accuracy.unwrap() > 0.9, "{:?}", m.classes);
            }
        }
        // The held-out scene, every pick called `small` and 2 voxels off along each axis, and
        // two picks on empty ice between the particles.
        let (v, truth) = scene(11);
        let mut picks = truth.clone();
        for p in picks.particles.iter_mut() {
            (p.class, p.class_id) = ("small".into(), 1);
            p.x += 20.0;
            p.y -= 20.0;
            p.z += 20.0;
        }
        for at in [160.0, 320.0] {
            let mut p = picks.particles[0].clone();
            (p.x, p.y, p.z) = (at, at, 160.0);
            picks.particles.push(p);
        }
        let mut meta = match serde_json::to_value(&picks).unwrap() {
            serde_json::Value::Object(m) => m,
            _ => unreachable!(),
        };
        let p = reclassify_params(&[], true);
        let r = Reclassifier::new(&m, &p, assembled(v, VOXEL).finish().unwrap()).unwrap();
        let n = r.apply(&mut meta, &|w| panic!("{w}")).unwrap();
        let (changed, total) = (n.changed, n.picks);
        assert_eq!((total, n.rejected), (20, 2));
        let out = ParticleTable::from_json(&serde_json::Value::Object(meta)).unwrap();
        let right = out
            .particles
            .iter()
            .zip(&truth.particles)
            .filter(|(a, b)| a.class == b.class && a.class_id == b.class_id)
            .count();
        assert!(right >= 17, "{right} of 18 right");
        assert!(changed >= 8, "{changed} changed");
        for (a, b) in out.particles.iter().zip(&truth.particles) {
            let d = ((a.x - b.x).powi(2) + (a.y - b.y).powi(2) + (a.z - b.z).powi(2)).sqrt();
            assert!(d < 10.0, "recentred {d} Å from the truth");
        }
    }

    /// With `local_score` a matched pick is scored by its template's correlation on the
    /// template's own ball; without it, on the common ball.
    #[test]
    fn local_score_is_the_correlation_on_the_templates_own_ball() {
        let ball = |name: &str, r: f64, rho: f32| {
            let n = 13usize;
            let c = (n as f64 - 1.0) / 2.0;
            let data = (0..n * n * n)
                .map(|i| {
                    let d2 = (i / (n * n)) as f64 - c;
                    let d1 = (i / n % n) as f64 - c;
                    let d0 = (i % n) as f64 - c;
                    if d2 * d2 + d1 * d1 + d0 * d0 <= r * r {
                        rho
                    } else {
                        0.0
                    }
                })
                .collect();
            RawTemplate {
                name: name.into(),
                voxel_size: VOXEL,
                radius_a: r * VOXEL,
                shape: [n; 3],
                data,
            }
        };
        let templates = [ball("small", 3.5, 1.5), ball("large", 4.5, 1.0)];
        let tomos = (1..3)
            .map(|s| {
                let (v, t) = scene(s);
                (format!("TS_{s}"), assembled(v, VOXEL), t)
            })
            .collect();
        let p: TrainParams = serde_json::from_value(serde_json::json!({"window_A": 60,
            "profile_radius_A": 80, "jitter_A": 20, "matched": ["small", "large"],
            "orientations": 4, "match_search_A": 20}))
        .unwrap();
        let m = train(tomos, &templates, &p, 7, &|_| Ok(())).unwrap();
        let (v, truth) = scene(11);
        let run = |local: bool| {
            let p: ReclassifyParams = serde_json::from_value(serde_json::json!({
                "template_score": true, "local_score": local, "reject_background": false}))
            .unwrap();
            ReclassifyNode::check(&p).unwrap();
            let mut meta = match serde_json::to_value(&truth).unwrap() {
                serde_json::Value::Object(m) => m,
                _ => unreachable!(),
            };
            let r = Reclassifier::new(&m, &p, assembled(v.clone(), VOXEL).finish().unwrap());
            r.unwrap().apply(&mut meta, &|_| {}).unwrap();
            meta["particles"].as_array().unwrap().clone()
        };
        let (common, local) = (run(false), run(true));
        assert_eq!(common.len(), local.len());
        let mut differ = 0;
        for (a, b) in common.iter().zip(&local) {
            let c = a["class"].as_str().unwrap();
            assert_eq!(a["score"], a["template_cc"][c], "{a}");
            assert_eq!(b["score"], b["template_local_cc"][c], "{b}");
            assert_eq!(a["template_local_cc"], b["template_local_cc"]);
            // The largest template's own ball is the common one.
            if c == "large" {
                assert_eq!(a["template_cc"][c], a["template_local_cc"][c]);
            } else if a["template_cc"][c] != a["template_local_cc"][c] {
                differ += 1;
            }
        }
        assert!(differ > 0, "{common:?}");
        let bad: ReclassifyParams =
            serde_json::from_value(serde_json::json!({"local_score": true})).unwrap();
        let e = ReclassifyNode::check(&bad).unwrap_err().to_string();
        assert!(e.contains("needs template_score"), "{e}");
    }

    #[test]
    fn a_group_restricts_the_choice_and_bad_inputs_are_refused() {
        let m = model();
        let (v, truth) = scene(12);
        let vol = || assembled(v.clone(), VOXEL).finish().unwrap();
        // Only `small` in the group: every `small` pick stays small, `large` picks pass.
        let p = reclassify_params(&["small"], false);
        let mut meta = match serde_json::to_value(&truth).unwrap() {
            serde_json::Value::Object(m) => m,
            _ => unreachable!(),
        };
        let r = Reclassifier::new(&m, &p, vol()).unwrap();
        assert_eq!(r.apply(&mut meta, &|_| {}).unwrap().changed, 0);
        let out = ParticleTable::from_json(&serde_json::Value::Object(meta)).unwrap();
        assert_eq!(out.particles, truth.particles, "unchanged, not moved");
        let bad = reclassify_params(&["ribosome"], true);
        let e = Reclassifier::new(&m, &bad, vol())
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("`ribosome`") && e.contains("small, large"),
            "{e}"
        );
        let other = assembled(v.clone(), 8.0).finish().unwrap();
        let e = Reclassifier::new(&m, &p, other).err().unwrap().to_string();
        assert!(e.contains("trained at 10 Å") && e.contains("8 Å"), "{e}");
        let mut q = params();
        q.classes = vec!["small".into(), "medium".into()];
        let (v1, t1) = scene(1);
        let e = train(
            vec![("a".into(), assembled(v1, VOXEL), t1)],
            &[],
            &q,
            1,
            &|_| Ok(()),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("`medium`"), "{e}");
    }
}
