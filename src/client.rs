//! A Rust client of any ringlimit (or Gubernator) node, with a one-call `consume` helper.
//!
//! Rust services that do not want to build wire requests by hand ask "may `key` spend one more
//! hit of this limit?" and get a small [`Decision`] back. Any node answers for the whole cluster
//! (it forwards to the key's owner), so the client needs one address. [`Client::get_rate_limits`]
//! is the full `GetRateLimits` call for everything else.
//!
//! ```no_run
//! use std::time::Duration;
//! use ringlimit::client::Client;
//!
//! # async fn run() -> Result<(), ringlimit::client::ClientError> {
//! let mut client = Client::connect("127.0.0.1:1051").await?;
//! let decision = client
//!     .consume("requests_per_sec", "account:1234", 10, Duration::from_secs(1))
//!     .await?;
//! if !decision.allowed {
//!     println!("slow down: retry in {:?}", decision.retry_after);
//! }
//! # Ok(())
//! # }
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tonic::transport::{Channel, Endpoint};

use crate::proto::{self, v1_client::V1Client};

/// Why a call through [`Client`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address is not a valid endpoint.
    #[error("invalid address '{address}': {reason}")]
    InvalidAddress {
        /// The address given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The node could not be reached.
    #[error("cannot connect to {address}: {source}")]
    Connect {
        /// The address given.
        address: String,
        /// The transport error.
        source: tonic::transport::Error,
    },
    /// The node answered the call with an error status.
    #[error("call failed: {}: {}", .0.code(), .0.message())]
    Call(#[from] tonic::Status),
    /// The node answered the item with an error (bad input, or its owner was unreachable).
    #[error("the node refused the request: {0}")]
    Item(String),
    /// The request cannot be expressed on the wire (a duration beyond `i64` milliseconds).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The node answered a different number of items than were sent.
    #[error("expected {expected} answers, got {got}")]
    AnswerCount {
        /// Items sent.
        expected: usize,
        /// Answers received.
        got: usize,
    },
}

impl ClientError {
    /// Whether the cluster refused the request itself as invalid (a validation error of the item,
    /// `INVALID_ARGUMENT` / `OUT_OF_RANGE`, or a request that cannot be sent), as opposed to not
    /// being able to decide. A fail-open caller must not let such a request through.
    pub fn is_invalid_input(&self) -> bool {
        match self {
            ClientError::Item(message) => crate::request::is_validation_message(message),
            ClientError::Call(status) => matches!(
                status.code(),
                tonic::Code::InvalidArgument | tonic::Code::OutOfRange
            ),
            ClientError::InvalidRequest(_) => true,
            _ => false,
        }
    }
}

/// The answer to one [`Client::consume`]: admitted or not, and what is left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the hits were admitted.
    pub allowed: bool,
    /// The limit in force.
    pub limit: i64,
    /// Hits left in the current window.
    pub remaining: i64,
    /// When the limit is next fully restored, epoch ms.
    pub reset_time_ms: i64,
    /// For a refusal, how long to wait before the limit has room again; zero when allowed.
    pub retry_after: Duration,
    /// The gRPC address of the node that owns the key, when another node answered for it.
    pub owner: Option<String>,
}

impl Decision {
    /// The decision an item's answer carries, or its error. `now_ms` is the caller's clock, used
    /// for [`Decision::retry_after`].
    pub fn from_response(response: proto::RateLimitResp, now_ms: i64) -> Result<Self, ClientError> {
        if !response.error.is_empty() {
            return Err(ClientError::Item(response.error));
        }
        let allowed = response.status != proto::Status::OverLimit as i32;
        let retry_after = if allowed {
            Duration::ZERO
        } else {
            let wait = response.reset_time.saturating_sub(now_ms).max(0);
            Duration::from_millis(u64::try_from(wait).unwrap_or(0))
        };
        Ok(Self {
            allowed,
            limit: response.limit,
            remaining: response.remaining,
            reset_time_ms: response.reset_time,
            retry_after,
            owner: response
                .metadata
                .get(crate::evaluator::OWNER_METADATA_KEY)
                .cloned(),
        })
    }

    /// [`Decision::retry_after`] in whole seconds, rounded up (what an HTTP `Retry-After` says);
    /// 0 when allowed.
    pub fn retry_after_secs(&self) -> u64 {
        let millis = self.retry_after.as_millis();
        u64::try_from(millis.div_ceil(1000)).unwrap_or(u64::MAX)
    }
}

