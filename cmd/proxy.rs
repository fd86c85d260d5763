//! `ringlimit proxy`: a rate-limiting reverse proxy in front of `UPSTREAM_URL`, deciding through
//! the cluster: as a cluster member itself (an embedded node, configured by the usual `GUBER_*`
//! variables), or through a remote ringlimit node (`--remote`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use http::HeaderName;
use ringlimit::config::{ServerConfig, go_duration};
use ringlimit::proxy::{self, Decider, FailureMode, ProxyConfig, Rules, TrustedProxies, Upstream};

/// `GUBER_PROXY_ON_CLUSTER_ERROR` as clap parses it (the library's `FailureMode` knows nothing of
/// clap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OnClusterError {
    /// Let the request through, without `RateLimit-*` headers.
    Open,
    /// Answer `503 Service Unavailable` with `{"error":"rate_limiter_unavailable",...}`.
    Closed,
}

impl From<OnClusterError> for FailureMode {
    fn from(arg: OnClusterError) -> Self {
        match arg {
            OnClusterError::Open => FailureMode::Open,
            OnClusterError::Closed => FailureMode::Closed,
        }
    }
}
use ringlimit::refill::{RefillRate, TokenBucket};

/// Arguments of `ringlimit proxy`.
#[derive(Debug, Args)]
#[command(after_help = "\
Each request is keyed by the key header (X-API-Key), else by the client's IP address (taken from
X-Forwarded-For only when the direct peer is a trusted proxy; Forwarded too with
GUBER_PROXY_TRUST_FORWARDED=true), matched against the rules file by its normalised path (first
match wins; unmatched requests get RATE_LIMIT_RPS and BURST), and decided by the cluster. Denied
requests get 429 with Retry-After, RateLimit-* headers and
{\"error\":\"rate_limited\",\"retry_after\":N}. A key header that cannot be a limit key (longer
than GUBER_MAX_KEY_LENGTH minus 4, or not ASCII text) gets 400 {\"error\":\"invalid_api_key\"}; it
is never let through by GUBER_PROXY_ON_CLUSTER_ERROR=open, which applies only when the cluster
cannot decide.

Examples:
  UPSTREAM_URL=http://127.0.0.1:9000 RATE_LIMIT_RPS=5 BURST=10 ringlimit proxy
  ringlimit proxy --upstream-url http://api:80 --remote ringlimit:1051 --on-cluster-error closed")]
pub struct ProxyArgs {
    /// Where the proxy listens (`:8080` means every interface).
    #[arg(long, env = "BIND_ADDR", default_value = ":8080")]
    bind_addr: String,

    /// The upstream API, `http://HOST:PORT[/BASE]`.
    #[arg(long, env = "UPSTREAM_URL", value_parser = parse_upstream)]
    upstream_url: Upstream,

    /// The default limit: tokens per second (at most 3 decimals).
    #[arg(long, env = "RATE_LIMIT_RPS", default_value = "10")]
    rate_limit_rps: f64,

    /// The default limit: the most requests at once (bucket capacity).
    #[arg(long, env = "BURST", default_value_t = 20)]
    burst: i64,

    /// A TOML file of per-route / per-key rules (see the README).
    #[arg(long, env = "GUBER_PROXY_RULES_FILE", value_name = "FILE")]
    rules_file: Option<PathBuf>,

    /// The header whose value keys the client (else the client's IP address).
    #[arg(long, env = "GUBER_PROXY_KEY_HEADER", default_value = "X-API-Key",
          value_parser = parse_header_name)]
    key_header: HeaderName,

    /// Peers whose X-Forwarded-For / Forwarded are believed: comma-separated CIDRs or addresses.
    #[arg(long, env = "GUBER_PROXY_TRUSTED_PROXIES", default_value = "",
          value_parser = parse_trusted_proxies)]
    trusted_proxies: TrustedProxies,

    /// Believe the `Forwarded` header (RFC 7239) of trusted proxies, in preference to
    /// `X-Forwarded-For`; only when those proxies overwrite or append to it.
    #[arg(long, env = "GUBER_PROXY_TRUST_FORWARDED", default_value = "false",
          value_parser = ringlimit::config::parse_bool, action = clap::ArgAction::Set)]
    trust_forwarded: bool,

    /// How long a client may take to send a request's headers (also the idle time allowed
    /// between requests on a kept-alive connection); slower connections are closed.
    #[arg(long, env = "GUBER_PROXY_HEADER_TIMEOUT", default_value = "10s",
          value_parser = positive_duration)]
    proxy_header_timeout: Duration,

    /// How long a client may take to send a request's body once its headers arrived (then 408).
    #[arg(long, env = "GUBER_PROXY_BODY_TIMEOUT", default_value = "60s",
          value_parser = positive_duration)]
    proxy_body_timeout: Duration,

    /// The most open client connections; more are closed as soon as they are accepted.
    #[arg(long, env = "GUBER_PROXY_MAX_CONNECTIONS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    proxy_max_connections: u32,

    /// When the cluster cannot decide: let requests through (`open`) or answer 503 (`closed`).
    #[arg(
        long,
        env = "GUBER_PROXY_ON_CLUSTER_ERROR",
        value_enum,
        default_value = "open"
    )]
    on_cluster_error: OnClusterError,

    /// Decide through this ringlimit node's gRPC address instead of an embedded node.
    #[arg(long, env = "GUBER_PROXY_REMOTE", value_name = "HOST:PORT")]
    remote: Option<String>,

    /// How long a decision may take before the cluster counts as unreachable (`--remote`).
    #[arg(long, env = "GUBER_PROXY_DECISION_TIMEOUT", default_value = "500ms",
          value_parser = go_duration::parse)]
    decision_timeout: Duration,

    /// How long the upstream may take to start its answer (then 504).
    #[arg(long, env = "GUBER_PROXY_UPSTREAM_TIMEOUT", default_value = "30s",
          value_parser = go_duration::parse)]
    upstream_timeout: Duration,

    /// Where to serve the proxy's own `GET /metrics` (and `process_*`), e.g. `127.0.0.1:9102`;
    /// empty: nowhere. With an embedded node the proxy's metrics are also on the node's
    /// `/metrics` (GUBER_HTTP_ADDRESS); with `--remote` this is the only place they are served.
    #[arg(long, env = "GUBER_PROXY_METRICS_ADDRESS", default_value = "")]
    metrics_address: String,

    /// The embedded node (used when --remote is not given).
    #[command(flatten, next_help_heading = "Embedded node (without --remote)")]
    node: ServerConfig,
}

