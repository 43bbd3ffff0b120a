//! MRC2014 reading and writing.
//!
//! This is our own implementation rather than the `mrc` crate (0.8): we need a streaming
//! z-slab reader and writer with an atomic rename, size validation before any allocation with
//! errors that name the file, big-endian files, mode 12 (float16), IMOD's signed/unsigned byte
//! flag, and byte-identical output; doing that on top of a whole-file API would have meant
//! re-implementing most of it anyway, so the format (a 1024-byte header) is handled here.
//!
//! Conventions:
//! - Data are returned as `f32` in C order (z, y, x); every triple in [`MrcHeader`] is (z, y, x).
//! - Voxel size = `CELLA / MXYZ` per axis (0 when the header leaves it undefined, except that
//!   an axis of length 1 with an undefined size, as in single images, takes the in-plane size).
//! - `origin` is the header's `ORIGIN` field (Å), read as the position of the centre of voxel
//!   (0,0,0), as ChimeraX and the tomoflow SDK do; `NXSTART` etc. are reported in `nstart`.
//! - Only the standard axis order `MAPC/MAPR/MAPS = 1,2,3` is accepted (a header with all three
//!   zero is treated as 1,2,3); other orders are refused with an error rather than permuted.
//! - Mode 0 is signed 8-bit as in MRC2014 (and mrcfile), except for IMOD files (`IMODSTAMP`
//!   1146047817) whose `imodFlags` bit 0 is clear: old IMOD wrote unsigned bytes there.

use crate::stats::RunningStats;
use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// IMOD's header stamp (`IMODSTAMP`, word 39).
pub const IMOD_STAMP: i32 = 1_146_047_817;
/// Size of the main header in bytes.
pub const HEADER_BYTES: usize = 1024;
/// The label written into every file (no timestamps: output must be reproducible).
pub const LABEL: &str = concat!(
    "tomoflow ",
    env!("CARGO_PKG_VERSION"),
    " (tomoflow-cryo MRC writer)"
);

/// The storage type of the voxels (`MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MrcMode {
    /// Mode 0, signed bytes.
    I8,
    /// Mode 0, unsigned bytes (IMOD convention: `IMODSTAMP` present, flags bit 0 clear).
    U8,
    /// Mode 1, signed 16-bit.
    I16,
    /// Mode 2, 32-bit float.
    F32,
    /// Mode 6, unsigned 16-bit.
    U16,
    /// Mode 12, IEEE half float.
    F16,
}

impl MrcMode {
    /// The MODE number in the header.
    pub fn number(self) -> i32 {
        match self {
            MrcMode::I8 | MrcMode::U8 => 0,
            MrcMode::I16 => 1,
            MrcMode::F32 => 2,
            MrcMode::U16 => 6,
            MrcMode::F16 => 12,
        }
    }

    /// Bytes per voxel.
    pub fn bytes(self) -> usize {
        match self {
            MrcMode::I8 | MrcMode::U8 => 1,
            MrcMode::I16 | MrcMode::U16 | MrcMode::F16 => 2,
            MrcMode::F32 => 4,
        }
    }

    /// True for the floating-point modes (the only ones that can hold NaN or Inf).
    pub fn is_float(self) -> bool {
        matches!(self, MrcMode::F32 | MrcMode::F16)
    }
}

/// What the header of an MRC file says.
#[derive(Debug, Clone, PartialEq)]
pub struct MrcHeader {
    /// Shape (z, y, x) = (NZ, NY, NX).
    pub shape: [usize; 3],
    /// Voxel size in Å (z, y, x): CELLA / MXYZ (0 where undefined).
    pub voxel_size: [f64; 3],
    /// `ORIGIN` (z, y, x) in Å.
    pub origin: [f64; 3],
    /// `NZSTART, NYSTART, NXSTART`.
    pub nstart: [i32; 3],
    /// Voxel storage type.
    pub mode: MrcMode,
    /// `EXTTYPE` (e.g. `"FEI1"`, `"SERI"`), trimmed; empty when unset.
    pub ext_type: String,
    /// Size of the extended header in bytes (`NSYMBT`).
    pub ext_size: usize,
    /// `ISPG` space group.
    pub ispg: i32,
    /// `DMIN` from the header.
    pub dmin: f32,
    /// `DMAX` from the header.
    pub dmax: f32,
    /// `DMEAN` from the header.
    pub dmean: f32,
    /// `RMS` from the header.
    pub rms: f32,
    /// True when the file is big-endian.
    pub big_endian: bool,
    /// Text labels (trimmed).
    pub labels: Vec<String>,
}

