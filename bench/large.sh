#!/usr/bin/env bash
# Large-input benchmark: a 2048 x 2048 x 512 tomogram (10 Å voxels; 8 GiB as f32) reconstructed
# from 41 tilts of 2048^2 read from disk, segmented by a U-Net and picked, streamed end to end
# through the real binary (bench/large.yaml). Prints the peak RSS of the whole run, samples RSS
# every 2 s into bench/out/large/rss.tsv, and lists per-node times.
#
#   bench/large.sh [PLANES]     # tomogram planes, default 512; e.g. 64 for a quicker partial run
#
# Prepared once and kept in bench/out/large/ (gitignored):
# - the input tilt series with .tlt/.mdoc/.star and the ground truth (bench/large-prepare.yaml;
#   simulating it holds the 8 GiB potential once, 4 minutes; not what is measured);
# - a small U-Net (workflows/train.yaml with widths [4, 8]) so that CPU inference of 2.1 G voxels
#   takes about an hour on 2 cores; the pipeline's memory is set by the tomogram's planes, not
#   by the net.
set -euo pipefail
cd "$(dirname "$0")/.."
PLANES="${1:-512}"
OUT=bench/out/large
BIN=target/release/tomoflow
mkdir -p "$OUT"
cargo build -q --release --workspace
if [ ! -f "$OUT/TS_large.st.mdoc" ]; then
  echo "== preparing the input tilt series (once)"
  /usr/bin/time -f "prepare: %e s wall, %M KiB peak RSS" \
    "$BIN" -q --store "$OUT/store-prepare" run bench/large-prepare.yaml --set "out=$OUT"
  rm -rf "$OUT/store-prepare"
fi
if [ ! -f "$OUT/train/model.bpk" ]; then
  echo "== training the small U-Net (once)"
  "$BIN" -q --store "$OUT/store-train" run workflows/train.yaml --set "out=$OUT/train" --set 'widths=[4, 8]'
fi
echo "== measured: tilt-series-read -> recon-wbp -> unet-infer -> pick-nms, $PLANES planes of 2048^2"
rm -rf "$OUT/store"
/usr/bin/time -f "%e s wall, %M KiB peak RSS" -o "$OUT/time.txt" \
  "$BIN" --store "$OUT/store" run bench/large.yaml --set "dir=$OUT" --set "model=$OUT/train/model.bpk" \
  --set "thickness=$((PLANES * 10))" > "$OUT/run.log" 2>&1 &
PID=$!
sleep 1
CHILD=$(pgrep -P "$PID" || echo "$PID")
# The run's RSS over time (seconds since start, MiB), to see which stage sets the peak.
printf 'seconds\trss_mib\n' > "$OUT/rss.tsv"
START=$(date +%s)
while kill -0 "$PID" 2>/dev/null; do
  RSS=$(awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$CHILD/status" 2>/dev/null || true)
  [ -n "$RSS" ] && printf '%s\t%s\n' "$(($(date +%s) - START))" "$RSS" >> "$OUT/rss.tsv"
  sleep 2
done
wait "$PID" || { tail -30 "$OUT/run.log"; exit 1; }
grep -E "^(tilts|recon|model|segment|picks|export)" "$OUT/run.log" || true
grep -E "^run " "$OUT/run.log"
echo "whole run: $(cat "$OUT/time.txt")"
# Picks against the ground truth with the CZII rule (a particle is found when a pick lies within
# half its class radius; extra picks are false positives). Only meaningful for the full depth,
# where the tomogram's grid is the specimen's.
python3 - "$OUT/truth.csv" "$OUT/picks.csv" <<'PY'
import csv, sys, collections
radius = {"apo-ferritin": 60.0, "ribosome": 150.0, "thyroglobulin": 130.0}
def load(path):
    out = collections.defaultdict(list)
    with open(path) as f:
        for r in csv.DictReader(f):
            out[r["class"]].append((float(r["x_A"]), float(r["y_A"]), float(r["z_A"])))
    return out
truth, picks = load(sys.argv[1]), load(sys.argv[2])
print(f"{'class':15} {'truth':>6} {'picks':>6} {'TP':>6} {'recall':>7} {'precision':>9}")
for c, rad in radius.items():
    r = 0.5 * rad
    grid = collections.defaultdict(list)
    for i, (x, y, z) in enumerate(truth[c]):
        grid[(int(x // r), int(y // r), int(z // r))].append(i)
    hit = set()
    for (x, y, z) in picks[c]:
        cx, cy, cz = int(x // r), int(y // r), int(z // r)
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                for dz in (-1, 0, 1):
                    for i in grid.get((cx + dx, cy + dy, cz + dz), ()):
                        tx, ty, tz = truth[c][i]
                        if (tx - x) ** 2 + (ty - y) ** 2 + (tz - z) ** 2 <= r * r:
                            hit.add(i)
    n, m = len(truth[c]), len(picks[c])
    print(f"{c:15} {n:6} {m:6} {len(hit):6} {len(hit) / max(n, 1):7.3f} {len(hit) / max(m, 1):9.3f}")
PY
