#!/usr/bin/env bash
# Run every fuzz target for SECONDS (default 30) on its kept corpus (fuzz/corpus/TARGET); stops
# with the crash report and the reproducing input (fuzz/artifacts/TARGET/) at the first crash.
# New interesting inputs go to a temporary directory, so the kept corpora only change on purpose
# (`cargo fuzz run -s none TARGET` without a directory adds to them; `cargo fuzz cmin` trims).
#
#   bash fuzz/smoke.sh [SECONDS] [TARGET ...]      # CI: 30 s each
#   KEEP=1 bash fuzz/smoke.sh 600 mrc              # long run; add coverage-increasing inputs
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-30}"
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(workflow mrc metadata chunk)
if ! command -v cargo-fuzz >/dev/null; then
  echo "installing cargo-fuzz (once)"
  cargo install cargo-fuzz --locked --quiet
fi
# -s none: libFuzzer's coverage instrumentation without a sanitizer, which works on stable Rust.
cargo fuzz build -s none
for t in "${TARGETS[@]}"; do
  new=$(mktemp -d)
  log=$(mktemp)
  if cargo fuzz run -s none "$t" "$new" "fuzz/corpus/$t" -- \
      -max_total_time="$SECS" -rss_limit_mb=2048 -timeout=10 -max_len=262144 -print_final_stats=1 >"$log" 2>&1; then
    echo "fuzz $t: ${SECS} s, $(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$' || echo '?') runs, no crash ($(grep -c '' <(ls "$new")) new inputs)"
  else
    # The panic and the reproduction command, without libFuzzer's byte dump of the input.
    grep -A8 -E 'panicked at|ERROR: libFuzzer|SUMMARY' "$log" | grep -v -E '^\s*(at /rustc|\[[0-9, ]*\])' | head -n 30
    grep -A2 'Reproduce with' "$log" || true
    echo "fuzz $t: CRASH (input saved under fuzz/artifacts/$t/)"
    exit 1
  fi
  if [ "${KEEP:-0}" = 1 ]; then
    # Keep only the new inputs that add coverage.
    cargo fuzz run -s none "$t" "fuzz/corpus/$t" "$new" -- -merge=1 >/dev/null 2>&1
    echo "fuzz $t: corpus now $(ls "fuzz/corpus/$t" | wc -l) inputs"
  fi
  rm -rf "$new" "$log"
done