impl MrcHeader {
    /// Byte offset of the first voxel.
    pub fn data_offset(&self) -> u64 {
        (HEADER_BYTES + self.ext_size) as u64
    }

    /// Bytes of one z plane.
    pub fn plane_bytes(&self) -> usize {
        self.shape[1] * self.shape[2] * self.mode.bytes()
    }

    /// Number of voxels.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True for an empty volume (never, for a header that parsed).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

struct Raw<'a> {
    b: &'a [u8],
    be: bool,
}

impl Raw<'_> {
    fn i32(&self, word: usize) -> i32 {
        let a: [u8; 4] = self.b[word * 4..word * 4 + 4].try_into().unwrap_or([0; 4]);
        if self.be {
            i32::from_be_bytes(a)
        } else {
            i32::from_le_bytes(a)
        }
    }
    fn f32(&self, word: usize) -> f32 {
        f32::from_bits(self.i32(word) as u32)
    }
}

/// Parse a 1024-byte header. `name` is used in error messages; `file_len` (when known) lets
/// the declared size be checked against the bytes present.
pub fn parse_header(b: &[u8], name: &str, file_len: Option<u64>) -> Result<MrcHeader> {
    match crate::sniff::identify(&b[..b.len().min(crate::sniff::HEAD_BYTES)]) {
        None => {}
        Some(what) if what.contains("MRC") => {}
        Some(what) => bail!("{name} is {what}, not an MRC file"),
    }
    if b.len() < HEADER_BYTES {
        bail!(
            "{name} is not an MRC file: it has {} bytes, fewer than the 1024-byte header",
            b.len()
        );
    }
    let stamp = &b[212..214];
    let be = match (stamp[0], stamp[1]) {
        (0x44, _) => false,
        (0x11, _) => true,
        _ => {
            // Unset stamp (old files): pick the byte order giving a sensible mode and sizes.
            let le = Raw { b, be: false };
            let plausible = |r: &Raw| {
                (0..=16).contains(&r.i32(3))
                    && (1..=1 << 20).contains(&r.i32(0))
                    && (1..=1 << 20).contains(&r.i32(1))
            };
            !plausible(&le) && plausible(&Raw { b, be: true })
        }
    };
    let r = Raw { b, be };
    let (nx, ny, nz, mode) = (r.i32(0), r.i32(1), r.i32(2), r.i32(3));
    let mode = match mode {
        0 => {
            let imod = r.i32(38) == IMOD_STAMP;
            if imod && r.i32(39) & 1 == 0 {
                MrcMode::U8
            } else {
                MrcMode::I8
            }
        }
        1 => MrcMode::I16,
        2 => MrcMode::F32,
        6 => MrcMode::U16,
        12 => MrcMode::F16,
        3 | 4 => bail!("{name} holds complex data (MODE {mode}); tomoflow reads only real-valued maps (modes 0, 1, 2, 6, 12)"),
        m => bail!("{name} has unsupported MRC MODE {m}; supported: 0 (int8), 1 (int16), 2 (float32), 6 (uint16), 12 (float16)"),
    };
    if nx <= 0 || ny <= 0 || nz <= 0 {
        bail!(
            "{name} declares invalid dimensions NX={nx} NY={ny} NZ={nz}: each must be at least 1"
        );
    }
    let (mapc, mapr, maps) = (r.i32(16), r.i32(17), r.i32(18));
    if !((mapc, mapr, maps) == (1, 2, 3) || (mapc, mapr, maps) == (0, 0, 0)) {
        bail!(
            "{name} stores its axes in the order MAPC/MAPR/MAPS = {mapc},{mapr},{maps}; tomoflow reads only 1,2,3 \
             (x fastest): reorder the file first, e.g. with `relion_image_handler` or mrcfile"
        );
    }
    let nsymbt = r.i32(23);
    if nsymbt < 0 {
        bail!("{name} declares a negative extended header size NSYMBT={nsymbt}");
    }
    let ext_type: String = b[104..108]
        .iter()
        .map(|&c| if c.is_ascii_graphic() { c as char } else { ' ' })
        .collect();
    let m = [r.i32(9), r.i32(8), r.i32(7)]; // mz, my, mx
    let cell = [r.f32(12) as f64, r.f32(11) as f64, r.f32(10) as f64]; // z, y, x
    let mut voxel_size = [0.0; 3];
    for a in 0..3 {
        if m[a] > 0 && cell[a].is_finite() && cell[a] > 0.0 {
            voxel_size[a] = cell[a] / m[a] as f64;
        }
    }
    // A single image usually leaves CELLA z at 0: give a flat axis the in-plane voxel size.
    let shape_zyx = [nz, ny, nx];
    if let Some(&inplane) = voxel_size.iter().rev().find(|&&v| v > 0.0) {
        for a in 0..3 {
            if voxel_size[a] == 0.0 && shape_zyx[a] == 1 {
                voxel_size[a] = inplane;
            }
        }
    }
    let nlabl = r.i32(55).clamp(0, 10) as usize;
    let labels = (0..nlabl)
        .map(|i| {
            String::from_utf8_lossy(&b[224 + 80 * i..304 + 80 * i])
                .trim_end_matches(['\0', ' '])
                .to_string()
        })
        .collect();
    let h = MrcHeader {
        shape: [nz as usize, ny as usize, nx as usize],
        voxel_size,
        origin: [r.f32(51) as f64, r.f32(50) as f64, r.f32(49) as f64],
        nstart: [r.i32(6), r.i32(5), r.i32(4)],
        mode,
        ext_type: ext_type.trim().to_string(),
        ext_size: nsymbt as usize,
        ispg: r.i32(22),
        dmin: r.f32(19),
        dmax: r.f32(20),
        dmean: r.f32(21),
        rms: r.f32(54),
        big_endian: be,
        labels,
    };
    if let Some(len) = file_len {
        let need = nx as u128 * ny as u128 * nz as u128 * h.mode.bytes() as u128;
        let have = (len as u128).saturating_sub(h.data_offset() as u128);
        if need > have {
            bail!(
                "file {name} declares {nx}x{ny}x{nz} mode {} = {need} bytes but holds only {have} bytes after the header \
                 (1024-byte header + {} bytes of extended header): the file is truncated or its header is corrupt",
                h.mode.number(),
                h.ext_size
            );
        }
        if need < have {
            // mrcfile's validator refuses these too: an NX/NY/NZ or MODE edited smaller than
            // the data would otherwise read as a sheared volume.
            bail!(
                "file {name} declares {nx}x{ny}x{nz} mode {} = {need} bytes but holds {have} bytes after the header \
                 ({} bytes more): NX, NY, NZ, MODE or NSYMBT (extended header {} bytes) disagree with the data; \
                 correct the header (e.g. with IMOD's alterheader) or trim the file",
                h.mode.number(),
                have - need,
                h.ext_size
            );
        }
    }
    Ok(h)
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: normalise.
            let mut e: i32 = -14;
            let mut m = m;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | (((e + 127) as u32) << 23) | ((m & 0x3ff) << 13)
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 112) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// Convert raw voxel bytes of `mode` to f32.
pub fn decode(bytes: &[u8], mode: MrcMode, big_endian: bool, out: &mut Vec<f32>) {
    out.clear();
    out.reserve(bytes.len() / mode.bytes());
    macro_rules! conv {
        ($n:expr, $f:expr) => {
            out.extend(bytes.chunks_exact($n).map(|c| {
                let a = c.try_into().unwrap_or([0; $n]);
                $f(a, big_endian)
            }))
        };
    }
    match mode {
        MrcMode::I8 => out.extend(bytes.iter().map(|&v| v as i8 as f32)),
        MrcMode::U8 => out.extend(bytes.iter().map(|&v| v as f32)),
        MrcMode::I16 => {
            conv!(2, |a, be| (if be {
                i16::from_be_bytes(a)
            } else {
                i16::from_le_bytes(a)
            }) as f32)
        }
        MrcMode::U16 => {
            conv!(2, |a, be| (if be {
                u16::from_be_bytes(a)
            } else {
                u16::from_le_bytes(a)
            }) as f32)
        }
        MrcMode::F16 => {
            conv!(2, |a, be| f16_to_f32(if be {
                u16::from_be_bytes(a)
            } else {
                u16::from_le_bytes(a)
            }))
        }
        MrcMode::F32 => conv!(4, |a, be| if be {
            f32::from_be_bytes(a)
        } else {
            f32::from_le_bytes(a)
        }),
    }
}

