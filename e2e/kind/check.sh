#!/usr/bin/env bash
# Static checks of the kind e2e that run WITHOUT Docker (CI's build machine
# has none):
#
#   0. the kind pins (e2e/kind/pins.sh) belong together: the node image is one
#      that KIND_VERSION's release notes list (e2e/kind/node-images.tsv), its
#      Kubernetes minor is KIND_NODE_K8S_MINOR and among the minors that release
#      lists; e2e/tools/kind/go.mod and the built binary are KIND_VERSION; the
#      table agrees with the default image in the kind module; no other file
#      names a kindest/node image. A known-bad pair must be rejected.
#   1. shellcheck of e2e/kind/*.sh
#   2. cluster.yaml through kind's own config loader and validation: the pinned
#      `kind create cluster` runs against a stand-in `docker` that answers the
#      provider probes and refuses the first provisioning command. Reaching
#      that command means kind decoded the file strictly (unknown fields fail)
#      and validated it. A deliberately broken copy must fail before it.
#   3. the containerd patches: valid TOML, merged (as kind does, a TOML merge)
#      into kind's own base config.toml from the kind module, giving the spin
#      runtime next to runc and the registry config_path
#   4. the manifests (redis, curl, demo apps, and `helm template` of
#      charts/spindle with e2e/kind/values.yaml) with `kubectl apply
#      --dry-run=server` against the control plane in $SPINDLE_TEST_KUBECONFIG
#      (skipped, and said so, when it is not set)
#
# Usage: e2e/kind/check.sh            prints "N passed, N failed, N skipped"
#        SPINDLE_KIND_PINS=/tmp/pins.sh e2e/kind/check.sh   checks another copy of pins.sh
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=e2e/scripts/versions.sh
source "$repo/e2e/scripts/versions.sh"
# shellcheck source=e2e/kind/versions.sh
source "$here/versions.sh"

passed=0 failed=0 skipped=0
ok() { echo "ok    $*"; passed=$((passed + 1)); }
bad() { echo "FAIL  $*"; failed=$((failed + 1)); }
skip() { echo "skip  $*"; skipped=$((skipped + 1)); }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# 0 ---------------------------------------------------------------------------
table=$here/node-images.tsv
# pin_problems KIND_VERSION NODE_IMAGE MINOR: why the three do not belong together,
# one line each, from the table; prints nothing when they do.
pin_problems() {
  local kv=$1 img=$2 minor=$3 tag tag_minor listed minors other
  if [[ ! $img =~ ^kindest/node:(v1\.([0-9]+)\.[0-9]+)@sha256:[0-9a-f]{64}$ ]]; then
    echo "node image '$img' is not kindest/node:v1.X.Y@sha256:<digest> (kind says to pin the digest)"
    return
  fi
  tag=${BASH_REMATCH[1]} tag_minor=1.${BASH_REMATCH[2]}
  [[ $tag_minor == "$minor" ]] || echo "node image $tag runs Kubernetes $tag_minor, but KIND_NODE_K8S_MINOR is $minor"
  minors=$(awk -F'\t' -v r="$kv" '!/^#/ && $1 == r {print $2}' "$table" | sort -uV | tr '\n' ' ')
  if [[ -z $minors ]]; then
    echo "kind $kv has no rows in e2e/kind/node-images.tsv (add its release notes' images first)"
    return
  fi
  if [[ " $minors" != *" $tag_minor "* ]]; then
    echo "Kubernetes $tag_minor is not among the minors kind $kv supports: ${minors% }"
  fi
  listed=$(awk -F'\t' -v r="$kv" -v m="$tag_minor" '!/^#/ && $1 == r && $2 == m {print $3}' "$table")
  if ! grep -qxF -- "$img" <<<"$listed"; then
    other=$(awk -F'\t' -v i="$img" '!/^#/ && $3 == i {print $1}' "$table" | tr '\n' ' ')
    echo "$img is not a node image of kind $kv${listed:+ (its $tag_minor image: $listed)}${other:+; it was built for kind ${other% }}"
  fi
}
problems=$(pin_problems "$KIND_VERSION" "$KIND_NODE_BASE" "$KIND_NODE_K8S_MINOR")
if [[ -z $problems ]]; then
  ok "pins: kind $KIND_VERSION, node $KIND_NODE_BASE (Kubernetes $KIND_NODE_K8S_MINOR, shim $SHIM_VERSION) are listed together in node-images.tsv"
