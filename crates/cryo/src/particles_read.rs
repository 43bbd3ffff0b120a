//! Readers of particle tables: every format [`crate::particles`] writes (RELION 5 and 4 STAR,
//! tomoflow and CZII CSV, copick picks JSON, Dynamo `.tbl`, IMOD `.mod`) plus a plain CSV whose
//! unit and origin the caller states. The coordinate conventions are those of
//! [`crate::particles`]; every reader turns a row into a 0-based voxel coordinate `v` (voxel
//! centres at integers) and the table keeps `position = v × voxel_size` (origin 0), except the
//! tomoflow CSV, which carries its own origin.
//!
//! Class names come from the file (copick object, CSV class column, IMOD object name) or from the
//! class numbers the caller maps (RELION `rlnClassNumber`, Dynamo column 22). Errors name the
//! file, the row (1-based, header excluded) and the field.

use crate::imod::ImodModel;
use crate::particles::{ClassInfo, Particle, ParticleTable, TomogramInfo};
use crate::rotation::{relion_angles, rotation_from_dynamo, rotation_from_relion, Mat3, Quat};
use crate::star::{self, StarBlock};
use anyhow::{anyhow, bail, Result};
use std::collections::BTreeMap;

/// A pick file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// RELION 5 or 4 particle STAR (`.star`).
    Star,
    /// CSV (`.csv`): tomoflow's columns, the CZII submission form, or plain `x,y,z`.
    Csv,
    /// copick picks JSON (`.json`).
    Copick,
    /// Dynamo table (`.tbl`).
    Dynamo,
    /// IMOD model (`.mod`).
    Imod,
}

impl Format {
    /// The format a file name's extension implies.
    pub fn from_path(path: &std::path::Path) -> Result<Format> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        Ok(match ext.as_str() {
            "star" => Format::Star,
            "csv" => Format::Csv,
            "json" => Format::Copick,
            "tbl" => Format::Dynamo,
            "mod" => Format::Imod,
            _ => bail!(
                "{}: cannot tell the pick format from the extension {ext:?}; \
                 expected .star, .csv, .json (copick), .tbl (Dynamo) or .mod (IMOD)",
                path.display()
            ),
        })
    }
}

/// Unit of a plain CSV's coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Ångström.
    Angstrom,
    /// Voxels of the tomogram.
    Voxel,
}

/// Where a plain CSV's coordinate 0 lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Origin {
    /// At the centre of voxel 0 (tomoflow, copick, RELION 4).
    #[default]
    VoxelCentre,
    /// At the outer corner of voxel 0 (voxel 0 spans [0, 1)).
    Corner,
}

/// What the caller knows beyond the file.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// The classes: names, numbers (as in the file's class column) and radii.
    pub classes: Vec<ClassInfo>,
    /// Voxel size in Å (needed where the file carries none).
    pub voxel_size: Option<f64>,
    /// Tomogram shape (z, y, x) in voxels (needed for RELION 5 files without sizes; used to
    /// check that every pick lies inside the tomogram).
    pub shape: Option<[usize; 3]>,
    /// Unit of a plain CSV's coordinates.
    pub unit: Option<Unit>,
    /// Origin of a plain CSV's coordinates.
    pub origin: Origin,
    /// A plain CSV's coordinate columns (x, y, z; default `x`, `y`, `z`, any case).
    pub columns: Option<[String; 3]>,
    /// The tomogram's name: selects it in files that hold several, names the picks of files
    /// that hold none (default: the file's stem).
    pub tomogram: Option<String>,
    /// Extra STAR blocks with tomogram sizes (a RELION 5 `tomograms.star`).
    pub tomograms_star: Vec<StarBlock>,
}

/// One row, before grouping into tables.
struct Row {
    tomo: String,
    class: usize,
    v: [f64; 3],
    r: Option<Mat3>,
    score: f64,
    instance: u32,
    row: usize,
}

/// Size facts a file gives about one tomogram.
#[derive(Clone, Copy, Default)]
struct Geometry {
    shape: Option<[usize; 3]>,
    voxel: Option<f64>,
}