/// A streaming MRC reader: parses and validates the header, then reads z-slabs on demand.
#[derive(Debug)]
pub struct MrcReader {
    file: File,
    path: PathBuf,
    /// The parsed header.
    pub header: MrcHeader,
}

impl MrcReader {
    /// Open a file and validate its header against its size (nothing else is read).
    pub fn open(path: impl AsRef<Path>) -> Result<MrcReader> {
        let path = path.as_ref().to_path_buf();
        let mut file = File::open(&path)
            .with_context(|| format!("cannot open MRC file {}", path.display()))?;
        let len = file
            .metadata()
            .with_context(|| format!("cannot stat {}", path.display()))?
            .len();
        let mut b = vec![0u8; HEADER_BYTES.min(len as usize)];
        file.read_exact(&mut b)
            .with_context(|| format!("cannot read the header of {}", path.display()))?;
        let header = parse_header(&b, &path.display().to_string(), Some(len))?;
        Ok(MrcReader { file, path, header })
    }

    /// Read planes `[z0, z1)` as f32 in C order.
    pub fn read_slab(&mut self, z0: usize, z1: usize) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        self.read_slab_into(z0, z1, &mut out)?;
        Ok(out)
    }

    /// Read planes `[z0, z1)` into `out` (resized), reusing its allocation.
    pub fn read_slab_into(&mut self, z0: usize, z1: usize, out: &mut Vec<f32>) -> Result<()> {
        let nz = self.header.shape[0];
        if z0 > z1 || z1 > nz {
            bail!(
                "slab [{z0}, {z1}) is outside the {nz} planes of {}",
                self.path.display()
            );
        }
        let pb = self.header.plane_bytes();
        let mut raw = vec![0u8; (z1 - z0) * pb];
        self.file
            .seek(SeekFrom::Start(
                self.header.data_offset() + (z0 * pb) as u64,
            ))
            .and_then(|_| self.file.read_exact(&mut raw))
            .with_context(|| {
                format!(
                    "{} is truncated: cannot read planes {z0}..{z1} ({} bytes at offset {})",
                    self.path.display(),
                    raw.len(),
                    self.header.data_offset() + (z0 * pb) as u64
                )
            })?;
        decode(&raw, self.header.mode, self.header.big_endian, out);
        Ok(())
    }

    /// Read the whole volume.
    pub fn read_all(&mut self) -> Result<Vec<f32>> {
        self.read_slab(0, self.header.shape[0])
    }

    /// The file this reader reads.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Read a whole MRC file: header plus f32 voxels in C order (z, y, x).
