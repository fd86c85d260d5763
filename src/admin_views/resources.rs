//! r8limiter's admin views of `/allow`, on the HTTP port next to ringlimit's `/admin/*`:
//!
//! | route | answer |
//! |---|---|
//! | `GET /admin/resources` | every configured and discovered resource with its limit, cluster-wide |
//! | `GET /admin/user/{user_id}` | the user's tokens per resource and the time until full, not spent |
//!
//! They follow the other admin views' rules: served only when admin views are enabled, under the
//! same access check ([`crate::admin::access`]: the bearer token, or a loopback-only listener),
//! with the user id shown hashed unless `GUBER_ADMIN_SHOW_KEYS` ([`crate::admin::redact`]); the
//! user is looked up by the raw id, like a key peek. Resources are gathered from every node (a
//! node that does not answer is listed in `failed_peers`), and each bucket is read from its owner
//! without spending ([`cluster::peek`]). The JSON shapes are r8limiter's, with
//! ringlimit's fields added, and are in `docs/openapi.yaml`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::get;
use futures_util::stream::{self, StreamExt};
use serde::Serialize;

use super::cluster::{self, FailedPeer};
use super::http::{AdminError, authorize};
use crate::admin::offenders::Window;
use crate::allow::resources::{DEFAULT_RESOURCE, Source};
use crate::allow::{AllowService, limit_name, tokens};
use crate::refill::TokenBucket;
use crate::request::LimitKey;

/// How many owners a user view asks at once.
const PEEK_CONCURRENCY: usize = 16;

/// The routes, or none when admin views are disabled (so they answer 404).
pub fn routes(service: Arc<AllowService>) -> Router {
    if !service.router().evaluator().admin().options().enabled {
        return Router::new();
    }
    Router::new()
        .route("/admin/resources", get(resources))
        .route("/admin/user/{user_id}", get(user))
        .with_state(service)
}

/// One resource's limit, as `/admin/resources` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResourceView {
    /// The most tokens the bucket holds (r8limiter's `capacity`; our burst).
    pub capacity: i64,
    /// Tokens refilled per second.
    pub refill_rate_per_sec: f64,
    /// `configured` (listed in `GUBER_ALLOW_RESOURCES`) or `discovered` (the default's limit).
    pub source: &'static str,
}

impl ResourceView {
    fn of(bucket: &TokenBucket, source: Source) -> Self {
        Self {
            capacity: bucket.burst(),
            refill_rate_per_sec: rate_per_sec(bucket),
            source: source.label(),
        }
    }
}

/// `GET /admin/resources`.
#[derive(Debug, Serialize)]
pub struct ResourcesView {
    /// Every resource by name.
    pub resources: BTreeMap<String, ResourceView>,
    /// The resource whose limit unlisted resources use (absent when not configured: they are
    /// refused).
    pub default_resource: Option<&'static str>,
    /// The most discovered resources each node lists (`GUBER_ALLOW_DISCOVERED_MAX`).
    pub discovered_max: usize,
    /// The nodes whose discovered resources are included.
    pub nodes: Vec<String>,
    /// The nodes that did not answer.
    pub failed_peers: Vec<FailedPeer>,
}

/// One of a user's buckets, as `/admin/user/{user_id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserResourceView {
    /// The resource.
    pub resource: String,
    /// The most tokens the bucket holds.
    pub capacity: i64,
    /// Tokens refilled per second.
    pub refill_rate_per_sec: f64,
    /// Tokens held now, with their fraction (rounded down to the thousandth).
    pub tokens: f64,
    /// Seconds until the next whole token (0 when one is there).
    pub next_token_seconds: f64,
    /// Seconds until the bucket is full (0 when full).
    pub full_refill_seconds: f64,
    /// The gRPC address of the owner that answered.
    pub owner: String,
}

