//! One rule for every mutex of the crate: a lock poisoned by a panicking holder is taken anyway.
//!
//! What the mutexes guard (counters, summaries, queues, membership bookkeeping) stays consistent
//! at every await-free step, so a panic elsewhere must not turn every later call into a panic.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, recovering it if a holder panicked.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}
