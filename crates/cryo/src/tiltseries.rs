//! The metadata of the `tilt_series` data kind (docs/data-kinds.md): one message per image in
//! acquisition order with `meta.tilt` ([`TiltInfo`]) and `meta.series` ([`SeriesInfo`]) and an
//! f32 tensor `data` of shape [ny, nx].

use serde::{Deserialize, Serialize};

/// Per-image metadata (`meta.tilt`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TiltInfo {
    /// Position in the stack sorted by angle (IMOD/RELION order), 0-based.
    pub index: usize,
    /// Tilt angle (degrees).
    pub angle_deg: f64,
    /// Position in acquisition order, 0-based (the message order).
    pub order: usize,
    /// Exposure of this image (e/Å²).
    #[serde(rename = "dose_e_per_A2")]
    pub dose_e_per_a2: f64,
    /// Exposure before this image (e/Å²).
    #[serde(rename = "prior_dose_e_per_A2")]
    pub prior_dose: f64,
    /// Exposure up to and including this image (e/Å²).
    pub accumulated_dose: f64,
    /// Mean defocus on the tilt axis (µm, underfocus positive).
    pub defocus_um: f64,
    /// Defocus along the astigmatism major axis (µm).
    pub defocus_u_um: f64,
    /// Defocus along the minor axis (µm).
    pub defocus_v_um: f64,
    /// Angle of the major axis from x (degrees).
    pub astigmatism_angle_deg: f64,
}

/// Per-series metadata (`meta.series`), identical in every message of a series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesInfo {
    /// Number of images.
    pub count: usize,
    /// Image shape [ny, nx].
    pub shape: [usize; 2],
    /// Pixel size (Å).
    #[serde(rename = "pixel_size_A")]
    pub pixel_size_a: f64,
    /// Tilt-axis angle (degrees, counter-clockwise from the image y axis).
    pub tilt_axis_deg: f64,
    /// Accelerating voltage (kV).
    #[serde(rename = "voltage_kV")]
    pub voltage_kv: f64,
    /// Spherical aberration (mm).
    pub cs_mm: f64,
    /// Amplitude contrast fraction.
    pub amplitude_contrast: f64,
    /// Total exposure (e/Å²).
    pub total_dose: f64,
    /// Specimen thickness (Å) when known (simulations), for the reconstruction's default.
    #[serde(rename = "specimen_thickness_A", default)]
    pub specimen_thickness_a: f64,
    /// Whether the images carry a CTF (false: no phase flipping needed).
    #[serde(default = "yes")]
    pub ctf_applied: bool,
    /// Units of the pixel values.
    #[serde(default)]
    pub units: String,
    /// Producer node type.
    #[serde(default)]
    pub simulator: String,
}

fn yes() -> bool {
    true
}
