#!/usr/bin/env bash
# Benchmarks the guest components: sizes, cold start of `wasmtime serve` (compiling vs
# precompiled .cwasm), warm per-request latency (p50/p99), instance memory; printed as
# Markdown tables next to the seed article's claims. Builds first (incremental).
#
# Usage: guest-apps/bench.sh [--runs N] [--requests N]     (defaults: 7 launches, 500 requests)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
eval "$("$root/e2e/scripts/install-wasm-toolchain.sh")"
wasmtime=$("$root/e2e/scripts/install-wasmtime.sh")
"$root/e2e/scripts/build-guests.sh" >&2
"${PYTHON:-/usr/bin/python3}" "$here/tests/bench.py" --wasmtime "$wasmtime" --dist "$here/target/dist" "$@"
