//! The training loop: batches of patches, class-weighted cross-entropy + Dice, Adam with a
//! learning-rate schedule, validation Dice with early stopping, and checkpoints that make an
//! interrupted run end with exactly the weights of an uninterrupted one.
//!
//! Every random draw of step `s` comes from `Rng::derive(seed, s)`, so the sampler's state is the
//! step number: a checkpoint needs only the weights, the optimiser state, the step and the
//! history to resume bit for bit.

use crate::data::{dice, draw_patch, Patch, Sampling, TrainingVolume};
use crate::net::{loss, Arch, Targets, UNet};
use anyhow::{anyhow, bail, Context, Result};
use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tomoflow_cryo::rng::Rng;

/// Learning-rate schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// The same rate throughout.
    Constant,
    /// Cosine decay from `lr` to `lr_min` over the run.
    Cosine,
}

/// Everything that decides the trained weights.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Network shape (`classes` = K + 1).
    pub arch: Arch,
    /// Patch sampling.
    pub sampling: Sampling,
    /// Patches per step.
    pub batch: usize,
    /// Optimisation steps.
    pub steps: u64,
    /// Adam learning rate.
    pub lr: f64,
    /// Final learning rate of the cosine schedule.
    pub lr_min: f64,
    /// Schedule.
    pub schedule: Schedule,
    /// Weight of the Dice term (0 = cross-entropy only).
    pub dice_weight: f32,
    /// Cross-entropy weight per class index (background first).
    pub class_weights: Vec<f32>,
    /// Validate every this many steps (0 = never).
    pub val_every: u64,
    /// Patches in the fixed validation set.
    pub val_patches: usize,
    /// Stop after this many validations without improvement (0 = never stop early).
    pub patience: u32,
    /// Checkpoint every this many steps (0 = only at the end).
    pub checkpoint_every: u64,
    /// Seed of every draw.
    pub seed: u64,
    /// Sampling weight per training volume (same order as the volumes).
    pub volume_weights: Vec<f64>,
}

/// One row of the training history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryRow {
    /// Step (1-based: after this many updates).
    pub step: u64,
    /// Training loss of this step's batch.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Mean validation Dice over foreground classes (validation steps only).
    pub val_dice: Option<f64>,
    /// Validation Dice per foreground class.
    pub val_class_dice: Vec<Option<f64>>,
}

/// What the loop reports to and asks of its host.
pub trait Hooks {
    /// Called after every step.
    fn step(&mut self, step: u64, total: u64, row: &HistoryRow);
    /// True when the run should stop (a checkpoint is written first).
    fn cancelled(&self) -> bool;
    /// An informational line.
    fn info(&mut self, msg: &str);
}

/// Result of training.
pub struct Trained {
    /// The chosen weights (best validation Dice when validating, else the last).
    pub model: UNet,
    /// Every step's row.
    pub history: Vec<HistoryRow>,
    /// Step whose weights were kept.
    pub chosen_step: u64,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// Step the run resumed from (0 for a fresh start).
    pub resumed_from: u64,
}

/// Serialise a module's weights (burnpack bytes).
pub fn module_bytes(m: &UNet) -> Result<Vec<u8>> {
    let b = m
        .clone()
        .into_record()
        .into_bytes()
        .map_err(|e| anyhow!("cannot serialise weights: {e:?}"))?;
    Ok(b.to_vec())
}

/// Load weights (burnpack bytes) into a fresh network of shape `arch`.
pub fn module_from_bytes(arch: &Arch, bytes: &[u8], device: &Device) -> Result<UNet> {
    let rec = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes.to_vec()))
        .map_err(|e| anyhow!("weights are not a burnpack record: {e:?}"))?;
    UNet::new(arch, device)
        .try_load_record(rec)
        .map_err(|e| anyhow!("weights do not fit the architecture {arch:?}: {e:?}"))
}

/// Run the network on a batch of patches; returns probabilities `[n, C, z, y, x]` flattened.
pub fn predict(model: &UNet, data: Vec<f32>, dims: [usize; 5], device: &Device) -> Vec<f32> {
    let x = Tensor::<5>::from_data(TensorData::new(data, dims), device);
    let p = burn::tensor::activation::softmax(model.forward(x), 1);
    p.into_data().try_to_vec::<f32>().expect("f32 output")
}

fn argmax_channels(p: &[f32], n: usize, c: usize, v: usize) -> Vec<u8> {
    let mut out = vec![0u8; n * v];
    for b in 0..n {
        for i in 0..v {
            let mut best = 0;
            let mut bv = f32::MIN;
            for k in 0..c {
                let x = p[(b * c + k) * v + i];
                if x > bv {
                    bv = x;
                    best = k;
                }
            }
            out[b * v + i] = best as u8;
        }
    }
    out
}

