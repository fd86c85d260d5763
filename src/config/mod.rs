//! Configuration of a node: every flag has a `GUBER_*` environment variable, with Gubernator's names
//! and defaults, so an existing Gubernator deployment's environment configures ringlimit unchanged.
//!
//! Values are checked when parsed; an invalid value stops the start with one line that names the
//! variable (see [`describe_error`]).

pub mod client_tls_args;
pub mod env_file;
pub use crate::go_duration;
pub mod options;

pub use options::OwnerFailurePolicyArg;

use std::error::Error as _;
use std::time::Duration;

use clap::{Args, ValueEnum};

/// How the node finds its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiscoveryType {
    /// No discovery: a single node that owns every key.
    None,
    /// A fixed list of peers from `GUBER_PEERS` (a ringlimit addition).
    Static,
    /// Registration and watch in etcd.
    Etcd,
    /// A/AAAA records of `GUBER_DNS_FQDN`, polled (a Kubernetes headless service).
    Dns,
    /// The Kubernetes API: ready addresses of EndpointSlices or pods, watched (`GUBER_K8S_*`).
    K8s,
}

/// `GUBER_K8S_WATCH_MECHANISM` as clap parses it (the domain's
/// `peers::discovery::k8s::WatchMechanism` knows nothing of clap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WatchMechanismArg {
    /// The v1 Endpoints objects matching `GUBER_K8S_SELECTOR` (Gubernator's older default).
    Endpoints,
    /// The EndpointSlices of the Service `GUBER_K8S_SERVICE_NAME`.
    Endpointslices,
    /// The pods matching `GUBER_K8S_SELECTOR`.
    Pods,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

/// The configuration of `ringlimit serve`.
#[derive(Debug, Clone, Args)]
pub struct ServerConfig {
    /// Address the gRPC API (V1, PeersV1, health, reflection) listens on.
    #[arg(long, env = "GUBER_GRPC_ADDRESS", default_value = "localhost:1051")]
    pub grpc_address: String,

    /// Address the HTTP gateway (JSON API, /metrics) listens on.
    #[arg(long, env = "GUBER_HTTP_ADDRESS", default_value = "localhost:1050")]
    pub http_address: String,

    /// Address peers use to reach this node's gRPC API [default: the gRPC address].
    #[arg(long, env = "GUBER_ADVERTISE_ADDRESS")]
    pub advertise_address: Option<String>,

    /// Most rate limits held in memory; the least recently used are evicted beyond it.
    #[arg(long, env = "GUBER_CACHE_SIZE", default_value_t = 50_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub cache_size: u64,

    /// Data center of this node; only peers of the same data center share ownership.
    #[arg(long, env = "GUBER_DATA_CENTER", default_value = "")]
    pub data_center: String,

