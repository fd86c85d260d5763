//! A no-op `GetRateLimits` server on the `h2` crate alone: no hyper, no tonic, no tower. It is
//! the floor under `noop_server`'s floor, to tell what the HTTP/2 implementation itself costs per
//! call from what the layers above it (hyper's server, tonic's routing and codec, tower) add.
//!
//! ```sh
//! cargo run --release --example h2_noop_server -- --address 127.0.0.1:1152
//! ```
//!
//! Served as ringlimit's plaintext port is (`TCP_NODELAY`, one current-thread runtime per core,
//! a task per call as hyper spawns one), it answers `/pb.gubernator.V1/GetRateLimits` like
//! `noop_server` (every item `UNDER_LIMIT`), in one DATA frame and `grpc-status: 0` trailers.
//! Any other path gets `grpc-status: 12` (UNIMPLEMENTED). It stops on Ctrl-C or SIGTERM.

use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue};
use prost::Message;
use ringlimit::proto;
use tokio::net::TcpListener;

const DEFAULT_ADDRESS: &str = "127.0.0.1:1152";
/// The largest request accepted, as `GUBER_MAX_REQUEST_SIZE`'s default in the real server.
const MAX_REQUEST_SIZE: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
enum ServeError {
    #[error(transparent)]
    Runtime(#[from] ringlimit::grpc_runtimes::ShardError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn answer(request: &[u8]) -> Option<Bytes> {
    let items = proto::GetRateLimitsReq::decode(request).ok()?.requests;
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
    let message = proto::GetRateLimitsResp { responses };
    let length = message.encoded_len();
    let mut frame = BytesMut::with_capacity(5 + length);
    frame.put_u8(0);
    frame.put_u32(length as u32);
    message.encode_raw(&mut frame);
    Some(frame.freeze())
}

async fn call(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
) -> Result<(), h2::Error> {
    let path_ok = request.uri().path() == "/pb.gubernator.V1/GetRateLimits";
    let mut body = request.into_body();
    let mut received = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        if received.len() + chunk.len() > MAX_REQUEST_SIZE + 5 {
            break;
        }
        received.put(chunk);
    }
    let message = (path_ok && received.len() >= 5)
        .then(|| answer(&received[5..]))
        .flatten();
    let mut head = http::Response::new(());
    head.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    match message {
        Some(message) => {
            let mut stream = respond.send_response(head, false)?;
            stream.send_data(message, false)?;
            let mut trailers = HeaderMap::with_capacity(1);
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            stream.send_trailers(trailers)?;
        }
        None => {
            head.headers_mut()
                .insert("grpc-status", HeaderValue::from_static("12"));
            respond.send_response(head, true)?;
        }
    }
    Ok(())
}

/// The same answers through hyper's HTTP/2 server (no tonic, no tower): `--stack hyper`.
async fn hyper_connection<T>(socket: T)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::BodyExt;
    let service =
        hyper::service::service_fn(|request: http::Request<hyper::body::Incoming>| async move {
            let path_ok = request.uri().path() == "/pb.gubernator.V1/GetRateLimits";
            let received = request.into_body().collect().await?.to_bytes();
            let message = (path_ok && received.len() >= 5)
                .then(|| answer(&received[5..]))
                .flatten();
            let mut trailers = HeaderMap::with_capacity(1);
            let body = match message {
                Some(message) => {
                    trailers.insert("grpc-status", HeaderValue::from_static("0"));
                    http_body_util::StreamBody::new(futures_util::stream::iter([
                        Ok::<_, hyper::Error>(http_body::Frame::data(message)),
                        Ok(http_body::Frame::trailers(trailers)),
                    ]))
                }
                None => {
                    trailers.insert("grpc-status", HeaderValue::from_static("12"));
                    http_body_util::StreamBody::new(futures_util::stream::iter([
                        Ok(http_body::Frame::data(Bytes::new())),
                        Ok(http_body::Frame::trailers(trailers)),
                    ]))
                }
            };
            let mut response = http::Response::new(body);
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            Ok::<_, hyper::Error>(response)
        });
    let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
        .await;
}

async fn connection<T>(socket: T)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Ok(mut connection) = h2::server::handshake(socket).await else {
        return;
    };
    while let Some(Ok((request, respond))) = connection.accept().await {
        tokio::spawn(async move {
            let _ = call(request, respond).await;
        });
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut args = std::env::args().skip(1);
    let mut address = DEFAULT_ADDRESS.to_string();
    let mut hyper = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--address" => address = args.next().ok_or("--address needs a value")?,
            "--stack" => {
                hyper = match args.next().as_deref() {
                    Some("h2") => false,
                    Some("hyper") => true,
                    _ => return Err("--stack needs h2 or hyper".into()),
                }
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let listener = TcpListener::bind(&address).await?;
    let bound: SocketAddr = listener.local_addr()?;
    println!("listening on {bound}");
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
        connections
            .limit_incoming(ringlimit::limits::nodelay::incoming(listener))
            .take_until(stop_accepting),
        move |mut incoming| {
            let mut stopped = stopped.clone();
            async move {
                let mut tasks = tokio::task::JoinSet::new();
                loop {
                    tokio::select! {
                        next = incoming.next() => match next {
                            Some(Ok(socket)) => {
                                if hyper {
                                    tasks.spawn(hyper_connection(socket));
                                } else {
                                    tasks.spawn(connection(socket));
                                }
                            }
                            Some(Err(_)) => continue,
                            None => break,
                        },
                        _ = stopped.wait_for(|stop| *stop) => break,
                    }
                }
                tasks.abort_all();
                Ok::<(), ServeError>(())
            }
        },
    )?;
    tokio::signal::ctrl_c().await?;
    let _ = stop.send(true);
    serving.await??;
    Ok(())
}
