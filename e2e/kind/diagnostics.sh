#!/usr/bin/env bash
# Collects what is needed to debug a failed kind e2e run into one directory (the
# one the e2e-kind workflow uploads as its artifact), and prints a short summary.
# up.sh runs it when it fails; the workflow runs it when a later step fails; a
# maintainer runs it by hand after reproducing a failure (docs/e2e.md).
#
#   e2e/kind/diagnostics.sh [DIR]     DIR default: <repo>/.spindle/kind-diagnostics
#
# Writes, each only when its source exists (a missing one is noted, never fatal):
#   steps.tsv            up.sh's steps with their durations (seconds)
#   docker.txt           containers and images on the host
#   kind-logs/           `kind export logs` (node journal, containerd, kubelet, pod logs)
#   containerd-config.txt  `containerd config dump` of each node
#   get-all.txt          `kubectl get -A` of nodes, SpinApps, executors, workloads, Services
#   spinapps.yaml        the SpinApps and SpinAppExecutors in full (status and conditions)
#   events.txt           events of all namespaces, oldest first
#   operator.log         the operator's log (and its previous container's, if it restarted)
#   helm.txt             `helm status` and `helm history` of the release
# No Secret is read, and the state dir's env file (which holds the test registry
# password) is not copied.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=e2e/scripts/versions.sh
source "$repo/e2e/scripts/versions.sh"
# shellcheck source=e2e/kind/versions.sh
source "$here/versions.sh"

state=${SPINDLE_KIND_STATE:-$repo/.spindle/kind}
out=${1:-${SPINDLE_KIND_DIAG_DIR:-$repo/.spindle/kind-diagnostics}}
kubeconfig=$state/kubeconfig
kind_bin=$SPINDLE_CACHE/kind-$KIND_VERSION/kind
helm_bin=$SPINDLE_CACHE/helm-$HELM_VERSION/helm
if command -v kubectl >/dev/null; then kubectl_bin=$(command -v kubectl); else kubectl_bin=$SPINDLE_CACHE/k8s-$K8S_VERSION/kubectl; fi

log() { printf 'kind-diagnostics: %s\n' "$*" >&2; }
mkdir -p "$out"
log "collecting into $out"
[[ -s $state/steps.tsv ]] && cp "$state/steps.tsv" "$out/steps.tsv"

if ! command -v docker >/dev/null || ! docker info >/dev/null 2>&1; then
  log "no Docker engine: nothing more to collect"
  exit 0
fi
{
  echo "# docker ps -a"; docker ps -a
  echo; echo "# docker images"; docker images
} >"$out/docker.txt" 2>&1

cluster=0
if [[ -x $kind_bin ]] && "$kind_bin" get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
  cluster=1
  "$kind_bin" export logs "$out/kind-logs" --name "$CLUSTER_NAME" >/dev/null 2>&1 ||
    log "kind export logs failed"
  for node in $("$kind_bin" get nodes --name "$CLUSTER_NAME" 2>/dev/null); do
    { echo "# $node"; docker exec "$node" containerd config dump; } >>"$out/containerd-config.txt" 2>&1
  done
  # up.sh may have failed before writing the kubeconfig.
  if [[ ! -s $kubeconfig ]] && "$kind_bin" get kubeconfig --name "$CLUSTER_NAME" >"$out/.kubeconfig" 2>/dev/null; then
    kubeconfig=$out/.kubeconfig
  fi
else
  log "no kind cluster $CLUSTER_NAME (the failure came before it, or kind $KIND_VERSION is not built)"
fi

if ((cluster)) && [[ -s $kubeconfig && -x $kubectl_bin ]]; then
  kc() { "$kubectl_bin" --kubeconfig "$kubeconfig" --request-timeout 30s "$@"; }
  kc get nodes,spinapps,spinappexecutors,deploy,rs,pods,svc -A -o wide >"$out/get-all.txt" 2>&1
  kc get spinapps,spinappexecutors -A -o yaml >"$out/spinapps.yaml" 2>&1
  kc get events -A --sort-by=.lastTimestamp >"$out/events.txt" 2>&1
  {
    kc -n "$RELEASE_NAMESPACE" logs "deploy/$RELEASE" --all-containers --tail=-1
    echo "# previous container (if it restarted)"
    kc -n "$RELEASE_NAMESPACE" logs "deploy/$RELEASE" --all-containers --previous --tail=-1
  } >"$out/operator.log" 2>&1
  if [[ -x $helm_bin ]]; then
    {
      HELM_CACHE_HOME=$state/helm/cache HELM_CONFIG_HOME=$state/helm/config HELM_DATA_HOME=$state/helm/data \
        "$helm_bin" --kubeconfig "$kubeconfig" -n "$RELEASE_NAMESPACE" status "$RELEASE"
      HELM_CACHE_HOME=$state/helm/cache HELM_CONFIG_HOME=$state/helm/config HELM_DATA_HOME=$state/helm/data \
        "$helm_bin" --kubeconfig "$kubeconfig" -n "$RELEASE_NAMESPACE" history "$RELEASE"
    } >"$out/helm.txt" 2>&1
  fi
fi
rm -f "$out/.kubeconfig"

# The workflow log should show the likely cause without downloading the artifact.
show() { # file lines title
  [[ -s $1 ]] || return 0
  printf '\n----- %s (%s, last %s lines) -----\n' "$3" "${1#"$out"/}" "$2" >&2
  tail -n "$2" "$1" >&2
}
show "$out/steps.tsv" 30 "up.sh steps (seconds, step)"
show "$out/get-all.txt" 60 "kubectl get -A"
show "$out/events.txt" 40 "events"
show "$out/operator.log" 60 "operator log"
log "done: $(find "$out" -type f | wc -l) files in $out"
