//! Exporters: `mrc-write`, `mrc-write-labels`, `zarr-write`, `zarr-write-labels`, `png-write`,
//! `json-write`. Each writes to a temporary path and renames it into place when complete, and
//! writes byte-identical files for identical input.

use crate::core_of;
use schemars::JsonSchema;
use serde::Deserialize;
use std::path::PathBuf;
use tomoflow_cryo::mrc::{MrcElement, MrcWriter};
use tomoflow_cryo::zarr::{ZarrElement, ZarrWriter, DEFAULT_CHUNK};
use tomoflow_sdk::prelude::*;
use tomoflow_sdk::volume::{ChunkMeta, ZOrder};
use tomoflow_sdk::DType;

/// Parameters of the MRC, PNG and JSON exporters.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    /// Target file (filled in by the engine from the workflow's `exports:`).
    pub path: String,
}

fn default_chunk() -> usize {
    DEFAULT_CHUNK
}

/// Parameters of the OME-Zarr exporters.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ZarrExportParams {
    /// Target directory `X.zarr` (filled in by the engine from the workflow's `exports:`).
    pub path: String,
    /// Chunk edge in voxels (chunks are cubes, clamped to the volume).
    #[serde(default = "default_chunk")]
    #[schemars(range(min = 1, max = 1024))]
    pub chunk: usize,
}

/// Puts chunk cores back into z order and hands out complete full-plane slabs.
#[derive(Debug)]
pub struct SlabOrder<T> {
    order: ZOrder<Vec<T>>,
    geometry: Option<ChunkMeta>,
}

impl<T: Copy> Default for SlabOrder<T> {
    fn default() -> Self {
        SlabOrder {
            order: ZOrder::default(),
            geometry: None,
        }
    }
}

impl<T: Copy> SlabOrder<T> {
    /// Add a chunk; returns the slabs that are now ready, in z order.
    pub fn push(&mut self, meta: &ChunkMeta, data: &[T]) -> Result<Vec<Vec<T>>> {
        if let Some(g) = &self.geometry {
            if g.full_shape != meta.full_shape {
                bail!(
                    "chunk of a {:?} volume in a stream of {:?}",
                    meta.full_shape,
                    g.full_shape
                );
            }
        } else {
            self.geometry = Some(meta.clone());
        }
        let [_, ny, nx] = meta.full_shape;
        if meta.core_offset[1] != 0
            || meta.core_offset[2] != 0
            || meta.core_shape[1] != ny
            || meta.core_shape[2] != nx
        {
            bail!(
                "this exporter needs z-slab chunks covering whole planes, got a core of {:?} at {:?} in a {:?} volume",
                meta.core_shape,
                meta.core_offset,
                meta.full_shape
            );
        }
        let (z0, planes) = (meta.core_offset[0], meta.core_shape[0]);
        let mut ready = Vec::new();
        if self.order.arrive(z0, planes)? {
            ready.push(core_of(meta, data));
        } else {
            self.order.hold(z0, planes, core_of(meta, data));
        }
        while let Some((_, v)) = self.order.pop() {
            ready.push(v);
        }
        Ok(ready)
    }

    /// Geometry of the first chunk seen.
    pub fn geometry(&self) -> Option<&ChunkMeta> {
        self.geometry.as_ref()
    }

    /// True when every plane was handed out.
    pub fn complete(&self) -> bool {
        self.geometry
            .as_ref()
            .is_some_and(|g| self.order.next_plane() == g.full_shape[0] && self.order.is_drained())
    }
}

/// The voxels of a label chunk as u16 (u8 and u16 tensors are accepted).
pub fn labels_u16(msg: &Message) -> Result<(ChunkMeta, Vec<u16>)> {
    let t = msg.tensor("data").map_err(anyhow::Error::msg)?;
    match t.dtype() {
        DType::U16 => {
            let (m, d) = volume::chunk_data::<u16>(msg)?;
            Ok((m, d.to_vec()))
        }
        DType::U8 => {
            let (m, d) = volume::chunk_data::<u8>(msg)?;
            Ok((m, d.iter().map(|&v| v as u16).collect()))
        }
        other => bail!(
            "a label map must hold u8 or u16 voxels, got {}",
            other.name()
        ),
    }
}

fn no_input(name: &str) -> anyhow::Error {
    anyhow!("{name}: no chunk arrived; the input volume is empty")
}

// ---------------------------------------------------------------------------------------------
// MRC

/// Shared streaming MRC export.
pub struct MrcExport<T: MrcElement> {
    path: PathBuf,
    order: SlabOrder<T>,
    writer: Option<MrcWriter<T>>,
}

