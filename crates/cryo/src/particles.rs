//! Particle tables and their file formats: RELION 4 and 5 STAR, CSV, copick picks JSON,
//! Dynamo `.tbl`.
//!
//! One convention everywhere (the SDK's): positions are in Å in the tomogram frame, where the
//! centre of voxel `i` lies at `origin + i × voxel_size`. From there, with `v = (p − origin) /
//! voxel_size` the 0-based voxel coordinate (voxel centres at integers):
//! - RELION 4 `rlnCoordinateX/Y/Z` = `v` (pixels of the tomogram, binning 1);
//! - RELION 5 `rlnCenteredCoordinateX/Y/ZAngst` = `(v − N/2) × voxel_size` with `N` the
//!   tomogram size along that axis (RELION's centre is pixel N/2, as in its Fourier convention);
//! - copick `location` = `v × voxel_size` Å (the CryoET Data Portal's convention);
//! - Dynamo columns 24–26 = `v + 1` (MATLAB's 1-based pixels);
//! - CSV: both Å (`x_A`) and voxel coordinates (`x_px`).
//!
//! Orientations: see [`crate::rotation`]; RELION angles satisfy `Euler_angles2matrix(rot, tilt,
//! psi) = Rᵀ` for the active template→tomogram rotation `R`; copick's `transformation_` holds
//! `R` (x, y, z order) with zero translation; Dynamo angles are ZXZ with `R = Rz(tdrot) Rx(tilt)
//! Rz(narot)`.

use crate::rotation::{dynamo_angles, Quat};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// The tomogram a table refers to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TomogramInfo {
    /// Name (RELION `rlnTomoName`, copick run name).
    pub name: String,
    /// Shape (z, y, x) in voxels.
    pub shape: [usize; 3],
    /// Voxel size (z, y, x) in Å.
    pub voxel_size: [f64; 3],
    /// Centre of voxel (0,0,0) in Å (z, y, x).
    pub origin: [f64; 3],
}

/// A particle class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassInfo {
    /// Class number (label value in label maps, RELION `rlnClassNumber`).
    pub id: u32,
    /// Name (copick pickable object name).
    pub name: String,
    /// Radius in Å (serialised as `radius_A`, as in docs/data-kinds.md).
    #[serde(rename = "radius_A", alias = "radius_a")]
    pub radius_a: f64,
}

/// One particle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Particle {
    /// Class name.
    pub class: String,
    /// Class number.
    pub class_id: u32,
    /// Position x in Å.
    pub x: f64,
    /// Position y in Å.
    pub y: f64,
    /// Position z in Å.
    pub z: f64,
    /// RELION rot (degrees).
    pub rot: f64,
    /// RELION tilt (degrees).
    pub tilt: f64,
    /// RELION psi (degrees).
    pub psi: f64,
    /// Quaternion [w, x, y, z] of the active rotation template → tomogram.
    pub q: [f64; 4],
    /// Instance id (value in the instance map; 0 = none).
    #[serde(default)]
    pub instance: u32,
    /// Score (1 for ground truth).
    #[serde(default = "one")]
    pub score: f64,
}

fn one() -> f64 {
    1.0
}

/// A particle table: what travels on `particles` ports (as the message's JSON metadata).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParticleTable {
    /// The tomogram.
    pub tomogram: TomogramInfo,
    /// The classes.
    pub classes: Vec<ClassInfo>,
    /// The particles.
    pub particles: Vec<Particle>,
}

/// STAR flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StarFlavour {
    /// RELION 5: centred Å coordinates, plus a `data_global` block with the tomogram size.
    #[default]
    Relion5,
    /// RELION 4: pixel coordinates.
    Relion4,
}

impl ParticleTable {
    /// Parse from message metadata (a JSON object holding `tomogram`, `classes`, `particles`).
    pub fn from_json(v: &serde_json::Value) -> Result<ParticleTable> {
        serde_json::from_value(v.clone()).map_err(|e| anyhow::anyhow!("not a particle table: {e}"))
    }

