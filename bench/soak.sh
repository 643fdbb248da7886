#!/usr/bin/env bash
# Soak: NODES node processes on 127.0.0.1 under steady load for DURATION: `dht bench` stores OPS
# values once, then keeps fetching them in a cycle, so the data stays the same while the operations
# grow. Every node's memory is sampled each minute; a node whose memory grew with the operations
# shows it in the table. Leaves no process behind.
#   bench/soak.sh [DURATION]    (default 30m; e.g. 5m)
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-30m}
nodes=${NODES:-5}
ops=${OPS:-1000}
cargo build --release --locked --bin dht 2>&1 | grep -v '^ *\(Compiling\|Finished\)' || true
bin="$PWD/target/release/dht"
work=$(mktemp -d)
pids=()
cleanup() { ((${#pids[@]})) && kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
base=$((20000 + RANDOM % 30000))
for ((i = 0; i < nodes; i++)); do
  args=(-l "/ip4/127.0.0.1/tcp/$((base + i))" -v 1 --replication-factor "$nodes")
  ((i > 0)) && args+=(-c "/ip4/127.0.0.1/tcp/$base")
  "$bin" "${args[@]}" >/dev/null 2>&1 &
  pids+=($!)
  sleep 0.2
done
"$bin" -v 2 bench -c "/ip4/127.0.0.1/tcp/$((base + 1))" --ops "$ops" --concurrency 8 --duration "$duration" --json >"$work/result.json" 2>"$work/bench.log" &
bench=$!
echo "minute  private MiB per node: median max"
minute=0
while kill -0 "$bench" 2>/dev/null; do
  mem=$(for p in "${pids[@]}"; do awk '/^RssAnon/ {print $2}' "/proc/$p/status"; done | sort -n | awk '{a[NR]=$1} END {printf "%.1f %.1f", a[int((NR+1)/2)]/1024, a[NR]/1024}')
  echo "$minute  $mem"
  minute=$((minute + 1))
  for _ in $(seq 60); do kill -0 "$bench" 2>/dev/null || break; sleep 1; done
done
status=0
wait "$bench" || status=$?
if ((status != 0)); then
  echo "the bench exited $status; its last warnings:"
  tail -n 20 "$work/bench.log"
fi
python3 - "$work/result.json" <<'PY'
import json, sys
f = json.load(open(sys.argv[1]))["fetch"]
print(f"fetches: {f['ops']} ({f['errors']} errors), {f['throughput']:.0f}/s, p50 {f['p50_ms']:.2f} ms, p99 {f['p99_ms']:.2f} ms")
PY
exit "$status"
