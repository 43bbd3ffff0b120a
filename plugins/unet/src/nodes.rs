//! Node types `unet-train` and `unet-infer`; the model file nodes are in `model_nodes.rs`.

use crate::data::{Class, Normalisation, Sampling, TrainingVolume};
use crate::infer::{infer, resample, Blend, Tiling};
use crate::model::{Model, ModelInfo};
use crate::net::Arch;
use crate::train::{train, HistoryRow, Hooks, Schedule, TrainConfig};
use anyhow::{anyhow, bail, Context, Result};
use burn::tensor::Device;
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tomoflow_cryo::particles::ParticleTable;
use tomoflow_sdk::gather::Origin;
use tomoflow_sdk::image;
use tomoflow_sdk::volume::{self, Assembler, ChunkMeta, Volume};
use tomoflow_sdk::{port, Ctx, DType, Message, Node, NodeDef, NodeInfo, Port, Tensor};

/// The compute device: `BURN_DEVICE` or the best backend compiled in (see docs/unet.md).
pub fn device() -> Device {
    Device::default()
}

fn backend_name(d: &Device) -> String {
    format!("{d:?}")
}

/// Label chunks of any integer type.
enum LabelAssembler {
    U8(Assembler<u8>),
    U16(Assembler<u16>),
    U32(Assembler<u32>),
}

impl LabelAssembler {
    fn new(dt: DType) -> Result<LabelAssembler> {
        Ok(match dt {
            DType::U8 => LabelAssembler::U8(Assembler::new()),
            DType::U16 => LabelAssembler::U16(Assembler::new()),
            DType::U32 => LabelAssembler::U32(Assembler::new()),
            other => bail!("label maps must be u8, u16 or u32 (got {})", other.name()),
        })
    }
    fn add(&mut self, msg: &Message) -> Result<()> {
        match self {
            LabelAssembler::U8(a) => a.add(msg),
            LabelAssembler::U16(a) => a.add(msg),
            LabelAssembler::U32(a) => a.add(msg),
        }
    }
    fn finish(self) -> Result<Volume<u32>> {
        fn widen<T: Copy + Into<u32>>(v: Volume<T>) -> Volume<u32> {
            Volume {
                data: v.data.iter().map(|&x| x.into()).collect(),
                shape: v.shape,
                voxel_size: v.voxel_size,
                origin: v.origin,
            }
        }
        Ok(match self {
            LabelAssembler::U8(a) => widen(a.finish()?),
            LabelAssembler::U16(a) => widen(a.finish()?),
            LabelAssembler::U32(a) => a.finish()?,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// unet-train

/// Training targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    /// The class label maps (from `place`).
    Labels,
    /// Spheres of `sphere_fraction` × each class's radius around each particle.
    Spheres,
}

fn d_targets() -> TargetKind {
    TargetKind::Labels
}
fn d_patch() -> usize {
    48
}
fn d_batch() -> usize {
    4
}
fn d_steps() -> u64 {
    1000
}
fn d_lr() -> f64 {
    1e-3
}
fn d_lr_min() -> f64 {
    1e-5
}
fn d_schedule() -> Schedule {
    Schedule::Cosine
}
fn d_one() -> f64 {
    1.0
}
fn d_half() -> f64 {
    0.5
}
fn d_true() -> bool {
    true
}
fn d_validation() -> f64 {
    0.2
}
fn d_val_every() -> u64 {
    50
}
fn d_val_patches() -> usize {
    16
}
fn d_patience() -> u32 {
    10
}
fn d_ckpt() -> u64 {
    25
}

/// Parameters of `unet-train`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainParams {
    /// Model name (kept in the model file), e.g. `unet-${sweep.background}`.
    #[serde(default)]
    pub name: Option<String>,
    /// Network shape: `{widths: [32, 48, 64]}` (channels per level; len − 1 downsamplings).
    #[serde(default)]
    pub architecture: Arch,
    /// `labels` (label maps) or `spheres` (around each particle of the table).
    #[serde(default = "d_targets")]
    pub targets: TargetKind,
    /// Sphere radius as a fraction of the class radius (`targets: spheres`).
    #[serde(default = "d_half")]
    #[schemars(range(min = 0.05, max = 2.0))]
    pub sphere_fraction: f64,
    /// Label values treated as background (e.g. the membrane label of `place`'s vesicles).
    #[serde(default)]
    pub background_labels: Vec<u32>,
    /// Class names of the particle tables that are not learnt: their particles are background
    /// (distractors, e.g. non-target proteins placed among the targets).
    #[serde(default)]
    pub non_targets: Vec<String>,
    /// Patch edge in voxels (a multiple of 2^depth).
    #[serde(default = "d_patch")]
    #[schemars(range(min = 4, max = 512))]
    pub patch: usize,
    /// Patches per step.
    #[serde(default = "d_batch")]
    #[schemars(range(min = 1, max = 256))]
    pub batch: usize,
    /// Optimisation steps.
    #[serde(default = "d_steps")]
    #[schemars(range(min = 1, max = 10000000))]
    pub steps: u64,
    /// Adam learning rate.
    #[serde(default = "d_lr")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub lr: f64,
    /// Final learning rate of the cosine schedule.
    #[serde(default = "d_lr_min")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub lr_min: f64,
    /// `cosine` (default) or `constant`.
    #[serde(default = "d_schedule")]
    pub schedule: Schedule,
    /// Weight of the soft-Dice term added to the cross-entropy (0 = cross-entropy only).
    #[serde(default = "d_one")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub dice_weight: f64,
    /// Cross-entropy weight per class (background first, then the class table's order);
    /// default: inverse square root of each class's voxel fraction, normalised to background 1.
    #[serde(default)]
    pub class_weights: Option<Vec<f64>>,
    /// Fraction of patches centred (±patch/4) on a voxel of a random foreground class.
    #[serde(default = "d_half")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub centred_fraction: f64,
    /// Random flips and 90° rotations about z (never about x or y: the missing wedge stays put).
    #[serde(default = "d_true")]
    pub augment: bool,
    /// Random contrast, offset, blur and noise per patch, so that the network does not learn
    /// one microscope's resolution and noise level (docs/unet.md, "Training for other data").
    #[serde(default)]
    pub intensity_augment: bool,
    /// Input normalisation, kept in the model file: `zscore-per-tomogram` (mean and standard
    /// deviation of the whole tomogram) or `robust-per-tomogram` (median and MAD of its
    /// central region, clipped at ±5: vacuum, edges and gold beads do not move it).
    #[serde(default)]
    pub normalisation: Normalisation,
    /// Fraction of the training tomograms held out for validation (at least one when there are
    /// two or more; with one tomogram, validation patches come from it).
    #[serde(default = "d_validation")]
    #[schemars(range(min = 0.0, max = 0.9))]
    pub validation: f64,
    /// Validate every this many steps (0 = never).
    #[serde(default = "d_val_every")]
    pub val_every: u64,
    /// Patches in the fixed validation set.
    #[serde(default = "d_val_patches")]
    #[schemars(range(min = 1, max = 10000))]
    pub val_patches: usize,
    /// Stop after this many validations without a better mean Dice (0 = never); the best
    /// weights are kept either way.
    #[serde(default = "d_patience")]
    pub patience: u32,
    /// Checkpoint every this many steps into the node's scratch directory (0 = at the end only).
    #[serde(default = "d_ckpt")]
    pub checkpoint_every: u64,
    /// Sampling weight per background source (`meta.background.source` of each tomogram, e.g.
    /// `{synthetic: 0.5, empirical: 0.5}`); default: every tomogram alike.
    #[serde(default)]
    pub source_weights: Option<BTreeMap<String, f64>>,
}

/// A patch edge must be a multiple of the network's granularity.
fn check_patch(arch: &Arch, patch: usize) -> Result<()> {
    let g = arch.granularity();
    if !patch.is_multiple_of(g) {
        bail!(
            "patch = {patch} must be a multiple of {g} (the network downsamples {} times); try {}",
            arch.depth(),
            patch.div_ceil(g) * g
        );
    }
    Ok(())
}

/// `unet-train`.
pub struct TrainNode {
    p: TrainParams,
    info: NodeInfo,
    tomos: BTreeMap<String, (Origin, Assembler<f32>, String)>,
    labels: BTreeMap<String, (Origin, LabelAssembler)>,
    tables: BTreeMap<String, (Origin, ParticleTable)>,
}

struct CtxHooks<'a> {
    ctx: &'a Ctx,
    every: u64,
}

impl Hooks for CtxHooks<'_> {
    fn step(&mut self, step: u64, total: u64, row: &HistoryRow) {
        self.ctx.progress(step, total);
        if step.is_multiple_of(self.every) || step == total || row.val_dice.is_some() {
            let val = row
                .val_dice
                .map(|d| format!(", validation Dice {d:.3}"))
                .unwrap_or_default();
            self.ctx.info(format!(
                "step {step}/{total}: loss {:.4}, lr {:.2e}{val}",
                row.loss, row.lr
            ));
        }
    }
    fn cancelled(&self) -> bool {
        self.ctx.cancelled()
    }
    fn info(&mut self, msg: &str) {
        self.ctx.info(msg);
    }
}

