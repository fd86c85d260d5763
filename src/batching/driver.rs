//! The async driver of one peer's [`PeerQueue`]: it turns forwarded items into
//! `GetPeerRateLimits` calls and routes each answer back to the caller that is waiting for it.
//!
//! The queue sits behind a mutex that callers take for the moment of a push. When the policy says
//! a forwarded item goes at once and alone (the peer is idle), the caller makes the call from its
//! own task: at low load a forwarded item costs one peer call and no hand-off between tasks (the
//! peer hop was 130–235 µs over a direct call when every item went through a batching task and a
//! task per call). Items that queue behind a call in flight are sent by a task when the call
//! finishes or their wait is due, several to a call; the caller whose item started the queue
//! keeps its time ([`Watch`]), on its own thread. One small task per peer keeps the time of a
//! queue nobody else keeps (its keeper gave up, or a full batch left items behind) and, when the
//! peer leaves, waits for the calls in flight and answers what is left.
//! Every call is bounded by the batch timeout; a failed call fails each of its items with the
//! same [`ForwardError`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::metrics::method;
use crate::peer_transport::TransportError;
use crate::peer_unary::PeerUnaryClient;
use prometheus::{Histogram, IntCounter, IntGauge};
use prost::Message;
use tokio::sync::{Notify, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tracing::Instrument;

use super::{Batch, BatchConfig, BatchConfigError, CallToken, PeerQueue, Push};
use crate::mutex::lock;
use crate::proto;

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
    /// The peer answered `answered` items for the `sent` it was sent.
    pub fn mismatch(sent: usize, answered: usize) -> Self {
        ForwardError::Mismatch { sent, answered }
    }

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
    /// Items carried by each call (`ringlimit_peer_call_items`).
    pub items_per_call: Histogram,
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

/// One peer's batching: the queue, the caller that makes the calls, and the tasks that send what
/// queued. Cloning shares them; dropping the last clone lets the timer task send what is queued,
/// wait for the calls in flight, and stop.
#[derive(Clone)]
pub struct PeerBatcher {
    shared: Arc<Shared>,
    /// Dropped with the last clone: tells the timer task to finish.
    _open: Arc<Open>,
}

/// What callers and tasks of one peer share.
struct Shared {
    queue: Mutex<PeerQueue<Forward>>,
    caller: PeerCaller,
    /// Calls of batches sent by tasks (behind a call, due, or with other callers' items); reaped
    /// as new ones start, awaited by the timer task before it ends (a call on a per-core runtime
    /// ends with that runtime at the latest).
    calls: Mutex<Vec<JoinHandle<()>>>,
    /// Where those calls run when the caller that releases a batch is not on a per-core gRPC
    /// runtime: the runtime the batcher was started on.
    runtime: tokio::runtime::Handle,
    /// Wakes the timer task: a queue has nobody else keeping its time, or the batcher closed.
    wake: Notify,
    closed: AtomicBool,
}

/// Closes the batcher when the last [`PeerBatcher`] clone drops it.
struct Open {
    shared: Arc<Shared>,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.wake.notify_one();
    }
}

impl PeerBatcher {
    /// Starts the batching of the peer behind `client`, with its timer task in `tasks` (its
    /// owner's set, which joins it at shutdown), telling `observer` the outcome of every call. The
    /// task ends, after answering every item queued, once every clone of the batcher is dropped.
    /// Must be called within a tokio runtime: the batches' calls run on it.
    pub fn spawn_observed(
        peer: &str,
        client: PeerUnaryClient,
        config: BatchConfig,
        timeout: Duration,
        metrics: PeerCallMetrics,
        observer: CallObserver,
        tasks: &mut JoinSet<()>,
    ) -> Result<Self, BatchConfigError> {
        let queue = PeerQueue::new(config)?;
        let caller = PeerCaller {
            peer: Arc::from(peer),
            client,
            timeout,
            metrics: Arc::new(metrics),
            observer,
        };
        let shared = Arc::new(Shared {
            queue: Mutex::new(queue),
            caller,
            calls: Mutex::new(Vec::new()),
            runtime: tokio::runtime::Handle::current(),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
        });
        tasks.spawn(run_timer(Arc::clone(&shared)));
        Ok(Self {
            _open: Arc::new(Open {
                shared: Arc::clone(&shared),
            }),
            shared,
        })
    }

