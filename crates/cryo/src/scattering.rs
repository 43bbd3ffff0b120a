//! Electron scattering factors and the electrostatic potential of atoms on a voxel grid.
//!
//! Physics (docs/physics.md, "Sample: potential, templates and placement"):
//! - Elastic electron scattering factors of neutral atoms as five Gaussians,
//!   `f(s) = Σᵢ aᵢ exp(-bᵢ s²)` with `s = sin θ / λ = q / 2` in Å⁻¹ and `f` in Å:
//!   L.-M. Peng, G. Ren, S. L. Dudarev & M. J. Whelan (1996), *Robust parameterization of elastic
//!   and absorptive electron atomic scattering factors*, Acta Cryst. A52, 257–276, Table 1
//!   (fit for 0 ≤ s ≤ 2 Å⁻¹). Ions are modelled as neutral atoms (the net charge is screened
//!   by the solvent and would add a long-range Coulomb tail the fit cannot represent).
//! - The potential is the inverse Fourier transform (Kirkland, *Advanced Computing in Electron
//!   Microscopy*, 2nd ed., eq. 5.9): `V(r) = (h² / 2π m₀ e) Σᵢ aᵢ (4π/bᵢ)^{3/2} exp(-4π² r² / bᵢ)`,
//!   a sum of normalised 3D Gaussians of variance `σᵢ² = bᵢ / 8π²` per axis with weights
//!   `K aᵢ`, `K = h² / (2π m₀ e) = 47.878 V·Å²`. Hence `∫ V d³r = K f(0) = K Σ aᵢ` (V·Å³).
//! - Thermal motion (B-factor, Å²) multiplies `f(s)` by `exp(-B s²)`, i.e. `bᵢ → bᵢ + B`.
//! - On a grid, each voxel holds the **mean 3D potential over the voxel cube, in volts**:
//!   the Gaussians are integrated exactly over the cube (products of erf differences per axis),
//!   not point-sampled, so `Σ voxels × voxel volume = ∫ V d³r` whatever the voxel size.

/// `h² / (2π m₀ e)` in V·Å² (CODATA 2018 exact h and e, m₀ = 9.1093837015e-31 kg).
pub const K_V_A2: f64 = 47.877_6;

/// Five-Gaussian parameters of one element (Peng et al. 1996, Table 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Peng {
    /// Element symbol, capitalised as in the periodic table ("C", "Fe").
    pub symbol: &'static str,
    /// Atomic number.
    pub z: u32,
    /// Standard atomic weight (Da), for molecular masses.
    pub mass_da: f64,
    /// Amplitudes aᵢ (Å).
    pub a: [f64; 5],
    /// Widths bᵢ (Å²).
    pub b: [f64; 5],
}

macro_rules! el {
    ($s:expr, $z:expr, $m:expr, [$($a:expr),*], [$($b:expr),*]) => {
        Peng { symbol: $s, z: $z, mass_da: $m, a: [$($a),*], b: [$($b),*] }
    };
}

