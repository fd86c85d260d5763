//! Idempotency records: the first answer to a `(user, Idempotency-Key)` pair, kept for a TTL, so a
//! repeat gets that answer without spending again.
//!
//! The store is a bounded `moka` cache (least recently used records go first beyond the capacity)
//! whose entries expire a fixed time after they were written. Each entry is a `OnceCell`: callers
//! with the same key that arrive together wait for the first one's decision instead of deciding
//! twice. A decision that fails leaves the cell empty, so the next repeat decides afresh. A record
//! also keeps the request it answered (its fingerprint); reusing the key for a different request
//! is a conflict, never a silent replay.
//!
//! A decision spends tokens, so once started it must finish and be recorded even if its caller
//! goes away (a client that disconnects, a cancelled peer call): otherwise the spend happens but
//! the cell stays empty, and the client's retry spends again. So the cell is filled by a task of
//! its own, which holds the record's cell until the decision is stored; callers only wait for it.
//! Those tasks are tracked by the store ([`IdempotencyStore::close`]), so shutdown waits for the
//! spends in flight, with a bound, before the peer clients they spend through are closed.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use tokio::sync::OnceCell;
use tokio_util::task::TaskTracker;

/// What identifies a record: idempotency keys are scoped per user.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordKey {
    /// The user the call was for.
    pub user_id: String,
    /// The `Idempotency-Key` header.
    pub key: String,
}

/// What a repeat must match: the rest of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// The resource.
    pub resource: String,
    /// The cost.
    pub cost: i64,
}

/// How a call with an idempotency key was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remembered<A> {
    /// Decided now, and recorded.
    Fresh(A),
    /// The recorded answer of an earlier call.
    Replayed(A),
    /// The key was used for a different request within the TTL.
    Conflict,
}

/// The task deciding a record panicked, so the record is still empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the decision was lost (its task failed); nothing was recorded")]
pub struct DecisionLost;

struct Record<A> {
    fingerprint: Fingerprint,
    answer: A,
}

/// The bounded, expiring record store.
pub struct IdempotencyStore<A> {
    records: Cache<RecordKey, Arc<OnceCell<Record<A>>>>,
    /// The decisions in flight: they outlive their callers, not the store's owner.
    spends: TaskTracker,
    /// Where the decisions run: the runtime the store was created on, not the caller's (a call
    /// may be served on a gRPC runtime of its own that ends before the decision does).
    runtime: Option<tokio::runtime::Handle>,
}

