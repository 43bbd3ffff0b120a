//! Multi-page TIFF stacks as volumes (shared by the `io` and `noise` plugins): one page per z plane, all pages the same size and type
//! (grey u8/u16/i16/u32/i32/f32/f64). The voxel size may come from ImageJ metadata
//! (`spacing=` and `unit=` in the ImageDescription, XResolution/YResolution for y and x).

use ::tiff::decoder::{ifd::Value, Decoder, DecodingResult, Limits};
use ::tiff::tags::Tag;
use ::tiff::ColorType;
use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// What a TIFF stack holds.
#[derive(Debug, Clone, PartialEq)]
pub struct TiffInfo {
    /// Shape (pages, rows, columns) = (z, y, x).
    pub shape: [usize; 3],
    /// Voxel size (z, y, x) in Å from ImageJ metadata, if present and in a known unit.
    pub voxel_size: Option<[f64; 3]>,
    /// Sample type, e.g. `Gray(8)`.
    pub color: String,
}

fn open(path: &Path) -> Result<Decoder<BufReader<File>>> {
    let mut f =
        File::open(path).with_context(|| format!("cannot open TIFF file {}", path.display()))?;
    let mut head = Vec::with_capacity(crate::sniff::HEAD_BYTES);
    Read::by_ref(&mut f)
        .take(crate::sniff::HEAD_BYTES as u64)
        .read_to_end(&mut head)
        .with_context(|| format!("cannot read {}", path.display()))?;
    match crate::sniff::identify(&head) {
        Some(what) if !what.contains("TIFF") => {
            bail!("{} is {what}, not a TIFF file", path.display())
        }
        _ => {}
    }
    std::io::Seek::rewind(&mut f).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Decoder::new(BufReader::new(f))
        .with_context(|| format!("{} is not a readable TIFF file", path.display()))?
        .with_limits(Limits::unlimited()))
}

/// Å per `unit` (ImageJ spelling), or `None` for unknown units.
fn unit_to_angstrom(unit: &str) -> Option<f64> {
    match unit.trim().trim_matches('"').to_ascii_lowercase().as_str() {
        "a" | "å" | "angstrom" | "angstroms" | "\\u00c5" => Some(1.0),
        "nm" | "nanometer" | "nanometers" => Some(10.0),
        "um" | "µm" | "μm" | "micron" | "microns" | "micrometer" | "\\u00b5m" => Some(1e4),
        _ => None,
    }
}

fn rational(v: Option<Value>) -> Option<f64> {
    match v? {
        Value::Rational(n, d) if d != 0 => Some(n as f64 / d as f64),
        Value::Float(f) => Some(f as f64),
        Value::Double(f) => Some(f),
        _ => None,
    }
}

/// Read the page count, size, type and ImageJ voxel size, checking every page (no pixels read).
pub fn inspect(path: &Path) -> Result<TiffInfo> {
    let mut d = open(path)?;
    let (w, h) = d
        .dimensions()
        .with_context(|| format!("{}: cannot read page 0", path.display()))?;
    let color = d
        .colortype()
        .with_context(|| format!("{}: page 0 has an unsupported type", path.display()))?;
    if !matches!(color, ColorType::Gray(_)) {
        bail!(
            "{}: page 0 is {color:?}; tomoflow reads single-channel (grey) stacks only",
            path.display()
        );
    }
    let desc = match d.find_tag(Tag::ImageDescription) {
        Ok(Some(Value::Ascii(s))) => s,
        _ => String::new(),
    };
    let xres = rational(d.find_tag(Tag::XResolution).ok().flatten());
    let yres = rational(d.find_tag(Tag::YResolution).ok().flatten());
    let mut pages = 1;
    while d.more_images() {
        d.next_image()
            .with_context(|| format!("{}: cannot read page {pages}", path.display()))?;
        let dims = d.dimensions()?;
        let c = d.colortype()?;
        if dims != (w, h) || c != color {
            bail!(
                "{}: page {pages} is {}x{} {c:?} but page 0 is {w}x{h} {color:?}; all pages of a stack must match",
                path.display(),
                dims.0,
                dims.1
            );
        }
        pages += 1;
    }
    let mut spacing = None;
    let mut unit = None;
    if desc.starts_with("ImageJ") {
        for line in desc.lines() {
            if let Some(v) = line.strip_prefix("spacing=") {
                spacing = v.trim().parse::<f64>().ok();
            } else if let Some(v) = line.strip_prefix("unit=") {
                unit = unit_to_angstrom(v);
            }
        }
    }
    let voxel_size = match (spacing, unit) {
        (Some(s), Some(u)) if s > 0.0 => {
            let inplane = |r: Option<f64>| r.filter(|r| *r > 0.0).map(|r| u / r).unwrap_or(s * u);
            Some([s * u, inplane(yres), inplane(xres)])
        }
        _ => None,
    };
    Ok(TiffInfo {
        shape: [pages, h as usize, w as usize],
        voxel_size,
        color: format!("{color:?}"),
    })
}

