//! `metrics-summary`: the table of an ablation study from gathered `evaluate` metrics.
//!
//! Every metrics message carries `meta.gather.coords` (its sweep coordinates). The summary groups
//! the messages by the values of a `rows` axis and a `columns` axis; every other axis (seeds,
//! replicates) is averaged over: each cell holds mean ± sample standard deviation of F1 and of the
//! F-beta score per class and overall, and `n`. Output kind `summary` (exported as `.md` or
//! `.csv` by `summary-write`); the Markdown table is also logged at the end of the run.

use anyhow::{anyhow, bail, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use tomoflow_cryo::image::write_atomic;
use tomoflow_sdk::prelude::*;

type Meta = serde_json::Map<String, serde_json::Value>;

/// Mean, sample standard deviation and count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (0 for one value).
    pub sd: f64,
    /// Number of values.
    pub n: usize,
}

impl Stat {
    /// Of a list of values.
    pub fn of(v: &[f64]) -> Stat {
        let n = v.len();
        let mean = v.iter().sum::<f64>() / n.max(1) as f64;
        let sd = if n > 1 {
            (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        Stat { mean, sd, n }
    }

    fn show(&self) -> String {
        format!("{:.3} ± {:.3}", self.mean, self.sd)
    }
}

/// One cell: per class (and `overall`) F1 and F-beta.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// Row value.
    pub row: String,
    /// Column value.
    pub column: String,
    /// Per class name (and `overall`): (F1, F-beta).
    pub classes: BTreeMap<String, (Stat, Stat)>,
}

/// The summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Row axis.
    pub rows: String,
    /// Column axis.
    pub columns: String,
    /// Axes averaged over.
    pub over: Vec<String>,
    /// Cells, row-major in first-seen order.
    pub cells: Vec<Cell>,
}

