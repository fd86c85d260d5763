//! Per-call deadlines: a caller's `grpc-timeout` bounds all the work a node does for the call.
//!
//! The layer in [`super::layer`] reads the header, answers `DEADLINE_EXCEEDED` at once when no time
//! is left, and otherwise runs the call [`within`] its deadline. While the call runs, the deadline is
//! visible to everything it awaits through [`current`], so the batching driver can give a peer call
//! no more time than the callers of its items still have and can skip items whose caller has given
//! up (see [`peer_call_timeout`]).
//!
//! The node answers slightly before the client's own deadline ([`answer_by`]): an answer that
//! arrives after the client stopped waiting is wasted, and the margin lets `DEADLINE_EXCEEDED` reach
//! the client instead of the client timing out on its own with nothing. The margin is a tenth of the
//! timeout, at most 100 ms: enough for a loaded machine's scheduling delays. The same header is
//! honoured on the HTTP gateway, as grpc-gateway forwards it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::HeaderMap;
use tokio::task::futures::TaskLocalFuture;
use tokio::time::Timeout;

use crate::error::CallError;

/// The gRPC header that carries the caller's timeout.
pub const GRPC_TIMEOUT_HEADER: &str = "grpc-timeout";

/// The most a node answers ahead of the client's deadline.
const MAX_MARGIN: Duration = Duration::from_millis(100);

tokio::task_local! {
    static ANSWER_BY: Instant;
}

/// Parses a `grpc-timeout` value: 1 to 8 ASCII digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
/// Anything else is `None` (the header is then ignored, as gRPC servers do).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// When the node answers a call with `timeout` that arrived at `now`: a tenth of the timeout (at
/// most 100 ms) before the client's deadline. `None` when the deadline is too far to represent
/// (no deadline, in effect).
pub fn answer_by(now: Instant, timeout: Duration) -> Option<Instant> {
    let margin = (timeout / 10).min(MAX_MARGIN);
    now.checked_add(timeout - margin)
}

/// The instant by which the call with `headers`, received at `now`, must be answered; `None`
/// without a valid `grpc-timeout`.
pub fn from_headers(headers: &HeaderMap, now: Instant) -> Option<Instant> {
    let value = headers.get(GRPC_TIMEOUT_HEADER)?.to_str().ok()?;
    answer_by(now, parse_grpc_timeout(value)?)
}

/// Runs `call` until it finishes or `deadline` passes, making `deadline` the [`current`] one for
/// everything `call` awaits. An expired deadline drops `call` (cancelling what it awaits) and
/// returns [`CallError::DeadlineExceeded`].
pub fn within<F: Future>(deadline: Instant, call: F) -> Within<F> {
    Within {
        call: ANSWER_BY.scope(
            deadline,
            tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), call),
        ),
    }
}

pin_project_lite::pin_project! {
    /// The future of [`within`]: a named type, so the layer that runs calls within their
    /// deadlines need not box it.
    pub struct Within<F> {
        #[pin]
        call: TaskLocalFuture<Instant, Timeout<F>>,
    }
}

impl<F: Future> Future for Within<F> {
    type Output = Result<F::Output, CallError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project()
            .call
            .poll(cx)
            .map(|finished| finished.map_err(|_elapsed| CallError::DeadlineExceeded))
    }
}

/// The deadline of the call being served on this task, if it has one.
pub fn current() -> Option<Instant> {
    ANSWER_BY.try_with(|deadline| *deadline).ok()
}

/// How long a peer call carrying items with `deadlines` may take: the batch timeout, or less when
/// every item's caller has a deadline and the latest of them is sooner (a call must not outlive
/// all of its callers). Zero when every caller's deadline has passed.
pub fn peer_call_timeout(
    batch_timeout: Duration,
    deadlines: impl IntoIterator<Item = Option<Instant>>,
    now: Instant,
) -> Duration {
    let mut latest: Option<Instant> = None;
    for deadline in deadlines {
        let Some(deadline) = deadline else {
            return batch_timeout;
        };
        latest = Some(latest.map_or(deadline, |latest| latest.max(deadline)));
    }
    match latest {
        Some(latest) => batch_timeout.min(latest.saturating_duration_since(now)),
        None => batch_timeout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_grpc_timeout_unit() {
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("4S"), Some(Duration::from_secs(4)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(
            parse_grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        assert_eq!(parse_grpc_timeout("0m"), Some(Duration::ZERO));
    }

    #[test]
    fn rejects_malformed_grpc_timeouts() {
        for bad in [
            "",
            "m",
            "5",
            "123456789m",
            "-5m",
            "5x",
            "5 m",
            "1.5S",
            "５m",
            "m5",
        ] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn answers_a_little_before_the_client_deadline() {
        let now = Instant::now();
        assert_eq!(
            answer_by(now, Duration::from_millis(50)),
            Some(now + Duration::from_millis(45))
        );
        assert_eq!(
            answer_by(now, Duration::from_secs(10)),
            Some(now + Duration::from_secs(10) - MAX_MARGIN)
        );
        assert_eq!(answer_by(now, Duration::ZERO), Some(now));
        // The largest header value is ~11,400 years: representable, or treated as no deadline.
        let far = parse_grpc_timeout("99999999H").expect("valid");
        let _ = answer_by(now, far);
        assert_eq!(answer_by(now, Duration::MAX), None);
    }

    #[test]
    fn peer_calls_live_as_long_as_their_latest_caller() {
        let now = Instant::now();
        let batch = Duration::from_millis(500);
        let soon = Some(now + Duration::from_millis(100));
        let later = Some(now + Duration::from_millis(300));
        assert_eq!(peer_call_timeout(batch, [], now), batch);
        assert_eq!(
            peer_call_timeout(batch, [soon, later], now),
            Duration::from_millis(300)
        );
        assert_eq!(peer_call_timeout(batch, [soon, None], now), batch);
        let far = Some(now + Duration::from_secs(60));
        assert_eq!(peer_call_timeout(batch, [far], now), batch);
        let past = Some(now - Duration::from_millis(1));
        assert_eq!(peer_call_timeout(batch, [past], now), Duration::ZERO);
    }

    #[tokio::test]
    async fn within_exposes_the_deadline_and_cancels_late_calls() {
        assert_eq!(current(), None);
        let deadline = Instant::now() + Duration::from_millis(20);
        let seen = within(deadline, async { current() }).await;
        assert_eq!(seen, Ok(Some(deadline)));
        let late = within(deadline, std::future::pending::<()>()).await;
        assert_eq!(late, Err(CallError::DeadlineExceeded));
    }
}
