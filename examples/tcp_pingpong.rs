//! The machine's floor for one loopback round trip: a client thread writes 64 bytes to a TCP echo
//! thread and waits for them back, one at a time, and prints the p50 and p99 of the round trips.
//!
//! Why: the peer hop (a forwarded call's p50 minus a direct call's, `bench/hop.sh`) contains one
//! more loopback round trip between two processes that sleep while they wait. On this shared VM
//! that round trip alone moves between about 24 and 75 µs from hour to hour (waking an idle vCPU
//! costs most of it), so the hop is only comparable with the floor measured in the same minute.
//! Both threads block in `read`, as the nodes' threads block in `epoll_wait`; `TCP_NODELAY` on both
//! sockets, as on every ringlimit socket.
//!
//!   cargo run --release --example tcp_pingpong -- [--json] [ROUND_TRIPS=20000]
//!
//! `--json` prints `{"p50_us":…,"p99_us":…,"round_trips":…}` (bench/run.sh reads it).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// The size of each message: about a 1-item peer request's HTTP/2 frames.
const MESSAGE: usize = 64;

fn main() -> std::io::Result<()> {
    let mut json = false;
    let mut round_trips: usize = 20_000;
    for argument in std::env::args().skip(1) {
        if argument == "--json" {
            json = true;
        } else {
            round_trips = argument.parse().map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "usage: tcp_pingpong [--json] [ROUND_TRIPS]",
                )
            })?;
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut socket, _) = listener.accept()?;
        socket.set_nodelay(true)?;
        let mut message = [0u8; MESSAGE];
        // Ends when the client closes its socket.
        while socket.read_exact(&mut message).is_ok() {
            socket.write_all(&message)?;
        }
        Ok(())
    });
    let mut client = TcpStream::connect(address)?;
    client.set_nodelay(true)?;
    let mut message = [7u8; MESSAGE];
    let mut latencies = Vec::with_capacity(round_trips);
    for _ in 0..round_trips.max(1) {
        let sent = Instant::now();
        client.write_all(&message)?;
        client.read_exact(&mut message)?;
        latencies.push(sent.elapsed());
    }
    drop(client);
    echo.join()
        .map_err(|_| std::io::Error::other("the echo thread panicked"))??;
    latencies.sort();
    let at = |quantile: f64| -> Duration {
        latencies[((latencies.len() - 1) as f64 * quantile) as usize]
    };
    let (p50, p99) = (at(0.5).as_micros(), at(0.99).as_micros());
    if json {
        println!(
            "{{\"p50_us\":{p50},\"p99_us\":{p99},\"round_trips\":{}}}",
            latencies.len()
        );
    } else {
        println!(
            "tcp round trip: p50 {p50} us, p99 {p99} us ({} round trips)",
            latencies.len()
        );
    }
    Ok(())
}
