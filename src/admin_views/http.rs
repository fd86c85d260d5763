//! The admin HTTP routes, merged into the gateway's router when admin views are enabled.
//!
//! | route | answer |
//! |---|---|
//! | `GET /admin/stats` | decisions by status and the most refused keys since start |
//! | `GET /admin/top_offenders?window=minute\|hour\|day` | the most refused keys in the window |
//! | `GET /admin/keys/{name}/{unique_key}` | the owner's stored state of one limit, not spent |
//! | `GET /admin/peers` | the members, the ring, and each member's health |
//!
//! `stats` and `top_offenders` answer for the whole cluster unless `scope=local`; `limit=N` caps
//! the list (at most the summary capacity). With `GUBER_ADMIN_TOKEN` set, every route wants
//! `Authorization: Bearer <token>` and answers 401 without it; without it, the routes answer only
//! when the HTTP listener is loopback-only, and 403 `admin_token_required` otherwise
//! ([`crate::admin::access`]). Unique keys are shown hashed (`h:…`) unless `GUBER_ADMIN_SHOW_KEYS=true`
//! ([`crate::admin::redact`]); a key is peeked at by its raw value. The JSON shapes are in
//! `docs/openapi.yaml`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use super::cluster::{self, ClusterStats, FailedPeer};
use crate::admin::access::AccessDenied;
use crate::admin::offenders::Window;
use crate::admin::sketch::Counted;
use crate::request::LimitKey;

/// How many keys a list shows unless `limit` says otherwise.
const DEFAULT_LIMIT: usize = 10;

/// The admin routes of `node`, for a router of any state; no routes at all when admin views are
/// disabled (so they answer 404).
pub fn routes<S: Clone + Send + Sync + 'static>(router: Arc<crate::router::Router>) -> Router<S> {
    if !router.evaluator().admin().options().enabled {
        return Router::new();
    }
    Router::new()
        .route("/admin/stats", get(stats))
        .route("/admin/top_offenders", get(top_offenders))
        .route("/admin/keys/{name}/{unique_key}", get(key_state))
        .route("/admin/peers", get(peers))
        .with_state(router)
}

/// `GET /admin/stats`.
#[derive(Debug, Serialize)]
pub struct StatsView {
    /// `cluster` or `local`.
    pub scope: &'static str,
    /// Decisions by status.
    pub decisions: Decisions,
    /// The most refused keys since each node started.
    pub top_limited: Vec<Counted>,
    /// The summary's capacity: the most keys tracked per node and window.
    pub capacity: usize,
    /// The nodes whose share is included.
    pub nodes: Vec<String>,
    /// The nodes that did not answer.
    pub failed_peers: Vec<FailedPeer>,
}

/// Decision counts.
#[derive(Debug, Serialize)]
pub struct Decisions {
    /// Answered `UNDER_LIMIT`.
    pub under_limit: u64,
    /// Answered `OVER_LIMIT`.
    pub over_limit: u64,
}

/// `GET /admin/top_offenders`.
#[derive(Debug, Serialize)]
pub struct TopOffendersView {
    /// `minute`, `hour` or `day`.
    pub window: &'static str,
    /// `cluster` or `local`.
    pub scope: &'static str,
    /// Refusals recorded in the window.
    pub total: u64,
    /// The most refused keys, most first.
    pub offenders: Vec<Counted>,
    /// The nodes whose share is included.
    pub nodes: Vec<String>,
    /// The nodes that did not answer.
    pub failed_peers: Vec<FailedPeer>,
}

/// `GET /admin/keys/{name}/{unique_key}`.
#[derive(Debug, Serialize)]
pub struct KeyView {
    /// The limit's name.
    pub name: String,
    /// The limit's unique key, as shown (hashed unless `GUBER_ADMIN_SHOW_KEYS`).
    pub unique_key: String,
    /// The gRPC address of the owner that answered.
    pub owner: String,
    /// Whether the owner holds a live bucket (when not, the next request starts a full one).
    pub found: bool,
    /// The rest is present only when `found`.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub state: Option<KeyStateView>,
    /// The owner's clock when it answered, epoch ms.
    pub now: i64,
}

