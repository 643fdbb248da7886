#!/usr/bin/env bash
# Long fuzzing of every network decoder: each property of behaviours/tests/decoders.rs runs alone for
# SECONDS_EACH (default 600) in batches of random cases (a fresh seed per batch), on one core.
# Prints, per property, the cases run and the outcome. A failing case is saved by proptest under
# behaviours/tests/proptest-regressions/ and replayed by every later `cargo test`: commit it.
#   bench/fuzz.sh [SECONDS_EACH] [NAME_FILTER]
set -euo pipefail
cd "$(dirname "$0")/.."
each=${1:-600}
batch=${BATCH:-20000}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
run() { cargo test --release --locked -q -p dht-behaviours --test decoders "$@"; }
run --no-run 2>&1 | grep -v '^ *\(Compiling\|Finished\|Executable\)' || true
mapfile -t props < <(run -- --list 2>/dev/null | sed -n 's/: test$//p' | grep -- "${2:-}")
printf '%-52s %12s %8s  %s\n' property cases seconds outcome
total=0
for p in "${props[@]}"; do
  start=$SECONDS cases=0 outcome="no failure"
  while ((SECONDS - start < each)); do
    if ! PROPTEST_CASES=$batch RUST_TEST_THREADS=1 run -- --exact "$p" >"$log" 2>&1; then
      outcome="FAILED: $(grep -m1 -o 'minimal failing input.*' "$log" || tail -1 "$log")"
      break
    fi
    cases=$((cases + batch))
  done
  total=$((total + cases))
  printf '%-52s %12d %8d  %s\n' "$p" "$cases" $((SECONDS - start)) "$outcome"
done
echo "total: $total cases over ${#props[@]} properties"
