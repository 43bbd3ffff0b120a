//! OME-Zarr v0.4 output (Zarr v2 format), as read by napari-ome-zarr, zarr-python 2/3 and copick.
//!
//! Layout of `X.zarr/`: `.zgroup`, `.zattrs` (one `multiscales` entry, axes z/y/x in ångström,
//! a scale and a translation transform) and one uncompressed array `0/` whose chunks are files
//! `0/iz/iy/ix` (`dimension_separator` "/") of raw little-endian C-order bytes; edge chunks are
//! padded to the full chunk shape with zeros. The translation is the position of the centre of
//! voxel (0,0,0), as OME-NGFF defines it (and as the tomoflow SDK's `origin`).

use anyhow::{bail, Context, Result};
use serde_json::json;
use std::path::{Path, PathBuf};

/// Default chunk edge.
pub const DEFAULT_CHUNK: usize = 64;

/// Element types of a Zarr array.
pub trait ZarrElement: Copy + Default {
    /// Zarr v2 dtype string.
    const DTYPE: &'static str;
    /// Bytes per element.
    const SIZE: usize;
    /// Append the little-endian bytes.
    fn put(v: Self, out: &mut Vec<u8>);
}

impl ZarrElement for f32 {
    const DTYPE: &'static str = "<f4";
    const SIZE: usize = 4;
    fn put(v: Self, out: &mut Vec<u8>) {
        out.extend_from_slice(&v.to_le_bytes());
    }
}
impl ZarrElement for u16 {
    const DTYPE: &'static str = "<u2";
    const SIZE: usize = 2;
    fn put(v: Self, out: &mut Vec<u8>) {
        out.extend_from_slice(&v.to_le_bytes());
    }
}
impl ZarrElement for u8 {
    const DTYPE: &'static str = "|u1";
    const SIZE: usize = 1;
    fn put(v: Self, out: &mut Vec<u8>) {
        out.push(v);
    }
}

/// The temporary directory an output is built in: `<dir>.tmp-<pid>`.
fn temp_dir(dir: &Path) -> PathBuf {
    crate::mrc::temp_path(dir)
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    let mut s = serde_json::to_string_pretty(v)?;
    s.push('\n');
    std::fs::write(path, s).with_context(|| format!("cannot write {}", path.display()))
}

/// A streaming OME-Zarr writer. Feed z-slabs in order with [`write_slab`](Self::write_slab);
/// each row of chunks is written as soon as its `chunk_z` planes are complete, so at most one
/// chunk row of planes is buffered. [`finish`](Self::finish) renames the directory into place
/// (replacing an existing one); dropping an unfinished writer removes the temporary directory.
pub struct ZarrWriter<T: ZarrElement> {
    dir: PathBuf,
    tmp: PathBuf,
    shape: [usize; 3],
    chunks: [usize; 3],
    planes: usize,
    buf: Vec<T>,
    row: usize,
    done: bool,
}

