//! A memory budget for nodes that allocate large buffers: check the bytes a node will need
//! before allocating them, so that an impossible request (a `shape` of 4096³, a voxel size of
//! 1e-9 Å) is a node error naming the parameter, not an abort of the whole engine.
//!
//! The budget is the smallest of: the memory the kernel reports as available (`MemAvailable`
//! in `/proc/meminfo`), the room left under the process's cgroup limit (`memory.max −
//! memory.current`), and `TOMOFLOW_MEMORY_LIMIT` (bytes, or with a `K`, `M`, `G` or `T`
//! suffix) when set. Where none is known (not Linux), every request passes.

use anyhow::{bail, Result};

/// Bytes this process may still allocate, if known (see the module documentation).
pub fn available() -> Option<u64> {
    let limit = std::env::var("TOMOFLOW_MEMORY_LIMIT")
        .ok()
        .and_then(|v| parse_size(&v));
    let meminfo = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kib| kib * 1024);
    let cgroup = (|| {
        let max = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok()?;
        let cur = std::fs::read_to_string("/sys/fs/cgroup/memory.current").ok()?;
        let max: u64 = max.trim().parse().ok()?; // "max" (no limit) fails here
        Some(max.saturating_sub(cur.trim().parse().ok()?))
    })();
    [limit, meminfo, cgroup].into_iter().flatten().min()
}

/// `1234`, `512M`, `4G`, `1.5T` (powers of 1024) as bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()?.to_ascii_uppercase() {
        'K' => (&s[..s.len() - 1], 1u64 << 10),
        'M' => (&s[..s.len() - 1], 1 << 20),
        'G' => (&s[..s.len() - 1], 1 << 30),
        'T' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let v: f64 = num.trim().parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some((v * mult as f64) as u64)
}

/// `bytes` as a short human figure (`3.2 GiB`).
pub fn human(bytes: u128) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// Refuse a request of `bytes` that exceeds [`available`]; `what` says what needs them and
/// which parameter sets the size, e.g. "`shape` [4096, 4096, 4096]: potential, labels and
/// instance maps".
pub fn ensure(bytes: u128, what: &str) -> Result<()> {
    ensure_within(bytes, available(), what)
}

/// [`ensure`] against a given budget (`None`: unknown, always passes).
pub fn ensure_within(bytes: u128, budget: Option<u64>, what: &str) -> Result<()> {
    match budget {
        Some(b) if bytes > b as u128 => bail!(
            "{what} need {} ({bytes} bytes), but only {} are available to this process; \
             reduce the size, or raise TOMOFLOW_MEMORY_LIMIT if the figure is too low",
            human(bytes),
            human(b as u128)
        ),
        _ => Ok(()),
    }
}

/// Bytes of `count` elements of `elem_bytes` each, with no overflow (u128).
pub fn bytes_of(count: impl IntoIterator<Item = usize>, elem_bytes: usize) -> u128 {
    count.into_iter().fold(1u128, |a, n| a * n as u128) * elem_bytes as u128
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("1.5g"), Some(3 << 29));
        assert_eq!(parse_size("1234"), Some(1234));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(human(64 << 30), "64.0 GiB");
        assert_eq!(human(12), "12 B");
        assert_eq!(bytes_of([4096, 4096, 4096], 4), 1u128 << 38);
    }

    #[test]
    fn requests_over_the_budget_are_refused_with_the_figures() {
        let e = ensure_within(
            1 << 38,
            Some(8 << 30),
            "`shape` [4096, 4096, 4096]: the potential",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("`shape` [4096, 4096, 4096]: the potential need 256.0 GiB")
                && e.contains("only 8.0 GiB"),
            "{e}"
        );
        assert!(ensure_within(1 << 20, Some(8 << 30), "x").is_ok());
        assert!(ensure_within(u128::MAX, None, "x").is_ok());
        // This machine reports something, and a petabyte is more than it has.
        if cfg!(target_os = "linux") {
            assert!(available().is_some());
            assert!(ensure(1 << 50, "x").is_err());
        }
    }
}
