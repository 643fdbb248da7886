#!/usr/bin/env bash
# Interop tests against independent libp2p implementations:
#  - py-libp2p (pinned in requirements.txt, installed into its own virtual environment) against
#    three `dht` nodes on 127.0.0.1: tests/interop/interop.py;
#  - go-libp2p-kad-dht 0.25.1, as the go-libp2p-daemon `p2pd` shipped in the hivemind wheel, against
#    our nodes in Amino mode: tests/interop/go_interop.py (it starts its own nodes and daemons).
# DHT_BIN=path tests that binary instead of a release build of this checkout (nothing is built).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/../.."
source bench/lib.sh # free_base
out=$(mktemp)
cleanup() {
  if [[ -n ${pid:-} ]]; then kill "$pid" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  rm -f "$out"
  rm -rf target/interop-go.tmp
}
trap cleanup EXIT

venv=target/interop-venv
if [[ ! -x $venv/bin/python ]] || ! cmp -s "$here/requirements.txt" "$venv/requirements.txt"; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$venv/requirements.txt"
fi

# p2pd and its control protocol, unpacked once from the hivemind wheel on PyPI (downloaded, never
# installed: the package would pull torch). The binary is checked against its known SHA-256.
hivemind=hivemind==1.1.12
p2pd_sha256=42f8f48e62583b97cdba3c31439c08029fb2b9fc506b5bdd82c46b7cc1d279d8
go=target/interop-go
if [[ ! -x $go/p2pd || ! -f $go/p2pd.proto || $(cat "$go/source" 2>/dev/null) != "$hivemind" ]]; then
  rm -rf "$go" "$go.tmp"
  mkdir -p "$go.tmp"
  "$venv/bin/pip" download --quiet --disable-pip-version-check --no-deps --only-binary :all: \
    "$hivemind" -d "$go.tmp"
  "$venv/bin/python" - "$go.tmp" <<'EOF'
import glob, os, sys, zipfile
tmp = sys.argv[1]
(wheel,) = glob.glob(os.path.join(tmp, "hivemind-*.whl"))
with zipfile.ZipFile(wheel) as z:
    for member in ("hivemind/hivemind_cli/p2pd", "hivemind/proto/p2pd.proto"):
        with open(os.path.join(tmp, os.path.basename(member)), "wb") as f:
            f.write(z.read(member))
os.remove(wheel)
EOF
  echo "$p2pd_sha256  $go.tmp/p2pd" | sha256sum --check --quiet ||
    { echo "interop: p2pd from $hivemind is not the expected binary"; exit 1; }
  chmod +x "$go.tmp/p2pd"
  echo "$hivemind" >"$go.tmp/source"
  mv "$go.tmp" "$go"
fi

if [[ -n ${DHT_BIN:-} ]]; then
  bin=$DHT_BIN
else
  cargo build --release --locked --bin dht
  bin="$PWD/target/release/dht"
fi

# Three nodes on consecutive free ports below the kernel's ephemeral range: retry if taken meanwhile.
for attempt in 1 2 3 4 5; do
  base=$(free_base 3)
  "$bin" -n 3 -l "/ip4/127.0.0.1/tcp/$base" >"$out" 2>/dev/null &
  pid=$!
  for _ in $(seq 100); do
    grep -q ready "$out" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  grep -q ready "$out" && break
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  pid=
done
[[ -n ${pid:-} ]] || { echo "interop: could not start the dht nodes"; exit 1; }
mapfile -t addrs < <(grep -oE '/ip4/[^ ]+/p2p/[A-Za-z0-9]+' "$out" | head -n 3)
status=0
echo "== py-libp2p (interop.py)"
"$venv/bin/python" "$here/interop.py" "$bin" "${addrs[@]}" || status=1
kill "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
pid=

echo "== go-libp2p-kad-dht 0.25.1, p2pd from $hivemind (go_interop.py)"
# go_interop.py bounds itself (about 2 minutes at most); the timeout is a last resort.
timeout -k 10 200 "$venv/bin/python" "$here/go_interop.py" "$bin" "$go/p2pd" || status=1
exit $status
