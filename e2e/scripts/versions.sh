# shellcheck shell=bash
# Pinned tool versions; the cache folder names include them, so a bump rebuilds.
# Sourced by the scripts in this folder and by .ci/run.
# shellcheck disable=SC2034
K8S_VERSION=v1.37.2
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.22.0
WASMTIME_VERSION=48.0.8
# The kind pins (KIND_VERSION and the node image that belongs to it) live in
# e2e/kind/pins.sh, beside the table they are checked against.
# shellcheck source=e2e/kind/pins.sh
source "${SPINDLE_KIND_PINS:-$(dirname "${BASH_SOURCE[0]}")/../kind/pins.sh}"
SPINDLE_CACHE=${SPINDLE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/spindle}
