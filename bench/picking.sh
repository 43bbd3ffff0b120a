#!/usr/bin/env bash
# Benchmark of pick-nms: a 7-class probability map of 630 x 630 x 184 voxels (a CZII
# tomogram), tomoflow's picker (release build, THREADS threads) vs scikit-image peak_local_max
# plus a greedy NMS in Python on the same input; asserts identical picks; prints the ratio.
#   bench/picking.sh               # THREADS=2
# Needs python3 with venv; installs numpy + scikit-image into bench/.venv from PyPI on first use.
# Writes a 2 GB map under bench/out/picking (git-ignored); about 20 GB of RAM is not needed:
# peak use is about 5 GB (the map in each process plus scipy's temporaries).
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${THREADS:-2}"
OUT=bench/out/picking
if [ ! -x bench/.venv/bin/python ]; then python3 -m venv bench/.venv; fi
bench/.venv/bin/python -c "import skimage" 2>/dev/null || bench/.venv/bin/pip install -q numpy scikit-image
cargo build --release -q -p tomoflow-picking --example bench_pick
R=$(target/release/examples/bench_pick "$OUT" "$THREADS")
P=$(bench/.venv/bin/python bench/picking_ref.py "$OUT")
echo "rust:   $R"
echo "python: $P"
python3 - "$R" "$P" <<'PY'
import json, sys
r, p = json.loads(sys.argv[1]), json.loads(sys.argv[2])
assert p["identical"], "picks differ between tomoflow and the reference"
print(f"identical picks: {p['picks']}; tomoflow {r['rust_seconds']:.3f} s ({r['threads']} threads) vs "
      f"scikit-image + Python NMS {p['python_seconds']:.3f} s: {p['python_seconds'] / r['rust_seconds']:.1f}x faster")
PY
rm -f "$OUT/probs.f32"
