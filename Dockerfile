# Build: docker build -t ringlimit .   (or `docker compose up --build` for an etcd-backed 3-node cluster)
#
# Stage 1 compiles with protoc (the release profile strips symbols and debug information).
# Stage 2 is distroless: the binary, glibc and libgcc, CA certificates, and nothing else: no shell,
# no package manager. The binary only needs libc, libm and libgcc_s (checked with
# `readelf -d target/release/ringlimit`), which distroless/cc provides; both stages are Debian 12, so
# the glibc the binary was linked against is the one it runs with.
FROM rust:1.95-bookworm AS build
RUN apt-get update -qq && apt-get install -y -qq protobuf-compiler && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# .git is not copied (.dockerignore): pass the commit for `ringlimit --version`, e.g.
# docker build --build-arg RINGLIMIT_GIT_COMMIT=$(git rev-parse --short HEAD) .
ARG RINGLIMIT_GIT_COMMIT=unknown
RUN cargo build --release --locked --bin ringlimit

FROM gcr.io/distroless/cc-debian12
COPY --from=build /src/target/release/ringlimit /usr/local/bin/ringlimit
# Numeric, so that Kubernetes' runAsNonRoot can verify it without a passwd lookup (the manifests
# in deploy/kubernetes/ run as the same uid).
USER 10001:10001
ENV GUBER_GRPC_ADDRESS=0.0.0.0:1051 \
    GUBER_HTTP_ADDRESS=0.0.0.0:1050
EXPOSE 1050 1051
# `ringlimit healthcheck` asks this node's HTTP /v1/HealthCheck (at GUBER_HTTP_ADDRESS): exit 0
# healthy, 2 unhealthy (a peer call failed recently, or the node is draining), 1 on error. Docker
# counts every non-zero exit as a failed check. Kubernetes ignores HEALTHCHECK and uses the probes
# in deploy/kubernetes/ instead. Exec form: the image has no shell.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/ringlimit", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/ringlimit"]
