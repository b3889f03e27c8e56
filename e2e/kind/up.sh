#!/usr/bin/env bash
# The whole Spindle stack on kind, with the real containerd-shim-spin:
#
#   1. the kind node image (kindest/node + containerd-shim-spin, node/Dockerfile)
#   2. two registries on the kind network: kind-registry:5000 (anonymous) and
#      kind-registry-auth:5000 (htpasswd), with containerd hosts.toml on the node
#   3. the kind cluster (cluster.yaml: the `spin` containerd runtime)
#   4. the operator image from the repository's Dockerfile, `kind load`ed
#   5. the guest apps (e2e/scripts/build-guests.sh), pushed with `spindle push`
#   6. `helm install` of charts/spindle (CRDs, operator, RuntimeClass, executor)
#   7. Redis and the demo SpinApps (hello, kv) in namespace spindle-demo
#
# Then run the scenarios against it:
#   source .spindle/kind/env && cargo test -p spindle-e2e --test scenarios
# and tear it down with e2e/kind/down.sh. Re-running up.sh reuses what exists.
#
# Each step is printed with its duration (and kept in <state>/steps.tsv). When a
# step fails, up.sh names it and runs e2e/kind/diagnostics.sh, which collects kind's
# logs, the operator log, `kubectl get -A` of the SpinApps and workloads, and the
# events into $SPINDLE_KIND_DIAG_DIR (default .spindle/kind-diagnostics): the
# directory the e2e-kind workflow uploads. docs/e2e.md says how to reproduce a red
# workflow locally.
#
# Needs: docker (with buildx/BuildKit), cargo, go; the Wasm toolchain is
# installed by build-guests.sh when missing. Env: SPINDLE_KIND_STATE (state
# dir, default <repo>/.spindle/kind), SPINDLE_KIND_CLUSTER, GITHUB_TOKEN
# (optional, raises GitHub's API rate limit for the node image build),
# SPINDLE_KIND_DIAG_DIR, SPINDLE_KIND_DIAGNOSE=0 (no diagnostics on failure),
# SPINDLE_KIND_PINS (another copy of e2e/kind/pins.sh, to try new pins).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=e2e/scripts/versions.sh
source "$repo/e2e/scripts/versions.sh"
# shellcheck source=e2e/kind/versions.sh
source "$here/versions.sh"

state=${SPINDLE_KIND_STATE:-$repo/.spindle/kind}
kubeconfig=$state/kubeconfig
kind_bin=$SPINDLE_CACHE/kind-$KIND_VERSION/kind
helm_bin=$SPINDLE_CACHE/helm-$HELM_VERSION/helm

