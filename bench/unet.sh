#!/usr/bin/env bash
# Benchmark of the U-Net: the same network (widths 32-48-64, 7 classes, weighted CE + soft Dice,
# Adam) in tomoflow's burn backend and in PyTorch CPU on the same machine, in one run:
# median training step time for batch 4 x 48^3 and 2 x 32^3, and inference of a 128^3 volume in
# 27 tiles of 64^3 with Gaussian blending, alternating ROUNDS times (default 3). Prints both, the
# ratios of the medians (PyTorch time / ours), then one 32 -> 32 convolution forward and backward
# in burn's generic passes and in tomoflow's conv3 kernel (plugins/unet/examples/conv_bench.rs).
#   bench/unet.sh                 # flex (default features)
#   FEATURES=tch bench/unet.sh    # burn's libtorch backend (LIBTORCH_USE_PYTORCH=1 uses the venv's torch,
#                                 # which must be torch 2.9 for tch 0.22: pip install torch==2.9.0)
#   SAME_MALLOC=1 bench/unet.sh   # PyTorch with the glibc malloc settings tomoflow's U-Net uses
#   FEATURES=wgpu TORCH_DEVICE=cuda bench/unet.sh   # a GPU: burn's wgpu against PyTorch on CUDA
#                                 # (needs a CUDA build of torch in bench/.venv-torch; docs/unet.md)
# Installs torch (CPU wheel) into bench/.venv-torch on first use (about 1 GB from PyPI; torch 2.9
# with FEATURES=tch: where only PyPI is reachable that is the CUDA wheel, 6.7 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${STEPS:-3}"
if [ ! -x bench/.venv-torch/bin/python ]; then python3 -m venv bench/.venv-torch; fi
# tch 0.22 (burn's libtorch backend) builds only against libtorch 2.9.
TORCH_SPEC=torch
if [[ "${FEATURES:-}" == *tch* ]]; then TORCH_SPEC=torch==2.9.0; fi
bench/.venv-torch/bin/python -c "import torch" 2>/dev/null || \
  bench/.venv-torch/bin/pip install -q "$TORCH_SPEC" --index-url https://download.pytorch.org/whl/cpu || \
  bench/.venv-torch/bin/pip install -q "$TORCH_SPEC"
if [[ "${FEATURES:-}" == *tch* ]] && ! bench/.venv-torch/bin/python -c "import torch, sys; sys.exit(not torch.__version__.startswith('2.9.'))"; then
  echo "FEATURES=tch needs torch 2.9 in bench/.venv-torch (tch 0.22 links libtorch 2.9); it has $(bench/.venv-torch/bin/python -c 'import torch; print(torch.__version__)')." >&2
  echo "Move bench/.venv-torch away (or point it at a venv with torch==2.9.0) and rerun." >&2
  exit 1
fi
FEAT=()
if [ -n "${FEATURES:-}" ]; then
  FEAT=(--no-default-features --features "$FEATURES")
  if [[ "$FEATURES" == *tch* ]]; then
    export LIBTORCH_USE_PYTORCH=1 PATH="$PWD/bench/.venv-torch/bin:$PATH"
    TORCH_LIB=$(bench/.venv-torch/bin/python -c "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))" 2>/dev/null)
    export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
fi
# Another backend's build goes to its own target directory, so that it does not replace the
# default (flex) plugin in target/release that workflows load.
TARGET="${CARGO_TARGET_DIR:-target${FEATURES:+/bench-${FEATURES//,/-}}}"
export CARGO_TARGET_DIR="$TARGET"
cargo build --release -q -p tomoflow-unet --example unet_bench --example conv_bench "${FEAT[@]}"
# The machine's speed drifts by 10-20 % from minute to minute: alternate the two ROUNDS times and
# compare medians.
ROUNDS="${ROUNDS:-3}"
# tomoflow's U-Net raises glibc's mmap and trim thresholds (plugins/unet/src/alloc.rs);
# SAME_MALLOC=1 gives PyTorch the same settings through GLIBC_TUNABLES.
TORCH_TUNABLES=""
if [ "${SAME_MALLOC:-0}" = 1 ]; then
  TORCH_TUNABLES="glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=1073741824:glibc.malloc.top_pad=268435456"
fi
R=""; P=""
for r in $(seq "$ROUNDS"); do
  echo "round $r/$ROUNDS" >&2
  R+=$("$TARGET"/release/examples/unet_bench --steps "$STEPS")$'\n'
  P+=$(env ${TORCH_TUNABLES:+GLIBC_TUNABLES=$TORCH_TUNABLES} bench/.venv-torch/bin/python -P bench/unet_torch.py "$STEPS" "${TORCH_DEVICE:-cpu}")$'\n'  # -P: bench/timeit.py must not shadow the stdlib
done
echo "burn:"; echo -n "$R"; echo "pytorch:"; echo -n "$P"
python3 - "$R" "$P" <<'PY'
import json, statistics, sys
def load(text):
    out = {}
    for line in text.splitlines():
        if line.strip():
            j = json.loads(line)
            key = (j["what"], j.get("batch"), j.get("patch"))
            out.setdefault(key, []).append(j)
    return out
r, p = load(sys.argv[1]), load(sys.argv[2])
for key, runs in r.items():
    t = "s_per_step" if key[0] == "train" else "s"
    a = statistics.median(j[t] for j in runs)
    b = statistics.median(j[t] for j in p[key])
    vox = statistics.median(j["voxels_per_s"] for j in runs)
    what = f"train batch {key[1]} x {key[2]}^3" if key[0] == "train" else "inference 128^3 (27 tiles of 64^3)"
    unit = " s/step" if key[0] == "train" else " s"
    print(f"{what}: burn {a:.2f}{unit}, PyTorch {b:.2f}{unit} (medians of {len(runs)}): {b / a:.2f}x PyTorch's speed ({vox:.0f} voxels/s)")
PY
if [ -z "${FEATURES:-}" ] || [[ "$FEATURES" == *flex* ]] || [[ "$FEATURES" == *tch* ]]; then
  echo "one 32 -> 32 convolution, 4 x 48^3 (conv_bench):"
  "$TARGET"/release/examples/conv_bench
fi
