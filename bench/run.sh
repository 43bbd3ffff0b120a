#!/usr/bin/env bash
# tomoflow benchmark suite: engine overhead (vs Snakemake) and streaming throughput / memory.
# Usage: bench/run.sh            (from anywhere; see bench/README.md)
# Knobs (environment): REPEAT=5 (runs per timing, median reported), SKIP_SNAKEMAKE=1,
#                      SNAKEMAKE_VERSION=9.27.1, KEEP_WORK=1 (keep the temp dir),
#                      SKIP_BUILD=1 (use the existing release build as is).
set -euo pipefail

# Knobs given by the caller, recorded in RESULTS.md (before defaults are applied).
knobs=""
for k in REPEAT SKIP_SNAKEMAKE SNAKEMAKE_VERSION SKIP_BUILD KEEP_WORK; do
    if [[ -n "${!k:-}" ]]; then knobs+="$k=${!k} "; fi
done
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"
REPEAT="${REPEAT:-5}"
SNAKEMAKE_VERSION="${SNAKEMAKE_VERSION:-9.27.1}"
PY="${PYTHON:-python3}"
cd "$ROOT"

log() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }
t_start=$(date +%s)
load_start="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------- 1. build
if [[ -z "${SKIP_BUILD:-}" ]]; then
    log "cargo build --release --workspace"
    cargo build --release --workspace
else
    log "SKIP_BUILD set: using the existing target/release build"
fi
BIN="$ROOT/target/release/tomoflow"
unset TOMOFLOW_PLUGIN_PATH   # plugins: target/release/lib*.so next to the binary
ls "$ROOT"/target/release/libtomoflow_testkit.so >/dev/null

WORK="$(mktemp -d "${TMPDIR:-/tmp}/tomoflow-bench.XXXXXX")"
cleanup() { if [[ -z "${KEEP_WORK:-}" ]]; then rm -rf "$WORK"; else echo "kept $WORK" >&2; fi; }
trap cleanup EXIT

# measure NAME [timeit options] -- CMD...   -> sets ${NAME}_med ${NAME}_min ${NAME}_rss (KiB)
measure() {
    local name="$1"; shift
    local out
    out="$("$PY" "$BENCH/timeit.py" "$@")"
    read -r med min max rss n <<<"$out"
    printf -v "${name}_med" '%s' "$med"
    printf -v "${name}_min" '%s' "$min"
    printf -v "${name}_rss" '%s' "$rss"
    printf '   %-28s median %8.3f s  (min %.3f, max %.3f, n=%s)  peak RSS %6d MiB\n' \
        "$name" "$med" "$min" "$max" "$n" "$((rss / 1024))" >&2
}
ms() { "$PY" -c "print(f'{$1*1000:.0f} ms' if $1 < 10 else f'{$1:.1f} s')"; }
ratio() { "$PY" -c "print(f'{$1/$2:.0f}x' if $1/$2 >= 10 else f'{$1/$2:.1f}x')"; }

# ---------------------------------------------------------------- 2. engine overhead
log "engine overhead: generating DAGs"
"$PY" "$BENCH/gen_dag.py" 10 100 "$WORK/dag1000"
"$PY" "$BENCH/gen_dag.py" 10 10 "$WORK/dag100"
WF1000="$WORK/dag1000/wf.yaml"
WF100="$WORK/dag100/wf.yaml"
S="$WORK/store"

log "tomoflow (store on $(df -T "$WORK" | awk 'NR==2{print $2}') under $WORK)"
cd "$WORK"
measure tf_cold1000 --repeat "$REPEAT" --prepare "rm -rf '$S'" -- "$BIN" -q --store "$S" run "$WF1000"
# The store now holds the complete 1,000-node run.
measure tf_plan1000_cached --repeat "$REPEAT" -- "$BIN" -q --store "$S" plan "$WF1000"
measure tf_plan1000 --repeat "$REPEAT" --prepare "rm -rf '$S.plan'" -- "$BIN" -q --store "$S.plan" plan "$WF1000"
rm -rf "$S" "$S.plan"
"$BIN" -q --store "$S" run "$WF100" >/dev/null
measure tf_rerun100 --repeat "$REPEAT" -- "$BIN" -q --store "$S" run "$WF100"
rm -rf "$S"
tf_shm_cold1000_med=""
if [[ -d /dev/shm && -w /dev/shm ]]; then
    # Diagnostic: the same cold run with the store on tmpfs, where fsync costs nothing.
    SHM="$(mktemp -d /dev/shm/tomoflow-bench.XXXXXX)"
    measure tf_shm_cold1000 --repeat "$REPEAT" --prepare "rm -rf '$SHM/store'" -- "$BIN" -q --store "$SHM/store" run "$WF1000"
    rm -rf "$SHM"
