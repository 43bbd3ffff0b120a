//! The text metadata readers: STAR (RELION/Warp), RELION 5 tilt-series STAR, SerialEM .mdoc
//! and IMOD .tlt. Any text gives a result or a clear error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tomoflow_cryo::{star, tiltscheme};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(blocks) = star::parse(text, "fuzz.star") {
        for b in &blocks {
            for l in &b.loops {
                assert!(l.rows.iter().all(|r| r.len() == l.columns.len()));
                for c in &l.columns {
                    let _ = l.numbers(c, "fuzz.star");
                }
            }
        }
    }
    if let Ok(r) = tiltscheme::parse_relion_tilts(text, "fuzz.star", 120.0) {
        assert_eq!(r.rows.len(), r.scheme.len());
    }
    if let Ok(m) = tiltscheme::parse_mdoc(text, "fuzz.mdoc", 120.0) {
        assert_eq!(m.zvalues.len(), m.scheme.len());
    }
    let _ = tiltscheme::parse_tlt(text, "fuzz.tlt");
});
