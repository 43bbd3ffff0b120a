//! # tomoflow
//!
//! A dataflow workflow engine: YAML workflows whose nodes are plugins loaded from shared
//! libraries at run time, streaming chunks to each other over bounded channels, with a
//! content-addressed store that makes every run resumable.
//!
//! The engine knows nothing about cryo-ET: it moves typed messages and caches them. Module map:
//! - [`workflow`]: the YAML format, `${...}` substitution, sweeps and replicates.
//! - [`plugin`]: discovery and loading of plugin libraries, the host side of the C ABI.
//! - [`graph`]: the instance graph: port kinds, parameter schemas, exports, cache keys.
//! - [`store`]: the content-addressed store, manifests, locking and the run journal.
//! - [`exec`]: the executor (one thread per node instance, bounded channels, cancellation).
//! - [`cli`]: the `tomoflow` command line.

pub mod cli;
pub mod error;
pub mod exec;
pub mod graph;
pub mod plugin;
pub mod report;
pub mod store;
pub mod workflow;
