#!/usr/bin/env bash
# A lookup flood against one node (issue #15, point 12): NODES node processes on 127.0.0.1
# (k = 5), HONEST values stored, then BEFORE honest one-shot `dht get` through node 0 (and as many
# through node 1, for comparison) on the quiet network; then, for each kind in KINDS, FLOODERS
# concurrent `dht flood --kind <kind>` processes (each a fresh identity: FIND_NODE or GET_VALUE for
# random keys, as fast as the node takes them) against node 0 for SECONDS_, while an honest
# `dht get` goes through node 0 and one through node 1 every second. Prints the flooders' counts,
# the honest fetches' success and latency before and during (a one-shot: process start and join
# included), the CPU node 0 (and node 1, and the flooders) used over the flood, and node 0's
# requests_throttled when `dht info --json` reports it.
#   bench/readflood.sh                          (5 nodes, find then get, 4 flooders, 30 s each)
#   KINDS=find SECONDS_=10 bench/readflood.sh   (one kind, shorter)
#   DHT_BIN=/path/to/dht bench/readflood.sh     (another build; nothing is built then)
set -euo pipefail
cd "$(dirname "$0")/.."
nodes=${NODES:-5}
seconds=${SECONDS_:-30}
honest=${HONEST:-20}
before=${BEFORE:-15}
flooders=${FLOODERS:-4}
kinds=${KINDS:-find get}
((nodes >= 3)) || { echo "NODES must be at least 3" >&2; exit 1; }
source bench/lib.sh
bin=$(bench_binary)
work=$(mktemp -d)
pids=()
floods=()
cleanup() {
  ((${#floods[@]})) && kill "${floods[@]}" 2>/dev/null
  ((${#pids[@]})) && kill "${pids[@]}" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
# utime + stime of a process, in clock ticks (0 once it is gone).
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
now() { date +%s.%N; }
# One honest one-shot fetch of a random stored key through $1; appends "<phase> <via> ok|failed <s>".
fetch() {
  local via=$1 phase=$2 name=$3 key t0 status=ok
  key=$(shuf -n 1 "$work/keys")
  t0=$(now)
  timeout 30 "$bin" -v 0 get -c "$via" "$key" >/dev/null 2>>"$work/get.err" || status=failed
  echo "$phase $name $status $(echo "$(now) - $t0" | bc)" >>"$work/fetches"
}
base=$(free_base "$nodes")
for ((i = 0; i < nodes; i++)); do
  args=(-l "/ip4/127.0.0.1/tcp/$((base + i))" -v 1 --replication-factor 5)
  ((i > 0)) && args+=(-c "/ip4/127.0.0.1/tcp/$base")
  "$bin" "${args[@]}" >"$work/node$i.out" 2>"$work/node$i.err" &
  pids+=($!)
  ((i == 0)) && until grep -q "listening on" "$work/node0.out" 2>/dev/null; do sleep 0.05; done
done
via0="/ip4/127.0.0.1/tcp/$base"
via1="/ip4/127.0.0.1/tcp/$((base + 1))"
target=$("$bin" -v 0 info "$via0" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["listen_addrs"][0])')
until [[ $("$bin" -v 0 info "$via0" --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["routing_table"]))') -ge $((nodes - 1)) ]]; do sleep 0.2; done
for ((i = 0; i < honest; i++)); do
  "$bin" -v 0 put -c "/ip4/127.0.0.1/tcp/$((base + 2))" "honest $i $RANDOM" | awk '{print $1}' >>"$work/keys" || true
done
[[ -s $work/keys ]] || { echo "no honest value could be stored" >&2; exit 1; }
for ((i = 0; i < before; i++)); do
  fetch "$via0" before node0
  fetch "$via1" before node1
done
hz=$(getconf CLK_TCK)
: >"$work/cpu"
for kind in $kinds; do
  floods=()
  for ((f = 0; f < flooders; f++)); do
    timeout $((seconds + 60)) "$bin" -v 0 flood "$target" --kind "$kind" --duration "${seconds}s" \
      >"$work/flood-$kind-$f.json" 2>"$work/flood-$kind-$f.err" &
    floods+=($!)
  done
  # Each flooder's CPU: the timeout wrapper's child, read while it runs (it is gone at the end).
  declare -A fticks=()
  c0=$(ticks "${pids[0]}"); c1=$(ticks "${pids[1]}"); t0=$(now)
  while kill -0 "${floods[@]}" 2>/dev/null; do
    fetch "$via0" "$kind" node0
    fetch "$via1" "$kind" node1
    for f in "${floods[@]}"; do
      child=$(pgrep -P "$f" 2>/dev/null | head -1) || true
      [[ -n $child ]] && t=$(ticks "$child") && ((t > 0)) && fticks[$f]=$t
    done
    sleep 1
  done
  c0=$(($(ticks "${pids[0]}") - c0)); c1=$(($(ticks "${pids[1]}") - c1)); wall=$(echo "$(now) - $t0" | bc)
  wait "${floods[@]}" || true
  floods=()
  fsum=0; for t in "${fticks[@]}"; do fsum=$((fsum + t)); done
  unset fticks
  echo "$kind $c0 $c1 $fsum $wall $hz" >>"$work/cpu"
  sleep 5 # the flooders' buckets refill and their connections close before the next kind
done
info=$("$bin" -v 0 info "$via0" --json)
python3 - "$work" "$info" "$flooders" "$(nproc)" <<'PY'
import glob, json, os, statistics, sys
work, info, flooders, cores = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
fetches = [l.split() for l in open(os.path.join(work, "fetches"))]
def line(phase, via):
    rows = [(s, float(t)) for p, v, s, t in fetches if p == phase and v == via]
    ok = sorted(t for s, t in rows if s == "ok")
    if not ok:
        return f"{len(ok)} of {len(rows)} succeeded"
    return (f"{len(ok)} of {len(rows)} succeeded, median {statistics.median(ok) * 1e3:.0f} ms, "
            f"slowest {ok[-1] * 1e3:.0f} ms")
print(f"honest one-shot fetches before (process start and join included): through node 0 "
      f"{line('before', 'node0')}; through node 1 {line('before', 'node1')}")
for row in open(os.path.join(work, "cpu")):
    kind, c0, c1, fsum, wall, hz = row.split()
    c0, c1, fsum, wall, hz = int(c0), int(c1), int(fsum), float(wall), int(hz)
    reports = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(work, f"flood-{kind}-*.json")))]
    sent = sum(r["sent"] for r in reports)
    answered = sum(r["answered"] for r in reports)
    refused = sum(r["refused"] for r in reports)
    secs = max((r["seconds"] for r in reports), default=0) or 1
    each = ", ".join(f"{r['answered'] / r['seconds']:.0f}" for r in reports)
    request = {"find": "FIND_NODE", "get": "GET_VALUE", "put": "PUT_VALUE"}[kind]
    print(f"--flood --kind {kind}: {len(reports)} of {flooders} flooders reported, {secs:.0f} s: "
          f"{sent} {request} sent, {answered} answered ({answered / secs:.0f}/s; each {each}/s), "
          f"{refused} refused (reset: throttled)")
    print(f"  honest fetches during: through node 0 {line(kind, 'node0')}; "
          f"through node 1 {line(kind, 'node1')}")
    print(f"  CPU over {wall:.0f} s (% of one core; {cores} cores): node 0 {c0 / hz / wall * 100:.0f}%, "
          f"node 1 {c1 / hz / wall * 100:.0f}%, the {flooders} flooders {fsum / hz / wall * 100:.0f}% together")
throttled = info.get("requests_throttled", info.get("counters", {}).get("requests_throttled"))
print("node 0 requests_throttled: " + (str(throttled) if throttled is not None else
      "not reported by `dht info --json` (the flooders' refused counts stand for it)"))
errors = sorted({l.strip() for l in open(os.path.join(work, "get.err"))} if os.path.exists(os.path.join(work, "get.err")) else set())
if errors:
    print("honest fetch errors: " + " | ".join(errors[:5]))
PY
