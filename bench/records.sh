#!/usr/bin/env bash
# Memory for N records on one node (default 100,000 values of 100 bytes), kept in memory and with a
# data dir (--data-dir, redb): the values are stored through the node's own console, then the node's
# resident memory is read; with a data dir the node is restarted and the reload timed. Prints one
# table; leaves no process or file behind.
#   bench/records.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-100000}
cargo build --release --locked --bin dht 2>&1 | grep -v '^ *\(Compiling\|Finished\)' || true
bin="$PWD/target/release/dht"
work=$(mktemp -d)
pid=
cleanup() { [[ -n $pid ]] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

mib() { awk -v k="$(awk "/^$2:/ {print \$2}" "/proc/$1/status")" 'BEGIN {printf "%.1f", k / 1024}'; }
# 100-byte values: "value NNNNNNNNN " and padding.
values() { python3 -c '
import sys
for i in range(int(sys.argv[1])):
    v = f"value {i:09d} "
    sys.stdout.write("s " + v + "x" * (100 - len(v)) + "\n")
print("q")' "$n"; }

# run LABEL [ARGS...]: store N values through the console of a node started with ARGS.
run() {
  local label=$1 start stored
  shift
  values "$n" >"$work/script"
  mkfifo "$work/in"
  "$bin" -l /ip4/127.0.0.1/tcp/0 -i -v 1 --max-records $((n * 2)) "$@" <"$work/in" >"$work/out" 2>/dev/null &
  pid=$!
  exec 3>"$work/in"
  start=$(date +%s.%N)
  head -n "$n" "$work/script" >&3
  until [[ $(wc -l <"$work/out") -ge $n ]]; do sleep 0.2; done
  stored=$(python3 -c "print(f'{$n / ($(date +%s.%N) - $start):.0f}')")
  printf '%-26s %10d %12s %12s %12s\n' "$label" "$n" "$(mib "$pid" VmRSS)" "$(mib "$pid" RssAnon)" "$stored"
  echo q >&3
  exec 3>&-
  wait "$pid" || true
  pid=
  rm -f "$work/in"
}

printf '%-26s %10s %12s %12s %12s\n' node records "RSS MiB" "private MiB" "stores/s"
run "in memory"
run "with --data-dir" --data-dir "$work/data"
# The same data dir again: how long the reload takes, and the memory after it.
start=$(date +%s.%N)
"$bin" -l /ip4/127.0.0.1/tcp/0 -v 1 --max-records $((n * 2)) --data-dir "$work/data" >"$work/out" 2>/dev/null &
pid=$!
until grep -q '^data dir:' "$work/out" 2>/dev/null; do sleep 0.05; done
loaded=$(python3 -c "print(f'{$(date +%s.%N) - $start:.2f} s')")
printf '%-26s %10s %12s %12s %12s\n' "restarted from data dir" "$(grep -o '([0-9]* records)' "$work/out" | tr -dc 0-9)" "$(mib "$pid" VmRSS)" "$(mib "$pid" RssAnon)" "load $loaded"
echo "database file: $(du -h "$work/data/records.redb" | cut -f1) for $n records"
