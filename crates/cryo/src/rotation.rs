//! Rotations: unit quaternions, 3x3 matrices, RELION ZYZ and Dynamo ZXZ Euler angles, and
//! uniformly distributed random rotations.
//!
//! Conventions (see docs/physics.md, "Rotations"):
//! - Vectors here are ordered **(x, y, z)** (unlike volume triples, which are (z, y, x)).
//! - A rotation `R` in tomoflow is *active* and maps template (reference) coordinates to
//!   tomogram coordinates about the template centre: `x_tomo = c + R · x_ref`.
//! - RELION angles (rot, tilt, psi), in degrees, are those for which RELION's
//!   `Euler_angles2matrix(rot, tilt, psi)` returns `A = Rᵀ`: RELION's matrix takes the particle
//!   back onto the reference. Equivalently `R = Rz(rot) · Ry(tilt) · Rz(psi)` with right-handed
//!   active rotations (intrinsic ZYZ).
//! - Dynamo angles (tdrot, tilt, narot), in degrees, satisfy `R = Rz(tdrot) · Rx(tilt) · Rz(narot)`
//!   (intrinsic ZXZ, active, reference onto particle), the convention of `dynamo_euler2matrix`.
//! - Quaternions `[w, x, y, z]` represent `R` with `w >= 0` (canonical sign).

use crate::rng::Rng;

/// A 3x3 matrix, row-major: `m[row][col]`.
pub type Mat3 = [[f64; 3]; 3];

/// The identity matrix.
pub const IDENTITY: Mat3 = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];

/// Matrix product `a · b`.
pub fn mat_mul(a: &Mat3, b: &Mat3) -> Mat3 {
    let mut m = [[0.0; 3]; 3];
    for (i, row) in m.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    m
}

/// Transpose (the inverse of a rotation).
pub fn transpose(a: &Mat3) -> Mat3 {
    let mut m = [[0.0; 3]; 3];
    for (i, row) in m.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = a[j][i];
        }
    }
    m
}

/// `a · v`.
pub fn apply(a: &Mat3, v: [f64; 3]) -> [f64; 3] {
    [
        a[0][0] * v[0] + a[0][1] * v[1] + a[0][2] * v[2],
        a[1][0] * v[0] + a[1][1] * v[1] + a[1][2] * v[2],
        a[2][0] * v[0] + a[2][1] * v[1] + a[2][2] * v[2],
    ]
}

/// Active right-handed rotation by `deg` degrees about x.
pub fn rot_x(deg: f64) -> Mat3 {
    let (s, c) = deg.to_radians().sin_cos();
    [[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]]
}

/// Active right-handed rotation by `deg` degrees about y.
pub fn rot_y(deg: f64) -> Mat3 {
    let (s, c) = deg.to_radians().sin_cos();
    [[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]]
}

