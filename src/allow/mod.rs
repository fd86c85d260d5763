//! `POST /allow`: "may this user spend `cost` tokens of this resource?", with idempotency keys that
//! hold across the cluster.
//!
//! The limit itself is an ordinary cluster limit (`allow_<resource>` keyed by user, a token bucket
//! from [`resources`]), so any node can decide it. An `Idempotency-Key` needs more: a repeat must get
//! the first answer wherever it lands. So every call with a key goes to one node, the owner of the
//! user's records (`allow_idempotency` + the user id on the consistent-hash ring), over ringlimit's
//! own gRPC service `ringlimit.v1.AllowV1`; that node keeps the records ([`idempotency`]) and spends
//! through the cluster. Keys are scoped per user, and the record's node knows all of a user's keys,
//! so reusing a key for a different resource or cost is detected as a conflict.
//!
//! A resource that is not configured uses the `default` resource's limit and is remembered in a
//! bounded set of discovered resources ([`crate::admin::discovered`]), as r8limiter discovers its resources.
//! Answers carry tokens with their fraction when this node owns the bucket ([`tokens`]). The
//! r8limiter admin views (`/admin/user/{user_id}`, `/admin/resources`) are in
//! `admin_views::resources`.

pub mod grpc;
pub mod http;
pub mod idempotency;
pub mod resources;
pub mod tokens;

/// The `ringlimit.v1` wire types (`AllowV1` service among them), generated in [`crate::proto`].
pub use crate::proto::ringlimit_v1 as pb;

use std::sync::Arc;
use std::time::Duration;

use crate::peer_auth::PeerChannel;

use crate::algorithms::Bucket;
use crate::proto;
use crate::refill::{Outcome, TokenBucket};
use crate::request::LimitKey;
use crate::router::Router;
use idempotency::{Fingerprint, IdempotencyStore, RecordKey, Remembered};
use pb::allow_v1_client::AllowV1Client;
pub use resources::AllowResources;
use resources::Source;
use tokens::Precise;

/// The ring name under which a user's idempotency records are placed.
pub const RECORDS_RING_NAME: &str = "allow_idempotency";

/// The longest `Idempotency-Key` accepted, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;

/// How `/allow` is configured.
#[derive(Debug, Clone)]
pub struct AllowOptions {
    /// The resources and their limits.
    pub resources: AllowResources,
    /// How long an idempotency record is kept.
    pub idempotency_ttl: Duration,
    /// The most idempotency records kept on one node.
    pub idempotency_capacity: u64,
    /// How long a call to the records' node may take.
    pub peer_timeout: Duration,
    /// The longest user id accepted (the node's key length limit).
    pub max_user_id_bytes: usize,
}

/// One `/allow` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRequest {
    /// Whose tokens.
    pub user_id: String,
    /// Which resource (`default` unless given).
    pub resource: String,
    /// How many tokens (1 unless given).
    pub cost: i64,
    /// The `Idempotency-Key` header, if any.
    pub idempotency_key: Option<String>,
}

/// The answer to one `/allow` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowAnswer {
    /// The decision as the client sees it.
    pub outcome: Outcome,
    /// Tokens left with their fraction, and the precise wait (see [`tokens`]).
    pub precise: Precise,
    /// Whether this is the recorded answer of an earlier call with the same idempotency key.
    pub replayed: bool,
}

/// Why `/allow` did not decide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowError {
    /// Bad input, or a resource that is not configured (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// The idempotency key was used for a different request within the TTL (HTTP 422).
    #[error("{0}")]
    Conflict(String),
    /// The cluster could not decide (HTTP 503).
    #[error("{0}")]
    Unavailable(String),
}

impl From<idempotency::DecisionLost> for AllowError {
    fn from(lost: idempotency::DecisionLost) -> Self {
        AllowError::Unavailable(lost.to_string())
    }
}

/// A decision as it is recorded and replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spent {
    /// The decision in whole tokens.
    pub outcome: Outcome,
    /// The decision with fractions.
    pub precise: Precise,
}

impl Spent {
    fn answer(self, replayed: bool) -> AllowAnswer {
        AllowAnswer {
            outcome: self.outcome,
            precise: self.precise,
            replayed,
        }
    }
}

/// The cluster limit name of `resource`.
pub fn limit_name(resource: &str) -> String {
    format!("allow_{resource}")
}

