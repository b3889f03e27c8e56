#!/usr/bin/env bash
# Builds the real Kubernetes control-plane binaries, etcd, kwok and helm from
# Go modules into a cache outside the repo, keyed by version, so that a warm
# machine (and CI in a fresh clone) reuses them and a cold one builds them once.
#
# Usage: e2e/scripts/build-tools.sh [k8s|etcd|kwok|helm|kind|all]...
# Prints nothing but progress; binaries land in $SPINDLE_CACHE/<tool>-<version>/.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=e2e/scripts/versions.sh
source "$here/scripts/versions.sh"

build_k8s() {
  local out="$SPINDLE_CACHE/k8s-$K8S_VERSION"
  if [[ -x $out/kube-apiserver && -x $out/kube-controller-manager && -x $out/kube-scheduler && -x $out/kubectl ]]; then
    return 0
  fi
  echo "build-tools: building Kubernetes $K8S_VERSION (cold: ~15-20 min on 2 cores)" >&2
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local ld=""
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  mkdir -p "$out.tmp"
  (cd "$here/tools/k8s" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $ld" -o "$out.tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubectl)
  rm -rf "$out" && mv "$out.tmp" "$out"
}

build_etcd() {
  local out="$SPINDLE_CACHE/etcd-$ETCD_VERSION"
  [[ -x $out/etcd ]] && return 0
  echo "build-tools: building etcd $ETCD_VERSION" >&2
  mkdir -p "$out.tmp"
  (cd "$here/tools/etcd" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" .)
  rm -rf "$out" && mv "$out.tmp" "$out"
}

build_go_tool() { # name version package
  local name=$1 version=$2 pkg=$3
  local out="$SPINDLE_CACHE/$name-$version"
  [[ -x $out/$name ]] && return 0
  echo "build-tools: building $name $version" >&2
  mkdir -p "$out.tmp"
  (cd "$here/tools/$name" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out.tmp/$name" "$pkg")
  rm -rf "$out" && mv "$out.tmp" "$out"
}

# helm stamps its version and, for `helm template`/`helm lint`, the Kubernetes
# version it assumes offline (from its client-go: v0.37 -> 1.37) with ldflags, as
# its Makefile does; without them it reports "v3.22" and assumes Kubernetes 1.20.
build_helm() {
  local out="$SPINDLE_CACHE/helm-$HELM_VERSION" cg minor ld p
  if [[ -x $out/helm && $("$out/helm" version --template '{{.Version}}' 2>/dev/null) == "$HELM_VERSION" ]]; then
    return 0
  fi
  echo "build-tools: building helm $HELM_VERSION" >&2
  cg=$(cd "$here/tools/helm" && go list -m -f '{{.Version}}' k8s.io/client-go)
  minor=${cg#v0.}; minor=${minor%%.*}
  ld="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ld+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$minor"
  done
  mkdir -p "$out.tmp"
  (cd "$here/tools/helm" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $ld" -o "$out.tmp/helm" helm.sh/helm/v3/cmd/helm)
  rm -rf "$out" && mv "$out.tmp" "$out"
}

# kind is built from e2e/tools/kind/go.mod but cached under KIND_VERSION (e2e/kind/pins.sh):
# refuse a go.mod that requires another version, and a binary that reports another
# one, so that a pin go.mod does not follow fails here instead of running a
# different kind under the pinned name.
build_kind() {
  local out="$SPINDLE_CACHE/kind-$KIND_VERSION" mod
  if [[ -x $out/kind ]]; then
    [[ $("$out/kind" version 2>/dev/null) == "kind $KIND_VERSION "* ]] && return 0
    echo "build-tools: $out/kind is not kind $KIND_VERSION; rebuilding" >&2
    rm -rf "$out"
  fi
  mod=$(cd "$here/tools/kind" && go list -m -f '{{.Version}}' sigs.k8s.io/kind)
  if [[ $mod != "$KIND_VERSION" ]]; then
    echo "build-tools: e2e/tools/kind/go.mod requires sigs.k8s.io/kind $mod but KIND_VERSION is $KIND_VERSION (e2e/kind/pins.sh);" \
      "run: cd e2e/tools/kind && go get sigs.k8s.io/kind@$KIND_VERSION && go mod tidy" >&2
    return 1
  fi
  build_go_tool kind "$KIND_VERSION" sigs.k8s.io/kind
  if [[ $("$out/kind" version) != "kind $KIND_VERSION "* ]]; then
    echo "build-tools: the kind built from e2e/tools/kind reports '$("$out/kind" version)', not $KIND_VERSION" >&2
    rm -rf "$out"
    return 1
  fi
}

# kwok has no built-in stages: the "fast" node/pod stages (nodes become Ready and
# keep a lease, pods become Running and Ready) ship as YAML in its module. Keep a
# copy beside the binary so the control plane needs no Go module cache at run time.
kwok_stages() {
  local out="$SPINDLE_CACHE/kwok-$KWOK_VERSION" dir f
  [[ -s $out/stages.yaml ]] && return 0
  dir=$(cd "$here/tools/kwok" && go mod download sigs.k8s.io/kwok && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
  [[ -n $dir ]] || { echo "build-tools: cannot locate the sigs.k8s.io/kwok module" >&2; return 1; }
  for f in "$dir"/kustomize/stage/{node/fast,node/heartbeat-with-lease,pod/fast}/*.yaml; do
    [[ $(basename "$f") == kustomization.yaml ]] && continue
    printf -- '---\n'; cat "$f"
  done >"$out/stages.yaml.tmp"
  mv "$out/stages.yaml.tmp" "$out/stages.yaml"
}

targets=("$@")
[[ ${#targets[@]} -eq 0 || ${targets[0]} == all ]] && targets=(etcd k8s kwok helm)
for t in "${targets[@]}"; do
  case $t in
    k8s) build_k8s ;;
    etcd) build_etcd ;;
    kwok) build_go_tool kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok && kwok_stages ;;
    helm) build_helm ;;
    kind) build_kind ;;
    *) echo "build-tools: unknown tool $t" >&2; exit 2 ;;
  esac
done