pub fn read_mrc(path: impl AsRef<Path>) -> Result<(MrcHeader, Vec<f32>)> {
    let mut r = MrcReader::open(path)?;
    let data = r.read_all()?;
    Ok((r.header, data))
}

/// Element types the writer stores (`f32` → mode 2, `u16` → mode 6, `i8`/`u8` → mode 0).
pub trait MrcElement: Copy + Into<f64> {
    /// The mode this type is written as.
    const MODE: MrcMode;
    /// Append the little-endian bytes of `v`.
    fn put(v: Self, out: &mut Vec<u8>);
}

impl MrcElement for f32 {
    const MODE: MrcMode = MrcMode::F32;
    fn put(v: Self, out: &mut Vec<u8>) {
        out.extend_from_slice(&v.to_le_bytes());
    }
}
impl MrcElement for u16 {
    const MODE: MrcMode = MrcMode::U16;
    fn put(v: Self, out: &mut Vec<u8>) {
        out.extend_from_slice(&v.to_le_bytes());
    }
}
impl MrcElement for i16 {
    const MODE: MrcMode = MrcMode::I16;
    fn put(v: Self, out: &mut Vec<u8>) {
        out.extend_from_slice(&v.to_le_bytes());
    }
}
impl MrcElement for i8 {
    const MODE: MrcMode = MrcMode::I8;
    fn put(v: Self, out: &mut Vec<u8>) {
        out.push(v as u8);
    }
}
impl MrcElement for u8 {
    const MODE: MrcMode = MrcMode::U8;
    fn put(v: Self, out: &mut Vec<u8>) {
        out.push(v);
    }
}

/// Build a 1024-byte little-endian MRC2014 header.
pub fn build_header(
    shape: [usize; 3],
    voxel_size: [f64; 3],
    origin: [f64; 3],
    mode: MrcMode,
    stats: &RunningStats,
) -> Vec<u8> {
    let mut b = vec![0u8; HEADER_BYTES];
    let mut wi = |word: usize, v: i32| b[word * 4..word * 4 + 4].copy_from_slice(&v.to_le_bytes());
    let [nz, ny, nx] = shape;
    wi(0, nx as i32);
    wi(1, ny as i32);
    wi(2, nz as i32);
    wi(3, mode.number());
    // NXSTART.. stay 0.
    wi(7, nx as i32);
    wi(8, ny as i32);
    wi(9, nz as i32);
    wi(16, 1);
    wi(17, 2);
    wi(18, 3);
    wi(22, if nz > 1 { 1 } else { 0 });
    wi(23, 0);
    wi(27, 20141);
    match mode {
        MrcMode::U8 => {
            wi(38, IMOD_STAMP);
            wi(39, 0);
        }
        MrcMode::I8 => {
            wi(38, IMOD_STAMP);
            wi(39, 1);
        }
        _ => {}
    }
    wi(55, 1);
    let mut wf =
        |word: usize, v: f64| b[word * 4..word * 4 + 4].copy_from_slice(&(v as f32).to_le_bytes());
    wf(10, nx as f64 * voxel_size[2]);
    wf(11, ny as f64 * voxel_size[1]);
    wf(12, nz as f64 * voxel_size[0]);
    wf(13, 90.0);
    wf(14, 90.0);
    wf(15, 90.0);
    wf(19, stats.min());
    wf(20, stats.max());
    wf(21, stats.mean());
    wf(49, origin[2]);
    wf(50, origin[1]);
    wf(51, origin[0]);
    wf(54, stats.std());
    b[208..212].copy_from_slice(b"MAP ");
    b[212..216].copy_from_slice(&[0x44, 0x44, 0, 0]);
    let mut label = [b' '; 80];
    label[..LABEL.len().min(80)].copy_from_slice(&LABEL.as_bytes()[..LABEL.len().min(80)]);
    b[224..304].copy_from_slice(&label);
    b
}