/// Spends `request.cost` tokens of `bucket` through `node` (which forwards to the limit's owner).
async fn spend(
    router: &Router,
    request: &AllowRequest,
    bucket: &TokenBucket,
) -> Result<Spent, AllowError> {
    let created_at = router.evaluator().clock().now_ms();
    let key = LimitKey::new(limit_name(&request.resource), request.user_id.clone());
    let mut item = bucket.request(key.name.clone(), key.unique_key.clone(), request.cost);
    item.created_at = Some(created_at);
    let owned_here = router.owner_of(&key).is_none();
    let answer = router
        .get_rate_limits(vec![item.into()])
        .await
        .map_err(|error| AllowError::Unavailable(error.to_string()))?
        .into_iter()
        .next()
        .ok_or_else(|| AllowError::Unavailable("the cluster gave no answer".into()))?;
    if !answer.error.is_empty() {
        return Err(AllowError::Unavailable(answer.error));
    }
    let allowed = answer.status != proto::Status::OverLimit as i32;
    let outcome = bucket.outcome(allowed, answer.remaining, request.cost);
    // The owner's stored bucket keeps the fraction the wire answer drops.
    let stored = owned_here
        .then(|| router.evaluator().store().get(&key))
        .flatten()
        .and_then(|bucket| match bucket {
            Bucket::Leaky(leaky) => Some(leaky),
            Bucket::Token(_) => None,
        });
    let precise = tokens::precise(&outcome, stored.as_ref(), created_at, request.cost);
    let outcome = Outcome {
        retry_after_ms: precise.retry_after_ms,
        ..outcome
    };
    Ok(Spent { outcome, precise })
}

/// `/allow` on one node.
pub struct AllowService {
    router: Arc<Router>,
    options: AllowOptions,
    records: IdempotencyStore<Spent>,
}

impl AllowService {
    /// The service of `node`.
    pub fn new(router: Arc<Router>, options: AllowOptions) -> Self {
        Self {
            records: IdempotencyStore::new(options.idempotency_capacity, options.idempotency_ttl),
            router,
            options,
        }
    }

    /// Waits, at most `bound`, for the idempotent spends still running (their callers may be
    /// gone) to be recorded; `false` when some were still running at the bound. Shutdown calls it
    /// after the servers stopped and before the peer clients close.
    pub async fn close(&self, bound: std::time::Duration) -> bool {
        self.records.close(bound).await
    }

    /// The options this service was built with.
    pub fn options(&self) -> &AllowOptions {
        &self.options
    }

    /// The configured resources.
    pub fn resources(&self) -> &AllowResources {
        &self.options.resources
    }

    /// The node this service spends through.
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// Answers a client's call: without an idempotency key here, with one on the node that keeps
    /// the user's records.
    pub async fn allow(&self, request: AllowRequest) -> Result<AllowAnswer, AllowError> {
        let bucket = self.validate(&request)?;
        if request.idempotency_key.is_none() {
            return self
                .spend(&request, &bucket)
                .await
                .map(|spent| spent.answer(false));
        }
        let Some(owner) = self.records_owner(&request.user_id) else {
            return self.allow_as_records_owner(request).await;
        };
        match self.call_owner(&owner, &request).await {
            Err(OwnerCallError::Unreachable(reason)) => {
                // The membership may have changed: ask the current owner once more.
                match self.records_owner(&request.user_id) {
                    None => self.allow_as_records_owner(request).await,
                    Some(now) if now != owner => self
                        .call_owner(&now, &request)
                        .await
                        .map_err(OwnerCallError::into_allow_error),
                    Some(_) => Err(AllowError::Unavailable(format!(
                        "the node keeping this user's idempotency records ({owner}) is unreachable: {reason}"
                    ))),
                }
            }
            other => other.map_err(OwnerCallError::into_allow_error),
        }
    }

    /// Answers a call on the node that keeps the user's records (a peer's `AllowV1.Allow`, or a
    /// client's call that landed here); never forwarded again.
    pub async fn allow_as_records_owner(
        &self,
        request: AllowRequest,
    ) -> Result<AllowAnswer, AllowError> {
        let bucket = self.validate(&request)?;
        let Some(key) = request.idempotency_key.clone() else {
            return self
                .spend(&request, &bucket)
                .await
                .map(|spent| spent.answer(false));
        };
        let record = RecordKey {
            user_id: request.user_id.clone(),
            key,
        };
        let fingerprint = Fingerprint {
            resource: request.resource.clone(),
            cost: request.cost,
        };
        // The spend runs to completion and is recorded even if this call is cancelled.
        let router = Arc::clone(&self.router);
        let spend_request = request.clone();
        let remembered = self
            .records
            .once(record, fingerprint, move || async move {
                spend(&router, &spend_request, &bucket).await
            })
            .await?;
        match remembered {
            Remembered::Fresh(spent) => Ok(spent.answer(false)),
            Remembered::Replayed(spent) => Ok(spent.answer(true)),
            Remembered::Conflict => Err(AllowError::Conflict(
                "this Idempotency-Key was already used for a different request (resource or cost) \
                 by this user; use a new key"
                    .into(),
            )),
        }
    }

