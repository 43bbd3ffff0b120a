//! Keep large tensors' memory in the process (glibc only).
//!
//! glibc serves every allocation above its mmap threshold (at most 32 MiB by default) with a
//! fresh mapping and unmaps it on free, so each new activation or gradient of a 3D network
//! touches new pages: millions of page faults per benchmark run. [`tune`] raises the mmap
//! threshold to 1 GiB and the trim threshold to 1 GiB, so freed tensors stay in the heap and the
//! next step reuses them. The heap then keeps up to the training's peak memory (plus 1 GiB) until
//! the process ends. Measured (`bench/unet.sh`, 2 cores): page faults 8.7 M → 0.25 M; a
//! 4 × 48³ training step 4.2–4.7 s → 3.3 s, inference of 128³ 21–22 s → 17–18.5 s.
//!
//! Set `TOMOFLOW_MALLOC_TUNE=0` to leave the allocator alone; a `GLIBC_TUNABLES` that sets
//! `glibc.malloc.*` also wins.

/// Tune glibc's allocator once per process (see the module documentation). Returns whether it
/// was tuned.
pub fn tune() -> bool {
    static DONE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DONE.get_or_init(|| {
        let off = std::env::var("TOMOFLOW_MALLOC_TUNE").is_ok_and(|v| v == "0")
            || std::env::var("GLIBC_TUNABLES").is_ok_and(|v| v.contains("glibc.malloc."));
        !off && set()
    })
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set() -> bool {
    const GIB: libc::c_int = 1 << 30;
    // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, GIB) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, GIB) == 1
            && libc::mallopt(libc::M_TOP_PAD, 256 << 20) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set() -> bool {
    false
}

#[cfg(test)]
mod tests {
    #[test]
    fn tuning_is_accepted_once() {
        let first = super::tune();
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        assert!(
            first
                || std::env::var("TOMOFLOW_MALLOC_TUNE").is_ok()
                || std::env::var("GLIBC_TUNABLES").is_ok()
        );
        assert_eq!(super::tune(), first);
    }
}