fn paint_spheres(
    table: &ParticleTable,
    classes: &[Class],
    shape: [usize; 3],
    voxel: f64,
    fraction: f64,
) -> Vec<u32> {
    let [nz, ny, nx] = shape;
    let mut out = vec![0u32; nz * ny * nx];
    for p in &table.particles {
        let Some(c) = classes.iter().find(|c| c.id == p.class_id) else {
            continue;
        };
        let r = fraction * c.radius_a / voxel;
        let [x, y, z] = table.voxel_coords(p);
        let lo = |v: f64| (v - r).floor().max(0.0) as usize;
        let hi = |v: f64, n: usize| ((v + r).ceil() as usize + 1).min(n);
        for iz in lo(z)..hi(z, nz) {
            for iy in lo(y)..hi(y, ny) {
                for ix in lo(x)..hi(x, nx) {
                    let d2 =
                        (iz as f64 - z).powi(2) + (iy as f64 - y).powi(2) + (ix as f64 - x).powi(2);
                    if d2 <= r * r {
                        out[(iz * ny + iy) * nx + ix] = c.id;
                    }
                }
            }
        }
    }
    out
}

impl Node for TrainNode {
    fn process(&mut self, _ctx: &mut Ctx, input: usize, msg: Message) -> Result<()> {
        let o = Origin::of(&msg);
        match input {
            0 => {
                let source = msg
                    .meta
                    .get("background")
                    .and_then(|b| b["source"].as_str())
                    .unwrap_or("")
                    .to_string();
                let e = self
                    .tomos
                    .entry(o.id.clone())
                    .or_insert_with(|| (o, Assembler::new(), source));
                e.1.add(&msg).context("tomograms")?;
            }
            1 => {
                let dt = msg
                    .tensor("data")
                    .map_err(|e| anyhow!("labels: {e}"))?
                    .dtype();
                if !self.labels.contains_key(&o.id) {
                    self.labels
                        .insert(o.id.clone(), (o.clone(), LabelAssembler::new(dt)?));
                }
                self.labels
                    .get_mut(&o.id)
                    .unwrap()
                    .1
                    .add(&msg)
                    .context("labels")?;
            }
            _ => {
                let t = ParticleTable::from_json(&serde_json::Value::Object(msg.meta.clone()))
                    .context("particles")?;
                self.tables.insert(o.id.clone(), (o, t));
            }
        }
        Ok(())
    }

