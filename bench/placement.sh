#!/usr/bin/env bash
# Benchmark of particle placement and PDB -> potential. Release build.
#   bench/placement.sh                 # 2 threads
#   THREADS=1 bench/placement.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p tomoflow-placement --example bench_placement
exec target/release/examples/bench_placement data/templates ../shared/data/templates/pdbs
