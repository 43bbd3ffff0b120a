//! tomoflow plugin `io`: volume sources (phantom, MRC, TIFF), normalisation, statistics, the
//! exporters (MRC, OME-Zarr, PNG, JSON; particle tables as STAR, CSV, copick JSON, Dynamo .tbl,
//! IMOD .mod) and the pick reader for all of those formats (`picks-read`).
//!
//! Volumes flow as z-slab chunk messages (see `tomoflow_sdk::volume`): triples are (z, y, x),
//! voxel sizes in Å, and `origin` is the position of the centre of voxel (0,0,0).
//! The science lives in pure functions (modules [`phantom`], [`process`], `tomoflow_cryo`) that are
//! unit-tested without a host; the node structs are thin wrappers.

pub mod export;
pub mod nodes;
pub mod particles_export;
pub mod particles_import;
pub mod phantom;
pub mod process;

use tomoflow_sdk::volume::ChunkMeta;

/// Bytes a default slab aims at.
pub const SLAB_BYTES: usize = 16 << 20;

/// Planes per slab: `slab` if given, else enough for about [`SLAB_BYTES`] of `elem`-byte voxels.
pub fn slab_planes(slab: Option<usize>, shape: [usize; 3], elem: usize) -> usize {
    slab.unwrap_or_else(|| SLAB_BYTES / (shape[1] * shape[2] * elem).max(1))
        .clamp(1, shape[0].max(1))
}

/// Geometry of z-slab `index` of `count`, planes `[z0, z1)`, no halo.
pub fn slab_meta(
    shape: [usize; 3],
    voxel_size: [f64; 3],
    origin: [f64; 3],
    (z0, z1): (usize, usize),
    index: usize,
    count: usize,
) -> ChunkMeta {
    ChunkMeta {
        full_shape: shape,
        offset: [z0, 0, 0],
        shape: [z1 - z0, shape[1], shape[2]],
        core_offset: [z0, 0, 0],
        core_shape: [z1 - z0, shape[1], shape[2]],
        voxel_size,
        origin,
        index,
        count,
    }
}

/// The core voxels of a chunk (the block minus its halo), copied out in C order.
pub fn core_of<T: Copy>(meta: &ChunkMeta, data: &[T]) -> Vec<T> {
    if meta.core_shape == meta.shape {
        return data.to_vec();
    }
    let [_, by, bx] = meta.shape;
    let mut out = Vec::with_capacity(meta.core_shape.iter().product());
    for z in 0..meta.core_shape[0] {
        for y in 0..meta.core_shape[1] {
            let lz = meta.core_offset[0] - meta.offset[0] + z;
            let ly = meta.core_offset[1] - meta.offset[1] + y;
            let lx = meta.core_offset[2] - meta.offset[2];
            let s = (lz * by + ly) * bx + lx;
            out.extend_from_slice(&data[s..s + meta.core_shape[2]]);
        }
    }
    out
}

tomoflow_sdk::export_plugin! {
    name: "io",
    version: env!("CARGO_PKG_VERSION"),
    description: "Volume I/O (MRC, TIFF, OME-Zarr, PNG, JSON), phantoms, normalisation and statistics",
    nodes: [
        nodes::PhantomNode,
        nodes::MrcReadNode,
        nodes::TiffReadNode,
        nodes::NormalizeNode,
        nodes::VolumeStatsNode,
        export::MrcWriteNode,
        export::MrcWriteLabelsNode,
        export::ZarrWriteNode,
        export::ZarrWriteLabelsNode,
        export::PngWriteNode,
        export::PngCompareNode,
        export::JsonWriteNode,
        particles_export::StarWriteNode,
        particles_export::CsvWriteNode,
        particles_export::CopickWriteNode,
        particles_export::DynamoWriteNode,
        particles_export::ModWriteNode,
        particles_import::PicksReadNode,
    ],
}

#[cfg(test)]
mod tests {
    use tomoflow_sdk::plugin::params_schema;
    use tomoflow_sdk::NodeDef;

    fn check<T: NodeDef>(names: &mut Vec<&'static str>) {
        let schema = params_schema::<T::Params>();
        assert_eq!(schema["type"], "object", "{}", T::NAME);
        if !T::EXPORT_EXTENSIONS.is_empty() {
            assert_eq!((T::INPUTS.len(), T::OUTPUTS.len()), (1, 0), "{}", T::NAME);
            assert!(
                schema["required"]
                    .as_array()
                    .unwrap()
                    .contains(&"path".into()),
                "{}",
                T::NAME
            );
        }
        names.push(T::NAME);
    }

    #[test]
    fn descriptor_lists_every_node_type_with_a_schema() {
        assert!(
            !super::tomoflow_plugin_descriptor().is_null(),
            "descriptor construction panicked"
        );
        let mut names = Vec::new();
        check::<crate::nodes::PhantomNode>(&mut names);
        check::<crate::nodes::MrcReadNode>(&mut names);
        check::<crate::nodes::TiffReadNode>(&mut names);
        check::<crate::nodes::NormalizeNode>(&mut names);
        check::<crate::nodes::VolumeStatsNode>(&mut names);
        check::<crate::export::MrcWriteNode>(&mut names);
        check::<crate::export::MrcWriteLabelsNode>(&mut names);
        check::<crate::export::ZarrWriteNode>(&mut names);
        check::<crate::export::ZarrWriteLabelsNode>(&mut names);
        check::<crate::export::PngWriteNode>(&mut names);
        check::<crate::export::PngCompareNode>(&mut names);
        check::<crate::export::JsonWriteNode>(&mut names);
        check::<crate::particles_export::StarWriteNode>(&mut names);
        check::<crate::particles_export::CsvWriteNode>(&mut names);
        check::<crate::particles_export::CopickWriteNode>(&mut names);
        check::<crate::particles_export::DynamoWriteNode>(&mut names);
        check::<crate::particles_export::ModWriteNode>(&mut names);
        check::<crate::particles_import::PicksReadNode>(&mut names);
        assert_eq!(names.len(), 18);
    }
}
