//! What a file is, from its first bytes: so that a reader handed a file of another format says
//! what the file is and which node reads it, instead of failing on a field of its own format.

/// Bytes of a file's start that [`identify`] looks at (an MRC header's `MAP ` stamp ends at 212).
pub const HEAD_BYTES: usize = 212;

/// A known format recognised from `head` (the file's first bytes, up to [`HEAD_BYTES`]), as
/// "a TIFF image (read it with tiff-read)"; `None` when nothing is recognised.
pub fn identify(head: &[u8]) -> Option<&'static str> {
    let starts = |m: &[u8]| head.starts_with(m);
    if head.len() >= 212 && &head[208..212] == b"MAP " {
        return Some("an MRC file (read it with mrc-read)");
    }
    if starts(b"II*\0") || starts(b"MM\0*") || starts(b"II+\0") || starts(b"MM\0+") {
        return Some("a TIFF image (read it with tiff-read)");
    }
    if starts(b"\x89PNG\r\n\x1a\n") {
        return Some("a PNG image");
    }
    if starts(b"\x89HDF\r\n\x1a\n") {
        return Some("an HDF5 file");
    }
    if starts(&[0x1f, 0x8b]) {
        return Some("a gzip-compressed file (decompress it first)");
    }
    if starts(b"PK\x03\x04") {
        return Some("a zip archive");
    }
    if starts(b"\x93NUMPY") {
        return Some("a NumPy .npy array");
    }
    if starts(b"data_") || starts(b"# version") {
        return Some("a STAR file (text)");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_told_apart_by_their_first_bytes() {
        let mut mrc = vec![0u8; 1024];
        mrc[208..212].copy_from_slice(b"MAP ");
        assert!(identify(&mrc).unwrap().contains("MRC"));
        assert!(identify(b"II*\0\x08\0\0\0").unwrap().contains("TIFF"));
        assert!(identify(b"MM\0*\0\0\0\x08").unwrap().contains("tiff-read"));
        assert!(identify(b"\x89PNG\r\n\x1a\n....").unwrap().contains("PNG"));
        assert!(identify(&[0x1f, 0x8b, 8, 0]).unwrap().contains("gzip"));
        assert!(identify(b"data_particles\n").unwrap().contains("STAR"));
        // An MRC header without its stamp (old files) starts with NX: nothing to recognise.
        assert_eq!(identify(&[123, 0, 0, 0, 200, 0, 0, 0]), None);
    }
}