fn axis_value(coords: &serde_json::Map<String, serde_json::Value>, axis: &str) -> Option<String> {
    coords.get(axis).map(|v| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// Build the summary from metrics messages' metadata.
pub fn summarise(
    metas: &[serde_json::Map<String, serde_json::Value>],
    rows: &[String],
    columns: &str,
) -> Result<Summary> {
    if rows.is_empty() {
        bail!("metrics-summary: `rows` lists no axis");
    }
    let mut groups: Vec<((String, String), Vec<&Meta>)> = Vec::new();
    let mut over = std::collections::BTreeSet::new();
    for m in metas {
        let coords = m
            .get("gather")
            .and_then(|g| g["coords"].as_object())
            .ok_or_else(|| anyhow!("metrics-summary: a message has no sweep coordinates; connect `evaluate.metrics[*]` (gathered)"))?;
        let known: Vec<&String> = coords.keys().collect();
        let get = |axis: &str| {
            axis_value(coords, axis).ok_or_else(|| {
                anyhow!(
                    "metrics-summary: axis `{axis}` is not among the coordinates of the gathered metrics ({})",
                    known.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                )
            })
        };
        let row = rows
            .iter()
            .map(|a| get(a))
            .collect::<Result<Vec<_>>>()?
            .join(" / ");
        let key = (row, get(columns)?);
        for a in coords.keys().filter(|a| !rows.contains(a) && *a != columns) {
            over.insert(a.clone());
        }
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(m),
            None => groups.push((key, vec![m])),
        }
    }
    if groups.is_empty() {
        bail!("metrics-summary: no metrics received");
    }
    let mut cells = Vec::new();
    for ((row, column), ms) in groups {
        let mut per: BTreeMap<String, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
        for m in ms {
            let table = m.get("table").and_then(|t| t.as_array()).ok_or_else(|| {
                anyhow!(
                    "metrics-summary: a metrics message has no `table` (connect evaluate.metrics)"
                )
            })?;
            for r in table {
                let name = r["class"].as_str().unwrap_or("?").to_string();
                let e = per.entry(name).or_default();
                e.0.push(r["f1"].as_f64().unwrap_or(0.0));
                e.1.push(r["fbeta"].as_f64().unwrap_or(0.0));
            }
        }
        cells.push(Cell {
            row,
            column,
            classes: per
                .into_iter()
                .map(|(k, (f1, fb))| (k, (Stat::of(&f1), Stat::of(&fb))))
                .collect(),
        });
    }
    Ok(Summary {
        rows: rows.join(" / "),
        columns: columns.into(),
        over: over.into_iter().collect(),
        cells,
    })
}

impl Summary {
    fn axes(&self) -> (Vec<String>, Vec<String>) {
        let mut r = Vec::new();
        let mut c = Vec::new();
        for cell in &self.cells {
            if !r.contains(&cell.row) {
                r.push(cell.row.clone());
            }
            if !c.contains(&cell.column) {
                c.push(cell.column.clone());
            }
        }
        (r, c)
    }

    /// Markdown: the overall table (F1 and F-beta), then one per class.
    pub fn markdown(&self) -> String {
        let (rows, cols) = self.axes();
        let mut classes: Vec<String> = self
            .cells
            .iter()
            .flat_map(|c| c.classes.keys().cloned())
            .collect();
        classes.sort();
        classes.dedup();
        classes.retain(|c| c != "overall");
        classes.insert(0, "overall".into());
        let over = if self.over.is_empty() {
            String::new()
        } else {
            format!(", mean ± sd over {}", self.over.join(", "))
        };
        let mut s = String::new();
        for class in &classes {
            s.push_str(&format!(
                "\n**{class}**: F1 / F-beta (rows: {}, columns: {}{over})\n\n| {} |",
                self.rows, self.columns, self.rows
            ));
            for c in &cols {
                s.push_str(&format!(" {c} |"));
            }
            s.push_str("\n|---|");
            s.push_str(&"---|".repeat(cols.len()));
            s.push('\n');
            for r in &rows {
                s.push_str(&format!("| {r} |"));
                for c in &cols {
                    let cell = self
                        .cells
                        .iter()
                        .find(|x| &x.row == r && &x.column == c)
                        .and_then(|x| x.classes.get(class));
                    match cell {
                        Some((f1, fb)) => s.push_str(&format!(" {} / {} |", f1.show(), fb.show())),
                        None => s.push_str(" – |"),
                    }
                }
                s.push('\n');
            }
        }
        s
    }

    /// CSV: `row,column,class,n,f1_mean,f1_sd,fbeta_mean,fbeta_sd`.
    pub fn csv(&self) -> String {
        let mut s = format!(
            "{},{},class,n,f1_mean,f1_sd,fbeta_mean,fbeta_sd\n",
            self.rows, self.columns
        );
        for c in &self.cells {
            for (k, (f1, fb)) in &c.classes {
                s.push_str(&format!(
                    "{},{},{k},{},{:.6},{:.6},{:.6},{:.6}\n",
                    c.row, c.column, f1.n, f1.mean, f1.sd, fb.mean, fb.sd
                ));
            }
        }
        s
    }
}

/// Parameters of `metrics-summary`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SummaryParams {
    /// Sweep axes whose values (joined with ` / `) label the rows, e.g. `[train_background]`.
    pub rows: Vec<String>,
    /// Sweep axis whose values are the columns (e.g. `test_background`).
    pub columns: String,
}

/// `metrics-summary`.
pub struct SummaryNode {
    p: SummaryParams,
    metas: Vec<serde_json::Map<String, serde_json::Value>>,
}

impl Node for SummaryNode {
    fn process(&mut self, _ctx: &mut Ctx, _input: usize, msg: Message) -> Result<()> {
        self.metas.push(msg.meta);
        Ok(())
    }
    fn finish(&mut self, ctx: &mut Ctx) -> Result<()> {
        let s = summarise(&self.metas, &self.p.rows, &self.p.columns)?;
        ctx.info(format!("summary:\n{}", s.markdown()));
        ctx.emit("summary", Message::json(serde_json::to_value(&s)?))
    }
}