/// The temporary path a file is written to before its atomic rename: `<path>.tmp-<pid>`.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(format!(".tmp-{}", std::process::id()));
    PathBuf::from(s)
}

/// A streaming MRC writer: slabs in z order, statistics computed on the way, header rewritten
/// at [`finish`](MrcWriter::finish), then fsync and an atomic rename into place. Dropping an
/// unfinished writer removes the temporary file.
pub struct MrcWriter<T: MrcElement> {
    out: Option<BufWriter<File>>,
    tmp: PathBuf,
    path: PathBuf,
    shape: [usize; 3],
    voxel_size: [f64; 3],
    origin: [f64; 3],
    planes: usize,
    stats: RunningStats,
    buf: Vec<u8>,
    _t: std::marker::PhantomData<T>,
}

impl<T: MrcElement> MrcWriter<T> {
    /// Start writing a volume of `shape` (z, y, x) to `path`.
    pub fn create(
        path: impl AsRef<Path>,
        shape: [usize; 3],
        voxel_size: [f64; 3],
        origin: [f64; 3],
    ) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if shape.iter().any(|&n| n == 0 || n > i32::MAX as usize) {
            bail!(
                "cannot write {}: invalid shape {shape:?} (each axis must be 1..=2^31-1)",
                path.display()
            );
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create directory {}", dir.display()))?;
        }
        let tmp = temp_path(&path);
        let file =
            File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&build_header(
            shape,
            voxel_size,
            origin,
            T::MODE,
            &RunningStats::new(),
        ))
        .with_context(|| format!("cannot write {}", tmp.display()))?;
        Ok(MrcWriter {
            out: Some(out),
            tmp,
            path,
            shape,
            voxel_size,
            origin,
            planes: 0,
            stats: RunningStats::new(),
            buf: Vec::new(),
            _t: std::marker::PhantomData,
        })
    }

    /// Append whole z planes (a multiple of NY*NX values).
    pub fn write_slab(&mut self, data: &[T]) -> Result<()> {
        let n = crate::slab_planes(data.len(), self.shape, self.planes, &self.path)?;
        self.buf.clear();
        self.buf.reserve(data.len() * T::MODE.bytes());
        for &v in data {
            self.stats.push(v.into());
            T::put(v, &mut self.buf);
        }
        let out = self.out.as_mut().context("writer already finished")?;
        out.write_all(&self.buf)
            .with_context(|| format!("cannot write {}", self.tmp.display()))?;
        self.planes += n;
        Ok(())
    }

    /// Planes written so far.
    pub fn planes_written(&self) -> usize {
        self.planes
    }

    /// Statistics of the values written so far.
    pub fn stats(&self) -> &RunningStats {
        &self.stats
    }

    /// Rewrite the header with the final statistics, fsync, and rename into place.
    pub fn finish(mut self) -> Result<PathBuf> {
        if self.planes != self.shape[0] {
            bail!(
                "{}: only {} of {} planes were written",
                self.path.display(),
                self.planes,
                self.shape[0]
            );
        }
        let out = self.out.take().context("writer already finished")?;
        let mut file = out
            .into_inner()
            .map_err(|e| anyhow::anyhow!("cannot flush {}: {}", self.tmp.display(), e.error()))?;
        let header = build_header(
            self.shape,
            self.voxel_size,
            self.origin,
            T::MODE,
            &self.stats,
        );
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.write_all(&header))
            .and_then(|_| file.sync_all())
            .with_context(|| format!("cannot write the header of {}", self.tmp.display()))?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path).with_context(|| {
            format!(
                "cannot rename {} to {}",
                self.tmp.display(),
                self.path.display()
            )
        })?;
        Ok(std::mem::take(&mut self.path))
    }
}

