//! Batching of forwarded items to their owner peer: the pure policy.
//!
//! A node that does not own a rate-limit key forwards the item to the owner; many items share one
//! `GetPeerRateLimits` call. This module decides *when* a call goes and *which* items it carries.
//! It performs no I/O, spawns nothing and never reads the clock: every method takes the current
//! [`Instant`](std::time::Instant) as an argument. That makes every rule unit-testable with
//! hand-made instants (`base + Duration`) and property-testable over arbitrary event sequences.
//!
//! # The rules
//!
//! A [`PeerQueue`] (one per peer) holds queued items in FIFO order and counts the *batched calls*
//! in flight to its peer. A batch is taken from the front of the queue, at most
//! [`BatchConfig::limit`] items, whenever a call slot is free (`in_flight < max_in_flight`) and the
//! queue is *ready*, that is when any of these holds:
//!
//! 1. **idle**: fewer than [`BatchConfig::eager_in_flight`] calls are in flight (default 1: no call
//!    in flight), so batching costs no latency at low load;
//! 2. **full**: at least `limit` items are queued (Gubernator's `batch_limit`);
//! 3. **due**: the oldest queued item has waited [`BatchConfig::wait`] (Gubernator's
//!    `batch_wait`).
//!
//! The predicate is evaluated after every event (push, timer, call finished), so at most one batch
//! comes out of each event. Under load the idle rule stops applying, items coalesce while calls are
//! in flight, and the queue goes when a call finishes with the peer idle again (after at most one
//! round trip), when it fills up, or when its oldest item is due, whichever comes first. When all
//! `max_in_flight` slots are busy nothing goes until a call finishes: the queue then absorbs the
//! load (up to [`BatchConfig::max_queue`], beyond which pushes are [refused](Push::Refused)) and
//! batches grow towards `limit`, which is what raises throughput when the peer is slow.
//!
//! # Guarantees
//!
//! - **Latency**: while a slot is free, a queued item waits at most `wait` (Gubernator's bound),
//!   and with the default `eager_in_flight` of 1 no longer than the call in flight takes to finish
//!   either, so at low load it does not wait at all. Only when all `max_in_flight` slots are busy
//!   does it wait for calls to finish (each bounded by the driver's `batch_timeout`).
//! - **Order**: batches are taken from the front of one FIFO queue, so items keep their push order
//!   within and across batches; the driver zips each call's responses with the batch's items.
//! - **Bounds**: no batch carries more than `limit` items, the queue never holds more than
//!   `max_queue`, and at most `max_in_flight` batched calls are in flight.
//!
//! `max_in_flight` defaults to 4 rather than 1 or 2: with the idle rule and the timer, a loaded
//! peer sees about `1 + rtt / wait` calls in flight (Gubernator's own timing), which is ≤ 4 for
//! in-data-center round trips up to about 1.5 ms, so the cap does not change normal operation. It
//! only bites when the peer slows down, where Gubernator would open ever more calls; the queue then
//! grows, batches fill towards `limit` (throughput `max_in_flight × limit` items per round trip)
//! and, past `max_queue`, callers get `RESOURCE_EXHAUSTED` instead of unbounded memory.
//!
//! Items with `NO_BATCHING`, and every item when batching is [disabled](BatchConfig::disabled), are
//! [sent alone](Push::SendAlone) at once. They do not touch the queue, are not counted in flight and
//! are not limited by `max_in_flight` (Gubernator sends them at once, whatever the load).
//!
//! # How a driver uses it
//!
//! A driver (one task per peer, say) owns the [`PeerQueue`] and reacts to three kinds of event:
//!
//! - a caller forwards an item: [`PeerQueue::push_sized`]. On [`Push::Send`] it starts the call with the
//!   batch's items; on [`Push::SendAlone`] it starts a call with that one item; on
//!   [`Push::Refused`] it answers the caller `RESOURCE_EXHAUSTED`; on [`Push::Queued`] it keeps the
//!   caller waiting.
//! - a call finishes (success or failure): it answers the batch's callers in order (the `n`-th
//!   response belongs to the `n`-th item of the batch), then hands the batch's [`CallToken`] back to
//!   [`PeerQueue::on_call_finished`], which may return the next batch.
//! - the timer fires: [`PeerQueue::on_timer`], which may return a batch.
//!
//! After every event it re-arms its timer at [`PeerQueue::next_deadline`] (no timer when `None`).
//! Waking early or late is harmless: [`PeerQueue::on_timer`] sends only what is due.
//! When the peer leaves the cluster, [`PeerQueue::drain`] hands back whatever is still queued.

pub mod budget;
pub mod driver;
mod policy;

pub use driver::{ForwardError, PeerBatcher, PeerCallMetrics};

pub use policy::{Batch, BatchConfig, BatchConfigError, CallToken, PeerQueue, Push};