    fn finish(&mut self, ctx: &mut Ctx) -> Result<()> {
        let p = &self.p;
        // Pair every tomogram with the label map and particle table of its instance.
        let tomos = std::mem::take(&mut self.tomos);
        let mut labels: BTreeMap<String, (Origin, Option<LabelAssembler>)> =
            std::mem::take(&mut self.labels)
                .into_iter()
                .map(|(k, (o, a))| (k, (o, Some(a))))
                .collect();
        let mut label_vols: BTreeMap<String, Volume<u32>> = BTreeMap::new();
        let mut sets = Vec::new();
        let mut classes: Vec<Class> = Vec::new();
        for (id, (o, asm, source)) in tomos {
            let name = if id.is_empty() {
                "tomogram".to_string()
            } else {
                id.clone()
            };
            let find = |what: &str, cands: Vec<&String>| -> Result<String> {
                match cands.as_slice() {
                    [one] => Ok((*one).clone()),
                    [] => bail!("no {what} for tomogram {name}: connect the {what} of the same replicate (gathered inputs are paired by their sweep coordinates)"),
                    many => bail!("{} {what} match tomogram {name} ({}); gather them from the same instances as the tomograms", many.len(), many.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")),
                }
            };
            let lid = find(
                "label map",
                labels
                    .iter()
                    .filter(|(_, (lo, _))| lo.covers(&o))
                    .map(|(k, _)| k)
                    .collect(),
            )?;
            let tid = find(
                "particle table",
                self.tables
                    .iter()
                    .filter(|(_, (to, _))| to.covers(&o))
                    .map(|(k, _)| k)
                    .collect(),
            )?;
            if !label_vols.contains_key(&lid) {
                let a = labels.get_mut(&lid).unwrap().1.take().unwrap();
                label_vols.insert(lid.clone(), a.finish().context("labels")?);
            }
            let lab = &label_vols[&lid];
            let table = &self.tables[&tid].1;
            for c in &table.classes {
                match classes.iter().find(|k| k.id == c.id) {
                    Some(k) if k.name != c.name => bail!(
                        "class id {} is `{}` in one particle table and `{}` in another",
                        c.id,
                        k.name,
                        c.name
                    ),
                    Some(_) => {}
                    None => classes.push(Class {
                        id: c.id,
                        name: c.name.clone(),
                        radius_a: c.radius_a,
                    }),
                }
            }
            let vol = asm.finish().context("tomograms")?;
            if vol.shape != lab.shape {
                bail!(
                    "tomogram {name} has shape {:?} (z, y, x) but its label map {:?}: they must share one grid",
                    vol.shape,
                    lab.shape
                );
            }
            if (vol.voxel_size[2] - lab.voxel_size[2]).abs() > 1e-3 * vol.voxel_size[2] {
                bail!(
                    "tomogram {name} has voxel size {} Å but its label map {} Å",
                    vol.voxel_size[2],
                    lab.voxel_size[2]
                );
            }
            sets.push((name, source, vol, lab.data.clone(), table.clone()));
        }
        if sets.is_empty() {
            bail!("no tomogram received on `tomograms`");
        }
        classes.sort_by_key(|c| c.id);
        let non_target_ids: Vec<u32> = classes
            .iter()
            .filter(|c| p.non_targets.contains(&c.name))
            .map(|c| c.id)
            .collect();
        if let Some(n) = p
            .non_targets
            .iter()
            .find(|n| !classes.iter().any(|c| &&c.name == n))
        {
            bail!(
                "non_targets names `{n}`, which no particle table lists (classes: {})",
                classes
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        classes.retain(|c| !non_target_ids.contains(&c.id));
        if classes.is_empty() {
            bail!("the particle tables list no classes: nothing to learn");
        }
        if classes.len() > 254 {
            bail!("at most 254 classes are supported (got {})", classes.len());
        }
        let voxel = sets[0].2.voxel_size[2];
        for s in &sets {
            if (s.2.voxel_size[2] - voxel).abs() > 1e-3 * voxel {
                bail!(
                    "all training tomograms need one voxel size: {} has {} Å, {} has {voxel} Å",
                    s.0,
                    s.2.voxel_size[2],
                    sets[0].0
                );
            }
        }
        let mut arch = p.architecture.clone();
        arch.classes = classes.len() + 1;
        arch.validate()?;
        check_patch(&arch, p.patch)?;
        let patch = [p.patch; 3];
        let mut vols = Vec::new();
        for (name, source, vol, mut lab, table) in sets {
            if (0..3).any(|a| vol.shape[a] < p.patch) {
                bail!(
                    "patch = {} is larger than tomogram {name} of shape {:?} (z, y, x); lower `patch`",
                    p.patch,
                    vol.shape
                );
            }
            if p.targets == TargetKind::Spheres {
                lab = paint_spheres(&table, &classes, vol.shape, voxel, p.sphere_fraction);
            } else if !p.background_labels.is_empty() || !non_target_ids.is_empty() {
                for l in lab.iter_mut() {
                    if p.background_labels.contains(l) || non_target_ids.contains(l) {
                        *l = 0;
                    }
                }
            }
            vols.push(TrainingVolume::new(
                &name,
                &source,
                vol.data,
                &lab,
                vol.shape,
                voxel,
                &classes,
                p.normalisation,
            )?);
        }
        // Validation split: a seeded choice of whole tomograms.
        let n = vols.len();
        let n_val = if n >= 2 && p.validation > 0.0 && p.val_every > 0 {
            ((n as f64 * p.validation).round() as usize).clamp(1, n - 1)
        } else {
            0
        };
        let mut order: Vec<usize> = (0..n).collect();
        let mut rng = tomoflow_cryo::rng::Rng::derive(self.info.seed, 0x5EED);
        for i in (1..n).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let val_idx: Vec<usize> = order[..n_val].to_vec();
        let (mut train_v, mut val_v) = (Vec::new(), Vec::new());
        for (i, v) in vols.into_iter().enumerate() {
            if val_idx.contains(&i) {
                val_v.push(v);
            } else {
                train_v.push(v);
            }
        }
        if val_v.is_empty() && p.val_every > 0 && p.validation > 0.0 {
            ctx.warn("one training tomogram: validation patches come from it (not held out)");
            val_v = train_v.clone();
        }
        // Class weights.
        let k1 = arch.classes;
        let class_weights: Vec<f32> =
            match &p.class_weights {
                Some(w) if w.len() != k1 => {
                    bail!(
                "class_weights lists {} values but there are {k1} classes (background + {})",
                w.len(),
                classes.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
            )
                }
                Some(w) => w.iter().map(|&x| x as f32).collect(),
                None => {
                    let mut f = vec![0f64; k1];
                    for v in &train_v {
                        for (a, b) in f.iter_mut().zip(v.class_fractions(k1)) {
                            *a += b / train_v.len() as f64;
                        }
                    }
                    let bg = f[0].max(1e-9);
                    f.iter()
                        .map(|&x| if x > 0.0 { (bg / x).sqrt() as f32 } else { 1.0 })
                        .collect()
                }
            };
        let volume_weights: Vec<f64> = train_v
            .iter()
            .map(|v| match &p.source_weights {
                None => Ok(1.0),
                Some(m) => m.get(&v.source).copied().ok_or_else(|| {
                    anyhow!(
                        "tomogram {} has background source `{}` which source_weights does not list ({})",
                        v.name,
                        v.source,
                        m.keys().cloned().collect::<Vec<_>>().join(", ")
                    )
                }),
            })
            .collect::<Result<_>>()?;
        if volume_weights.iter().sum::<f64>() <= 0.0 {
            bail!("source_weights give every training tomogram weight 0");
        }
        let cfg = TrainConfig {
            arch: arch.clone(),
            sampling: Sampling {
                patch,
                centred: p.centred_fraction,
                augment: p.augment,
                intensity: p.intensity_augment,
            },
            batch: p.batch,
            steps: p.steps,
            lr: p.lr,
            lr_min: p.lr_min,
            schedule: p.schedule,
            dice_weight: p.dice_weight as f32,
            class_weights: class_weights.clone(),
            val_every: p.val_every,
            val_patches: p.val_patches,
            patience: p.patience,
            checkpoint_every: p.checkpoint_every,
            seed: self.info.seed,
            volume_weights,
        };
        ctx.info(format!(
            "training on {} tomogram(s) ({} for validation), {} classes ({}), patch {}³, batch {}, {} steps",
            train_v.len(),
            val_idx.len(),
            classes.len(),
            classes.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", "),
            p.patch,
            p.batch,
            p.steps
        ));
        let dev = device();
        let fingerprint = format!(
            "{:?}|{:?}|{}|{}",
            cfg.arch,
            cfg.class_weights,
            self.info.seed,
            train_v
                .iter()
                .map(|v| v.name.as_str())
                .collect::<Vec<_>>()
                .join(",")
        );
        let mut hooks = CtxHooks {
            ctx,
            every: (p.steps / 20).max(1),
        };
        let trained = train(
            &cfg,
            &train_v,
            &val_v,
            &dev,
            Some(&self.info.scratch_dir),
            &fingerprint,
            &mut hooks,
        )?;
        let last = trained.history.last();
        let best_val = trained
            .history
            .iter()
            .find(|r| r.step == trained.chosen_step)
            .and_then(|r| r.val_dice);
        let info = ModelInfo {
            format: "tomoflow-unet".into(),
            version: 1,
            arch,
            classes: classes.clone(),
            voxel_size: voxel,
            patch,
            normalisation: p.normalisation.name().into(),
            thresholds: None,
            calibration: None,
            training: serde_json::json!({
                "name": p.name,
                "steps": trained.history.len(),
                "chosen_step": trained.chosen_step,
                "stopped_early": trained.stopped_early,
                "final_loss": last.map(|r| r.loss),
                "validation_dice": best_val,
                "class_weights": class_weights,
                "seed": self.info.seed,
                "tomograms": train_v.iter().map(|v| serde_json::json!({"name": v.name, "source": v.source})).collect::<Vec<_>>(),
                "validation_tomograms": val_idx.len(),
                "backend": backend_name(&dev),
                "trained_by": format!("tomoflow-unet {}", env!("CARGO_PKG_VERSION")),
            }),
        };
        let record = crate::train::module_bytes(&trained.model)?;
        let model = Model::new(info, &record)?;
        ctx.emit("model", model.to_message())?;
        let hist = serde_json::json!({
            "history": trained.history,
            "classes": classes,
            "chosen_step": trained.chosen_step,
            "resumed_from": trained.resumed_from,
        });
        ctx.emit(
            "history",
            Message {
                meta: hist.as_object().cloned().unwrap_or_default(),
                tensors: Vec::new(),
            },
        )
    }
}

impl NodeDef for TrainNode {
    type Params = TrainParams;
    const NAME: &'static str = "unet-train";
    const DOC: &'static str = "Train a multi-class 3D U-Net on tomograms with their label maps and particle tables; resumable.\n\n\
        Inputs are paired per replicate (gather them with `node.port[*]`: a tomogram takes the label map and particle table \
        whose sweep coordinates it contains). The class table comes from the particle tables; channel 0 is background. \
        Loss: class-weighted cross-entropy + `dice_weight` × soft Dice; Adam with a cosine schedule; patches drawn per step \
        from the node's seed (half centred on particles by default), flipped and rotated about z. Whole tomograms are held \
        out for validation (per-class Dice every `val_every` steps; the best weights are kept; early stop after `patience`). \
        A checkpoint (weights, Adam state, step, history) lands in the node's scratch directory every `checkpoint_every` \
        steps: a rerun after an interruption continues from it and ends with the same weights. Outputs the `model` (export \
        to `.bpk`) and the `history` (export to `.csv` / `.png`). docs/unet.md.";
    const INPUTS: &'static [Port] = &[
        port(
            "tomograms",
            "volume",
            "training tomograms (gather replicates with `[*]`)",
        ),
        port("labels", "labels", "class label map of each tomogram"),
        port(
            "particles",
            "particles",
            "particle table of each tomogram (class table, sphere targets)",
        ),
    ];
    const OUTPUTS: &'static [Port] = &[
        port(
            "model",
            "model",
            "trained network with its class table and voxel size",
        ),
        port(
            "history",
            "training_history",
            "loss and validation Dice per step",
        ),
    ];
    fn check(p: &TrainParams) -> Result<()> {
        let mut arch = p.architecture.clone();
        arch.classes = 2;
        arch.validate()?;
        check_patch(&arch, p.patch)?;
        if p.lr <= 0.0 {
            bail!("lr must be positive (got {})", p.lr);
        }
        if let Some(w) = &p.class_weights {
            if w.iter().any(|&x| !(x.is_finite() && x >= 0.0)) {
                bail!("class_weights must be finite and non-negative (got {w:?})");
            }
        }
        if let Some(m) = &p.source_weights {
            if m.values().any(|&x| !(x.is_finite() && x >= 0.0)) {
                bail!("source_weights must be finite and non-negative");
            }
        }
        Ok(())
    }
    fn create(p: TrainParams, info: &NodeInfo) -> Result<Self> {
        crate::alloc::tune();
        Ok(TrainNode {
            p,
            info: info.clone(),
            tomos: BTreeMap::new(),
            labels: BTreeMap::new(),
            tables: BTreeMap::new(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// unet-infer

fn d_blend() -> Blend {
    Blend::Gaussian
}
/// Parameters of `unet-infer`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InferParams {
    /// Tile edge in voxels (multiple of 2^depth); default: twice the training patch, at most 96.
    #[serde(default)]
    #[schemars(range(min = 4, max = 1024))]
    pub tile: Option<usize>,
    /// Distance between tile starts; default: half the tile (rounded to 2^depth).
    #[serde(default)]
    #[schemars(range(min = 1, max = 1024))]
    pub stride: Option<usize>,
    /// Tile extent along z (multiple of 2^depth); default: `tile`. Inference holds this many
    /// planes of the tomogram and of each class: on large planes (e.g. 2048²) a shallow tile
    /// bounds memory.
    #[serde(default)]
    #[schemars(range(min = 4, max = 1024))]
    pub tile_depth: Option<usize>,
    /// Distance between tile starts along z; default: `stride` if `tile_depth` is not set,
    /// else half of `tile_depth` (rounded to 2^depth).
    #[serde(default)]
    #[schemars(range(min = 1, max = 1024))]
    pub stride_depth: Option<usize>,
    /// Voxels at each inner tile edge given no weight (crop); the receptive radius makes tiling
    /// exact.
    #[serde(default)]
    pub margin: usize,
    /// Tile window: `gaussian` (default), `cosine` or `none`.
    #[serde(default = "d_blend")]
    pub blend: Blend,
    /// Test-time augmentation: average over the 8 rotations/flips about z.
    #[serde(default)]
    pub tta: bool,
    /// Tiles per forward pass.
    #[serde(default = "d_one_usize")]
    #[schemars(range(min = 1, max = 64))]
    pub batch: usize,
    /// Planes per output chunk; default: about 16 MiB of probabilities per chunk.
    #[serde(default)]
    #[schemars(range(min = 1, max = 4096))]
    pub slab: Option<usize>,
    /// Resample a tomogram whose voxel size differs from the model's onto the model's grid
    /// (and the maps back); `false` makes such a mismatch an error.
    #[serde(default = "d_true")]
    pub rescale: bool,
    /// Tomogram name for the picks (must match the ground truth's to be scored); default: the
    /// input's `meta.tomogram`, else `tomogram`.
    #[serde(default)]
    pub name: Option<String>,
    /// Multiply the tomogram by −1 first: for tomograms where protein is dark (as most
    /// reconstruction programs write them); tomoflow's own tomograms have bright protein.
    #[serde(default)]
    pub invert: bool,
}

fn d_one_usize() -> usize {
    1
}

/// `unet-infer`.
pub struct InferNode {
    p: InferParams,
    model: Option<Model>,
    tomo: Option<Spill>,
    scratch: PathBuf,
    name: String,
}

/// The input tomogram, spilled to a raw f32 file in the node's scratch directory as its chunks
/// arrive (in any order), so that inference reads one band of planes at a time and memory does
/// not grow with the tomogram.
struct Spill {
    file: std::fs::File,
    path: PathBuf,
    shape: [usize; 3],
    voxel_size: [f64; 3],
    origin: [f64; 3],
    filled: usize,
}

impl Spill {
    fn create(dir: &std::path::Path, meta: &ChunkMeta) -> Result<Spill> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create scratch directory {}", dir.display()))?;
        let path = dir.join("unet-infer-input.f32");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let bytes = meta.full_shape.iter().product::<usize>() as u64 * 4;
        file.set_len(bytes)
            .with_context(|| format!("cannot size {} to {bytes} bytes", path.display()))?;
        Ok(Spill {
            file,
            path,
            shape: meta.full_shape,
            voxel_size: meta.voxel_size,
            origin: meta.origin,
            filled: 0,
        })
    }

    /// Write the core of one chunk; NaN/Inf voxels are an error.
    fn add(&mut self, meta: &ChunkMeta, data: &[f32]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        if meta.full_shape != self.shape {
            bail!(
                "tomogram chunk of a volume of shape {:?}, not {:?}",
                meta.full_shape,
                self.shape
            );
        }
        let [_, ny, nx] = self.shape;
        let [_, by, bx] = meta.shape;
        let [cz, cy, cx] = meta.core_shape;
        let mut row = Vec::with_capacity(cx * 4);
        for z in 0..cz {
            for y in 0..cy {
                let (gz, gy) = (meta.core_offset[0] + z, meta.core_offset[1] + y);
                let src = ((gz - meta.offset[0]) * by + gy - meta.offset[1]) * bx
                    + meta.core_offset[2]
                    - meta.offset[2];
                let vals = &data[src..src + cx];
                if let Some(v) = vals.iter().find(|v| !v.is_finite()) {
                    bail!("tomogram voxel (z {gz}, y {gy}) is {v}: replace NaN/Inf voxels first");
                }
                row.clear();
                row.extend(vals.iter().flat_map(|v| v.to_le_bytes()));
                let at = (((gz * ny + gy) * nx + meta.core_offset[2]) * 4) as u64;
                self.file
                    .write_all_at(&row, at)
                    .with_context(|| format!("cannot write {}", self.path.display()))?;
            }
        }
        self.filled += cz * cy * cx;
        Ok(())
    }

    /// Planes `[z0, z1)` as f32, each voxel passed through `f`.
    fn planes(
        &self,
        z0: usize,
        z1: usize,
        out: &mut Vec<f32>,
        f: impl Fn(f32) -> f32,
    ) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let plane = self.shape[1] * self.shape[2];
        let mut bytes = vec![0u8; (z1 - z0) * plane * 4];
        self.file
            .read_exact_at(&mut bytes, (z0 * plane * 4) as u64)
            .with_context(|| format!("cannot read {}", self.path.display()))?;
        out.clear();
        out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        );
        Ok(())
    }

    /// The tomogram's centre and scale under `norm`, its voxels multiplied by `sign` first.
    fn stats(&self, norm: Normalisation, sign: f32) -> Result<(f64, f64)> {
        norm.stats(self.shape, &mut |z0, z1, buf| {
            self.planes(z0, z1, buf, |v| sign * v)
        })
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Cuts finished planes (arriving in order as `[K, n, y, x]` blocks) into the output's z-slab
/// `probabilities` messages, and keeps the class map of the central plane for the overlay.
struct Emitter {
    shape: [usize; 3],
    k: usize,
    parts: Vec<volume::Slab>,
    next_part: usize,
    /// Finished planes not yet emitted, plane-major `[z][k][y][x]`, starting at `pending_z0`.
    pending: Vec<f32>,
    pending_z0: usize,
    centre: Option<Vec<u8>>,
    meta: serde_json::Map<String, serde_json::Value>,
    chunk: ChunkMeta,
}

impl Emitter {
    fn new(
        shape: [usize; 3],
        k: usize,
        slab: usize,
        chunk: ChunkMeta,
        meta: serde_json::Map<String, serde_json::Value>,
    ) -> Emitter {
        Emitter {
            shape,
            k,
            parts: volume::slabs(shape[0], slab, 0),
            next_part: 0,
            pending: Vec::new(),
            pending_z0: 0,
            centre: None,
            meta,
            chunk,
        }
    }

    fn push(&mut self, ctx: &mut Ctx, z0: usize, z1: usize, block: &[f32]) -> Result<()> {
        let [nz, ny, nx] = self.shape;
        let (plane, k, n) = (ny * nx, self.k, z1 - z0);
        if z0 != self.pending_z0 + self.pending.len() / (k * plane).max(1) {
            bail!("internal: planes {z0}..{z1} arrived out of order");
        }
        for dz in 0..n {
            if z0 + dz == nz / 2 {
                // Most probable class (p > 0.5) of each voxel of the central plane.
                let cls = (0..plane)
                    .map(|i| {
                        let mut best = (0u8, 0.5f32);
                        for kk in 0..k {
                            let v = block[(kk * n + dz) * plane + i];
                            if v > best.1 {
                                best = ((kk + 1) as u8, v);
                            }
                        }
                        best.0
                    })
                    .collect();
                self.centre = Some(cls);
            }
            for kk in 0..k {
                self.pending
                    .extend_from_slice(&block[(kk * n + dz) * plane..(kk * n + dz + 1) * plane]);
            }
        }
        while let Some(s) = self.parts.get(self.next_part).copied() {
            let have = self.pending_z0 + self.pending.len() / (k * plane).max(1);
            if have < s.z1 {
                break;
            }
            let m = s.z1 - s.z0;
            let mut out = Vec::with_capacity(k * m * plane);
            for kk in 0..k {
                for dz in 0..m {
                    let at = (dz * k + kk) * plane;
                    out.extend_from_slice(&self.pending[at..at + plane]);
                }
            }
            self.pending.drain(..m * k * plane);
            self.pending_z0 = s.z1;
            let chunk = ChunkMeta {
                offset: [s.z0, 0, 0],
                shape: [m, ny, nx],
                core_offset: [s.z0, 0, 0],
                core_shape: [m, ny, nx],
                index: self.next_part,
                count: self.parts.len(),
                ..self.chunk.clone()
            };
            let mut meta = self.meta.clone();
            meta.insert("chunk".into(), serde_json::to_value(&chunk)?);
            ctx.emit(
                "probabilities",
                Message {
                    meta,
                    tensors: vec![("data".into(), Tensor::from_vec(out, &[k, m, ny, nx]))],
                },
            )?;
            self.next_part += 1;
        }
        Ok(())
    }
}

impl Node for InferNode {
    fn process(&mut self, _ctx: &mut Ctx, input: usize, msg: Message) -> Result<()> {
        if input == 0 {
            self.model = Some(Model::from_message(&msg)?);
        } else {
            if let (None, Some(n)) = (
                &self.p.name,
                msg.meta.get("tomogram").and_then(|t| t.as_str()),
            ) {
                self.name = n.to_string();
            }
            let (meta, data) = volume::chunk_f32(&msg).context("tomogram")?;
            if self.tomo.is_none() {
                self.tomo = Some(Spill::create(&self.scratch, &meta)?);
            }
            self.tomo
                .as_mut()
                .expect("created above")
                .add(&meta, data)
                .context("tomogram")?;
        }
        Ok(())
    }

    fn finish(&mut self, ctx: &mut Ctx) -> Result<()> {
        let model = self
            .model
            .take()
            .ok_or_else(|| anyhow!("no model received"))?;
        let vol = self
            .tomo
            .take()
            .ok_or_else(|| anyhow!("tomogram: no chunk received: the input volume is empty"))?;
        let nv: usize = vol.shape.iter().product();
        if vol.filled != nv {
            bail!(
                "tomogram: volume incomplete: {} of {nv} voxels received",
                vol.filled
            );
        }
        let info = &model.info;
        let arch = &info.arch;
        let g = arch.granularity();
        let tile = self
            .p
            .tile
            .unwrap_or_else(|| (2 * info.patch[0]).min(96).div_ceil(g) * g);
        // Default stride: half a tile, rounded to the granularity.
        let half = |t: usize| ((t / 2) / g).max(1) * g;
        let stride = self.p.stride.unwrap_or_else(|| half(tile));
        let stride_depth = self.p.stride_depth.or(self.p.tile_depth.map(half));
        let tiling = Tiling {
            tile,
            stride,
            tile_depth: self.p.tile_depth,
            stride_depth,
            margin: self.p.margin,
            blend: self.p.blend,
            tta: self.p.tta,
            batch: self.p.batch,
        };
        tiling.validate(arch)?;
        let vs = vol.voxel_size[2];
        if (vol.voxel_size[0] - vs).abs() > 1e-3 * vs || (vol.voxel_size[1] - vs).abs() > 1e-3 * vs
        {
            bail!(
                "anisotropic voxels {:?} Å are not supported",
                vol.voxel_size
            );
        }
        // Onto the model's grid.
        let rescale = (vs - info.voxel_size).abs() > 1e-3 * info.voxel_size;
        if rescale && !self.p.rescale {
            bail!(
                "the tomogram has {vs} Å voxels but the model was trained at {} Å; set `rescale: true` to resample it, or bin the tomogram to the model's voxel size",
                info.voxel_size
            );
        }
        let dev = device();
        let net = model.network(&dev)?;
        let k = info.classes.len();
        let [nz, ny, nx] = vol.shape;
        let plane = ny * nx;
        let mut meta = serde_json::Map::new();
        meta.insert("classes".into(), serde_json::to_value(&info.classes)?);
        if let Some(t) = &info.thresholds {
            meta.insert("thresholds".into(), serde_json::to_value(t)?);
        }
        let norm = Normalisation::from_name(&info.normalisation)?;
        let sign = if self.p.invert { -1.0f32 } else { 1.0 };
        meta.insert(
            "tomogram".into(),
            serde_json::Value::String(self.name.clone()),
        );
        let whole = ChunkMeta::whole(vol.shape, vol.voxel_size, vol.origin);
        let slab = self
            .p
            .slab
            .unwrap_or((16 << 20) / (k * plane * 4).max(1))
            .clamp(1, nz.max(1));
        let mut out = Emitter::new(vol.shape, k, slab, whole, meta);
        if rescale {
            // Resampling needs the whole volume in memory (both grids).
            let mut data = Vec::new();
            vol.planes(0, nz, &mut data, |v| sign * v)?;
            let shape: [usize; 3] = std::array::from_fn(|a| {
                ((vol.shape[a] as f64 * vs / info.voxel_size).round() as usize).max(1)
            });
            ctx.info(format!(
                "tomogram at {vs} Å resampled to the model's {} Å: {:?} -> {:?} voxels",
                info.voxel_size, vol.shape, shape
            ));
            let mut data = resample(&data, 1, vol.shape, vs, shape, info.voxel_size);
            norm.apply(&mut data, shape);
            let probs = infer(
                &net,
                arch,
                &data,
                shape,
                &tiling,
                &dev,
                &mut |d, t| ctx.progress(d, t),
                &|| ctx.cancelled(),
            )?;
            drop(data);
            let probs = resample(&probs, k, shape, info.voxel_size, vol.shape, vs);
            out.push(ctx, 0, nz, &probs)?;
        } else {
            let (centre, scale) = vol.stats(norm, sign)?;
            // The callbacks run one at a time; a RefCell lends them the context in turn.
            let cx = std::cell::RefCell::new(&mut *ctx);
            crate::infer::infer_streamed(
                &net,
                arch,
                vol.shape,
                &tiling,
                &dev,
                &mut |z0, z1, buf| vol.planes(z0, z1, buf, |v| norm.scale(sign * v, centre, scale)),
                &mut |z0, z1, block| out.push(&mut cx.borrow_mut(), z0, z1, block),
                &mut |d, t| cx.borrow().progress(d, t),
                &|| cx.borrow().cancelled(),
            )?;
        }
        // The central XY slice with each voxel's most probable class (p > 0.5) in colour.
        let z = nz / 2;
        let mut slice = Vec::new();
        vol.planes(z, z + 1, &mut slice, |v| v)?;
        let gray = tomoflow_cryo::image::to_u8_robust(&slice);
        let cls = out.centre.take().unwrap_or_else(|| vec![0; plane]);
        let png = crate::plot::overlay_png(&gray, &cls, nx, ny)?;
        ctx.emit(
            "overlay",
            image::image_message(png, nx, ny, serde_json::json!({"z": z})),
        )?;
        Ok(())
    }
}

impl NodeDef for InferNode {
    type Params = InferParams;
    const NAME: &'static str = "unet-infer";
    const DOC: &'static str = "Segment a tomogram of any size with a trained U-Net into per-class probability maps.\n\n\
        Sliding-window inference over overlapping tiles blended with a Gaussian (or cosine) window, optional test-time \
        augmentation (8 rotations/flips about z, averaged). The tomogram is normalised like the training data and resampled \
        to the model's voxel size when it differs; the maps come back on the tomogram's grid as `probabilities` (docs/data-kinds.md), \
        ready for `pick-nms` / `pick-components`. docs/unet.md.";
    const INPUTS: &'static [Port] = &[
        port(
            "model",
            "model",
            "trained network (from unet-train or model-read)",
        ),
        port("tomogram", "volume", "tomogram to segment"),
    ];
    const OUTPUTS: &'static [Port] = &[
        port(
            "probabilities",
            "probabilities",
            "per-class probability maps on the tomogram's grid",
        ),
        port(
            "overlay",
            "image",
            "PNG of the central XY slice with the most probable class (p > 0.5) in colour",
        ),
    ];
    fn check(p: &InferParams) -> Result<()> {
        if let (Some(t), Some(s)) = (p.tile, p.stride) {
            if s > t {
                bail!("stride = {s} is larger than tile = {t}: voxels would be skipped");
            }
        }
        if let (Some(t), Some(s)) = (p.tile_depth, p.stride_depth) {
            if s > t {
                bail!(
                    "stride_depth = {s} is larger than tile_depth = {t}: planes would be skipped"
                );
            }
        }
        Ok(())
    }
    fn create(p: InferParams, info: &NodeInfo) -> Result<Self> {
        crate::alloc::tune();
        Ok(InferNode {
            name: p.name.clone().unwrap_or_else(|| "tomogram".into()),
            p,
            model: None,
            tomo: None,
            scratch: info.scratch_dir.clone(),
        })
    }
}