/// Learning rate at step `s` (0-based).
pub fn lr_at(cfg: &TrainConfig, s: u64) -> f64 {
    match cfg.schedule {
        Schedule::Constant => cfg.lr,
        Schedule::Cosine => {
            let t = s as f64 / cfg.steps.max(1) as f64;
            cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1.0 + (std::f64::consts::PI * t).cos())
        }
    }
}

fn pick_volume(weights: &[f64], rng: &mut Rng) -> usize {
    let total: f64 = weights.iter().sum();
    let mut u = rng.uniform() * total;
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i;
        }
        u -= w;
    }
    weights.len() - 1
}

fn batch_of(patches: Vec<Patch>) -> (Vec<f32>, Vec<u8>) {
    let mut d = Vec::new();
    let mut l = Vec::new();
    for p in patches {
        d.extend_from_slice(&p.data);
        l.extend_from_slice(&p.classes);
    }
    (d, l)
}

/// Mean and per-class Dice of `model` on fixed validation patches.
fn validate(
    model: &UNet,
    val: &[Patch],
    cfg: &TrainConfig,
    device: &Device,
) -> (f64, Vec<Option<f64>>) {
    let [pz, py, px] = cfg.sampling.patch;
    let v = pz * py * px;
    let c = cfg.arch.classes;
    let m = model.valid();
    let mut pred = Vec::with_capacity(val.len() * v);
    let mut truth = Vec::with_capacity(val.len() * v);
    for chunk in val.chunks(cfg.batch.max(1)) {
        let n = chunk.len();
        let data: Vec<f32> = chunk.iter().flat_map(|p| p.data.iter().copied()).collect();
        let p = predict(&m, data, [n, 1, pz, py, px], device);
        pred.extend(argmax_channels(&p, n, c, v));
        truth.extend(chunk.iter().flat_map(|p| p.classes.iter().copied()));
    }
    let per = dice(&pred, &truth, c);
    let known: Vec<f64> = per.iter().flatten().copied().collect();
    let mean = if known.is_empty() {
        0.0
    } else {
        known.iter().sum::<f64>() / known.len() as f64
    };
    (mean, per)
}

// ---------------------------------------------------------------------------------------------
// checkpoints

/// Format 2: magic, header length, JSON header, the three byte blobs, then the BLAKE3 hash of
/// everything before it (32 bytes).
const CKPT_MAGIC: &[u8; 8] = b"TFCKPT02";
const CKPT_HASH: usize = 32;

/// A resumable training state.
pub struct Checkpoint {
    /// Steps done.
    pub step: u64,
    /// Current weights.
    pub model: Vec<u8>,
    /// Adam state.
    pub optim: Vec<u8>,
    /// Best weights so far and their step and score.
    pub best: Option<(u64, f64, Vec<u8>)>,
    /// Validations since the last improvement.
    pub bad_evals: u32,
    /// History up to `step`.
    pub history: Vec<HistoryRow>,
    /// Fingerprint of the configuration it belongs to.
    pub fingerprint: String,
}

#[derive(Serialize, Deserialize)]
struct CkptHeader {
    step: u64,
    best_step: Option<u64>,
    best_score: Option<f64>,
    bad_evals: u32,
    history: Vec<HistoryRow>,
    fingerprint: String,
    sizes: [u64; 3],
}

