#!/usr/bin/env bash
# A flood against one node: NODES node processes on 127.0.0.1 (k = 5), HONEST values stored
# before, then `dht flood` (one fresh identity, PUT_VALUE with distinct keys and 64 KiB values, as
# fast as the node takes them) against node 0 for SECONDS while an honest `dht put` goes through
# node 0 every second; then every honest value is fetched from node 2. Prints the flood's counts,
# the honest stores' outcome and latency, what node 0 holds and its peak resident memory.
#   bench/flood.sh                          (5 nodes, 60 s)
#   SECONDS_=10 bench/flood.sh              (shorter)
#   DHT_BIN=/path/to/dht bench/flood.sh     (another build; nothing is built then)
set -euo pipefail
cd "$(dirname "$0")/.."
nodes=${NODES:-5}
seconds=${SECONDS_:-60}
honest=${HONEST:-20}
source bench/lib.sh
bin=$(bench_binary)
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
  args=(-l "/ip4/127.0.0.1/tcp/$((base + i))" -v 1 --replication-factor 5)
  ((i > 0)) && args+=(-c "/ip4/127.0.0.1/tcp/$base")
  "$bin" "${args[@]}" >"$work/node$i.out" 2>"$work/node$i.err" &
  pids+=($!)
  ((i == 0)) && until grep -q "listening on" "$work/node0.out" 2>/dev/null; do sleep 0.05; done
done
target=$("$bin" -v 0 info "/ip4/127.0.0.1/tcp/$base" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["listen_addrs"][0])')
until [[ $("$bin" -v 0 info "/ip4/127.0.0.1/tcp/$base" --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["routing_table"]))') -ge $((nodes - 1)) ]]; do sleep 0.2; done
via0="/ip4/127.0.0.1/tcp/$base"
for ((i = 0; i < honest; i++)); do
  "$bin" -v 0 put -c "/ip4/127.0.0.1/tcp/$((base + 1))" "honest before $i $RANDOM" >>"$work/keys" || echo "FAILED before $i" >>"$work/keys"
done
"$bin" -v 0 flood "$target" --duration "${seconds}s" >"$work/flood.json" 2>"$work/flood.err" &
flood=$!
peak=0
start=$(date +%s.%N)
i=0
while kill -0 "$flood" 2>/dev/null; do
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/${pids[0]}/status")
  ((rss > peak)) && peak=$rss
  t0=$(date +%s.%N)
  if out=$("$bin" -v 0 put -c "$via0" "honest during $i $RANDOM" 2>>"$work/put.err"); then
    echo "$out" >>"$work/keys"
    echo "ok $(echo "$(date +%s.%N) - $t0" | bc)" >>"$work/during"
  else
    echo "failed $(echo "$(date +%s.%N) - $t0" | bc)" >>"$work/during"
  fi
  i=$((i + 1))
  sleep 1
done
wait "$flood" || true
info=$("$bin" -v 0 info "$via0" --json)
found=0; total=0
while read -r key count; do
  [[ $key == FAILED ]] && continue
  total=$((total + 1))
  "$bin" -v 0 get -c "/ip4/127.0.0.1/tcp/$((base + 2))" "$key" >/dev/null 2>&1 && found=$((found + 1))
done <"$work/keys"
python3 - "$work" "$peak" "$found" "$total" "$info" <<'PY'
import json, os, statistics, sys
work, peak, found, total, info = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), json.loads(sys.argv[5])
flood = json.load(open(os.path.join(work, "flood.json")))
during = [l.split() for l in open(os.path.join(work, "during"))]
ok = [float(t) for s, t in during if s == "ok"]
print(f"flood: {flood['seconds']:.0f} s, {flood['sent']} PUT_VALUE sent, {flood['acknowledged']} acknowledged "
      f"({flood['bytes_acknowledged'] / 2**20:.1f} MiB), {flood['refused']} refused")
print(f"honest stores through the flooded node during the flood: {len(ok)} of {len(during)} succeeded, "
      f"median {statistics.median(ok) * 1e3 if ok else 0:.0f} ms, slowest {max(ok) * 1e3 if ok else 0:.0f} ms (a one-shot: process start and join included)")
print(f"honest values fetchable afterwards (from another node): {found} of {total}")
print(f"flooded node: {info['stored_keys']} records, {info['stored_bytes'] / 2**20:.1f} MiB held, peak resident {peak / 1024:.0f} MiB")
PY