/// Read a pick file's bytes; `what` (usually the path) names it in errors, `stem` names its
/// picks when the file holds no tomogram name. Returns one table per tomogram, sorted by name.
pub fn read(
    bytes: &[u8],
    format: Format,
    what: &str,
    stem: &str,
    o: &ReadOptions,
) -> Result<Vec<ParticleTable>> {
    if o.classes.is_empty() {
        bail!("{what}: no classes declared; give each class's name, number and radius");
    }
    let fallback = o.tomogram.clone().unwrap_or_else(|| stem.to_string());
    let text =
        || std::str::from_utf8(bytes).map_err(|_| anyhow!("{what}: not UTF-8 text ({format:?})"));
    let (rows, geo, origin) = match format {
        Format::Star => star_rows(text()?, what, &fallback, o)?,
        Format::Csv => csv_rows(text()?, what, &fallback, o)?,
        Format::Copick => copick_rows(text()?, what, &fallback, o)?,
        Format::Dynamo => dynamo_rows(text()?, what, &fallback, o)?,
        Format::Imod => imod_rows(bytes, what, &fallback, o)?,
    };
    assemble(rows, geo, origin, what, o)
}

type Rows = (Vec<Row>, BTreeMap<String, Geometry>, Option<[f64; 3]>);

/// The class index of a class name; `at` locates the value in errors (`file: row 3: class`).
fn class_by_name(o: &ReadOptions, name: &str, at: &str) -> Result<usize> {
    o.classes
        .iter()
        .position(|c| c.name == name)
        .ok_or_else(|| {
            anyhow!(
                "{at} = {name:?} is not a declared class; classes: {}",
                names(o)
            )
        })
}

/// The class index of a class number; `at` locates the value in errors.
fn class_by_number(o: &ReadOptions, n: f64, at: &str) -> Result<usize> {
    o.classes
        .iter()
        .position(|c| c.id as f64 == n)
        .ok_or_else(|| {
            let ids: Vec<String> = o
                .classes
                .iter()
                .map(|c| format!("{} = {}", c.id, c.name))
                .collect();
            anyhow!(
                "{at} = {n} is not a declared class number; classes: {}",
                ids.join(", ")
            )
        })
}

/// The only class, for files without a class column.
fn single_class(o: &ReadOptions, what: &str, column: &str) -> Result<usize> {
    if o.classes.len() == 1 {
        Ok(0)
    } else {
        bail!(
            "{what}: no {column} column, so every pick needs one class, but {} are declared ({})",
            o.classes.len(),
            names(o)
        )
    }
}

fn names(o: &ReadOptions) -> String {
    o.classes
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn voxel_needed(o: &ReadOptions, what: &str, why: &str) -> Result<f64> {
    o.voxel_size
        .ok_or_else(|| anyhow!("{what}: {why}; set the `voxel_size` parameter (Å)"))
}

fn parse_num(s: &str, what: &str, row: usize, field: &str) -> Result<f64> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => bail!("{what}: row {row}: {field} = {s:?} is not a finite number"),
    }
}

// ---------------------------------------------------------------------------------------------
// STAR

/// Per-tomogram sizes of `data_global` / tomograms.star loops.
fn star_geometry(blocks: &[StarBlock], what: &str) -> Result<BTreeMap<String, Geometry>> {
    let mut out = BTreeMap::new();
    for b in blocks {
        let Some(l) = b.loop_with("rlnTomoSizeX") else {
            continue;
        };
        let name = l.column("rlnTomoName");
        let col = |c: &str| l.numbers(c, what);
        let (sx, sy, sz) = (
            col("rlnTomoSizeX")?,
            col("rlnTomoSizeY")?,
            col("rlnTomoSizeZ")?,
        );
        let px = col("rlnTomoTiltSeriesPixelSize")?;
        let bin = col("rlnTomoTomogramBinning")?;
        for (i, row) in l.rows.iter().enumerate() {
            let n = name.map(|k| row[k].clone()).unwrap_or_default();
            let shape = match (&sx, &sy, &sz) {
                (Some(x), Some(y), Some(z)) => Some([z[i] as usize, y[i] as usize, x[i] as usize]),
                _ => None,
            };
            let voxel = px
                .as_ref()
                .map(|p| p[i] * bin.as_ref().map_or(1.0, |b| b[i]));
            out.insert(n, Geometry { shape, voxel });
        }
    }
    Ok(out)
}

