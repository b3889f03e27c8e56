#!/usr/bin/env bash
# THE test command: everything Spindle's tests need, then every test.
#
#   1. builds the Go tools if missing (etcd, Kubernetes, kwok, helm: build-tools.sh;
#      cold ~20 min, then cached in $SPINDLE_CACHE)
#   2. builds the workspace's tests (cargo test --workspace --no-run)
#   3. starts the local control plane (controlplane.sh start), or reuses the one
#      already running from the same state dir
#   4. runs cargo test --workspace against it (SPINDLE_TEST_KUBECONFIG set)
#   5. runs the other test suites (guest apps, see the HOOK below)
#   6. stops what it started, prints timings, exits non-zero if anything failed
#
# Usage: e2e/scripts/test.sh [cargo test args...]   e.g. e2e/scripts/test.sh -p spindle-e2e --test api
#   SPINDLE_STATE=dir        control plane state dir (default <repo>/.spindle/cp)
#   SPINDLE_KEEP_CP=1        leave a control plane this script started running
#   SPINDLE_TEST_NETNS=auto|0  the netns tier (controlplane.sh start --netns) for
#                            e2e/tests/scale_to_zero_netns.rs: auto = started when the run
#                            includes that test (--workspace, or "netns" in the args)
#   SPINDLE_NETNS_STATE=dir  its state dir (default <repo>/.spindle/cp-netns)
#   SPINDLE_TEST_FAULTS=auto|0  the fault tier's own control plane (e2e/tests/faults.rs kills
#                            and pauses its kube-apiserver and etcd, so no other test may use
#                            it): auto = started when the run includes that test (--workspace,
#                            -p spindle-e2e without --test, or "faults" in the args)
#   SPINDLE_FAULTS_STATE=dir its state dir (default <repo>/.spindle/cp-faults)
#   SPINDLE_TEST_GUESTS=auto|1|0  guest-apps/test.sh: auto = only when its toolchain is installed;
#                            1 also builds the guests before cargo test (e2e/tests/oci.rs pushes them)
#   SPINDLE_GUEST_DIST=dir   built guests for the OCI tests (default <repo>/guest-apps/target/dist)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=e2e/scripts/versions.sh
source "$here/scripts/versions.sh"
cp_sh=$here/scripts/controlplane.sh
cd "$repo"

now() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }
phases=()
phase_start=0
begin() { phase_start=$(now); echo "==> $*" >&2; }
end() {
  local ms=$(($(now) - phase_start))
  phases+=("$(printf '%-28s %4d.%01ds' "$1" $((ms / 1000)) $((ms % 1000 / 100)))")
}
summary() {
  echo "==> timings" >&2
  local p
  for p in "${phases[@]}"; do echo "    $p" >&2; done
}

started_cp=0
started_netns=0
started_faults=0
faults_state=${SPINDLE_FAULTS_STATE:-$repo/.spindle/cp-faults}
log_dir=$(mktemp -d)
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
  local rc=$?
  if ((started_cp)) && [[ ${SPINDLE_KEEP_CP:-0} != 1 ]]; then
    "$cp_sh" stop || rc=1
  elif ((started_cp)); then
    echo "test: leaving the control plane running (SPINDLE_KEEP_CP=1); stop it with $cp_sh stop" >&2
  fi
  if ((started_netns)) && [[ ${SPINDLE_KEEP_CP:-0} != 1 ]]; then
    "$cp_sh" stop --netns || rc=1
  fi
  if ((started_faults)) && [[ ${SPINDLE_KEEP_CP:-0} != 1 ]]; then
    SPINDLE_STATE=$faults_state "$cp_sh" stop || rc=1
  fi
  rm -rf "$log_dir"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