fn parse_upstream(text: &str) -> Result<Upstream, String> {
    text.parse()
        .map_err(|error: proxy::UpstreamError| error.to_string())
}

fn positive_duration(text: &str) -> Result<Duration, String> {
    match go_duration::parse(text)? {
        duration if duration.is_zero() => Err("must be greater than 0".into()),
        duration => Ok(duration),
    }
}

fn parse_header_name(text: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(text.trim().as_bytes())
        .map_err(|_| format!("'{text}' is not a valid header name"))
}

fn parse_trusted_proxies(text: &str) -> Result<TrustedProxies, String> {
    text.parse()
        .map_err(|error: proxy::client_ip::TrustedProxyError| error.to_string())
}

/// Runs the proxy until SIGINT or SIGTERM.
pub fn run(args: ProxyArgs) -> ExitCode {
    let tracing_guard = match ringlimit::telemetry::TracingSettings::from_env()
        .and_then(|telemetry| crate::init_tracing(&args.node, &telemetry))
    {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    let code = run_proxy(args);
    if let Some(guard) = tracing_guard {
        guard.shutdown();
    }
    code
}

fn run_proxy(args: ProxyArgs) -> ExitCode {
    let config = match proxy_config(&args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("invalid configuration: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(args, config))
}

/// The validated proxy configuration, with errors that name the variable.
fn proxy_config(args: &ProxyArgs) -> Result<ProxyConfig, String> {
    let rate = RefillRate::per_second(args.rate_limit_rps)
        .map_err(|error| format!("RATE_LIMIT_RPS (--rate-limit-rps): {error}"))?;
    let default =
        TokenBucket::new(rate, args.burst).map_err(|error| format!("BURST (--burst): {error}"))?;
    let rules = match &args.rules_file {
        Some(path) => Rules::load(path, default).map_err(|error| error.to_string())?,
        None => Rules::only_default(default),
    };
    Ok(ProxyConfig {
        bind_addr: proxy::normalize_bind_addr(&args.bind_addr),
        upstream: args.upstream_url.clone(),
        rules,
        key_header: args.key_header.clone(),
        trusted_proxies: args
            .trusted_proxies
            .clone()
            .trusting_forwarded(args.trust_forwarded),
        failure_mode: args.on_cluster_error.into(),
        upstream_timeout: args.upstream_timeout,
        max_key_bytes: usize::try_from(args.node.max_key_length).unwrap_or(usize::MAX),
        header_timeout: args.proxy_header_timeout,
        body_timeout: args.proxy_body_timeout,
        max_connections: args.proxy_max_connections as usize,
    })
}

async fn serve(args: ProxyArgs, config: ProxyConfig) -> ExitCode {
    // Listen before serving: a SIGTERM right after the first answer must still drain.
    let signal = ringlimit::server::ShutdownSignal::listen();
    let (decider, node) = match &args.remote {
        Some(address) => match Decider::remote(address, args.decision_timeout) {
            Ok(decider) => (decider, None),
            Err(error) => {
                eprintln!("invalid configuration: GUBER_PROXY_REMOTE (--remote): {error}");
                return ExitCode::from(2);
            }
        },
        None => match ringlimit::server::start(&args.node).await {
            Ok(server) => (Decider::Embedded(server.node().clone()), Some(server)),
            Err(error) => {
                tracing::error!(%error, "cannot start the embedded node");
                return ExitCode::FAILURE;
            }
        },
    };
    let running = match proxy::start(config, decider).await {
        Ok(running) => running,
        Err(error) => {
            tracing::error!(%error, "cannot start the proxy");
            return ExitCode::FAILURE;
        }
    };
    if let Some(node) = &node {
        for collector in running.metrics().collectors() {
            node.node().metrics().register_extra(collector);
        }
    }
    let metrics_server = match serve_metrics(&args.metrics_address, running.metrics()).await {
        Ok(server) => server,
        Err(error) => {
            tracing::error!(%error, "cannot serve the proxy's metrics");
            return ExitCode::FAILURE;
        }
    };
    signal.recv().await;
    tracing::info!("shutdown signal received; draining");
    let mut code = ExitCode::SUCCESS;
    if let Some((stop, task)) = metrics_server {
        let _ = stop.send(true);
        let _ = task.await;
    }
    if let Err(error) = running.shutdown().await {
        tracing::error!(%error, "unclean proxy shutdown");
        code = ExitCode::FAILURE;
    }
    if let Some(node) = node
        && let Err(error) = node.shutdown().await
    {
        tracing::error!(%error, "unclean node shutdown");
        code = ExitCode::FAILURE;
    }
    code
}

/// The proxy's metrics listener, when `address` is not empty: its stop switch and its task.
async fn serve_metrics(
    address: &str,
    metrics: &std::sync::Arc<proxy::ProxyMetrics>,
) -> Result<Option<MetricsServer>, String> {
    if address.is_empty() {
        return Ok(None);
    }
    let address = proxy::normalize_bind_addr(address);
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .map_err(|error| {
            format!("GUBER_PROXY_METRICS_ADDRESS (--metrics-address) {address}: {error}")
        })?;
    let bound = listener.local_addr().map_err(|error| error.to_string())?;
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let app = proxy::metrics::router(std::sync::Arc::clone(metrics));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            })
            .await;
    });
    tracing::info!(address = %bound, "serving the proxy's metrics");
    Ok(Some((stop, task)))
}

/// The metrics listener's stop switch and task.
type MetricsServer = (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
);
