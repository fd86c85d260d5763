//! The async driver of one peer's [`PeerQueue`]: a task that turns queued items into
//! `GetPeerRateLimits` calls and routes each answer back to the caller that is waiting for it.
//!
//! Callers never touch the queue: they send a [`Forward`] over a channel and await a oneshot
//! answer. The task owns the queue and reacts to three events (an item arrives, the batch timer
//! fires, a call finishes), each time asking the pure policy what to send. Every call is bounded by
//! the batch timeout; a failed call fails each of its items with the same [`ForwardError`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::peer_auth::PeerChannel;
use prometheus::{Histogram, IntCounter, IntGauge};
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::{Batch, BatchConfig, BatchConfigError, CallToken, PeerQueue, Push};
use crate::proto::{self, peers_v1_client::PeersV1Client};

/// Why a forwarded item got no answer from its owner.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// The peer call did not finish within the batch timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The peer could not be reached.
    #[error("peer unavailable: {0}")]
    Unavailable(String),
    /// The peer answered the call with an error status.
    #[error("peer answered {code:?}: {message}")]
    Status {
        /// The gRPC code.
        code: tonic::Code,
        /// The peer's message.
        message: String,
    },
    /// The peer answered a different number of items than it was sent.
    #[error("peer answered {answered} items for {sent} requests")]
    Mismatch {
        /// Items sent.
        sent: usize,
        /// Answers received.
        answered: usize,
    },
    /// Too many items are already waiting for this peer.
    #[error("too many items are waiting for this peer")]
    QueueFull,
    /// The peer left the cluster (its queue was closed) before the item was sent.
    #[error("the peer left the cluster")]
    Closed,
    /// The peer is marked down after repeated failures and is not being called for a while.
    #[error("{0}")]
    PeerDown(String),
    /// The item alone is larger than any message the peer accepts; it is dropped, never sent.
    #[error("the item takes {bytes} bytes, more than a peer message may carry ({max_bytes})")]
    TooLarge {
        /// The item's size inside the message.
        bytes: usize,
        /// The byte budget of one message.
        max_bytes: usize,
    },
}

impl ForwardError {
    /// Whether the owner may have moved or recovered, so re-resolving it and retrying once makes
    /// sense (timeouts, unreachable peers, peers that left).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ForwardError::Timeout(_)
                | ForwardError::Unavailable(_)
                | ForwardError::Closed
                | ForwardError::PeerDown(_)
        )
    }
}

/// One item on its way to the owner, with where its answer goes.
pub struct Forward {
    item: proto::RateLimitReq,
    /// The item's size inside a `GetPeerRateLimitsReq` (see [`crate::batching::budget::framed_len`]).
    bytes: usize,
    reply: oneshot::Sender<Result<proto::RateLimitResp, ForwardError>>,
    /// The deadline of the caller's call, if it has one (see [`crate::limits::deadline`]).
    deadline: Option<Instant>,
    /// The caller's span when tracing (the batched call's parent or link), else none.
    span: tracing::Span,
}

/// Counters and timings of one peer's calls.
#[derive(Clone)]
pub struct PeerCallMetrics {
    /// Items forwarded to the peer.
    pub items: IntCounter,
    /// Calls made to the peer (the batching ratio is items / calls).
    pub calls: IntCounter,
    /// Latency of each call, in seconds (`ringlimit_batch_send_duration_seconds`).
    pub duration: Histogram,
    /// The same latency for Gubernator's Summary `gubernator_batch_send_duration`.
    pub duration_summary: crate::metrics::summary::SummarySeries,
    /// Items waiting in the queue.
    pub queue_length: IntGauge,
    /// Items dropped because no message to the peer could carry them.
    pub oversized: IntCounter,
}

/// Told the outcome of every batched call to the peer (for dead-peer detection).
pub type CallObserver = Arc<dyn Fn(Result<(), &ForwardError>) + Send + Sync>;

/// The sending side of one peer's batching task. Cloning shares the task; dropping the last
/// clone lets the task finish what is queued and stop.
#[derive(Clone)]
pub struct PeerBatcher {
    sender: mpsc::Sender<(Forward, bool)>,
}