/// The elements tomoflow knows: the biological ones (H C N O P S), common ions and metals.
pub const PENG_1996: &[Peng] = &[
    el!(
        "H",
        1,
        1.008,
        [0.0349, 0.1201, 0.1970, 0.0573, 0.1195],
        [0.5347, 3.5867, 12.3471, 18.9525, 38.6269]
    ),
    el!(
        "C",
        6,
        12.011,
        [0.0893, 0.2563, 0.7570, 1.0487, 0.3575],
        [0.2465, 1.7100, 6.4094, 18.6113, 50.2523]
    ),
    el!(
        "N",
        7,
        14.007,
        [0.1022, 0.3219, 0.7982, 0.8197, 0.1715],
        [0.2451, 1.7481, 6.1925, 17.3894, 48.1431]
    ),
    el!(
        "O",
        8,
        15.999,
        [0.0974, 0.2921, 0.6910, 0.6990, 0.2039],
        [0.2067, 1.3815, 4.6943, 12.7105, 32.4726]
    ),
    el!(
        "F",
        9,
        18.998,
        [0.1083, 0.3175, 0.6487, 0.5846, 0.1421],
        [0.2057, 1.3439, 4.2788, 11.3932, 28.7881]
    ),
    el!(
        "Na",
        11,
        22.990,
        [0.2142, 0.6853, 0.7692, 1.6589, 1.4482],
        [0.3334, 2.3446, 10.0830, 48.3037, 138.2700]
    ),
    el!(
        "Mg",
        12,
        24.305,
        [0.2314, 0.6866, 0.9677, 2.1882, 1.1339],
        [0.3278, 2.2720, 10.9241, 39.2898, 101.9748]
    ),
    el!(
        "P",
        15,
        30.974,
        [0.2548, 0.6106, 1.4541, 2.3204, 0.8477],
        [0.2908, 1.8740, 8.5176, 24.3434, 63.2996]
    ),
    el!(
        "S",
        16,
        32.06,
        [0.2497, 0.5628, 1.3899, 2.1865, 0.7715],
        [0.2681, 1.6711, 7.0267, 19.5377, 50.3888]
    ),
    el!(
        "Cl",
        17,
        35.45,
        [0.2443, 0.5397, 1.3919, 2.0197, 0.6621],
        [0.2468, 1.5242, 6.1537, 16.6687, 42.3086]
    ),
    el!(
        "K",
        19,
        39.098,
        [0.4115, 1.4031, 2.2784, 2.6742, 2.2162],
        [0.3703, 3.3874, 13.1029, 68.9592, 194.4329]
    ),
    el!(
        "Ca",
        20,
        40.078,
        [0.4054, 1.3880, 2.1602, 3.7532, 2.2063],
        [0.3499, 3.0991, 11.9608, 53.9353, 142.3892]
    ),
    el!(
        "Mn",
        25,
        54.938,
        [0.3796, 1.2094, 1.7815, 2.5420, 1.5937],
        [0.2699, 2.0455, 7.4726, 31.0604, 91.5622]
    ),
    el!(
        "Fe",
        26,
        55.845,
        [0.3946, 1.2725, 1.7031, 2.3140, 1.4795],
        [0.2717, 2.0443, 7.6007, 29.9714, 86.2265]
    ),
    el!(
        "Co",
        27,
        58.933,
        [0.4118, 1.3161, 1.6493, 2.1930, 1.2830],
        [0.2742, 2.0372, 7.7205, 29.9680, 84.9383]
    ),
    el!(
        "Ni",
        28,
        58.693,
        [0.3860, 1.1765, 1.5451, 2.0730, 1.3814],
        [0.2478, 1.7660, 6.3107, 25.2204, 74.3146]
    ),
    el!(
        "Cu",
        29,
        63.546,
        [0.4314, 1.3208, 1.5236, 1.4671, 0.8562],
        [0.2694, 1.9223, 7.3474, 28.9892, 90.6246]
    ),
    el!(
        "Zn",
        30,
        65.38,
        [0.4288, 1.2646, 1.4472, 1.8294, 1.0934],
        [0.2593, 1.7998, 6.7500, 25.5860, 73.5284]
    ),
    el!(
        "Se",
        34,
        78.971,
        [0.4477, 1.1678, 1.5843, 2.8087, 1.1956],
        [0.2405, 1.5442, 6.3231, 19.4610, 52.0233]
    ),
];

/// The parameters of an element by symbol (case-insensitive), or `None` if not tabulated.
pub fn peng(symbol: &str) -> Option<&'static Peng> {
    let s = symbol.trim();
    PENG_1996.iter().find(|p| p.symbol.eq_ignore_ascii_case(s))
}

/// The symbols of the tabulated elements, for error messages.
pub fn known_elements() -> String {
    PENG_1996
        .iter()
        .map(|p| p.symbol)
        .collect::<Vec<_>>()
        .join(" ")
}

impl Peng {
    /// `f(0) = Σ aᵢ` (Å).
    pub fn f0(&self) -> f64 {
        self.a.iter().sum()
    }

    /// The scattering factor `f(s)` (Å) at `s = sin θ / λ` (Å⁻¹), with B-factor `b_factor` (Å²).
    pub fn fe(&self, s: f64, b_factor: f64) -> f64 {
        (0..5)
            .map(|i| self.a[i] * (-(self.b[i] + b_factor) * s * s).exp())
            .sum()
    }

    /// `∫ V d³r` of one atom in V·Å³ (independent of the B-factor).
    pub fn potential_integral(&self) -> f64 {
        K_V_A2 * self.f0()
    }

    /// The potential V(r) in volts at distance `r` Å from the nucleus.
    pub fn potential(&self, r: f64, b_factor: f64) -> f64 {
        (0..5)
            .map(|i| {
                let b = self.b[i] + b_factor;
                K_V_A2
                    * self.a[i]
                    * (4.0 * std::f64::consts::PI / b).powf(1.5)
                    * (-4.0 * std::f64::consts::PI.powi(2) * r * r / b).exp()
            })
            .sum()
    }
}

/// Complementary error function, fractional error below 1.2e-7 everywhere
/// (Chebyshev fit of Press et al., *Numerical Recipes*, 2nd ed., §6.2).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let ans = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 {
        ans
    } else {
        2.0 - ans
    }
}

/// Error function (see [`erfc`]).
pub fn erf(x: f64) -> f64 {
    1.0 - erfc(x)
}

