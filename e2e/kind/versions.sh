# shellcheck shell=bash
# Names and test images of the kind-based e2e (e2e/kind/). Sourced by up.sh,
# down.sh, diagnostics.sh and check.sh after e2e/scripts/versions.sh, which loads
# the kind pins (KIND_VERSION, KIND_NODE_BASE, KIND_NODE_K8S_MINOR, SHIM_VERSION)
# from e2e/kind/pins.sh.
# shellcheck disable=SC2034
: "${KIND_NODE_BASE:?source e2e/scripts/versions.sh first (it loads e2e/kind/pins.sh)}"

# The node image we build (node/Dockerfile) and run; a local tag only, never
# pushed. It names every pin it is built from, so that changing one builds a new
# image instead of up.sh reusing the old one.
_node_tag=${KIND_NODE_BASE#kindest/node:}
NODE_IMAGE=spindle-kind-node:${_node_tag%%@*}-kind-${KIND_VERSION}-shim-${SHIM_VERSION}
unset _node_tag

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