    /// Checks the request and finds its resource's bucket.
    fn validate(&self, request: &AllowRequest) -> Result<TokenBucket, AllowError> {
        if request.user_id.is_empty() {
            return Err(AllowError::Invalid("user_id is required".into()));
        }
        if request.user_id.len() > self.options.max_user_id_bytes {
            return Err(AllowError::Invalid(format!(
                "user_id is longer than {} bytes",
                self.options.max_user_id_bytes
            )));
        }
        if !resources::valid_name(&request.resource) {
            return Err(AllowError::Invalid(format!(
                "resource must be 1 to {} letters, digits, '_', '-' or '.'",
                resources::MAX_NAME_BYTES
            )));
        }
        let Some((bucket, source)) = self.options.resources.resolve(&request.resource) else {
            let known: Vec<&str> = self.options.resources.names().collect();
            return Err(AllowError::Invalid(format!(
                "resource '{}' is not configured and there is no '{}' resource whose limit it \
                 could use (GUBER_ALLOW_RESOURCES); configured: [{}]",
                request.resource,
                resources::DEFAULT_RESOURCE,
                known.join(", ")
            )));
        };
        if request.cost < 1 {
            return Err(AllowError::Invalid(format!(
                "cost must be at least 1, got {}",
                request.cost
            )));
        }
        if request.cost > bucket.burst() {
            return Err(AllowError::Invalid(format!(
                "cost {} is more than resource '{}' can ever hold ({}); it would never be allowed",
                request.cost,
                request.resource,
                bucket.burst()
            )));
        }
        if let Some(key) = &request.idempotency_key
            && (key.is_empty()
                || key.len() > MAX_IDEMPOTENCY_KEY_BYTES
                || !key.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(AllowError::Invalid(format!(
                "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} visible ASCII characters"
            )));
        }
        if source == Source::Discovered {
            self.router
                .evaluator()
                .admin()
                .discovered()
                .note(&request.resource);
        }
        Ok(bucket)
    }

    /// Spends `cost` tokens through the cluster (the node forwards to the limit's owner).
    async fn spend(
        &self,
        request: &AllowRequest,
        bucket: &TokenBucket,
    ) -> Result<Spent, AllowError> {
        spend(&self.router, request, bucket).await
    }

    /// The gRPC address of the node keeping `user_id`'s records, or `None` for this node.
    fn records_owner(&self, user_id: &str) -> Option<String> {
        self.router
            .owner_of(&LimitKey::new(RECORDS_RING_NAME, user_id))
    }

    async fn call_owner(
        &self,
        owner: &str,
        request: &AllowRequest,
    ) -> Result<AllowAnswer, OwnerCallError> {
        let mut client = self.client(owner)?;
        let call = client.allow(grpc::to_wire(request));
        let answer = tokio::time::timeout(self.options.peer_timeout, call)
            .await
            .map_err(|_| {
                OwnerCallError::Unreachable(format!(
                    "no answer within {:?}",
                    self.options.peer_timeout
                ))
            })?
            .map_err(OwnerCallError::from)?
            .into_inner();
        Ok(grpc::from_wire_answer(&answer))
    }

    fn client(&self, address: &str) -> Result<AllowV1Client<PeerChannel>, OwnerCallError> {
        self.router.forget_departed_peers();
        let channel = self
            .router
            .peer_clients()
            .channel(address, self.options.peer_timeout, false)
            .map_err(|error| {
                OwnerCallError::Unreachable(format!("bad address {address}: {}", error.reason))
            })?;
        Ok(AllowV1Client::new(channel))
    }
}

/// A failed call to the records' node.
enum OwnerCallError {
    /// It answered with an error of the call.
    Answered(AllowError),
    /// It could not be reached (worth one retry with a fresh membership).
    Unreachable(String),
}

impl OwnerCallError {
    fn into_allow_error(self) -> AllowError {
        match self {
            OwnerCallError::Answered(error) => error,
            OwnerCallError::Unreachable(reason) => AllowError::Unavailable(format!(
                "the node keeping this user's idempotency records is unreachable: {reason}"
            )),
        }
    }
}

impl From<tonic::Status> for OwnerCallError {
    fn from(status: tonic::Status) -> Self {
        let message = status.message().to_string();
        match status.code() {
            tonic::Code::InvalidArgument => OwnerCallError::Answered(AllowError::Invalid(message)),
            tonic::Code::FailedPrecondition => {
                OwnerCallError::Answered(AllowError::Conflict(message))
            }
            code => OwnerCallError::Unreachable(format!("{code}: {message}")),
        }
    }
}