/// Mean inner potential (V) of a material in the independent-atom model: `K Σ f(0) n`, with
/// `composition` the atoms of one formula unit and `density` in g/cm³.
pub fn iam_mean_inner_potential(composition: &[(&str, f64)], density_g_cm3: f64) -> f64 {
    let mut f0 = 0.0;
    let mut mass = 0.0;
    for (sym, n) in composition {
        let p = peng(sym).expect("tabulated element");
        f0 += n * p.f0();
        mass += n * p.mass_da;
    }
    // g/cm³ → Da/Å³: 1 g/cm³ = 0.602214 Da/Å³
    let units_per_a3 = density_g_cm3 * 0.602_214_076 / mass;
    K_V_A2 * f0 * units_per_a3
}

/// Mean inner potential of vitreous (low-density amorphous) ice, H₂O at 0.94 g/cm³, in the
/// independent-atom model: 4.57 V. Measured for liquid water: 4.48 ± 0.19 V (Yesibolati et al.,
/// Phys. Rev. Lett. 124, 065502, 2020).
pub fn ice_mean_inner_potential() -> f64 {
    iam_mean_inner_potential(&[("H", 2.0), ("O", 1.0)], 0.94)
}

/// Average amino-acid residue composition (C4.94 H7.76 N1.36 O1.48 S0.04, ≈ 111 Da).
pub const PROTEIN_RESIDUE: &[(&str, f64)] = &[
    ("C", 4.94),
    ("H", 7.76),
    ("N", 1.36),
    ("O", 1.48),
    ("S", 0.04),
];

/// Density of protein, 1.35 g/cm³ (Fischer, Polikarpov & Craievich, Protein Sci. 13, 2825, 2004).
pub const PROTEIN_DENSITY_G_CM3: f64 = 1.35;

/// Mean inner potential of protein (V) in the independent-atom model, hydrogens included (≈ 7.9 V).
pub fn protein_mean_inner_potential() -> f64 {
    iam_mean_inner_potential(PROTEIN_RESIDUE, PROTEIN_DENSITY_G_CM3)
}

/// `∫ V d³r` (V·Å³) per dalton of average protein, hydrogens included.
pub fn protein_potential_per_dalton() -> f64 {
    let (mut f0, mut m) = (0.0, 0.0);
    for (s, n) in PROTEIN_RESIDUE {
        let p = peng(s).expect("tabulated");
        f0 += n * p.f0();
        m += n * p.mass_da;
    }
    K_V_A2 * f0 / m
}

/// Grid geometry for [`add_atom`]: shape (z, y, x), isotropic voxel size (Å), origin (z, y, x)
/// = position in Å of the centre of voxel (0, 0, 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grid {
    /// Shape (z, y, x).
    pub shape: [usize; 3],
    /// Voxel edge in Å.
    pub voxel_size: f64,
    /// Centre of voxel (0,0,0) in Å, (z, y, x).
    pub origin: [f64; 3],
}

/// Per-axis voxel weights of one Gaussian: `w[k] = ∫ over voxel k of N(x0, σ²)`, for the
/// voxels within `reach` σ; returns (first index, weights). Empty when outside the grid.
fn axis_weights(x0: f64, sigma: f64, n: usize, h: f64, origin: f64, out: &mut Vec<f64>) -> usize {
    out.clear();
    let reach = 5.0 * sigma + h;
    let lo = ((x0 - reach - origin) / h).floor().max(0.0) as usize;
    let hi_f = ((x0 + reach - origin) / h).ceil();
    if hi_f < 0.0 {
        return 0;
    }
    let hi = (hi_f as usize).min(n.saturating_sub(1));
    if lo > hi || n == 0 {
        return 0;
    }
    let inv = 1.0 / (std::f64::consts::SQRT_2 * sigma);
    let mut prev = erf((origin + (lo as f64 - 0.5) * h - x0) * inv);
    for k in lo..=hi {
        let next = erf((origin + (k as f64 + 0.5) * h - x0) * inv);
        out.push(0.5 * (next - prev));
        prev = next;
    }
    lo
}

/// Scratch buffers for [`add_atom`] (reuse one per thread).
#[derive(Debug, Default)]
pub struct SplatScratch {
    w: [Vec<f64>; 3],
}