fn star_rows(text: &str, what: &str, fallback: &str, o: &ReadOptions) -> Result<Rows> {
    let blocks = star::parse(text, what)?;
    let mut geo = star_geometry(&blocks, what)?;
    geo.extend(star_geometry(&o.tomograms_star, "tomograms STAR")?);
    let (l, relion5) = if let Some(l) = blocks
        .iter()
        .find_map(|b| b.loop_with("rlnCenteredCoordinateXAngst"))
    {
        (l, true)
    } else if let Some(l) = blocks.iter().find_map(|b| b.loop_with("rlnCoordinateX")) {
        (l, false)
    } else {
        bail!("{what}: no particle loop: expected the columns rlnCenteredCoordinateX/Y/ZAngst (RELION 5) or rlnCoordinateX/Y/Z (RELION 4)");
    };
    let axes = if relion5 {
        [
            "rlnCenteredCoordinateXAngst",
            "rlnCenteredCoordinateYAngst",
            "rlnCenteredCoordinateZAngst",
        ]
    } else {
        ["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"]
    };
    let num = |c: &str| -> Result<Option<Vec<f64>>> { l.numbers(c, what) };
    let mut xyz = Vec::new();
    for a in axes {
        xyz.push(num(a)?.ok_or_else(|| {
            anyhow!(
                "{what}: the particle loop has {} but no column _{a}",
                axes[0]
            )
        })?);
    }
    let angles = [
        num("rlnAngleRot")?,
        num("rlnAngleTilt")?,
        num("rlnAnglePsi")?,
    ];
    let class = num("rlnClassNumber")?;
    let single = if class.is_none() {
        Some(single_class(o, what, "_rlnClassNumber")?)
    } else {
        None
    };
    let fom = num("rlnAutopickFigureOfMerit")?;
    let inst = num("rlnTomoParticleId")?;
    let tomo_col = l.column("rlnTomoName");
    let mut rows = Vec::with_capacity(l.rows.len());
    for (i, r) in l.rows.iter().enumerate() {
        let row = i + 1;
        let tomo = tomo_col
            .map(|k| r[k].clone())
            .unwrap_or_else(|| fallback.to_string());
        let c = match (&class, single) {
            (Some(c), _) => {
                class_by_number(o, c[i], &format!("{what}: row {row}: _rlnClassNumber"))?
            }
            (None, Some(s)) => s,
            (None, None) => unreachable!(),
        };
        let mut v = [xyz[0][i], xyz[1][i], xyz[2][i]];
        if relion5 {
            let g = geo.get(&tomo).copied().unwrap_or_default();
            let shape = g.shape.or(o.shape).ok_or_else(|| {
                anyhow!("{what}: RELION 5 coordinates are centred on the tomogram, but no size is known for {tomo:?}: add a data_global block or tomograms.star with rlnTomoSizeX/Y/Z, or set `shape`")
            })?;
            let vs = match g.voxel {
                Some(vs) => vs,
                None => voxel_needed(
                    o,
                    what,
                    "RELION 5 coordinates are in Å and the file gives no pixel size",
                )?,
            };
            for a in 0..3 {
                v[a] = v[a] / vs + shape[2 - a] as f64 / 2.0;
            }
        }
        let r = match &angles {
            [Some(a), Some(b), Some(c)] => Some(rotation_from_relion(a[i], b[i], c[i])),
            _ => None,
        };
        rows.push(Row {
            tomo,
            class: c,
            v,
            r,
            score: fom.as_ref().map_or(1.0, |f| f[i]),
            instance: inst.as_ref().map_or(0, |n| n[i].max(0.0) as u32),
            row,
        });
    }
    Ok((rows, geo, None))
}

