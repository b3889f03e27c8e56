# shellcheck shell=bash
# The kind pins, in one place. The kind CLI and the node image it runs must come
# from the same kind release: kind supports a node image only with the release
# that built it, and each release's notes list those images by digest. The
# facts, with where each comes from, are in e2e/kind/node-images.tsv;
# e2e/kind/check.sh fails when these pins disagree with it, with the kind Go
# module (e2e/tools/kind/go.mod) or with the kind binary built from it.
#
# Sourced by e2e/scripts/versions.sh (build-tools.sh builds KIND_VERSION) and so
# by every e2e/kind script. SPINDLE_KIND_PINS=<file> makes them use another copy
# of this file instead: how to try a new pair (check.sh, then up.sh) before
# committing it.
# shellcheck disable=SC2034

# kind CLI. e2e/tools/kind/go.mod must require exactly this version.
KIND_VERSION=v0.33.0

# Base node image: the v1.35 image listed in kind v0.33.0's release notes
# (tag@digest; the digest, not the tag, names the build for that release).
KIND_NODE_BASE=kindest/node:v1.35.8@sha256:07b2536e30b803ed61d1677a79df6115f798ce64c80f9e22f6ed45afd09323c0

# The Kubernetes minor the node runs: the one containerd-shim-spin tests its own
# kind node image on (kindest/node:v1.35.x). Must be the minor of the tag above
# and among the minors KIND_VERSION lists.
KIND_NODE_K8S_MINOR=1.35

# containerd-shim-spin release installed on the node (Spin 3.6.3; the guest apps
# target it). Built into our own node image (e2e/kind/node/Dockerfile).
SHIM_VERSION=v0.24.0
