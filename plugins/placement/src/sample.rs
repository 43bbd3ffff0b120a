//! Material constants of the sample: vitreous ice, protein and lipid bilayers, in the
//! independent-atom model with the Peng et al. (1996) scattering factors (docs/physics.md).

use tomoflow_cryo::scattering::iam_mean_inner_potential;

/// Two-leaflet lipid bilayer profile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MembraneParams {
    /// Total thickness (Å), headgroup to headgroup (≈ 40 Å).
    pub thickness_a: f64,
    /// Potential of the hydrocarbon core (V).
    pub tail_v: f64,
    /// Peak potential of the headgroup layers (V).
    pub head_v: f64,
    /// Width (σ, Å) of each headgroup layer.
    pub head_sigma_a: f64,
}

impl MembraneParams {
    /// Defaults: 40 Å; hydrocarbon core (CH₂)ₙ at 0.86 g/cm³ ≈ 6.3 V; phosphocholine–glycerol
    /// headgroups (C₁₀H₁₈NO₈P) at 1.35 g/cm³ ≈ 7.3 V; σ = 4 Å per leaflet headgroup layer.
    pub fn with_thickness(thickness_a: f64) -> MembraneParams {
        MembraneParams {
            thickness_a,
            tail_v: iam_mean_inner_potential(&[("C", 1.0), ("H", 2.0)], 0.86),
            head_v: iam_mean_inner_potential(
                &[("C", 10.0), ("H", 18.0), ("N", 1.0), ("O", 8.0), ("P", 1.0)],
                1.35,
            ),
            head_sigma_a: 4.0,
        }
    }
}

/// Bilayer potential (V) at signed distance `d` Å from the mid-plane (|d| ≤ thickness/2): a
/// hydrocarbon plateau plus two Gaussian headgroup layers centred `σ` inside each surface.
pub fn membrane_profile(m: &MembraneParams, d: f64) -> f64 {
    let c = m.thickness_a / 2.0 - m.head_sigma_a;
    let g = |x: f64| (-(x * x) / (2.0 * m.head_sigma_a * m.head_sigma_a)).exp();
    m.tail_v + (m.head_v - m.tail_v) * (g(d - c) + g(d + c)).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilayer_has_two_leaflets() {
        let m = MembraneParams::with_thickness(40.0);
        assert!((6.0..6.8).contains(&m.tail_v), "{}", m.tail_v);
        assert!(m.head_v > m.tail_v);
        let mid = membrane_profile(&m, 0.0);
        let head = membrane_profile(&m, 16.0);
        assert!(head > mid + 0.5, "{head} {mid}");
        assert!((membrane_profile(&m, -16.0) - head).abs() < 1e-12);
    }
}
