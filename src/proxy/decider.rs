//! Where the proxy's decisions are made: a node embedded in the proxy process (a full cluster
//! member), or a remote ringlimit node over gRPC. Either way the decision is the cluster's, so
//! every proxy in front of one cluster shares each limit.
//!
//! A failure is classified here, because the proxy's failure policy (`open` or `closed`) must
//! only ever apply to a cluster that could not decide: an item the cluster refused as invalid
//! ([`DecideError::Invalid`]: a validation message, or a call refused with `INVALID_ARGUMENT` /
//! `OUT_OF_RANGE`) is the request's own fault and is never let through.

use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::node::Node;
use crate::proto::{self, v1_client::V1Client};

/// Asks the cluster for decisions.
#[derive(Clone)]
pub enum Decider {
    /// A node running in this process.
    Embedded(Arc<Node>),
    /// A ringlimit (or Gubernator) node's `V1` gRPC API.
    Remote {
        /// The client (lazily connected).
        client: V1Client<Channel>,
        /// How long one decision may take.
        timeout: Duration,
    },
}

/// Why no decision was made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    /// The cluster could not decide (unreachable, timed out, an owner down): the failure policy
    /// applies.
    #[error("the rate-limit cluster could not decide: {0}")]
    Unavailable(String),
    /// The cluster refused the item itself as invalid: never let through.
    #[error("the rate-limit cluster refused the item as invalid: {0}")]
    Invalid(String),
}

impl DecideError {
    /// Whether the item's unique key (the client key) is what the cluster refused.
    pub fn is_about_the_key(&self) -> bool {
        matches!(self, DecideError::Invalid(message) if message.contains("unique_key"))
    }
}

/// An item's `error` text as a [`DecideError`].
fn item_error(message: String) -> DecideError {
    if crate::request::is_validation_message(&message) {
        DecideError::Invalid(message)
    } else {
        DecideError::Unavailable(message)
    }
}

impl Decider {
    /// A remote decider for the gRPC address `address` (`host:port` or a URL); connects lazily, so
    /// a cluster that is down at start only fails the requests that need it.
    pub fn remote(address: &str, timeout: Duration) -> Result<Self, DecideError> {
        let url = if address.contains("://") {
            address.to_string()
        } else {
            format!("http://{address}")
        };
        let endpoint = Endpoint::from_shared(url)
            .map_err(|error| {
                DecideError::Unavailable(format!("invalid address '{address}': {error}"))
            })?
            .connect_timeout(timeout)
            .timeout(timeout);
        Ok(Decider::Remote {
            client: V1Client::new(endpoint.connect_lazy()),
            timeout,
        })
    }

    /// Decides one item; an item error is a [`DecideError`] too, classified as above.
    pub async fn decide(
        &self,
        item: proto::RateLimitReq,
    ) -> Result<proto::RateLimitResp, DecideError> {
        let answers = match self {
            Decider::Embedded(node) => {
                node.get_rate_limits(vec![item])
                    .await
                    .map_err(|error| match error.code() {
                        tonic::Code::InvalidArgument | tonic::Code::OutOfRange => {
                            DecideError::Invalid(error.to_string())
                        }
                        _ => DecideError::Unavailable(error.to_string()),
                    })?
            }
            Decider::Remote { client, timeout } => {
                let mut client = client.clone();
                let call = client.get_rate_limits(proto::GetRateLimitsReq {
                    requests: vec![item],
                });
                tokio::time::timeout(*timeout, call)
                    .await
                    .map_err(|_| DecideError::Unavailable(format!("no answer within {timeout:?}")))?
                    .map_err(|status| {
                        let message = format!("{}: {}", status.code(), status.message());
                        match status.code() {
                            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => {
                                DecideError::Invalid(message)
                            }
                            _ => DecideError::Unavailable(message),
                        }
                    })?
                    .into_inner()
                    .responses
            }
        };
        let answer = answers
            .into_iter()
            .next()
            .ok_or_else(|| DecideError::Unavailable("the answer has no item".into()))?;
        if answer.error.is_empty() {
            Ok(answer)
        } else {
            Err(item_error(answer.error))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{InputLimits, validate};

    #[test]
    fn validation_failures_are_invalid_and_owner_failures_unavailable() {
        let item = |unique_key: String, algorithm: i32, duration: i64| proto::RateLimitReq {
            name: "proxy_default".into(),
            unique_key,
            hits: 1,
            limit: 2,
            duration,
            algorithm,
            behavior: if duration == 9 { 4 } else { 0 },
            ..Default::default()
        };
        // Every validation message ringlimit produces is recognised.
        for bad in [
            item("k".repeat(2000), 1, 1000),
            item(String::new(), 1, 1000),
            item("k".into(), 7, 1000),
            item("k".into(), 1, 0),
            item("k".into(), 0, 9),
        ] {
            let message = validate(&bad, 0, InputLimits::default())
                .unwrap_err()
                .to_string();
            assert!(
                matches!(item_error(message.clone()), DecideError::Invalid(_)),
                "{message}"
            );
        }
        let too_long = item_error(
            validate(&item("k".repeat(2000), 1, 1000), 0, InputLimits::default())
                .unwrap_err()
                .to_string(),
        );
        assert!(too_long.is_about_the_key());
        for unreachable in [
            "error while forwarding to owner 10.0.0.1:1051: unavailable",
            "error while forwarding to new owner 10.0.0.2:1051: timed out",
            "the batch queue of 10.0.0.3:1051 is full",
        ] {
            assert_eq!(
                item_error(unreachable.into()),
                DecideError::Unavailable(unreachable.into())
            );
        }
    }
}