    /// How peers are discovered.
    #[arg(
        long,
        env = "GUBER_PEER_DISCOVERY_TYPE",
        value_enum,
        default_value = "none"
    )]
    pub peer_discovery_type: DiscoveryType,

    /// Peers for `static` discovery: comma-separated gRPC addresses (this node's own advertise
    /// address may be included or not).
    #[arg(long, env = "GUBER_PEERS", value_delimiter = ',', num_args = 0..)]
    pub peers: Vec<String>,

    /// etcd endpoints, comma-separated.
    #[arg(
        long,
        env = "GUBER_ETCD_ENDPOINTS",
        value_delimiter = ',',
        default_value = "localhost:2379"
    )]
    pub etcd_endpoints: Vec<String>,

    /// Prefix of the keys peers register under in etcd.
    #[arg(
        long,
        env = "GUBER_ETCD_KEY_PREFIX",
        default_value = "/gubernator-peers"
    )]
    pub etcd_key_prefix: String,

    /// How long to wait for an etcd connection.
    #[arg(long, env = "GUBER_ETCD_DIAL_TIMEOUT", default_value = "5s", value_parser = go_duration::parse)]
    pub etcd_dial_timeout: Duration,

    /// TTL of this node's etcd lease: a node that stops keeping it alive disappears after it.
    #[arg(long, env = "GUBER_ETCD_LEASE_TTL", default_value = "30s", value_parser = go_duration::parse)]
    pub etcd_lease_ttl: Duration,

    /// etcd user name.
    #[arg(long, env = "GUBER_ETCD_USER")]
    pub etcd_user: Option<String>,

    /// etcd password.
    #[arg(long, env = "GUBER_ETCD_PASSWORD", hide_env_values = true)]
    pub etcd_password: Option<String>,

    /// Client certificate (PEM) for etcd TLS.
    #[arg(long, env = "GUBER_ETCD_TLS_CERT")]
    pub etcd_tls_cert: Option<String>,

    /// Client key (PEM) for etcd TLS.
    #[arg(long, env = "GUBER_ETCD_TLS_KEY")]
    pub etcd_tls_key: Option<String>,

    /// CA certificate (PEM) that signs etcd's certificate.
    #[arg(long, env = "GUBER_ETCD_TLS_CA")]
    pub etcd_tls_ca: Option<String>,

    /// Skip verification of etcd's certificate (testing only).
    #[arg(long, env = "GUBER_ETCD_TLS_SKIP_VERIFY", default_value = "false", value_parser = parse_bool,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub etcd_tls_skip_verify: bool,

    /// DNS name whose A/AAAA records are the peers, for `dns` discovery.
    #[arg(long, env = "GUBER_DNS_FQDN")]
    pub dns_fqdn: Option<String>,

    /// How often `dns` discovery re-resolves the name.
    #[arg(long, env = "GUBER_DNS_POLL_INTERVAL", default_value = "10s", value_parser = go_duration::parse)]
    pub dns_poll_interval: Duration,

    /// Namespace watched by `k8s` discovery (usually the pod's own, from the downward API).
    #[arg(long, env = "GUBER_K8S_NAMESPACE", default_value = "default")]
    pub k8s_namespace: String,

    /// This pod's IP, for `k8s` discovery: `GUBER_K8S_POD_IP:GUBER_K8S_POD_PORT` is this node.
    #[arg(long, env = "GUBER_K8S_POD_IP")]
    pub k8s_pod_ip: Option<String>,

    /// The gRPC port of every peer, for `k8s` discovery [default: the port of the gRPC address].
    #[arg(long, env = "GUBER_K8S_POD_PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub k8s_pod_port: Option<u16>,

    /// Label selector of the watched objects, for `k8s` discovery (`endpoints`, `pods`).
    #[arg(long, env = "GUBER_K8S_SELECTOR")]
    pub k8s_selector: Option<String>,

    /// The older name of `GUBER_K8S_SELECTOR`, read when that is unset.
    #[arg(long, env = "GUBER_K8S_ENDPOINTS_SELECTOR")]
    pub k8s_endpoints_selector: Option<String>,

    /// The Service whose EndpointSlices `k8s` discovery watches (`endpointslices`).
    #[arg(long, env = "GUBER_K8S_SERVICE_NAME")]
    pub k8s_service_name: Option<String>,

    /// What `k8s` discovery watches [default: `endpointslices` with a service name, else
    /// `endpoints`].
    #[arg(long, env = "GUBER_K8S_WATCH_MECHANISM", value_enum)]
    pub k8s_watch_mechanism: Option<WatchMechanismArg>,

    /// A kubeconfig file for `k8s` discovery outside the cluster [default: `KUBECONFIG` or
    /// `~/.kube/config` when present, else the in-cluster service account].
    #[arg(long, env = "GUBER_K8S_KUBECONFIG")]
    pub k8s_kubeconfig: Option<String>,

    /// A node is unhealthy while a call to a peer failed within this window (Gubernator: 5m).
    #[arg(long, env = "GUBER_PEER_FAILURE_WINDOW", default_value = "30s", value_parser = go_duration::parse)]
    pub peer_failure_window: Duration,

    /// Timeout of one batched call to a peer (cluster only).
    #[arg(long, env = "GUBER_BATCH_TIMEOUT", default_value = "500ms", value_parser = go_duration::parse)]
    pub batch_timeout: Duration,

    /// How long a batch to a peer waits for more items (cluster only).
    #[arg(long, env = "GUBER_BATCH_WAIT", default_value = "500us", value_parser = go_duration::parse)]
    pub batch_wait: Duration,

    /// Most items in one batch to a peer (cluster only; at most 1000).
    #[arg(long, env = "GUBER_BATCH_LIMIT", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub batch_limit: u32,

    /// Send every forwarded item at once instead of batching (cluster only).
    #[arg(long, env = "GUBER_DISABLE_BATCHING", default_value = "false", value_parser = parse_bool,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub disable_batching: bool,

    /// Timeout of one GLOBAL sync or broadcast call (cluster only).
    #[arg(long, env = "GUBER_GLOBAL_TIMEOUT", default_value = "500ms", value_parser = go_duration::parse)]
    pub global_timeout: Duration,

    /// How often GLOBAL hits are sent to owners and owners broadcast (cluster only).
    #[arg(long, env = "GUBER_GLOBAL_SYNC_WAIT", default_value = "100ms", value_parser = go_duration::parse)]
    pub global_sync_wait: Duration,

    /// Most GLOBAL keys in one sync or broadcast (cluster only).
    #[arg(long, env = "GUBER_GLOBAL_BATCH_LIMIT", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub global_batch_limit: u32,

    /// Report a node that serves alone because its discovery backend (etcd, DNS) is unreachable
    /// as healthy; by default it is unhealthy, since every such node grants each limit again.
    #[arg(long, env = "GUBER_SERVE_ALONE_HEALTHY", default_value = "false", value_parser = parse_bool,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub serve_alone_healthy: bool,

    /// Treat every request as GLOBAL (cluster only).
    #[arg(long, env = "GUBER_FORCE_GLOBAL", default_value = "false", value_parser = parse_bool,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub force_global: bool,

    /// Log level or tracing filter (`info`, `debug`, `ringlimit=debug,tower=warn`); RUST_LOG
    /// overrides it.
    #[arg(long, env = "GUBER_LOG_LEVEL", default_value = "info", value_parser = parse_log_level)]
    pub log_level: String,

    /// Log line format.
    #[arg(
        long,
        env = "GUBER_LOG_FORMAT",
        value_enum,
        default_value = "text",
        ignore_case = true
    )]
    pub log_format: LogFormat,

    /// Close gRPC connections after this many seconds so clients rebalance; 0 keeps them open.
    #[arg(long, env = "GUBER_GRPC_MAX_CONN_AGE_SEC", default_value_t = 0)]
    pub grpc_max_conn_age_sec: u64,

    /// Largest gRPC message or HTTP body accepted, in bytes (Gubernator: 1 MiB).
    #[arg(long, env = "GUBER_MAX_REQUEST_SIZE", default_value_t = 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1024..=64 * 1024 * 1024))]
    pub max_request_size: u64,

    /// Longest `name` or `unique_key` accepted, in bytes.
    #[arg(long, env = "GUBER_MAX_KEY_LENGTH", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub max_key_length: u64,

    /// On SIGTERM, how long to keep serving while reporting not-ready, so load balancers stop
    /// sending traffic before connections close.
    #[arg(long, env = "GUBER_SHUTDOWN_DRAIN_DELAY", default_value = "0s", value_parser = go_duration::parse)]
    pub shutdown_drain_delay: Duration,

    /// On SIGTERM, how long in-flight calls may take to finish before the process exits anyway.
    #[arg(long, env = "GUBER_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = go_duration::parse)]
    pub shutdown_timeout: Duration,

    /// After a membership change, how long to wait before handing state to new owners (changes
    /// within it make one pass).
    #[arg(long, env = "GUBER_HANDOFF_DELAY", default_value = "50ms", value_parser = go_duration::parse)]
    pub handoff_delay: Duration,

    /// The most one state handoff call to a peer may take.
    #[arg(long, env = "GUBER_HANDOFF_TIMEOUT", default_value = "2s", value_parser = go_duration::parse)]
    pub handoff_timeout: Duration,

    /// After peers join, the most a request for a key not held here waits for their handoff.
    #[arg(long, env = "GUBER_HANDOFF_JOIN_WAIT", default_value = "250ms", value_parser = go_duration::parse)]
    pub handoff_join_wait: Duration,

    /// On a graceful leave, the most time spent waiting for peers to drop this node.
    #[arg(long, env = "GUBER_HANDOFF_LEAVE_WAIT", default_value = "5s", value_parser = go_duration::parse)]
    pub handoff_leave_wait: Duration,

    /// File the cache is saved to on shutdown and restored from on start (empty: no snapshot).
    #[arg(long, env = "GUBER_SNAPSHOT_PATH")]
    pub snapshot_path: Option<String>,

    /// Most `GetRateLimits` calls executing at once on this node (gRPC and HTTP together); beyond
    /// it calls are refused at once with RESOURCE_EXHAUSTED (HTTP 429) instead of queueing.
    #[arg(long, env = "GUBER_MAX_CONCURRENT_REQUESTS", default_value_t = 2000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_concurrent_requests: u32,

    /// Most calls from other nodes (PeersV1, Handoff, AllowV1, Admin) executing at once, in a pool
    /// of their own so clients cannot starve peers; 0 (the default) means as many as
    /// `GUBER_MAX_CONCURRENT_REQUESTS`.
    #[arg(long, env = "GUBER_MAX_CONCURRENT_PEER_REQUESTS", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub max_concurrent_peer_requests: u32,

    /// Most HTTP/2 streams (calls) one gRPC connection may have open at once.
    #[arg(long, env = "GUBER_GRPC_MAX_CONCURRENT_STREAMS", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub grpc_max_concurrent_streams: u32,

    /// How often the gRPC server pings each connection (HTTP/2 keepalive); 0 disables.
    #[arg(long, env = "GUBER_GRPC_KEEPALIVE_INTERVAL", default_value = "60s", value_parser = go_duration::parse)]
    pub grpc_keepalive_interval: Duration,

    /// How long the gRPC server waits for a keepalive ping's answer before closing the connection.
    #[arg(long, env = "GUBER_GRPC_KEEPALIVE_TIMEOUT", default_value = "20s", value_parser = parse_positive_duration)]
    pub grpc_keepalive_timeout: Duration,

    /// Close a gRPC connection that sent nothing (no call, no ping of its own) for this long; the
    /// answers to the server's keepalive pings do not count. 0 disables.
    #[arg(long, env = "GUBER_GRPC_IDLE_TIMEOUT", default_value = "5m", value_parser = go_duration::parse)]
    pub grpc_idle_timeout: Duration,

    /// How many single-threaded runtimes serve plaintext gRPC connections, each connection on one
    /// of them from start to end: `auto` (one per core), a number, or `shared` (every connection
    /// on the main multi-thread runtime, as TLS connections always are). See
    /// `src/grpc_runtimes.rs` for why and for the trade.
    #[arg(long, env = "GUBER_GRPC_RUNTIMES", default_value = "auto")]
    pub grpc_runtimes: crate::grpc_runtimes::GrpcRuntimes,

    /// Most open connections per listener (gRPC and HTTP each); connections beyond it are closed
    /// as soon as they are accepted.
    #[arg(long, env = "GUBER_MAX_CONNECTIONS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,

    /// How long an HTTP client may take to send a request's headers (also the idle time allowed
    /// between requests on a kept-alive connection); slower connections are closed.
    #[arg(long, env = "GUBER_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub http_header_timeout: Duration,

    /// How long an HTTP client may take to send a request's body once its headers arrived; slower
    /// requests are answered 408 and the connection is closed.
    #[arg(long, env = "GUBER_HTTP_BODY_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub http_body_timeout: Duration,

    /// Envoy's rate limit service: envoy ratelimit's YAML configuration, one file or a directory of
    /// `*.yaml`/`*.yml` files (one domain each); reloaded on change and on SIGHUP. Unset: every
    /// `ShouldRateLimit` call is refused with FAILED_PRECONDITION.
    #[arg(long, env = "GUBER_RLS_CONFIG")]
    pub rls_config: Option<String>,

    /// RLS global shadow mode: over-limit descriptors are reported but the overall code is OK
    /// (envoy ratelimit's SHADOW_MODE).
    #[arg(long, env = "GUBER_RLS_SHADOW_MODE", default_value = "false", value_parser = parse_bool,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub rls_shadow_mode: bool,

    /// RLS: when any descriptor of a call would be over its limit, count none of them (envoy
    /// ratelimit's STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT).
    #[arg(long, env = "GUBER_RLS_STOP_INCREMENT_WHEN_OVER_LIMIT", default_value = "false", value_parser = parse_bool,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub rls_stop_increment_when_over_limit: bool,

    /// RLS response headers: `off`, `envoy` (RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset,
    /// as envoy ratelimit's LIMIT_RESPONSE_HEADERS_ENABLED) or `draft` (the IETF draft's
    /// RateLimit-Policy and RateLimit).
    #[arg(long, env = "GUBER_RLS_RESPONSE_HEADERS", default_value = "off")]
    pub rls_response_headers: crate::rls::decide::HeaderMode,

    /// RLS: the share of a limit past which hits count as near the limit in the metrics (envoy
    /// ratelimit's NEAR_LIMIT_RATIO).
    #[arg(long, env = "GUBER_RLS_NEAR_LIMIT_RATIO", default_value = "0.8", value_parser = parse_ratio)]
    pub rls_near_limit_ratio: f64,

    /// `POST /allow` resources: comma-separated `NAME=LIMIT/DURATION[/BURST]` (LIMIT tokens refill
    /// every DURATION; the bucket holds BURST, default LIMIT), e.g. `default=10/1s,uploads=100/1h/20`.
    #[arg(long, env = "GUBER_ALLOW_RESOURCES", default_value = "default=10/1s",
          value_parser = parse_allow_resources)]
    pub allow_resources: crate::allow::AllowResources,

    /// `POST /allow`: how long an Idempotency-Key's first answer is kept.
    #[arg(long, env = "GUBER_ALLOW_IDEMPOTENCY_TTL", default_value = "1h", value_parser = go_duration::parse)]
    pub allow_idempotency_ttl: Duration,

    /// `POST /allow`: the most idempotency records one node keeps (least recently used go first).
    #[arg(long, env = "GUBER_ALLOW_IDEMPOTENCY_CAPACITY", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub allow_idempotency_capacity: u64,

    /// `POST /allow`: the most discovered resources (used without a configured limit) each node
    /// lists; beyond it the least recently used leaves the list (its calls keep the default limit).
    #[arg(long, env = "GUBER_ALLOW_DISCOVERED_MAX", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub allow_discovered_max: u64,

    /// Serve the admin views (`/admin/*` on the HTTP port, `ringlimit.v1.Admin` on gRPC).
    #[arg(long, env = "GUBER_ADMIN_ENABLED", default_value = "true", value_parser = parse_bool,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub admin_enabled: bool,

    /// Bearer token the admin views require (`Authorization: Bearer <token>`). Unset: the views
    /// answer without one only when the HTTP listener is a loopback address, and 403 otherwise.
    #[arg(long, env = "GUBER_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Show unique keys as they are in admin views; by default they are shown hashed
    /// (`h:` + 16 hex digits of their SHA-256), since they may be API keys.
    #[arg(long, env = "GUBER_ADMIN_SHOW_KEYS", default_value = "false", value_parser = parse_bool,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub admin_show_keys: bool,

    /// Most keys each top-offenders summary tracks (per node and time slot).
    #[arg(long, env = "GUBER_ADMIN_TOP_CAPACITY", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub admin_top_capacity: u32,

    /// How long an admin view waits for each peer when answering for the cluster.
    #[arg(long, env = "GUBER_ADMIN_PEER_TIMEOUT", default_value = "2s", value_parser = go_duration::parse)]
    pub admin_peer_timeout: Duration,

    /// What to answer for items whose owner cannot be reached: `error` (a per-item error naming
    /// the owner) or `local` (answer from a local fallback bucket and send the hits to the owner
    /// later).
    #[arg(
        long,
        env = "GUBER_OWNER_FAILURE_POLICY",
        value_enum,
        default_value = "error",
        ignore_case = true
    )]
    pub owner_failure_policy: OwnerFailurePolicyArg,

    /// Consecutive failed calls to a peer that mark it down (a refused connection marks it down at
    /// once); calls to a down peer fail at once instead of waiting for timeouts.
    #[arg(long, env = "GUBER_PEER_DOWN_THRESHOLD", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub peer_down_threshold: u32,

    /// How long a peer stays down before one call probes it; doubles after each failed probe.
    #[arg(long, env = "GUBER_PEER_DOWN_BACKOFF", default_value = "1s", value_parser = go_duration::parse)]
    pub peer_down_backoff: Duration,

    /// The longest a peer stays down between probes.
    #[arg(long, env = "GUBER_PEER_DOWN_MAX_BACKOFF", default_value = "4s", value_parser = go_duration::parse)]
    pub peer_down_max_backoff: Duration,

    /// Certificate chain (PEM) this node serves on both ports and presents to peers; turns TLS on.
    #[arg(long, env = "GUBER_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<String>,

    /// Private key (PEM) of `GUBER_TLS_CERT`.
    #[arg(long, env = "GUBER_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<String>,

    /// CA certificates (PEM) that sign peers' certificates, and clients' under client auth.
    #[arg(long, env = "GUBER_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<String>,

    /// Serve TLS with a self-signed certificate made at start (tests and quick starts).
    #[arg(long, env = "GUBER_TLS_AUTO", default_value = "false", value_parser = parse_bool,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub tls_auto: bool,

    /// Client certificates: `none`, `request` (verified when given; required for PeersV1), or
    /// `require-and-verify` (mTLS on every connection).
    #[arg(long, env = "GUBER_TLS_CLIENT_AUTH", default_value = "none",
          value_parser = crate::tls::parse_client_auth, num_args = 0..=1, default_missing_value = "none")]
    pub tls_client_auth: crate::tls::ClientAuth,

    /// CA certificates (PEM) that sign client certificates [default: `GUBER_TLS_CA`].
    #[arg(long, env = "GUBER_TLS_CLIENT_AUTH_CA_CERT", value_name = "FILE")]
    pub tls_client_auth_ca_cert: Option<String>,

    /// Client certificate (PEM) presented on calls to peers [default: `GUBER_TLS_CERT`].
    #[arg(long, env = "GUBER_TLS_CLIENT_AUTH_CERT", value_name = "FILE")]
    pub tls_client_auth_cert: Option<String>,

    /// Private key (PEM) of `GUBER_TLS_CLIENT_AUTH_CERT`.
    #[arg(long, env = "GUBER_TLS_CLIENT_AUTH_KEY", value_name = "FILE")]
    pub tls_client_auth_key: Option<String>,

    /// Name peers' certificates must hold [default: the host of each peer's address].
    #[arg(long, env = "GUBER_TLS_CLIENT_AUTH_SERVER_NAME", value_name = "NAME")]
    pub tls_client_auth_server_name: Option<String>,

    /// Do not verify peers' certificates (tests only).
    #[arg(long, env = "GUBER_TLS_INSECURE_SKIP_VERIFY", default_value = "false", value_parser = parse_bool,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub tls_insecure_skip_verify: bool,

    /// Oldest TLS version accepted and offered: `1.2` or `1.3`.
    #[arg(long, env = "GUBER_TLS_MIN_VERSION", default_value = "1.2",
          value_parser = crate::tls::parse_min_version, num_args = 0..=1, default_missing_value = "1.2")]
    pub tls_min_version: crate::tls::TlsMinVersion,

    /// Shared secret every node sends on every peer call and requires on every peer RPC
    /// (PeersV1, Handoff, Admin, AllowV1); unset: peer RPCs are guarded only by client auth.
    #[arg(long, env = "GUBER_PEER_SECRET", hide_env_values = true)]
    pub peer_secret: Option<String>,

    /// File holding the peer secret (its trailing newline is removed); exclusive with
    /// `GUBER_PEER_SECRET`.
    #[arg(long, env = "GUBER_PEER_SECRET_FILE", value_name = "FILE")]
    pub peer_secret_file: Option<String>,
}

