//! 8-bit greyscale PNG previews of slices and volumes, and [`Rgb`], a colour raster for overlays
//! (text and plots over it: [`crate::plot`]).
//!
//! Contrast is robust: values are clipped to their 0.5 and 99.5 percentiles (computed over the
//! finite values only) and mapped linearly to 0..=255; NaN and infinities become 0. Output is
//! deterministic.

use anyhow::{bail, Context, Result};
use std::path::Path;

/// An RGB raster (row-major, 3 bytes a pixel); `set` clips to the canvas.
#[derive(Debug, Clone)]
pub struct Rgb {
    /// Width in pixels.
    pub w: usize,
    /// Height in pixels.
    pub h: usize,
    /// Pixels, `[r, g, b]` row by row.
    pub px: Vec<u8>,
}

impl Rgb {
    /// A `w × h` canvas filled with one colour.
    pub fn filled(w: usize, h: usize, c: [u8; 3]) -> Rgb {
        Rgb {
            w,
            h,
            px: c.repeat(w * h),
        }
    }

    /// Set one pixel; outside the canvas nothing happens.
    pub fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.w && (y as usize) < self.h {
            let i = (y as usize * self.w + x as usize) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    /// PNG file bytes.
    pub fn png(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut out, self.w as u32, self.h as u32);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            enc.write_header()?.write_image_data(&self.px)?;
        }
        Ok(out)
    }

    /// Decode an 8-bit RGB PNG, such as [`Rgb::png`] writes (to check a picture's pixels).
    pub fn from_png(bytes: &[u8]) -> Result<Rgb> {
        let mut d = png::Decoder::new(std::io::Cursor::new(bytes)).read_info()?;
        let mut px = vec![0; d.output_buffer_size().unwrap_or(0)];
        let info = d.next_frame(&mut px)?;
        if (info.color_type, info.bit_depth) != (png::ColorType::Rgb, png::BitDepth::Eight) {
            bail!(
                "expected an 8-bit RGB PNG, got {:?} {:?}",
                info.color_type,
                info.bit_depth
            );
        }
        px.truncate(info.buffer_size());
        Ok(Rgb {
            w: info.width as usize,
            h: info.height as usize,
            px,
        })
    }
}

/// Pixels between the panels of a montage.
pub const GAP: usize = 2;

/// The `(lo, hi)` percentiles (in 0..=100) of the finite values, or `None` if there are none.
pub fn percentiles(values: &[f32], lo: f64, hi: f64) -> Option<(f32, f32)> {
    let mut v: Vec<f32> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    let n = v.len();
    let idx = |p: f64| (((p / 100.0) * (n - 1) as f64).round() as usize).min(n - 1);
    let (il, ih) = (idx(lo), idx(hi));
    let l = *v.select_nth_unstable_by(il, |a, b| a.total_cmp(b)).1;
    let h = *v.select_nth_unstable_by(ih, |a, b| a.total_cmp(b)).1;
    Some((l, h))
}

/// Map values to bytes with the robust 0.5/99.5 percentile window; NaN/Inf → 0.
pub fn to_u8_robust(values: &[f32]) -> Vec<u8> {
    let Some((lo, hi)) = percentiles(values, 0.5, 99.5) else {
        return vec![0; values.len()];
    };
    let span = (hi - lo) as f64;
    values
        .iter()
        .map(|&v| {
            if !v.is_finite() {
                0
            } else if span <= 0.0 {
                128
            } else {
                (((v - lo) as f64 / span).clamp(0.0, 1.0) * 255.0).round() as u8
            }
        })
        .collect()
}

/// Encode 8-bit grey pixels (row-major, `height` rows of `width`) as PNG bytes.
pub fn encode_png_gray(pixels: &[u8], width: usize, height: usize) -> Result<Vec<u8>> {
    if pixels.len() != width * height || width == 0 || height == 0 {
        bail!(
            "image of {width}x{height} pixels cannot hold {} values",
            pixels.len()
        );
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width as u32, height as u32);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().context("PNG header")?;
        w.write_image_data(pixels).context("PNG data")?;
        w.finish().context("PNG end")?;
    }
    Ok(out)
}

/// Write bytes to `path` atomically (temporary file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    let tmp = crate::mrc::temp_path(path);
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.with_context(|| format!("cannot write {}", path.display()))
}

/// Write a 2D f32 slice (`height` rows of `width`) as an 8-bit PNG with robust contrast.
pub fn write_slice_png(path: &Path, data: &[f32], width: usize, height: usize) -> Result<()> {
    let bytes = encode_png_gray(&to_u8_robust(data), width, height)?;
    write_atomic(path, &bytes)
}

/// A 2D f32 image, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// Pixels, `height` rows of `width`; NaN marks background.
    pub data: Vec<f32>,
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
}

/// Resample a `rows x cols` slice with pixel size `(pr, pc)` Å to square pixels of the
/// smaller size (nearest neighbour), so that the preview shows the real aspect ratio.
fn resample(src: &[f32], rows: usize, cols: usize, pr: f64, pc: f64, px: f64) -> Image {
    let h = ((rows as f64 * pr / px).round() as usize).max(1);
    let w = ((cols as f64 * pc / px).round() as usize).max(1);
    let mut data = Vec::with_capacity(h * w);
    for r in 0..h {
        let sr = (((r as f64 + 0.5) * px / pr) as usize).min(rows - 1);
        for c in 0..w {
            let sc = (((c as f64 + 0.5) * px / pc) as usize).min(cols - 1);
            data.push(src[sr * cols + sc]);
        }
    }
    Image {
        data,
        width: w,
        height: h,
    }
}

