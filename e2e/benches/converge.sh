#!/usr/bin/env bash
# Benchmark: how many API requests, and how much time, the operator BINARY
# (release build) needs to converge N SpinApps on the local control plane
# (etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok).
#
# Usage: e2e/benches/converge.sh [N]        (default N=200)
#
# Reports:
#   applied   time from `kubectl apply` of N SpinApps until every app has its
#             children applied and its status written (Spindle's own work)
#   ready     time until every app is Ready=True (pods rolled out by kcm+kwok;
#             bounded by kube-controller-manager's client QPS, not by Spindle)
#   requests  the operator's own count (spindle_kubernetes_requests_total) by
#             verb, per app, until convergence; then the writes during 10 s of
#             idling (must be 0)
#   memory    the operator's VmRSS / VmHWM
# Not a timed test: it prints numbers, it does not assert thresholds beyond
# "idle writes = 0".
set -euo pipefail

n=${1:-200}
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"

log() { printf 'converge: %s\n' "$*" >&2; }
now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }

log "building the release binary"
cargo build --release -p spindle --quiet
bin=${CARGO_TARGET_DIR:-$repo/target}/release/spindle

e2e/scripts/controlplane.sh start >&2
# shellcheck disable=SC1090
source <(e2e/scripts/controlplane.sh env)
export KUBECONFIG=${SPINDLE_TEST_KUBECONFIG:-$KUBECONFIG}

ns=bench-$(date +%s)-$RANDOM
work=$(mktemp -d)
pid=
cleanup() {
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; fi
  kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

kubectl apply --server-side --force-conflicts -f crds/spinapps.core.spinkube.dev.yaml -f crds/spinappexecutors.core.spinkube.dev.yaml >/dev/null
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null
kubectl create namespace "$ns" >/dev/null
kubectl apply --server-side -f - >/dev/null <<YAML
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {name: wasmtime-spin-v2}
handler: spin
---
apiVersion: core.spinkube.dev/v1alpha1
kind: SpinAppExecutor
metadata: {name: containerd-shim-spin, namespace: $ns}
spec:
  createDeployment: true
  deploymentConfig: {runtimeClassName: wasmtime-spin-v2}
YAML

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" run --namespace "$ns" --leader-elect=false --resolve-images=false --http-addr "127.0.0.1:$port" --log-level warn \
  >"$work/operator.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { cat "$work/operator.log" >&2; exit 1; }
curl -s "http://127.0.0.1:$port/metrics" >"$work/metrics-start.txt"

for i in $(seq 1 "$n"); do
  cat <<YAML
---
apiVersion: core.spinkube.dev/v1alpha1
kind: SpinApp
metadata: {name: app-$i, namespace: $ns}
spec:
  executor: containerd-shim-spin
  image: ghcr.io/spinkube/containerd-shim-spin/examples/spin-rust-hello:v0.13.0
  replicas: 1
  variables: [{name: greeting, value: "hello $i"}]
  runtimeConfig:
    keyValueStores:
    - name: default
      type: redis
      options: [{name: url, value: "redis://redis.$ns.svc:6379"}]
YAML
done >"$work/apps.yaml"

count() { # apps whose status satisfies the python predicate on `s` (status dict) and `a` (app)
  { kubectl get spinapps -n "$ns" -o json 2>/dev/null || echo '{"items": []}'; } | python3 -c "
import json,sys
items=json.load(sys.stdin)['items']
def ok(a):
    s=a.get('status') or {}
    c={x['type']:x for x in s.get('conditions',[])}
    return $1
print(sum(1 for a in items if ok(a)))"
}

log "applying $n SpinApps to namespace $ns"
t0=$(now_ms)
kubectl apply --server-side -f "$work/apps.yaml" >/dev/null
t_applied=
while :; do
  if [[ -z $t_applied ]]; then
    done_n=$(count "s.get('serviceName') and s.get('observedGeneration')==a['metadata']['generation']")
    if [[ $done_n -ge $n ]]; then t_applied=$(now_ms); log "all children applied after $((t_applied - t0)) ms"; fi
  fi
  ready_n=$(count "c.get('Ready',{}).get('status')=='True'")
  [[ $ready_n -ge $n ]] && break
  if (( $(now_ms) - t0 > 900000 )); then log "timeout: $ready_n/$n Ready"; exit 1; fi
  sleep 0.5
done
t_ready=$(now_ms)
log "all Ready after $((t_ready - t0)) ms"
sleep 3
curl -s "http://127.0.0.1:$port/metrics" >"$work/metrics-converged.txt"
sleep 10
curl -s "http://127.0.0.1:$port/metrics" >"$work/metrics-idle.txt"

python3 - "$n" "$work" "$((t_applied - t0))" "$((t_ready - t0))" "$pid" <<'PY'
import re, sys
n, work, applied_ms, ready_ms, pid = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
def load(name):
    out = {}
    for line in open(f"{work}/{name}"):
        m = re.match(r'spindle_kubernetes_requests_total\{verb="(\w+)",resource="([\w/]+)"\} (\d+)', line)
        if m:
            out[(m[1], m[2])] = int(m[3])
    return out
start, conv, idle = load("metrics-start.txt"), load("metrics-converged.txt"), load("metrics-idle.txt")
delta = {k: v - start.get(k, 0) for k, v in conv.items() if v - start.get(k, 0)}
writes = {"create", "update", "patch", "delete"}
print(f"apps                         {n}")
print(f"time to children+status      {applied_ms/1000:.1f} s")
print(f"time to all Ready            {ready_ms/1000:.1f} s")
print("requests until converged (excluding watches), per app:")
total = 0
for (verb, res), v in sorted(delta.items()):
    if verb == "watch":
        continue
    total += v
    print(f"  {verb:7} {res:22} {v:6}  {v/n:6.2f}/app")
w = sum(v for (verb, _), v in delta.items() if verb in writes)
print(f"  total {total} = {total/n:.2f}/app; writes {w} = {w/n:.2f}/app")
idle_writes = sum(idle.get(k, 0) - conv.get(k, 0) for k in idle if k[0] in writes)
print(f"writes during 10 s idle      {idle_writes}")
status = open(f"/proc/{pid}/status").read()
for key in ("VmRSS", "VmHWM"):
    value = re.search(key + r":\s+(\d+ kB)", status)[1]
    print(f"operator {key:5}               {value}")
if idle_writes:
    sys.exit("idle writes must be 0")
PY
