#!/usr/bin/env bash
# Interop test: starts three `dht` nodes on 127.0.0.1 and runs tests/interop/interop.py, which uses
# py-libp2p (pinned in requirements.txt, installed into its own virtual environment).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/../.."

venv=target/interop-venv
if [[ ! -x $venv/bin/python ]] || ! cmp -s "$here/requirements.txt" "$venv/requirements.txt"; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$venv/requirements.txt"
fi

cargo build --release --locked --bin dht
bin="$PWD/target/release/dht"
out=$(mktemp)
cleanup() { [[ -n ${pid:-} ]] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -f "$out"; }
trap cleanup EXIT

# Three nodes on an OS-chosen port range: retry if the ports are taken.
for attempt in 1 2 3 4 5; do
  base=$((30000 + RANDOM % 20000))
  "$bin" -n 3 -l "/ip4/127.0.0.1/tcp/$base" >"$out" 2>/dev/null &
  pid=$!
  for _ in $(seq 100); do
    grep -q ready "$out" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  grep -q ready "$out" && break
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; pid=
done
[[ -n ${pid:-} ]] || { echo "interop: could not start the dht nodes"; exit 1; }
mapfile -t addrs < <(grep -oE '/ip4/[^ ]+/p2p/[A-Za-z0-9]+' "$out" | head -n 3)
"$venv/bin/python" "$here/interop.py" "$bin" "${addrs[@]}"
