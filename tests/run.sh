#!/usr/bin/env bash
# The test command: unit tests, multi-node tests over 127.0.0.1, CLI tests on the real binary, the
# docker cluster test, a smoke run of the standard benchmark, and the interop tests (py-libp2p and
# go-libp2p-kad-dht).
# Every set-up step it needs, it does itself.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== cargo test --workspace"
cargo test --workspace --locked
echo "== docker/cluster-test.sh"
docker/cluster-test.sh
echo "== bench/standard.sh --smoke (that the workload runs and prints its table; no timing is asserted)"
bench/standard.sh --smoke
echo "== tests/interop/run.sh"
tests/interop/run.sh