    /// Sends `item` to the owner (batched unless `no_batching`) and waits for its answer. When the
    /// peer is idle the call is made from this task.
    pub async fn forward(
        &self,
        item: proto::RateLimitReq,
        no_batching: bool,
    ) -> Result<proto::RateLimitResp, ForwardError> {
        let shared = &self.shared;
        if shared.closed.load(Ordering::Acquire) {
            return Err(ForwardError::Closed);
        }
        let (reply, mut answer) = oneshot::channel();
        let bytes = crate::batching::budget::framed_len(item.encoded_len());
        let forward = Forward {
            item,
            reply,
            deadline: crate::limits::deadline::current(),
            span: crate::telemetry::current(),
        };
        let (pushed, was_empty, due) = {
            let mut queue = lock(&shared.queue);
            let was_empty = queue.is_empty();
            let now = Instant::now();
            let due = now.checked_add(queue.config().wait);
            let pushed = queue.push_sized(forward, bytes, no_batching, now);
            shared.set_queue_length(&queue);
            (pushed, was_empty, due)
        };
        match pushed {
            // Only this item (nothing was queued before it): sent from here, no hand-off.
            Push::Send(batch) if was_empty && batch.items.len() == 1 => {
                let Batch { items, call } = batch;
                let finished = CallFinished {
                    shared: Arc::clone(shared),
                    call: Some(call),
                };
                shared.caller.clone().call(items).await;
                drop(finished);
            }
            Push::Send(batch) => {
                shared.start(batch);
                shared.keep_time_if_left();
            }
            Push::SendAlone(forward) => shared.caller.clone().call(vec![forward]).await,
            Push::Refused(_) => return Err(ForwardError::QueueFull),
            Push::Oversized(_) => {
                shared.caller.metrics.oversized.inc();
                return Err(ForwardError::TooLarge {
                    bytes,
                    max_bytes: lock(&shared.queue).config().max_bytes,
                });
            }
            // The oldest item of the queue: its caller sends the batch if it falls due before a
            // finishing call sends it (see `Watch`).
            Push::Queued { .. } if was_empty => {
                if let Some(due) = due {
                    let watch = Watch {
                        shared: Arc::clone(shared),
                        watching: true,
                    };
                    if let Some(answered) = watch.until_due(&mut answer, due).await {
                        return answered;
                    }
                }
            }
            Push::Queued { .. } => {}
        }
        answer.await.unwrap_or(Err(ForwardError::Closed))
    }
}

/// The caller of the item that made a peer's queue non-empty, keeping the time for it.
///
/// Why the caller and not the timer task: items queue only behind a call in flight (the idle rule
/// sends them at once otherwise), and a finishing call sends the queue, so the timer matters only
/// when the call in flight is slower than the batch wait. Waking the timer task for every queue
/// that forms cost two wake-ups of the main runtime per batch, from another thread. Measured with
/// 3 nodes under load (bench/analysis.md, change 8; three pairs): 7–17 % more decisions/s at
/// 12–19 % less CPU per decision without them. The timer task remains the backstop: it is woken
/// when a queue is left without a keeper (the caller gave up, or a batch left items behind) and
/// when the batcher closes.
struct Watch {
    shared: Arc<Shared>,
    /// Whether the queue still relies on this caller for its deadline.
    watching: bool,
}

impl Watch {
    /// Waits for `answer` until `due`; then sends the batch that is due, if any, and hands back to
    /// the caller to wait for the answer. `Some` is the answer when it came first (`Closed` when
    /// the batcher dropped the item unanswered, as for any caller).
    async fn until_due(
        mut self,
        answer: &mut oneshot::Receiver<Result<proto::RateLimitResp, ForwardError>>,
        due: Instant,
    ) -> Option<Result<proto::RateLimitResp, ForwardError>> {
        tokio::select! {
            answered = &mut *answer => {
                self.watching = false;
                Some(answered.unwrap_or(Err(ForwardError::Closed)))
            }
            () = tokio::time::sleep_until(due.into()) => {
                self.watching = false;
                let batch = {
                    let mut queue = lock(&self.shared.queue);
                    let batch = queue.on_timer(Instant::now());
                    self.shared.set_queue_length(&queue);
                    batch
                };
                if let Some(batch) = batch {
                    self.shared.start(batch);
                    self.shared.keep_time_if_left();
                }
                None
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // The caller gave up before the deadline: the timer task keeps the queue's time.
        if self.watching {
            self.shared.wake.notify_one();
        }
    }
}

/// Hands a batch's call slot back to the queue when the call ends, or when the caller that made
/// it stops waiting (its future dropped mid-call): the slot is never lost, and a batch the queue
/// releases then is sent by a task.
struct CallFinished {
    shared: Arc<Shared>,
    call: Option<CallToken>,
}

impl Drop for CallFinished {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            self.shared.finish(call);
        }
    }
}

