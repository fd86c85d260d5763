//! The per-peer queue and its configuration; see the [module documentation](super) for the rules.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The most items one batch may carry (Gubernator's maximum `batch_limit`, which is also the
/// largest `GetPeerRateLimits` call a peer accepts).
pub const MAX_BATCH_LIMIT: usize = 1000;

/// How a [`PeerQueue`] batches; build one with [`Default`] and adjust the fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchConfig {
    /// How long the oldest queued item may wait for more items while a call slot is free
    /// (`GUBER_BATCH_WAIT`, default 500 µs).
    pub wait: Duration,
    /// The most items in one batch; a full queue is sent at once (`GUBER_BATCH_LIMIT`, default and
    /// maximum [`MAX_BATCH_LIMIT`]).
    pub limit: usize,
    /// Queued items go at once, without waiting for `wait`, while fewer than this many batched
    /// calls are in flight (default 1: "no call in flight"). 0 restores Gubernator's timing
    /// exactly; `max_in_flight` makes the timer irrelevant (send whenever a slot is free).
    pub eager_in_flight: usize,
    /// The most batched calls in flight to the peer at once (default 4). With the default `wait`
    /// and in-data-center round trips up to about 1.5 ms, Gubernator's own timing keeps at most
    /// `1 + rtt / wait` ≤ 4 calls in flight, so the cap does not bite in normal operation; when the
    /// peer slows down it turns unbounded concurrency into bigger batches and back-pressure.
    pub max_in_flight: usize,
    /// The most items the queue holds; a push beyond is [refused](Push::Refused) (default
    /// 10 × `limit`: with every slot busy the queue drains in `max_queue / (limit ×
    /// max_in_flight)` = 2.5 round trips).
    pub max_queue: usize,
    /// Send every item alone, at once (`GUBER_DISABLE_BATCHING`, default `false`).
    pub disabled: bool,
    /// The most bytes the items of one batch may take together, as measured by the driver (the
    /// receiver's message limit less headroom, see [`crate::batching::budget`]). A batch goes as soon
    /// as the queue holds more than this many bytes, and an item larger than this alone is
    /// [refused](Push::Oversized). Default: the budget of Gubernator's 1 MiB message limit.
    pub max_bytes: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            wait: Duration::from_micros(500),
            limit: MAX_BATCH_LIMIT,
            eager_in_flight: 1,
            max_in_flight: 4,
            max_queue: 10 * MAX_BATCH_LIMIT,
            disabled: false,
            max_bytes: crate::batching::budget::MessageBudget::for_limit(1024 * 1024).max_bytes(),
        }
    }
}

impl BatchConfig {
    /// Checks the configuration: `limit` in `1..=MAX_BATCH_LIMIT`, `max_in_flight ≥ 1`,
    /// `eager_in_flight ≤ max_in_flight` and `max_queue ≥ limit`.
    pub fn validate(&self) -> Result<(), BatchConfigError> {
        if !(1..=MAX_BATCH_LIMIT).contains(&self.limit) {
            return Err(BatchConfigError::Limit { limit: self.limit });
        }
        if self.max_in_flight == 0 {
            return Err(BatchConfigError::MaxInFlight);
        }
        if self.eager_in_flight > self.max_in_flight {
            return Err(BatchConfigError::EagerInFlight {
                eager_in_flight: self.eager_in_flight,
                max_in_flight: self.max_in_flight,
            });
        }
        if self.max_bytes == 0 {
            return Err(BatchConfigError::MaxBytes);
        }
        if self.max_queue < self.limit {
            return Err(BatchConfigError::MaxQueue {
                max_queue: self.max_queue,
                limit: self.limit,
            });
        }
        Ok(())
    }
}

/// Why a [`BatchConfig`] was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchConfigError {
    /// `limit` is 0 or above [`MAX_BATCH_LIMIT`].
    #[error("batch limit must be between 1 and {MAX_BATCH_LIMIT}, got {limit}")]
    Limit {
        /// The rejected limit.
        limit: usize,
    },
    /// `max_in_flight` is 0: no call could ever be sent.
    #[error("max_in_flight must be at least 1")]
    MaxInFlight,
    /// `eager_in_flight` is above `max_in_flight`.
    #[error("eager_in_flight ({eager_in_flight}) must not exceed max_in_flight ({max_in_flight})")]
    EagerInFlight {
        /// The rejected `eager_in_flight`.
        eager_in_flight: usize,
        /// The configured `max_in_flight`.
        max_in_flight: usize,
    },
    /// `max_bytes` is 0: no item could ever be sent.
    #[error("the byte budget of a batch must be at least 1")]
    MaxBytes,
    /// `max_queue` is below `limit`: a full batch could never be queued.
    #[error("max_queue ({max_queue}) must be at least the batch limit ({limit})")]
    MaxQueue {
        /// The rejected `max_queue`.
        max_queue: usize,
        /// The configured `limit`.
        limit: usize,
    },
}

/// Proof that a batched call is in flight; hand it back to [`PeerQueue::on_call_finished`] when
/// the call finishes, whether it succeeded or failed.
///
/// Only a [`PeerQueue`] makes tokens, one per [`Batch`], and `on_call_finished` consumes it, so a
/// call cannot be finished twice. A token belongs to the queue that made it.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a call stays in flight until its token is handed back to PeerQueue::on_call_finished"]
pub struct CallToken {
    _private: (),
}

