#!/usr/bin/env bash
# Tears down what e2e/kind/up.sh created: the kind cluster, the two registry
# containers (by their names) and the state dir. The built images (node,
# operator) stay in the local Docker image store for the next up.sh.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=e2e/scripts/versions.sh
source "$repo/e2e/scripts/versions.sh"
# shellcheck source=e2e/kind/versions.sh
source "$here/versions.sh"
state=${SPINDLE_KIND_STATE:-$repo/.spindle/kind}
kind_bin=$SPINDLE_CACHE/kind-$KIND_VERSION/kind

[[ -x $kind_bin ]] || "$repo/e2e/scripts/build-tools.sh" kind
if "$kind_bin" get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
  "$kind_bin" delete cluster --name "$CLUSTER_NAME"
else
  echo "kind-down: no cluster $CLUSTER_NAME" >&2
fi
for r in "$REGISTRY_NAME" "$AUTH_REGISTRY_NAME"; do
  if docker inspect "$r" >/dev/null 2>&1; then docker rm -f "$r" >/dev/null && echo "kind-down: removed $r" >&2; fi
done
rm -rf "$state"