else
  bad "pins do not belong together (e2e/kind/pins.sh vs e2e/kind/node-images.tsv):"$'\n'"$problems"
fi
# The pair this repository had before node-images.tsv: kind v0.30.0 with kind v0.31.0's
# v1.35.0 image. The check must reject it, or passing above proves nothing.
problems=$(pin_problems v0.30.0 \
  kindest/node:v1.35.0@sha256:452d707d4862f52530247495d180205e029056831160e22870e37e3f6c1ac31f 1.35)
if grep -q "not among the minors kind v0.30.0 supports" <<<"$problems"; then
  ok "pins: a mismatched pair is rejected (kind v0.30.0 + kindest/node:v1.35.0: $(head -n1 <<<"$problems"))"
else
  bad "pins: kind v0.30.0 with kindest/node:v1.35.0 was not rejected, so the pin check proves nothing:"$'\n'"$problems"
fi
mod_version=$(cd "$repo/e2e/tools/kind" && go list -m -f '{{.Version}}' sigs.k8s.io/kind)
if [[ $mod_version == "$KIND_VERSION" ]]; then
  ok "pins: e2e/tools/kind/go.mod requires sigs.k8s.io/kind $KIND_VERSION"
else
  bad "pins: e2e/tools/kind/go.mod requires sigs.k8s.io/kind $mod_version, KIND_VERSION is $KIND_VERSION"
fi
# The default node image compiled into that kind release must be one of the table's
# rows for it: ties the table to the release's own source, not only to its notes.
kind_mod=$(cd "$repo/e2e/tools/kind" && go list -m -f '{{.Dir}}' sigs.k8s.io/kind)
default_image=$(sed -n 's/^const Image = "\(.*\)"$/\1/p' "$kind_mod/pkg/apis/config/defaults/image.go")
if [[ -n $default_image ]] && awk -F'\t' -v r="$mod_version" -v i="$default_image" \
  '!/^#/ && $1 == r && $3 == i {f=1} END {exit !f}' "$table"; then
  ok "pins: kind $mod_version's default image ($default_image, from its module) is in node-images.tsv"
else
  bad "pins: kind $mod_version's default image '${default_image:-<not found in image.go>}' is not a node-images.tsv row for $mod_version"
fi
# One source of truth: no other file in e2e/ or .github/ may name a kindest/node image.
if strays=$(grep -rnI --exclude=pins.sh --exclude=node-images.tsv --exclude=check.sh 'kindest/node:v' \
  "$repo/e2e" "$repo/.github" 2>/dev/null); then
  bad "pins: kindest/node named outside e2e/kind/pins.sh:"$'\n'"$strays"
else
  ok "pins: no file in e2e/ or .github/ but pins.sh names a kindest/node image"
fi

