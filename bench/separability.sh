#!/usr/bin/env bash
# Can the classes be told apart at all, and does a trained model tell them apart?
#   bench/separability.sh                         # the voxels only
#   MODEL=results/.../model.bpk bench/separability.sh   # and what that model makes of them
# Simulates six 48 x 128 x 128 test tomograms of the five-class study (bench/separability.yaml,
# seconds), then bench/separability.py: a linear discriminant on each particle's radial profile
# at its true centre (leave-one-out), and with MODEL the model's class probabilities there.
# Installs numpy into bench/.venv from PyPI on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=bench/out/separability
STORE=bench/out/separability-store
if [ ! -x bench/.venv/bin/python ]; then python3 -m venv bench/.venv; fi
bench/.venv/bin/python -c "import numpy" 2>/dev/null || bench/.venv/bin/pip install -q numpy
cargo build --release -q
target/release/tomoflow run bench/separability.yaml --store "$STORE" -q --set out="$OUT"
rm -f "$OUT"/rep=*/probabilities*.mrc
if [ -n "${MODEL:-}" ]; then
  target/release/tomoflow run bench/separability-model.yaml --store "$STORE" -q \
    --set out="$OUT" --set model="$MODEL" --set tta="${TTA:-false}"
fi
bench/.venv/bin/python bench/separability.py "$OUT"
