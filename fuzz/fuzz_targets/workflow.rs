//! The workflow parser and validator: any text either parses and expands into instances, or
//! gives user errors. Never a panic, never unbounded work.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use tomoflow::workflow::{expand, Workflow};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(wf) = Workflow::parse(text, Path::new("fuzz.yaml")) {
        let _ = expand(&wf, &[]);
    }
});