impl ServerConfig {
    /// The peer secret from `GUBER_PEER_SECRET` or `GUBER_PEER_SECRET_FILE` (read now), if set.
    pub fn peer_secret(
        &self,
    ) -> Result<Option<crate::peer_auth::PeerSecret>, crate::peer_auth::PeerSecretError> {
        crate::peer_auth::PeerSecret::from_settings(
            self.peer_secret.as_deref(),
            self.peer_secret_file.as_deref(),
        )
    }

    /// The size of the peers' admission pool: `GUBER_MAX_CONCURRENT_PEER_REQUESTS`, or when 0 the
    /// same as the clients' (`GUBER_MAX_CONCURRENT_REQUESTS`).
    pub fn peer_admission_limit(&self) -> usize {
        match self.max_concurrent_peer_requests {
            0 => self.max_concurrent_requests as usize,
            peers => peers as usize,
        }
    }
}

/// A ratio from 0 to 1.
fn parse_ratio(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
        _ => Err(format!("'{text}' is not a number from 0 to 1")),
    }
}

fn parse_allow_resources(text: &str) -> Result<crate::allow::AllowResources, String> {
    text.parse()
}

impl ServerConfig {
    /// The address advertised to peers: `advertise_address`, else the gRPC address.
    pub fn advertise_address(&self) -> &str {
        self.advertise_address
            .as_deref()
            .filter(|address| !address.is_empty())
            .unwrap_or(&self.grpc_address)
    }