impl<T: MrcElement> MrcExport<T> {
    fn new(path: PathBuf) -> Self {
        MrcExport {
            path,
            order: SlabOrder::default(),
            writer: None,
        }
    }

    fn add(&mut self, meta: &ChunkMeta, data: &[T]) -> Result<()> {
        let ready = self.order.push(meta, data)?;
        if self.writer.is_none() {
            self.writer = Some(MrcWriter::create(
                &self.path,
                meta.full_shape,
                meta.voxel_size,
                meta.origin,
            )?);
        }
        if let Some(w) = self.writer.as_mut() {
            for s in ready {
                w.write_slab(&s)?;
            }
        }
        Ok(())
    }

    fn finish(&mut self, name: &str) -> Result<()> {
        let w = self.writer.take().ok_or_else(|| no_input(name))?;
        if !self.order.complete() {
            bail!(
                "{name}: the input stream ended with planes missing ({} of {} written)",
                w.planes_written(),
                self.order.geometry().map_or(0, |g| g.full_shape[0])
            );
        }
        w.finish()?;
        Ok(())
    }
}

/// `mrc-write`: export a volume as MRC (mode 2, float32).
pub struct MrcWriteNode(MrcExport<f32>);

impl Node for MrcWriteNode {
    fn process(&mut self, ctx: &mut Ctx, _input: usize, msg: Message) -> Result<()> {
        let (meta, data) = volume::chunk_f32(&msg)?;
        self.0.add(&meta, data)?;
        ctx.progress(meta.index as u64 + 1, meta.count as u64);
        Ok(())
    }
    fn finish(&mut self, _ctx: &mut Ctx) -> Result<()> {
        self.0.finish("mrc-write")
    }
}

impl NodeDef for MrcWriteNode {
    type Params = ExportParams;
    const NAME: &'static str = "mrc-write";
    const DOC: &'static str = "Export a volume as an MRC2014 file (mode 2, float32), streamed; header statistics computed from the data.";
    const INPUTS: &'static [Port] = &[port("volume", "volume", "volume to write")];
    const OUTPUTS: &'static [Port] = &[];
    const EXPORT_EXTENSIONS: &'static [&'static str] = &["mrc", "map", "rec"];
    fn create(p: ExportParams, info: &NodeInfo) -> Result<Self> {
        Ok(MrcWriteNode(MrcExport::new(info.resolve(&p.path))))
    }
}

/// `mrc-write-labels`: export a label map as MRC (mode 6, uint16).
pub struct MrcWriteLabelsNode(MrcExport<u16>);

impl Node for MrcWriteLabelsNode {
    fn process(&mut self, ctx: &mut Ctx, _input: usize, msg: Message) -> Result<()> {
        let (meta, data) = labels_u16(&msg)?;
        self.0.add(&meta, &data)?;
        ctx.progress(meta.index as u64 + 1, meta.count as u64);
        Ok(())
    }
    fn finish(&mut self, _ctx: &mut Ctx) -> Result<()> {
        self.0.finish("mrc-write-labels")
    }
}

impl NodeDef for MrcWriteLabelsNode {
    type Params = ExportParams;
    const NAME: &'static str = "mrc-write-labels";
    const DOC: &'static str = "Export a label map as an MRC2014 file (mode 6, uint16), streamed.";
    const INPUTS: &'static [Port] = &[port("labels", "labels", "label map to write")];
    const OUTPUTS: &'static [Port] = &[];
    const EXPORT_EXTENSIONS: &'static [&'static str] = &["mrc"];
    fn create(p: ExportParams, info: &NodeInfo) -> Result<Self> {
        Ok(MrcWriteLabelsNode(MrcExport::new(info.resolve(&p.path))))
    }
}

// ---------------------------------------------------------------------------------------------
// OME-Zarr

/// Shared streaming OME-Zarr export.
pub struct ZarrExport<T: ZarrElement> {
    path: PathBuf,
    chunk: usize,
    order: SlabOrder<T>,
    writer: Option<ZarrWriter<T>>,
}

impl<T: ZarrElement> ZarrExport<T> {
    fn new(path: PathBuf, chunk: usize) -> Self {
        ZarrExport {
            path,
            chunk: chunk.max(1),
            order: SlabOrder::default(),
            writer: None,
        }
    }