/// Reads the pages of a stack one by one as f32.
pub struct PageReader {
    d: Decoder<BufReader<File>>,
    path: PathBuf,
    next: usize,
}

impl PageReader {
    /// Open a stack at page 0.
    pub fn open(path: &Path) -> Result<PageReader> {
        Ok(PageReader {
            d: open(path)?,
            path: path.to_path_buf(),
            next: 0,
        })
    }

    /// Decode the next page, appending its pixels to `out` as f32.
    pub fn read_next(&mut self, out: &mut Vec<f32>) -> Result<()> {
        if self.next > 0 {
            self.d.next_image().with_context(|| {
                format!("{}: cannot read page {}", self.path.display(), self.next)
            })?;
        }
        let img = self.d.read_image().with_context(|| {
            format!("{}: cannot decode page {}", self.path.display(), self.next)
        })?;
        match img {
            DecodingResult::U8(v) => out.extend(v.iter().map(|&x| x as f32)),
            DecodingResult::I8(v) => out.extend(v.iter().map(|&x| x as f32)),
            DecodingResult::U16(v) => out.extend(v.iter().map(|&x| x as f32)),
            DecodingResult::I16(v) => out.extend(v.iter().map(|&x| x as f32)),
            DecodingResult::U32(v) => out.extend(v.iter().map(|&x| x as f32)),
            DecodingResult::I32(v) => out.extend(v.iter().map(|&x| x as f32)),
            DecodingResult::F32(v) => out.extend_from_slice(&v),
            DecodingResult::F64(v) => out.extend(v.iter().map(|&x| x as f32)),
            _ => bail!(
                "{}: page {} has an unsupported sample type; use u8, u16, i16, u32, i32, f32 or f64",
                self.path.display(),
                self.next
            ),
        }
        self.next += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_microtubule_stack_like_its_mrc_twin() {
        let d = PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/data/real-tomograms"
        ));
        assert!(
            d.is_dir(),
            "shared test data missing at {} (CI provides it)",
            d.display()
        );
        let p = d.join("13pf_MT.tif");
        let info = inspect(&p).unwrap();
        assert_eq!(info.shape, [36, 206, 94]);
        let vs = info.voxel_size.expect("ImageJ spacing");
        for v in vs {
            assert!((v - 10.52).abs() < 1e-3, "{vs:?}");
        }
        let mut r = PageReader::open(&p).unwrap();
        let mut data = Vec::new();
        for _ in 0..36 {
            r.read_next(&mut data).unwrap();
        }
        let (_, mrc) = crate::mrc::read_mrc(d.join("13pf_MT.derived_float32.mrc")).unwrap();
        assert_eq!(data, mrc);
        assert!(inspect(&d.join("missing.tif"))
            .unwrap_err()
            .to_string()
            .contains("missing.tif"));
    }
}