    /// The configuration as `KEY=value` pairs for the start-up log line; secrets
    /// (`GUBER_ETCD_PASSWORD`, `GUBER_ADMIN_TOKEN`, `GUBER_PEER_SECRET`) are redacted.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let duration = |d: Duration| go_duration::format(d);
        vec![
            ("GUBER_GRPC_ADDRESS", self.grpc_address.clone()),
            ("GUBER_HTTP_ADDRESS", self.http_address.clone()),
            (
                "GUBER_ADVERTISE_ADDRESS",
                self.advertise_address().to_string(),
            ),
            ("GUBER_CACHE_SIZE", self.cache_size.to_string()),
            ("GUBER_DATA_CENTER", self.data_center.clone()),
            (
                "GUBER_PEER_DISCOVERY_TYPE",
                format!("{:?}", self.peer_discovery_type).to_lowercase(),
            ),
            ("GUBER_PEERS", self.peers.join(",")),
            ("GUBER_ETCD_ENDPOINTS", self.etcd_endpoints.join(",")),
            ("GUBER_ETCD_KEY_PREFIX", self.etcd_key_prefix.clone()),
            ("GUBER_ETCD_DIAL_TIMEOUT", duration(self.etcd_dial_timeout)),
            ("GUBER_ETCD_LEASE_TTL", duration(self.etcd_lease_ttl)),
            (
                "GUBER_ETCD_USER",
                self.etcd_user.clone().unwrap_or_default(),
            ),
            ("GUBER_ETCD_PASSWORD", redact(self.etcd_password.as_deref())),
            (
                "GUBER_ETCD_TLS_CERT",
                self.etcd_tls_cert.clone().unwrap_or_default(),
            ),
            (
                "GUBER_ETCD_TLS_KEY",
                self.etcd_tls_key.clone().unwrap_or_default(),
            ),
            (
                "GUBER_ETCD_TLS_CA",
                self.etcd_tls_ca.clone().unwrap_or_default(),
            ),
            (
                "GUBER_ETCD_TLS_SKIP_VERIFY",
                self.etcd_tls_skip_verify.to_string(),
            ),
            ("GUBER_DNS_FQDN", self.dns_fqdn.clone().unwrap_or_default()),
            ("GUBER_DNS_POLL_INTERVAL", duration(self.dns_poll_interval)),
            ("GUBER_K8S_NAMESPACE", self.k8s_namespace.clone()),
            (
                "GUBER_K8S_POD_IP",
                self.k8s_pod_ip.clone().unwrap_or_default(),
            ),
            (
                "GUBER_K8S_POD_PORT",
                self.k8s_pod_port.map(|p| p.to_string()).unwrap_or_default(),
            ),
            (
                "GUBER_K8S_SELECTOR",
                self.k8s_selector.clone().unwrap_or_default(),
            ),
            (
                "GUBER_K8S_ENDPOINTS_SELECTOR",
                self.k8s_endpoints_selector.clone().unwrap_or_default(),
            ),
            (
                "GUBER_K8S_SERVICE_NAME",
                self.k8s_service_name.clone().unwrap_or_default(),
            ),
            (
                "GUBER_K8S_WATCH_MECHANISM",
                self.k8s_watch_mechanism.map(value_name).unwrap_or_default(),
            ),
            (
                "GUBER_K8S_KUBECONFIG",
                self.k8s_kubeconfig.clone().unwrap_or_default(),
            ),
            (
                "GUBER_PEER_FAILURE_WINDOW",
                duration(self.peer_failure_window),
            ),
            ("GUBER_BATCH_TIMEOUT", duration(self.batch_timeout)),
            ("GUBER_BATCH_WAIT", duration(self.batch_wait)),
            ("GUBER_BATCH_LIMIT", self.batch_limit.to_string()),
            ("GUBER_DISABLE_BATCHING", self.disable_batching.to_string()),
            ("GUBER_GLOBAL_TIMEOUT", duration(self.global_timeout)),
            ("GUBER_GLOBAL_SYNC_WAIT", duration(self.global_sync_wait)),
            (
                "GUBER_GLOBAL_BATCH_LIMIT",
                self.global_batch_limit.to_string(),
            ),
            ("GUBER_FORCE_GLOBAL", self.force_global.to_string()),
            (
                "GUBER_SERVE_ALONE_HEALTHY",
                self.serve_alone_healthy.to_string(),
            ),
            ("GUBER_LOG_LEVEL", self.log_level.clone()),
            (
                "GUBER_LOG_FORMAT",
                format!("{:?}", self.log_format).to_lowercase(),
            ),
            (
                "GUBER_GRPC_MAX_CONN_AGE_SEC",
                self.grpc_max_conn_age_sec.to_string(),
            ),
            ("GUBER_MAX_REQUEST_SIZE", self.max_request_size.to_string()),
            ("GUBER_MAX_KEY_LENGTH", self.max_key_length.to_string()),
            (
                "GUBER_SHUTDOWN_DRAIN_DELAY",
                duration(self.shutdown_drain_delay),
            ),
            ("GUBER_SHUTDOWN_TIMEOUT", duration(self.shutdown_timeout)),
            (
                "GUBER_RLS_CONFIG",
                self.rls_config.clone().unwrap_or_default(),
            ),
            ("GUBER_RLS_SHADOW_MODE", self.rls_shadow_mode.to_string()),
            (
                "GUBER_RLS_STOP_INCREMENT_WHEN_OVER_LIMIT",
                self.rls_stop_increment_when_over_limit.to_string(),
            ),
            (
                "GUBER_RLS_RESPONSE_HEADERS",
                self.rls_response_headers.to_string(),
            ),
            (
                "GUBER_RLS_NEAR_LIMIT_RATIO",
                self.rls_near_limit_ratio.to_string(),
            ),
            ("GUBER_ALLOW_RESOURCES", self.allow_resources.to_string()),
            (
                "GUBER_ALLOW_IDEMPOTENCY_TTL",
                duration(self.allow_idempotency_ttl),
            ),
            (
                "GUBER_ALLOW_IDEMPOTENCY_CAPACITY",
                self.allow_idempotency_capacity.to_string(),
            ),
            (
                "GUBER_ALLOW_DISCOVERED_MAX",
                self.allow_discovered_max.to_string(),
            ),
            (
                "GUBER_MAX_CONCURRENT_REQUESTS",
                self.max_concurrent_requests.to_string(),
            ),
            (
                "GUBER_MAX_CONCURRENT_PEER_REQUESTS",
                self.max_concurrent_peer_requests.to_string(),
            ),
            (
                "GUBER_GRPC_MAX_CONCURRENT_STREAMS",
                self.grpc_max_concurrent_streams.to_string(),
            ),
            (
                "GUBER_GRPC_KEEPALIVE_INTERVAL",
                duration(self.grpc_keepalive_interval),
            ),
            (
                "GUBER_GRPC_KEEPALIVE_TIMEOUT",
                duration(self.grpc_keepalive_timeout),
            ),
            ("GUBER_GRPC_IDLE_TIMEOUT", duration(self.grpc_idle_timeout)),
            ("GUBER_GRPC_RUNTIMES", self.grpc_runtimes.to_string()),
            ("GUBER_MAX_CONNECTIONS", self.max_connections.to_string()),
            (
                "GUBER_HTTP_HEADER_TIMEOUT",
                duration(self.http_header_timeout),
            ),
            ("GUBER_HTTP_BODY_TIMEOUT", duration(self.http_body_timeout)),
            ("GUBER_HANDOFF_DELAY", duration(self.handoff_delay)),
            ("GUBER_HANDOFF_TIMEOUT", duration(self.handoff_timeout)),
            ("GUBER_HANDOFF_JOIN_WAIT", duration(self.handoff_join_wait)),
            (
                "GUBER_HANDOFF_LEAVE_WAIT",
                duration(self.handoff_leave_wait),
            ),
            (
                "GUBER_SNAPSHOT_PATH",
                self.snapshot_path.clone().unwrap_or_default(),
            ),
            ("GUBER_ADMIN_ENABLED", self.admin_enabled.to_string()),
            ("GUBER_ADMIN_TOKEN", redact(self.admin_token.as_deref())),
            ("GUBER_ADMIN_SHOW_KEYS", self.admin_show_keys.to_string()),
            (
                "GUBER_ADMIN_TOP_CAPACITY",
                self.admin_top_capacity.to_string(),
            ),
            (
                "GUBER_ADMIN_PEER_TIMEOUT",
                duration(self.admin_peer_timeout),
            ),
            (
                "GUBER_OWNER_FAILURE_POLICY",
                crate::owner_failure::OwnerFailurePolicy::from(self.owner_failure_policy)
                    .as_str()
                    .to_string(),
            ),
            (
                "GUBER_PEER_DOWN_THRESHOLD",
                self.peer_down_threshold.to_string(),
            ),
            ("GUBER_PEER_DOWN_BACKOFF", duration(self.peer_down_backoff)),
            (
                "GUBER_PEER_DOWN_MAX_BACKOFF",
                duration(self.peer_down_max_backoff),
            ),
            ("GUBER_TLS_CERT", self.tls_cert.clone().unwrap_or_default()),
            ("GUBER_TLS_KEY", self.tls_key.clone().unwrap_or_default()),
            ("GUBER_TLS_CA", self.tls_ca.clone().unwrap_or_default()),
            ("GUBER_TLS_AUTO", self.tls_auto.to_string()),
            (
                "GUBER_TLS_CLIENT_AUTH",
                self.tls_client_auth.name().to_string(),
            ),
            (
                "GUBER_TLS_CLIENT_AUTH_CA_CERT",
                self.tls_client_auth_ca_cert.clone().unwrap_or_default(),
            ),
            (
                "GUBER_TLS_CLIENT_AUTH_CERT",
                self.tls_client_auth_cert.clone().unwrap_or_default(),
            ),
            (
                "GUBER_TLS_CLIENT_AUTH_KEY",
                self.tls_client_auth_key.clone().unwrap_or_default(),
            ),
            (
                "GUBER_TLS_CLIENT_AUTH_SERVER_NAME",
                self.tls_client_auth_server_name.clone().unwrap_or_default(),
            ),
            (
                "GUBER_TLS_INSECURE_SKIP_VERIFY",
                self.tls_insecure_skip_verify.to_string(),
            ),
            (
                "GUBER_TLS_MIN_VERSION",
                self.tls_min_version.name().to_string(),
            ),
            ("GUBER_PEER_SECRET", redact(self.peer_secret.as_deref())),
            (
                "GUBER_PEER_SECRET_FILE",
                self.peer_secret_file.clone().unwrap_or_default(),
            ),
        ]
    }
}