/// Items to send to the peer in one call, in queue order, with the token of that call.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a batch must be sent and its token handed back to PeerQueue::on_call_finished"]
pub struct Batch<T> {
    /// The items, oldest first: the `n`-th response of the call answers the `n`-th item.
    pub items: Vec<T>,
    /// The in-flight token of this call.
    pub call: CallToken,
}

/// What became of a pushed item.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "the driver must act on every push"]
pub enum Push<T> {
    /// The item waits in the queue; arm the timer at `deadline` (the same as
    /// [`PeerQueue::next_deadline`]; `None` when only a finishing call can send the queue).
    Queued {
        /// When the driver should call [`PeerQueue::on_timer`], if at all.
        deadline: Option<Instant>,
    },
    /// Send this batch now: the pushed item is its last item, after earlier queued ones, unless
    /// the pushed item made the queue exceed [`BatchConfig::max_bytes`]: then the batch carries
    /// the earlier items and the pushed one stays queued (first in line).
    Send(Batch<T>),
    /// Send this item alone now (`NO_BATCHING` or batching disabled). This call is not counted in
    /// flight: do not report it to [`PeerQueue::on_call_finished`].
    SendAlone(T),
    /// The queue is full ([`BatchConfig::max_queue`]): the item is handed back, to be answered
    /// `RESOURCE_EXHAUSTED`.
    Refused(T),
    /// The item alone is larger than [`BatchConfig::max_bytes`]: no message to the peer could
    /// carry it, so it is handed back to be dropped (and counted), never retried.
    Oversized(T),
}

/// An item waiting in the queue, with the instant it is due (`None` if that overflows `Instant`).
#[derive(Debug)]
struct Queued<T> {
    item: T,
    bytes: usize,
    due: Option<Instant>,
}

/// The batching state for one peer: its queue of items and its count of batched calls in flight.
#[derive(Debug)]
pub struct PeerQueue<T> {
    config: BatchConfig,
    queue: VecDeque<Queued<T>>,
    /// The sum of the queued items' bytes.
    queued_bytes: usize,
    in_flight: usize,
}