# 1 ---------------------------------------------------------------------------
if shellcheck --severity=warning -x "$here"/*.sh; then ok "shellcheck e2e/kind/*.sh"; else bad "shellcheck e2e/kind/*.sh"; fi

# 2 ---------------------------------------------------------------------------
# A failed build is a failed check (build-tools.sh refuses a kind that is not
# KIND_VERSION); the checks below then fail on the missing binary.
"$repo/e2e/scripts/build-tools.sh" kind || bad "build-tools.sh kind ($KIND_VERSION)"
kind_bin=$SPINDLE_CACHE/kind-$KIND_VERSION/kind
if [[ $("$kind_bin" version 2>&1) == "kind $KIND_VERSION "* ]]; then
  ok "pins: the built kind reports $KIND_VERSION"
else
  bad "pins: $kind_bin reports '$("$kind_bin" version 2>&1)', not $KIND_VERSION"
fi
mkdir -p "$tmp/bin"
cat >"$tmp/bin/docker" <<'FAKE'
#!/usr/bin/env bash
# Stand-in for the docker CLI: enough for kind's provider probes, nothing more.
echo "$*" >>"$FAKE_DOCKER_LOG"
case "$1 ${2:-}" in
  "-v "*) echo "Docker version 28.0.0, build fake" ;;
  "info "*) echo '{"CgroupDriver":"systemd","CgroupVersion":"2","MemoryLimit":true,"PidsLimit":true,"CPUShares":true,"SecurityOptions":["name=seccomp,profile=builtin","name=cgroupns"]}' ;;
  "ps "*) ;; # no existing cluster nodes
  *) echo "fake-docker: stop at: docker $*" >&2; exit 42 ;;
esac
FAKE
chmod +x "$tmp/bin/docker"
kind_dry() { # config -> output of a `kind create cluster` that stops at provisioning
  FAKE_DOCKER_LOG=$tmp/docker.log PATH="$tmp/bin:$PATH" KIND_EXPERIMENTAL_PROVIDER=docker \
    "$kind_bin" create cluster --config "$1" --image "$NODE_IMAGE" --kubeconfig "$tmp/kubeconfig" 2>&1 || true
}
: >"$tmp/docker.log"
out=$(kind_dry "$here/cluster.yaml")
if grep -q "fake-docker: stop at: docker" <<<"$out" && grep -q "Creating cluster \"spindle-e2e\"" <<<"$out" \
  && grep -q -- "$NODE_IMAGE" "$tmp/docker.log"; then
  ok "kind $KIND_VERSION loads and validates cluster.yaml (stopped at: $(grep -o 'stop at: docker .*' <<<"$out" | head -c 120))"
else
  bad "kind rejected cluster.yaml or did not reach provisioning:"$'\n'"$out"
fi
sed 's/^nodes:/bogusField: 1\nnodes:/' "$here/cluster.yaml" >"$tmp/broken.yaml"
out=$(kind_dry "$tmp/broken.yaml")
if ! grep -q "fake-docker: stop at" <<<"$out" && grep -qi "bogusField" <<<"$out"; then
  ok "kind rejects a cluster.yaml with an unknown field (the check can fail)"
else
  bad "kind accepted an unknown field, so the check above proves nothing:"$'\n'"$out"
fi

# 3 ---------------------------------------------------------------------------
if python3 - "$here/cluster.yaml" "$kind_mod/images/base/files/etc/containerd/config.toml" <<'PY'; then
import sys, tomllib, yaml
cfg = yaml.safe_load(open(sys.argv[1]))
base = tomllib.load(open(sys.argv[2], "rb"))
def merge(a, b):  # a TOML merge patch, as kind applies containerdConfigPatches
    for k, v in b.items():
        a[k] = merge(a.get(k, {}), v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
    return a
assert base.get("version") == 2, f"kind's base containerd config is version {base.get('version')}, the patches assume 2"
for p in cfg["containerdConfigPatches"]:
    base = merge(base, tomllib.loads(p))
cri = base["plugins"]["io.containerd.grpc.v1.cri"]
rt = cri["containerd"]["runtimes"]
assert rt["spin"]["runtime_type"] == "io.containerd.spin.v2", rt.get("spin")
assert rt["spin"]["options"]["SystemdCgroup"] is True, rt["spin"]
assert rt["runc"]["runtime_type"] == "io.containerd.runc.v2", "the patch clobbered runc"
assert cri["containerd"]["default_runtime_name"] == "runc"
assert cri["registry"]["config_path"] == "/etc/containerd/certs.d"
PY
  ok "containerd patches are TOML and merge into kind's base config (spin + runc + config_path)"
else
  bad "containerd patches do not merge into kind's base config as intended"
fi

# 4 ---------------------------------------------------------------------------
if [[ -z ${SPINDLE_TEST_KUBECONFIG:-} ]]; then
  skip "server-side dry runs: SPINDLE_TEST_KUBECONFIG is not set (source <(e2e/scripts/controlplane.sh env))"
else
  kubectl_bin=${SPINDLE_KUBECTL:-$SPINDLE_CACHE/k8s-$K8S_VERSION/kubectl}
  kc() { "$kubectl_bin" --kubeconfig "$SPINDLE_TEST_KUBECONFIG" "$@"; }
  # Only the CRDs the manifests use (core.spinkube.dev).
  for crd in spinapps spinappexecutors; do
    kc apply --server-side --force-conflicts --field-manager spindle-e2e \
      -f "$repo/crds/$crd.core.spinkube.dev.yaml" >/dev/null
    kc wait --for=condition=Established "crd/$crd.core.spinkube.dev" --timeout 30s >/dev/null
  done
  ns=spindle-kind-check-$RANDOM
  created_demo=0
  kc create namespace "$ns" >/dev/null
  if ! kc get namespace "$DEMO_NAMESPACE" >/dev/null 2>&1; then
    kc create namespace "$DEMO_NAMESPACE" >/dev/null
    created_demo=1
  fi
  for f in redis.yaml curl.yaml; do
    if out=$(kc -n "$ns" apply --dry-run=server -f "$here/manifests/$f" 2>&1); then ok "dry-run=server manifests/$f"; else bad "dry-run=server manifests/$f: $out"; fi
  done
  # demo.yaml references the chart's executor, which need not exist for a dry run.
  if out=$(kc apply --dry-run=server -f "$here/manifests/demo.yaml" 2>&1); then ok "dry-run=server manifests/demo.yaml"; else bad "dry-run=server manifests/demo.yaml: $out"; fi
  helm_bin=$SPINDLE_CACHE/helm-$HELM_VERSION/helm
  "$repo/e2e/scripts/build-tools.sh" helm
  # The values exactly as up.sh passes them (both variants of the registry flags).
  for variant in no-resolve insecure-registry; do
    if [[ $variant == no-resolve ]]; then
      extra=(--set operator.resolveImages=false)
    else
      extra=(--set-json "operator.extraArgs=[\"--insecure-registry=$REGISTRY_NAME:5000\"]")
    fi
    if rendered=$(HELM_CACHE_HOME=$tmp/h HELM_CONFIG_HOME=$tmp/h HELM_DATA_HOME=$tmp/h "$helm_bin" template "$RELEASE" \
      "$repo/charts/spindle" -n "$RELEASE_NAMESPACE" -f "$here/values.yaml" --set "image.tag=$OPERATOR_IMAGE_TAG" \
      "${extra[@]}" --kubeconfig "$SPINDLE_TEST_KUBECONFIG" 2>&1); then
      # The release namespace must exist for namespaced objects; the CRDs exist already.
      kc create namespace "$RELEASE_NAMESPACE" --dry-run=client -o yaml | kc apply -f - >/dev/null
      if out=$(kc apply --dry-run=server -f - <<<"$rendered" 2>&1); then
        ok "helm template charts/spindle -f e2e/kind/values.yaml ($variant) | kubectl apply --dry-run=server"
      else
        bad "dry-run=server of the chart with e2e/kind/values.yaml ($variant): $out"
      fi
    else
      bad "helm template with e2e/kind/values.yaml ($variant): $rendered"
    fi
  done
  kc delete namespace "$ns" --wait=false >/dev/null
  ((created_demo)) && kc delete namespace "$DEMO_NAMESPACE" --wait=false >/dev/null
fi

echo "kind-check: $passed passed, $failed failed, $skipped skipped"
# The plain total e2e/scripts/test.sh adds up (a skip is not a pass).
echo "$passed passed, $failed failed"
((failed == 0))
