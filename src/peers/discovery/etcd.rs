//! etcd discovery: each node registers itself under a lease and watches everyone else's
//! registration.
//!
//! # Protocol (Gubernator-compatible)
//!
//! A node puts the key `<prefix><grpc_address>` (the prefix is used verbatim: with the default
//! `/gubernator-peers` the key is `/gubernator-peers10.0.0.1:1051`) with the JSON value
//! `{"grpc-address":…,"http-address":…,"data-center":…}` under a lease of `etcd_lease_ttl`
//! (seconds, rounded up, at least 1) kept alive every TTL/3. It watches the prefix and, on every
//! batch of events, reads the whole prefix again and replaces the [`PeerList`]: a fresh read is
//! always correct, whatever events were coalesced or missed, and membership is small. Values that
//! do not parse are logged and skipped. On graceful shutdown [`EtcdDiscovery::leave`] deletes the
//! key and revokes the lease, so peers drop the node at once instead of after the TTL.
//!
//! # Failures
//!
//! * **etcd unreachable at start.** Gubernator refuses to start. ringlimit waits up to
//!   `etcd_dial_timeout` for the first registration, then starts anyway with a warning, serving
//!   with only itself in its peer list (answering every key locally; it reports itself unhealthy
//!   until it registers, see [`super::health`]) while it keeps retrying in the background. A rate limiter that refuses to come up because its
//!   membership store is down turns an etcd outage into a full outage. Configuration mistakes
//!   (no endpoints, unreadable TLS files, unsupported TLS options) still fail the start.
//! * **etcd unreachable later.** The last known peer list is kept: an unreachable etcd says
//!   nothing about which peers are alive, so the list is never emptied because of it. The session
//!   (lease, keep-alive, watch) is rebuilt with bounded exponential backoff (100 ms doubling to
//!   5 s).
//! * **Lease lost** (keep-alive answers TTL 0, or no keep-alive answer for a whole TTL). The node
//!   registers again with a new lease. After an etcd restart the old lease is reused when etcd
//!   still knows it, so peers do not see the node leave and rejoin.
//!
//! # TLS and authentication
//!
//! `etcd_user`/`etcd_password` authenticate with etcd's user/password auth. `etcd_tls_ca` (and
//! optionally `etcd_tls_cert` + `etcd_tls_key` for client certificates) switch the connection to
//! TLS (rustls). `etcd_tls_skip_verify` is rejected with a configuration error: the rustls-based
//! transport has no switch to disable certificate verification; give the CA instead.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, ConnectOptions, GetOptions, Identity, LeaseKeepAliveStream, LeaseKeeper,
    PutOptions, TlsOptions, WatchOptions, WatchStream,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

use crate::peers::{PeerInfo, PeerList};

/// What etcd discovery is started with (`GUBER_ETCD_*`; built from the node's configuration by
/// `config::options`, so discovery knows nothing of the command line).
#[derive(Debug, Clone, Default)]
pub struct EtcdOptions {
    /// `GUBER_ETCD_ENDPOINTS`.
    pub endpoints: Vec<String>,
    /// `GUBER_ETCD_KEY_PREFIX`, used verbatim.
    pub key_prefix: String,
    /// `GUBER_ETCD_DIAL_TIMEOUT`.
    pub dial_timeout: Duration,
    /// `GUBER_ETCD_LEASE_TTL`.
    pub lease_ttl: Duration,
    /// `GUBER_ETCD_USER`.
    pub user: Option<String>,
    /// `GUBER_ETCD_PASSWORD`.
    pub password: Option<String>,
    /// `GUBER_ETCD_TLS_CERT`.
    pub tls_cert: Option<String>,
    /// `GUBER_ETCD_TLS_KEY`.
    pub tls_key: Option<String>,
    /// `GUBER_ETCD_TLS_CA`.
    pub tls_ca: Option<String>,
    /// `GUBER_ETCD_TLS_SKIP_VERIFY` (refused: etcd-client cannot skip verification).
    pub tls_skip_verify: bool,
}