// ---------------------------------------------------------------------------------------------
// CSV

/// Split one CSV line (RFC 4180 quoting).
fn csv_fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if cur.is_empty() => quoted = true,
            (',', false) => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter().map(|f| f.trim().to_string()).collect()
}

fn csv_rows(text: &str, what: &str, fallback: &str, o: &ReadOptions) -> Result<Rows> {
    let mut lines = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'));
    let header: Vec<String> = lines
        .next()
        .map(csv_fields)
        .ok_or_else(|| anyhow!("{what}: empty CSV (expected a header line)"))?
        .into_iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    let col = |n: &str| header.iter().position(|h| h == n);
    let need = |n: &str| {
        col(n).ok_or_else(|| {
            anyhow!(
                "{what}: the header has no column {n:?} (columns: {})",
                header.join(", ")
            )
        })
    };
    enum Layout {
        Tomoflow,
        Czii,
        Plain,
    }
    let named = o
        .columns
        .as_ref()
        .map(|c| c.clone().map(|n| n.to_ascii_lowercase()));
    let layout = if named.is_some() {
        Layout::Plain
    } else if col("x_px").is_some() {
        Layout::Tomoflow
    } else if col("particle_type").is_some() && col("experiment").is_some() {
        Layout::Czii
    } else {
        Layout::Plain
    };
    let plain = named.unwrap_or_else(|| ["x", "y", "z"].map(String::from));
    let (coords, class_col, tomo_col) = match layout {
        Layout::Tomoflow => (["x_px", "y_px", "z_px"], col("class"), col("tomogram")),
        Layout::Czii => (["x", "y", "z"], col("particle_type"), col("experiment")),
        Layout::Plain => (
            [plain[0].as_str(), plain[1].as_str(), plain[2].as_str()],
            col("class").or(col("particle_type")).or(col("name")),
            col("tomogram").or(col("experiment")),
        ),
    };
    let idx = [need(coords[0])?, need(coords[1])?, need(coords[2])?];
    let single = if class_col.is_none() {
        Some(single_class(o, what, "class")?)
    } else {
        None
    };
    let (scale, shift) = match layout {
        Layout::Tomoflow => (1.0, 0.0),
        Layout::Czii => (
            1.0 / voxel_needed(o, what, "CZII CSV coordinates are in Å")?,
            0.0,
        ),
        Layout::Plain => {
            let unit = o.unit.ok_or_else(|| {
                anyhow!("{what}: a plain CSV (columns {}) does not say its unit; set `unit` to angstrom or voxel", plain.join(", "))
            })?;
            let s = match unit {
                Unit::Voxel => 1.0,
                Unit::Angstrom => 1.0 / voxel_needed(o, what, "the CSV's coordinates are in Å")?,
            };
            (
                s,
                if o.origin == Origin::Corner {
                    -0.5
                } else {
                    0.0
                },
            )
        }
    };
    let q_cols = ["qw", "qx", "qy", "qz"].map(col);
    let score_col = col("score");
    let inst_col = col("instance");
    let mut rows = Vec::new();
    let mut origin = None;
    for (i, line) in lines.enumerate() {
        let row = i + 1;
        let f = csv_fields(line);
        if f.len() < header.len() {
            bail!(
                "{what}: row {row} has {} fields, the header {}",
                f.len(),
                header.len()
            );
        }
        let mut v = [0.0; 3];
        for a in 0..3 {
            v[a] = parse_num(&f[idx[a]], what, row, coords[a])? * scale + shift;
        }
        // tomoflow's CSV carries the table's origin: Å minus voxels × voxel size, first row.
        if let (Layout::Tomoflow, None, Some(vs)) = (&layout, origin, o.voxel_size) {
            let mut org = [0.0f64; 3];
            for (k, name) in ["z_a", "y_a", "x_a"].iter().enumerate() {
                if let Some(c) = col(name) {
                    org[k] = parse_num(&f[c], what, row, &header[c])? - v[2 - k] * vs;
                }
            }
            origin = Some(org.map(|x| (x * 1e3).round() / 1e3));
        }
        let class = match (class_col, single) {
            (Some(c), _) => class_by_name(o, &f[c], &format!("{what}: row {row}: {}", header[c]))?,
            (None, Some(s)) => s,
            (None, None) => unreachable!(),
        };
        let r = match q_cols {
            [Some(w), Some(x), Some(y), Some(z)] => {
                let g = |c: usize| parse_num(&f[c], what, row, &header[c]);
                Some(
                    Quat {
                        w: g(w)?,
                        x: g(x)?,
                        y: g(y)?,
                        z: g(z)?,
                    }
                    .to_matrix(),
                )
            }
            _ => None,
        };
        rows.push(Row {
            tomo: tomo_col
                .map(|c| f[c].clone())
                .unwrap_or_else(|| fallback.to_string()),
            class,
            v,
            r,
            score: score_col
                .map(|c| parse_num(&f[c], what, row, "score"))
                .transpose()?
                .unwrap_or(1.0),
            instance: inst_col
                .map(|c| parse_num(&f[c], what, row, "instance"))
                .transpose()?
                .map_or(0, |n| n.max(0.0) as u32),
            row,
        });
    }
    Ok((rows, BTreeMap::new(), origin))
}