    /// 0-based voxel coordinates (x, y, z) of a particle.
    pub fn voxel_coords(&self, p: &Particle) -> [f64; 3] {
        let t = &self.tomogram;
        [
            (p.x - t.origin[2]) / t.voxel_size[2],
            (p.y - t.origin[1]) / t.voxel_size[1],
            (p.z - t.origin[0]) / t.voxel_size[0],
        ]
    }

    /// The RELION STAR file text.
    pub fn to_star(&self, flavour: StarFlavour) -> String {
        let mut s = String::new();
        let t = &self.tomogram;
        let _ = writeln!(s, "# written by tomoflow {}\n# voxel i's centre is at origin + i * voxel size; see docs/data-kinds.md\n", env!("CARGO_PKG_VERSION"));
        if flavour == StarFlavour::Relion5 {
            let _ = writeln!(s, "data_global\n\nloop_\n_rlnTomoName #1\n_rlnTomoSizeX #2\n_rlnTomoSizeY #3\n_rlnTomoSizeZ #4\n_rlnTomoTiltSeriesPixelSize #5\n_rlnTomoTomogramBinning #6");
            let _ = writeln!(
                s,
                "{} {} {} {} {:.6} {:.6}\n",
                star_str(&t.name),
                t.shape[2],
                t.shape[1],
                t.shape[0],
                t.voxel_size[2],
                1.0
            );
        }
        let _ = writeln!(s, "data_particles\n\nloop_");
        let cols: &[&str] = match flavour {
            StarFlavour::Relion4 => &[
                "rlnTomoName",
                "rlnCoordinateX",
                "rlnCoordinateY",
                "rlnCoordinateZ",
            ],
            StarFlavour::Relion5 => &[
                "rlnTomoName",
                "rlnCenteredCoordinateXAngst",
                "rlnCenteredCoordinateYAngst",
                "rlnCenteredCoordinateZAngst",
            ],
        };
        let mut all: Vec<&str> = cols.to_vec();
        all.extend([
            "rlnAngleRot",
            "rlnAngleTilt",
            "rlnAnglePsi",
            "rlnClassNumber",
            "rlnTomoParticleId",
            "rlnAutopickFigureOfMerit",
        ]);
        for (i, c) in all.iter().enumerate() {
            let _ = writeln!(s, "_{c} #{}", i + 1);
        }
        for p in &self.particles {
            let v = self.voxel_coords(p);
            let pos = match flavour {
                StarFlavour::Relion4 => v,
                StarFlavour::Relion5 => [
                    (v[0] - t.shape[2] as f64 / 2.0) * t.voxel_size[2],
                    (v[1] - t.shape[1] as f64 / 2.0) * t.voxel_size[1],
                    (v[2] - t.shape[0] as f64 / 2.0) * t.voxel_size[0],
                ],
            };
            let _ = writeln!(
                s,
                "{} {:.4} {:.4} {:.4} {:.4} {:.4} {:.4} {} {} {:.6}",
                star_str(&t.name),
                pos[0],
                pos[1],
                pos[2],
                p.rot,
                p.tilt,
                p.psi,
                p.class_id,
                p.instance,
                p.score
            );
        }
        s.push('\n');
        s
    }

    /// CSV with a header: class, ids, Å and voxel coordinates, angles, quaternion, score.
    pub fn to_csv(&self) -> String {
        let mut s = String::from("tomogram,class,class_id,instance,x_A,y_A,z_A,x_px,y_px,z_px,rot,tilt,psi,qw,qx,qy,qz,score\n");
        for p in &self.particles {
            let v = self.voxel_coords(p);
            let _ = writeln!(
                s,
                "{},{},{},{},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.8},{:.8},{:.8},{:.8},{:.6}",
                csv_str(&self.tomogram.name), csv_str(&p.class), p.class_id, p.instance, p.x, p.y, p.z, v[0], v[1], v[2],
                p.rot, p.tilt, p.psi, p.q[0], p.q[1], p.q[2], p.q[3], p.score
            );
        }
        s
    }

