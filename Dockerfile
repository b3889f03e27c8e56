# syntax=docker/dockerfile:1.7
#
# The Spindle operator image: one static (musl) binary on distroless/static,
# running as the distroless `nonroot` user (65532). No shell, no libc, no
# package manager in the final image.
#
# Multi-arch without emulation: the build stage always runs on the build
# machine's platform ($BUILDPLATFORM) and cross-compiles to the target's musl
# triple with cargo-zigbuild (zig as the C cross compiler/linker for `ring`).
# Only COPY runs in the target-platform stage, so QEMU is never needed.
#
#   docker buildx build --platform linux/amd64,linux/arm64 -t spindle:dev .
#   docker run --rm spindle:dev --version

ARG RUST_VERSION=1.95
ARG ZIG_VERSION=0.14.1
ARG CARGO_ZIGBUILD_VERSION=0.24.1

FROM --platform=$BUILDPLATFORM rust:${RUST_VERSION}-bookworm AS build
ARG TARGETARCH
ARG ZIG_VERSION
ARG CARGO_ZIGBUILD_VERSION
WORKDIR /src

RUN case "$TARGETARCH" in \
      amd64) echo x86_64-unknown-linux-musl > /rust-target ;; \
      arm64) echo aarch64-unknown-linux-musl > /rust-target ;; \
      *) echo "unsupported TARGETARCH $TARGETARCH" >&2; exit 1 ;; \
    esac \
 && rustup target add "$(cat /rust-target)"

# zig (from PyPI's ziglang wheel, which pins the zig release) + cargo-zigbuild.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-pip \
 && rm -rf /var/lib/apt/lists/* \
 && pip3 install --break-system-packages --no-cache-dir "ziglang==${ZIG_VERSION}" \
 && cargo install --locked "cargo-zigbuild@${CARGO_ZIGBUILD_VERSION}"

# The workspace manifests first (see .dockerignore: only the operator and the
# e2e crate's manifest/sources, which the workspace needs to resolve).
COPY Cargo.toml Cargo.lock ./
COPY operator ./operator
COPY e2e/Cargo.toml ./e2e/Cargo.toml
COPY e2e/src ./e2e/src

RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,id=spindle-target-${TARGETARCH},sharing=locked \
    cargo zigbuild --locked --release -p spindle --target "$(cat /rust-target)" \
 && mkdir -p /out \
 && cp "target/$(cat /rust-target)/release/spindle" /out/spindle

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="spindle" \
      org.opencontainers.image.description="Kubernetes operator for Spin WebAssembly apps (drop-in replacement for SpinKube's spin-operator)" \
      org.opencontainers.image.source="https://github.com/spindle-operator/spindle" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/spindle /spindle
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/spindle"]
CMD ["run"]
