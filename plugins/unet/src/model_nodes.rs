//! Model file nodes: `model-read`, `model-calibrate`, and the exporters `model-write` (`.bpk`)
//! and `training-history-write` (`.csv`, `.png`).

use crate::data::Class;
use crate::model::Model;
use crate::nodes::device;
use crate::train::HistoryRow;
use anyhow::{anyhow, bail, Result};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tomoflow_sdk::{port, Ctx, Message, Node, NodeDef, NodeInfo, Port};

/// Parameters of `model-read`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadParams {
    /// A `.bpk` model file exported from `unet-train`.
    #[schemars(extend("x-tomoflow" = "input-file"))]
    pub path: String,
}

/// `model-read`.
pub struct ReadNode {
    path: PathBuf,
}

impl Node for ReadNode {
    fn finish(&mut self, ctx: &mut Ctx) -> Result<()> {
        let m = Model::read(&self.path)?;
        ctx.info(format!(
            "model: {} classes ({}), {} Å, widths {:?}",
            m.info.classes.len(),
            m.info
                .classes
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            m.info.voxel_size,
            m.info.arch.widths
        ));
        // Check that the weights rebuild the network before anything downstream runs.
        m.network(&device())?;
        ctx.emit("model", m.to_message())
    }
}

impl NodeDef for ReadNode {
    type Params = ReadParams;
    const NAME: &'static str = "model-read";
    const DOC: &'static str = "Load a U-Net model file (`.bpk`) exported by `unet-train`, to apply a trained picker in any workflow.";
    const INPUTS: &'static [Port] = &[];
    const OUTPUTS: &'static [Port] = &[port("model", "model", "the model")];
    fn create(p: ReadParams, info: &NodeInfo) -> Result<Self> {
        Ok(ReadNode {
            path: info.resolve(&p.path),
        })
    }
}

/// Parameters of `model-calibrate`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CalibrateParams {
    /// What the thresholds were tuned on, kept in the model file (e.g. the workflow and its
    /// validation set).
    #[serde(default)]
    pub note: Option<String>,
}

/// `model-calibrate`.
pub struct CalibrateNode {
    note: Option<String>,
    model: Option<Model>,
    thresholds: BTreeMap<String, f64>,
}

impl Node for CalibrateNode {
    fn process(&mut self, _ctx: &mut Ctx, input: usize, msg: Message) -> Result<()> {
        if input == 0 {
            self.model = Some(Model::from_message(&msg)?);
            return Ok(());
        }
        let t = msg.meta.get("thresholds").ok_or_else(|| {
            anyhow!("model-calibrate: the thresholds message has no `thresholds` (connect evaluate's `thresholds` port)")
        })?;
        // evaluate writes `null` for a class it found nothing to tune on.
        let t: BTreeMap<String, Option<f64>> = serde_json::from_value(t.clone()).map_err(|e| {
            anyhow!("model-calibrate: `thresholds` is not {{class: number or null}}: {e}")
        })?;
        self.thresholds
            .extend(t.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
        Ok(())
    }
    fn finish(&mut self, ctx: &mut Ctx) -> Result<()> {
        let model = self
            .model
            .take()
            .ok_or_else(|| anyhow!("model-calibrate: no model received"))?;
        let mut info = model.info.clone();
        let mut thresholds = BTreeMap::new();
        for c in &info.classes {
            match self.thresholds.get(&c.name) {
                Some(&t) if (0.0..=1.0).contains(&t) => {
                    thresholds.insert(c.name.clone(), t);
                }
                Some(&t) => bail!("model-calibrate: threshold {t} of {} is not in [0, 1]", c.name),
                None => ctx.warn(format!(
                    "model-calibrate: no threshold for class {}; pick-nms's `threshold` applies to it",
                    c.name
                )),
            }
        }
        ctx.info(format!("model thresholds: {thresholds:?}"));
        info.thresholds = Some(thresholds);
        info.calibration = self.note.clone().map(serde_json::Value::String);
        ctx.emit("model", model.with_info(info)?.to_message())
    }
}

impl NodeDef for CalibrateNode {
    type Params = CalibrateParams;
    const NAME: &'static str = "model-calibrate";
    const DOC: &'static str = "Store per-class score thresholds in a model (e.g. evaluate's tuned `thresholds` on a validation set), so that every later use picks with them by default.\n\n        `unet-infer` passes the model's thresholds on with the probability maps; `pick-nms` uses them for the classes its own `thresholds` do not name.";
    const INPUTS: &'static [Port] = &[
        port("model", "model", "the model"),
        port(
            "thresholds",
            "metrics",
            "per-class thresholds: {\"thresholds\": {class: t}}",
        ),
    ];
    const OUTPUTS: &'static [Port] = &[port("model", "model", "the model with thresholds")];
    fn create(p: CalibrateParams, _info: &NodeInfo) -> Result<Self> {
        Ok(CalibrateNode {
            note: p.note,
            model: None,
            thresholds: BTreeMap::new(),
        })
    }
}

