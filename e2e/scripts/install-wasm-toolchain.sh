#!/usr/bin/env bash
# Installs what building and testing the guest apps (guest-apps/) needs, idempotently:
#   apt    Debian's Rust with its std source + wasm linker + wasi-libc (the wasm32-wasip2
#          target is built from source with build-std; `rustup target add` is not used
#          because it reaches a server outside the package registries), plus the test
#          helpers (curl, python3's Prometheus text parser).
#   tools  wasm-tools and wac-cli from crates.io, `cargo install --locked` into a cache
#          outside the repo keyed by version ($SPINDLE_CACHE/<tool>-<version>/bin).
#
# Usage: e2e/scripts/install-wasm-toolchain.sh [apt|tools|all]   (default: all)
# Prints, on stdout, `export PATH=...` lines for the tool dirs, so callers can
#   eval "$(e2e/scripts/install-wasm-toolchain.sh)"
# Progress goes to stderr.
set -euo pipefail

# The shared pins/cache location (SPINDLE_CACHE) when present.
versions="$(cd "$(dirname "$0")" && pwd)/versions.sh"
# shellcheck source=e2e/scripts/versions.sh
[[ -f $versions ]] && source "$versions"
WASM_TOOLS_VERSION=${WASM_TOOLS_VERSION:-1.263.0}
WAC_VERSION=${WAC_VERSION:-0.12.0}
SPINDLE_CACHE=${SPINDLE_CACHE:-$HOME/.cache/spindle}

APT_PACKAGES=(rustc-web cargo-web rust-web-src rust-web-llvm lld-22 wasi-libc
  curl python3 python3-prometheus-client)

install_apt() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    return 0
  fi
  echo "install-wasm-toolchain: apt-get install ${missing[*]}" >&2
  local sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >&2
  # rust-lld comes from lld-22 (nothing depends on it); fail early if the link is dangling.
  [[ -x /usr/bin/rust-lld ]] || { echo "install-wasm-toolchain: /usr/bin/rust-lld missing" >&2; exit 1; }
}

cargo_tool() { # crate version binary [cargo install args...]
  local crate=$1 version=$2 bin=$3
  shift 3
  local out="$SPINDLE_CACHE/$crate-$version"
  if [[ ! -x $out/bin/$bin ]]; then
    echo "install-wasm-toolchain: cargo install $crate $version into $out" >&2
    rm -rf "$out.tmp"
    # The host (rustup) toolchain; a private target dir so nothing leaks into a repo.
    CARGO_TARGET_DIR="$SPINDLE_CACHE/.build-$crate" \
      cargo install "$crate" --version "$version" --locked --root "$out.tmp" "$@" >&2
    rm -rf "$out" "$SPINDLE_CACHE/.build-$crate"
    mv "$out.tmp" "$out"
  fi
  echo "export PATH=\"$out/bin:\$PATH\""
}

install_tools() {
  cargo_tool wasm-tools "$WASM_TOOLS_VERSION" wasm-tools
  # Without the default `registry` feature (a Warg registry client with keyring/D-Bus
  # dependencies): only local files are composed here, and it builds in a fraction of the time.
  cargo_tool wac-cli "$WAC_VERSION" wac --no-default-features --features wit
}

what=${1:-all}
case $what in
  apt) install_apt ;;
  tools) install_tools ;;
  all) install_apt; install_tools ;;
  *) echo "usage: $0 [apt|tools|all]" >&2; exit 2 ;;
esac
