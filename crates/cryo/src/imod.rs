//! IMOD binary model files (`.mod`, format `IMODV1.2`): particle picks as scattered-point
//! objects, one object per class, readable by 3dmod, `imodinfo`, PEET and `imodmodel` (Python).
//!
//! Layout (big-endian throughout): `IMOD` `V1.2`, the 232-byte model header, then per object an
//! `OBJT` chunk (176 bytes) followed by its `CONT` chunks (16-byte header plus `psize` points of
//! three `f32`), and `IEOF` at the end.
//!
//! Coordinates: IMOD model points are in pixels of the image with the centre of voxel
//! (0, 0, 0) at **(0.5, 0.5, 0.0)**: x and y count from the pixel's corner, z from the first
//! section's centre. With `v = (p − origin) / voxel_size` the 0-based voxel coordinate of a
//! position (see [`crate::particles`]), the point written is `(v_x + 0.5, v_y + 0.5, v_z)`.

use crate::particles::ParticleTable;
use anyhow::{bail, Result};

/// Object flag: contours are open (`IMOD_OBJFLAG_OPEN`, bit 3).
pub const OBJFLAG_OPEN: u32 = 1 << 3;
/// Object flag: scattered points, never connected (`IMOD_OBJFLAG_SCAT`, bit 9).
pub const OBJFLAG_SCAT: u32 = 1 << 9;
/// Pixel-size unit: Ångström (`IMOD_UNIT_ANGSTROM`).
pub const UNIT_ANGSTROM: i32 = -10;

/// One object of a model: a name, a colour and scattered points.
#[derive(Debug, Clone, PartialEq)]
pub struct ImodObject {
    /// Object name (at most 63 bytes are stored).
    pub name: String,
    /// Object flags (`OBJFLAG_*`).
    pub flags: u32,
    /// Colour (red, green, blue) in 0..1.
    pub color: [f32; 3],
    /// Radius in pixels of the sphere drawn at each scattered point.
    pub sphere_radius_px: i32,
    /// Points (x, y, z) in IMOD pixel coordinates, all in one contour.
    pub points: Vec<[f32; 3]>,
}

/// A model: image size, pixel size and objects.
#[derive(Debug, Clone, PartialEq)]
pub struct ImodModel {
    /// Model name (at most 127 bytes are stored).
    pub name: String,
    /// Image size (x, y, z) in pixels.
    pub max: [i32; 3],
    /// Pixel size in `units`.
    pub pixel_size: f32,
    /// Unit exponent of the pixel size (−10 = Å, 0 = pixels).
    pub units: i32,
    /// Objects.
    pub objects: Vec<ImodObject>,
}

/// A distinct colour per object index (3dmod's first default colours, then a hue walk).
fn colour(i: usize) -> [f32; 3] {
    const C: [[f32; 3]; 8] = [
        [0.0, 1.0, 0.0],
        [0.0, 1.0, 1.0],
        [1.0, 0.0, 1.0],
        [1.0, 1.0, 0.0],
        [0.0, 0.0, 1.0],
        [1.0, 0.0, 0.0],
        [1.0, 0.5, 0.0],
        [0.5, 0.0, 1.0],
    ];
    C[i % C.len()]
}

impl ImodModel {
    /// One scattered-point object per class of the table (in the table's class order; a class
    /// without particles gives an object without contours); sphere radius = class radius.
    pub fn from_particles(t: &ParticleTable) -> ImodModel {
        let tomo = &t.tomogram;
        let objects = t
            .classes
            .iter()
            .enumerate()
            .map(|(i, c)| ImodObject {
                name: c.name.clone(),
                flags: OBJFLAG_OPEN | OBJFLAG_SCAT,
                color: colour(i),
                sphere_radius_px: (c.radius_a / tomo.voxel_size[2]).round().max(1.0) as i32,
                points: t
                    .particles
                    .iter()
                    .filter(|p| p.class == c.name)
                    .map(|p| {
                        let v = t.voxel_coords(p);
                        [(v[0] + 0.5) as f32, (v[1] + 0.5) as f32, v[2] as f32]
                    })
                    .collect(),
            })
            .collect();
        ImodModel {
            name: format!("tomoflow picks {}", tomo.name),
            max: [
                tomo.shape[2] as i32,
                tomo.shape[1] as i32,
                tomo.shape[0] as i32,
            ],
            pixel_size: tomo.voxel_size[2] as f32,
            units: UNIT_ANGSTROM,
            objects,
        }
    }