/// Parameters of the exporters.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    /// Target file (filled in by the engine from the workflow's `exports:`).
    pub path: String,
}

/// `model-write`.
pub struct WriteNode {
    path: PathBuf,
    file: Option<Vec<u8>>,
}

impl Node for WriteNode {
    fn process(&mut self, _ctx: &mut Ctx, _input: usize, msg: Message) -> Result<()> {
        self.file = Some(Model::from_message(&msg)?.file);
        Ok(())
    }
    fn finish(&mut self, _ctx: &mut Ctx) -> Result<()> {
        let f = self
            .file
            .take()
            .ok_or_else(|| anyhow!("no model received"))?;
        tomoflow_cryo::image::write_atomic(&self.path, &f)
    }
}

impl NodeDef for WriteNode {
    type Params = ExportParams;
    const NAME: &'static str = "model-write";
    const DOC: &'static str = "Export a `model` as a burnpack `.bpk` file (weights + tomoflow description), readable by `model-read` and by burn.";
    const INPUTS: &'static [Port] = &[port("model", "model", "model to write")];
    const OUTPUTS: &'static [Port] = &[];
    const EXPORT_EXTENSIONS: &'static [&'static str] = &["bpk"];
    fn create(p: ExportParams, info: &NodeInfo) -> Result<Self> {
        Ok(WriteNode {
            path: info.resolve(&p.path),
            file: None,
        })
    }
}

/// `training-history-write`.
pub struct HistoryWriteNode {
    path: PathBuf,
    rows: Option<(Vec<HistoryRow>, Vec<Class>)>,
}

/// The history as CSV: `step,loss,lr,val_dice,val_dice_<class>...`.
pub fn history_csv(rows: &[HistoryRow], classes: &[Class]) -> String {
    let mut s = String::from("step,loss,lr,val_dice");
    for c in classes {
        s.push_str(&format!(",val_dice_{}", c.name));
    }
    s.push('\n');
    let opt = |v: Option<f64>| v.map(|d| format!("{d:.6}")).unwrap_or_default();
    for r in rows {
        s.push_str(&format!(
            "{},{:.6},{:.3e},{}",
            r.step,
            r.loss,
            r.lr,
            opt(r.val_dice)
        ));
        for i in 0..classes.len() {
            s.push(',');
            s.push_str(&opt(r.val_class_dice.get(i).copied().flatten()));
        }
        s.push('\n');
    }
    s
}

impl Node for HistoryWriteNode {
    fn process(&mut self, _ctx: &mut Ctx, _input: usize, msg: Message) -> Result<()> {
        let rows: Vec<HistoryRow> = serde_json::from_value(
            msg.meta
                .get("history")
                .cloned()
                .ok_or_else(|| anyhow!("no `history` in message"))?,
        )?;
        let classes: Vec<Class> =
            serde_json::from_value(msg.meta.get("classes").cloned().unwrap_or_default())
                .unwrap_or_default();
        self.rows = Some((rows, classes));
        Ok(())
    }
    fn finish(&mut self, _ctx: &mut Ctx) -> Result<()> {
        let (rows, classes) = self
            .rows
            .take()
            .ok_or_else(|| anyhow!("no history received"))?;
        let ext = self
            .path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let bytes = if ext == "png" {
            crate::plot::curves_png(&rows)?
        } else {
            history_csv(&rows, &classes).into_bytes()
        };
        tomoflow_cryo::image::write_atomic(&self.path, &bytes)
    }
}

impl NodeDef for HistoryWriteNode {
    type Params = ExportParams;
    const NAME: &'static str = "training-history-write";
    const DOC: &'static str = "Export a training history: `.csv` (step, loss, lr, validation Dice per class) or `.png` (loss and validation curves).";
    const INPUTS: &'static [Port] = &[port("history", "training_history", "history to write")];
    const OUTPUTS: &'static [Port] = &[];
    const EXPORT_EXTENSIONS: &'static [&'static str] = &["csv", "png"];
    fn create(p: ExportParams, info: &NodeInfo) -> Result<Self> {
        Ok(HistoryWriteNode {
            path: info.resolve(&p.path),
            rows: None,
        })
    }
}