impl PeerBatcher {
    /// Starts the batching task for the peer behind `client` in `tasks` (its owner's set, which
    /// joins it at shutdown), telling `observer` the outcome of every call. The task ends, after
    /// answering every item it holds, once every clone of the batcher is dropped.
    pub fn spawn_observed(
        peer: &str,
        client: PeersV1Client<PeerChannel>,
        config: BatchConfig,
        timeout: Duration,
        metrics: PeerCallMetrics,
        observer: CallObserver,
        tasks: &mut JoinSet<()>,
    ) -> Result<Self, BatchConfigError> {
        let queue = PeerQueue::new(config)?;
        // The channel only hands items to the task; the queue's own bound refuses the excess.
        let (sender, receiver) = mpsc::channel(queue.config().max_queue.max(1));
        let caller = PeerCaller {
            peer: Arc::from(peer),
            client,
            timeout,
            metrics: Arc::new(metrics),
            observer,
        };
        tasks.spawn(run(queue, receiver, caller));
        Ok(Self { sender })
    }

    /// Sends `item` to the owner (batched unless `no_batching`) and waits for its answer.
    pub async fn forward(
        &self,
        item: proto::RateLimitReq,
        no_batching: bool,
    ) -> Result<proto::RateLimitResp, ForwardError> {
        let (reply, answer) = oneshot::channel();
        let bytes = crate::batching::budget::framed_len(item.encoded_len());
        self.sender
            .try_send((
                Forward {
                    item,
                    bytes,
                    reply,
                    deadline: crate::limits::deadline::current(),
                    span: crate::telemetry::current(),
                },
                no_batching,
            ))
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => ForwardError::QueueFull,
                mpsc::error::TrySendError::Closed(_) => ForwardError::Closed,
            })?;
        answer.await.unwrap_or(Err(ForwardError::Closed))
    }
}

/// Makes the actual `GetPeerRateLimits` calls.
#[derive(Clone)]
struct PeerCaller {
    /// The peer's gRPC address (for traces).
    peer: Arc<str>,
    client: PeersV1Client<PeerChannel>,
    timeout: Duration,
    metrics: Arc<PeerCallMetrics>,
    observer: CallObserver,
}

