# Build: docker build -t ringlimit .   (or `docker compose up --build` for an etcd-backed 3-node cluster)
# Stage 1 compiles with protoc; stage 2 is a slim runtime that runs the binary as a non-root user.
FROM rust:1.95-bookworm AS build
RUN apt-get update -qq && apt-get install -y -qq protobuf-compiler && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin ringlimit

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 ringlimit
COPY --from=build /src/target/release/ringlimit /usr/local/bin/ringlimit
USER ringlimit
ENV GUBER_GRPC_ADDRESS=0.0.0.0:1051 \
    GUBER_HTTP_ADDRESS=0.0.0.0:1050
EXPOSE 1050 1051
ENTRYPOINT ["/usr/local/bin/ringlimit"]
