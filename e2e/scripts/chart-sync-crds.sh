#!/usr/bin/env bash
# Copies the generated CRDs (crds/, from `cargo run -p spindle -- crd --out-dir crds`)
# into the Helm chart (charts/spindle/files/crds/), which embeds them as
# templates. e2e/tests/chart.rs fails while the two folders differ.
#
# Usage: e2e/scripts/chart-sync-crds.sh [--check]
#   --check  only compare; exit 1 and show the difference when out of sync
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
src=$repo/crds
dst=$repo/charts/spindle/files/crds
if [[ ${1:-} == --check ]]; then
  if diff -r "$src" "$dst"; then echo "chart CRDs are in sync with crds/"; exit 0; fi
  echo "charts/spindle/files/crds differs from crds/; run e2e/scripts/chart-sync-crds.sh" >&2
  exit 1
fi
mkdir -p "$dst"
rm -f "$dst"/*.yaml
cp "$src"/*.yaml "$dst"/
echo "copied $(ls "$src"/*.yaml | wc -l) CRDs into ${dst#"$repo"/}"