/// The name clap parses `value` from (`require-and-verify`, `1.3`).
fn value_name(value: impl ValueEnum) -> String {
    value
        .to_possible_value()
        .map(|possible| possible.get_name().to_string())
        .unwrap_or_default()
}

/// `***` for a set secret, empty for an unset one: secrets never reach the logs.
fn redact(secret: Option<&str>) -> String {
    match secret {
        Some(value) if !value.is_empty() => "***".into(),
        _ => String::new(),
    }
}

/// Parses a boolean the way Go's `strconv.ParseBool` does (`1`, `t`, `true`, `0`, `f`, `false`, in
/// any case).
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "yes" | "on" => Ok(true),
        "0" | "f" | "false" | "no" | "off" | "" => Ok(false),
        other => Err(format!("'{other}' is not a boolean (true or false)")),
    }
}

/// A Go duration that must be greater than zero (a zero timeout would refuse every client).
fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match go_duration::parse(text)? {
        duration if duration.is_zero() => Err(format!("'{text}' must be greater than 0")),
        duration => Ok(duration),
    }
}

/// The log levels `GUBER_LOG_LEVEL` names, with Gubernator's (logrus) spellings, and the tracing
/// level each one means.
const LOG_LEVELS: [(&str, &str); 8] = [
    ("trace", "trace"),
    ("debug", "debug"),
    ("info", "info"),
    ("warn", "warn"),
    ("warning", "warn"),
    ("error", "error"),
    ("fatal", "error"),
    ("panic", "error"),
];

