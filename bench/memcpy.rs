//! Reference bandwidths for the streaming benchmark (compiled by bench/run.sh with `rustc -O`).
//!
//! Prints two lines `name GB/s`:
//! - `memcpy`: copying a warm 64 MiB buffer into another (bytes copied per second; median of
//!   several passes). This is the "one copy per hop" cost a zero-copy pipeline avoids.
//! - `alloc_fill`: allocating a fresh 64 MiB Vec<f32> filled with a value (`vec![v; n]`) and
//!   dropping it: exactly what `stream-source` does per chunk (page faults + fill), i.e. the
//!   upper bound of the streaming benchmark when transport costs nothing.

use std::hint::black_box;
use std::time::Instant;

const MIB: usize = 1 << 20;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let bytes = 64 * MIB;
    let passes: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);

    let src = vec![1u8; bytes];
    let mut dst = vec![0u8; bytes];
    dst.copy_from_slice(&src); // warm up (page faults)
    let mut rates = Vec::new();
    for i in 0..passes {
        let t = Instant::now();
        dst.copy_from_slice(black_box(&src));
        black_box(&mut dst);
        rates.push(bytes as f64 / t.elapsed().as_secs_f64() / 1e9);
        dst[i % bytes] = 0;
    }
    println!("memcpy {:.2}", median(rates));

    let n = bytes / 4;
    let mut rates = Vec::new();
    for i in 0..passes {
        let t = Instant::now();
        let v = black_box(vec![i as f32 + 1.0; n]);
        black_box(v[n - 1]);
        drop(v);
        rates.push(bytes as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    println!("alloc_fill {:.2}", median(rates));
}