fi
cd "$ROOT"

sm_ok=""
if [[ -z "${SKIP_SNAKEMAKE:-}" ]]; then
    SM="$BENCH/.venv/bin/snakemake"
    if [[ ! -x "$SM" ]] || [[ "$("$SM" --version 2>/dev/null)" != "$SNAKEMAKE_VERSION" ]]; then
        log "installing snakemake==$SNAKEMAKE_VERSION into bench/.venv"
        "$PY" -m venv "$BENCH/.venv"
        "$BENCH/.venv/bin/pip" install -q "snakemake==$SNAKEMAKE_VERSION" || true
    fi
    if [[ -x "$SM" ]]; then
        sm_ok=1
        log "snakemake $("$SM" --version)"
        D1="$WORK/dag1000"; D2="$WORK/dag100"
        measure sm_cold1000 --repeat "$REPEAT" --cwd "$D1" --prepare "rm -rf tok .snakemake" -- "$SM" --cores 2 -q
        [[ "$(ls "$D1/tok" | wc -l)" == 1000 ]] || { echo "snakemake did not make 1000 files" >&2; exit 1; }
        measure sm_dry1000 --repeat "$REPEAT" --cwd "$D1" --prepare "rm -rf tok .snakemake" -- "$SM" --cores 2 -q -n
        "$SM" --cores 2 -q -d "$D2" -s "$D2/Snakefile" >/dev/null 2>&1
        measure sm_rerun100 --repeat "$REPEAT" --cwd "$D2" -- "$SM" --cores 2 -q
    else
        echo "snakemake unavailable (pip install failed): skipping the comparison" >&2
    fi
fi

# ---------------------------------------------------------------- 3. streaming
log "streaming: memcpy reference"
rustc -O -o "$WORK/memcpy" "$BENCH/memcpy.rs"
read -r _ memcpy_gbs < <("$WORK/memcpy" | grep '^memcpy ')
read -r _ fill_gbs < <("$WORK/memcpy" | grep '^alloc_fill ')
echo "   memcpy ${memcpy_gbs} GB/s, fresh alloc+fill ${fill_gbs} GB/s" >&2

log "streaming: stream-source (64 MiB chunks) -> 10 x pass -> sink, cache: false"
CAP=4   # tomoflow run's default --capacity
NODES=12
"$PY" "$BENCH/gen_stream.py" 64 10 "$WORK/s4g.yaml"
"$PY" "$BENCH/gen_stream.py" 16 10 "$WORK/s1g.yaml"
"$PY" "$BENCH/gen_stream.py" 64 0 "$WORK/s4g_direct.yaml"
SS="$WORK/stream-store"
cd "$WORK"
measure st4g --repeat 3 -- "$BIN" -q --store "$SS" run --capacity "$CAP" "$WORK/s4g.yaml"
measure st1g --repeat 3 -- "$BIN" -q --store "$SS" run --capacity "$CAP" "$WORK/s1g.yaml"
measure st4g_direct --repeat 3 -- "$BIN" -q --store "$SS" run --capacity "$CAP" "$WORK/s4g_direct.yaml"
cd "$ROOT"
gbs() { "$PY" -c "print(f'{$1*64*2**20/$2/1e9:.2f}')"; }   # chunks, seconds
st4g_gbs=$(gbs 64 "$st4g_med"); st1g_gbs=$(gbs 16 "$st1g_med"); st4g_direct_gbs=$(gbs 64 "$st4g_direct_med")
bound_mib=$(( (CAP + 2) * NODES * 64 ))

