#!/usr/bin/env bash
# Benchmark of the U-Net (issue 5): the same network (widths 32-48-64, 7 classes, weighted CE +
# soft Dice, Adam) in tomoflow's burn backend and in PyTorch CPU on this machine, in one run:
# median training step time for batch 4 x 48^3 and 2 x 32^3, and inference of a 128^3 volume in
# 27 tiles of 64^3 with Gaussian blending. Prints both and the ratios (PyTorch time / ours).
#   bench/unet.sh                 # flex (default features)
#   FEATURES=tch bench/unet.sh    # burn's libtorch backend (LIBTORCH_USE_PYTORCH=1 uses the venv's torch)
# Installs torch (CPU wheel) into bench/.venv-torch on first use (about 1 GB from PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${STEPS:-3}"
if [ ! -x bench/.venv-torch/bin/python ]; then python3 -m venv bench/.venv-torch; fi
bench/.venv-torch/bin/python -c "import torch" 2>/dev/null || \
  bench/.venv-torch/bin/pip install -q torch --index-url https://download.pytorch.org/whl/cpu || \
  bench/.venv-torch/bin/pip install -q torch
FEAT=()
if [ -n "${FEATURES:-}" ]; then
  FEAT=(--no-default-features --features "$FEATURES")
  export LIBTORCH_USE_PYTORCH=1 PATH="$PWD/bench/.venv-torch/bin:$PATH"
fi
cargo build --release -q -p tomoflow-unet --example unet_bench "${FEAT[@]}"
R=$(target/release/examples/unet_bench --steps "$STEPS")
P=$(bench/.venv-torch/bin/python -P bench/unet_torch.py "$STEPS")  # -P: bench/timeit.py must not shadow the stdlib
echo "burn:"; echo "$R"; echo "pytorch:"; echo "$P"
python3 - "$R" "$P" <<'PY'
import json, sys
r = [json.loads(l) for l in sys.argv[1].splitlines()]
p = [json.loads(l) for l in sys.argv[2].splitlines()]
for a, b in zip(r, p):
    if a["what"] == "train":
        print(f"train batch {a['batch']} x {a['patch']}^3: burn {a['s_per_step']:.2f} s/step, PyTorch {b['s_per_step']:.2f} s/step: {b['s_per_step'] / a['s_per_step']:.2f}x PyTorch's speed ({a['voxels_per_s']:.0f} voxels/s)")
    else:
        print(f"inference 128^3 (27 tiles of 64^3): burn {a['s']:.1f} s, PyTorch {b['s']:.1f} s: {b['s'] / a['s']:.2f}x PyTorch's speed ({a['voxels_per_s']:.0f} voxels/s)")
PY