/// Active right-handed rotation by `deg` degrees about z.
pub fn rot_z(deg: f64) -> Mat3 {
    let (s, c) = deg.to_radians().sin_cos();
    [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
}

/// RELION's `Euler_angles2matrix(rot, tilt, psi)` (degrees), transcribed from
/// `src/euler.cpp`: the matrix `A` that takes a particle back onto its reference (`A = Rᵀ`).
pub fn relion_euler_to_matrix(rot: f64, tilt: f64, psi: f64) -> Mat3 {
    let (sa, ca) = rot.to_radians().sin_cos();
    let (sb, cb) = tilt.to_radians().sin_cos();
    let (sg, cg) = psi.to_radians().sin_cos();
    let cc = cb * ca;
    let cs = cb * sa;
    let sc = sb * ca;
    let ss = sb * sa;
    [
        [cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb],
        [-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb],
        [sc, ss, cb],
    ]
}

/// RELION's `Euler_matrix2angles`: (rot, tilt, psi) in degrees of a matrix `A` as returned by
/// [`relion_euler_to_matrix`], with tilt in [0, 180] and rot, psi in (-180, 180].
pub fn relion_matrix_to_euler(a: &Mat3) -> (f64, f64, f64) {
    let abs_sb = (a[0][2] * a[0][2] + a[1][2] * a[1][2]).sqrt();
    let (alpha, beta, gamma);
    if abs_sb > 16.0 * f32::EPSILON as f64 {
        gamma = a[1][2].atan2(-a[0][2]);
        alpha = a[2][1].atan2(a[2][0]);
        beta = abs_sb.atan2(a[2][2]);
    } else if a[2][2] > 0.0 {
        alpha = 0.0;
        beta = 0.0;
        gamma = (-a[1][0]).atan2(a[0][0]);
    } else {
        alpha = 0.0;
        beta = std::f64::consts::PI;
        gamma = a[1][0].atan2(-a[0][0]);
    }
    (alpha.to_degrees(), beta.to_degrees(), gamma.to_degrees())
}

/// RELION angles (rot, tilt, psi) in degrees of the active rotation `r` (template → tomogram).
pub fn relion_angles(r: &Mat3) -> (f64, f64, f64) {
    relion_matrix_to_euler(&transpose(r))
}

/// The active rotation (template → tomogram) of RELION angles (rot, tilt, psi) in degrees.
pub fn rotation_from_relion(rot: f64, tilt: f64, psi: f64) -> Mat3 {
    transpose(&relion_euler_to_matrix(rot, tilt, psi))
}

/// Dynamo angles (tdrot, tilt, narot) in degrees of the active rotation `r`:
/// `r = Rz(tdrot) · Rx(tilt) · Rz(narot)`, tilt in [0, 180].
pub fn dynamo_angles(r: &Mat3) -> (f64, f64, f64) {
    let sb = (r[0][2] * r[0][2] + r[1][2] * r[1][2]).sqrt();
    if sb > 16.0 * f32::EPSILON as f64 {
        let tdrot = r[0][2].atan2(-r[1][2]);
        let tilt = sb.atan2(r[2][2]);
        let narot = r[2][0].atan2(r[2][1]);
        (tdrot.to_degrees(), tilt.to_degrees(), narot.to_degrees())
    } else {
        // Gimbal lock: put the whole z rotation into tdrot.
        let tilt = if r[2][2] > 0.0 { 0.0 } else { 180.0 };
        let tdrot = r[1][0].atan2(r[0][0]);
        (tdrot.to_degrees(), tilt, 0.0)
    }
}

/// The active rotation of Dynamo angles (tdrot, tilt, narot) in degrees.
pub fn rotation_from_dynamo(tdrot: f64, tilt: f64, narot: f64) -> Mat3 {
    mat_mul(&mat_mul(&rot_z(tdrot), &rot_x(tilt)), &rot_z(narot))
}

/// A unit quaternion `w + xi + yj + zk`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quat {
    /// Scalar part.
    pub w: f64,
    /// i component.
    pub x: f64,
    /// j component.
    pub y: f64,
    /// k component.
    pub z: f64,
}

impl Quat {
    /// The identity rotation.
    pub const IDENTITY: Quat = Quat {
        w: 1.0,
        x: 0.0,
        y: 0.0,
        z: 0.0,
    };

    /// Rotation by `deg` degrees about `axis` (need not be normalised).
    pub fn from_axis_angle(axis: [f64; 3], deg: f64) -> Quat {
        let n = (axis[0] * axis[0] + axis[1] * axis[1] + axis[2] * axis[2]).sqrt();
        let (s, c) = (deg.to_radians() / 2.0).sin_cos();
        Quat {
            w: c,
            x: s * axis[0] / n,
            y: s * axis[1] / n,
            z: s * axis[2] / n,
        }
        .canonical()
    }

    /// A rotation drawn uniformly from SO(3) (Haar measure), by Shoemake's method
    /// (Graphics Gems III, 1992): three uniform deviates give a uniform point on S³.
    pub fn random(rng: &mut Rng) -> Quat {
        let u1 = rng.uniform();
        let u2 = rng.uniform() * std::f64::consts::TAU;
        let u3 = rng.uniform() * std::f64::consts::TAU;
        let (a, b) = ((1.0 - u1).sqrt(), u1.sqrt());
        Quat {
            w: b * u3.cos(),
            x: a * u2.sin(),
            y: a * u2.cos(),
            z: b * u3.sin(),
        }
        .canonical()
    }

    /// Norm.
    pub fn norm(&self) -> f64 {
        (self.w * self.w + self.x * self.x + self.y * self.y + self.z * self.z).sqrt()
    }

    /// Scaled to unit norm, with `w >= 0` (q and -q are the same rotation).
    pub fn canonical(self) -> Quat {
        let n = self.norm();
        let s = if self.w < 0.0 { -1.0 / n } else { 1.0 / n };
        Quat {
            w: self.w * s,
            x: self.x * s,
            y: self.y * s,
            z: self.z * s,
        }
    }