impl NodeDef for SummaryNode {
    type Params = SummaryParams;
    const NAME: &'static str = "metrics-summary";
    const DOC: &'static str = "Summarise gathered `evaluate` metrics of a sweep into a table: rows are the values of one or more sweep axes, columns those of another, every other axis (seeds, replicates) is averaged over (F1 and F-beta mean ± sd per class and overall).\n\n\
        Connect `evaluate.metrics[*]`. Export the `summary` to `.md` (Markdown tables) or `.csv`; the Markdown is also logged.";
    const INPUTS: &'static [Port] = &[port(
        "metrics",
        "metrics",
        "gathered evaluate metrics (`evaluate.metrics[*]`)",
    )];
    const OUTPUTS: &'static [Port] =
        &[port("summary", "summary", "the table (mean ± sd per cell)")];
    fn create(p: SummaryParams, _info: &NodeInfo) -> Result<Self> {
        Ok(SummaryNode {
            p,
            metas: Vec::new(),
        })
    }
}

/// Parameters of `summary-write`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteParams {
    /// Target file (filled in by the engine from the workflow's `exports:`).
    pub path: String,
}

/// `summary-write`.
pub struct SummaryWriteNode {
    path: PathBuf,
    summary: Option<Summary>,
}

impl Node for SummaryWriteNode {
    fn process(&mut self, _ctx: &mut Ctx, _input: usize, msg: Message) -> Result<()> {
        self.summary = Some(serde_json::from_value(serde_json::Value::Object(msg.meta))?);
        Ok(())
    }
    fn finish(&mut self, _ctx: &mut Ctx) -> Result<()> {
        let s = self
            .summary
            .take()
            .ok_or_else(|| anyhow!("no summary received"))?;
        let csv = self
            .path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        let text = if csv { s.csv() } else { s.markdown() };
        write_atomic(&self.path, text.as_bytes())
    }
}

impl NodeDef for SummaryWriteNode {
    type Params = WriteParams;
    const NAME: &'static str = "summary-write";
    const DOC: &'static str =
        "Export a `summary` (from metrics-summary) as Markdown tables (`.md`) or CSV (`.csv`).";
    const INPUTS: &'static [Port] = &[port("summary", "summary", "summary to write")];
    const OUTPUTS: &'static [Port] = &[];
    const EXPORT_EXTENSIONS: &'static [&'static str] = &["md", "csv"];
    fn create(p: WriteParams, info: &NodeInfo) -> Result<Self> {
        Ok(SummaryWriteNode {
            path: info.resolve(&p.path),
            summary: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(
        bg: &str,
        test: &str,
        seed: u64,
        f1: f64,
    ) -> serde_json::Map<String, serde_json::Value> {
        serde_json::json!({
            "gather": {"coords": {"train_background": bg, "test_background": test, "repeat.train": seed}},
            "table": [{"class": "ribosome", "f1": f1, "fbeta": f1 + 0.1}, {"class": "overall", "f1": f1, "fbeta": f1}]
        })
        .as_object()
        .cloned()
        .unwrap()
    }

    #[test]
    fn groups_by_two_axes_and_averages_the_rest() {
        let m = vec![
            meta("synthetic", "synthetic", 0, 0.8),
            meta("synthetic", "synthetic", 1, 0.6),
            meta("mixed", "synthetic", 0, 0.9),
        ];
        let s = summarise(&m, &["train_background".into()], "test_background").unwrap();
        assert_eq!(s.over, vec!["repeat.train".to_string()]);
        let c = &s.cells[0];
        let (f1, fb) = &c.classes["ribosome"];
        assert!((f1.mean - 0.7).abs() < 1e-12 && (f1.sd - 0.1414213562).abs() < 1e-9 && f1.n == 2);
        assert!((fb.mean - 0.8).abs() < 1e-12);
        let md = s.markdown();
        assert!(
            md.contains("| synthetic | 0.700 ± 0.141 / 0.700 ± 0.141 |"),
            "{md}"
        );
        assert!(md.contains("| mixed | 0.900 ± 0.000"), "{md}");
        assert!(s
            .csv()
            .contains("synthetic,synthetic,ribosome,2,0.700000,0.141421,0.800000,0.141421"));
        let e = summarise(&m, &["nope".into()], "test_background")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("axis `nope`") && e.contains("train_background"),
            "{e}"
        );
    }
}
