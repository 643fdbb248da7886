#!/usr/bin/env bash
# Where the CPU of a verified k = 20 store goes. NODES node processes on 127.0.0.1 (replication
# factor 20, as bench/standard.sh), then `dht bench --ops OPS` (one value at a time); the storing
# side is the bench's own process (its writer node stores, its reader node idles until the fetches),
# the target is node TARGET (one of the 20 every store goes to). callgrind stores OPS values (200),
# the other modes FAST_OPS (1000: perf needs the samples). Each mode starts its own network:
#   callgrind  the bench process and the target under valgrind --tool=callgrind; counters zeroed
#              when the store bar first passes SKIP stores and dumped when it passes OPS - SKIP (10)
#              (same hook both times, so the hooks' latency shifts both ends alike)
#   strace     strace -c -f attached to the target and to the bench process over the same window
#   plain      no tool: context switches (every thread's /proc/PID/task/TID/status) and CPU time
#              of the bench process and of every node at both ends of the window
#   perf       perf record (cpu-clock, user and kernel) on the target and on the bench process
#   all        the four, one after another (the default)
# then bench/profile_report.py OUT writes OUT/report.md. Nothing else runs meanwhile (2 cores).
#   DHT_BIN=/tmp/old/dht OUT=/tmp/profile-old bench/profile.sh
#   DHT_BIN=target/release/dht OUT=/tmp/profile-new OPS=200 bench/profile.sh callgrind
set -euo pipefail
cd "$(dirname "$0")/.."
nodes=${NODES:-20}
cg_ops=${OPS:-200}
fast_ops=${FAST_OPS:-1000}
skip=${SKIP:-10}
target=${TARGET:-7}
out=${OUT:-/tmp/profile}
PY=/usr/bin/python3
modes=("${@:-all}")
[[ ${modes[0]} == all ]] && modes=(callgrind strace plain perf)

source bench/lib.sh
bin=$(bench_binary)
bin=$(readlink -f "$bin")
mkdir -p "$out"
work=$(mktemp -d)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  pids=()
}
trap 'cleanup; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

# start_network WRAPPER...: the nodes, node $target run under WRAPPER (may be empty).
start_network() {
  base=$(free_base "$nodes")
  local i args
  for ((i = 0; i < nodes; i++)); do
    args=(-l "/ip4/127.0.0.1/tcp/$((base + i))" -v 1 --replication-factor 20)
    ((i > 0)) && args+=(-c "/ip4/127.0.0.1/tcp/$base")
    if ((i == target)); then
      setpriv --pdeathsig KILL "$@" "$bin" "${args[@]}" >"$work/node$i.out" 2>"$work/node$i.err" &
    else
      setpriv --pdeathsig KILL "$bin" "${args[@]}" >"$work/node$i.out" 2>"$work/node$i.err" &
    fi
    pids+=($!)
    ((i == 0)) && wait_listening "$work/node0.out" "${pids[0]}"
  done
  # A node under valgrind joins slowly: a generous deadline.
  wait_routed "$bin" "$base" "$nodes" 300
  target_pid=${pids[$target]}
  node_pids=$(IFS=,; echo "${pids[*]}")
}

# window MODE OPS AT_START AT_END [WRAPPER...]: one `dht bench` with hooks at the window's two ends.
window() {
  local mode=$1 ops=$2 at_start=$3 at_end=$4
  shift 4
  "$PY" bench/drive.py window --ops "$ops" --start "$skip" --end $((ops - skip)) \
    --at-start "$at_start" --at-end "$at_end" --watch "$node_pids" \
    --stdout "$out/$mode.bench.json" --tty-log "$out/$mode.tty.log" --deadline 3600 -- \
    "$@" "$bin" -v 1 bench -c "/ip4/127.0.0.1/tcp/$((base + 1))" --ops "$ops" --concurrency 1 \
    --size 100 --json >"$out/$mode.window.json"
  echo "{\"mode\": \"$mode\", \"target_index\": $target, \"target_pid\": $target_pid, \"nodes\": $nodes, \"ops\": $ops, \"bin\": \"$bin\"}" >"$out/$mode.meta.json"
}

for mode in "${modes[@]}"; do
  echo "== $mode" >&2
  case $mode in
  callgrind)
    rm -f "$out"/callgrind.*
    cg=(valgrind --tool=callgrind --dump-instr=no --dump-line=yes --collect-systime=no)
    start_network "${cg[@]}" --callgrind-out-file="$out/callgrind.target.%p" --log-file="$out/valgrind.target.log"
    both='for p in $BENCH_PID '"$target_pid"'; do callgrind_control'
    window callgrind "$cg_ops" \
      "$both -z \$p >/dev/null & done; wait" \
      "$both -d window \$p >/dev/null & done; wait" \
      "${cg[@]}" --callgrind-out-file="$out/callgrind.bench.%p" --log-file="$out/valgrind.bench.log"
    cleanup
    # The window's dumps (part 1), as callgrind_annotate shows them.
    for f in "$out"/callgrind.bench.*.1 "$out"/callgrind.target.*.1; do
      callgrind_annotate --inclusive=yes "$f" >"$f.annotate-inclusive.txt" 2>/dev/null || true
      callgrind_annotate --inclusive=no "$f" >"$f.annotate-self.txt" 2>/dev/null || true
    done
    ;;
  strace)
    start_network
    window strace "$fast_ops" \
      "strace -c -f -q -o $out/strace.target.txt -p $target_pid & echo \$! >$work/st1
       strace -c -f -q -o $out/strace.bench.txt -p \$BENCH_PID & echo \$! >$work/st2; sleep 0.3" \
      "kill -INT \$(cat $work/st1) \$(cat $work/st2); sleep 0.3"
    # strace writes its table when it detaches; give it the time.
    for _ in $(seq 50); do [[ -s $out/strace.target.txt && -s $out/strace.bench.txt ]] && break; sleep 0.1; done
    cleanup
    ;;
  plain)
    start_network
    window plain "$fast_ops" "" ""
    cleanup
    ;;
  perf)
    if ! perf record -o /dev/null -e cpu-clock -- true >/dev/null 2>&1; then
      echo "perf does not work here; skipped" >&2
      continue
    fi
    start_network
    window perf "$fast_ops" \
      "perf record -q -e cpu-clock -F 4000 -o $out/perf.target.data -p $target_pid 2>/dev/null & echo \$! >$work/pf1
       perf record -q -e cpu-clock -F 4000 -o $out/perf.bench.data -p \$BENCH_PID 2>/dev/null & echo \$! >$work/pf2; sleep 0.3" \
      "kill -INT \$(cat $work/pf1) \$(cat $work/pf2); sleep 0.5"
    for _ in $(seq 100); do kill -0 "$(cat "$work/pf1")" 2>/dev/null || kill -0 "$(cat "$work/pf2")" 2>/dev/null || break; sleep 0.1; done
    cleanup
    for side in bench target; do
      perf report -i "$out/perf.$side.data" --stdio --sort dso,sym >"$out/perf.$side.report.txt" 2>/dev/null || true
    done
    ;;
  *)
    echo "unknown mode $mode" >&2
    exit 2
    ;;
  esac
done

"$PY" bench/profile_report.py "$out" | tee "$out/report.md"