(($# > 0)) || set -- --workspace
# The full run also checks the kind e2e statically (e2e/kind/check.sh), with kind's own
# config loader: build kind too (cold ~3 min, then cached).
full_run=0
[[ " $* " == *" --workspace "* ]] && full_run=1
go_tools=(etcd k8s kwok helm)
((full_run)) && go_tools+=(kind)
begin "Go tools (${go_tools[*]}; pinned in versions.sh)"
"$here/scripts/build-tools.sh" "${go_tools[@]}"
end "go tools"

begin "building the tests (cargo test --no-run $*)"
cargo test --no-run --quiet "$@"
end "cargo build (tests)"

begin "control plane"
if "$cp_sh" status >/dev/null 2>&1; then
  "$cp_sh" start # reports the reuse (or refuses a --minimal one)
else
  started_cp=1
  "$cp_sh" start
fi
end "control plane start"
eval "$("$cp_sh" env)"
export SPINDLE_TEST_KUBECONFIG KUBECONFIG PATH

# The network-namespace tier (docs/e2e.md), beside the default one: needs root. Once
# started here its tests must run (SPINDLE_NETNS_REQUIRED), never skip.
if [[ ${SPINDLE_TEST_NETNS:-auto} != 0 && ( " $* " == *" --workspace "* || "$*" == *netns* ) ]]; then
  begin "netns tier"
  if [[ $(id -u) != 0 ]]; then
    echo "test: not root, so no netns tier: e2e/tests/scale_to_zero_netns.rs will skip" >&2
  else
    if ! "$cp_sh" status --netns >/dev/null 2>&1; then started_netns=1; fi
    "$cp_sh" start --netns
    eval "$("$cp_sh" env --netns)"
    export SPINDLE_NETNS_STATE SPINDLE_NETNS
    export SPINDLE_NETNS_REQUIRED=1
  fi
  end "netns tier start"
fi

# The fault tier's control plane (docs/e2e.md), a third one: its apiserver and etcd are
# stopped and paused by the tests, which must not disturb any other test binary. With an
# audit log of writes (SPINDLE_AUDIT=1), from which the leader-fencing test counts writes.
runs_faults() {
  [[ " $* " == *" --workspace "* || "$*" == *faults* ]] && return 0
  # The whole e2e package (no --test selection) includes the faults binary too.
  [[ "$*" == *spindle-e2e* && " $* " != *" --test "* && "$*" != *--test=* ]]
}
if [[ ${SPINDLE_TEST_FAULTS:-auto} != 0 ]] && runs_faults "$@"; then
  begin "fault tier control plane"
  if ! SPINDLE_STATE=$faults_state "$cp_sh" status >/dev/null 2>&1; then started_faults=1; fi
  SPINDLE_STATE=$faults_state SPINDLE_AUDIT=1 "$cp_sh" start
  export SPINDLE_FAULTS_STATE=$faults_state
  export SPINDLE_FAULTS_KUBECONFIG=$faults_state/kubeconfig
  # The tests run the real operator binary (`spindle run`), which a run of one test
  # binary does not build.
  cargo build --quiet -p spindle
  end "fault tier start"
fi

failed=0
total_passed=0
total_failed=0
# Adds up cargo's "test result: ... N passed; M failed; ..." lines of a log.
count_cargo() {
  local p f
  read -r p f < <(awk '/^test result:/ {
      for (i = 2; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
    END { print p + 0, f + 0 }' "$1")
  total_passed=$((total_passed + p))
  total_failed=$((total_failed + f))
}

# The OCI tests publish the built guest apps with `spindle push` (e2e/tests/oci.rs); with
# SPINDLE_TEST_GUESTS=1 they must run, so build the guests first (incremental: seconds when
# nothing changed). Otherwise the test uses what is already built, or skips saying why.
export SPINDLE_GUEST_DIST=${SPINDLE_GUEST_DIST:-$repo/guest-apps/target/dist}
if [[ ${SPINDLE_TEST_GUESTS:-auto} == 1 ]]; then
  begin "guest apps (build-guests.sh)"
  if ! "$here/scripts/build-guests.sh"; then
    failed=1
    echo "test: build-guests.sh failed; the guest publishing test will fail" >&2
  fi
  end "build guests"
fi

begin "cargo test $*"
# --no-fail-fast: one failing test binary must not hide the others' results.
if ! cargo test --no-fail-fast "$@" 2>&1 | tee "$log_dir/cargo.log"; then failed=1; fi
count_cargo "$log_dir/cargo.log"
end "cargo test"

# ---- HOOK (lead): other test suites -----------------------------------------
# Each suite is a script that prints its own results and ends with the line
# "N passed, N failed"; a non-zero exit fails this run. guest-apps/test.sh needs
# the Wasm toolchain (it installs it when missing, which takes long), so by
# default it runs only where that toolchain is already installed.
run_suite() { # name script...
  local name=$1; shift
  begin "$name"
  local rc=0 line p=0 f=0
  "$@" 2>&1 | tee "$log_dir/$name.log" || rc=$?
  # The suite's own closing total (unprefixed; sub-totals such as "http: ..." are not it).
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log_dir/$name.log" | tail -n 1 || true)
  if [[ $line =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
    p=${BASH_REMATCH[1]} f=${BASH_REMATCH[2]}
  fi
  # A suite that failed without counting a failure (crashed, no total) still counts one.
  if ((rc != 0)); then
    failed=1
    ((f > 0)) || f=1
    echo "test: $name exited $rc" >&2
  fi
  total_passed=$((total_passed + p))
  total_failed=$((total_failed + f))
  end "$name"
}
guests=${SPINDLE_TEST_GUESTS:-auto}
if [[ -f guest-apps/test.sh && $guests != 0 ]]; then
  if [[ $guests == 1 || -x $SPINDLE_CACHE/wasmtime-$WASMTIME_VERSION/bin/wasmtime ]]; then
    run_suite guest-apps bash guest-apps/test.sh
  else
    echo "test: skipping guest-apps/test.sh: its toolchain is not installed (SPINDLE_TEST_GUESTS=1 installs and runs it)" >&2
  fi
fi
# The kind e2e cannot run without Docker; its static checks can (config through kind's
# loader, containerd patches, server-side dry run of every manifest and the chart).
if ((full_run)); then
  run_suite kind-check bash e2e/kind/check.sh
fi
# ---- end of HOOK ----------------------------------------------------------------

summary
if ((failed)); then
  echo "test: FAILED" >&2
fi
echo "total: $total_passed passed, $total_failed failed"
exit "$failed"
