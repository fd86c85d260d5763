//! A no-op `pb.gubernator.V1` gRPC server: the floor that ringlimit's own latency and throughput
//! are measured against.
//!
//! ```sh
//! cargo run --release --example noop_server -- --address 127.0.0.1:1151
//! ```
//!
//! It exists so that `bench/run.sh` can compare ringlimit with the cost of gRPC itself: it speaks
//! the same protocol with the same tonic server settings as `ringlimit::server` (the crate's
//! generated `V1Server`, a 1 MiB maximum decoded message, the same response layer, connections
//! accepted through the same `limits::nodelay::incoming`, so with `TCP_NODELAY` set, and served on one
//! current-thread runtime per core as `GUBER_GRPC_RUNTIMES=auto` does), but keeps no
//! state and does no work. `GetRateLimits` answers every item with the same fixed `UNDER_LIMIT`
//! response (as many responses as items), `HealthCheck` says `healthy` and `LiveCheck` succeeds.
//! Whatever a load generator measures here is tonic, HTTP/2, the kernel's loopback and the client;
//! the difference from ringlimit is ringlimit's own cost.
//!
//! Options: `--address HOST:PORT` (default `127.0.0.1:1151`). It prints `listening on ADDRESS` once
//! bound and stops on Ctrl-C or SIGTERM.

use std::net::SocketAddr;

use ringlimit::proto::{self, v1_server::V1, v1_server::V1Server};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

/// The largest request accepted, as `GUBER_MAX_REQUEST_SIZE`'s default in the real server.
const MAX_REQUEST_SIZE: usize = 1024 * 1024;
const DEFAULT_ADDRESS: &str = "127.0.0.1:1151";

/// Why serving stopped.
#[derive(Debug, thiserror::Error)]
enum ServeError {
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error(transparent)]
    Runtime(#[from] ringlimit::grpc_runtimes::ShardError),
}

/// Answers everything at once, remembering nothing.
struct Noop;

#[tonic::async_trait]
impl V1 for Noop {
    async fn get_rate_limits(
        &self,
        request: Request<proto::GetRateLimitsReq>,
    ) -> Result<Response<proto::GetRateLimitsResp>, Status> {
        let items = request.into_inner().requests;
        let responses = items
            .iter()
            .map(|item| proto::RateLimitResp {
                status: proto::Status::UnderLimit as i32,
                limit: item.limit,
                remaining: item.limit,
                reset_time: 0,
                ..Default::default()
            })
            .collect();
        Ok(Response::new(proto::GetRateLimitsResp { responses }))
    }

    async fn health_check(
        &self,
        _request: Request<proto::HealthCheckReq>,
    ) -> Result<Response<proto::HealthCheckResp>, Status> {
        Ok(Response::new(proto::HealthCheckResp {
            status: "healthy".into(),
            peer_count: 1,
            ..Default::default()
        }))
    }

    async fn live_check(
        &self,
        _request: Request<proto::LiveCheckReq>,
    ) -> Result<Response<proto::LiveCheckResp>, Status> {
        Ok(Response::new(proto::LiveCheckResp {}))
    }
}

fn parse_args() -> Result<String, String> {
    let mut address = DEFAULT_ADDRESS.to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--address" => {
                address = args
                    .next()
                    .ok_or_else(|| "--address needs a value".to_string())?;
            }
            "-h" | "--help" => {
                println!("usage: noop_server [--address HOST:PORT]  (default {DEFAULT_ADDRESS})");
                std::process::exit(0);
            }
            other => match other.strip_prefix("--address=") {
                Some(value) => address = value.to_string(),
                None => return Err(format!("unknown argument {other:?}")),
            },
        }
    }
    Ok(address)
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let address = match parse_args() {
        Ok(address) => address,
        Err(message) => {
            eprintln!("noop_server: {message}");
            std::process::exit(2);
        }
    };
    let listener = TcpListener::bind(&address).await?;
    let bound: SocketAddr = listener.local_addr()?;
    println!("listening on {bound}");

    let router = tonic::transport::Server::builder()
        .layer(ringlimit::grpc::oversized_message_layer())
        .add_service(V1Server::new(Noop).max_decoding_message_size(MAX_REQUEST_SIZE));
    // Served like ringlimit's plaintext gRPC port: one current-thread runtime per core.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let connections = ringlimit::limits::ConnectionLimit::new(10_000, "grpc");
    let stop_accepting = {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };
    let shards = ringlimit::grpc_runtimes::GrpcRuntimes::PerCore
        .shards()
        .unwrap_or(1);
    let serving = ringlimit::grpc_runtimes::serve(
        shards,
        futures_util::StreamExt::take_until(
            connections.limit_incoming(ringlimit::limits::nodelay::incoming(listener)),
            stop_accepting,
        ),
        move |incoming| {
            let router = router.clone();
            let mut stopped = stopped.clone();
            async move {
                router
                    .serve_with_incoming_shutdown(incoming, async move {
                        let _ = stopped.wait_for(|stop| *stop).await;
                    })
                    .await
                    .map_err(ServeError::Grpc)
            }
        },
    )?;
    shutdown_signal().await;
    let _ = stop.send(true);
    serving.await??;
    println!("stopped");
    Ok(())
}