/// `GUBER_LOG_LEVEL`: a level (Gubernator's names too: `warning`, `fatal`, `panic`), or a list of
/// tracing filter directives such as `info,ringlimit::handoff=debug`. Every directive must name a
/// level: tracing itself reads a bare word such as `warning` or `verbose` as a *target* to show at
/// every level, which filters out every line ringlimit writes (the node then failed silently).
fn parse_log_level(text: &str) -> Result<String, String> {
    let error = || {
        format!(
            "'{text}' is not a log level: use one of trace, debug, info, warn (or warning), error \
             (or fatal, panic), or filter directives such as info,ringlimit::handoff=debug"
        )
    };
    let trimmed = text.trim();
    let level_of = |word: &str| {
        LOG_LEVELS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(word))
            .map(|(_, level)| *level)
    };
    if let Some(level) = level_of(trimmed) {
        return Ok(level.to_string());
    }
    let mut directives = Vec::new();
    for directive in trimmed.split(',').map(str::trim) {
        match directive.rsplit_once('=') {
            Some((target, level)) if !target.is_empty() => {
                let level = level_of(level).ok_or_else(error)?;
                directives.push(format!("{target}={level}"));
            }
            Some(_) => return Err(error()),
            None => directives.push(level_of(directive).ok_or_else(error)?.to_string()),
        }
    }
    let filter = directives.join(",");
    tracing_subscriber::EnvFilter::try_new(&filter)
        .map(|_| filter)
        .map_err(|_| error())
}

