#!/usr/bin/env bash
# Builds every guest app (guest-apps/) for wasm32-wasip2 in release (opt-level "s", strip),
# composes hello with inference (+ the config-env adapter) for hosts without Spin's
# component dependencies, and writes the artifacts to guest-apps/target/dist/:
#
#   hello.wasm            hello alone; imports ai:inference/model (Spin composes it, spin.toml)
#   inference.wasm        ai:inference/model; imports wasi:config/store@0.2.0-draft-2024-09-27
#   kv.wasm               the key-value app (imports fermyon:spin/key-value@2.0.0)
#   config-env.wasm       wasi:config/store answered from SPIN_VARIABLE_* environment variables
#   hello-composed.wasm   hello <- (inference <- config-env): only WASI imports, runs on
#                         `wasmtime serve -S cli` as well as on Spin
#
# Usage: e2e/scripts/build-guests.sh
# Env: SPINDLE_GUEST_TARGET  cargo target dir for the guests (default guest-apps/target; CI
#      shares $SPINDLE_CACHE/guest-target across clones). An inherited CARGO_TARGET_DIR (the
#      operator's, e.g. in CI) is deliberately NOT used: the artifacts are looked up here.
#      dist/ stays in guest-apps/target/dist whatever the target dir.
# Toolchain: e2e/scripts/install-wasm-toolchain.sh (run here; a no-op when installed).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
guests="$root/guest-apps"
dist="$guests/target/dist"

eval "$("$root/e2e/scripts/install-wasm-toolchain.sh")"

target=${SPINDLE_GUEST_TARGET:-$guests/target}
mkdir -p "$target"
cd "$guests"
rm -rf "$dist.tmp" && mkdir -p "$dist.tmp"
# A shared target dir may be used by another clone at the same time: build and copy the
# artifacts under one lock, so the copies are this tree's build.
exec {lock}>"$target/.build-guests.lock"
flock "$lock"
start=$(date +%s)
# Debian's cargo and rustc by full path: rustup's cargo ignores [unstable] build-std
# (guest-apps/.cargo/config.toml) and rustup's rustc has no wasm32-wasip2 std.
CARGO_TARGET_DIR=$target RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc \
  /usr/bin/cargo build --locked --release --target wasm32-wasip2 --workspace
echo "build-guests: cargo build took $(($(date +%s) - start))s" >&2
out="$target/wasm32-wasip2/release"
for crate in hello kv inference config_env; do
  cp "$out/$crate.wasm" "$dist.tmp/${crate//_/-}.wasm"
done
flock -u "$lock"
exec {lock}>&-

# Plug config-env's wasi:config/store export into inference's import, then that into
# hello's ai:inference/model import. Remaining imports (WASI) pass through.
wac plug "$dist.tmp/inference.wasm" --plug "$dist.tmp/config-env.wasm" \
  -o "$dist.tmp/inference-standalone.wasm"
wac plug "$dist.tmp/hello.wasm" --plug "$dist.tmp/inference-standalone.wasm" \
  -o "$dist.tmp/hello-composed.wasm"
rm "$dist.tmp/inference-standalone.wasm"

for f in "$dist.tmp"/*.wasm; do
  wasm-tools validate --features all "$f"
done
rm -rf "$dist" && mv "$dist.tmp" "$dist"
(cd "$dist" && for f in *.wasm; do printf '%8d  %s\n' "$(stat -c %s "$f")" "$f"; done) >&2
echo "build-guests: artifacts in ${dist#"$root"/}" >&2