/// How long a single unary etcd call (grant, put, get, delete, revoke) may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long [`EtcdDiscovery::leave`] may take in total, so shutdown never hangs on etcd.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);
/// First reconnect delay.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Why etcd discovery failed to start, or why one etcd session ended.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// The etcd settings are incomplete or unsupported.
    #[error("etcd configuration: {0}")]
    Config(String),
    /// A TLS file could not be read.
    #[error("etcd TLS: cannot read {path}: {source}")]
    TlsFile {
        /// The file named in the configuration.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// etcd answered with an error or the connection failed.
    #[error("etcd: {0}")]
    Client(#[from] etcd_client::Error),
    /// An etcd call did not answer in time.
    #[error("etcd did not answer within {0:?}")]
    Timeout(Duration),
    /// The lease expired or etcd forgot it.
    #[error("etcd lease {0:x} was lost")]
    LeaseLost(i64),
    /// A stream (watch or keep-alive) ended or was canceled by etcd.
    #[error("etcd {0} stream ended")]
    StreamEnded(&'static str),
}

/// The value a node registers, with Gubernator's field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Registration {
    /// The gRPC (advertise) address.
    #[serde(rename = "grpc-address")]
    pub grpc_address: String,
    /// The HTTP gateway address.
    #[serde(rename = "http-address")]
    pub http_address: String,
    /// The data center.
    #[serde(rename = "data-center")]
    pub data_center: String,
}

/// The key `peer` registers under: the prefix followed by its gRPC address, with nothing between.
pub fn registration_key(prefix: &str, peer: &PeerInfo) -> String {
    format!("{prefix}{}", peer.grpc_address)
}

/// The JSON value `peer` registers.
pub fn encode_registration(peer: &PeerInfo) -> String {
    let registration = Registration {
        grpc_address: peer.grpc_address.clone(),
        http_address: peer.http_address.clone(),
        data_center: peer.data_center.clone(),
    };
    // Serializing a struct of strings cannot fail; fall back to an empty object regardless.
    serde_json::to_string(&registration).unwrap_or_else(|_| "{}".to_string())
}

/// Why a registered value was skipped.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The value is not a JSON object of the expected shape.
    #[error("value is not a registration: {0}")]
    Json(#[from] serde_json::Error),
    /// Neither the value nor the key names a gRPC address.
    #[error("registration has no grpc-address")]
    NoAddress,
}

/// Parses the value registered under `key`. Unknown fields are ignored and missing ones are empty;
/// a missing gRPC address is taken from the key (the part after `prefix`).
pub fn decode_registration(prefix: &str, key: &str, value: &[u8]) -> Result<PeerInfo, DecodeError> {
    let registration: Registration = serde_json::from_slice(value)?;
    let grpc_address = if registration.grpc_address.trim().is_empty() {
        key.strip_prefix(prefix)
            .unwrap_or_default()
            .trim()
            .to_string()
    } else {
        registration.grpc_address.trim().to_string()
    };
    if grpc_address.is_empty() {
        return Err(DecodeError::NoAddress);
    }
    Ok(PeerInfo {
        grpc_address,
        http_address: registration.http_address,
        data_center: registration.data_center,
    })
}

/// The lease TTL in whole seconds: rounded up, at least one.
pub fn lease_ttl_seconds(ttl: Duration) -> i64 {
    let mut seconds = ttl.as_secs();
    if ttl.subsec_nanos() > 0 {
        seconds += 1;
    }
    i64::try_from(seconds.max(1)).unwrap_or(i64::MAX)
}

/// Peers that joined and left between two lists, by gRPC address.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PeerDiff {
    /// Addresses in the new list only.
    pub joined: Vec<String>,
    /// Addresses in the old list only.
    pub left: Vec<String>,
}

/// Compares two peer lists by gRPC address; both results are sorted.
pub fn diff_peers(old: &[PeerInfo], new: &[PeerInfo]) -> PeerDiff {
    let old: BTreeMap<&str, ()> = old.iter().map(|p| (p.grpc_address.as_str(), ())).collect();
    let new: BTreeMap<&str, ()> = new.iter().map(|p| (p.grpc_address.as_str(), ())).collect();
    PeerDiff {
        joined: new
            .keys()
            .filter(|a| !old.contains_key(*a))
            .map(|a| a.to_string())
            .collect(),
        left: old
            .keys()
            .filter(|a| !new.contains_key(*a))
            .map(|a| a.to_string())
            .collect(),
    }
}

/// Bounded exponential backoff: `min`, doubling on every failure up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A backoff from `min` to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            next: min,
        }
    }

    /// The delay before the next attempt; doubles the one after.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// Back to the shortest delay, after a success.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Everything the background task needs, fixed at start.
