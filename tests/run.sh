#!/usr/bin/env bash
# The test command: unit tests, multi-node tests over 127.0.0.1 and CLI tests on the real binary.
# Every set-up step it needs, it does itself.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== cargo test --workspace"
cargo test --workspace --locked
echo "== docker/cluster-test.sh"
docker/cluster-test.sh
echo "== tests/interop/run.sh"
tests/interop/run.sh
