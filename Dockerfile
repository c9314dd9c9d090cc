# syntax=docker/dockerfile:1
# podscope: one image for the hub, the node agent, the CLI and the kubectl
# plugin (kubectl-podscope is a link to the same binary).
#
#   docker build -t REGISTRY/podscope:0.1.0 .
#
# The agent must run as root (with CAP_BPF, CAP_PERFMON, ... in its pod's
# securityContext), so the image does not set USER; the hub's pod runs it as
# uid 65532 (deploy/).

FROM rust:1.95-bookworm AS builder
# clang + llvm: the BPF programs (bpf/*.bpf.c); libelf, zlib, pkg-config:
# libbpf; protoc: the hub <-> agent gRPC code.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        clang llvm libelf-dev zlib1g-dev pkg-config protobuf-compiler \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The cache mounts keep the registry and the build directory between builds;
# the binary is copied out of the cached target directory.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p podscope \
    && install -D -m 0755 target/release/podscope /out/podscope

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends libelf1 zlib1g ca-certificates \
       iproute2 tcpdump iperf3 procps dnsutils curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=builder /out/podscope /usr/local/bin/podscope
RUN ln -s podscope /usr/local/bin/kubectl-podscope
LABEL org.opencontainers.image.title="podscope" \
      org.opencontainers.image.description="eBPF tracing of what the processes in pods do in the kernel" \
      org.opencontainers.image.licenses="Apache-2.0"
ENTRYPOINT ["/usr/local/bin/podscope"]
CMD ["--help"]
