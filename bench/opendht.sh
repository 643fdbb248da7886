#!/usr/bin/env bash
# Side by side with OpenDHT on this machine, one workload for both: NODES node processes on
# 127.0.0.1, then each implementation's own client stores OPS 100-byte values one at a time and a
# second, fresh client node fetches them; then again with 16 in flight (a fresh network per run).
# Prints one table: ops/s, p50, CPU per operation of all node processes together and of the client
# (utime + stime from /proc/PID/stat, sampled every 10 ms and read at the phase boundaries), and
# how many nodes hold each value. Leaves no process behind. Not run by CI.
#   bench/opendht.sh                         (20 nodes each, 1000 operations per phase)
#   OPS=100 bench/opendht.sh                 (shorter)
#   DHT_BIN=/path/to/dht bench/opendht.sh    (another build of ours; nothing is built then)
#
# Ours: `dht -l /ip4/127.0.0.1/tcp/P -v 1 --replication-factor 20 [-c FIRST]` (as
# bench/standard.sh), client `dht bench -c ADDR --ops N --concurrency C --size 100 --json` (one
# client node stores, another fetches; every store is checked by fetching it back from each node
# that acknowledged).
# OpenDHT (Debian's dhtnode and python3-opendht, installed here when missing):
# `dhtnode -U -n NETID -p P [-b 127.0.0.1:FIRST]` (UDP; no identity, so no signing or encryption;
# -U lifts its per-IP rate limit, which 20 nodes on one address would hit; dhtnode 2.4 has no bind
# address flag, so it listens on 0.0.0.0 and [::], but every node is reached through 127.0.0.1),
# client bench/drive.py odclient: a DhtRunner joined to the network puts N values, waiting each
# put's done callback (OpenDHT announces a value to the 8 nodes closest to its key and calls back
# when they have acknowledged), then a fresh DhtRunner gets each (done at the first right value).
# Copies are counted with each dhtnode's `ld` (its storage) after the run; the writing DhtRunner
# also keeps its own copy, not counted.
set -euo pipefail
cd "$(dirname "$0")/.."
nodes=${NODES:-20}
ops=${OPS:-1000}
PY=/usr/bin/python3 # python3-opendht is built for Debian's interpreter

if ! command -v dhtnode >/dev/null || ! "$PY" -c 'import opendht' 2>/dev/null; then
  echo "installing dhtnode and python3-opendht" >&2
  sudo=""
  ((EUID == 0)) || sudo=sudo
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dhtnode python3-opendht >&2
fi

source bench/lib.sh
bin=$(bench_binary)
work=$(mktemp -d)
pids=()
drivers=()
cleanup() {
  local p
  # The drivers stop their own children (and the kernel kills those if a driver dies: PDEATHSIG).
  for p in "${drivers[@]}" "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for _ in $(seq 50); do
    local alive=0
    for p in "${drivers[@]}" "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.2
  done
  for p in "${drivers[@]}" "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# UDP ports too: OpenDHT listens on UDP (and on TCP nothing), so free_base's TCP probe is not enough.
udp_free() {
  local base=$1 n=$2 i
  for ((i = 0; i < n; i++)); do
    grep -qi ":$(printf %04X $((base + i))) " /proc/net/udp /proc/net/udp6 2>/dev/null && return 1
  done
  return 0
}
free_base_udp() {
  local n=$1 base
  for _ in $(seq 20); do
    base=$(free_base "$n")
    udp_free "$base" "$n" && { echo "$base"; return; }
  done
  echo "no free port range" >&2
  exit 1
}

# --- ours -----------------------------------------------------------------------------------------
# A fresh network per run, as OpenDHT gets (see drive.py's cmd_opendht for why it needs one).
start_ours() {
  base=$(free_base "$nodes")
  local i args deadline
  for ((i = 0; i < nodes; i++)); do
    args=(-l "/ip4/127.0.0.1/tcp/$((base + i))" -v 1 --replication-factor 20)
    ((i > 0)) && args+=(-c "/ip4/127.0.0.1/tcp/$base")
    setpriv --pdeathsig KILL "$bin" "${args[@]}" >"$work/node$i.out" 2>"$work/node$i.err" &
    pids+=($!)
    ((i == 0)) && wait_listening "$work/node0.out" "${pids[0]}"
  done
  # Ready when every node routes every other.
  wait_routed "$bin" "$base" "$nodes" 60
}
stop_ours() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  pids=()
}
for conc in 1 16; do
  start_ours
  setpriv --pdeathsig KILL "$PY" bench/drive.py ours --bin "$bin" --connect "/ip4/127.0.0.1/tcp/$((base + 1))" --ops "$ops" \
    --concurrency "$conc" --size 100 --node-pids "$(IFS=,; echo "${pids[*]}")" >>"$work/rows.jsonl" &
  drivers+=($!)
  wait "${drivers[-1]}"
  stop_ours
done

# --- OpenDHT --------------------------------------------------------------------------------------
# The nodes take base..base+nodes-1, the client's two runners the next two ports.
obase=$(free_base_udp $((nodes + 2)))
setpriv --pdeathsig KILL "$PY" bench/drive.py opendht --nodes "$nodes" --base "$obase" --ops "$ops" --runs 1,16 --size 100 \
  --workdir "$work" >>"$work/rows.jsonl" &
drivers+=($!)
wait "${drivers[-1]}"

"$PY" bench/drive.py table "$work/rows.jsonl" --nodes "$nodes" --ops "$ops" --size 100
