//! gRPC connections served on one single-threaded runtime per core.
//!
//! Why: on tokio's multi-thread scheduler a gRPC call costs about half again as much CPU as the
//! same call on one thread. Measured on this project's 2-core bench machine with one node under
//! h2load (50 connections, one call in flight each; `TOKIO_WORKER_THREADS` set on the node,
//! nothing else changed): 28 µs of user CPU per 1-item call with 2 workers against 18.5 µs with 1,
//! and 141 against 110 µs per 100-item call. The difference is spent waking, searching and
//! stealing between workers, and in the cache lines their shared queues and counters bounce.
//! Here each accepted connection is handed, round robin, to one of N threads, each running a
//! current-thread runtime that serves the connection from its first byte to its close: the
//! connection's tasks (hyper's connection task and one task per call) never change threads, so a
//! wake-up is a push onto a local queue.
//!
//! Against the shared multi-thread runtime, under h2load (50 connections, one call in flight
//! each), three paired runs gave 37k, 41k and 52k calls/s against 34k, 25k and 37k, at 20–25 µs of
//! user CPU per call against 24–29 µs.
//!
//! The trade: one connection's calls run on one core. Connections are dealt round robin rather
//! than by the kernel's hash, so clients with at least as many connections as there are cores
//! (many processes, Envoy's workers) are spread evenly; but a few connections carrying many calls
//! each did worse here: 4 connections with 16 calls each gave 30–33k decisions/s against 34–44k
//! shared, at more CPU per decision (bench/analysis.md). `GUBER_GRPC_RUNTIMES=shared` is for them.
//!
//! What runs where: the connections and their calls run here, and so do forwarding's connections
//! to the peers that calls made here opened ([`crate::peer_transport`]: each shard uses its own,
//! [`current_shard`]) and the batches those calls release, so a forwarded item never leaves its
//! thread. Other work that outlives a call (the tonic peer channels, the batchers' timer tasks,
//! `/allow`'s recorded spends) is spawned on the node's main runtime by whoever starts it
//! ([`crate::peers::client::PeerClients`] enters the main runtime when it creates a channel), so
//! that it survives the end of a shard and is joined by its owner.
//!
//! Accepting stays on the main runtime: the connection bound and `TCP_NODELAY` are applied there,
//! then the socket is moved to its shard as a standard socket and registered with the shard's
//! reactor when the shard takes it.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::thread::JoinHandle as ThreadHandle;

use futures_util::{Stream, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::limits::connections::Limited;

/// The connections one shard serves, as tonic's `serve_with_incoming` takes them.
pub type ShardIncoming = Pin<Box<dyn Stream<Item = io::Result<Limited<TcpStream>>> + Send>>;

/// How many runtimes serve gRPC connections (`GUBER_GRPC_RUNTIMES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcRuntimes {
    /// One per core (`auto`, the default).
    PerCore,
    /// Exactly this many (at least 1).
    Count(usize),
    /// None of their own: connections are served on the main multi-thread runtime (`shared`).
    Shared,
}

impl GrpcRuntimes {
    /// The number of shards to start, or `None` to serve on the main runtime.
    pub fn shards(self) -> Option<usize> {
        match self {
            GrpcRuntimes::PerCore => Some(
                std::thread::available_parallelism()
                    .map(usize::from)
                    .unwrap_or(1),
            ),
            GrpcRuntimes::Count(count) => Some(count.max(1)),
            GrpcRuntimes::Shared => None,
        }
    }
}

impl std::str::FromStr for GrpcRuntimes {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim() {
            "auto" => Ok(GrpcRuntimes::PerCore),
            "shared" => Ok(GrpcRuntimes::Shared),
            number => match number.parse::<usize>() {
                Ok(count) if (1..=1024).contains(&count) => Ok(GrpcRuntimes::Count(count)),
                _ => Err(format!(
                    "'{value}' is not 'auto', 'shared' or a number of runtimes from 1 to 1024"
                )),
            },
        }
    }
}

impl std::fmt::Display for GrpcRuntimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GrpcRuntimes::PerCore => f.write_str("auto"),
            GrpcRuntimes::Count(count) => write!(f, "{count}"),
            GrpcRuntimes::Shared => f.write_str("shared"),
        }
    }
}