// ---------------------------------------------------------------------------------------------
// copick

fn copick_rows(text: &str, what: &str, fallback: &str, o: &ReadOptions) -> Result<Rows> {
    let doc: serde_json::Value =
        serde_json::from_str(text).map_err(|e| anyhow!("{what}: not JSON: {e}"))?;
    let object = doc["pickable_object_name"]
        .as_str()
        .ok_or_else(|| anyhow!("{what}: no \"pickable_object_name\" (not a copick picks file)"))?;
    let class = class_by_name(o, object, &format!("{what}: pickable_object_name"))?;
    let file_vs = doc["voxel_spacing"].as_f64();
    let vs = match (file_vs, o.voxel_size) {
        (_, Some(v)) => v,
        (Some(v), None) if v > 0.0 => v,
        _ => voxel_needed(
            o,
            what,
            "copick locations are in Å and the file gives no voxel_spacing",
        )?,
    };
    let tomo = doc["run_name"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| fallback.to_string());
    let points = doc["points"]
        .as_array()
        .ok_or_else(|| anyhow!("{what}: no \"points\" list"))?;
    let mut rows = Vec::with_capacity(points.len());
    for (i, p) in points.iter().enumerate() {
        let row = i + 1;
        let mut v = [0.0; 3];
        for (a, k) in ["x", "y", "z"].iter().enumerate() {
            let x = p["location"][k]
                .as_f64()
                .filter(|x| x.is_finite())
                .ok_or_else(|| {
                    anyhow!("{what}: point {row}: location.{k} is missing or not a finite number")
                })?;
            v[a] = x / vs;
        }
        let r = p["transformation_"].as_array().and_then(|m| {
            let mut r = [[0.0; 3]; 3];
            for (i, row) in m.iter().take(3).enumerate() {
                for (j, x) in row.as_array()?.iter().take(3).enumerate() {
                    r[i][j] = x.as_f64()?;
                }
            }
            Some(r)
        });
        rows.push(Row {
            tomo: tomo.clone(),
            class,
            v,
            r,
            score: p["score"].as_f64().unwrap_or(1.0),
            instance: p["instance_id"].as_u64().unwrap_or(0) as u32,
            row,
        });
    }
    let geo = BTreeMap::from([(
        tomo,
        Geometry {
            shape: None,
            voxel: Some(vs),
        },
    )]);
    Ok((rows, geo, None))
}

// ---------------------------------------------------------------------------------------------
// Dynamo