impl Checkpoint {
    /// Path of the checkpoint in a scratch directory.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("unet-checkpoint.bin")
    }

    /// Write atomically (temporary file, fsync, rename).
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create scratch directory {}", dir.display()))?;
        let best = self.best.as_ref();
        let h = CkptHeader {
            step: self.step,
            best_step: best.map(|b| b.0),
            best_score: best.map(|b| b.1),
            bad_evals: self.bad_evals,
            history: self.history.clone(),
            fingerprint: self.fingerprint.clone(),
            sizes: [
                self.model.len() as u64,
                self.optim.len() as u64,
                best.map_or(0, |b| b.2.len() as u64),
            ],
        };
        let json = serde_json::to_vec(&h)?;
        let mut buf = Vec::with_capacity(json.len() + self.model.len() * 4 + 16);
        buf.extend_from_slice(CKPT_MAGIC);
        buf.extend_from_slice(&(json.len() as u64).to_le_bytes());
        buf.extend_from_slice(&json);
        buf.extend_from_slice(&self.model);
        buf.extend_from_slice(&self.optim);
        if let Some(b) = best {
            buf.extend_from_slice(&b.2);
        }
        let hash = blake3::hash(&buf);
        buf.extend_from_slice(hash.as_bytes());
        let path = Self::path(dir);
        let tmp = dir.join("unet-checkpoint.tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)
                .with_context(|| format!("cannot write checkpoint {}", tmp.display()))?;
            f.write_all(&buf)
                .with_context(|| format!("cannot write checkpoint {}", tmp.display()))?;
            f.sync_all()?;
        }
        // The previous checkpoint stays as the fallback should this one be damaged later.
        if path.exists() {
            std::fs::rename(&path, Self::previous(dir)).with_context(|| {
                format!("cannot keep the previous checkpoint of {}", path.display())
            })?;
        }
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("cannot move checkpoint into {}", path.display()))
    }

    /// Path of the checkpoint before the latest.
    pub fn previous(dir: &Path) -> PathBuf {
        dir.join("unet-checkpoint.prev.bin")
    }

    /// The latest intact checkpoint in `dir`: the newest whose checksum holds, else the one
    /// before it, else none. Each damaged file is reported through `warn` and never loaded.
    pub fn load_good(dir: &Path, warn: &mut dyn FnMut(&str)) -> Result<Option<Checkpoint>> {
        for path in [Self::path(dir), Self::previous(dir)] {
            match Self::load_file(&path) {
                Ok(Some(c)) => return Ok(Some(c)),
                Ok(None) => {}
                Err(e) => warn(&format!(
                    "{e}; falling back to an earlier checkpoint or to step 0"
                )),
            }
        }
        Ok(None)
    }

    /// Read one checkpoint file, if it exists; a damaged one (wrong magic, checksum or layout)
    /// is an error naming it.
    fn load_file(path: &Path) -> Result<Option<Checkpoint>> {
        let buf = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let bad = || {
            anyhow!(
                "checkpoint {} is damaged; delete it to start training afresh",
                path.display()
            )
        };
        if buf.len() < 16 + CKPT_HASH || &buf[..8] != CKPT_MAGIC {
            return Err(bad());
        }
        let (buf, hash) = buf.split_at(buf.len() - CKPT_HASH);
        if blake3::hash(buf).as_bytes() != hash {
            return Err(anyhow!(
                "checkpoint {} is damaged (its checksum does not match)",
                path.display()
            ));
        }
        let n = u64::from_le_bytes(buf[8..16].try_into().unwrap()) as usize;
        let h: CkptHeader =
            serde_json::from_slice(buf.get(16..16 + n).ok_or_else(bad)?).map_err(|_| bad())?;
        let mut at = 16 + n;
        let mut take = |len: u64| -> Result<Vec<u8>> {
            let s = buf.get(at..at + len as usize).ok_or_else(bad)?.to_vec();
            at += len as usize;
            Ok(s)
        };
        let model = take(h.sizes[0])?;
        let optim = take(h.sizes[1])?;
        let best_bytes = take(h.sizes[2])?;
        let best = match (h.best_step, h.best_score) {
            (Some(s), Some(sc)) => Some((s, sc, best_bytes)),
            _ => None,
        };
        Ok(Some(Checkpoint {
            step: h.step,
            model,
            optim,
            best,
            bad_evals: h.bad_evals,
            history: h.history,
            fingerprint: h.fingerprint,
        }))
    }
}

// ---------------------------------------------------------------------------------------------
// the loop

