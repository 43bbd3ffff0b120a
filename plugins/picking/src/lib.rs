//! tomoflow plugin `picking`: particle picks from per-class probability maps and their
//! evaluation against ground truth.
//!
//! - [`probmap`]: the `probabilities` data kind and synthetic maps from ground truth;
//! - [`nms`]: streamed peak detection with per-class neighbourhoods and greedy spherical NMS;
//! - [`components`]: streamed connected components of the argmax map;
//! - [`metrics`]: the CZII metric, optimal one-to-one matching, SHREC, PR curves, confusion;
//! - [`plot`]: precision-recall curves as PNG;
//! - [`probexport`]: `probabilities-mrc-write`, the maps as MRC files;
//! - [`overlay`]: `picks-overlay` / `image-write`, a tomogram slice with truth and picks drawn;
//! - [`shape`]: features of the density around a pick and a linear discriminant on them;
//! - [`classify`]: `shape-classifier-train`, `pick-reclassify`, `picks-threshold` (a second
//!   stage that re-decides classes a network confuses), `shape-classifier-write`/`-read`;
//! - [`summary`]: `metrics-summary` / `summary-write`, the table of an ablation sweep;
//! - [`nodes`]: the node types (`labels-to-probabilities`, `pick-nms`, `pick-nms-tuned`,
//!   `pick-components`, `evaluate`, `evaluate-shrec`, `metrics-csv-write`, `pr-png-write`).
//!
//! See docs/picking.md.

pub mod classify;
pub mod components;
pub mod metrics;
pub mod nms;
pub mod nms_nodes;
pub mod nodes;
pub mod overlay;
pub mod plot;
pub mod probexport;
pub mod probmap;
pub mod shape;
pub mod summary;

tomoflow_sdk::export_plugin! {
    name: "picking",
    version: env!("CARGO_PKG_VERSION"),
    description: "Particle picking from probability maps (NMS, connected components) and evaluation (CZII, matched, SHREC)",
    nodes: [
        nodes::LabelsToProbabilitiesNode,
        nms_nodes::PickNmsNode,
        nms_nodes::PickNmsTunedNode,
        nodes::PickComponentsNode,
        nodes::EvaluateNode,
        nodes::EvaluateShrecNode,
        nodes::MetricsCsvWriteNode,
        nodes::PrPngWriteNode,
        probexport::ProbMrcWriteNode,
        summary::SummaryNode,
        overlay::OverlayNode,
        overlay::ImageWriteNode,
        summary::SummaryWriteNode,
        classify::ShapeTrainNode,
        classify::ReclassifyNode,
        classify::PicksThresholdNode,
        classify::ShapeWriteNode,
        classify::ShapeReadNode,
    ],
}

#[cfg(test)]
mod tests;
