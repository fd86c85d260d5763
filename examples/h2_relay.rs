//! The floor of an HTTP/2 peer hop: a relay that reads each gRPC call whole on the `h2` crate and
//! makes it again, headers and body as received, on one HTTP/2 connection of its own to an
//! upstream server, then hands the answer back (headers, body, trailers) the same way.
//!
//! Why: `examples/tcp_relay.rs` is the hop's floor with no protocol at all. A forwarding node has
//! to understand HTTP/2 on both sides; this relay does that and nothing more (no decoding, no
//! ring, no batching, no tower), with what ringlimit's own peer transport does
//! ([`ringlimit::peer_transport`]): one current-thread runtime, the upstream connection's task on
//! it, HEADERS and DATA queued together, `TCP_NODELAY` on both sockets. Its hop
//! (`bench/hop-floor.sh`) against `tcp_relay`'s is what HTTP/2 itself costs a forwarded call;
//! against `bench/hop.sh`'s, what ringlimit adds.
//!
//!   cargo run --release --example h2_relay -- --listen 127.0.0.1:19202 --upstream 127.0.0.1:19200
//!
//! It prints `relaying LISTEN -> UPSTREAM` once the upstream connection is open and runs until
//! killed.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use tokio::net::{TcpListener, TcpStream};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn parse_args() -> Result<(String, String), String> {
    let (mut listen, mut upstream) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().ok_or_else(|| format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--listen" => listen = Some(value),
            "--upstream" => upstream = Some(value),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    match (listen, upstream) {
        (Some(listen), Some(upstream)) => Ok((listen, upstream)),
        _ => Err("usage: h2_relay --listen HOST:PORT --upstream HOST:PORT".into()),
    }
}

/// Reads a body to its end, giving back the flow-control capacity as it goes.
async fn read_body(body: &mut h2::RecvStream) -> Result<Bytes, h2::Error> {
    let mut whole = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        whole.extend_from_slice(&chunk);
    }
    Ok(whole.freeze())
}

/// One call: read whole, made again upstream, its answer handed back.
async fn relay_call(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    upstream: h2::client::SendRequest<Bytes>,
) -> Result<(), Error> {
    let (parts, mut body) = request.into_parts();
    let message = read_body(&mut body).await?;
    let mut upstream = upstream.ready().await?;
    let (answer, mut send) = upstream.send_request(http::Request::from_parts(parts, ()), false)?;
    send.send_data(message, true)?;
    let (parts, mut answer_body) = answer.await?.into_parts();
    let answer_message = read_body(&mut answer_body).await?;
    let trailers = answer_body.trailers().await?.unwrap_or_else(HeaderMap::new);
    let mut sending = respond.send_response(http::Response::from_parts(parts, ()), false)?;
    sending.send_data(answer_message, false)?;
    sending.send_trailers(trailers)?;
    Ok(())
}

/// Serves one client connection, each call relayed on the shared upstream connection.
async fn serve(socket: TcpStream, upstream: h2::client::SendRequest<Bytes>) -> Result<(), Error> {
    socket.set_nodelay(true)?;
    let mut connection = h2::server::handshake(socket).await?;
    while let Some(call) = connection.accept().await {
        let (request, respond) = call?;
        let upstream = upstream.clone();
        tokio::spawn(async move {
            if let Err(error) = relay_call(request, respond, upstream).await {
                eprintln!("h2_relay: {error}");
            }
        });
    }
    Ok(())
}

fn main() -> Result<(), Error> {
    let (listen, upstream) = match parse_args() {
        Ok(addresses) => addresses,
        Err(message) => {
            eprintln!("h2_relay: {message}");
            std::process::exit(2);
        }
    };
    let upstream: SocketAddr = upstream.parse()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async move {
        let socket = TcpStream::connect(upstream).await?;
        socket.set_nodelay(true)?;
        let (send_request, connection) = h2::client::handshake(socket).await?;
        // The upstream connection's task, on this thread as a ringlimit peer connection's is.
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                eprintln!("h2_relay: upstream connection: {error}");
            }
        });
        let listener = TcpListener::bind(&listen).await?;
        println!("relaying {} -> {upstream}", listener.local_addr()?);
        loop {
            let (client, _) = listener.accept().await?;
            let upstream = send_request.clone();
            tokio::spawn(async move {
                if let Err(error) = serve(client, upstream).await {
                    eprintln!("h2_relay: {error}");
                }
            });
        }
    })
}