impl Shared {
    /// Sends `batch` from a task: on the caller's own runtime when that is one of the per-core
    /// gRPC runtimes (its connection to the peer runs there too, see [`crate::peer_transport`]),
    /// else on the batcher's runtime. In paired runs of 3 nodes under load (64 calls in flight
    /// over all three, `bench/hop.sh`'s loaded shape) the per-core choice gave 9–15 % more
    /// decisions/s at 8–10 % less node CPU per decision than sending every batch from the main
    /// runtime (three pairs), and 2–15 % more at 2–13 % less in three more pairs. The slot goes
    /// back even if the task is cancelled (its runtime shutting down).
    fn start(self: &Arc<Self>, batch: Batch<Forward>) {
        let Batch { items, call } = batch;
        let finished = CallFinished {
            shared: Arc::clone(self),
            call: Some(call),
        };
        let caller = self.caller.clone();
        let task = async move {
            caller.call(items).await;
            drop(finished);
        };
        // Spawned with no lock held: on a runtime that is shutting down the task is dropped at
        // once, and its slot's return may start the next batch from here.
        let call = if crate::grpc_runtimes::current_shard().is_some() {
            tokio::spawn(task)
        } else {
            self.runtime.spawn(task)
        };
        let mut calls = lock(&self.calls);
        // Forget the calls that ended.
        calls.retain(|call| !call.is_finished());
        calls.push(call);
    }

    /// A call ended: its slot goes back, and the next batch (if the queue releases one) goes.
    fn finish(self: &Arc<Self>, call: CallToken) {
        let next = {
            let mut queue = lock(&self.queue);
            let next = queue.on_call_finished(call, Instant::now());
            self.set_queue_length(&queue);
            next
        };
        if let Some(batch) = next {
            self.start(batch);
            self.keep_time_if_left();
        }
        if self.closed.load(Ordering::Acquire) {
            self.wake.notify_one();
        }
    }

    /// After a batch was released outside the timer task: items it could not take (a full batch)
    /// have no caller keeping their time, so the timer task does.
    fn keep_time_if_left(&self) {
        if !lock(&self.queue).is_empty() {
            self.wake.notify_one();
        }
    }

    fn set_queue_length(&self, queue: &PeerQueue<Forward>) {
        self.caller
            .metrics
            .queue_length
            .set(i64::try_from(queue.len()).unwrap_or(i64::MAX));
    }
}

/// Makes the actual `GetPeerRateLimits` calls.
#[derive(Clone)]
struct PeerCaller {
    /// The peer's gRPC address (for traces).
    peer: Arc<str>,
    client: PeerUnaryClient,
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
        self.metrics.items_per_call.observe(sent as f64);
        // The peer bounds its own work by the same timeout (`grpc-timeout`).
        let mut request = tonic::Request::new(proto::GetPeerRateLimitsReq { requests: items });
        request.set_timeout(timeout);
        let call = self
            .client
            .call::<_, proto::GetPeerRateLimitsResp>(request, method::GET_PEER_RATE_LIMITS)
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
            Ok(Ok(response)) => proto::one_answer_per_item(
                response.into_inner().rate_limits,
                sent,
                ForwardError::mismatch,
            ),
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
    let broken_connection = std::error::Error::source(&status).is_some_and(|source| {
        source.is::<tonic::transport::Error>() || source.is::<TransportError>()
    });
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

/// The timer task of one peer: sends batches when they are due, and once the batcher is closed,
/// sends what is queued, waits for every call in flight, and answers what could not go.
async fn run_timer(shared: Arc<Shared>) {
    loop {
        let (deadline, empty) = {
            let queue = lock(&shared.queue);
            (queue.next_deadline(), queue.is_empty())
        };
        let closed = shared.closed.load(Ordering::Acquire);
        if closed && empty {
            break;
        }
        tokio::select! {
            () = shared.wake.notified() => {}
            () = sleep_until(deadline), if deadline.is_some() => {
                let due = lock(&shared.queue).on_timer(Instant::now());
                if let Some(batch) = due {
                    shared.start(batch);
                }
            }
            // Closed and nothing can move the queue any more (no deadline, no call in flight
            // to free a slot): answer what is left.
            () = std::future::ready(()), if closed && deadline.is_none() && calls_idle(&shared) => {
                for forward in lock(&shared.queue).drain() {
                    let _ = forward.reply.send(Err(ForwardError::Closed));
                }
            }
        }
    }
    // Every batch has been started: wait for their calls to answer.
    loop {
        let calls = std::mem::take(&mut *lock(&shared.calls));
        if calls.is_empty() {
            break;
        }
        for call in calls {
            // A call cancelled with its runtime has answered nothing more; nothing to do.
            let _ = call.await;
        }
    }
}

/// Whether no batch call of the peer is running.
fn calls_idle(shared: &Shared) -> bool {
    let mut calls = lock(&shared.calls);
    calls.retain(|call| !call.is_finished());
    calls.is_empty()
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
