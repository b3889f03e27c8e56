#!/usr/bin/env bash
# Benchmark of the activator (`spindle activator`, release build) against the
# local control plane; see e2e/src/bin/activator-bench.rs for what it measures.
#
# Usage: e2e/benches/activator.sh [--cold-starts N] [--rate R] [--seconds S]
#                                 [--idle-apps N] [--idle-seconds S]
# Defaults: 200 cold starts, 1,000 req/s for 5 s per client mode, 1,000 idle
# apps, 10 s of idling. Prints a table; exits 1 if a goal is missed (wake
# overhead p99 < 20 ms, proxy overhead p99 < 1 ms, no failed request, no
# Lease write while idle).
#
# Needs root (or CAP_SYS_ADMIN) and iproute2: the benchmark runs in a network
# namespace of its own, where pod IPs (10.244.0.0/16) are local addresses.
#
# ACTIVATOR_BENCH_RT=1 runs the benchmark and the activator under SCHED_FIFO
# (chrt -f 10), so that other load on a shared machine does not preempt them:
# the activator's own overhead, as on a node where it has its CPU.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
log() { printf 'activator-bench: %s\n' "$*" >&2; }

log "building the release binaries (once; incremental after that)"
cargo build --release --quiet -p spindle -p spindle-e2e --bin spindle --bin activator-bench
bin=${CARGO_TARGET_DIR:-$repo/target}/release

e2e/scripts/controlplane.sh start >&2
# shellcheck disable=SC1090
source <(e2e/scripts/controlplane.sh env)
export KUBECONFIG=${SPINDLE_TEST_KUBECONFIG:-$KUBECONFIG}

prio=()
[[ ${ACTIVATOR_BENCH_RT:-0} == 1 ]] && prio=(chrt -f 10)
exec "${prio[@]}" "$bin/activator-bench" --spindle "$bin/spindle" "$@"