impl<T: MrcElement> Drop for MrcWriter<T> {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Write a whole volume in one call (atomically, like [`MrcWriter`]).
pub fn write_mrc<T: MrcElement>(
    path: impl AsRef<Path>,
    data: &[T],
    shape: [usize; 3],
    voxel_size: [f64; 3],
    origin: [f64; 3],
) -> Result<()> {
    if data.len() != shape.iter().product::<usize>() {
        bail!(
            "data has {} values but shape {shape:?} needs {}",
            data.len(),
            shape.iter().product::<usize>()
        );
    }
    let mut w = MrcWriter::<T>::create(path, shape, voxel_size, origin)?;
    w.write_slab(data)?;
    w.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn data_dir() -> PathBuf {
        let d = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data"));
        assert!(
            d.is_dir(),
            "shared test data missing at {} (CI provides it)",
            d.display()
        );
        d
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1.0)
    }

    #[test]
    fn roundtrip_and_exact_header() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.mrc");
        let shape = [3, 4, 5];
        let data: Vec<f32> = (0..60).map(|i| i as f32 * 0.5 - 3.0).collect();
        write_mrc(&p, &data, shape, [2.0, 3.0, 4.0], [1.0, 2.0, 3.0]).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(bytes.len(), 1024 + 60 * 4);
        let w = |i: usize| i32::from_le_bytes(bytes[i * 4..i * 4 + 4].try_into().unwrap());
        let f = |i: usize| f32::from_le_bytes(bytes[i * 4..i * 4 + 4].try_into().unwrap());
        assert_eq!((w(0), w(1), w(2), w(3)), (5, 4, 3, 2));
        assert_eq!((w(4), w(5), w(6)), (0, 0, 0));
        assert_eq!((w(7), w(8), w(9)), (5, 4, 3));
        assert_eq!((f(10), f(11), f(12)), (20.0, 12.0, 6.0));
        assert_eq!((f(13), f(14), f(15)), (90.0, 90.0, 90.0));
        assert_eq!((w(16), w(17), w(18)), (1, 2, 3));
        assert_eq!((w(22), w(23), w(27)), (1, 0, 20141));
        let s = RunningStats::of(&data);
        assert_eq!((f(19), f(20)), (-3.0, 26.5));
        assert_eq!(f(21), s.mean() as f32);
        assert_eq!(f(54), s.std() as f32);
        assert_eq!((f(49), f(50), f(51)), (3.0, 2.0, 1.0));
        assert_eq!(&bytes[208..212], b"MAP ");
        assert_eq!(&bytes[212..216], &[0x44, 0x44, 0, 0]);
        assert_eq!(w(55), 1);
        assert!(String::from_utf8_lossy(&bytes[224..304]).starts_with("tomoflow "));
        let (h, back) = read_mrc(&p).unwrap();
        assert_eq!(back, data);
        assert_eq!(h.shape, shape);
        assert_eq!(h.voxel_size, [2.0, 3.0, 4.0]);
        assert_eq!(h.origin, [1.0, 2.0, 3.0]);
        assert_eq!(h.mode, MrcMode::F32);
        // Byte-identical when written again; no temp file left over.
        let p2 = dir.path().join("b.mrc");
        write_mrc(&p2, &data, shape, [2.0, 3.0, 4.0], [1.0, 2.0, 3.0]).unwrap();
        assert_eq!(std::fs::read(&p2).unwrap(), bytes);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn labels_modes_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.mrc");
        let data: Vec<u16> = (0..24).map(|i| (i * 1000) as u16).collect();
        write_mrc(&p, &data, [2, 3, 4], [1.0; 3], [0.0; 3]).unwrap();
        let (h, back) = read_mrc(&p).unwrap();
        assert_eq!(h.mode, MrcMode::U16);
        assert_eq!(back, data.iter().map(|&v| v as f32).collect::<Vec<_>>());
        let d8: Vec<u8> = (0..24).map(|i| (i * 10) as u8).collect();
        write_mrc(&p, &d8, [2, 3, 4], [1.0; 3], [0.0; 3]).unwrap();
        let (h, back) = read_mrc(&p).unwrap();
        assert_eq!(h.mode, MrcMode::U8);
        assert_eq!(back, d8.iter().map(|&v| v as f32).collect::<Vec<_>>());
        let di8: Vec<i8> = (0..24).map(|i| (i * 10 - 120) as i8).collect();
        write_mrc(&p, &di8, [2, 3, 4], [1.0; 3], [0.0; 3]).unwrap();
        let (h, back) = read_mrc(&p).unwrap();
        assert_eq!(h.mode, MrcMode::I8);
        assert_eq!(back, di8.iter().map(|&v| v as f32).collect::<Vec<_>>());
        // A single image: ISPG 0.
        write_mrc(&p, &data[..12], [1, 3, 4], [1.0; 3], [0.0; 3]).unwrap();
        assert_eq!(read_mrc(&p).unwrap().0.ispg, 0);
    }

    #[test]
    fn streaming_slabs_match_whole_reads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.mrc");
        let data: Vec<f32> = (0..7 * 6 * 5).map(|i| (i as f32).sin()).collect();
        let mut w = MrcWriter::<f32>::create(&p, [7, 6, 5], [1.5; 3], [0.0; 3]).unwrap();
        for c in data.chunks(30 * 2) {
            w.write_slab(c).unwrap();
        }
        w.finish().unwrap();
        let mut r = MrcReader::open(&p).unwrap();
        assert_eq!(r.read_slab(2, 5).unwrap(), &data[60..150]);
        assert!(r.read_slab(5, 9).is_err());
        // An unfinished writer leaves nothing behind.
        let q = dir.path().join("unfinished.mrc");
        let w = MrcWriter::<f32>::create(&q, [2, 2, 2], [1.0; 3], [0.0; 3]).unwrap();
        drop(w);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn big_endian_and_float16() {
        // Hand-made big-endian mode 1 file and little-endian mode 12 file.
        let mut h = build_header(
            [1, 2, 2],
            [1.0; 3],
            [0.0; 3],
            MrcMode::I16,
            &RunningStats::new(),
        );
        for w in [0usize, 1, 2, 3, 7, 8, 9, 16, 17, 18] {
            let v = i32::from_le_bytes(h[w * 4..w * 4 + 4].try_into().unwrap());
            h[w * 4..w * 4 + 4].copy_from_slice(&v.to_be_bytes());
        }
        for w in 10..13 {
            let v = f32::from_le_bytes(h[w * 4..w * 4 + 4].try_into().unwrap());
            h[w * 4..w * 4 + 4].copy_from_slice(&v.to_be_bytes());
        }
        h[212..216].copy_from_slice(&[0x11, 0x11, 0, 0]);
        for v in [1i16, -2, 300, -32768] {
            h.extend_from_slice(&v.to_be_bytes());
        }
        let hd = parse_header(&h, "be", Some(h.len() as u64)).unwrap();
        assert!(hd.big_endian);
        assert_eq!(hd.shape, [1, 2, 2]);
        let mut out = Vec::new();
        decode(&h[1024..], hd.mode, true, &mut out);
        assert_eq!(out, vec![1.0, -2.0, 300.0, -32768.0]);
        let halfs: [u16; 6] = [0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00, 0x3555];
        let bytes: Vec<u8> = halfs.iter().flat_map(|h| h.to_le_bytes()).collect();
        decode(&bytes, MrcMode::F16, false, &mut out);
        assert_eq!(&out[..3], &[1.0, -2.0, 65504.0]);
        assert_eq!(out[3], 2f32.powi(-24));
        assert_eq!(out[4], f32::INFINITY);
        assert!((out[5] - 0.333).abs() < 1e-3);
    }

    #[test]
    fn complex_and_bad_axes_are_refused() {
        let mut h = build_header(
            [1, 2, 2],
            [1.0; 3],
            [0.0; 3],
            MrcMode::F32,
            &RunningStats::new(),
        );
        h[12..16].copy_from_slice(&4i32.to_le_bytes());
        let e = parse_header(&h, "c.mrc", None).unwrap_err().to_string();
        assert!(e.contains("complex"), "{e}");
        let mut h = build_header(
            [1, 2, 2],
            [1.0; 3],
            [0.0; 3],
            MrcMode::F32,
            &RunningStats::new(),
        );
        h[64..68].copy_from_slice(&3i32.to_le_bytes());
        h[72..76].copy_from_slice(&1i32.to_le_bytes());
        let e = parse_header(&h, "a.mrc", None).unwrap_err().to_string();
        assert!(e.contains("MAPC/MAPR/MAPS = 3,2,1"), "{e}");
    }

    #[test]
    fn truncated_and_gigantic_files_give_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.mrc");
        write_mrc(&p, &vec![1.0f32; 4 * 5 * 6], [4, 5, 6], [1.0; 3], [0.0; 3]).unwrap();
        let mut b = std::fs::read(&p).unwrap();
        b.truncate(1024 + 100);
        std::fs::write(&p, &b).unwrap();
        let e = MrcReader::open(&p).unwrap_err().to_string();
        assert!(
            e.contains("t.mrc") && e.contains("480 bytes") && e.contains("only 100 bytes"),
            "{e}"
        );
        let mut h = build_header(
            [100_000; 3],
            [1.0; 3],
            [0.0; 3],
            MrcMode::F32,
            &RunningStats::new(),
        );
        h.extend_from_slice(&[0u8; 64]);
        std::fs::write(&p, &h).unwrap();
        let e = MrcReader::open(&p).unwrap_err().to_string();
        assert!(
            e.contains(
                "100000x100000x100000 mode 2 = 4000000000000000 bytes but holds only 64 bytes"
            ),
            "{e}"
        );
        let mut h = build_header(
            [1, 1, 1],
            [1.0; 3],
            [0.0; 3],
            MrcMode::F32,
            &RunningStats::new(),
        );
        h[0..4].copy_from_slice(&(-5i32).to_le_bytes());
        std::fs::write(&p, &h).unwrap();
        assert!(MrcReader::open(&p)
            .unwrap_err()
            .to_string()
            .contains("NX=-5"));
        // NX edited smaller than the data: refused, not read sheared.
        write_mrc(&p, &vec![1.0f32; 4 * 5 * 6], [4, 5, 6], [1.0; 3], [0.0; 3]).unwrap();
        let mut b = std::fs::read(&p).unwrap();
        b[0..4].copy_from_slice(&5i32.to_le_bytes());
        std::fs::write(&p, &b).unwrap();
        let e = MrcReader::open(&p).unwrap_err().to_string();
        assert!(
            e.contains("5x5x4 mode 2 = 400 bytes but holds 480 bytes")
                && e.contains("80 bytes more"),
            "{e}"
        );
        std::fs::write(&p, b"short").unwrap();
        assert!(MrcReader::open(&p)
            .unwrap_err()
            .to_string()
            .contains("not an MRC file"));
    }

    #[test]
    fn reads_real_files() {
        let d = data_dir();
        let check = |rel: &str, shape: [usize; 3], vs: f64| {
            let (h, data) = read_mrc(d.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e:#}"));
            assert_eq!(h.shape, shape, "{rel}");
            for a in 0..3 {
                assert!(
                    close(h.voxel_size[a], vs, 1e-4),
                    "{rel}: voxel size {:?} != {vs}",
                    h.voxel_size
                );
            }
            assert_eq!(data.len(), h.len());
            assert!(data.iter().all(|v| v.is_finite()), "{rel}");
            (h, data)
        };
        let (h, mt) = check(
            "real-tomograms/13pf_MT.derived_float32.mrc",
            [36, 206, 94],
            10.52,
        );
        assert_eq!(h.mode, MrcMode::F32);
        let s = RunningStats::of(&mt);
        assert!(s.min() >= 0.0 && s.max() <= 255.0);
        check("real-tomograms/beta-tubulin.mrc", [20, 20, 20], 5.144);
        let (h, _) = check("mrc-quirks/fei-extended.mrc", [1, 3838, 3710], 0.8538);
        assert_eq!(h.mode, MrcMode::U16);
        assert_eq!(h.ext_type, "FEI1");
        assert!(h.ext_size > 0);
        check(
            "mrc-quirks/fei-extended.bin4.derived.mrc",
            [1, 959, 927],
            3.415,
        );
        check("maps/EMD-3197.map", [20, 20, 20], 11.4);
        check("maps/em_map.map", [20, 14, 19], 5.28);
        check("templates/emdb/emd_5225_13.68A_30.mrc", [30, 30, 30], 1.0);
        let mut n = 0;
        for e in std::fs::read_dir(d.join("templates/mrcs_10A")).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "mrc") {
                let (h, data) = read_mrc(&p).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()));
                assert!(
                    close(h.voxel_size[2], 10.0, 1e-3),
                    "{}: {:?}",
                    p.display(),
                    h.voxel_size
                );
                assert!(
                    h.shape.iter().all(|&n| (32..=72).contains(&n)),
                    "{}: {:?}",
                    p.display(),
                    h.shape
                );
                assert_eq!(data.len(), h.len());
                n += 1;
            }
        }
        assert_eq!(n, 26);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn prop_roundtrip(z in 1usize..6, y in 1usize..7, x in 1usize..7, seed in 0u32..1000, vs in 0.5f64..20.0) {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("p.mrc");
            let data: Vec<f32> = (0..z * y * x).map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) % 1000) as f32 / 7.0).collect();
            write_mrc(&p, &data, [z, y, x], [vs; 3], [0.0; 3]).unwrap();
            let (h, back) = read_mrc(&p).unwrap();
            prop_assert_eq!(back, data);
            prop_assert_eq!(h.shape, [z, y, x]);
            prop_assert!(close(h.voxel_size[0], vs, 1e-6));
        }
    }
}