log() { printf 'kind-up: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
now() { date +%s; }

# Every step is logged when it starts (time since the start) and when it ends (its
# duration), and recorded in $state/steps.tsv. On failure the failed step is named
# and e2e/kind/diagnostics.sh collects the logs (into $SPINDLE_KIND_DIAG_DIR,
# default .spindle/kind-diagnostics; SPINDLE_KIND_DIAGNOSE=0 skips it).
mkdir -p "$state"
steps=$state/steps.tsv
: >"$steps"
t0=$(now) step_name="" step_t0=$t0
end_step() {
  [[ -n $step_name ]] || return 0
  local d=$(($(now) - step_t0))
  printf '%s\t%s\n' "$d" "$step_name" >>"$steps"
  log "  done in ${d}s: $step_name"
  step_name=""
}
step() { end_step; step_name=$*; step_t0=$(now); log "[$((step_t0 - t0))s] $*"; }
on_exit() {
  local rc=$1
  ((rc != 0)) || return 0
  if [[ -n $step_name ]]; then
    printf '%s\t%s (FAILED, exit %s)\n' "$(($(now) - step_t0))" "$step_name" "$rc" >>"$steps"
  fi
  log "FAILED after $(($(now) - t0))s, in step: ${step_name:-(before the first step)} (exit $rc)"
  if [[ ${SPINDLE_KIND_DIAGNOSE:-1} != 0 ]]; then "$here/diagnostics.sh" || true; fi
}
trap 'on_exit $?' EXIT

step "prerequisites: docker, cargo, go, curl; pins (e2e/kind/pins.sh)"
for t in docker cargo go curl; do command -v "$t" >/dev/null || die "$t is required"; done
docker info >/dev/null 2>&1 || die "docker is not running (kind needs a Docker engine)"
log "kind $KIND_VERSION, node $KIND_NODE_BASE (Kubernetes $KIND_NODE_K8S_MINOR), shim $SHIM_VERSION"

step "tools: kind $KIND_VERSION, helm $HELM_VERSION (e2e/scripts/build-tools.sh)"
"$repo/e2e/scripts/build-tools.sh" kind helm
if command -v kubectl >/dev/null; then
  kubectl_bin=$(command -v kubectl)
else
  "$repo/e2e/scripts/build-tools.sh" k8s
  kubectl_bin=$SPINDLE_CACHE/k8s-$K8S_VERSION/kubectl
fi
kc() { "$kubectl_bin" --kubeconfig "$kubeconfig" "$@"; }
helm() {
  HELM_CACHE_HOME=$state/helm/cache HELM_CONFIG_HOME=$state/helm/config HELM_DATA_HOME=$state/helm/data \
    "$helm_bin" --kubeconfig "$kubeconfig" "$@"
}

# --- 1. node image -------------------------------------------------------------
if docker image inspect "$NODE_IMAGE" >/dev/null 2>&1; then
  step "node image $NODE_IMAGE: present"
else
  step "node image $NODE_IMAGE: building (base $KIND_NODE_BASE, shim $SHIM_VERSION)"
  secret=()
  if [[ -n ${GITHUB_TOKEN:-} ]]; then secret=(--secret "id=github_token,env=GITHUB_TOKEN"); fi
  DOCKER_BUILDKIT=1 docker build "${secret[@]}" \
    --build-arg "KIND_NODE_BASE=$KIND_NODE_BASE" --build-arg "SHIM_VERSION=$SHIM_VERSION" \
    ${SHIM_SHA256_AMD64:+--build-arg "SHIM_SHA256_AMD64=$SHIM_SHA256_AMD64"} \
    ${SHIM_SHA256_ARM64:+--build-arg "SHIM_SHA256_ARM64=$SHIM_SHA256_ARM64"} \
    -t "$NODE_IMAGE" "$here/node"
fi

# --- 2. registries ---------------------------------------------------------------
running() { [[ $(docker inspect -f '{{.State.Running}}' "$1" 2>/dev/null) == true ]]; }
if ! running "$REGISTRY_NAME"; then
  step "registry $REGISTRY_NAME (127.0.0.1:$REGISTRY_HOST_PORT)"
  docker rm -f "$REGISTRY_NAME" >/dev/null 2>&1 || true
  docker run -d --restart=always --name "$REGISTRY_NAME" \
    -p "127.0.0.1:$REGISTRY_HOST_PORT:5000" "$REGISTRY_IMAGE" >/dev/null
fi
if ! running "$AUTH_REGISTRY_NAME"; then
  step "registry $AUTH_REGISTRY_NAME (127.0.0.1:$AUTH_REGISTRY_HOST_PORT, htpasswd)"
  mkdir -p "$state/auth"
  # distribution accepts bcrypt entries only.
  docker run --rm --entrypoint htpasswd "$HTPASSWD_IMAGE" -Bbn \
    "$AUTH_REGISTRY_USER" "$AUTH_REGISTRY_PASSWORD" >"$state/auth/htpasswd"
  docker rm -f "$AUTH_REGISTRY_NAME" >/dev/null 2>&1 || true
  docker run -d --restart=always --name "$AUTH_REGISTRY_NAME" \
    -p "127.0.0.1:$AUTH_REGISTRY_HOST_PORT:5000" \
    -v "$state/auth:/auth:ro" \
    -e REGISTRY_AUTH=htpasswd -e REGISTRY_AUTH_HTPASSWD_REALM=spindle-e2e \
    -e REGISTRY_AUTH_HTPASSWD_PATH=/auth/htpasswd "$REGISTRY_IMAGE" >/dev/null
fi

# --- 3. cluster ------------------------------------------------------------------
if "$kind_bin" get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
  step "kind cluster $CLUSTER_NAME: exists"
  # A cluster left from other pins would run the old node image: refuse it.
  for node in $("$kind_bin" get nodes --name "$CLUSTER_NAME"); do
    img=$(docker inspect -f '{{.Config.Image}}' "$node")
    [[ $img == "$NODE_IMAGE" ]] ||
      die "node $node runs $img, not $NODE_IMAGE (e2e/kind/pins.sh changed?): run e2e/kind/down.sh first"
  done
  "$kind_bin" get kubeconfig --name "$CLUSTER_NAME" >"$kubeconfig"
else
  step "kind cluster $CLUSTER_NAME: creating"
  "$kind_bin" create cluster --name "$CLUSTER_NAME" --image "$NODE_IMAGE" \
    --config "$here/cluster.yaml" --kubeconfig "$kubeconfig" --wait 3m
fi
chmod 600 "$kubeconfig"
step "nodes: registries on the kind network, hosts.toml, containerd config and shim checks"
for r in "$REGISTRY_NAME" "$AUTH_REGISTRY_NAME"; do
  if [[ $(docker inspect -f '{{json .NetworkSettings.Networks.kind}}' "$r") == null ]]; then
    docker network connect kind "$r"
  fi
done
mapfile -t nodes < <("$kind_bin" get nodes --name "$CLUSTER_NAME")
for node in "${nodes[@]}"; do
  for r in "$REGISTRY_NAME" "$AUTH_REGISTRY_NAME"; do
    dir=/etc/containerd/certs.d/$r:5000
    docker exec "$node" mkdir -p "$dir"
    printf 'server = "http://%s:5000"\n\n[host."http://%s:5000"]\n  capabilities = ["pull", "resolve"]\n' "$r" "$r" |
      docker exec -i "$node" cp /dev/stdin "$dir/hosts.toml"
  done
  # The effective config must have the shim runtime exactly as containerd-shim-spin documents it.
  dump=$(docker exec "$node" containerd config dump)
  for want in \
    "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.spin]" \
    "runtime_type = 'io.containerd.spin.v2'" \
    "config_path = '/etc/containerd/certs.d'"; do
    grep -qF "$want" <<<"$dump" || grep -qF "${want//\'/\"}" <<<"$dump" ||
      die "node $node: containerd config lacks: $want (see: docker exec $node containerd config dump)"
  done
  awk '/runtimes\.spin\.options\]/ {f=1; next} /^ *\[/ {f=0} f && /SystemdCgroup = true/ {ok=1} END {exit !ok}' <<<"$dump" ||
    die "node $node: runtimes.spin.options lacks SystemdCgroup = true"
  docker exec "$node" test -x /usr/local/bin/containerd-shim-spin-v2 ||
    die "node $node: /usr/local/bin/containerd-shim-spin-v2 is missing"
done
# kind's documented way to advertise a local registry (KEP-1755).
step "local-registry-hosting ConfigMap"
kc apply -f - >/dev/null <<YAML
apiVersion: v1
kind: ConfigMap
metadata:
  name: local-registry-hosting
  namespace: kube-public
data:
  localRegistryHosting.v1: |
    host: "localhost:$REGISTRY_HOST_PORT"
    hostFromContainerRuntime: "$REGISTRY_NAME:5000"
    hostFromClusterNetwork: "$REGISTRY_NAME:5000"
    help: "https://kind.sigs.k8s.io/docs/user/local-registry/"
YAML

# --- 4. images -------------------------------------------------------------------
operator_image=$OPERATOR_IMAGE_REPO:$OPERATOR_IMAGE_TAG
step "operator image $operator_image from the repository Dockerfile"
DOCKER_BUILDKIT=1 docker build -t "$operator_image" "$repo"
step "kind load: $operator_image and the test images"
for img in "$REDIS_IMAGE" "$CURL_IMAGE" "$PLAIN_IMAGE"; do
  docker image inspect "$img" >/dev/null 2>&1 || docker pull -q "$img" >/dev/null
done
"$kind_bin" load docker-image --name "$CLUSTER_NAME" "$operator_image" "$REDIS_IMAGE" "$CURL_IMAGE"

# --- 5. guest apps -----------------------------------------------------------------
step "spindle CLI (cargo build -p spindle)"
cargo build --locked --quiet -p spindle
spindle=${CARGO_TARGET_DIR:-$repo/target}/debug/spindle
[[ -x $spindle ]] || die "$spindle was not built"
dist=$repo/guest-apps/target/dist
if [[ ${SPINDLE_KIND_REBUILD_GUESTS:-0} != 1 && -s $dist/hello.wasm && -s $dist/inference.wasm && -s $dist/kv.wasm ]]; then
  step "guest apps: reusing $dist (SPINDLE_KIND_REBUILD_GUESTS=1 rebuilds)"
elif [[ -r /etc/debian_version ]]; then
  step "guest apps (e2e/scripts/build-guests.sh)"
  "$repo/e2e/scripts/build-guests.sh"
else
  # build-guests.sh installs Debian 12's Rust (rustc-web, lld-22): build in a Debian container.
  step "guest apps (e2e/scripts/build-guests.sh in debian:bookworm)"
  docker run --rm -v "$repo:/src" -w /src -e HOME=/tmp/guest-home debian:bookworm \
    bash -c 'apt-get update -qq && apt-get install -y -qq ca-certificates >/dev/null && e2e/scripts/build-guests.sh'
fi
push() { # dir host-port repo:tag [user] -> digest on stdout
  local out
  if [[ -n ${4:-} ]]; then
    out=$(printf '%s' "$AUTH_REGISTRY_PASSWORD" |
      "$spindle" push "$1" "localhost:$2/$3" --username "$4" --password-stdin)
  else
    out=$("$spindle" push "$1" "localhost:$2/$3")
  fi
  [[ $out =~ (sha256:[0-9a-f]{64}) ]] || die "spindle push $1 printed no digest: $out"
  echo "${BASH_REMATCH[1]}"
}
step "pushing hello, kv (anonymous registry) and hello (registry with auth)"
hello_digest=$(push "$repo/guest-apps/hello" "$REGISTRY_HOST_PORT" spindle/hello:v1)
kv_digest=$(push "$repo/guest-apps/kv" "$REGISTRY_HOST_PORT" spindle/kv:v1)
private_digest=$(push "$repo/guest-apps/hello" "$AUTH_REGISTRY_HOST_PORT" spindle/private-hello:v1 "$AUTH_REGISTRY_USER")
docker tag "$PLAIN_IMAGE" "localhost:$REGISTRY_HOST_PORT/library/$PLAIN_IMAGE"
docker push -q "localhost:$REGISTRY_HOST_PORT/library/$PLAIN_IMAGE" >/dev/null

# --- 6. helm install -----------------------------------------------------------------
# The operator resolves app images itself, so it must reach the registries under
# the same names containerd uses; they speak plain HTTP on a non-loopback name.
help=$("$spindle" run --help)
grep -q -- '--resolve-images' <<<"$help" ||
  die "charts/spindle passes --resolve-images to the operator, but \`spindle run\` has no such flag: the chart and the operator are out of step"
chart_args=(-f "$here/values.yaml" --set "image.tag=$OPERATOR_IMAGE_TAG")
if grep -q -- '--insecure-registry' <<<"$help"; then
  resolve=1 resolve_reason=""
  chart_args+=(--set-json "operator.extraArgs=[\"--insecure-registry=$REGISTRY_NAME:5000\",\"--insecure-registry=$AUTH_REGISTRY_NAME:5000\"]")
else
  resolve=0
  resolve_reason="\`spindle run\` has no --insecure-registry flag, so the operator cannot resolve images in the plain-HTTP kind registries; up.sh installed it with operator.resolveImages=false"
  log "warning: $resolve_reason"
  chart_args+=(--set operator.resolveImages=false)
fi
kc create namespace "$DEMO_NAMESPACE" --dry-run=client -o yaml | kc apply -f - >/dev/null
step "helm upgrade --install $RELEASE charts/spindle -n $RELEASE_NAMESPACE"
helm upgrade --install "$RELEASE" "$repo/charts/spindle" -n "$RELEASE_NAMESPACE" --create-namespace \
  "${chart_args[@]}" --wait --timeout 5m

# --- 7. Redis and the demo apps --------------------------------------------------------
step "Redis and the demo SpinApps in $DEMO_NAMESPACE"
kc -n "$DEMO_NAMESPACE" apply -f "$here/manifests/redis.yaml" >/dev/null
kc apply -f "$here/manifests/demo.yaml" >/dev/null
kc -n "$DEMO_NAMESPACE" rollout status deployment/redis --timeout 3m
step "demo SpinApps hello, kv: Deployments Available"
for app in hello kv; do
  deadline=$(($(now) + 180))
  until kc -n "$DEMO_NAMESPACE" get deployment "$app" >/dev/null 2>&1; do
    (($(now) < deadline)) || die "the operator created no Deployment for SpinApp $app: $(kc -n "$DEMO_NAMESPACE" get spinapp "$app" -o yaml)"
    sleep 2
  done
  kc -n "$DEMO_NAMESPACE" wait --for=condition=Available "deployment/$app" --timeout 3m
done

step "writing $state/env"
cat >"$state/env" <<ENV
export SPINDLE_E2E_CLUSTER=kind
export SPINDLE_TEST_KUBECONFIG=$kubeconfig
export KUBECONFIG=$kubeconfig
export SPINDLE_KUBECTL=$kubectl_bin
export SPINDLE_E2E_HELM=$helm_bin
export SPINDLE_E2E_RELEASE=$RELEASE
export SPINDLE_E2E_RELEASE_NAMESPACE=$RELEASE_NAMESPACE
export SPINDLE_E2E_RUNTIME_CLASS=wasmtime-spin-v2
export SPINDLE_E2E_HELLO_IMAGE=$REGISTRY_NAME:5000/spindle/hello:v1@$hello_digest
export SPINDLE_E2E_KV_IMAGE=$REGISTRY_NAME:5000/spindle/kv:v1@$kv_digest
export SPINDLE_E2E_PLAIN_IMAGE=$REGISTRY_NAME:5000/library/$PLAIN_IMAGE
export SPINDLE_E2E_PRIVATE_IMAGE=$AUTH_REGISTRY_NAME:5000/spindle/private-hello:v1@$private_digest
export SPINDLE_E2E_PRIVATE_USER=$AUTH_REGISTRY_USER
export SPINDLE_E2E_PRIVATE_PASSWORD=$AUTH_REGISTRY_PASSWORD
export SPINDLE_E2E_RESOLVE_IMAGES=$resolve
export SPINDLE_E2E_RESOLVE_REASON=$(printf '%q' "$resolve_reason")
ENV
end_step
log "ready after $(($(now) - t0))s. Steps (seconds):"
sed 's/^/  /' "$steps" >&2
log "Next:"
cat >&2 <<MSG
  source $state/env
  cargo test -p spindle-e2e --test scenarios        # the scenarios, against this cluster
  kubectl -n $DEMO_NAMESPACE port-forward svc/hello 8080:80 & curl localhost:8080/health
  e2e/kind/down.sh                                    # delete the cluster and registries
MSG
