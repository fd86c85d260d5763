//! `/readyz` and `/livez` on the HTTP port, the probes r8limiter's deployments use.
//!
//! Orchestrators route traffic by readiness and restart by liveness, so the two must mean
//! different things. `/livez` answers 200 `{"alive": true}` whenever the process serves HTTP at
//! all, draining included: a node finishing its calls must not be restarted. `/readyz` answers 200
//! `{"ready": true}` only when the node should get new traffic, and 503 `{"ready": false,
//! "reason": ..}` while it is joining (waiting, within `GUBER_HANDOFF_JOIN_WAIT`, for joined peers
//! to hand their keys over), leaving (handing its keys to their new owners), shutting down
//! (draining), or configured for a cluster but serving alone because its discovery backend was
//! never reached or was lost (the same rule as `grpc.health.v1`, see `Node::serving_alone`). Both take no admission slot (`limits::classify`): a saturated node still answers
//! them. The decision is the pure [`readiness`]; the routes only read the node's state.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::node::Node;

/// Why a node should not get new traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    /// It is shutting down and draining its calls.
    #[error("shutting down: draining in-flight calls")]
    ShuttingDown,
    /// It is handing its keys to their new owners before leaving.
    #[error("leaving the cluster: handing keys off")]
    Leaving,
    /// It waits for joined peers to hand keys over (at most the handoff join wait).
    #[error("joining: waiting for peers to hand keys over")]
    Joining,
    /// It is configured for a cluster but serves alone (the discovery backend is unreachable).
    #[error("serving alone: the discovery backend is unreachable")]
    ServingAlone,
}

/// What readiness depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeState {
    /// `Node::begin_shutdown` was called.
    pub shutting_down: bool,
    /// The node is leaving the cluster (handoff before deregistering).
    pub leaving: bool,
    /// The node is waiting for joined peers' handoff.
    pub joining: bool,
    /// The node is configured for a cluster but serves alone.
    pub serving_alone: bool,
}

/// Whether a node in `state` is ready; the most final reason wins.
pub fn readiness(state: NodeState) -> Result<(), NotReady> {
    if state.shutting_down {
        Err(NotReady::ShuttingDown)
    } else if state.leaving {
        Err(NotReady::Leaving)
    } else if state.joining {
        Err(NotReady::Joining)
    } else if state.serving_alone {
        Err(NotReady::ServingAlone)
    } else {
        Ok(())
    }
}

/// The probe routes of `node`.
pub fn routes<S: Clone + Send + Sync + 'static>(node: Arc<Node>) -> Router<S> {
    Router::new()
        .route("/readyz", get(readyz))
        .route("/livez", get(livez))
        .with_state(node)
}

async fn readyz(State(node): State<Arc<Node>>) -> Response {
    let state = NodeState {
        shutting_down: node.is_shutting_down(),
        leaving: node.handoff().is_leaving(),
        joining: node.handoff().is_awaiting_joins(),
        serving_alone: node.serving_alone().is_some(),
    };
    match readiness(state) {
        Ok(()) => (StatusCode::OK, Json(serde_json::json!({ "ready": true }))).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "ready": false, "reason": reason.to_string() })),
        )
            .into_response(),
    }
}

async fn livez() -> Response {
    (StatusCode::OK, Json(serde_json::json!({ "alive": true }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_nothing_is_under_way() {
        assert_eq!(readiness(NodeState::default()), Ok(()));
        let joining = NodeState {
            joining: true,
            ..NodeState::default()
        };
        assert_eq!(readiness(joining), Err(NotReady::Joining));
        let leaving = NodeState {
            leaving: true,
            ..joining
        };
        assert_eq!(readiness(leaving), Err(NotReady::Leaving));
        let draining = NodeState {
            shutting_down: true,
            ..leaving
        };
        assert_eq!(readiness(draining), Err(NotReady::ShuttingDown));
        let alone = NodeState {
            serving_alone: true,
            ..NodeState::default()
        };
        assert_eq!(readiness(alone), Err(NotReady::ServingAlone));
    }
}
