//! The `model` data kind and the model file.
//!
//! A model file is a burnpack file (`.bpk`, burn's native format) holding the network's
//! weights, with the tomoflow description in its metadata under `tomoflow.model`: architecture,
//! class table, voxel size, patch size, normalisation and a training summary. burn loads it as a
//! record (`ModuleRecord::load`); tomoflow needs nothing else to rebuild the network.
//!
//! On a port, a model is one message: `meta.model` (the description) and a u8 tensor `file`
//! holding the complete `.bpk` bytes, so that exporting it is a plain write.

use crate::data::Class;
use crate::net::{Arch, UNet};
use anyhow::{anyhow, bail, Context, Result};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use tomoflow_sdk::{Message, Tensor};

/// Metadata key of the description inside the burnpack file.
pub const META_KEY: &str = "tomoflow.model";

/// What a model needs besides its weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Always `tomoflow-unet`.
    pub format: String,
    /// Format version (1).
    pub version: u32,
    /// Network shape.
    pub arch: Arch,
    /// Foreground classes in channel order (channel 0 is background).
    pub classes: Vec<Class>,
    /// Voxel size in Å the network was trained at.
    pub voxel_size: f64,
    /// Training patch edge (z, y, x).
    pub patch: [usize; 3],
    /// Input normalisation (`zscore-per-tomogram`).
    pub normalisation: String,
    /// Training summary (steps, chosen step, losses, validation Dice, seed, backend).
    pub training: serde_json::Value,
    /// Default score threshold per class name, calibrated on a validation set by
    /// `model-calibrate`; `unet-infer` passes them on with the probabilities and `pick-nms`
    /// uses them where the workflow sets none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<BTreeMap<String, f64>>,
    /// Where the thresholds came from (workflow, validation set), free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<serde_json::Value>,
}

impl ModelInfo {
    /// Values a model file may hold: a damaged or hand-edited description is refused on read
    /// instead of giving no picks (a negative voxel size) or a panic (an enormous radius).
    pub fn check(&self) -> Result<()> {
        if !(self.voxel_size.is_finite() && (0.1..=1000.0).contains(&self.voxel_size)) {
            bail!(
                "voxel size {:?} Å is not in 0.1-1000 Å: the model file is damaged",
                self.voxel_size
            );
        }
        if self.patch.iter().any(|&p| p == 0 || p > 4096) {
            bail!(
                "patch {:?} is not in 1-4096 voxels: the model file is damaged",
                self.patch
            );
        }
        if self.classes.is_empty() {
            bail!("the model lists no classes: the model file is damaged");
        }
        for c in &self.classes {
            if !(c.radius_a.is_finite() && (0.0..=1.0e5).contains(&c.radius_a)) {
                bail!(
                    "class {} has radius {:?} Å, not in 0-100000 Å: the model file is damaged",
                    c.name,
                    c.radius_a
                );
            }
        }
        for (name, t) in self.thresholds.iter().flatten() {
            if !(0.0..=1.0).contains(t) {
                bail!(
                    "threshold {t:?} of class {name} is not in [0, 1]: the model file is damaged"
                );
            }
        }
        Ok(())
    }
}

/// The tensors of a burnpack record, with their parameter ids removed.
fn tensors_without_ids(record: &[u8]) -> Result<Vec<burn_pack::Tensor>> {
    let reader = burn_pack::Reader::from_bytes(burn_pack::Bytes::from_bytes_vec(record.to_vec()))
        .map_err(|e| anyhow!("weights are not burnpack: {e:?}"))?;
    reader
        .into_tensors()
        .map_err(|e| anyhow!("weights are not burnpack: {e:?}"))?
        .into_iter()
        .map(|t| {
            let (name, dtype, shape, _id, bytes) = t
                .into_parts()
                .map_err(|e| anyhow!("weights are not burnpack: {e:?}"))?;
            Ok(burn_pack::Tensor::new(name, dtype, shape, None, bytes))
        })
        .collect()
}

/// The weights of a burnpack record as a canonical byte string (names, shapes, values; no
/// parameter ids): equal exactly when the weights are equal.
pub fn weights_fingerprint(record: &[u8]) -> Result<Vec<u8>> {
    Ok(burn_pack::Writer::new(tensors_without_ids(record)?)
        .into_bytes()
        .map_err(|e| anyhow!("cannot write burnpack: {e:?}"))?
        .to_vec())
}

/// A model: its description and the `.bpk` file bytes.
#[derive(Debug, Clone)]
pub struct Model {
    /// Description.
    pub info: ModelInfo,
    /// Complete burnpack file.
    pub file: Vec<u8>,
}

impl Model {
    /// Package trained weights (burnpack record bytes) with their description. burn's
    /// per-process parameter ids are dropped, so the same weights always give the same file.
    pub fn new(info: ModelInfo, record: &[u8]) -> Result<Model> {
        let json = serde_json::to_string(&info)?;
        let file = burn_pack::Writer::new(tensors_without_ids(record)?)
            .with_metadata(META_KEY, &json)
            .into_bytes()
            .map_err(|e| anyhow!("cannot write burnpack: {e:?}"))?
            .to_vec();
        Ok(Model { info, file })
    }

    /// The same weights with another description (the file is rewritten; a model file is a
    /// burnpack record itself).
    pub fn with_info(&self, info: ModelInfo) -> Result<Model> {
        Model::new(info, &self.file)
    }

    /// Parse model file bytes; `what` names the source in errors.
    pub fn from_file_bytes(file: Vec<u8>, what: &str) -> Result<Model> {
        let reader = burn_pack::Reader::from_bytes(burn_pack::Bytes::from_bytes_vec(file.clone()))
            .map_err(|e| anyhow!("{what} is not a burnpack (.bpk) model file: {e:?}"))?;
        let json = reader.metadata().get(META_KEY).ok_or_else(|| {
            anyhow!("{what} is a burnpack file but not a tomoflow model (no `{META_KEY}` metadata); export models with unet-train's `exports:`")
        })?;
        let info: ModelInfo = serde_json::from_str(json)
            .with_context(|| format!("{what}: unreadable model description"))?;
        if info.format != "tomoflow-unet" || info.version != 1 {
            bail!(
                "{what}: model format {} v{} is not supported (this build reads tomoflow-unet v1)",
                info.format,
                info.version
            );
        }
        info.check().map_err(|e| anyhow!("{what}: {e}"))?;
        Ok(Model { info, file })
    }

    /// Read a model file.
    pub fn read(path: &Path) -> Result<Model> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read model file {}", path.display()))?;
        Self::from_file_bytes(bytes, &path.display().to_string())
    }

    /// Rebuild the network on `device`.
    pub fn network(&self, device: &Device) -> Result<UNet> {
        crate::train::module_from_bytes(&self.info.arch, &self.file, device)
    }

    /// As a `model` message.
    pub fn to_message(&self) -> Message {
        let mut meta = serde_json::Map::new();
        meta.insert(
            "model".into(),
            serde_json::to_value(&self.info).expect("serialisable"),
        );
        Message {
            meta,
            tensors: vec![(
                "file".into(),
                Tensor::from_vec(self.file.clone(), &[self.file.len()]),
            )],
        }
    }

    /// From a `model` message.
    pub fn from_message(msg: &Message) -> Result<Model> {
        let t = msg
            .tensor("file")
            .map_err(|e| anyhow!("model message: {e}"))?;
        let bytes = t
            .as_slice::<u8>()
            .map_err(|e| anyhow!("model message: {e}"))?;
        Self::from_file_bytes(bytes.to_vec(), "the model on this port")
    }
}