struct Settings {
    endpoints: Vec<String>,
    options: ConnectOptions,
    dial_timeout: Duration,
    prefix: String,
    key: String,
    value: String,
    ttl: i64,
}

/// State that outlives one etcd session.
struct State {
    client: Option<Client>,
    lease: Option<i64>,
}

/// A running etcd registration and watch.
pub struct EtcdDiscovery {
    registered: Arc<AtomicBool>,
    endpoints: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl EtcdDiscovery {
    /// Registers `me` and watches the prefix, keeping `peers` current.
    ///
    /// Waits up to `etcd_dial_timeout` for the first registration; if etcd is unreachable the
    /// node starts anyway (peer list: itself) and keeps retrying in the background. Only
    /// configuration errors fail the start.
    pub async fn start(
        config: &EtcdOptions,
        me: PeerInfo,
        peers: PeerList,
    ) -> Result<Self, EtcdError> {
        let endpoints: Vec<String> = config
            .endpoints
            .iter()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(EtcdError::Config(
                "GUBER_ETCD_ENDPOINTS names no endpoint".to_string(),
            ));
        }
        let settings = Settings {
            endpoints,
            options: connect_options(config)?,
            dial_timeout: config.dial_timeout.max(Duration::from_millis(100)),
            prefix: config.key_prefix.clone(),
            key: registration_key(&config.key_prefix, &me),
            value: encode_registration(&me),
            ttl: lease_ttl_seconds(config.lease_ttl),
        };
        let registered = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = watch::channel(false);
        let (first_tx, first_rx) = watch::channel(false);
        let dial_timeout = settings.dial_timeout;
        let task = tokio::spawn(run(
            settings,
            peers,
            Arc::clone(&registered),
            stopped,
            first_tx,
        ));
        if !super::first_within(dial_timeout, first_rx).await {
            tracing::warn!(
                endpoints = %config.endpoints.join(","),
                "etcd is unreachable; serving with only this node and retrying in the background"
            );
        }
        Ok(Self {
            registered,
            endpoints: config.endpoints.join(","),
            stop,
            task,
        })
    }

    /// Whether this node is currently registered in etcd (its lease is being kept alive).
    pub fn is_registered(&self) -> bool {
        self.registered.load(Ordering::Relaxed)
    }

    /// The registration flag and the endpoints, for health and metrics.
    pub fn backend_status(&self) -> super::health::BackendStatus {
        super::health::BackendStatus {
            backend: super::health::Backend::Etcd,
            connected: Arc::clone(&self.registered),
            target: self.endpoints.clone(),
        }
    }

    /// Deletes the registration, revokes the lease and stops watching. Bounded: if etcd does not
    /// answer within a couple of seconds the registration is left to expire with its lease.
    pub async fn leave(self) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        // The task deregisters within LEAVE_TIMEOUT; allow a little slack before giving up on it.
        if timeout(LEAVE_TIMEOUT + Duration::from_millis(500), &mut task)
            .await
            .is_err()
        {
            tracing::warn!("etcd discovery did not stop in time; abandoning the registration");
            task.abort();
        }
    }
}

/// Connection options from the configuration: dial timeout, auth and TLS.
fn connect_options(config: &EtcdOptions) -> Result<ConnectOptions, EtcdError> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(config.dial_timeout.max(Duration::from_millis(100)))
        // HTTP/2 pings notice a dead connection; etcd refuses pings more often than every 5 s.
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
    if let Some(user) = config.user.as_deref().filter(|u| !u.is_empty()) {
        options = options.with_user(user, config.password.clone().unwrap_or_default());
    }
    if let Some(tls) = tls_options(config)? {
        options = options.with_tls(tls);
    }
    Ok(options)
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

fn read_file(path: &str) -> Result<Vec<u8>, EtcdError> {
    std::fs::read(path).map_err(|source| EtcdError::TlsFile {
        path: path.to_string(),
        source,
    })
}

