#!/usr/bin/env bash
# Builds wasmtime-cli (the official crate, trimmed feature set) into a cache
# outside the repo, keyed by version, so a warm machine (and CI in a fresh
# clone) reuses it and a cold one builds it once (~12 min on 2 quiet cores).
#
# Usage: e2e/scripts/install-wasmtime.sh
# Prints the path of the wasmtime binary on stdout; progress goes to stderr.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=e2e/scripts/versions.sh
source "$here/scripts/versions.sh"
WASMTIME_VERSION=${WASMTIME_VERSION:-48.0.8}
SPINDLE_CACHE=${SPINDLE_CACHE:-$HOME/.cache/spindle}

out="$SPINDLE_CACHE/wasmtime-$WASMTIME_VERSION"
if [[ -x $out/bin/wasmtime ]]; then
  echo "$out/bin/wasmtime"
  exit 0
fi

echo "install-wasmtime: building wasmtime-cli $WASMTIME_VERSION into $out (cold: ~12 min on 2 cores)" >&2
# Host toolchain (rustup's cargo); the build happens in a temp target dir and
# lands in "$out.tmp" first so an interrupted build never looks complete.
rm -rf "$out.tmp"
CARGO_TARGET_DIR="$SPINDLE_CACHE/.wasmtime-build" \
  cargo install wasmtime-cli --version "$WASMTIME_VERSION" --locked \
  --root "$out.tmp" --no-default-features \
  --features run,serve,compile,cranelift,component-model,component-model-async,wasi-http,cache,parallel-compilation,pooling-allocator,wat \
  >&2
rm -rf "$out" && mv "$out.tmp" "$out"
rm -rf "$SPINDLE_CACHE/.wasmtime-build"
"$out/bin/wasmtime" --version >&2
echo "$out/bin/wasmtime"