impl PeerCaller {
    /// Sends `forwards` in one call and answers each in order.
    async fn call(self, mut forwards: Vec<Forward>) {
        // Items whose caller gave up (its deadline passed) are not sent: nobody would see the
        // answer, and the caller was told its hits were not counted.
        forwards.retain(|forward| !forward.reply.is_closed());
        if forwards.is_empty() {
            return;
        }
        let started = Instant::now();
        let timeout = crate::limits::deadline::peer_call_timeout(
            self.timeout,
            forwards.iter().map(|forward| forward.deadline),
            started,
        );
        // One client span, child of the first caller's span and linked to the others'.
        let span = crate::telemetry::peer_span(
            crate::telemetry::PeerCall::Forward,
            &self.peer,
            forwards.len(),
            forwards.first().map(|forward| &forward.span),
            forwards.iter().skip(1).map(|forward| &forward.span),
        );
        let (items, replies): (Vec<_>, Vec<_>) = forwards
            .into_iter()
            .map(|forward| (forward.item, forward.reply))
            .unzip();
        let sent = items.len();
        self.metrics.calls.inc();
        self.metrics.items.inc_by(sent as u64);
        let mut client = self.client;
        // The peer bounds its own work by the same timeout (`grpc-timeout`).
        let mut request = tonic::Request::new(proto::GetPeerRateLimitsReq { requests: items });
        request.set_timeout(timeout);
        let call = client
            .get_peer_rate_limits(request)
            .instrument(span.clone());
        let outcome = match tokio::time::timeout(timeout, call).await {
            Err(_) => Err(ForwardError::Timeout(timeout)),
            // The client's own `grpc-timeout` can fire a moment before ours: still a timeout.
            Ok(Err(status))
                if matches!(
                    status.code(),
                    tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
                ) && started.elapsed() >= timeout =>
            {
                Err(ForwardError::Timeout(timeout))
            }
            Ok(Err(status)) => Err(status_error(status)),
            Ok(Ok(response)) => {
                let answers = response.into_inner().rate_limits;
                if answers.len() == sent {
                    Ok(answers)
                } else {
                    Err(ForwardError::Mismatch {
                        sent,
                        answered: answers.len(),
                    })
                }
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        self.metrics.duration.observe(seconds);
        self.metrics.duration_summary.observe(seconds);
        (self.observer)(outcome.as_ref().map(|_| ()));
        if let Err(error) = &outcome {
            crate::telemetry::record_error(&span, error);
        }
        match outcome {
            Ok(answers) => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    // A caller that gave up no longer listens; nothing to do.
                    let _ = reply.send(Ok(answer));
                }
            }
            Err(error) => {
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}

impl From<tonic::Status> for ForwardError {
    fn from(status: tonic::Status) -> Self {
        status_error(status)
    }
}

fn status_error(status: tonic::Status) -> ForwardError {
    // A connection that fails under a call (the peer died) is reported as `Unknown` with the
    // transport error as its source: the peer is unreachable, not answering with an error.
    let broken_connection = std::error::Error::source(&status)
        .is_some_and(|source| source.is::<tonic::transport::Error>());
    if broken_connection {
        return ForwardError::Unavailable(status.message().to_string());
    }
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Cancelled => {
            ForwardError::Unavailable(status.message().to_string())
        }
        tonic::Code::DeadlineExceeded => ForwardError::Unavailable(status.message().to_string()),
        code => ForwardError::Status {
            code,
            message: status.message().to_string(),
        },
    }
}

/// The batching task: owns the queue until every sender is gone and every call has finished.
async fn run(
    mut queue: PeerQueue<Forward>,
    mut receiver: mpsc::Receiver<(Forward, bool)>,
    caller: PeerCaller,
) {
    let mut in_flight: JoinSet<CallToken> = JoinSet::new();
    // Calls of items sent alone: not counted by the policy, but owned (and awaited) here too.
    let mut alone: JoinSet<()> = JoinSet::new();
    let mut open = true;
    while open || !in_flight.is_empty() || !queue.is_empty() || !alone.is_empty() {
        caller
            .metrics
            .queue_length
            .set(i64::try_from(queue.len()).unwrap_or(i64::MAX));
        let deadline = queue.next_deadline();
        tokio::select! {
            received = receiver.recv(), if open => match received {
                Some((forward, no_batching)) => {
                    let bytes = forward.bytes;
                    match queue.push_sized(forward, bytes, no_batching, Instant::now()) {
                        Push::Send(batch) => start(&mut in_flight, &caller, batch),
                        Push::SendAlone(forward) => {
                            alone.spawn(caller.clone().call(vec![forward]));
                        }
                        Push::Refused(forward) => {
                            let _ = forward.reply.send(Err(ForwardError::QueueFull));
                        }
                        Push::Oversized(forward) => {
                            caller.metrics.oversized.inc();
                            let _ = forward.reply.send(Err(ForwardError::TooLarge {
                                bytes,
                                max_bytes: queue.config().max_bytes,
                            }));
                        }
                        Push::Queued { .. } => {}
                    }
                }
                None => open = false,
            },
            Some(finished) = in_flight.join_next(), if !in_flight.is_empty() => {
                // A call task cannot panic; if it somehow did, its slot stays taken rather than
                // corrupting the count.
                if let Ok(token) = finished
                    && let Some(batch) = queue.on_call_finished(token, Instant::now())
                {
                    start(&mut in_flight, &caller, batch);
                }
            },
            Some(_) = alone.join_next(), if !alone.is_empty() => {},
            _ = sleep_until(deadline), if deadline.is_some() => {
                if let Some(batch) = queue.on_timer(Instant::now()) {
                    start(&mut in_flight, &caller, batch);
                }
            },
            else => {
                // Closed, nothing in flight, and the queue can only move on a timer or a free
                // slot that will never come: answer what is left.
                for forward in queue.drain() {
                    let _ = forward.reply.send(Err(ForwardError::Closed));
                }
                break;
            }
        }
    }
}

fn start(in_flight: &mut JoinSet<CallToken>, caller: &PeerCaller, batch: Batch<Forward>) {
    let Batch { items, call } = batch;
    let caller = caller.clone();
    in_flight.spawn(async move {
        caller.call(items).await;
        call
    });
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