/// Rewrites `args` so that the entries of `--config FILE` (if given) become flags of `command`,
/// placed before the real arguments so that explicit flags still win. Unknown keys are reported in
/// the returned warnings and otherwise ignored.
pub fn expand_config_file(
    args: Vec<String>,
    command: &clap::Command,
) -> Result<(Vec<String>, Vec<String>), String> {
    let Some(path) = env_file::config_path(&args) else {
        return Ok((args, Vec::new()));
    };
    let entries = env_file::read(std::path::Path::new(&path))?;
    let mut args = args.into_iter();
    let mut expanded: Vec<String> = args.next().into_iter().collect();
    let rest: Vec<String> = args.collect();
    // The file configures the subcommand named first, if any; its name must stay first, and the
    // file's flags go right after it.
    let subcommand = rest
        .first()
        .and_then(|first| command.find_subcommand(first));
    let target = subcommand.unwrap_or(command);
    let mut rest = rest.into_iter();
    if subcommand.is_some() {
        expanded.extend(rest.next());
    }
    let mut warnings = Vec::new();
    for entry in entries {
        let flag = target.get_arguments().find(|arg| {
            arg.get_env()
                .is_some_and(|env| env.to_str() == Some(entry.key.as_str()))
        });
        match flag.and_then(|arg| arg.get_long()) {
            Some(long) => expanded.push(format!("--{long}={}", entry.value)),
            None => warnings.push(format!(
                "config file '{path}': ignoring key {} (not an option of this command)",
                entry.key
            )),
        }
    }
    expanded.extend(rest);
    Ok((expanded, warnings))
}

/// One clear line for a configuration error, naming the environment variable when the bad value
/// belongs to a `GUBER_*` option.
pub fn describe_error(error: &clap::Error, command: &clap::Command) -> String {
    use clap::error::{ContextKind, ContextValue};
    let arg_name = match error.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(name)) => Some(name.clone()),
        _ => None,
    };
    let value = match error.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(value)) => Some(value.clone()),
        _ => None,
    };
    let reason = error
        .source()
        .map(|source| source.to_string())
        .or_else(|| first_line(&error.to_string()));
    let env = arg_name.as_deref().and_then(|name| {
        let long = name.trim_start_matches('-').split([' ', '=', '<']).next()?;
        command
            .get_subcommands()
            .chain(std::iter::once(command))
            .flat_map(|cmd| cmd.get_arguments())
            .find(|arg| arg.get_long() == Some(long))
            .and_then(|arg| arg.get_env())
            .and_then(|env| env.to_str().map(str::to_string))
    });
    match (env, arg_name, value) {
        (Some(env), Some(flag), Some(value)) => format!(
            "invalid configuration: {env} (--{}) = '{value}': {}",
            flag.trim_start_matches('-')
                .split([' ', '=', '<'])
                .next()
                .unwrap_or_default(),
            reason.unwrap_or_default()
        ),
        _ => format!(
            "invalid configuration: {}",
            reason.unwrap_or_else(|| error.kind().to_string())
        ),
    }
}

fn first_line(text: &str) -> Option<String> {
    text.lines()
        .map(|line| line.trim_start_matches("error: ").trim())
        .find(|line| !line.is_empty())
        .map(str::to_string)
}

