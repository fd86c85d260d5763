//! The floor of any peer hop: a relay that copies bytes between each accepted connection and one
//! connection of its own to an upstream server, understanding nothing of what it copies.
//!
//! Why: a forwarded call (`bench/hop.sh`) crosses one more process than a direct one: the
//! forwarding node wakes for the request, the owner wakes, the forwarding node wakes again for the
//! answer. Put in front of `noop_server`, this relay does exactly those wake-ups and those loopback
//! writes and nothing else (no HTTP/2, no decoding, no ring), so its hop
//! (`bench/hop-floor.sh`: p50 through the relay minus p50 straight to `noop_server`, one call in
//! flight) is what no forwarding design can go below on the machine in that minute.
//!
//!   cargo run --release --example tcp_relay -- --listen 127.0.0.1:19201 --upstream 127.0.0.1:19200
//!
//! One current-thread runtime (a forwarding node's connection and its peer connection are served
//! on one thread too); `TCP_NODELAY` on both sockets, as on every ringlimit socket. It prints
//! `relaying LISTEN -> UPSTREAM` once bound and runs until killed.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

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
        _ => Err("usage: tcp_relay --listen HOST:PORT --upstream HOST:PORT".into()),
    }
}

/// Copies both ways between `client` and a new connection to `upstream` until either side closes.
async fn relay(client: TcpStream, upstream: SocketAddr) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    let server = TcpStream::connect(upstream).await?;
    server.set_nodelay(true)?;
    let (mut client, mut server) = (client, server);
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (listen, upstream) = match parse_args() {
        Ok(addresses) => addresses,
        Err(message) => {
            eprintln!("tcp_relay: {message}");
            std::process::exit(2);
        }
    };
    let upstream: SocketAddr = upstream.parse()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(&listen).await?;
        println!("relaying {} -> {upstream}", listener.local_addr()?);
        loop {
            let (client, _) = listener.accept().await?;
            // Each connection's copy runs until one side closes; the process ends when killed.
            tokio::spawn(async move {
                if let Err(error) = relay(client, upstream).await {
                    eprintln!("tcp_relay: {error}");
                }
            });
        }
    })
}