/// Add the voxel-averaged potential (V) of one atom at `pos` (x, y, z) Å to `grid_data`
/// (C order (z, y, x)), weighted by `occupancy`, with B-factor `b_factor` (Å²).
pub fn add_atom(
    grid_data: &mut [f32],
    g: &Grid,
    el: &Peng,
    pos: [f64; 3],
    b_factor: f64,
    occupancy: f64,
    scratch: &mut SplatScratch,
) {
    let h = g.voxel_size;
    let [nz, ny, nx] = g.shape;
    let inv_vol = 1.0 / (h * h * h);
    let p = [pos[2], pos[1], pos[0]]; // to (z, y, x)
    for i in 0..5 {
        let b = (el.b[i] + b_factor.max(0.0)).max(1e-3);
        let sigma = (b / (8.0 * std::f64::consts::PI.powi(2))).sqrt();
        let amp = K_V_A2 * el.a[i] * occupancy * inv_vol;
        let [wz, wy, wx] = &mut scratch.w;
        let z0 = axis_weights(p[0], sigma, nz, h, g.origin[0], wz);
        let y0 = axis_weights(p[1], sigma, ny, h, g.origin[1], wy);
        let x0 = axis_weights(p[2], sigma, nx, h, g.origin[2], wx);
        if wz.is_empty() || wy.is_empty() || wx.is_empty() {
            continue;
        }
        for (dz, &a) in wz.iter().enumerate() {
            let az = amp * a;
            for (dy, &bw) in wy.iter().enumerate() {
                let ab = az * bw;
                let row = ((z0 + dz) * ny + y0 + dy) * nx + x0;
                for (dx, &c) in wx.iter().enumerate() {
                    grid_data[row + dx] += (ab * c) as f32;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_and_table_spot_checks() {
        // h²/(2π m₀ e) from CODATA constants.
        let (h, m0, e) = (6.626_070_15e-34, 9.109_383_701_5e-31, 1.602_176_634e-19);
        let k = h * h / (2.0 * std::f64::consts::PI * m0 * e) * 1e20;
        assert!((k - K_V_A2).abs() < 1e-3, "{k}");
        let c = peng("c").unwrap();
        assert_eq!(c.a, [0.0893, 0.2563, 0.7570, 1.0487, 0.3575]);
        assert!((c.f0() - 2.5088).abs() < 1e-9);
        assert!(peng("Xx").is_none());
        // Elements heavier within a period scatter more at s = 0.5 Å⁻¹.
        for w in [("C", "N"), ("N", "O"), ("P", "S")] {
            assert!(peng(w.0).unwrap().fe(0.5, 0.0) < peng(w.1).unwrap().fe(0.5, 0.0) + 0.05);
        }
    }

    #[test]
    fn erf_is_accurate() {
        for (x, v) in [
            (0.0, 0.0),
            (0.5, 0.520_499_877_8),
            (1.0, 0.842_700_792_9),
            (2.0, 0.995_322_265_0),
            (-1.0, -0.842_700_792_9),
        ] {
            assert!((erf(x) - v).abs() < 2e-7, "erf({x})");
        }
    }

    #[test]
    fn mean_inner_potentials_are_physical() {
        let ice = ice_mean_inner_potential();
        assert!((4.3..4.8).contains(&ice), "{ice}");
        let prot = protein_mean_inner_potential();
        assert!((7.0..9.0).contains(&prot), "{prot}");
    }

    #[test]
    fn voxel_integral_equals_scattering_integral_at_any_voxel_size() {
        for &h in &[0.5, 2.0, 5.0, 10.0] {
            let n = (40.0 / h) as usize + 2;
            let g = Grid {
                shape: [n, n, n],
                voxel_size: h,
                origin: [-(n as f64 - 1.0) / 2.0 * h; 3],
            };
            let mut d = vec![0f32; n * n * n];
            let mut s = SplatScratch::default();
            let fe = peng("Fe").unwrap();
            add_atom(&mut d, &g, fe, [0.3, -1.1, 0.7], 20.0, 1.0, &mut s);
            let total: f64 = d.iter().map(|&v| v as f64).sum::<f64>() * h * h * h;
            let want = fe.potential_integral();
            assert!(
                (total / want - 1.0).abs() < 1e-4,
                "h={h}: {total} vs {want}"
            );
        }
    }

    #[test]
    fn fine_grid_matches_the_analytic_potential() {
        // At 0.1 Å voxels the voxel mean ≈ the point value 1 Å from the nucleus.
        let h = 0.1;
        let g = Grid {
            shape: [1, 1, 1],
            voxel_size: h,
            origin: [0.0, 0.0, 1.0],
        };
        let mut d = vec![0f32; 1];
        add_atom(
            &mut d,
            &g,
            peng("O").unwrap(),
            [0.0; 3],
            0.0,
            1.0,
            &mut SplatScratch::default(),
        );
        let want = peng("O").unwrap().potential(1.0, 0.0);
        assert!(
            (d[0] as f64 / want - 1.0).abs() < 0.01,
            "{} vs {want}",
            d[0]
        );
    }
}