fn dynamo_rows(text: &str, what: &str, fallback: &str, o: &ReadOptions) -> Result<Rows> {
    let mut rows = Vec::new();
    let mut tomos = std::collections::BTreeSet::new();
    for (i, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let row = i + 1;
        let c: Vec<&str> = line.split_whitespace().collect();
        if c.len() < 26 {
            bail!("{what}: row {row} has {} columns; a Dynamo table has at least 26 (x, y, z are columns 24-26)", c.len());
        }
        let n = |k: usize, field: &str| parse_num(c[k - 1], what, row, field);
        let v = [
            n(24, "x (column 24)")? - 1.0,
            n(25, "y (column 25)")? - 1.0,
            n(26, "z (column 26)")? - 1.0,
        ];
        let number = n(22, "class (column 22)")?;
        let class = if o.classes.len() == 1 && number == 0.0 {
            0
        } else {
            class_by_number(o, number, &format!("{what}: row {row}: class (column 22)"))?
        };
        let tomo_index = n(20, "tomo (column 20)")?;
        tomos.insert(tomo_index as i64);
        rows.push(Row {
            tomo: tomo_index.to_string(),
            class,
            v,
            r: Some(rotation_from_dynamo(
                n(7, "tdrot (column 7)")?,
                n(8, "tilt (column 8)")?,
                n(9, "narot (column 9)")?,
            )),
            score: n(10, "cc (column 10)")?,
            instance: 0,
            row,
        });
    }
    // One tomogram: the file's (or the given) name; several: `<name>_<index>`.
    let several = tomos.len() > 1;
    for r in &mut rows {
        r.tomo = if several {
            format!("{fallback}_{}", r.tomo)
        } else {
            fallback.to_string()
        };
    }
    let _ = voxel_needed(o, what, "Dynamo coordinates are in pixels")?;
    Ok((rows, BTreeMap::new(), None))
}

// ---------------------------------------------------------------------------------------------
// IMOD

fn imod_rows(bytes: &[u8], what: &str, fallback: &str, o: &ReadOptions) -> Result<Rows> {
    let m = ImodModel::from_bytes(bytes).map_err(|e| anyhow!("{what}: {e}"))?;
    let file_vs = match m.units {
        -10 => Some(m.pixel_size as f64),
        -9 => Some(m.pixel_size as f64 * 10.0),
        -6 => Some(m.pixel_size as f64 * 1e4),
        _ => None,
    }
    .filter(|v| *v > 0.0);
    let mut rows = Vec::new();
    for obj in &m.objects {
        if obj.points.is_empty() {
            continue;
        }
        let class = if o.classes.len() == 1 && !o.classes.iter().any(|c| c.name == obj.name) {
            0
        } else {
            class_by_name(o, &obj.name, &format!("{what}: object name"))?
        };
        for p in &obj.points {
            rows.push(Row {
                tomo: fallback.to_string(),
                class,
                v: [p[0] as f64 - 0.5, p[1] as f64 - 0.5, p[2] as f64],
                r: None,
                score: 1.0,
                instance: 0,
                row: rows.len() + 1,
            });
        }
    }
    let shape = (m.max.iter().all(|&n| n > 0))
        .then(|| [m.max[2] as usize, m.max[1] as usize, m.max[0] as usize]);
    let geo = BTreeMap::from([(
        fallback.to_string(),
        Geometry {
            shape,
            voxel: file_vs,
        },
    )]);
    Ok((rows, geo, None))
}

// ---------------------------------------------------------------------------------------------
// assembly

