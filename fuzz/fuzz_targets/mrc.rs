//! The MRC reader on arbitrary files: a clear error or a volume whose size matches its
//! header; never a panic and never an allocation larger than the file justifies.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::io::Write;
use tomoflow_cryo::mrc::{parse_header, MrcReader};

fuzz_target!(|data: &[u8]| {
    // The header parser alone, with and without the file size.
    let _ = parse_header(data, "fuzz.mrc", None);
    let _ = parse_header(data, "fuzz.mrc", Some(data.len() as u64));
    // The whole reader on a real file.
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(data).expect("write");
    if let Ok(mut r) = MrcReader::open(f.path()) {
        let n = r.header.len();
        if let Ok(v) = r.read_all() {
            assert_eq!(v.len(), n);
        }
    }
});