# ---------------------------------------------------------------- 4. report
pass_fail() { "$PY" -c "print('✅' if $1 < $2 else '❌')"; }
sm_cell() { if [[ -n "$sm_ok" ]]; then ms "$1"; else echo "n/a"; fi; }
ratio_cell() { if [[ -n "$sm_ok" ]]; then ratio "$1" "$2"; else echo "n/a"; fi; }
md="$WORK/RESULTS.md"
{
    echo "# tomoflow benchmark results"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- machine: \`nproc\` = $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(awk '/MemTotal/{printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo); temp store on $(df -T "${TMPDIR:-/tmp}" | awk 'NR==2{print $2}'); load average at start: $load_start (other work on the machine skews the figures)"
    echo "- tomoflow $("$BIN" --version | awk '{print $2}') (git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ', dirty')), release build; $( [[ -n "$sm_ok" ]] && echo "snakemake $("$BENCH/.venv/bin/snakemake" --version)" || echo "snakemake not run"); $(rustc --version)"
    echo "- command: \`${knobs}bench/run.sh\` (REPEAT=$REPEAT: median of $REPEAT runs, whole-process wall time; streaming: median of 3)"
    echo
    echo "## Engine overhead (no-op DAG: 10 layers x 100 nodes, 1/4 of them 2-input joins)"
    echo
    echo "| measurement | tomoflow | Snakemake | Snakemake / tomoflow | goal |"
    echo "|---|---:|---:|---:|---|"
    echo "| (a) cold run, 1,000 nodes (plan + run, whole process) | $(ms "$tf_cold1000_med") | $(sm_cell "${sm_cold1000_med:-0}") | $(ratio_cell "${sm_cold1000_med:-0}" "$tf_cold1000_med") | < 1 s $(pass_fail "$tf_cold1000_med" 1) |"
    echo "| (b) fully cached rerun, 100 nodes | $(ms "$tf_rerun100_med") | $(sm_cell "${sm_rerun100_med:-0}") | $(ratio_cell "${sm_rerun100_med:-0}" "$tf_rerun100_med") | < 0.2 s $(pass_fail "$tf_rerun100_med" 0.2) |"
    echo "| (c) \`plan\` 1,000 nodes, empty store (Snakemake: \`-n\` dry run) | $(ms "$tf_plan1000_med") | $(sm_cell "${sm_dry1000_med:-0}") | $(ratio_cell "${sm_dry1000_med:-0}" "$tf_plan1000_med") | |"
    echo "| (c') \`plan\` 1,000 nodes, all cached | $(ms "$tf_plan1000_cached_med") | | | |"
    if [[ -n "$tf_shm_cold1000_med" ]]; then
    echo "| diagnostic: (a) with the store on tmpfs (/dev/shm, fsync free) | $(ms "$tf_shm_cold1000_med") | | | |"
    fi
    echo "| peak RSS of (a) | $((tf_cold1000_rss / 1024)) MiB | $( [[ -n "$sm_ok" ]] && echo "$((sm_cold1000_rss / 1024)) MiB (main process)" || echo n/a) | | |"
    echo
    echo "Snakemake equivalent: the same DAG as 3 wildcard rules (source/noop/join) with input functions, 1,000 jobs,"
    echo "each \`shell: echo ID > {output}\`; run with \`snakemake --cores 2 -q\` (tomoflow: default \`--jobs\` = nproc)."
    echo
    echo "## Streaming (stream-source, 64 MiB chunks -> 10 x pass -> sink; all \`cache: false\`, \`--capacity $CAP\`)"
    echo
    echo "| measurement | value |"
    echo "|---|---:|"
    echo "| 4 GiB (64 chunks) throughput, bytes delivered to the sink / process wall time | ${st4g_gbs} GB/s ($(ms "$st4g_med")) |"
    echo "| 1 GiB (16 chunks) throughput | ${st1g_gbs} GB/s ($(ms "$st1g_med")) |"
    echo "| 4 GiB, source -> sink directly (no pass nodes) | ${st4g_direct_gbs} GB/s |"
    echo "| reference: memcpy of a warm 64 MiB buffer (same machine) | ${memcpy_gbs} GB/s |"
    echo "| reference: fresh 64 MiB \`vec![v; n]\` alloc + fill (the source's own per-chunk work) | ${fill_gbs} GB/s |"
    echo "| peak RSS, 4 GiB volume | $((st4g_rss / 1024)) MiB |"
    echo "| peak RSS, 1 GiB volume | $((st1g_rss / 1024)) MiB |"
    echo "| bound (capacity + 2) x nodes x 64 MiB = ($CAP+2) x $NODES x 64 MiB | ${bound_mib} MiB |"
    echo
    echo "GB = 10^9 bytes. Peak RSS is the process's ru_maxrss (as \`/usr/bin/time -v\` reports it), maximum over the runs."
} >"$md"
cp "$md" "$BENCH/RESULTS.md"
echo
cat "$md"
echo
echo "written to bench/RESULTS.md; total $(( $(date +%s) - t_start )) s" >&2