    /// The binary `.mod` file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"IMODV1.2");
        name_field(&mut b, &self.name, 128);
        for m in self.max {
            i32be(&mut b, m);
        }
        i32be(&mut b, self.objects.len() as i32); // objsize
        u32be(&mut b, 0); // flags
        i32be(&mut b, 1); // drawmode
        i32be(&mut b, 1); // mousemode
        i32be(&mut b, 0); // blacklevel
        i32be(&mut b, 255); // whitelevel
        for _ in 0..3 {
            f32be(&mut b, 0.0); // offsets
        }
        for _ in 0..3 {
            f32be(&mut b, 1.0); // scales
        }
        i32be(&mut b, 0); // current object
        i32be(&mut b, 0); // contour
        i32be(&mut b, -1); // point
        i32be(&mut b, 3); // res
        i32be(&mut b, 128); // thresh
        f32be(&mut b, self.pixel_size);
        i32be(&mut b, self.units);
        i32be(&mut b, 0); // csum
        for _ in 0..3 {
            f32be(&mut b, 0.0); // alpha, beta, gamma
        }
        for o in &self.objects {
            b.extend_from_slice(b"OBJT");
            name_field(&mut b, &o.name, 64);
            b.extend_from_slice(&[0u8; 64]); // extra[16]
            i32be(&mut b, i32::from(!o.points.is_empty())); // contsize
            u32be(&mut b, o.flags);
            i32be(&mut b, 0); // axis
            i32be(&mut b, 1); // drawmode
            for c in o.color {
                f32be(&mut b, c);
            }
            i32be(&mut b, o.sphere_radius_px); // pdrawsize
                                               // symbol (circle), symsize, linewidth2, linewidth, linestyle, symflags, sympad, trans
            b.extend_from_slice(&[1, 3, 1, 1, 0, 0, 0, 0]);
            i32be(&mut b, 0); // meshsize
            i32be(&mut b, 0); // surfsize
            if !o.points.is_empty() {
                b.extend_from_slice(b"CONT");
                i32be(&mut b, o.points.len() as i32);
                u32be(&mut b, 0); // flags
                i32be(&mut b, 0); // time
                i32be(&mut b, 0); // surf
                for p in &o.points {
                    for c in p {
                        f32be(&mut b, *c);
                    }
                }
            }
        }
        b.extend_from_slice(b"IEOF");
        b
    }

    /// Parse a `.mod` file written by [`ImodModel::to_bytes`] or by IMOD (objects, contours
    /// and points; meshes and other optional chunks are skipped where their size is known).
    pub fn from_bytes(bytes: &[u8]) -> Result<ImodModel> {
        let mut r = Reader { b: bytes, at: 0 };
        if r.take(8)? != b"IMODV1.2" {
            bail!("not an IMOD V1.2 model (the file must start with `IMODV1.2`)");
        }
        let name = r.name(128)?;
        let max = [r.i32()?, r.i32()?, r.i32()?];
        let nobj = r.i32()?;
        r.take(4 * 5 + 4 * 6 + 4 * 5)?; // flags..whitelevel, offsets, scales, object..thresh
        let pixel_size = r.f32()?;
        let units = r.i32()?;
        r.take(4 + 12)?; // csum, alpha, beta, gamma
        let mut objects: Vec<ImodObject> = Vec::new();
        loop {
            let id = r.take(4)?;
            match id {
                b"OBJT" => {
                    let name = r.name(64)?;
                    r.take(64)?;
                    let _contsize = r.i32()?;
                    let flags = r.u32()?;
                    r.take(8)?; // axis, drawmode
                    let color = [r.f32()?, r.f32()?, r.f32()?];
                    let sphere_radius_px = r.i32()?;
                    r.take(8 + 8)?; // symbol bytes, meshsize, surfsize
                    objects.push(ImodObject {
                        name,
                        flags,
                        color,
                        sphere_radius_px,
                        points: Vec::new(),
                    });
                }
                b"CONT" => {
                    let n = r.i32()?;
                    if n < 0 {
                        bail!("negative contour size {n}");
                    }
                    r.take(12)?;
                    let o = objects
                        .last_mut()
                        .ok_or_else(|| anyhow::anyhow!("CONT chunk before any OBJT"))?;
                    for _ in 0..n {
                        o.points.push([r.f32()?, r.f32()?, r.f32()?]);
                    }
                }
                b"IEOF" => break,
                other => {
                    // optional chunks (MINX, VIEW, ...) carry their size after the id
                    let size = r.i32()?;
                    if size < 0 {
                        bail!(
                            "unknown chunk {:?} with a negative size",
                            String::from_utf8_lossy(other)
                        );
                    }
                    r.take(size as usize)?;
                }
            }
        }
        if objects.len() != nobj.max(0) as usize {
            bail!(
                "model header says {nobj} objects but {} were read",
                objects.len()
            );
        }
        Ok(ImodModel {
            name,
            max,
            pixel_size,
            units,
            objects,
        })
    }
}

