#!/usr/bin/env bash
# Builds a runnable `dht` image from the host's release binary, with no base image to pull:
# a scratch image holding the binary and the shared libraries `ldd` lists, at their own paths.
#   docker/build-image.sh [IMAGE]     (default: dht:latest)
set -euo pipefail
cd "$(dirname "$0")/.."
image=${1:-dht:latest}
cargo build --release --locked --bin dht
bin=target/release/dht
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/data"
cp "$bin" "$ctx/rootfs/usr/local/bin/dht"
# The release profile keeps debug info for profiling; the image does not need it.
strip "$ctx/rootfs/usr/local/bin/dht" 2>/dev/null || true
# Each library the binary links, and the dynamic loader, copied (links resolved) to the same path.
for lib in $(ldd "$bin" | grep -oE '/[^ ]+'); do
  mkdir -p "$ctx/rootfs$(dirname "$lib")"
  cp -L "$lib" "$ctx/rootfs$lib"
done
cp docker/Dockerfile.prebuilt "$ctx/Dockerfile"
docker build -q --build-arg BASE=scratch -t "$image" "$ctx" >/dev/null
echo "built $image"
