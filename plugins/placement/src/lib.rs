//! tomoflow plugin `placement`: particle templates and crowded-sample placement with exact
//! ground truth (potential, class labels, instance labels, particle table).
//!
//! The science shared with other plugins (rotations, scattering factors, templates, particle
//! formats) lives in `tomoflow-cryo`; this crate holds the packing ([`place`]), the material
//! constants ([`sample`]) and the node types ([`nodes`]).

pub mod nodes;
pub mod place;
pub mod sample;

tomoflow_sdk::export_plugin! {
    name: "placement",
    version: env!("CARGO_PKG_VERSION"),
    description: "Particle templates (MRC maps, PDB/mmCIF models) and crowded-sample placement with exact ground truth",
    nodes: [nodes::TemplatesNode, nodes::PlaceNode],
}
