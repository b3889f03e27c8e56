# shellcheck shell=bash
# Pinned versions of the kind-based e2e (e2e/kind/). Sourced by up.sh, down.sh
# and check.sh; the kind CLI itself is pinned in e2e/scripts/versions.sh
# (KIND_VERSION, built by `e2e/scripts/build-tools.sh kind`).
# shellcheck disable=SC2034

# containerd-shim-spin release installed on the node (Spin 3.6.3; the guest
# apps target it). Upstream publishes a kind node image with the shim only for
# releases after 2026-05-08, so we build our own (e2e/kind/node/Dockerfile).
SHIM_VERSION=v0.24.0

# Base node image. The digest is the one listed for v1.35.0 in kind v0.31.0's
# release notes (a multi-arch index; kind says to always pin node images by
# digest because the image format can change between kind releases).
KIND_NODE_BASE=kindest/node:v1.35.0@sha256:452d707d4862f52530247495d180205e029056831160e22870e37e3f6c1ac31f

# The node image we build and run (local tag only, never pushed).
NODE_IMAGE=spindle-kind-node:v1.35.0-shim-${SHIM_VERSION}

CLUSTER_NAME=${SPINDLE_KIND_CLUSTER:-spindle-e2e}

# Registries on the kind docker network. Containers resolve them by name
# (containerd through /etc/containerd/certs.d/<name>:5000/hosts.toml, pods
# through Docker's embedded DNS that kind forwards to CoreDNS), so an app image
# reference such as kind-registry:5000/spindle/hello:v1 means the same thing to
# containerd on the node and to the operator pod. The host reaches them on
# 127.0.0.1:<host port> (loopback: `spindle push` uses plain HTTP there).
REGISTRY_NAME=kind-registry
REGISTRY_HOST_PORT=${SPINDLE_KIND_REGISTRY_PORT:-5001}
AUTH_REGISTRY_NAME=kind-registry-auth
AUTH_REGISTRY_HOST_PORT=${SPINDLE_KIND_AUTH_REGISTRY_PORT:-5002}
AUTH_REGISTRY_USER=spindle
# A throwaway password for a registry that only exists inside the test cluster.
AUTH_REGISTRY_PASSWORD=e2e-registry-password
REGISTRY_IMAGE=registry:2.8.3
HTPASSWD_IMAGE=httpd:2.4-alpine
REDIS_IMAGE=redis:7.4-alpine
CURL_IMAGE=curlimages/curl:8.11.1
PLAIN_IMAGE=busybox:1.37

# The operator image built from the repository's Dockerfile and `kind load`ed.
OPERATOR_IMAGE_REPO=spindle
OPERATOR_IMAGE_TAG=e2e

RELEASE=spindle
RELEASE_NAMESPACE=spindle-system
DEMO_NAMESPACE=spindle-demo