/// `GET /admin/user/{user_id}`.
#[derive(Debug, Serialize)]
pub struct UserView {
    /// The user, as shown (hashed unless `GUBER_ADMIN_SHOW_KEYS`).
    pub user_id: String,
    /// The user's live buckets, by resource name; a resource the user has not used (or whose
    /// bucket has refilled and been forgotten) is not listed: its bucket is full.
    pub resources: Vec<UserResourceView>,
    /// The nodes that did not answer (their resources or buckets are missing).
    pub failed_peers: Vec<FailedPeer>,
}

/// Tokens per second of `bucket`.
fn rate_per_sec(bucket: &TokenBucket) -> f64 {
    if bucket.duration_ms() <= 0 {
        return 0.0;
    }
    bucket.limit() as f64 * 1000.0 / bucket.duration_ms() as f64
}

/// Every resource's view: the configured ones, then the discovered ones (with the default's
/// limit; none when no default is configured).
pub fn resource_views(
    service: &AllowService,
    discovered: &[String],
) -> BTreeMap<String, ResourceView> {
    let configured = service.resources();
    let mut views: BTreeMap<String, ResourceView> = configured
        .iter()
        .map(|(name, bucket)| {
            (
                name.to_string(),
                ResourceView::of(bucket, Source::Configured),
            )
        })
        .collect();
    for name in discovered {
        if let Some((bucket, source)) = configured.resolve(name) {
            views
                .entry(name.clone())
                .or_insert_with(|| ResourceView::of(&bucket, source));
        }
    }
    views
}

async fn resources(
    State(service): State<Arc<AllowService>>,
    headers: HeaderMap,
) -> Result<Json<ResourcesView>, AdminError> {
    authorize(service.router(), &headers)?;
    let router = service.router();
    let stats = cluster::cluster_stats(router, Window::SinceStart).await;
    Ok(Json(ResourcesView {
        resources: resource_views(&service, &stats.discovered),
        default_resource: service
            .resources()
            .get(DEFAULT_RESOURCE)
            .map(|_| DEFAULT_RESOURCE),
        discovered_max: router.evaluator().admin().discovered().capacity(),
        nodes: stats.answered,
        failed_peers: stats.failed,
    }))
}

async fn user(
    State(service): State<Arc<AllowService>>,
    headers: HeaderMap,
    Path(user_id): Path<String>,
) -> Result<Json<UserView>, AdminError> {
    authorize(service.router(), &headers)?;
    let max = service.options().max_user_id_bytes;
    if user_id.is_empty() || user_id.len() > max {
        return Err(AdminError::InvalidArgument(format!(
            "user_id must be 1 to {max} bytes"
        )));
    }
    let router = service.router();
    let stats = cluster::cluster_stats(router, Window::SinceStart).await;
    let mut failed = stats.failed;
    let names: BTreeSet<String> = resource_views(&service, &stats.discovered)
        .into_keys()
        .collect();
    let peeks = stream::iter(names)
        .map(|resource| {
            let key = LimitKey::new(limit_name(&resource), user_id.clone());
            async move {
                let answer = cluster::peek(router, &key).await;
                (resource, answer)
            }
        })
        .buffer_unordered(PEEK_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    let mut views = Vec::new();
    for (resource, answer) in peeks {
        match answer {
            Ok((owner, state)) if state.found => {
                let ms_per_token = state.duration as f64 / state.limit as f64;
                let burst = state.burst;
                let (next, full) = tokens::refill_eta(state.tokens, burst, ms_per_token);
                views.push(UserResourceView {
                    resource,
                    capacity: burst,
                    refill_rate_per_sec: if ms_per_token > 0.0 && ms_per_token.is_finite() {
                        1000.0 / ms_per_token
                    } else {
                        0.0
                    },
                    tokens: (state.tokens * 1000.0).floor() / 1000.0,
                    next_token_seconds: next,
                    full_refill_seconds: full,
                    owner,
                });
            }
            Ok(_) => {}
            Err(error) => failed.push(FailedPeer {
                address: format!("owner of resource '{resource}'"),
                error: error.to_string(),
            }),
        }
    }
    views.sort_by(|a, b| a.resource.cmp(&b.resource));
    Ok(Json(UserView {
        user_id: router.evaluator().admin().shown_key(user_id),
        resources: views,
        failed_peers: failed,
    }))
}