/// TLS options, when any TLS setting is given.
fn tls_options(config: &EtcdOptions) -> Result<Option<TlsOptions>, EtcdError> {
    if config.tls_skip_verify {
        return Err(EtcdError::Config(
            "GUBER_ETCD_TLS_SKIP_VERIFY is not supported: the rustls transport always verifies \
             etcd's certificate; set GUBER_ETCD_TLS_CA to the CA that signed it instead"
                .to_string(),
        ));
    }
    let ca = non_empty(&config.tls_ca);
    let cert = non_empty(&config.tls_cert);
    let key = non_empty(&config.tls_key);
    if ca.is_none() && cert.is_none() && key.is_none() {
        return Ok(None);
    }
    let Some(ca) = ca else {
        return Err(EtcdError::Config(
            "etcd TLS needs GUBER_ETCD_TLS_CA (system roots are not used)".to_string(),
        ));
    };
    let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(read_file(ca)?));
    match (cert, key) {
        (Some(cert), Some(key)) => {
            tls = tls.identity(Identity::from_pem(read_file(cert)?, read_file(key)?));
        }
        (None, None) => {}
        _ => {
            return Err(EtcdError::Config(
                "GUBER_ETCD_TLS_CERT and GUBER_ETCD_TLS_KEY must be given together".to_string(),
            ));
        }
    }
    Ok(Some(tls))
}

/// Runs `call` with [`CALL_TIMEOUT`].
async fn bounded<T, F>(call: F) -> Result<T, EtcdError>
where
    F: Future<Output = Result<T, etcd_client::Error>>,
{
    match timeout(CALL_TIMEOUT, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(EtcdError::Timeout(CALL_TIMEOUT)),
    }
}

/// The background task: sessions until told to stop, then deregistration.
async fn run(
    settings: Settings,
    peers: PeerList,
    registered: Arc<AtomicBool>,
    mut stopped: watch::Receiver<bool>,
    first: watch::Sender<bool>,
) {
    let mut state = State {
        client: None,
        lease: None,
    };
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    loop {
        let outcome = tokio::select! {
            outcome = session(&settings, &mut state, &peers, &registered, &first, &mut backoff) => outcome,
            _ = stop_requested(&mut stopped) => break,
        };
        registered.store(false, Ordering::Relaxed);
        if let Err(error) = outcome {
            tracing::warn!(%error, "etcd discovery session ended; keeping the last peer list");
            if matches!(error, EtcdError::LeaseLost(_)) {
                state.lease = None;
            }
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = sleep(delay) => {}
            _ = stop_requested(&mut stopped) => break,
        }
    }
    registered.store(false, Ordering::Relaxed);
    if timeout(LEAVE_TIMEOUT, deregister(&settings, &mut state))
        .await
        .is_err()
    {
        tracing::warn!(key = %settings.key, "etcd did not confirm the deregistration in time");
    }
}

/// Deletes the key and revokes the lease.
async fn deregister(settings: &Settings, state: &mut State) {
    let Some(client) = state.client.as_mut() else {
        return;
    };
    if let Err(error) = client.delete(settings.key.as_str(), None).await {
        tracing::warn!(%error, key = %settings.key, "could not delete the etcd registration");
    }
    if let Some(lease) = state.lease.take()
        && let Err(error) = client.lease_revoke(lease).await
    {
        tracing::warn!(%error, "could not revoke the etcd lease");
    }
    tracing::info!(key = %settings.key, "left the etcd cluster");
}

/// One session: (re)connect, register, read the peers, then keep the lease alive and follow the
/// watch until something fails. Returns only with an error.
async fn session(
    settings: &Settings,
    state: &mut State,
    peers: &PeerList,
    registered: &AtomicBool,
    first: &watch::Sender<bool>,
    backoff: &mut Backoff,
) -> Result<(), EtcdError> {
    if state.client.is_none() {
        let connect = Client::connect(&settings.endpoints, Some(settings.options.clone()));
        let client = match timeout(settings.dial_timeout, connect).await {
            Ok(client) => client?,
            Err(_) => return Err(EtcdError::Timeout(settings.dial_timeout)),
        };
        state.client = Some(client);
    }
    let Some(mut client) = state.client.clone() else {
        return Err(EtcdError::StreamEnded("connection"));
    };

    let lease = acquire_lease(&mut client, state, settings.ttl).await?;
    let (mut keeper, mut keep_alive) = bounded(client.lease_keep_alive(lease)).await?;
    bounded(client.put(
        settings.key.as_str(),
        settings.value.as_str(),
        Some(PutOptions::new().with_lease(lease)),
    ))
    .await?;
    let revision = refresh(&mut client, settings, peers).await?;
    let mut watch: WatchStream = bounded(
        client.watch(
            settings.prefix.as_str(),
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision + 1),
            ),
        ),
    )
    .await?;

    registered.store(true, Ordering::Relaxed);
    let _ = first.send(true);
    backoff.reset();
    tracing::info!(key = %settings.key, lease = format!("{lease:x}"), "registered in etcd");

    follow(
        settings,
        &mut client,
        peers,
        lease,
        &mut keeper,
        &mut keep_alive,
        &mut watch,
    )
    .await
}