impl<T: ZarrElement> ZarrWriter<T> {
    /// Start writing a volume of `shape` (z, y, x) with the given chunk shape (each clamped to
    /// the volume), voxel size and origin (Å, z/y/x), naming the image `name`.
    pub fn create(
        dir: impl AsRef<Path>,
        shape: [usize; 3],
        chunks: [usize; 3],
        voxel_size: [f64; 3],
        origin: [f64; 3],
        name: &str,
    ) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        if shape.contains(&0) || chunks.contains(&0) {
            bail!(
                "cannot write {}: shape {shape:?} and chunks {chunks:?} must be positive",
                dir.display()
            );
        }
        let chunks = [
            chunks[0].min(shape[0]),
            chunks[1].min(shape[1]),
            chunks[2].min(shape[2]),
        ];
        let tmp = temp_dir(&dir);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)
                .with_context(|| format!("cannot remove stale {}", tmp.display()))?;
        }
        std::fs::create_dir_all(tmp.join("0"))
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        write_json(&tmp.join(".zgroup"), &json!({"zarr_format": 2}))?;
        let axis = |n: &str| json!({"name": n, "type": "space", "unit": "angstrom"});
        write_json(
            &tmp.join(".zattrs"),
            &json!({"multiscales": [{
                "version": "0.4",
                "name": name,
                "axes": [axis("z"), axis("y"), axis("x")],
                "datasets": [{"path": "0", "coordinateTransformations": [
                    {"type": "scale", "scale": voxel_size},
                    {"type": "translation", "translation": origin},
                ]}],
            }]}),
        )?;
        write_json(
            &tmp.join("0/.zarray"),
            &json!({
                "zarr_format": 2,
                "shape": shape,
                "chunks": chunks,
                "dtype": T::DTYPE,
                "compressor": null,
                "fill_value": 0,
                "order": "C",
                "filters": null,
                "dimension_separator": "/",
            }),
        )?;
        Ok(ZarrWriter {
            dir,
            tmp,
            shape,
            chunks,
            planes: 0,
            buf: Vec::new(),
            row: 0,
            done: false,
        })
    }

    /// Append whole z planes (a multiple of NY*NX values), in z order.
    pub fn write_slab(&mut self, data: &[T]) -> Result<()> {
        let n = crate::slab_planes(data.len(), self.shape, self.planes, &self.dir)?;
        let plane = self.shape[1] * self.shape[2];
        let mut rest = data;
        while !rest.is_empty() {
            let row_planes = self.chunks[0].min(self.shape[0] - self.row * self.chunks[0]);
            let want = row_planes * plane - self.buf.len();
            let take = want.min(rest.len());
            self.buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.buf.len() == row_planes * plane {
                self.flush_row(row_planes)?;
            }
        }
        self.planes += n;
        Ok(())
    }

    fn flush_row(&mut self, row_planes: usize) -> Result<()> {
        let [_, ny, nx] = self.shape;
        let [cz, cy, cx] = self.chunks;
        let mut bytes = Vec::with_capacity(cz * cy * cx * T::SIZE);
        for iy in 0..ny.div_ceil(cy) {
            for ix in 0..nx.div_ceil(cx) {
                bytes.clear();
                for z in 0..cz {
                    for y in 0..cy {
                        for x in 0..cx {
                            let (gy, gx) = (iy * cy + y, ix * cx + x);
                            let v = if z < row_planes && gy < ny && gx < nx {
                                self.buf[(z * ny + gy) * nx + gx]
                            } else {
                                T::default()
                            };
                            T::put(v, &mut bytes);
                        }
                    }
                }
                let d = self
                    .tmp
                    .join("0")
                    .join(self.row.to_string())
                    .join(iy.to_string());
                std::fs::create_dir_all(&d)
                    .with_context(|| format!("cannot create {}", d.display()))?;
                let f = d.join(ix.to_string());
                std::fs::write(&f, &bytes)
                    .with_context(|| format!("cannot write {}", f.display()))?;
            }
        }
        self.buf.clear();
        self.row += 1;
        Ok(())
    }

    /// Check that every plane arrived and move the directory into place.
    pub fn finish(mut self) -> Result<PathBuf> {
        if self.planes != self.shape[0] {
            bail!(
                "{}: only {} of {} planes were written",
                self.dir.display(),
                self.planes,
                self.shape[0]
            );
        }
        if self.dir.exists() {
            std::fs::remove_dir_all(&self.dir)
                .with_context(|| format!("cannot replace the existing {}", self.dir.display()))?;
        }
        std::fs::rename(&self.tmp, &self.dir).with_context(|| {
            format!(
                "cannot rename {} to {}",
                self.tmp.display(),
                self.dir.display()
            )
        })?;
        self.done = true;
        Ok(self.dir.clone())
    }
}

impl<T: ZarrElement> Drop for ZarrWriter<T> {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

/// What [`read_zarr`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct ZarrInfo {
    /// Shape (z, y, x).
    pub shape: [usize; 3],
    /// Chunk shape (z, y, x).
    pub chunks: [usize; 3],
    /// Zarr dtype string.
    pub dtype: String,
    /// Scale (Å, z/y/x).
    pub voxel_size: [f64; 3],
    /// Translation (Å, z/y/x).
    pub origin: [f64; 3],
}

fn read_json(p: &Path) -> Result<serde_json::Value> {
    let s = std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
    serde_json::from_str(&s).with_context(|| format!("{} is not valid JSON", p.display()))
}

fn triple<T: serde::de::DeserializeOwned>(v: &serde_json::Value, what: &str) -> Result<[T; 3]> {
    serde_json::from_value(v.clone()).with_context(|| format!("{what} is not a 3-element array"))
}

