//! Workflow files: parsing with located errors, substitution and sweep expansion.

pub mod draw;
pub mod expand;
pub mod guard;
pub mod locate;
pub mod spec;
mod subst;

pub use expand::{expand, parse_set, Expanded, Instance};
pub use spec::{ExportSpec, NodeSpec, Resources, SweepSpec, Workflow, WorkflowSpec};