    /// The CZII submission CSV: `id,experiment,particle_type,x,y,z`, `id` counting from 0,
    /// coordinates `v × voxel_size` in Å (the copick / CryoET Data Portal convention).
    pub fn to_czii_csv(&self) -> String {
        let mut s = String::from("id,experiment,particle_type,x,y,z\n");
        let vs = self.tomogram.voxel_size;
        for (i, p) in self.particles.iter().enumerate() {
            let v = self.voxel_coords(p);
            let _ = writeln!(
                s,
                "{i},{},{},{:.3},{:.3},{:.3}",
                self.tomogram.name,
                p.class,
                v[0] * vs[2],
                v[1] * vs[1],
                v[2] * vs[0]
            );
        }
        s
    }

    /// A copick picks document for one object (class); coordinates in Å from voxel 0's centre.
    pub fn to_copick(
        &self,
        object: &str,
        user_id: &str,
        session_id: &str,
        run_name: Option<&str>,
    ) -> Result<String> {
        if !self.classes.iter().any(|c| c.name == object) {
            bail!(
                "no class named {object:?} in the particle table; classes: {}",
                self.classes
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let t = &self.tomogram;
        let points: Vec<serde_json::Value> = self
            .particles
            .iter()
            .filter(|p| p.class == object)
            .map(|p| {
                let v = self.voxel_coords(p);
                let r = Quat { w: p.q[0], x: p.q[1], y: p.q[2], z: p.q[3] }.to_matrix();
                let m: Vec<Vec<f64>> = (0..4)
                    .map(|i| (0..4).map(|j| if i < 3 && j < 3 { r[i][j] } else if i == j { 1.0 } else { 0.0 }).collect())
                    .collect();
                serde_json::json!({
                    "location": {"x": v[0] * t.voxel_size[2], "y": v[1] * t.voxel_size[1], "z": v[2] * t.voxel_size[0]},
                    "transformation_": m,
                    "instance_id": p.instance,
                    "score": p.score,
                })
            })
            .collect();
        let doc = serde_json::json!({
            "pickable_object_name": object,
            "user_id": user_id,
            "session_id": session_id,
            "run_name": run_name.unwrap_or(&t.name),
            "voxel_spacing": t.voxel_size[2],
            "unit": "angstrom",
            "trust_orientation": true,
            "points": points,
        });
        let mut s = serde_json::to_string_pretty(&doc)?;
        s.push('\n');
        Ok(s)
    }

    /// A Dynamo table: 35 whitespace-separated columns per particle, no header.
    /// 1 tag, 2 aligned, 3 averaged, 4–6 shifts, 7–9 tdrot tilt narot, 10 cc, 13 ftype,
    /// 20 tomo, 22 class, 24–26 x y z (1-based pixels).
    pub fn to_dynamo_tbl(&self, tomo_index: u32) -> String {
        let mut s = String::new();
        for (i, p) in self.particles.iter().enumerate() {
            let v = self.voxel_coords(p);
            let r = Quat {
                w: p.q[0],
                x: p.q[1],
                y: p.q[2],
                z: p.q[3],
            }
            .to_matrix();
            let (tdrot, tilt, narot) = dynamo_angles(&r);
            let mut c = vec![0.0f64; 35];
            c[0] = (i + 1) as f64;
            c[1] = 1.0;
            c[2] = 1.0;
            c[6] = tdrot;
            c[7] = tilt;
            c[8] = narot;
            c[9] = p.score;
            c[19] = tomo_index as f64;
            c[21] = p.class_id as f64;
            c[23] = v[0] + 1.0;
            c[24] = v[1] + 1.0;
            c[25] = v[2] + 1.0;
            let line: Vec<String> = c
                .iter()
                .enumerate()
                .map(|(k, x)| {
                    if [0, 1, 2, 12, 19, 21].contains(&k) {
                        format!("{}", *x as i64)
                    } else {
                        format!("{x:.4}")
                    }
                })
                .collect();
            s.push_str(&line.join(" "));
            s.push('\n');
        }
        s
    }
}

fn star_str(s: &str) -> String {
    if s.is_empty() || s.contains(char::is_whitespace) || s.starts_with('_') || s.starts_with('#') {
        format!("\"{}\"", s.replace('"', "'"))
    } else {
        s.to_string()
    }
}

fn csv_str(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::rotation::{relion_angles, rotation_from_dynamo, rotation_from_relion};

    /// A small table with rotated particles of two classes (shared with other modules' tests).
    pub(crate) fn table() -> ParticleTable {
        let q = Quat::from_axis_angle([1.0, 2.0, 3.0], 40.0);
        let (rot, tilt, psi) = relion_angles(&q.to_matrix());
        ParticleTable {
            tomogram: TomogramInfo {
                name: "TS_01".into(),
                shape: [200, 512, 400],
                voxel_size: [10.0; 3],
                origin: [0.0; 3],
            },
            classes: vec![ClassInfo {
                id: 1,
                name: "ribosome".into(),
                radius_a: 150.0,
            }],
            particles: vec![Particle {
                class: "ribosome".into(),
                class_id: 1,
                x: 1005.0,
                y: 2560.0,
                z: 995.0,
                rot,
                tilt,
                psi,
                q: q.to_array(),
                instance: 7,
                score: 1.0,
            }],
        }
    }

    fn data_rows(s: &str, block: &str) -> Vec<Vec<String>> {
        let mut on = false;
        let mut rows = Vec::new();
        for l in s.lines() {
            if l.starts_with("data_") {
                on = l == block;
                continue;
            }
            if on
                && !l.is_empty()
                && !l.starts_with('_')
                && !l.starts_with("loop_")
                && !l.starts_with('#')
            {
                rows.push(l.split_whitespace().map(String::from).collect());
            }
        }
        rows
    }

    #[test]
    fn star_coordinates_follow_the_documented_convention() {
        let t = table();
        let r4 = t.to_star(StarFlavour::Relion4);
        let row = &data_rows(&r4, "data_particles")[0];
        assert_eq!(&row[..4], &["TS_01", "100.5000", "256.0000", "99.5000"]);
        assert!(!r4.contains("Centered"));
        let r5 = t.to_star(StarFlavour::Relion5);
        let row = &data_rows(&r5, "data_particles")[0];
        // x: (100.5 - 400/2) * 10; y: (256 - 256) * 10; z: (99.5 - 100) * 10
        assert_eq!(&row[1..4], &["-995.0000", "0.0000", "-5.0000"]);
        assert_eq!(
            data_rows(&r5, "data_global")[0][1..4],
            ["400", "512", "200"]
        );
        // angles reproduce the rotation through RELION's own matrix
        let (rot, tilt, psi): (f64, f64, f64) = (
            row[4].parse().unwrap(),
            row[5].parse().unwrap(),
            row[6].parse().unwrap(),
        );
        let back = Quat::from_matrix(&rotation_from_relion(rot, tilt, psi));
        let q = &t.particles[0].q;
        assert!(
            back.angle_to(&Quat {
                w: q[0],
                x: q[1],
                y: q[2],
                z: q[3]
            }) < 0.01
        );
    }

    #[test]
    fn other_formats() {
        let t = table();
        let csv = t.to_csv();
        assert!(csv.lines().nth(1).unwrap().starts_with(
            "TS_01,ribosome,1,7,1005.0000,2560.0000,995.0000,100.5000,256.0000,99.5000"
        ));
        let cp: serde_json::Value =
            serde_json::from_str(&t.to_copick("ribosome", "tomoflow", "0", None).unwrap()).unwrap();
        assert_eq!(cp["points"][0]["location"]["x"], 1005.0);
        assert_eq!(cp["points"][0]["instance_id"], 7);
        assert!(t
            .to_copick("nope", "u", "0", None)
            .unwrap_err()
            .to_string()
            .contains("ribosome"));
        let tbl = t.to_dynamo_tbl(1);
        let c: Vec<f64> = tbl.split_whitespace().map(|v| v.parse().unwrap()).collect();
        assert_eq!(c.len(), 35);
        assert_eq!((c[23], c[24], c[25]), (101.5, 257.0, 100.5));
        let r = rotation_from_dynamo(c[6], c[7], c[8]);
        let q = &t.particles[0].q;
        assert!(
            Quat::from_matrix(&r).angle_to(&Quat {
                w: q[0],
                x: q[1],
                y: q[2],
                z: q[3]
            }) < 0.01
        );
        let back = ParticleTable::from_json(&serde_json::to_value(&t).unwrap()).unwrap();
        assert_eq!(back, t);
    }
}