/// Read an OME-Zarr written by [`ZarrWriter`] (uncompressed, "/" separator) as f32.
pub fn read_zarr(dir: impl AsRef<Path>) -> Result<(ZarrInfo, Vec<f32>)> {
    let dir = dir.as_ref();
    let za = read_json(&dir.join("0/.zarray"))?;
    let attrs = read_json(&dir.join(".zattrs"))?;
    let tr = &attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"];
    let info = ZarrInfo {
        shape: triple(&za["shape"], "shape")?,
        chunks: triple(&za["chunks"], "chunks")?,
        dtype: za["dtype"].as_str().unwrap_or_default().to_string(),
        voxel_size: triple(&tr[0]["scale"], "scale")?,
        origin: triple(&tr[1]["translation"], "translation")?,
    };
    if !za["compressor"].is_null() {
        bail!(
            "{}: compressed arrays are not supported by this reader",
            dir.display()
        );
    }
    let size = match info.dtype.as_str() {
        "<f4" => 4,
        "<u2" => 2,
        "|u1" => 1,
        d => bail!("{}: unsupported dtype {d}", dir.display()),
    };
    let [nz, ny, nx] = info.shape;
    let [cz, cy, cx] = info.chunks;
    let mut out = vec![0f32; nz * ny * nx];
    for iz in 0..nz.div_ceil(cz) {
        for iy in 0..ny.div_ceil(cy) {
            for ix in 0..nx.div_ceil(cx) {
                let p = dir.join(format!("0/{iz}/{iy}/{ix}"));
                let b = match std::fs::read(&p) {
                    Ok(b) => b,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        return Err(e).with_context(|| format!("cannot read {}", p.display()))
                    }
                };
                if b.len() != cz * cy * cx * size {
                    bail!(
                        "{}: chunk has {} bytes, expected {}",
                        p.display(),
                        b.len(),
                        cz * cy * cx * size
                    );
                }
                for z in 0..cz {
                    for y in 0..cy {
                        for x in 0..cx {
                            let (gz, gy, gx) = (iz * cz + z, iy * cy + y, ix * cx + x);
                            if gz >= nz || gy >= ny || gx >= nx {
                                continue;
                            }
                            let i = ((z * cy + y) * cx + x) * size;
                            out[(gz * ny + gy) * nx + gx] = match size {
                                4 => f32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]),
                                2 => u16::from_le_bytes([b[i], b[i + 1]]) as f32,
                                _ => b[i] as f32,
                            };
                        }
                    }
                }
            }
        }
    }
    Ok((info, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_roundtrip_with_edge_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("v.zarr");
        let shape = [7, 5, 6];
        let data: Vec<f32> = (0..7 * 5 * 6).map(|i| i as f32 - 10.0).collect();
        std::fs::create_dir_all(target.join("junk")).unwrap();
        let mut w = ZarrWriter::<f32>::create(
            &target,
            shape,
            [3, 4, 4],
            [2.0, 3.0, 4.0],
            [1.0, 0.0, -1.0],
            "v",
        )
        .unwrap();
        // Slabs of 2 planes: not aligned with the chunk rows of 3.
        for c in data.chunks(2 * 30) {
            w.write_slab(c).unwrap();
        }
        w.finish().unwrap();
        assert!(!target.join("junk").exists());
        let (info, back) = read_zarr(&target).unwrap();
        assert_eq!(back, data);
        assert_eq!(info.shape, shape);
        assert_eq!(info.chunks, [3, 4, 4]);
        assert_eq!(info.voxel_size, [2.0, 3.0, 4.0]);
        assert_eq!(info.origin, [1.0, 0.0, -1.0]);
        // Edge chunk padded to full size.
        assert_eq!(
            std::fs::metadata(target.join("0/2/1/1")).unwrap().len(),
            3 * 4 * 4 * 4
        );
        let za: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(target.join("0/.zarray")).unwrap())
                .unwrap();
        assert_eq!(za["dimension_separator"], "/");
        assert_eq!(za["dtype"], "<f4");
        let zg = std::fs::read_to_string(target.join(".zgroup")).unwrap();
        assert!(zg.contains("\"zarr_format\": 2"));
        let attrs = std::fs::read_to_string(target.join(".zattrs")).unwrap();
        assert!(attrs.contains("\"version\": \"0.4\"") && attrs.contains("angstrom"));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary left"
        );
    }

    #[test]
    fn labels_and_incomplete_writes() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("l.zarr");
        let data: Vec<u16> = (0..4 * 3 * 2).map(|i| i as u16 * 300).collect();
        let mut w = ZarrWriter::<u16>::create(&target, [4, 3, 2], [64; 3], [1.0; 3], [0.0; 3], "l")
            .unwrap();
        w.write_slab(&data).unwrap();
        w.finish().unwrap();
        let (info, back) = read_zarr(&target).unwrap();
        assert_eq!(info.dtype, "<u2");
        assert_eq!(info.chunks, [4, 3, 2]);
        assert_eq!(back, data.iter().map(|&v| v as f32).collect::<Vec<_>>());
        let mut w = ZarrWriter::<u8>::create(
            dir.path().join("x.zarr"),
            [4, 3, 2],
            [2; 3],
            [1.0; 3],
            [0.0; 3],
            "x",
        )
        .unwrap();
        w.write_slab(&[1u8; 6]).unwrap();
        assert!(w
            .finish()
            .unwrap_err()
            .to_string()
            .contains("only 1 of 4 planes"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
