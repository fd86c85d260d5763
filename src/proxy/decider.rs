//! Where the proxy's decisions are made: a node embedded in the proxy process (a full cluster
//! member), or a remote ringlimit node over gRPC. Either way the decision is the cluster's, so
//! every proxy in front of one cluster shares each limit.

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

/// The cluster could not decide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the rate-limit cluster could not decide: {0}")]
pub struct DecideError(pub String);

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
            .map_err(|error| DecideError(format!("invalid address '{address}': {error}")))?
            .connect_timeout(timeout)
            .timeout(timeout);
        Ok(Decider::Remote {
            client: V1Client::new(endpoint.connect_lazy()),
            timeout,
        })
    }

    /// Decides one item; an item error (an unreachable owner, say) is a [`DecideError`] too.
    pub async fn decide(
        &self,
        item: proto::RateLimitReq,
    ) -> Result<proto::RateLimitResp, DecideError> {
        let answers = match self {
            Decider::Embedded(node) => node
                .get_rate_limits(vec![item])
                .await
                .map_err(|error| DecideError(error.to_string()))?,
            Decider::Remote { client, timeout } => {
                let mut client = client.clone();
                let call = client.get_rate_limits(proto::GetRateLimitsReq {
                    requests: vec![item],
                });
                tokio::time::timeout(*timeout, call)
                    .await
                    .map_err(|_| DecideError(format!("no answer within {timeout:?}")))?
                    .map_err(|status| {
                        DecideError(format!("{}: {}", status.code(), status.message()))
                    })?
                    .into_inner()
                    .responses
            }
        };
        let answer = answers
            .into_iter()
            .next()
            .ok_or_else(|| DecideError("the answer has no item".into()))?;
        if answer.error.is_empty() {
            Ok(answer)
        } else {
            Err(DecideError(answer.error))
        }
    }
}
