#!/usr/bin/env bash
# Measures the operator's memory with N SpinApps, as the Helm chart runs it:
# a private full control plane (etcd, kube-apiserver, controller-manager,
# scheduler, kwok), the chart installed, and the real `spindle` binary run
# out of cluster with the chart Deployment's own arguments while impersonating
# the chart's ServiceAccount. For each N it starts a fresh operator with N apps
# present, waits until every app has its Deployment and Service, lets it settle, and
# reads VmHWM (peak RSS) and VmRSS from /proc/<pid>/status. Prints a Markdown
# table (the one in charts/spindle/README.md).
#
# Usage: e2e/scripts/chart-measure-memory.sh [N...]      (default: 0 10 200 1000)
# Env:   SPINDLE_BIN   operator binary (default target/release/spindle)
#        SPINDLE_CHART chart to install (default charts/spindle)
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=e2e/scripts/versions.sh
source "$repo/e2e/scripts/versions.sh"
bin=${SPINDLE_BIN:-$repo/target/release/spindle}
chart=${SPINDLE_CHART:-$repo/charts/spindle}
kubectl=$SPINDLE_CACHE/k8s-$K8S_VERSION/kubectl
helm=$SPINDLE_CACHE/helm-$HELM_VERSION/helm
[[ -x $bin ]] || { echo "missing $bin (cargo build --release -p spindle)" >&2; exit 1; }
counts=("$@")
[[ ${#counts[@]} -gt 0 ]] || counts=(0 10 200 1000)

export SPINDLE_STATE=$repo/.spindle/chart-memory
export HELM_CACHE_HOME=$SPINDLE_STATE/helm/cache HELM_CONFIG_HOME=$SPINDLE_STATE/helm/config HELM_DATA_HOME=$SPINDLE_STATE/helm/data
cp_sh=$repo/e2e/scripts/controlplane.sh
op_pid=""
cleanup() {
  [[ -n $op_pid ]] && kill -TERM "$op_pid" 2>/dev/null && wait "$op_pid" 2>/dev/null || true
  "$cp_sh" stop >/dev/null 2>&1 || true
}
trap cleanup EXIT
log() { printf 'measure: %s\n' "$*" >&2; }

"$cp_sh" start >&2
export KUBECONFIG=$SPINDLE_STATE/kubeconfig
k() { "$kubectl" "$@"; }

k create namespace apps >/dev/null
"$helm" install spindle "$chart" -n spindle-system --create-namespace \
  --set runtimeClass.create=true --set executor.create=true --set 'executor.namespaces={apps}' \
  --set operator.resolveImages=false >/dev/null
k -n spindle-system scale deployment/spindle --replicas=0 >/dev/null

# The chart's own arguments, with a loopback HTTP address.
port=$((20000 + RANDOM % 20000))
mapfile -t args < <(k -n spindle-system get deployment spindle \
  -o jsonpath='{range .spec.template.spec.containers[0].args[*]}{@}{"\n"}{end}')
for i in "${!args[@]}"; do [[ ${args[$i]} == --http-addr=* ]] && args[$i]=--http-addr=127.0.0.1:$port; done

# Impersonate the chart's ServiceAccount.
sa_kubeconfig=$SPINDLE_STATE/kubeconfig-sa
k config view --raw -o json | python3 -c '
import json, sys
c = json.load(sys.stdin)
u = c["users"][0]["user"]
u["as"] = "system:serviceaccount:spindle-system:spindle"
u["as-groups"] = ["system:serviceaccounts", "system:serviceaccounts:spindle-system", "system:authenticated"]
json.dump(c, sys.stdout)' >"$sa_kubeconfig"

k -n apps create secret generic redis --from-literal=url=redis://redis.apps:6379 >/dev/null
apps_yaml() { # from to: SpinApps app-<from>..app-<to-1>
  local i
  for ((i = $1; i < $2; i++)); do
    cat <<YAML
---
apiVersion: core.spinkube.dev/v1alpha1
kind: SpinApp
metadata: {name: app-$i}
spec:
  image: ghcr.io/example/hello@sha256:$(printf '%064x' "$i")
  executor: containerd-shim-spin
  replicas: 1
  variables: [{name: greeting, value: hello}]
  runtimeConfig:
    keyValueStores:
    - name: default
      type: redis
      options: [{name: url, valueFrom: {secretKeyRef: {name: redis, key: url}}}]
YAML
  done
}
# Reconciled = the operator created the app's Deployment and Service. (Pods
# becoming Ready depends on kwok keeping up on a loaded machine, which says
# nothing about the operator; readiness is checked by e2e/tests/chart.rs.)
ready_apps() {
  local d s
  d=$(k -n apps get deployments -l app.kubernetes.io/managed-by=spindle -o name | wc -l)
  s=$(k -n apps get services -l app.kubernetes.io/managed-by=spindle -o name | wc -l)
  echo $((d < s ? d : s))
}
status_kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }

echo "| SpinApps | all reconciled after | peak RSS (VmHWM) | RSS after settling |"
echo "| ---: | ---: | ---: | ---: |"
created=0
for n in "${counts[@]}"; do
  while ((created < n)); do
    next=$((created + 100 < n ? created + 100 : n))
    apps_yaml "$created" "$next" | k -n apps apply --server-side -f - >/dev/null
    created=$next
  done
  KUBECONFIG=$sa_kubeconfig POD_NAME=measure POD_NAMESPACE=spindle-system \
    "$bin" "${args[@]}" >"$SPINDLE_STATE/operator-$n.log" 2>&1 &
  op_pid=$!
  t0=$(date +%s.%N)
  until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; do sleep 0.2; done
  deadline=$(($(date +%s) + 900))
  until (($(ready_apps) >= n)); do
    (($(date +%s) < deadline)) || { log "timeout: $(ready_apps)/$n apps ready"; exit 1; }
    sleep 1
  done
  t1=$(date +%s.%N)
  sleep 15
  hwm=$(status_kib "$op_pid" VmHWM); rss=$(status_kib "$op_pid" VmRSS)
  if grep -qi forbidden "$SPINDLE_STATE/operator-$n.log"; then log "403 in operator-$n.log"; exit 1; fi
  kill -TERM "$op_pid"; wait "$op_pid" || true; op_pid=""
  printf '| %d | %.1f s | %.1f MiB | %.1f MiB |\n' "$n" "$(echo "$t1 - $t0" | bc)" "$(echo "$hwm / 1024" | bc -l)" "$(echo "$rss / 1024" | bc -l)"
done
