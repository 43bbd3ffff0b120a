#!/usr/bin/env bash
# Benchmark of the noise plugin: 100 empirical and 100 spectral 128³ boxes, each
# under 2 s in total, and FFT throughput against the bare rustfft bound. Single-threaded.
#   bench/noise.sh [tomogram]       (default data/real-tomograms/13pf_MT.tif)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p tomoflow-noise --example noise_bench
target/release/examples/noise_bench "${1:-data/real-tomograms/13pf_MT.tif}"