/// Train on `train` (and validate on `val`), resuming from `scratch` when it holds a checkpoint
/// of the same configuration. `fingerprint` identifies the configuration.
pub fn train(
    cfg: &TrainConfig,
    train: &[TrainingVolume],
    val: &[TrainingVolume],
    device: &Device,
    scratch: Option<&Path>,
    fingerprint: &str,
    hooks: &mut dyn Hooks,
) -> Result<Trained> {
    if train.is_empty() {
        bail!("no training tomogram");
    }
    let ad = device.clone().autodiff();
    let mut model = UNet::seeded(&cfg.arch, cfg.seed, &ad);
    let mut optim = AdamConfig::new().init();
    let mut step = 0u64;
    let mut history = Vec::new();
    let mut best: Option<(u64, f64, Vec<u8>)> = None;
    let mut bad_evals = 0u32;
    let mut resumed_from = 0;
    if let Some(dir) = scratch {
        if let Some(ck) = Checkpoint::load_good(dir, &mut |m| hooks.info(m))? {
            if ck.fingerprint == fingerprint && ck.step <= cfg.steps {
                model = module_from_bytes(&cfg.arch, &ck.model, &ad)?;
                optim = optim
                    .from_bytes(Bytes::from_bytes_vec(ck.optim))
                    .map_err(|e| anyhow!("checkpoint optimiser state unreadable: {e:?}"))?;
                step = ck.step;
                history = ck.history;
                best = ck.best;
                bad_evals = ck.bad_evals;
                resumed_from = step;
                hooks.info(&format!(
                    "resuming from the checkpoint at step {step} of {}",
                    cfg.steps
                ));
            } else {
                hooks.info("ignoring a checkpoint of a different configuration");
            }
        }
    }

    // The fixed validation set (its own stream).
    let val_set: Vec<Patch> = if cfg.val_every > 0 && !val.is_empty() {
        let mut rng = Rng::derive(cfg.seed, u64::MAX);
        let w = vec![1.0; val.len()];
        (0..cfg.val_patches)
            .map(|_| draw_patch(&val[pick_volume(&w, &mut rng)], &cfg.sampling, &mut rng))
            .collect()
    } else {
        Vec::new()
    };

    let [pz, py, px] = cfg.sampling.patch;
    let save = |step: u64,
                model: &UNet,
                optim: &ModuleOptimizer,
                best: &Option<(u64, f64, Vec<u8>)>,
                bad_evals: u32,
                history: &[HistoryRow]|
     -> Result<()> {
        if let Some(dir) = scratch {
            Checkpoint {
                step,
                model: module_bytes(model)?,
                optim: optim
                    .into_bytes()
                    .map_err(|e| anyhow!("cannot serialise optimiser: {e:?}"))?
                    .to_vec(),
                best: best.clone(),
                bad_evals,
                history: history.to_vec(),
                fingerprint: fingerprint.into(),
            }
            .save(dir)?;
        }
        Ok(())
    };
    let mut stopped_early = history
        .last()
        .is_some_and(|_| cfg.patience > 0 && bad_evals >= cfg.patience);
    while step < cfg.steps && !stopped_early {
        if hooks.cancelled() {
            save(step, &model, &optim, &best, bad_evals, &history)?;
            bail!("training cancelled at step {step} (checkpoint saved)");
        }
        let mut rng = Rng::derive(cfg.seed, step);
        let patches: Vec<Patch> = (0..cfg.batch)
            .map(|_| {
                let i = pick_volume(&cfg.volume_weights, &mut rng);
                draw_patch(&train[i], &cfg.sampling, &mut rng)
            })
            .collect();
        let (data, labels) = batch_of(patches);
        let n = cfg.batch;
        let x = Tensor::<5>::from_data(TensorData::new(data, [n, 1, pz, py, px]), &ad);
        let t = Targets::new(
            &labels,
            [n, pz, py, px],
            cfg.arch.classes,
            &cfg.class_weights,
            &ad,
        );
        let l = loss(model.forward(x), &t, cfg.dice_weight);
        let loss_value = l.clone().into_scalar::<f32>() as f64;
        if !loss_value.is_finite() {
            bail!(
                "training diverged at step {}: loss is {loss_value}; lower `lr` (now {})",
                step + 1,
                cfg.lr
            );
        }
        let grads = GradientsParams::from_grads(l.backward(), &model);
        let lr = lr_at(cfg, step);
        model = optim.step(lr, model, grads);
        step += 1;
        let mut row = HistoryRow {
            step,
            loss: loss_value,
            lr,
            val_dice: None,
            val_class_dice: Vec::new(),
        };
        if !val_set.is_empty() && (step.is_multiple_of(cfg.val_every) || step == cfg.steps) {
            let (mean, per) = validate(&model, &val_set, cfg, device);
            row.val_dice = Some(mean);
            row.val_class_dice = per;
            if best.as_ref().is_none_or(|b| mean > b.1) {
                best = Some((step, mean, module_bytes(&model)?));
                bad_evals = 0;
            } else {
                bad_evals += 1;
                if cfg.patience > 0 && bad_evals >= cfg.patience {
                    hooks.info(&format!(
                        "early stop at step {step}: no better validation Dice in {bad_evals} evaluations"
                    ));
                    stopped_early = true;
                }
            }
        }
        hooks.step(step, cfg.steps, &row);
        history.push(row);
        if cfg.checkpoint_every > 0 && step.is_multiple_of(cfg.checkpoint_every) && step < cfg.steps
        {
            save(step, &model, &optim, &best, bad_evals, &history)?;
        }
    }
    save(step, &model, &optim, &best, bad_evals, &history)?;
    let (model, chosen_step) = match best {
        Some((s, _, bytes)) => (module_from_bytes(&cfg.arch, &bytes, device)?, s),
        None => (model.valid(), step),
    };
    Ok(Trained {
        model,
        history,
        chosen_step,
        stopped_early,
        resumed_from,
    })
}