    fn add(&mut self, meta: &ChunkMeta, data: &[T]) -> Result<()> {
        let ready = self.order.push(meta, data)?;
        if self.writer.is_none() {
            let name = self
                .path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            self.writer = Some(ZarrWriter::create(
                &self.path,
                meta.full_shape,
                [self.chunk; 3],
                meta.voxel_size,
                meta.origin,
                &name,
            )?);
        }
        if let Some(w) = self.writer.as_mut() {
            for s in ready {
                w.write_slab(&s)?;
            }
        }
        Ok(())
    }

    fn finish(&mut self, name: &str) -> Result<()> {
        let w = self.writer.take().ok_or_else(|| no_input(name))?;
        if !self.order.complete() {
            bail!("{name}: the input stream ended with planes missing");
        }
        w.finish()?;
        Ok(())
    }
}

/// `zarr-write`: export a volume as OME-Zarr (float32).
pub struct ZarrWriteNode(ZarrExport<f32>);

impl Node for ZarrWriteNode {
    fn process(&mut self, ctx: &mut Ctx, _input: usize, msg: Message) -> Result<()> {
        let (meta, data) = volume::chunk_f32(&msg)?;
        self.0.add(&meta, data)?;
        ctx.progress(meta.index as u64 + 1, meta.count as u64);
        Ok(())
    }
    fn finish(&mut self, _ctx: &mut Ctx) -> Result<()> {
        self.0.finish("zarr-write")
    }
}

impl NodeDef for ZarrWriteNode {
    type Params = ZarrExportParams;
    const NAME: &'static str = "zarr-write";
    const DOC: &'static str = "Export a volume as OME-Zarr v0.4 (Zarr v2, uncompressed <f4 chunks, axes z/y/x in Å), streamed.\n\n\
        Readable by napari-ome-zarr, zarr-python 2 and 3 and copick.";
    const INPUTS: &'static [Port] = &[port("volume", "volume", "volume to write")];
    const OUTPUTS: &'static [Port] = &[];
    const EXPORT_EXTENSIONS: &'static [&'static str] = &["zarr"];
    fn create(p: ZarrExportParams, info: &NodeInfo) -> Result<Self> {
        Ok(ZarrWriteNode(ZarrExport::new(
            info.resolve(&p.path),
            p.chunk,
        )))
    }
}

/// `zarr-write-labels`: export a label map as OME-Zarr (uint16).
pub struct ZarrWriteLabelsNode(ZarrExport<u16>);

impl Node for ZarrWriteLabelsNode {
    fn process(&mut self, ctx: &mut Ctx, _input: usize, msg: Message) -> Result<()> {
        let (meta, data) = labels_u16(&msg)?;
        self.0.add(&meta, &data)?;
        ctx.progress(meta.index as u64 + 1, meta.count as u64);
        Ok(())
    }
    fn finish(&mut self, _ctx: &mut Ctx) -> Result<()> {
        self.0.finish("zarr-write-labels")
    }
}

impl NodeDef for ZarrWriteLabelsNode {
    type Params = ZarrExportParams;
    const NAME: &'static str = "zarr-write-labels";
    const DOC: &'static str =
        "Export a label map as OME-Zarr v0.4 (Zarr v2, uncompressed <u2 chunks), streamed.";
    const INPUTS: &'static [Port] = &[port("labels", "labels", "label map to write")];
    const OUTPUTS: &'static [Port] = &[];
    const EXPORT_EXTENSIONS: &'static [&'static str] = &["zarr"];
    fn create(p: ZarrExportParams, info: &NodeInfo) -> Result<Self> {
        Ok(ZarrWriteLabelsNode(ZarrExport::new(
            info.resolve(&p.path),
            p.chunk,
        )))
    }
}

// ---------------------------------------------------------------------------------------------
// PNG

/// `png-write`: a central-slices preview of a volume.
pub struct PngWriteNode {
    path: PathBuf,
    asm: volume::Assembler<f32>,
}

impl Node for PngWriteNode {
    fn process(&mut self, ctx: &mut Ctx, _input: usize, msg: Message) -> Result<()> {
        self.asm.add(&msg)?;
        ctx.check_cancelled()
    }
    fn finish(&mut self, _ctx: &mut Ctx) -> Result<()> {
        let v = std::mem::take(&mut self.asm).finish()?;
        let png = tomoflow_cryo::image::montage_png(&v.data, v.shape, v.voxel_size)?;
        tomoflow_cryo::image::write_atomic(&self.path, &png)
    }
}