    /// Hamilton product `self · o` (apply `o` first, then `self`).
    pub fn mul(&self, o: &Quat) -> Quat {
        Quat {
            w: self.w * o.w - self.x * o.x - self.y * o.y - self.z * o.z,
            x: self.w * o.x + self.x * o.w + self.y * o.z - self.z * o.y,
            y: self.w * o.y - self.x * o.z + self.y * o.w + self.z * o.x,
            z: self.w * o.z + self.x * o.y - self.y * o.x + self.z * o.w,
        }
    }

    /// The inverse rotation.
    pub fn conj(&self) -> Quat {
        Quat {
            w: self.w,
            x: -self.x,
            y: -self.y,
            z: -self.z,
        }
    }

    /// The rotation matrix (active).
    pub fn to_matrix(&self) -> Mat3 {
        let Quat { w, x, y, z } = *self;
        [
            [
                1.0 - 2.0 * (y * y + z * z),
                2.0 * (x * y - w * z),
                2.0 * (x * z + w * y),
            ],
            [
                2.0 * (x * y + w * z),
                1.0 - 2.0 * (x * x + z * z),
                2.0 * (y * z - w * x),
            ],
            [
                2.0 * (x * z - w * y),
                2.0 * (y * z + w * x),
                1.0 - 2.0 * (x * x + y * y),
            ],
        ]
    }

    /// The quaternion of a rotation matrix (Shepperd's method, numerically stable).
    pub fn from_matrix(m: &Mat3) -> Quat {
        let tr = m[0][0] + m[1][1] + m[2][2];
        let q = if tr > 0.0 {
            let s = (tr + 1.0).sqrt() * 2.0;
            Quat {
                w: 0.25 * s,
                x: (m[2][1] - m[1][2]) / s,
                y: (m[0][2] - m[2][0]) / s,
                z: (m[1][0] - m[0][1]) / s,
            }
        } else if m[0][0] > m[1][1] && m[0][0] > m[2][2] {
            let s = (1.0 + m[0][0] - m[1][1] - m[2][2]).sqrt() * 2.0;
            Quat {
                w: (m[2][1] - m[1][2]) / s,
                x: 0.25 * s,
                y: (m[0][1] + m[1][0]) / s,
                z: (m[0][2] + m[2][0]) / s,
            }
        } else if m[1][1] > m[2][2] {
            let s = (1.0 + m[1][1] - m[0][0] - m[2][2]).sqrt() * 2.0;
            Quat {
                w: (m[0][2] - m[2][0]) / s,
                x: (m[0][1] + m[1][0]) / s,
                y: 0.25 * s,
                z: (m[1][2] + m[2][1]) / s,
            }
        } else {
            let s = (1.0 + m[2][2] - m[0][0] - m[1][1]).sqrt() * 2.0;
            Quat {
                w: (m[1][0] - m[0][1]) / s,
                x: (m[0][2] + m[2][0]) / s,
                y: (m[1][2] + m[2][1]) / s,
                z: 0.25 * s,
            }
        };
        q.canonical()
    }

    /// Rotate a vector.
    pub fn rotate(&self, v: [f64; 3]) -> [f64; 3] {
        apply(&self.to_matrix(), v)
    }

    /// `[w, x, y, z]`.
    pub fn to_array(&self) -> [f64; 4] {
        [self.w, self.x, self.y, self.z]
    }