/// A stored limit's state.
#[derive(Debug, Serialize)]
pub struct KeyStateView {
    /// `TOKEN_BUCKET` or `LEAKY_BUCKET`.
    pub algorithm: String,
    /// `UNDER_LIMIT` or `OVER_LIMIT`.
    pub status: String,
    /// The limit in force.
    pub limit: i64,
    /// The duration in force (ms, or a calendar interval's code).
    pub duration: i64,
    /// The capacity (the limit, for a token bucket).
    pub burst: i64,
    /// Whole hits left now.
    pub remaining: i64,
    /// When the limit is fully restored, epoch ms.
    pub reset_time: i64,
    /// Milliseconds until then (0 when already full).
    pub refill_eta_ms: i64,
    /// When the owner forgets the bucket, epoch ms.
    pub expire_at: i64,
}

/// `GET /admin/peers`.
#[derive(Debug, Serialize)]
pub struct PeersView {
    /// The answering node's gRPC address.
    #[serde(rename = "self")]
    pub me: String,
    /// The number of peers on this node's ring.
    pub ring_size: usize,
    /// Every member.
    pub peers: Vec<PeerHealthView>,
}

/// One member.
#[derive(Debug, Serialize)]
pub struct PeerHealthView {
    /// Its gRPC address.
    pub grpc_address: String,
    /// Its HTTP address, when known.
    pub http_address: String,
    /// Its data center.
    pub data_center: String,
    /// Whether it is the answering node.
    pub is_self: bool,
    /// Whether it is on the answering node's ring.
    pub in_ring: bool,
    /// Whether its `HealthCheck` answered healthy.
    pub healthy: bool,
    /// Its `HealthCheck` status, or `unreachable`.
    pub status: String,
    /// Its own peer count, when it answered.
    pub peer_count: Option<i32>,
    /// Its health message or the call's error (empty when healthy).
    pub message: String,
    /// How long its health answer took.
    pub latency_ms: f64,
}

async fn stats(
    State(router): State<Arc<crate::router::Router>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<StatsView>, AdminError> {
    authorize(&router, &headers)?;
    let limit = list_limit(&router, &query)?;
    let scope = scope_of(&query)?;
    let stats = gather(&router, Window::SinceStart, scope).await;
    Ok(Json(StatsView {
        scope: scope.label(),
        decisions: Decisions {
            under_limit: stats.under_limit,
            over_limit: stats.over_limit,
        },
        top_limited: shown(&router, stats.offenders.top(limit)),
        capacity: router.evaluator().admin().options().capacity,
        nodes: stats.answered,
        failed_peers: stats.failed,
    }))
}

async fn top_offenders(
    State(router): State<Arc<crate::router::Router>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<TopOffendersView>, AdminError> {
    authorize(&router, &headers)?;
    let limit = list_limit(&router, &query)?;
    let scope = scope_of(&query)?;
    let window = match query.get("window").map(String::as_str) {
        None => Window::Minute,
        Some(name) => Window::parse(name)
            .filter(|window| *window != Window::SinceStart)
            .ok_or_else(|| {
                AdminError::InvalidArgument(format!(
                    "window '{name}' is not one of minute, hour, day"
                ))
            })?,
    };
    let stats = gather(&router, window, scope).await;
    Ok(Json(TopOffendersView {
        window: window.label(),
        scope: scope.label(),
        total: stats.offenders.total(),
        offenders: shown(&router, stats.offenders.top(limit)),
        nodes: stats.answered,
        failed_peers: stats.failed,
    }))
}

async fn key_state(
    State(router): State<Arc<crate::router::Router>>,
    headers: HeaderMap,
    Path((name, unique_key)): Path<(String, String)>,
) -> Result<Json<KeyView>, AdminError> {
    authorize(&router, &headers)?;
    let key = LimitKey::new(name, unique_key);
    let (owner, state) = cluster::peek(&router, &key)
        .await
        .map_err(|failure| AdminError::OwnerUnavailable(failure.to_string()))?;
    let found = state.found;
    let now = state.now;
    let state = found.then(|| KeyStateView {
        refill_eta_ms: state.reset_time.saturating_sub(now).max(0),
        algorithm: state.algorithm,
        status: state.status,
        limit: state.limit,
        duration: state.duration,
        burst: state.burst,
        remaining: state.remaining,
        reset_time: state.reset_time,
        expire_at: state.expire_at,
    });
    Ok(Json(KeyView {
        name: key.name,
        unique_key: router.evaluator().admin().shown_key(key.unique_key),
        owner,
        found,
        state,
        now,
    }))
}

async fn peers(
    State(router): State<Arc<crate::router::Router>>,
    headers: HeaderMap,
) -> Result<Json<PeersView>, AdminError> {
    authorize(&router, &headers)?;
    let views = cluster::peers(&router).await;
    let ring_size = router.peers().membership().ring.len();
    let peers = views
        .into_iter()
        .map(|view| {
            let (healthy, status, peer_count, message) = match view.health {
                Ok(health) => (
                    health.status == "healthy",
                    health.status,
                    Some(health.peer_count),
                    health.message,
                ),
                Err(message) => (false, "unreachable".to_string(), None, message),
            };
            PeerHealthView {
                grpc_address: view.grpc_address,
                http_address: view.http_address,
                data_center: view.data_center,
                is_self: view.is_self,
                in_ring: view.in_ring,
                healthy,
                status,
                peer_count,
                message,
                latency_ms: view.latency_ms,
            }
        })
        .collect();
    Ok(Json(PeersView {
        me: router.peers().me().grpc_address.clone(),
        ring_size,
        peers,
    }))
}

/// Why an admin view was refused; answered as `{"error": "<kind>", "message": "<text>"}`
/// (the `/allow` views in [`resources`](super::resources) answer the same way).
#[derive(Debug, thiserror::Error)]
pub(super) enum AdminError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error(transparent)]
    Denied(#[from] AccessDenied),
    #[error("the owner of this key did not answer: {0}")]
    OwnerUnavailable(String),
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (status, kind) = match &self {
            AdminError::InvalidArgument(_) => (StatusCode::BAD_REQUEST, "invalid_argument"),
            AdminError::Denied(AccessDenied::Unauthorized) => {
                (StatusCode::UNAUTHORIZED, "unauthorized")
            }
            AdminError::Denied(AccessDenied::TokenRequired) => {
                (StatusCode::FORBIDDEN, "admin_token_required")
            }
            AdminError::OwnerUnavailable(_) => (StatusCode::BAD_GATEWAY, "owner_unavailable"),
        };
        let body = Json(serde_json::json!({ "error": kind, "message": self.to_string() }));
        let mut response = (status, body).into_response();
        if let AdminError::Denied(AccessDenied::Unauthorized) = self {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"ringlimit-admin\""),
            );
        }
        response
    }
}