impl NodeDef for PngWriteNode {
    type Params = ExportParams;
    const NAME: &'static str = "png-write";
    const DOC: &'static str = "Export a PNG preview of a volume: its central XY, XZ and YZ slices side by side.\n\n\
        Real aspect ratio, 2-pixel gaps, 8-bit grey with contrast clipped to the 0.5 and 99.5 percentiles.";
    const INPUTS: &'static [Port] = &[port("volume", "volume", "volume to preview")];
    const OUTPUTS: &'static [Port] = &[];
    const EXPORT_EXTENSIONS: &'static [&'static str] = &["png"];
    fn create(p: ExportParams, info: &NodeInfo) -> Result<Self> {
        Ok(PngWriteNode {
            path: info.resolve(&p.path),
            asm: volume::Assembler::new(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// JSON

/// The JSON document of a list of message metadata: the object if there is one, else an array.
pub fn metas_json(metas: &[serde_json::Map<String, serde_json::Value>]) -> Result<Vec<u8>> {
    let v = match metas {
        [one] => serde_json::Value::Object(one.clone()),
        many => serde_json::Value::Array(
            many.iter()
                .cloned()
                .map(serde_json::Value::Object)
                .collect(),
        ),
    };
    let mut s = serde_json::to_string_pretty(&v)?;
    s.push('\n');
    Ok(s.into_bytes())
}

/// `json-write`: export metrics as pretty JSON.
pub struct JsonWriteNode {
    path: PathBuf,
    metas: Vec<serde_json::Map<String, serde_json::Value>>,
}

impl Node for JsonWriteNode {
    fn process(&mut self, _ctx: &mut Ctx, _input: usize, msg: Message) -> Result<()> {
        self.metas.push(msg.meta);
        Ok(())
    }
    fn finish(&mut self, _ctx: &mut Ctx) -> Result<()> {
        tomoflow_cryo::image::write_atomic(&self.path, &metas_json(&self.metas)?)
    }
}

impl NodeDef for JsonWriteNode {
    type Params = ExportParams;
    const NAME: &'static str = "json-write";
    const DOC: &'static str = "Export metrics as pretty-printed JSON: the document if one message arrived, else an array of them.";
    const INPUTS: &'static [Port] = &[port("metrics", "metrics", "metrics to write")];
    const OUTPUTS: &'static [Port] = &[];
    const EXPORT_EXTENSIONS: &'static [&'static str] = &["json"];
    fn create(p: ExportParams, info: &NodeInfo) -> Result<Self> {
        Ok(JsonWriteNode {
            path: info.resolve(&p.path),
            metas: Vec::new(),
        })
    }
}

/// `png-compare`: one PNG comparing several volumes, one row of central slices per volume.
///
/// Meant for gathered inputs (`inputs: {volumes: "recon.tomogram[*]"}`): rows are ordered by
/// the instance label in `meta.gather`, and each row gets its own contrast. The row order is
/// also written next to the PNG as `<path>.rows.txt`.
pub struct PngCompareNode {
    path: PathBuf,
    volumes: std::collections::BTreeMap<String, volume::Assembler<f32>>,
}

impl Node for PngCompareNode {
    fn process(&mut self, ctx: &mut Ctx, _input: usize, msg: Message) -> Result<()> {
        let label = msg
            .meta
            .get("gather")
            .and_then(|g| g.get("instance"))
            .and_then(|v| v.as_str())
            .unwrap_or("main")
            .to_string();
        self.volumes.entry(label).or_default().add(&msg)?;
        ctx.check_cancelled()
    }
    fn finish(&mut self, ctx: &mut Ctx) -> Result<()> {
        if self.volumes.is_empty() {
            bail!("png-compare received no volume");
        }
        let mut rows = Vec::new();
        let mut names = String::new();
        for (label, asm) in std::mem::take(&mut self.volumes) {
            let v = asm
                .finish()
                .with_context(|| format!("volume of instance {label}"))?;
            let img = tomoflow_cryo::image::central_slices(&v.data, v.shape, v.voxel_size)?;
            rows.push((
                tomoflow_cryo::image::to_u8_robust(&img.data),
                img.width,
                img.height,
            ));
            names.push_str(&label);
            names.push('\n');
        }
        let (px, w, h) = tomoflow_cryo::image::stack_rows(&rows);
        let png = tomoflow_cryo::image::encode_png_gray(&px, w, h)?;
        tomoflow_cryo::image::write_atomic(&self.path, &png)?;
        let mut side = self.path.clone().into_os_string();
        side.push(".rows.txt");
        tomoflow_cryo::image::write_atomic(std::path::Path::new(&side), names.as_bytes())?;
        ctx.info(format!(
            "{} rows (top to bottom): {}",
            rows.len(),
            names.trim_end().replace('\n', ", ")
        ));
        Ok(())
    }
}

impl NodeDef for PngCompareNode {
    type Params = ExportParams;
    const NAME: &'static str = "png-compare";
    const DOC: &'static str = "Write one PNG comparing several volumes: a row of central XY/XZ/YZ slices per volume.\n\n\
        Connect a gathered input (`recon.tomogram[*]`); rows follow the instance labels (listed in `<path>.rows.txt`).";
    const INPUTS: &'static [Port] = &[port("volumes", "volume", "volumes to compare (gathered)")];
    const OUTPUTS: &'static [Port] = &[];
    fn create(p: ExportParams, info: &NodeInfo) -> Result<Self> {
        Ok(PngCompareNode {
            path: info.resolve(&p.path),
            volumes: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tomoflow_sdk::volume::Volume;

    #[test]
    fn slab_order_reorders_and_strips_halos() {
        let mut v = Volume::<f32>::zeros([7, 2, 3], [1.0; 3]);
        for (i, d) in v.data.iter_mut().enumerate() {
            *d = i as f32;
        }
        let mut msgs = v.to_messages(2, 1);
        msgs.swap(0, 2);
        let mut o = SlabOrder::<f32>::default();
        let mut out = Vec::new();
        for m in &msgs {
            let (meta, data) = volume::chunk_f32(m).unwrap();
            for s in o.push(&meta, data).unwrap() {
                out.extend(s);
            }
        }
        assert!(o.complete());
        assert_eq!(out, v.data);
        let (meta, data) = volume::chunk_f32(&msgs[0]).unwrap();
        assert!(o
            .push(&meta, data)
            .unwrap_err()
            .to_string()
            .contains("twice"));
    }

    #[test]
    fn mrc_and_zarr_exports_roundtrip_bytes_identical() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = Volume::<f32>::zeros([5, 4, 3], [2.0; 3]);
        for (i, d) in v.data.iter_mut().enumerate() {
            *d = (i as f32).cos();
        }
        let mut files = Vec::new();
        for (k, slab) in [(0, 2), (1, 5)] {
            let p = dir.path().join(format!("v{k}.mrc"));
            let mut e = MrcExport::<f32>::new(p.clone());
            for m in v.to_messages(slab, 0) {
                let (meta, data) = volume::chunk_f32(&m).unwrap();
                e.add(&meta, data).unwrap();
            }
            e.finish("t").unwrap();
            files.push(std::fs::read(&p).unwrap());
        }
        assert_eq!(files[0], files[1], "chunking must not change the bytes");
        let (_, back) = tomoflow_cryo::mrc::read_mrc(dir.path().join("v0.mrc")).unwrap();
        assert_eq!(back, v.data);
        let z = dir.path().join("v.zarr");
        let mut e = ZarrExport::<f32>::new(z.clone(), 2);
        for m in v.to_messages(3, 1) {
            let (meta, data) = volume::chunk_f32(&m).unwrap();
            e.add(&meta, data).unwrap();
        }
        e.finish("t").unwrap();
        assert_eq!(tomoflow_cryo::zarr::read_zarr(&z).unwrap().1, v.data);
        let mut e = MrcExport::<f32>::new(dir.path().join("missing.mrc"));
        let m = &v.to_messages(2, 0)[0];
        let (meta, data) = volume::chunk_f32(m).unwrap();
        e.add(&meta, data).unwrap();
        assert!(e
            .finish("mrc-write")
            .unwrap_err()
            .to_string()
            .contains("missing"));
    }

    #[test]
    fn json_document_shape() {
        let mut a = serde_json::Map::new();
        a.insert("x".into(), 1.into());
        let one = String::from_utf8(metas_json(std::slice::from_ref(&a)).unwrap()).unwrap();
        assert!(one.starts_with('{'));
        let two = String::from_utf8(metas_json(&[a.clone(), a]).unwrap()).unwrap();
        assert!(two.starts_with('['));
    }

    #[test]
    fn schemas_mark_input_files_and_ranges() {
        let s = tomoflow_sdk::plugin::params_schema::<crate::nodes::MrcReadParams>();
        assert_eq!(s["properties"]["path"]["x-tomoflow"], "input-file");
        assert!(s["properties"]["path"]["description"]
            .as_str()
            .unwrap()
            .contains("MRC file"));
        let s = tomoflow_sdk::plugin::params_schema::<crate::nodes::PhantomParams>();
        assert_eq!(s["properties"]["shape"]["items"]["maximum"], 4096);
        assert_eq!(s["additionalProperties"], false);
    }
}