impl<A: Clone + Send + Sync + 'static> IdempotencyStore<A> {
    /// At most `capacity` records, each kept for `ttl` after it was written.
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        Self {
            records: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            spends: TaskTracker::new(),
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// Waits, at most `bound`, for the decisions in flight to be recorded; `false` when some were
    /// still running at the bound (they are left to finish or be dropped with the runtime). Call
    /// it once no new calls arrive (the servers stopped): a decision started afterwards is still
    /// tracked, but not waited for by this call.
    pub async fn close(&self, bound: Duration) -> bool {
        self.spends.close();
        tokio::time::timeout(bound, self.spends.wait())
            .await
            .is_ok()
    }

    /// How many decisions are in flight.
    pub fn spends_in_flight(&self) -> usize {
        self.spends.len()
    }

    /// Answers from the record of `key` if there is one; otherwise runs `decide` (once, however
    /// many callers arrive together) and records its answer. The decision runs in a task of its
    /// own that records it even if this caller is dropped meanwhile.
    pub async fn once<F, Fut, E>(
        &self,
        key: RecordKey,
        fingerprint: Fingerprint,
        decide: F,
    ) -> Result<Remembered<A>, E>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<A, E>> + Send + 'static,
        E: From<DecisionLost> + Send + 'static,
    {
        let cell = self.records.get_with(key, || Arc::new(OnceCell::new()));
        let decided_here = match cell.get() {
            Some(_) => false,
            None => {
                let task_cell = Arc::clone(&cell);
                let task_fingerprint = fingerprint.clone();
                // Not cancelled with the caller: the task owns the cell until the answer is in.
                // Tracked, so shutdown waits for it (`close`).
                let spend = async move {
                    let mut decided_here = false;
                    task_cell
                        .get_or_try_init(|| async {
                            decided_here = true;
                            let answer = decide().await?;
                            Ok::<_, E>(Record {
                                fingerprint: task_fingerprint,
                                answer,
                            })
                        })
                        .await?;
                    Ok::<_, E>(decided_here)
                };
                let decision = match &self.runtime {
                    Some(runtime) => self.spends.spawn_on(spend, runtime),
                    None => self.spends.spawn(spend),
                };
                decision.await.map_err(|_| E::from(DecisionLost))??
            }
        };
        let Some(record) = cell.get() else {
            return Err(E::from(DecisionLost));
        };
        Ok(if record.fingerprint != fingerprint {
            Remembered::Conflict
        } else if decided_here {
            Remembered::Fresh(record.answer.clone())
        } else {
            Remembered::Replayed(record.answer.clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum TestError {
        Down,
        Lost,
    }

    impl From<DecisionLost> for TestError {
        fn from(_: DecisionLost) -> Self {
            TestError::Lost
        }
    }

    /// A decision that counts its runs and answers the count before it.
    fn counting(
        calls: &Arc<AtomicUsize>,
    ) -> impl Fn() -> std::future::Ready<Result<usize, TestError>> + Clone + Send + 'static {
        let calls = Arc::clone(calls);
        move || std::future::ready(Ok(calls.fetch_add(1, Ordering::SeqCst)))
    }

    fn key(k: &str) -> RecordKey {
        RecordKey {
            user_id: "u".into(),
            key: k.into(),
        }
    }

    fn print(cost: i64) -> Fingerprint {
        Fingerprint {
            resource: "default".into(),
            cost,
        }
    }

    #[tokio::test]
    async fn a_repeat_replays_and_a_different_request_conflicts() {
        let store = IdempotencyStore::new(100, Duration::from_secs(60));
        let calls = Arc::new(AtomicUsize::new(0));
        let decide = counting(&calls);
        assert_eq!(
            store.once(key("a"), print(1), decide.clone()).await,
            Ok(Remembered::Fresh(0))
        );
        assert_eq!(
            store.once(key("a"), print(1), decide.clone()).await,
            Ok(Remembered::Replayed(0))
        );
        assert_eq!(
            store.once(key("a"), print(2), decide.clone()).await,
            Ok(Remembered::Conflict)
        );
        assert_eq!(
            store.once(key("b"), print(2), decide.clone()).await,
            Ok(Remembered::Fresh(1))
        );
        // Keys are per user.
        let other_user = RecordKey {
            user_id: "v".into(),
            key: "a".into(),
        };
        assert_eq!(
            store.once(other_user, print(5), decide).await,
            Ok(Remembered::Fresh(2))
        );
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_failed_decision_is_not_remembered() {
        let store = IdempotencyStore::<u32>::new(100, Duration::from_secs(60));
        let failed = store
            .once(key("a"), print(1), || async { Err(TestError::Down) })
            .await;
        assert_eq!(failed, Err(TestError::Down));
        let retried = store
            .once(key("a"), print(1), || async { Ok::<_, TestError>(7) })
            .await;
        assert_eq!(retried, Ok(Remembered::Fresh(7)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_repeats_decide_once() {
        let store = Arc::new(IdempotencyStore::new(100, Duration::from_secs(60)));
        let calls = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let store = Arc::clone(&store);
                let calls = Arc::clone(&calls);
                tokio::spawn(async move {
                    store
                        .once(key("same"), print(1), || async move {
                            // A decision that takes a while, so the repeats overlap it.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            Ok::<_, TestError>(calls.fetch_add(1, Ordering::SeqCst))
                        })
                        .await
                })
            })
            .collect();
        let mut fresh = 0;
        for task in tasks {
            match task.await.unwrap().unwrap() {
                Remembered::Fresh(0) => fresh += 1,
                Remembered::Replayed(0) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(fresh, 1);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    /// Starts a spend of key "a" that answers `answer()` once released, and aborts its caller
    /// as soon as the spend has started; returns the spend's release.
    async fn spend_whose_caller_left(
        store: &Arc<IdempotencyStore<usize>>,
        answer: impl FnOnce() -> usize + Send + 'static,
    ) -> tokio::sync::oneshot::Sender<()> {
        let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let caller = {
            let store = Arc::clone(store);
            tokio::spawn(async move {
                store
                    .once(key("a"), print(1), move || async move {
                        let _ = started_tx.send(());
                        let _ = released.await;
                        Ok::<_, TestError>(answer())
                    })
                    .await
            })
        };
        started.await.expect("the decision started");
        caller.abort();
        let _ = caller.await;
        release
    }

    #[tokio::test]
    async fn a_decision_whose_caller_is_dropped_still_completes_and_is_recorded() {
        let store = Arc::new(IdempotencyStore::new(100, Duration::from_secs(60)));
        let calls = Arc::new(AtomicUsize::new(0));
        let spend_calls = Arc::clone(&calls);
        // The caller goes away mid-spend (a client that disconnected).
        let release =
            spend_whose_caller_left(&store, move || spend_calls.fetch_add(1, Ordering::SeqCst))
                .await;
        let _ = release.send(());
        // The retry replays the first spend instead of spending again.
        let retried = tokio::time::timeout(
            Duration::from_secs(5),
            store.once(key("a"), print(1), counting(&calls)),
        )
        .await
        .expect("the retry is answered");
        assert_eq!(retried, Ok(Remembered::Replayed(0)));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "spent exactly once");
    }

    #[tokio::test]
    async fn close_returns_only_after_the_spends_in_flight_are_recorded() {
        let store = Arc::new(IdempotencyStore::new(100, Duration::from_secs(60)));
        // Its caller is gone; the spend is not.
        let release = spend_whose_caller_left(&store, || 7).await;
        assert_eq!(store.spends_in_flight(), 1);
        assert!(
            !store.close(Duration::from_millis(50)).await,
            "close must not return while a spend runs"
        );
        let _ = release.send(());
        assert!(store.close(Duration::from_secs(5)).await);
        assert_eq!(store.spends_in_flight(), 0);
        let replayed = store
            .once(key("a"), print(1), || async { Ok::<_, TestError>(8) })
            .await;
        assert_eq!(
            replayed,
            Ok(Remembered::Replayed(7)),
            "recorded before close returned"
        );
    }

    #[tokio::test]
    async fn records_expire_after_the_ttl() {
        let store = IdempotencyStore::new(100, Duration::from_millis(50));
        let first = store
            .once(key("a"), print(1), || async { Ok::<_, TestError>(1) })
            .await;
        assert_eq!(first, Ok(Remembered::Fresh(1)));
        // Bounded poll: the record must be gone within a few seconds of its 50 ms TTL.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let again = store
                .once(key("a"), print(2), || async { Ok::<_, TestError>(2) })
                .await;
            if again == Ok(Remembered::Fresh(2)) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the record never expired"
            );
        }
    }
}