/// Whether a view answers for the cluster or this node only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Cluster,
    Local,
}

impl Scope {
    fn label(self) -> &'static str {
        match self {
            Scope::Cluster => "cluster",
            Scope::Local => "local",
        }
    }
}

async fn gather(router: &crate::router::Router, window: Window, scope: Scope) -> ClusterStats {
    match scope {
        Scope::Cluster => cluster::cluster_stats(router, window).await,
        Scope::Local => cluster::node_stats(router, window),
    }
}

fn scope_of(query: &HashMap<String, String>) -> Result<Scope, AdminError> {
    match query.get("scope").map(String::as_str) {
        None | Some("cluster") => Ok(Scope::Cluster),
        Some("local") => Ok(Scope::Local),
        Some(other) => Err(AdminError::InvalidArgument(format!(
            "scope '{other}' is not one of cluster, local"
        ))),
    }
}

fn list_limit(
    router: &crate::router::Router,
    query: &HashMap<String, String>,
) -> Result<usize, AdminError> {
    let capacity = router.evaluator().admin().options().capacity;
    match query.get("limit") {
        None => Ok(DEFAULT_LIMIT.min(capacity)),
        Some(text) => match text.parse::<usize>() {
            Ok(limit) if limit >= 1 => Ok(limit.min(capacity)),
            _ => Err(AdminError::InvalidArgument(format!(
                "limit '{text}' is not a positive whole number"
            ))),
        },
    }
}

/// Whether the caller presenting `headers` may read the admin views (see `admin::access`).
pub(super) fn authorize(
    router: &crate::router::Router,
    headers: &HeaderMap,
) -> Result<(), AdminError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    router
        .evaluator()
        .admin()
        .http_access(presented)
        .map_err(AdminError::from)
}

/// The listed keys as the views show them (hashed unless `GUBER_ADMIN_SHOW_KEYS`).
fn shown(router: &crate::router::Router, list: Vec<Counted>) -> Vec<Counted> {
    list.into_iter()
        .map(|entry| Counted {
            unique_key: router.evaluator().admin().shown_key(entry.unique_key),
            ..entry
        })
        .collect()
}