/// Reuses the previous lease if etcd still has it (after an etcd restart or a dropped
/// connection), else grants a new one.
async fn acquire_lease(client: &mut Client, state: &mut State, ttl: i64) -> Result<i64, EtcdError> {
    if let Some(lease) = state.lease {
        let alive = async {
            let (mut keeper, mut stream) = client.lease_keep_alive(lease).await?;
            keeper.keep_alive().await?;
            Ok::<_, etcd_client::Error>(stream.message().await?.map(|r| r.ttl()))
        };
        match timeout(CALL_TIMEOUT, alive).await {
            Ok(Ok(Some(remaining))) if remaining > 0 => return Ok(lease),
            Ok(Err(error)) => return Err(error.into()),
            Err(_) => return Err(EtcdError::Timeout(CALL_TIMEOUT)),
            // Expired or unknown: grant a new one.
            Ok(Ok(_)) => state.lease = None,
        }
    }
    let lease = bounded(client.lease_grant(ttl, None)).await?.id();
    state.lease = Some(lease);
    Ok(lease)
}

/// Reads every registration under the prefix and replaces the peer list; returns the revision
/// read.
async fn refresh(
    client: &mut Client,
    settings: &Settings,
    peers: &PeerList,
) -> Result<i64, EtcdError> {
    let response = bounded(client.get(
        settings.prefix.as_str(),
        Some(GetOptions::new().with_prefix()),
    ))
    .await?;
    let revision = response.header().map(|h| h.revision()).unwrap_or_default();
    let mut list = Vec::with_capacity(response.kvs().len());
    for kv in response.kvs() {
        let key = String::from_utf8_lossy(kv.key());
        match decode_registration(&settings.prefix, &key, kv.value()) {
            Ok(peer) => list.push(peer),
            Err(error) => tracing::warn!(%key, %error, "skipping a malformed etcd registration"),
        }
    }
    let old = peers.snapshot();
    let diff = diff_peers(&old, &list);
    if peers.replace(list) {
        for address in &diff.joined {
            tracing::info!(peer = %address, "peer joined");
        }
        for address in &diff.left {
            tracing::info!(peer = %address, "peer left");
        }
    }
    Ok(revision)
}

/// Keeps the lease alive every TTL/3 and refreshes the peers on every watch batch.
async fn follow(
    settings: &Settings,
    client: &mut Client,
    peers: &PeerList,
    lease: i64,
    keeper: &mut LeaseKeeper,
    keep_alive: &mut LeaseKeepAliveStream,
    watch: &mut WatchStream,
) -> Result<(), EtcdError> {
    let ttl = Duration::from_secs(u64::try_from(settings.ttl).unwrap_or(1));
    let mut ticker = tokio::time::interval((ttl / 3).max(Duration::from_millis(100)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_answer = Instant::now();
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if last_answer.elapsed() > ttl {
                    // No answer for a whole TTL: the lease has most likely expired.
                    return Err(EtcdError::LeaseLost(lease));
                }
                keeper.keep_alive().await?;
            }
            answer = keep_alive.message() => match answer? {
                Some(answer) if answer.ttl() > 0 => last_answer = Instant::now(),
                Some(_) => return Err(EtcdError::LeaseLost(lease)),
                None => return Err(EtcdError::StreamEnded("keep-alive")),
            },
            response = watch.message() => match response? {
                Some(response) if response.canceled() => {
                    return Err(EtcdError::StreamEnded("watch"));
                }
                Some(response) => {
                    if !response.events().is_empty() {
                        refresh(client, settings, peers).await?;
                    }
                }
                None => return Err(EtcdError::StreamEnded("watch")),
            },
        }
    }
}