impl<T> PeerQueue<T> {
    /// An empty queue with no call in flight, or the reason `config` is invalid.
    pub fn new(config: BatchConfig) -> Result<Self, BatchConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            queue: VecDeque::new(),
            queued_bytes: 0,
            in_flight: 0,
        })
    }

    /// The configuration this queue was built with.
    pub fn config(&self) -> &BatchConfig {
        &self.config
    }

    #[cfg(test)]
    /// Accepts an item of no measurable size (it never counts towards
    /// [`BatchConfig::max_bytes`]); see [`push_sized`](Self::push_sized).
    pub fn push(&mut self, item: T, no_batching: bool, now: Instant) -> Push<T> {
        self.push_sized(item, 0, no_batching, now)
    }

    /// Accepts an item of `bytes` bytes forwarded to this peer at `now`. `no_batching` is the
    /// item's `NO_BATCHING` behaviour. The item is refused when it is larger than a whole batch
    /// may be; otherwise it is sent alone, sent in a batch (after any queued items), queued, or
    /// refused when the queue is full.
    pub fn push_sized(
        &mut self,
        item: T,
        bytes: usize,
        no_batching: bool,
        now: Instant,
    ) -> Push<T> {
        if bytes > self.config.max_bytes {
            return Push::Oversized(item);
        }
        if no_batching || self.config.disabled {
            return Push::SendAlone(item);
        }
        if self.queue.len() >= self.config.max_queue {
            return Push::Refused(item);
        }
        self.queued_bytes = self.queued_bytes.saturating_add(bytes);
        self.queue.push_back(Queued {
            item,
            bytes,
            due: now.checked_add(self.config.wait),
        });
        match self.poll(now) {
            Some(batch) => Push::Send(batch),
            None => Push::Queued {
                deadline: self.next_deadline(),
            },
        }
    }

    /// The timer fired at `now`: the batch that is due, if any. Firing early sends nothing.
    pub fn on_timer(&mut self, now: Instant) -> Option<Batch<T>> {
        self.poll(now)
    }

    /// A batched call finished at `now` (successfully or not): frees its slot and returns the next
    /// batch if the queue is ready for it.
    pub fn on_call_finished(&mut self, call: CallToken, now: Instant) -> Option<Batch<T>> {
        let CallToken { _private: () } = call;
        // Saturating: a token from another queue must not make the count wrap.
        self.in_flight = self.in_flight.saturating_sub(1);
        self.poll(now)
    }

    /// The next batch if a call slot is free and the queue is ready at `now` (idle peer, full
    /// queue or oldest item due). [`push_sized`](Self::push_sized), [`on_timer`](Self::on_timer) and
    /// [`on_call_finished`](Self::on_call_finished) already call it, so a driver that acts on
    /// their results never finds anything here except by waking at a deadline.
    pub fn poll(&mut self, now: Instant) -> Option<Batch<T>> {
        if self.in_flight >= self.config.max_in_flight || !self.is_ready(now) {
            return None;
        }
        // From the front, at most `limit` items and `max_bytes` bytes, and at least one item
        // (every queued item fits alone: larger ones were refused by `push_sized`).
        let mut count = 0;
        let mut bytes = 0usize;
        for queued in self.queue.iter().take(self.config.limit) {
            if count > 0 && bytes.saturating_add(queued.bytes) > self.config.max_bytes {
                break;
            }
            bytes = bytes.saturating_add(queued.bytes);
            count += 1;
        }
        self.queued_bytes = self.queued_bytes.saturating_sub(bytes);
        let items = self
            .queue
            .drain(..count)
            .map(|queued| queued.item)
            .collect();
        self.in_flight += 1;
        Some(Batch {
            items,
            call: CallToken { _private: () },
        })
    }

    /// When the driver should next call [`on_timer`](Self::on_timer): the instant the oldest
    /// queued item is due, if a call slot is free to send it then. `None` when the queue is empty,
    /// when every slot is busy (a finishing call will send the queue) or when the wait overflows
    /// `Instant`.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.in_flight >= self.config.max_in_flight {
            return None;
        }
        self.queue.front().and_then(|queued| queued.due)
    }

    /// Hands back every queued item, oldest first (the peer left the cluster, or the driver shuts
    /// down). Calls in flight stay counted until they finish.
    pub fn drain(&mut self) -> Vec<T> {
        self.queued_bytes = 0;
        self.queue.drain(..).map(|queued| queued.item).collect()
    }

    #[cfg(test)]
    /// The bytes of the queued items, as given to [`push_sized`](Self::push_sized).
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// The number of queued items.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether no item is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    #[cfg(test)]
    /// The number of batched calls in flight (calls sent alone are not counted).
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Whether the queue should go now, given a free slot.
    fn is_ready(&self, now: Instant) -> bool {
        let Some(oldest) = self.queue.front() else {
            return false;
        };
        self.in_flight < self.config.eager_in_flight
            || self.queue.len() >= self.config.limit
            || self.queued_bytes > self.config.max_bytes
            || oldest.due.is_some_and(|due| now >= due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_micros(500);

    fn config(limit: usize, max_in_flight: usize, max_queue: usize) -> BatchConfig {
        BatchConfig {
            wait: WAIT,
            limit,
            eager_in_flight: 1,
            max_in_flight,
            max_queue,
            disabled: false,
            max_bytes: usize::MAX,
        }
    }

    fn queue(limit: usize, max_in_flight: usize, max_queue: usize) -> PeerQueue<u32> {
        PeerQueue::new(config(limit, max_in_flight, max_queue)).unwrap()
    }

    fn us(micros: u64) -> Duration {
        Duration::from_micros(micros)
    }

    /// Pushes a batched item and returns the batch it caused; panics if it did not cause one.
    fn push_sent(queue: &mut PeerQueue<u32>, item: u32, now: Instant) -> Batch<u32> {
        match queue.push(item, false, now) {
            Push::Send(batch) => batch,
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    /// Pushes a batched item that must be queued and returns the deadline it reported.
    fn push_queued(queue: &mut PeerQueue<u32>, item: u32, now: Instant) -> Option<Instant> {
        match queue.push(item, false, now) {
            Push::Queued { deadline } => deadline,
            other => panic!("expected the item to be queued, got {other:?}"),
        }
    }

    #[test]
    fn default_config_matches_gubernator_and_is_valid() {
        let config = BatchConfig::default();
        assert_eq!(config.wait, Duration::from_micros(500));
        assert_eq!(config.limit, 1000);
        assert_eq!(config.eager_in_flight, 1);
        assert_eq!(config.max_in_flight, 4);
        assert_eq!(config.max_queue, 10_000);
        assert!(!config.disabled);
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn limit_of_zero_is_rejected() {
        let error = PeerQueue::<u32>::new(config(0, 1, 10)).unwrap_err();
        assert_eq!(error, BatchConfigError::Limit { limit: 0 });
        assert_eq!(
            error.to_string(),
            "batch limit must be between 1 and 1000, got 0"
        );
    }

    #[test]
    fn limit_above_1000_is_rejected() {
        let error = PeerQueue::<u32>::new(config(1001, 1, 2000)).unwrap_err();
        assert_eq!(error, BatchConfigError::Limit { limit: 1001 });
    }

    #[test]
    fn limit_of_1000_is_accepted() {
        assert!(PeerQueue::<u32>::new(config(1000, 1, 1000)).is_ok());
    }

    #[test]
    fn max_in_flight_of_zero_is_rejected() {
        let mut config = config(10, 1, 10);
        config.max_in_flight = 0;
        config.eager_in_flight = 0;
        let error = PeerQueue::<u32>::new(config).unwrap_err();
        assert_eq!(error, BatchConfigError::MaxInFlight);
        assert_eq!(error.to_string(), "max_in_flight must be at least 1");
    }

    #[test]
    fn eager_in_flight_above_max_in_flight_is_rejected() {
        let mut config = config(10, 2, 10);
        config.eager_in_flight = 3;
        let error = PeerQueue::<u32>::new(config).unwrap_err();
        assert_eq!(
            error,
            BatchConfigError::EagerInFlight {
                eager_in_flight: 3,
                max_in_flight: 2
            }
        );
    }

    #[test]
    fn max_queue_below_limit_is_rejected() {
        let error = PeerQueue::<u32>::new(config(10, 1, 9)).unwrap_err();
        assert_eq!(
            error,
            BatchConfigError::MaxQueue {
                max_queue: 9,
                limit: 10
            }
        );
        assert_eq!(
            error.to_string(),
            "max_queue (9) must be at least the batch limit (10)"
        );
    }

    #[test]
    fn new_queue_is_empty_with_nothing_in_flight_and_no_deadline() {
        let queue = queue(10, 1, 100);
        assert_eq!(queue.len(), 0);
        assert!(queue.is_empty());
        assert_eq!(queue.in_flight(), 0);
        assert_eq!(queue.next_deadline(), None);
    }

    #[test]
    fn first_item_with_nothing_in_flight_is_sent_at_once() {
        let mut queue = queue(10, 1, 100);
        let base = Instant::now();
        let batch = push_sent(&mut queue, 1, base);
        assert_eq!(batch.items, vec![1]);
        assert_eq!(queue.in_flight(), 1);
        assert!(queue.is_empty());
        assert_eq!(queue.next_deadline(), None);
    }

    #[test]
    fn items_queue_while_a_call_is_in_flight() {
        let mut queue = queue(10, 2, 100);
        let base = Instant::now();
        let _first = push_sent(&mut queue, 1, base);
        push_queued(&mut queue, 2, base + us(10));
        push_queued(&mut queue, 3, base + us(20));
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.in_flight(), 1);
    }

    #[test]
    fn first_queued_item_sets_the_deadline_and_later_items_do_not_move_it() {
        let mut queue = queue(10, 2, 100);
        let base = Instant::now();
        let _first = push_sent(&mut queue, 1, base);
        let deadline = push_queued(&mut queue, 2, base + us(10));
        assert_eq!(deadline, Some(base + us(10) + WAIT));
        assert_eq!(
            push_queued(&mut queue, 3, base + us(300)),
            Some(base + us(10) + WAIT)
        );
        assert_eq!(queue.next_deadline(), Some(base + us(10) + WAIT));
    }

    #[test]
    fn timer_firing_at_the_deadline_sends_the_queue() {
        let mut queue = queue(10, 2, 100);
        let base = Instant::now();
        let _first = push_sent(&mut queue, 1, base);
        let deadline = push_queued(&mut queue, 2, base).unwrap();
        push_queued(&mut queue, 3, base + us(100));
        let batch = queue.on_timer(deadline).unwrap();
        assert_eq!(batch.items, vec![2, 3]);
        assert_eq!(queue.in_flight(), 2);
        assert!(queue.is_empty());
        assert_eq!(queue.next_deadline(), None);
    }

    #[test]
    fn timer_firing_late_sends_the_queue() {
        let mut queue = queue(10, 2, 100);
        let base = Instant::now();
        let _first = push_sent(&mut queue, 1, base);
        push_queued(&mut queue, 2, base);
        let batch = queue.on_timer(base + us(5000)).unwrap();
        assert_eq!(batch.items, vec![2]);
    }

    #[test]
    fn timer_firing_before_the_deadline_sends_nothing() {
        let mut queue = queue(10, 2, 100);
        let base = Instant::now();
        let _first = push_sent(&mut queue, 1, base);
        let deadline = push_queued(&mut queue, 2, base).unwrap();
        assert_eq!(queue.on_timer(deadline - us(1)), None);
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.next_deadline(), Some(deadline));
    }

    #[test]
    fn timer_firing_on_an_empty_queue_sends_nothing() {
        let mut queue = queue(10, 2, 100);
        assert_eq!(queue.on_timer(Instant::now()), None);
        assert_eq!(queue.in_flight(), 0);
    }

    #[test]
    fn timer_sends_nothing_while_every_slot_is_busy() {
        let mut queue = queue(10, 1, 100);
        let base = Instant::now();
        let _first = push_sent(&mut queue, 1, base);
        push_queued(&mut queue, 2, base);
        assert_eq!(queue.on_timer(base + WAIT), None);
        assert_eq!(queue.len(), 1);
    }

    #[test]
    fn no_deadline_while_every_slot_is_busy() {
        let mut queue = queue(10, 1, 100);
        let base = Instant::now();
        let _first = push_sent(&mut queue, 1, base);
        assert_eq!(push_queued(&mut queue, 2, base), None);
        assert_eq!(queue.next_deadline(), None);
    }

    #[test]
    fn reaching_the_limit_sends_the_queue_at_once() {
        let mut queue = queue(3, 2, 100);
        let base = Instant::now();
        let _first = push_sent(&mut queue, 1, base);
        push_queued(&mut queue, 2, base);
        push_queued(&mut queue, 3, base);
        let batch = push_sent(&mut queue, 4, base + us(1));
        assert_eq!(batch.items, vec![2, 3, 4]);
        assert!(queue.is_empty());
        assert_eq!(queue.next_deadline(), None);
    }

    #[test]
    fn a_batch_carries_at_most_limit_items_and_the_rest_stays_queued() {
        let mut queue = queue(3, 1, 100);
        let base = Instant::now();
        let first = push_sent(&mut queue, 0, base);
        for item in 1..=5 {
            push_queued(&mut queue, item, base + us(u64::from(item)));
        }
        let second = queue.on_call_finished(first.call, base + us(100)).unwrap();
        assert_eq!(second.items, vec![1, 2, 3]);
        assert_eq!(queue.len(), 2);
        let third = queue.on_call_finished(second.call, base + us(200)).unwrap();
        assert_eq!(third.items, vec![4, 5]);
        assert!(queue.is_empty());
    }

    #[test]
    fn remainder_after_a_full_batch_keeps_the_deadline_of_its_oldest_item() {
        let mut queue = queue(2, 2, 100);
        let base = Instant::now();
        let first = push_sent(&mut queue, 0, base);
        push_queued(&mut queue, 1, base);
        let second = push_sent(&mut queue, 2, base + us(1));
        assert_eq!(second.items, vec![1, 2]);
        // Both slots busy: the queue grows past the limit and no timer is needed.
        for item in 3..=5 {
            assert_eq!(
                push_queued(&mut queue, item, base + us(u64::from(item))),
                None
            );
        }
        // One call finishes while the other is in flight: only the full batch goes.
        let third = queue.on_call_finished(second.call, base + us(50)).unwrap();
        assert_eq!(third.items, vec![3, 4]);
        assert_eq!(queue.next_deadline(), None);
        // A slot frees up: item 5 is due `wait` after it was pushed, not `wait` after now.
        assert_eq!(queue.on_call_finished(first.call, base + us(60)), None);
        assert_eq!(queue.next_deadline(), Some(base + us(5) + WAIT));
        let fourth = queue.on_timer(base + us(5) + WAIT).unwrap();
        assert_eq!(fourth.items, vec![5]);
        assert_eq!(queue.on_call_finished(third.call, base + WAIT), None);
        assert_eq!(queue.on_call_finished(fourth.call, base + WAIT), None);
        assert_eq!(queue.in_flight(), 0);
    }

    #[test]
    fn call_finishing_with_a_queue_sends_it_at_once() {
        let mut queue = queue(10, 1, 100);
        let base = Instant::now();
        let first = push_sent(&mut queue, 1, base);
        push_queued(&mut queue, 2, base + us(10));
        push_queued(&mut queue, 3, base + us(20));
        let batch = queue.on_call_finished(first.call, base + us(30)).unwrap();
        assert_eq!(batch.items, vec![2, 3]);
        assert_eq!(queue.in_flight(), 1);
    }

    #[test]
    fn call_finishing_with_an_empty_queue_sends_nothing() {
        let mut queue = queue(10, 1, 100);
        let base = Instant::now();
        let first = push_sent(&mut queue, 1, base);
        assert_eq!(queue.on_call_finished(first.call, base + us(30)), None);
        assert_eq!(queue.in_flight(), 0);
    }

    #[test]
    fn call_finishing_while_another_is_in_flight_leaves_the_queue_to_the_timer() {
        let mut queue = queue(10, 3, 100);
        let base = Instant::now();
        let first = push_sent(&mut queue, 1, base);
        push_queued(&mut queue, 2, base);
        let second = queue.on_timer(base + WAIT).unwrap();
        assert_eq!(second.items, vec![2]);
        let deadline = push_queued(&mut queue, 3, base + WAIT + us(10)).unwrap();
        assert_eq!(
            queue.on_call_finished(first.call, base + WAIT + us(20)),
            None
        );
        assert_eq!(queue.next_deadline(), Some(deadline));
        // The last call finishes before the deadline: the peer is idle, the queue goes at once.
        let batch = queue
            .on_call_finished(second.call, base + WAIT + us(30))
            .unwrap();
        assert_eq!(batch.items, vec![3]);
    }

    #[test]
    fn eager_in_flight_zero_waits_for_the_timer_even_when_idle() {
        let mut config = config(10, 1, 100);
        config.eager_in_flight = 0;
        let mut queue = PeerQueue::new(config).unwrap();
        let base = Instant::now();
        assert_eq!(push_queued(&mut queue, 1, base), Some(base + WAIT));
        assert_eq!(queue.on_timer(base + WAIT).unwrap().items, vec![1]);
    }

    #[test]
    fn eager_in_flight_equal_to_max_sends_whenever_a_slot_is_free() {
        let mut config = config(10, 2, 100);
        config.eager_in_flight = 2;
        let mut queue = PeerQueue::new(config).unwrap();
        let base = Instant::now();
        let _a = push_sent(&mut queue, 1, base);
        let _b = push_sent(&mut queue, 2, base);
        assert_eq!(push_queued(&mut queue, 3, base), None);
    }

    #[test]
    fn zero_wait_sends_whenever_a_slot_is_free() {
        let mut config = config(10, 2, 100);
        config.wait = Duration::ZERO;
        let mut queue = PeerQueue::new(config).unwrap();
        let base = Instant::now();
        let _a = push_sent(&mut queue, 1, base);
        assert_eq!(push_sent(&mut queue, 2, base).items, vec![2]);
    }

    #[test]
    fn no_batching_item_is_sent_alone_without_disturbing_the_queue() {
        let mut queue = queue(10, 2, 100);
        let base = Instant::now();
        let _first = push_sent(&mut queue, 1, base);
        let deadline = push_queued(&mut queue, 2, base);
        push_queued(&mut queue, 3, base + us(1));
        assert_eq!(queue.push(99, true, base + us(2)), Push::SendAlone(99));
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.in_flight(), 1);
        assert_eq!(queue.next_deadline(), deadline);
        assert_eq!(queue.on_timer(base + WAIT).unwrap().items, vec![2, 3]);
    }

    #[test]
    fn no_batching_item_is_sent_alone_even_when_every_slot_is_busy() {
        let mut queue = queue(10, 1, 10);
        let base = Instant::now();
        let _first = push_sent(&mut queue, 1, base);
        assert_eq!(queue.push(7, true, base), Push::SendAlone(7));
        assert_eq!(queue.in_flight(), 1);
    }

    #[test]
    fn no_batching_item_is_sent_even_when_the_queue_is_full() {
        let mut queue = queue(1, 1, 1);
        let base = Instant::now();
        let _first = push_sent(&mut queue, 1, base);
        push_queued(&mut queue, 2, base);
        assert_eq!(queue.push(3, false, base), Push::Refused(3));
        assert_eq!(queue.push(4, true, base), Push::SendAlone(4));
    }

    #[test]
    fn disabled_batching_sends_every_item_alone() {
        let mut config = config(10, 1, 10);
        config.disabled = true;
        let mut queue = PeerQueue::new(config).unwrap();
        let base = Instant::now();
        for item in 0..20 {
            assert_eq!(queue.push(item, false, base), Push::SendAlone(item));
        }
        assert!(queue.is_empty());
        assert_eq!(queue.in_flight(), 0);
        assert_eq!(queue.next_deadline(), None);
    }

    #[test]
    fn push_beyond_max_queue_is_refused_and_the_queue_keeps_its_items() {
        let mut queue = queue(2, 1, 3);
        let base = Instant::now();
        let first = push_sent(&mut queue, 0, base);
        for item in 1..=3 {
            push_queued(&mut queue, item, base);
        }
        assert_eq!(queue.push(4, false, base), Push::Refused(4));
        assert_eq!(queue.len(), 3);
        // Room again once a batch went out.
        assert_eq!(
            queue.on_call_finished(first.call, base).unwrap().items,
            vec![1, 2]
        );
        push_queued(&mut queue, 5, base);
        assert_eq!(queue.len(), 2);
    }

    #[test]
    fn items_keep_fifo_order_across_batches() {
        let mut queue = queue(2, 1, 100);
        let base = Instant::now();
        let mut sent = Vec::new();
        let mut call = push_sent(&mut queue, 0, base);
        sent.extend(call.items);
        for item in 1..=6 {
            push_queued(&mut queue, item, base);
        }
        while let Some(batch) = queue.on_call_finished(call.call, base) {
            assert!(batch.items.len() <= 2);
            sent.extend(batch.items);
            call = Batch {
                items: Vec::new(),
                call: batch.call,
            };
        }
        assert_eq!(sent, vec![0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(queue.in_flight(), 0);
    }

    #[test]
    fn drain_hands_back_queued_items_in_order_and_keeps_calls_in_flight() {
        let mut queue = queue(10, 1, 100);
        let base = Instant::now();
        let _first = push_sent(&mut queue, 1, base);
        push_queued(&mut queue, 2, base);
        push_queued(&mut queue, 3, base);
        assert_eq!(queue.drain(), vec![2, 3]);
        assert!(queue.is_empty());
        assert_eq!(queue.in_flight(), 1);
        assert_eq!(queue.next_deadline(), None);
    }

    #[test]
    fn overflowing_wait_never_falls_due_but_the_queue_still_goes_when_idle_or_full() {
        let mut config = config(2, 2, 100);
        config.wait = Duration::MAX;
        let mut queue = PeerQueue::new(config).unwrap();
        let base = Instant::now();
        let first = push_sent(&mut queue, 1, base);
        assert_eq!(push_queued(&mut queue, 2, base), None);
        assert_eq!(queue.on_timer(base + us(1_000_000)), None);
        assert_eq!(
            queue.on_call_finished(first.call, base).unwrap().items,
            vec![2]
        );
    }

    #[test]
    fn poll_finds_nothing_after_the_events_handled_it() {
        let mut queue = queue(10, 2, 100);
        let base = Instant::now();
        let _first = push_sent(&mut queue, 1, base);
        push_queued(&mut queue, 2, base);
        assert_eq!(queue.poll(base), None);
        assert!(queue.poll(base + WAIT).is_some());
    }

    fn sized_queue(limit: usize, max_in_flight: usize, max_bytes: usize) -> PeerQueue<u32> {
        let mut config = config(limit, max_in_flight, 10 * limit);
        config.max_bytes = max_bytes;
        PeerQueue::new(config).unwrap()
    }

    #[test]
    fn max_bytes_of_zero_is_rejected() {
        let mut config = config(10, 1, 10);
        config.max_bytes = 0;
        assert_eq!(
            PeerQueue::<u32>::new(config).unwrap_err(),
            BatchConfigError::MaxBytes
        );
    }

    #[test]
    fn an_item_larger_than_the_byte_budget_is_handed_back_even_when_sent_alone() {
        let base = Instant::now();
        let mut queue = sized_queue(10, 1, 100);
        assert_eq!(queue.push_sized(1, 101, false, base), Push::Oversized(1));
        assert_eq!(queue.push_sized(2, 101, true, base), Push::Oversized(2));
        assert!(queue.is_empty());
        assert_eq!(queue.in_flight(), 0);
        // Exactly the budget still goes.
        assert!(matches!(
            queue.push_sized(3, 100, false, base),
            Push::Send(_)
        ));
    }

    #[test]
    fn a_batch_stops_before_the_item_that_would_exceed_the_byte_budget() {
        let base = Instant::now();
        let mut queue = sized_queue(10, 1, 100);
        let first = match queue.push_sized(0, 10, false, base) {
            Push::Send(batch) => batch,
            other => panic!("expected a batch, got {other:?}"),
        };
        for item in 1..=4 {
            assert!(matches!(
                queue.push_sized(item, 30, false, base + us(1)),
                Push::Queued { .. }
            ));
        }
        assert_eq!(queue.queued_bytes(), 120);
        let batch = queue.on_call_finished(first.call, base + us(2)).unwrap();
        assert_eq!(
            batch.items,
            vec![1, 2, 3],
            "90 bytes; the fourth would make 120"
        );
        assert_eq!(queue.queued_bytes(), 30);
        assert_eq!(queue.len(), 1);
    }

    #[test]
    fn reaching_the_byte_budget_sends_the_queue_before_the_timer() {
        let base = Instant::now();
        // Two slots, eager only while idle: the second batch would normally wait for the timer.
        let mut queue = sized_queue(1000, 2, 100);
        let _first = push_sent(&mut queue, 0, base);
        assert!(matches!(
            queue.push_sized(1, 60, false, base + us(1)),
            Push::Queued { .. }
        ));
        // Exactly the budget is not more than a batch can carry: it waits.
        assert!(matches!(
            queue.push_sized(2, 40, false, base + us(2)),
            Push::Queued { .. }
        ));
        let batch = match queue.push_sized(3, 1, false, base + us(3)) {
            Push::Send(batch) => batch,
            other => panic!("expected the full queue to go, got {other:?}"),
        };
        assert_eq!(
            batch.items,
            vec![1, 2],
            "the pushed item would not fit; it stays queued"
        );
        assert_eq!(queue.queued_bytes(), 1);
        assert_eq!(queue.len(), 1);
    }

    #[test]
    fn items_beyond_the_byte_budget_leave_over_several_batches_in_order() {
        let base = Instant::now();
        let mut queue = sized_queue(1000, 1, 100);
        let mut call = push_sent(&mut queue, 0, base).call;
        for item in 1..=10 {
            let _ = queue.push_sized(item, 45, false, base + us(1));
        }
        let mut out = Vec::new();
        let mut now = base + us(2);
        while let Some(batch) = queue.on_call_finished(call, now) {
            assert!(batch.items.len() <= 2, "45 + 45 ≤ 100 < 3 × 45");
            out.extend(batch.items);
            call = batch.call;
            now += us(1);
        }
        assert_eq!(out, (1..=10).collect::<Vec<_>>());
        assert!(queue.is_empty());
    }

    #[test]
    fn drain_forgets_the_queued_bytes() {
        let base = Instant::now();
        let mut queue = sized_queue(10, 1, 100);
        let _first = push_sent(&mut queue, 0, base);
        let _ = queue.push_sized(1, 50, false, base);
        assert_eq!(queue.drain(), vec![1]);
        assert_eq!(queue.queued_bytes(), 0);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            /// Push the next item of `bytes` bytes, with or without `NO_BATCHING`.
            Push { no_batching: bool, bytes: usize },
            /// Let time pass, firing the timer at every deadline on the way like a driver would.
            Advance { micros: u64 },
            /// Fire the timer at the current instant, due or not.
            Timer,
            /// Finish the in-flight call at this index (modulo the number in flight).
            Finish { index: usize },
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => (proptest::bool::weighted(0.15), 0usize..14)
                    .prop_map(|(no_batching, bytes)| Op::Push { no_batching, bytes }),
                2 => (0u64..40).prop_map(|micros| Op::Advance { micros }),
                1 => Just(Op::Timer),
                2 => any::<usize>().prop_map(|index| Op::Finish { index }),
            ]
        }

        fn batch_config() -> impl Strategy<Value = BatchConfig> {
            (
                1usize..5,
                1usize..4,
                0u64..30,
                0usize..8,
                proptest::bool::weighted(0.1),
                0usize..4,
                1usize..12,
            )
                .prop_map(
                    |(limit, max_in_flight, wait, extra_queue, disabled, eager, max_bytes)| {
                        BatchConfig {
                            wait: Duration::from_micros(wait),
                            limit,
                            eager_in_flight: eager.min(max_in_flight),
                            max_in_flight,
                            max_queue: limit + extra_queue,
                            disabled,
                            max_bytes,
                        }
                    },
                )
        }

        struct Harness {
            queue: PeerQueue<u32>,
            now: Instant,
            calls: Vec<CallToken>,
            batched: Vec<u32>,
            alone: Vec<u32>,
            refused: Vec<u32>,
            oversized: Vec<u32>,
            accepted: Vec<u32>,
            /// The size of every pushed item, by item.
            sizes: Vec<usize>,
        }

        impl Harness {
            fn take(&mut self, batch: Option<Batch<u32>>) -> Result<(), TestCaseError> {
                if let Some(batch) = batch {
                    prop_assert!(!batch.items.is_empty());
                    prop_assert!(batch.items.len() <= self.queue.config().limit);
                    let bytes: usize = batch
                        .items
                        .iter()
                        .map(|item| self.sizes[*item as usize])
                        .sum();
                    prop_assert!(bytes <= self.queue.config().max_bytes);
                    self.batched.extend(batch.items);
                    self.calls.push(batch.call);
                }
                Ok(())
            }

            fn check(&mut self) -> Result<(), TestCaseError> {
                let config = self.queue.config().clone();
                prop_assert!(self.queue.len() <= config.max_queue);
                prop_assert!(self.queue.in_flight() <= config.max_in_flight);
                prop_assert_eq!(self.queue.in_flight(), self.calls.len());
                // No missed opportunity: whatever could go now has gone.
                prop_assert!(self.queue.poll(self.now).is_none());
                if let Some(deadline) = self.queue.next_deadline() {
                    prop_assert!(deadline > self.now);
                }
                Ok(())
            }
        }

        proptest! {
            #[test]
            fn every_item_comes_out_once_in_order_within_every_bound(
                config in batch_config(),
                ops in proptest::collection::vec(op(), 0..200),
            ) {
                let mut h = Harness {
                    queue: PeerQueue::new(config).unwrap(),
                    now: Instant::now(),
                    calls: Vec::new(),
                    batched: Vec::new(),
                    alone: Vec::new(),
                    refused: Vec::new(),
                    oversized: Vec::new(),
                    accepted: Vec::new(),
                    sizes: Vec::new(),
                };
                let mut next = 0u32;
                for op in ops {
                    match op {
                        Op::Push { no_batching, bytes } => {
                            let item = next;
                            next += 1;
                            h.sizes.push(bytes);
                            let too_large = bytes > h.queue.config().max_bytes;
                            let full = h.queue.len() >= h.queue.config().max_queue;
                            let bypass = no_batching || h.queue.config().disabled;
                            match h.queue.push_sized(item, bytes, no_batching, h.now) {
                                Push::Oversized(back) => {
                                    prop_assert!(too_large);
                                    prop_assert_eq!(back, item);
                                    h.oversized.push(back);
                                    continue;
                                }
                                _ if too_large => prop_assert!(false, "an oversized item was accepted"),
                                Push::SendAlone(sent) => {
                                    prop_assert!(bypass);
                                    prop_assert_eq!(sent, item);
                                    h.alone.push(sent);
                                }
                                Push::Refused(back) => {
                                    prop_assert!(full && !bypass);
                                    prop_assert_eq!(back, item);
                                    h.refused.push(back);
                                }
                                Push::Queued { deadline } => {
                                    prop_assert!(!bypass && !full);
                                    prop_assert_eq!(deadline, h.queue.next_deadline());
                                    h.accepted.push(item);
                                }
                                Push::Send(batch) => {
                                    prop_assert!(!bypass && !full);
                                    // The pushed item ends the batch, or stayed queued because
                                    // the batch had no room left for its bytes.
                                    let last = batch.items.last() == Some(&item);
                                    let left = !h.queue.is_empty() && !batch.items.contains(&item);
                                    prop_assert!(last || left);
                                    h.accepted.push(item);
                                    h.take(Some(batch))?;
                                }
                            }
                        }
                        Op::Advance { micros } => {
                            let target = h.now + Duration::from_micros(micros);
                            while let Some(deadline) = h.queue.next_deadline() {
                                if deadline > target {
                                    break;
                                }
                                h.now = deadline;
                                let batch = h.queue.on_timer(h.now);
                                // Liveness: waking at the deadline always sends something.
                                prop_assert!(batch.is_some());
                                h.take(batch)?;
                                h.check()?;
                            }
                            h.now = target;
                        }
                        Op::Timer => {
                            let batch = h.queue.on_timer(h.now);
                            h.take(batch)?;
                        }
                        Op::Finish { index } => {
                            if !h.calls.is_empty() {
                                let call = h.calls.remove(index % h.calls.len());
                                let batch = h.queue.on_call_finished(call, h.now);
                                h.take(batch)?;
                            }
                        }
                    }
                    h.check()?;
                }
                // Whatever is left comes back in order on drain.
                let mut out = h.batched.clone();
                out.extend(h.queue.drain());
                prop_assert_eq!(&out, &h.accepted);
                // Every item exactly once across batches, alone sends, refusals and the drain.
                let mut all: Vec<u32> = out;
                all.extend(&h.alone);
                all.extend(&h.refused);
                all.extend(&h.oversized);
                all.sort_unstable();
                prop_assert_eq!(all, (0..next).collect::<Vec<_>>());
            }
        }
    }
}