/// The `.mod` bytes of a particle table: one scattered-point object per class.
pub fn particles_to_mod(t: &ParticleTable) -> Vec<u8> {
    ImodModel::from_particles(t).to_bytes()
}

fn name_field(b: &mut Vec<u8>, s: &str, n: usize) {
    let mut f = vec![0u8; n];
    let bytes = s.as_bytes();
    let k = bytes.len().min(n - 1);
    f[..k].copy_from_slice(&bytes[..k]);
    b.extend_from_slice(&f);
}
fn i32be(b: &mut Vec<u8>, v: i32) {
    b.extend_from_slice(&v.to_be_bytes());
}
fn u32be(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_be_bytes());
}
fn f32be(b: &mut Vec<u8>, v: f32) {
    b.extend_from_slice(&v.to_be_bytes());
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}
impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.at + n > self.b.len() {
            bail!("IMOD model truncated at byte {}", self.at);
        }
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    fn arr(&mut self) -> Result<[u8; 4]> {
        Ok(self.take(4)?.try_into().expect("4 bytes"))
    }
    fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(self.arr()?))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.arr()?))
    }
    fn f32(&mut self) -> Result<f32> {
        Ok(f32::from_be_bytes(self.arr()?))
    }
    fn name(&mut self, n: usize) -> Result<String> {
        let s = self.take(n)?;
        let end = s.iter().position(|&c| c == 0).unwrap_or(n);
        Ok(String::from_utf8_lossy(&s[..end]).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::particles::{ClassInfo, Particle, TomogramInfo};

    fn p(class: &str, id: u32, x: f64, y: f64, z: f64) -> Particle {
        Particle {
            class: class.into(),
            class_id: id,
            x,
            y,
            z,
            rot: 0.0,
            tilt: 0.0,
            psi: 0.0,
            q: [1.0, 0.0, 0.0, 0.0],
            instance: 0,
            score: 0.9,
        }
    }

    #[test]
    fn mod_layout_and_roundtrip() {
        let t = ParticleTable {
            tomogram: TomogramInfo {
                name: "TS_1".into(),
                shape: [20, 30, 40],
                voxel_size: [10.0; 3],
                origin: [0.0; 3],
            },
            classes: vec![
                ClassInfo {
                    id: 1,
                    name: "apo-ferritin".into(),
                    radius_a: 60.0,
                },
                ClassInfo {
                    id: 4,
                    name: "ribosome".into(),
                    radius_a: 150.0,
                },
                ClassInfo {
                    id: 5,
                    name: "thyroglobulin".into(),
                    radius_a: 130.0,
                },
            ],
            particles: vec![
                p("ribosome", 4, 100.0, 200.0, 50.0),
                p("apo-ferritin", 1, 0.0, 0.0, 0.0),
                p("ribosome", 4, 395.0, 10.0, 190.0),
            ],
        };
        let b = particles_to_mod(&t);
        assert_eq!(&b[..8], b"IMODV1.2");
        // header 8 + 232, then OBJT 4 + 176 (+ CONT 4 + 16 + 12 n) per object, IEOF
        assert_eq!(b.len(), 8 + 232 + 3 * 180 + 2 * 20 + 3 * 12 + 4);
        assert_eq!(&b[240..244], b"OBJT");
        // objsize at byte 8 + 128 + 12
        assert_eq!(i32::from_be_bytes(b[148..152].try_into().unwrap()), 3);
        assert_eq!(&b[b.len() - 4..], b"IEOF");
        let m = ImodModel::from_bytes(&b).unwrap();
        assert_eq!(m.max, [40, 30, 20]);
        assert_eq!(m.units, UNIT_ANGSTROM);
        assert_eq!(m.pixel_size, 10.0);
        assert_eq!(m.objects.len(), 3);
        assert_eq!(m.objects[0].points, vec![[0.5, 0.5, 0.0]]);
        assert_eq!(m.objects[1].name, "ribosome");
        assert_eq!(m.objects[1].flags, OBJFLAG_OPEN | OBJFLAG_SCAT);
        assert_eq!(
            m.objects[1].points,
            vec![[10.5, 20.5, 5.0], [40.0, 1.5, 19.0]]
        );
        assert_eq!(m.objects[1].sphere_radius_px, 15);
        assert!(m.objects[2].points.is_empty());
        assert_eq!(m, ImodModel::from_particles(&t));
        assert!(ImodModel::from_bytes(&b[..100]).is_err());
        assert!(ImodModel::from_bytes(b"IMODV1.1xxxx").is_err());
    }
}
