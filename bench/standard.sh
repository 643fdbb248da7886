#!/usr/bin/env bash
# The standard workload: NODES node processes on 127.0.0.1 (replication factor 20), then with
# `dht bench`: OPS stores and OPS fetches of 100-byte values one at a time, then 16 in flight, then
# 1 KiB values and OPS/4 64 KiB values with 16 in flight. Records every node's resident memory and CPU time
# before and after, and prints one summary table. Leaves no process behind.
#   bench/standard.sh            (20 nodes, 1000 operations per run)
#   bench/standard.sh --smoke    (5 nodes, 20 operations: that it runs, not how fast)
#   DHT_BIN=/path/to/dht bench/standard.sh   (another build, e.g. an older commit's, for a
#                                            side-by-side run; nothing is built then)
#   DHT_BENCH_BIN=/path/to/dht               (the `dht bench` client, if not DHT_BIN)
set -euo pipefail
cd "$(dirname "$0")/.."
nodes=${NODES:-20}
ops=${OPS:-1000}
if [[ ${1:-} == --smoke ]]; then nodes=5; ops=20; fi

source bench/lib.sh
bin=$(bench_binary)
# The bench's client (DHT_BENCH_BIN, by default the same binary): an old build's nodes can be
# measured with a new client, whose report times each phase for the CPU column.
client=${DHT_BENCH_BIN:-$bin}
work=$(mktemp -d)
pids=()
cleanup() {
  ((${#pids[@]})) && kill "${pids[@]}" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

base=$(free_base "$nodes")
for ((i = 0; i < nodes; i++)); do
  args=(-l "/ip4/127.0.0.1/tcp/$((base + i))" -v 1 --replication-factor 20)
  ((i > 0)) && args+=(-c "/ip4/127.0.0.1/tcp/$base")
  "$bin" "${args[@]}" >"$work/node$i.out" 2>"$work/node$i.err" &
  pids+=($!)
  ((i == 0)) && wait_listening "$work/node0.out" "${pids[0]}"
done
# Ready when every node routes every other.
wait_routed "$bin" "$base" "$nodes" 60

# Resident memory (KiB: all, private, proportional) and CPU time (s) of every node, as
# "rss anon pss cpu" lines. PSS charges each of the 20 processes a twentieth of the binary's
# shared code pages, which RSS counts whole in every one.
sample() {
  local tick; tick=$(getconf CLK_TCK)
  for p in "${pids[@]}"; do
    awk '/^VmRSS|^RssAnon/ {printf "%s ", $2}' "/proc/$p/status"
    awk '/^Pss:/ {printf "%s ", $2}' "/proc/$p/smaps_rollup"
    awk -v t="$tick" '{printf "%.2f\n", ($14 + $15) / t}' "/proc/$p/stat"
  done
}
sample >"$work/before"

# The nodes' CPU time, summed, every 20 ms with the wall-clock time: each phase's share comes from
# the samples at its start and end (the bench reports both), so CPU per operation is per phase.
python3 - "$work/cpu.log" "${pids[@]}" <<'PY' &
import os, sys, time
out, pids = sys.argv[1], sys.argv[2:]
tick = os.sysconf("SC_CLK_TCK")
with open(out, "w") as f:
    while True:
        total = 0
        for p in pids:
            try:
                fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
            except OSError:
                pass
        f.write(f"{time.time():.4f} {total / tick:.3f}\n")
        f.flush()
        time.sleep(0.02)
PY
sampler=$!

connect="/ip4/127.0.0.1/tcp/$((base + 1))"
# The 64 KiB run stores a quarter as many (16 MiB at the default 1,000): one peer's share of a node's
# store is an eighth of its 256 MiB, and the bench's one client stores every value.
runs=("100 1 $ops" "100 16 $ops" "1024 16 $ops" "65536 16 $((ops / 4))")
for run in "${runs[@]}"; do
  read -r size conc n <<<"$run"
  # A run with failed operations still reports (its errors are counted in the table).
  "$client" -v 1 bench -c "$connect" --ops "$n" --concurrency "$conc" --size "$size" --json >>"$work/results.jsonl" || true
done
sample >"$work/after"
kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true

python3 - "$work" "$nodes" <<'PY'
import json, os, platform, statistics, sys, datetime
work, nodes = sys.argv[1], int(sys.argv[2])
rows = [json.loads(l) for l in open(os.path.join(work, "results.jsonl"))]
def load(name):
    return [tuple(map(float, l.split())) for l in open(os.path.join(work, name)) if l.strip()]
before, after = load("before"), load("after")
samples = load("cpu.log")
def cpu_at(t):
    # The nodes' CPU seconds at time t, interpolated between the samples around it.
    prev = samples[0]
    for s in samples:
        if s[0] >= t:
            if s[0] == prev[0]:
                return s[1]
            return prev[1] + (s[1] - prev[1]) * (t - prev[0]) / (s[0] - prev[0])
        prev = s
    return prev[1]
def cpu_per_op(p):
    if not samples or not p["ops"] or "started_unix" not in p:
        return float("nan")
    return (cpu_at(p["ended_unix"]) - cpu_at(p["started_unix"])) * 1e3 / p["ops"]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
print(f"standard workload: {nodes} nodes on 127.0.0.1, replication factor 20, {os.cpu_count()} cores ({cpu}), {datetime.date.today()}")
print(f"{'values':>8} {'in flight':>9} {'op':>5} {'ops':>6} {'errors':>6} {'ops/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} {'CPU ms/op':>9}  stored on")
for r in rows:
    counts = ", ".join(f"{k}x{v}" for k, v in sorted(r["stored_count"].items(), key=lambda kv: int(kv[0])))
    for op in ("store", "fetch"):
        p = r[op]
        print(f"{r['value_size']:>8} {r['concurrency']:>9} {op:>5} {p['ops']:>6} {p['errors']:>6} {p['throughput']:>9.1f} "
              f"{p['p50_ms']:>8.3f} {p['p90_ms']:>8.3f} {p['p99_ms']:>8.3f} {p['max_ms']:>8.3f} {cpu_per_op(p):>9.3f}  {counts if op == 'store' else ''}")
def mem(rows, col):
    v = [r[col] / 1024 for r in rows]
    return f"{statistics.median(v):.1f} median ({min(v):.1f}-{max(v):.1f})"
cpu_used = [a[3] - b[3] for a, b in zip(after, before)]
print(f"resident memory per node, MiB: ready {mem(before, 0)}, after the runs {mem(after, 0)}")
print(f"  of which private (not the binary's shared pages): ready {mem(before, 1)}, after the runs {mem(after, 1)}")
print(f"  proportional (PSS: shared pages split among the processes): ready {mem(before, 2)}, after the runs {mem(after, 2)}")
print("(CPU ms/op: the CPU time of all the nodes, the bench's own client nodes aside, per operation)")
print(f"CPU time per node during the runs, s: {statistics.median(cpu_used):.2f} median, {sum(cpu_used):.2f} in all")
errors = sum(r[op]["errors"] for r in rows for op in ("store", "fetch"))
print(f"operations that failed: {errors}")
sys.exit(1 if errors else 0)
PY