/// A token-bucket item that spends `hits` of `limit` per `duration` for `name`/`key`.
pub fn consume_request(
    name: &str,
    key: &str,
    hits: i64,
    limit: i64,
    duration: Duration,
) -> Result<proto::RateLimitReq, ClientError> {
    let duration = i64::try_from(duration.as_millis())
        .map_err(|_| ClientError::InvalidRequest(format!("duration {duration:?} is too long")))?;
    Ok(proto::RateLimitReq {
        name: name.to_string(),
        unique_key: key.to_string(),
        hits,
        limit,
        duration,
        ..Default::default()
    })
}

/// The decision in the answer to a call of one item.
pub(crate) fn decision_of_the_answer(
    mut responses: Vec<proto::RateLimitResp>,
) -> Result<Decision, ClientError> {
    let response = responses.pop().ok_or(ClientError::AnswerCount {
        expected: 1,
        got: 0,
    })?;
    Decision::from_response(response, now_ms())
}

/// The caller's clock, in epoch ms.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A client of one node's `pb.gubernator.V1` API. Cheap to clone: clones share one connection.
#[derive(Debug, Clone)]
pub struct Client {
    grpc: V1Client<Channel>,
}

impl Client {
    /// Connects to the node at `address` (`host:port`, or a full `http://` URI).
    pub async fn connect(address: &str) -> Result<Self, ClientError> {
        let endpoint = endpoint(address)?;
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| ClientError::Connect {
                address: address.to_string(),
                source,
            })?;
        Ok(Self::new(channel))
    }

    /// A client that connects on first use (and reconnects as needed) instead of now.
    pub fn connect_lazy(address: &str) -> Result<Self, ClientError> {
        Ok(Self::new(endpoint(address)?.connect_lazy()))
    }

    /// A client over an existing channel.
    pub fn new(channel: Channel) -> Self {
        Self {
            grpc: V1Client::new(channel),
        }
    }

    /// Sends one `GetRateLimits` call; one answer per item, in order.
    pub async fn get_rate_limits(
        &mut self,
        requests: Vec<proto::RateLimitReq>,
    ) -> Result<Vec<proto::RateLimitResp>, ClientError> {
        let expected = requests.len();
        let responses = self
            .grpc
            .get_rate_limits(proto::GetRateLimitsReq { requests })
            .await?
            .into_inner()
            .responses;
        proto::one_answer_per_item(responses, expected, |expected, got| {
            ClientError::AnswerCount { expected, got }
        })
    }

    /// Spends one hit of a token bucket of `limit` hits per `duration` for `key` in `name`.
    pub async fn consume(
        &mut self,
        name: &str,
        key: &str,
        limit: i64,
        duration: Duration,
    ) -> Result<Decision, ClientError> {
        self.consume_hits(name, key, 1, limit, duration).await
    }

    /// Like [`Client::consume`], spending `hits` at once (0 only reads).
    pub async fn consume_hits(
        &mut self,
        name: &str,
        key: &str,
        hits: i64,
        limit: i64,
        duration: Duration,
    ) -> Result<Decision, ClientError> {
        let request = consume_request(name, key, hits, limit, duration)?;
        decision_of_the_answer(self.get_rate_limits(vec![request]).await?)
    }
}

fn endpoint(address: &str) -> Result<Endpoint, ClientError> {
    let uri = if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    };
    Endpoint::from_shared(uri)
        .map(|endpoint| endpoint.tcp_nodelay(true))
        .map_err(|error| ClientError::InvalidAddress {
            address: address.to_string(),
            reason: error.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_says_how_long_to_wait() {
        let response = proto::RateLimitResp {
            status: proto::Status::OverLimit as i32,
            limit: 10,
            remaining: 0,
            reset_time: 10_500,
            ..Default::default()
        };
        let decision = Decision::from_response(response, 8_000).unwrap();
        assert!(!decision.allowed);
        assert_eq!(decision.retry_after, Duration::from_millis(2_500));
        assert_eq!(decision.retry_after_secs(), 3);
    }

    #[test]
    fn an_admission_has_no_wait_and_item_errors_are_errors() {
        let response = proto::RateLimitResp {
            limit: 10,
            remaining: 9,
            reset_time: 10_500,
            ..Default::default()
        };
        let decision = Decision::from_response(response, 8_000).unwrap();
        assert!(decision.allowed);
        assert_eq!(decision.retry_after_secs(), 0);
        let failed = proto::RateLimitResp {
            error: "field 'namespace' cannot be empty".into(),
            ..Default::default()
        };
        assert!(matches!(
            Decision::from_response(failed, 0),
            Err(ClientError::Item(_))
        ));
    }

    #[test]
    fn bad_addresses_and_durations_are_typed_errors() {
        assert!(matches!(
            Client::connect_lazy("not a uri"),
            Err(ClientError::InvalidAddress { .. })
        ));
        assert!(matches!(
            consume_request("n", "k", 1, 1, Duration::MAX),
            Err(ClientError::InvalidRequest(_))
        ));
    }
}