/// Resolves once `stop` holds `true` (or its sender is gone).
async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(address: &str) -> PeerInfo {
        PeerInfo {
            grpc_address: address.into(),
            http_address: format!("{address}-http"),
            data_center: "dc1".into(),
        }
    }

    #[test]
    fn the_key_is_the_prefix_and_the_address_with_nothing_between() {
        assert_eq!(
            registration_key("/gubernator-peers", &peer("10.0.0.1:1051")),
            "/gubernator-peers10.0.0.1:1051"
        );
        assert_eq!(registration_key("/p/", &peer("a:1")), "/p/a:1");
    }

    #[test]
    fn the_value_uses_gubernators_field_names() {
        let value: serde_json::Value =
            serde_json::from_str(&encode_registration(&peer("a:1"))).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"grpc-address": "a:1", "http-address": "a:1-http", "data-center": "dc1"})
        );
    }

    #[test]
    fn values_round_trip() {
        let me = peer("a:1");
        let encoded = encode_registration(&me);
        assert_eq!(
            decode_registration("/p/", "/p/a:1", encoded.as_bytes()).unwrap(),
            me
        );
    }

    #[test]
    fn decoding_is_lenient() {
        // Unknown fields are ignored, missing ones are empty.
        let decoded = decode_registration(
            "/p/",
            "/p/x:1",
            br#"{"grpc-address":"b:2","is-owner":true}"#,
        )
        .unwrap();
        assert_eq!(decoded.grpc_address, "b:2");
        assert_eq!(decoded.http_address, "");
        // No address in the value: taken from the key.
        let decoded = decode_registration("/p/", "/p/c:3", br#"{"data-center":"x"}"#).unwrap();
        assert_eq!(decoded.grpc_address, "c:3");
        assert_eq!(decoded.data_center, "x");
    }

    #[test]
    fn malformed_values_are_errors_not_panics() {
        assert!(decode_registration("/p/", "/p/a:1", b"not json").is_err());
        assert!(decode_registration("/p/", "/p/a:1", b"[1,2]").is_err());
        assert!(decode_registration("/p/", "/p/a:1", br#"{"grpc-address":5}"#).is_err());
        assert!(matches!(
            decode_registration("/p/", "/p/", b"{}"),
            Err(DecodeError::NoAddress)
        ));
    }

    #[test]
    fn lease_ttls_round_up_to_whole_seconds() {
        assert_eq!(lease_ttl_seconds(Duration::from_secs(30)), 30);
        assert_eq!(lease_ttl_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(lease_ttl_seconds(Duration::from_millis(10)), 1);
        assert_eq!(lease_ttl_seconds(Duration::ZERO), 1);
    }

    #[test]
    fn diffs_name_joins_and_leaves() {
        let diff = diff_peers(
            &[peer("a:1"), peer("b:1")],
            &[peer("b:1"), peer("c:1"), peer("d:1")],
        );
        assert_eq!(diff.joined, ["c:1", "d:1"]);
        assert_eq!(diff.left, ["a:1"]);
        assert_eq!(
            diff_peers(&[peer("a:1")], &[peer("a:1")]),
            PeerDiff::default()
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_limit_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<_> = (0..6).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }

    fn config(extra: &[&str]) -> EtcdOptions {
        let mut args = vec!["--peer-discovery-type=etcd"];
        args.extend_from_slice(extra);
        let config = crate::config::server_config_from_args(args).unwrap();
        super::super::DiscoveryOptions::from(&config).etcd
    }

    #[test]
    fn skip_verify_is_a_clear_configuration_error() {
        let error = connect_options(&config(&["--etcd-tls-skip-verify=true"])).unwrap_err();
        assert!(error.to_string().contains("GUBER_ETCD_TLS_SKIP_VERIFY"));
    }

    #[test]
    fn tls_needs_a_ca_and_pairs_of_cert_and_key() {
        let error = connect_options(&config(&["--etcd-tls-cert=/x.pem"])).unwrap_err();
        assert!(error.to_string().contains("GUBER_ETCD_TLS_CA"));
        let error = connect_options(&config(&["--etcd-tls-ca=/nonexistent/ca.pem"])).unwrap_err();
        assert!(matches!(error, EtcdError::TlsFile { .. }));
    }

    #[test]
    fn no_tls_settings_means_plain_connections() {
        assert!(tls_options(&config(&[])).unwrap().is_none());
        assert!(connect_options(&config(&["--etcd-user=u", "--etcd-password=p"])).is_ok());
    }
}