thread_local! {
    /// On a shard's thread, the shard's index.
    static SHARD: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the gRPC runtime the calling thread runs, or `None` off those threads (the main
/// runtime, `shared`). Work that is best kept on the caller's core (a peer connection) uses it.
pub fn current_shard() -> Option<usize> {
    SHARD.with(Cell::get)
}

/// Starts `count` shard threads, each serving the connections dealt to it with `serve` (called
/// once per shard, on the shard's thread, with that shard's connections), and deals the
/// connections of `incoming` to them round robin. The returned task ends once `incoming` ended
/// and every shard's `serve` returned (the first error wins), after joining the threads.
///
/// `serve` must stop on its own shutdown signal: the shards' incoming streams end only when
/// `incoming` does.
pub fn serve<S, F, Fut, E>(
    count: usize,
    incoming: S,
    serve: F,
) -> io::Result<JoinHandle<Result<(), E>>>
where
    S: Stream<Item = io::Result<Limited<TcpStream>>> + Send + 'static,
    F: Fn(ShardIncoming) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = Result<(), E>> + 'static,
    E: From<ShardError> + Send + 'static,
{
    let count = count.max(1);
    let mut senders = Vec::with_capacity(count);
    let mut shards = Vec::with_capacity(count);
    for index in 0..count {
        let (sender, receiver) = mpsc::unbounded_channel::<Limited<std::net::TcpStream>>();
        let (done, finished) = oneshot::channel();
        let serve = serve.clone();
        let thread = std::thread::Builder::new()
            .name(format!("grpc-{index}"))
            .spawn(move || {
                SHARD.with(|shard| shard.set(Some(index)));
                let outcome = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(serve(shard_incoming(receiver))),
                    Err(error) => Err(ShardError::Runtime(error).into()),
                };
                // The runtime is dropped here: a task the connections left behind ends with it.
                let _ = done.send(outcome);
            })?;
        senders.push(sender);
        shards.push((thread, finished));
    }
    Ok(tokio::spawn(async move {
        deal(incoming, senders).await;
        let mut outcome = Ok(());
        for (thread, finished) in shards {
            let served = finished
                .await
                .unwrap_or_else(|_| Err(ShardError::Panicked.into()));
            if outcome.is_ok() {
                outcome = served;
            }
            join(thread).await;
        }
        outcome
    }))
}

/// Why a shard could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// Its runtime could not be built.
    #[error("cannot start a gRPC runtime: {0}")]
    Runtime(io::Error),
    /// Its thread ended without reporting (a panic).
    #[error("a gRPC runtime's thread panicked")]
    Panicked,
}

/// Hands each accepted connection to the next shard, as a standard socket, until `incoming` ends.
/// Dropping `senders` then ends every shard's incoming stream.
async fn deal<S>(incoming: S, senders: Vec<mpsc::UnboundedSender<Limited<std::net::TcpStream>>>)
where
    S: Stream<Item = io::Result<Limited<TcpStream>>> + Send,
{
    let mut incoming = std::pin::pin!(incoming);
    let mut next = 0usize;
    while let Some(accepted) = incoming.next().await {
        let connection = match accepted.and_then(|limited| limited.try_map(TcpStream::into_std)) {
            Ok(connection) => connection,
            Err(error) => {
                // tonic's own loop logs accept errors and goes on; so does this one.
                tracing::debug!(%error, "gRPC accept failed");
                continue;
            }
        };
        // A shard whose runtime failed has dropped its receiver: try the others.
        let mut connection = Some(connection);
        for _ in 0..senders.len() {
            let sender = &senders[next % senders.len()];
            next = next.wrapping_add(1);
            match connection.take().map(|connection| sender.send(connection)) {
                Some(Err(mpsc::error::SendError(back))) => connection = Some(back),
                _ => break,
            }
        }
    }
}

/// The connections dealt to one shard, registered with the shard's reactor as they are taken
/// (so this must be polled on the shard's runtime).
fn shard_incoming(
    receiver: mpsc::UnboundedReceiver<Limited<std::net::TcpStream>>,
) -> ShardIncoming {
    Box::pin(
        tokio_stream::wrappers::UnboundedReceiverStream::new(receiver)
            .map(|connection| connection.try_map(TcpStream::from_std)),
    )
}

/// Waits for a shard's thread to end without blocking the runtime.
async fn join(thread: ThreadHandle<()>) {
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtimes_parse_auto_shared_and_a_count() {
        assert_eq!("auto".parse(), Ok(GrpcRuntimes::PerCore));
        assert_eq!("shared".parse(), Ok(GrpcRuntimes::Shared));
        assert_eq!("3".parse(), Ok(GrpcRuntimes::Count(3)));
        assert!("0".parse::<GrpcRuntimes>().is_err());
        assert!("many".parse::<GrpcRuntimes>().is_err());
        assert!("1025".parse::<GrpcRuntimes>().is_err());
        assert_eq!(GrpcRuntimes::Shared.shards(), None);
        assert_eq!(GrpcRuntimes::Count(2).shards(), Some(2));
        assert!(GrpcRuntimes::PerCore.shards().is_some_and(|n| n >= 1));
        for runtimes in [
            GrpcRuntimes::PerCore,
            GrpcRuntimes::Shared,
            GrpcRuntimes::Count(7),
        ] {
            assert_eq!(runtimes.to_string().parse(), Ok(runtimes));
        }
    }

    /// Connections are dealt round robin, each served on its shard's own thread, and the task
    /// ends once the incoming stream ended and every shard returned.
    #[tokio::test]
    async fn connections_are_dealt_round_robin_to_threads_of_their_own() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let limit = crate::limits::ConnectionLimit::new(16, "test");
        let accepted = limit
            .limit_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .take(4);
        let (seen, mut threads) = mpsc::unbounded_channel();
        let task = serve(2, accepted, move |incoming: ShardIncoming| {
            let seen = seen.clone();
            async move {
                let mut incoming = incoming;
                while let Some(connection) = incoming.next().await {
                    let _connection = connection.map_err(ShardError::Runtime)?;
                    let _ = seen.send(std::thread::current().name().map(str::to_string));
                }
                Ok::<(), ShardError>(())
            }
        })
        .unwrap();
        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(TcpStream::connect(address).await.unwrap());
        }
        let mut names = Vec::new();
        for _ in 0..4 {
            names.push(threads.recv().await.unwrap().unwrap());
        }
        names.sort();
        assert_eq!(names, ["grpc-0", "grpc-0", "grpc-1", "grpc-1"]);
        tokio::time::timeout(std::time::Duration::from_secs(10), task)
            .await
            .expect("the shards end once the incoming stream ended")
            .unwrap()
            .unwrap();
    }
}