/// Parses a [`ServerConfig`] from flag-style arguments (without the program name), falling back to
/// `GUBER_*` variables and defaults; for embedding and tests.
pub fn server_config_from_args<I, S>(args: I) -> Result<ServerConfig, String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    use clap::{FromArgMatches, Parser};

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        server: ServerConfig,
    }
    let command = <Wrapper as clap::CommandFactory>::command();
    let all = std::iter::once("ringlimit".to_string()).chain(args.into_iter().map(Into::into));
    command
        .clone()
        .try_get_matches_from(all)
        .and_then(|matches| Wrapper::from_arg_matches(&matches))
        .map(|wrapper| wrapper.server)
        .map_err(|error| describe_error(&error, &command))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[test]
    fn log_levels_take_gubernator_names_and_refuse_bare_words() {
        assert_eq!(parse_log_level("warning").as_deref(), Ok("warn"));
        assert_eq!(parse_log_level(" WARN ").as_deref(), Ok("warn"));
        assert_eq!(parse_log_level("fatal").as_deref(), Ok("error"));
        assert_eq!(parse_log_level("panic").as_deref(), Ok("error"));
        assert_eq!(parse_log_level("debug").as_deref(), Ok("debug"));
        assert_eq!(
            parse_log_level("info,ringlimit::handoff=warning").as_deref(),
            Ok("info,ringlimit::handoff=warn")
        );
        for bad in ["verbose", "", "info,chatty", "=debug", "ringlimit=loud"] {
            let error = parse_log_level(bad).expect_err(bad);
            assert!(error.contains("is not a log level"), "{bad}: {error}");
        }
    }

    #[derive(Debug, Parser)]
    struct Cli {
        #[arg(long)]
        config: Option<String>,
        #[command(flatten)]
        server: ServerConfig,
    }

    fn parse(args: &[&str]) -> Result<ServerConfig, String> {
        let command = Cli::command();
        let mut all = vec!["ringlimit".to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        Cli::try_parse_from(all)
            .map(|cli| cli.server)
            .map_err(|error| describe_error(&error, &command))
    }

    #[test]
    fn defaults_match_gubernator() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.grpc_address, "localhost:1051");
        assert_eq!(config.http_address, "localhost:1050");
        assert_eq!(config.advertise_address(), "localhost:1051");
        assert_eq!(config.cache_size, 50_000);
        assert_eq!(config.batch_timeout, Duration::from_millis(500));
        assert_eq!(config.batch_wait, Duration::from_micros(500));
        assert_eq!(config.batch_limit, 1000);
        assert_eq!(config.global_sync_wait, Duration::from_millis(100));
        assert_eq!(config.global_timeout, Duration::from_millis(500));
        assert_eq!(config.max_request_size, 1024 * 1024);
        assert!(!config.disable_batching);
    }

    #[test]
    fn invalid_values_name_the_variable_on_one_line() {
        let error = parse(&["--cache-size", "lots"]).unwrap_err();
        assert!(
            error.starts_with("invalid configuration: GUBER_CACHE_SIZE"),
            "{error}"
        );
        assert!(!error.contains('\n'), "{error}");
        let error = parse(&["--batch-wait", "5 parsecs"]).unwrap_err();
        assert!(error.contains("GUBER_BATCH_WAIT"), "{error}");
        let error = parse(&["--batch-limit", "1001"]).unwrap_err();
        assert!(error.contains("GUBER_BATCH_LIMIT"), "{error}");
        let error = parse(&["--peer-discovery-type", "carrier-pigeon"]).unwrap_err();
        assert!(error.contains("GUBER_PEER_DISCOVERY_TYPE"), "{error}");
        let error = parse(&["--owner-failure-policy", "pray"]).unwrap_err();
        assert!(error.contains("GUBER_OWNER_FAILURE_POLICY"), "{error}");
        let error = parse(&["--peer-down-threshold", "0"]).unwrap_err();
        assert!(error.contains("GUBER_PEER_DOWN_THRESHOLD"), "{error}");
    }

    #[test]
    fn booleans_accept_go_spellings() {
        assert!(parse(&["--disable-batching"]).unwrap().disable_batching);
        assert!(parse(&["--disable-batching=t"]).unwrap().disable_batching);
        assert!(!parse(&["--force-global=FALSE"]).unwrap().force_global);
        assert!(
            parse(&["--force-global=maybe"])
                .unwrap_err()
                .contains("GUBER_FORCE_GLOBAL")
        );
    }

    #[test]
    fn config_file_entries_become_flags_and_flags_win() {
        let dir = std::env::temp_dir().join(format!("ringlimit-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.env");
        std::fs::write(
            &path,
            "GUBER_CACHE_SIZE=123\nGUBER_DATA_CENTER=east\nGUBER_UNKNOWN=1\n",
        )
        .unwrap();
        let command = Cli::command();
        let args = vec![
            "ringlimit".to_string(),
            format!("--config={}", path.display()),
            "--data-center=west".to_string(),
        ];
        let (expanded, warnings) = expand_config_file(args, &command).unwrap();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("GUBER_UNKNOWN"));
        let cli = Cli::command()
            .args_override_self(true)
            .try_get_matches_from(expanded)
            .unwrap();
        assert_eq!(cli.get_one::<u64>("cache_size"), Some(&123));
        assert_eq!(
            cli.get_one::<String>("data_center").map(String::as_str),
            Some("west")
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_peer_secret_comes_from_one_setting_and_is_redacted() {
        let config =
            server_config_from_args(["--peer-secret=s3cret-value"]).expect("valid configuration");
        let secret = config.peer_secret().unwrap().expect("a secret");
        assert!(secret.matches(b"s3cret-value"));
        let described = config.describe();
        let shown = described
            .iter()
            .find(|(name, _)| *name == "GUBER_PEER_SECRET")
            .map(|(_, value)| value.as_str());
        assert_eq!(shown, Some("***"));
        assert!(
            described
                .iter()
                .all(|(_, value)| !value.contains("s3cret-value"))
        );

        let both =
            server_config_from_args(["--peer-secret=a", "--peer-secret-file=/run/secrets/peer"])
                .expect("parsed; the conflict is reported when the secret is read");
        let error = both.peer_secret().unwrap_err().to_string();
        assert!(error.contains("GUBER_PEER_SECRET_FILE"), "{error}");

        let none = server_config_from_args(Vec::<String>::new()).unwrap();
        assert!(none.peer_secret().unwrap().is_none());
    }
}
