//! tomoflow plugin `noise`: backgrounds for training data.
//!
//! - `noise-empirical` ([`nodes::EmpiricalNode`]): background boxes sampled from real tomograms
//!   ([`source`]: reading, resampling, masking, normalising; [`empirical`]: sampling and
//!   seamless tiling).
//! - `noise-spectral` ([`nodes::SpectralNode`]): an anisotropic (k_xy, k_z) power-spectrum model
//!   fitted to real tomograms (or read back) and coloured Gaussian noise synthesised from it
//!   ([`spectral`], fast batched FFTs in [`fft3d`]); `noise-model-write` exports the model.
//! - `background-mix` ([`nodes::MixNode`]): clean signal + background at a target SNR ([`mix`]).
//! - `background-select` ([`nodes::SelectNode`]): synthetic / empirical / spectral / weighted
//!   mixture per replicate, for training sets.
//!
//! The science is documented in docs/physics.md ("Backgrounds: empirical, spectral and mixed"),
//! the data kinds in docs/data-kinds.md.

pub mod empirical;
pub mod fft3d;
pub mod mix;
pub mod nodes;
pub mod source;
pub mod spectral;

tomoflow_sdk::export_plugin! {
    name: "noise",
    version: env!("CARGO_PKG_VERSION"),
    description: "Backgrounds: empirical (real tomograms), spectral (fitted anisotropic noise), mixing at a target SNR, weighted training-set mixtures",
    nodes: [
        nodes::EmpiricalNode,
        nodes::SpectralNode,
        nodes::ModelWriteNode,
        nodes::MixNode,
        nodes::SelectNode,
    ],
}

#[cfg(test)]
mod tests {
    use tomoflow_sdk::plugin::params_schema;
    use tomoflow_sdk::NodeDef;

    fn check<T: NodeDef>(names: &mut Vec<&'static str>) {
        let schema = params_schema::<T::Params>();
        assert_eq!(schema["type"], "object", "{}", T::NAME);
        names.push(T::NAME);
    }

    #[test]
    fn descriptor_lists_every_node_type_with_a_schema() {
        assert!(!super::tomoflow_plugin_descriptor().is_null());
        let mut names = Vec::new();
        check::<crate::nodes::EmpiricalNode>(&mut names);
        check::<crate::nodes::SpectralNode>(&mut names);
        check::<crate::nodes::ModelWriteNode>(&mut names);
        check::<crate::nodes::MixNode>(&mut names);
        check::<crate::nodes::SelectNode>(&mut names);
        assert_eq!(names.len(), 5);
        let s = params_schema::<crate::nodes::EmpiricalParams>();
        assert_eq!(s["properties"]["path"]["x-tomoflow"], "input-file");
        assert!(s["properties"]["mask"].is_object(), "{s}");
    }
}

#[cfg(test)]
mod params_tests {
    use crate::nodes::{EmpiricalParams, SpectralParams};

    #[test]
    fn flattened_source_params_parse_and_unknown_keys_fail() {
        let p: EmpiricalParams = serde_json::from_value(serde_json::json!({
            "path": "a.tif", "shape": [8, 8, 8], "invert": true, "mask": {"k": 3.0}
        }))
        .unwrap();
        assert!(p.source.invert && p.source.mask.k == 3.0 && p.source.mask.auto);
        let e = serde_json::from_value::<EmpiricalParams>(serde_json::json!({
            "path": "a.tif", "shape": [8, 8, 8], "invrt": true
        }));
        assert!(e.is_err());
        let p: SpectralParams = serde_json::from_value(serde_json::json!({
            "model": "m.json", "shape": [8, 8, 8]
        }))
        .unwrap();
        assert!(p.path.is_none());
    }
}