    /// Angle in degrees of the rotation taking `self` to `o` (0..=180).
    pub fn angle_to(&self, o: &Quat) -> f64 {
        let d = (self.w * o.w + self.x * o.x + self.y * o.y + self.z * o.z).abs();
        2.0 * d.min(1.0).acos().to_degrees()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use proptest::prelude::*;

    fn close(a: &Mat3, b: &Mat3, tol: f64) -> bool {
        (0..3).all(|i| (0..3).all(|j| (a[i][j] - b[i][j]).abs() < tol))
    }

    fn is_rotation(m: &Mat3) -> bool {
        let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
        close(&mat_mul(m, &transpose(m)), &IDENTITY, 1e-9) && (det - 1.0).abs() < 1e-9
    }

    #[test]
    fn relion_matrix_is_inverse_of_intrinsic_zyz() {
        // A = Rᵀ with R = Rz(rot) Ry(tilt) Rz(psi): the documented convention.
        let (rot, tilt, psi) = (30.0, 50.0, -70.0);
        let r = mat_mul(&mat_mul(&rot_z(rot), &rot_y(tilt)), &rot_z(psi));
        assert!(close(&rotation_from_relion(rot, tilt, psi), &r, 1e-12));
        // RELION's tilt moves the reference z axis towards +x (rot = psi = 0).
        let z = apply(&rotation_from_relion(0.0, 90.0, 0.0), [0.0, 0.0, 1.0]);
        assert!((z[0] - 1.0).abs() < 1e-12, "{z:?}");
    }

    #[test]
    fn gimbal_lock_roundtrips() {
        for tilt in [0.0, 180.0] {
            let r = rotation_from_relion(20.0, tilt, 35.0);
            let (a, b, c) = relion_angles(&r);
            assert!(close(&rotation_from_relion(a, b, c), &r, 1e-9));
            let (a, b, c) = dynamo_angles(&r);
            assert!(close(&rotation_from_dynamo(a, b, c), &r, 1e-9));
        }
    }

    proptest! {
        #[test]
        fn conversions_roundtrip(seed in any::<u64>()) {
            let mut rng = Rng::new(seed);
            let q = Quat::random(&mut rng);
            prop_assert!((q.norm() - 1.0).abs() < 1e-12);
            prop_assert!(q.w >= 0.0);
            let m = q.to_matrix();
            prop_assert!(is_rotation(&m));
            let q2 = Quat::from_matrix(&m);
            prop_assert!(q.angle_to(&q2) < 1e-4);
            let (rot, tilt, psi) = relion_angles(&m);
            prop_assert!((0.0..=180.0).contains(&tilt));
            prop_assert!(close(&rotation_from_relion(rot, tilt, psi), &m, 1e-9));
            let (a, b, c) = dynamo_angles(&m);
            prop_assert!(close(&rotation_from_dynamo(a, b, c), &m, 1e-9));
            let v = [0.3, -1.2, 2.0];
            let (r1, r2) = (q.rotate(v), apply(&m, v));
            prop_assert!((0..3).all(|i| (r1[i] - r2[i]).abs() < 1e-12));
        }

        #[test]
        fn quaternion_product_is_matrix_product(s1 in any::<u64>(), s2 in any::<u64>()) {
            let a = Quat::random(&mut Rng::new(s1));
            let b = Quat::random(&mut Rng::new(s2));
            let ab = a.mul(&b).canonical().to_matrix();
            prop_assert!(close(&ab, &mat_mul(&a.to_matrix(), &b.to_matrix()), 1e-12));
            prop_assert!(a.mul(&a.conj()).angle_to(&Quat::IDENTITY) < 1e-4);
        }
    }

    /// Rotated axes of uniform rotations are uniform on the sphere: chi-square over 8 octants ×
    /// 6 bands of equal area (48 cells), for each of the three rotated axes. Fails for a
    /// naive "uniform Euler angles" sampler (which piles up at the poles).
    #[test]
    fn random_rotations_are_uniform_chi_square() {
        fn chi2(points: &[[f64; 3]]) -> f64 {
            let bands = 6usize;
            let mut counts = vec![0usize; 8 * bands];
            for p in points {
                // equal-area bands in z (Archimedes), 8 sectors in azimuth
                let b = (((p[2] + 1.0) / 2.0 * bands as f64) as usize).min(bands - 1);
                let phi = p[1].atan2(p[0]) + std::f64::consts::PI;
                let s = ((phi / std::f64::consts::TAU * 8.0) as usize).min(7);
                counts[b * 8 + s] += 1;
            }
            let e = points.len() as f64 / counts.len() as f64;
            counts.iter().map(|&c| (c as f64 - e).powi(2) / e).sum()
        }
        // chi-square with 47 degrees of freedom: the 0.999 quantile is about 82.7.
        let crit = 82.7;
        let n = 24_000;
        let mut rng = Rng::new(2024);
        let rots: Vec<Mat3> = (0..n).map(|_| Quat::random(&mut rng).to_matrix()).collect();
        for axis in 0..3 {
            let pts: Vec<[f64; 3]> = rots
                .iter()
                .map(|m| [m[0][axis], m[1][axis], m[2][axis]])
                .collect();
            let c = chi2(&pts);
            assert!(c < crit, "axis {axis}: chi2 = {c}");
        }
        // The test can fail: uniform Euler angles are not uniform rotations.
        let mut rng = Rng::new(2024);
        let naive: Vec<[f64; 3]> = (0..n)
            .map(|_| {
                let m = rotation_from_relion(
                    rng.range(-180.0, 180.0),
                    rng.range(0.0, 180.0),
                    rng.range(-180.0, 180.0),
                );
                [m[0][2], m[1][2], m[2][2]]
            })
            .collect();
        assert!(
            chi2(&naive) > crit,
            "the chi-square test must reject a biased sampler"
        );
    }
}