/// Group rows into one table per tomogram, check geometry and bounds.
fn assemble(
    rows: Vec<Row>,
    geo: BTreeMap<String, Geometry>,
    origin: Option<[f64; 3]>,
    what: &str,
    o: &ReadOptions,
) -> Result<Vec<ParticleTable>> {
    let mut by_tomo: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for r in rows {
        by_tomo.entry(r.tomo.clone()).or_default().push(r);
    }
    // Tomograms the file sizes but holds no pick of get empty tables.
    for name in geo.keys().filter(|n| !n.is_empty()) {
        by_tomo.entry(name.clone()).or_default();
    }
    if by_tomo.is_empty() {
        let name = o.tomogram.clone().unwrap_or_default();
        by_tomo.insert(name, Vec::new());
    }
    if let Some(want) = &o.tomogram {
        let Some(rows) = by_tomo.remove(want) else {
            bail!(
                "{what}: no picks of tomogram {want:?}; the file names {}",
                by_tomo
                    .keys()
                    .map(|k| format!("{k:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        by_tomo = BTreeMap::from([(want.clone(), rows)]);
    }
    let mut out = Vec::new();
    for (name, rows) in by_tomo {
        let g = geo
            .get(&name)
            .or_else(|| geo.get(""))
            .copied()
            .unwrap_or_default();
        let vs = match (g.voxel, o.voxel_size) {
            (Some(f), Some(p)) if ((f - p) / p).abs() > 1e-3 => bail!(
                "{what}: the file gives a voxel size of {f} Å for {name:?}, the `voxel_size` parameter {p} Å; \
                 drop the parameter or correct it"
            ),
            (Some(f), _) => f,
            (None, Some(p)) => p,
            (None, None) => bail!("{what}: no voxel size is known for {name:?}; set the `voxel_size` parameter (Å)"),
        };
        let shape = match (g.shape, o.shape) {
            (Some(f), Some(p)) if f != p => bail!(
                "{what}: the file gives tomogram {name:?} a size of {f:?} (z, y, x), the `shape` parameter {p:?}"
            ),
            (s, p) => s.or(p),
        };
        if let Some(shape) = shape {
            check_inside(&rows, shape, what, &name)?;
        }
        let shape = shape.unwrap_or_else(|| bounding_shape(&rows));
        let org = origin.unwrap_or([0.0; 3]);
        let particles = rows
            .iter()
            .map(|r| {
                let rot = r.r.unwrap_or(Quat::IDENTITY.to_matrix());
                let (a, b, c) = relion_angles(&rot);
                let c_info = &o.classes[r.class];
                Particle {
                    class: c_info.name.clone(),
                    class_id: c_info.id,
                    x: org[2] + r.v[0] * vs,
                    y: org[1] + r.v[1] * vs,
                    z: org[0] + r.v[2] * vs,
                    rot: a,
                    tilt: b,
                    psi: c,
                    q: Quat::from_matrix(&rot).to_array(),
                    instance: r.instance,
                    score: r.score,
                }
            })
            .collect();
        out.push(ParticleTable {
            tomogram: TomogramInfo {
                name,
                shape,
                voxel_size: [vs; 3],
                origin: org,
            },
            classes: o.classes.clone(),
            particles,
        });
    }
    Ok(out)
}

/// Every pick must lie inside the tomogram (voxel centres from 0 to n − 1, half a voxel of slack).
fn check_inside(rows: &[Row], shape: [usize; 3], what: &str, name: &str) -> Result<()> {
    for r in rows {
        for (a, axis) in ["x", "y", "z"].iter().enumerate() {
            let n = shape[2 - a] as f64;
            if !(r.v[a] >= -0.5 && r.v[a] <= n - 0.5) {
                bail!(
                    "{what}: row {}: {axis} lies at voxel {:.2}, outside tomogram {name:?} (0 to {} along {axis}); \
                     check the unit, the voxel size and the shape",
                    r.row,
                    r.v[a],
                    n - 1.0
                );
            }
        }
    }
    Ok(())
}

/// The smallest shape (z, y, x) that holds every pick (for files that state no size).
fn bounding_shape(rows: &[Row]) -> [usize; 3] {
    let mut s = [1usize; 3];
    for r in rows {
        for a in 0..3 {
            s[2 - a] = s[2 - a].max((r.v[a] + 0.5).ceil().max(1.0) as usize);
        }
    }
    s
}

/// The loop of a STAR file with tomogram sizes, for [`ReadOptions::tomograms_star`].
pub fn tomograms_star(text: &str, what: &str) -> Result<Vec<StarBlock>> {
    let blocks = star::parse(text, what)?;
    if !blocks.iter().any(|b| b.loop_with("rlnTomoSizeX").is_some()) {
        bail!("{what}: no loop with _rlnTomoSizeX/Y/Z (expected a RELION 5 tomograms.star)");
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests;
