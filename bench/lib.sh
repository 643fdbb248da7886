# Sourced by the benchmark scripts (run from the repository's root).

# The dht binary to measure: $DHT_BIN (another build, e.g. an older commit's, for a side-by-side
# run; nothing is built then), or a release build of this checkout. Build output goes to stderr.
bench_binary() {
  if [[ -n ${DHT_BIN:-} ]]; then
    echo "$DHT_BIN"
    return
  fi
  cargo build --release --locked --bin dht 2>&1 | grep -v '^ *\(Compiling\|Finished\)' >&2 || true
  echo "$PWD/target/release/dht"
}

# free_base N: the first of N consecutive ports free on 127.0.0.1, below the kernel's ephemeral
# range (32768-60999), where outbound connections take ports.
free_base() {
  local n=$1 base i
  for _ in $(seq 50); do
    base=$((20000 + RANDOM % 10000))
    for ((i = 0; i < n; i++)); do
      (echo >"/dev/tcp/127.0.0.1/$((base + i))") 2>/dev/null && continue 2
    done
    echo "$base"
    return
  done
  echo "no free port range" >&2
  exit 1
}

# wait_listening OUT PID: until the node started as PID prints its address to OUT (30 s).
wait_listening() {
  local out=$1 pid=$2 deadline=$((SECONDS + 30))
  until grep -q "listening on" "$out" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { echo "a node exited at start: $(cat "${out%.out}.err" 2>/dev/null)" >&2; exit 1; }
    ((SECONDS < deadline)) || { echo "a node did not start within 30 s" >&2; exit 1; }
    sleep 0.05
  done
}

# routes BIN PORT: the routing table size of the node on 127.0.0.1:PORT (0 when it does not answer).
routes() {
  timeout 10 "$1" -v 0 info "/ip4/127.0.0.1/tcp/$2" --json 2>/dev/null |
    python3 -c 'import json,sys; print(len(json.load(sys.stdin)["routing_table"]))' 2>/dev/null || echo 0
}

# wait_routed BIN BASE N SECONDS: until each of the N nodes on ports BASE.. routes the N-1 others.
wait_routed() {
  local bin=$1 base=$2 n=$3 deadline=$((SECONDS + $4)) i
  for ((i = 0; i < n; i++)); do
    until (($(routes "$bin" $((base + i))) >= n - 1)); do
      ((SECONDS < deadline)) || { echo "node $i did not route every other node within $4 s" >&2; exit 1; }
      sleep 0.2
    done
  done
}
