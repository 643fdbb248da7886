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