/// The central XY, XZ and YZ slices of a volume (shape and voxel size in (z, y, x)) side by
/// side, at the real aspect ratio, separated by [`GAP`] pixels; unused pixels are NaN.
/// Panels: XY (rows y, columns x), XZ (rows z, columns x), YZ (rows z, columns y).
pub fn central_slices(data: &[f32], shape: [usize; 3], voxel_size: [f64; 3]) -> Result<Image> {
    let [nz, ny, nx] = shape;
    if data.len() != nz * ny * nx || data.is_empty() {
        bail!("volume data has {} values but shape {shape:?}", data.len());
    }
    let vs: Vec<f64> = voxel_size
        .iter()
        .map(|&v| if v.is_finite() && v > 0.0 { v } else { 1.0 })
        .collect();
    let (vz, vy, vx) = (vs[0], vs[1], vs[2]);
    let px = vz.min(vy).min(vx);
    let (cz, cy, cx) = (nz / 2, ny / 2, nx / 2);
    let at = |z: usize, y: usize, x: usize| data[(z * ny + y) * nx + x];
    let xy: Vec<f32> = (0..ny)
        .flat_map(|y| (0..nx).map(move |x| (y, x)))
        .map(|(y, x)| at(cz, y, x))
        .collect();
    let xz: Vec<f32> = (0..nz)
        .flat_map(|z| (0..nx).map(move |x| (z, x)))
        .map(|(z, x)| at(z, cy, x))
        .collect();
    let yz: Vec<f32> = (0..nz)
        .flat_map(|z| (0..ny).map(move |y| (z, y)))
        .map(|(z, y)| at(z, y, cx))
        .collect();
    let panels = [
        resample(&xy, ny, nx, vy, vx, px),
        resample(&xz, nz, nx, vz, vx, px),
        resample(&yz, nz, ny, vz, vy, px),
    ];
    let height = panels.iter().map(|p| p.height).max().unwrap_or(1);
    let width = panels.iter().map(|p| p.width).sum::<usize>() + 2 * GAP;
    let mut out = vec![f32::NAN; width * height];
    let mut x0 = 0;
    for p in &panels {
        for r in 0..p.height {
            out[r * width + x0..r * width + x0 + p.width]
                .copy_from_slice(&p.data[r * p.width..(r + 1) * p.width]);
        }
        x0 += p.width + GAP;
    }
    Ok(Image {
        data: out,
        width,
        height,
    })
}

/// Stack 8-bit images (pixels, width, height) vertically, left-aligned, [`GAP`] black rows
/// apart: one row per compared volume.
pub fn stack_rows(rows: &[(Vec<u8>, usize, usize)]) -> (Vec<u8>, usize, usize) {
    let width = rows.iter().map(|r| r.1).max().unwrap_or(1);
    let height = rows.iter().map(|r| r.2).sum::<usize>() + GAP * rows.len().saturating_sub(1);
    let mut out = vec![0u8; width * height.max(1)];
    let mut y0 = 0;
    for (px, w, h) in rows {
        for r in 0..*h {
            out[(y0 + r) * width..(y0 + r) * width + w].copy_from_slice(&px[r * w..(r + 1) * w]);
        }
        y0 += h + GAP;
    }
    (out, width, height.max(1))
}

/// PNG bytes of the central-slices montage of a volume (see [`central_slices`]).
pub fn montage_png(data: &[f32], shape: [usize; 3], voxel_size: [f64; 3]) -> Result<Vec<u8>> {
    let img = central_slices(data, shape, voxel_size)?;
    encode_png_gray(&to_u8_robust(&img.data), img.width, img.height)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn robust_contrast_is_nan_safe() {
        let mut v: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        v[3] = f32::NAN;
        v[999] = 1e9;
        let b = to_u8_robust(&v);
        assert_eq!(b[3], 0);
        assert_eq!(b[999], 255);
        assert!(b[500] > 100 && b[500] < 155);
        assert_eq!(to_u8_robust(&[f32::NAN; 4]), vec![0; 4]);
        assert_eq!(to_u8_robust(&[2.0; 4]), vec![128; 4]);
    }

    #[test]
    fn montage_has_real_aspect_and_gaps() {
        let shape = [4, 6, 8];
        let data: Vec<f32> = (0..4 * 6 * 8).map(|i| i as f32).collect();
        let img = central_slices(&data, shape, [2.0, 1.0, 1.0]).unwrap();
        // XY 6x8, XZ 8x8 (z doubled), YZ 8x6.
        assert_eq!((img.width, img.height), (8 + 8 + 6 + 2 * GAP, 8));
        assert!(img.data[8].is_nan() && img.data[9].is_nan());
        assert_eq!(img.data[0], data[2 * 48]);
        let a = montage_png(&data, shape, [2.0, 1.0, 1.0]).unwrap();
        let b = montage_png(&data, shape, [2.0, 1.0, 1.0]).unwrap();
        assert_eq!(a, b);
        assert_eq!(&a[1..4], b"PNG");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.png");
        write_slice_png(&p, &data[..48], 8, 6).unwrap();
        assert!(std::fs::metadata(&p).unwrap().len() > 50);
    }
}
