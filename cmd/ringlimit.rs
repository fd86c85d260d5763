//! The `ringlimit` command: one binary, with subcommands. `ringlimit` alone serves.
//!
//! Subcommands: `serve` (run a node, the default), `ring` (which peer owns a key), `check` (send
//! rate-limit requests to a node and print the answers) and `healthcheck` (a node's health as an
//! exit status, for container and Kubernetes probes) and `bench` (a load generator that measures
//! a node's or a cluster's throughput and latency).

mod address;
mod bench;
mod check;
mod healthcheck;
mod proxy;

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use ringlimit::config::{self, LogFormat, ServerConfig};
use ringlimit::peers::{PeerInfo, Ring};
use ringlimit::telemetry::{self, TelemetryError, TracingGuard, TracingSettings};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// A peer-to-peer clustered rate-limit service, wire-compatible with Gubernator v2.
#[derive(Debug, Parser)]
#[command(
    name = "ringlimit",
    version = ringlimit::build_info::LONG_VERSION,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Load `KEY=value` lines (GUBER_* variables) from FILE; flags still take precedence.
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<String>,

    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    serve: ServerConfig,
}

// Parsed once at start-up, so the size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node (the default when no subcommand is given).
    Serve(ServerConfig),
    /// Print which peer owns each key, as Gubernator v2's consistent-hash ring chooses.
    Ring(RingArgs),
    /// Send rate-limit requests to a node over gRPC and print the answers.
    ///
    /// Builds one GetRateLimits call from flags (one item per --key) or reads it as the HTTP
    /// gateway's JSON, sends it to a node's gRPC address and prints one line per answer, or the
    /// response as the gateway's JSON; --count repeats the call.
    Check(check::CheckArgs),
    /// Exit 0 if a node reports itself healthy (for container and Kubernetes probes).
    ///
    /// Calls the node's HTTP health endpoint, GET /v1/HealthCheck, and exits 0 when it answers
    /// 200 with status "healthy", 2 when it answers but is unhealthy, and 1 when it cannot be
    /// asked (connection refused, timeout, an unexpected answer).
    Healthcheck(healthcheck::HealthcheckArgs),
    /// Load a node or a cluster with GetRateLimits calls and report throughput and latency.
    ///
    /// Sends calls over gRPC (or the HTTP gateway with --http) from many concurrent workers,
    /// closed loop or at a fixed --rate, and prints calls/s, decisions/s, latency percentiles
    /// measured from each call's intended send time, errors by kind and UNDER/OVER counts.
    Bench(bench::BenchArgs),
    /// Run a rate-limiting reverse proxy in front of an HTTP API (UPSTREAM_URL).
    ///
    /// Decides through the cluster: as a member itself (an embedded node configured by the
    /// GUBER_* variables) or through a remote node (--remote), so every proxy replica shares
    /// each limit.
    Proxy(proxy::ProxyArgs),
}

/// Arguments of `ringlimit ring`.
#[derive(Debug, Args)]
#[command(after_help = "\
Output: one line per key, `<key>\\t<owner>` (the hash key, a tab, the owner's gRPC address), in
the order the keys were given. With --json: a JSON array of {\"key\": ..., \"owner\": ...}.

The ring is the one Gubernator v2 builds (FNV-1, 512 points per peer), so the owners are the
ones a Gubernator or ringlimit node with the same peers would choose. Pass only the peers of one
data center.

Examples:
  ringlimit ring --peers 10.0.0.1:1051,10.0.0.2:1051 requests_per_sec_account:42
  printf 'account:1\\naccount:2\\n' | ringlimit ring --peers 10.0.0.1:1051,10.0.0.2:1051 --name requests_per_sec")]
struct RingArgs {
    /// The peers' gRPC addresses, comma-separated (the local data center's peers).
    #[arg(
        long,
        env = "GUBER_PEERS",
        value_delimiter = ',',
        value_name = "ADDRESSES"
    )]
    peers: Vec<String>,

    /// Prepend `NAME_` to every key, so that KEYs are the unique keys of the rate limit NAME.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,

    /// Print a JSON array of {"key": ..., "owner": ...} instead of tab-separated lines.
    #[arg(long)]
    json: bool,

    /// Hash keys (`name_unique_key`); when none are given, they are read from standard input, one
    /// per line, blank lines skipped.
    #[arg(value_name = "KEY")]
    keys: Vec<String>,
}

fn main() -> ExitCode {
    let command = Cli::command().args_override_self(true);
    let args: Vec<String> = std::env::args().collect();
    let (args, warnings) = match config::expand_config_file(args, &command) {
        Ok(expanded) => expanded,
        Err(error) => {
            eprintln!("invalid configuration: {error}");
            return ExitCode::from(2);
        }
    };
    let args_for_errors = args.clone();
    let cli = match command
        .clone()
        .try_get_matches_from(args)
        .and_then(|matches| Cli::from_arg_matches(&matches))
    {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => {
            // --help and --version.
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            use clap::error::ErrorKind;
            // The client subcommands report bad values in clap's own words; only the node's
            // configuration errors are phrased as configuration errors.
            let client = command_matches(&args_for_errors, &["check", "healthcheck", "bench"]);
            if !client
                && matches!(
                    error.kind(),
                    ErrorKind::ValueValidation | ErrorKind::InvalidValue
                )
            {
                eprintln!("{}", config::describe_error(&error, &command));
            } else {
                let _ = error.print();
            }
            return ExitCode::from(2);
        }
    };

    let server_config = match cli.command {
        Some(Command::Serve(server_config)) => server_config,
        Some(Command::Ring(args)) => return ring(args),
        Some(Command::Check(args)) => return check::run(args),
        Some(Command::Healthcheck(args)) => return healthcheck::run(args),
        Some(Command::Bench(args)) => return bench::run(args),
        Some(Command::Proxy(args)) => return proxy::run(args),
        None => cli.serve,
    };
    // TLS files and combinations are checked before anything starts, as one line naming the
    // variable, like the other configuration errors.
    if let Err(error) =
        ringlimit::tls::check_config(&ringlimit::tls::TlsConfig::from(&server_config))
    {
        eprintln!("{error}");
        return ExitCode::from(2);
    }
    // So are the GUBER_K8S_* settings of k8s discovery.
    if server_config.peer_discovery_type == config::DiscoveryType::K8s
        && let Err(error) = ringlimit::peers::discovery::k8s::K8sSettings::from_config(
            &ringlimit::peers::discovery::DiscoveryOptions::from(&server_config).k8s,
        )
    {
        eprintln!("{error}");
        return ExitCode::from(2);
    }
    // And so are the OTEL_* variables of tracing.
    let telemetry = match TracingSettings::from_env() {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    let tracing_guard = match init_tracing(&server_config, &telemetry) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    let code = serve(server_config);
    // After the server stopped (its last spans ended): export what is still batched.
    if let Some(guard) = tracing_guard {
        guard.shutdown();
    }
    code
}

fn serve(config: ServerConfig) -> ExitCode {
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
    let settings = config
        .describe()
        .into_iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(" ");
    tracing::info!(
        version = ringlimit::build_info::VERSION,
        commit = ringlimit::build_info::GIT_COMMIT,
        built = ringlimit::build_info::BUILD_DATE,
        config = %settings,
        "starting ringlimit"
    );
    runtime.block_on(async {
        // Listen before serving: a SIGTERM right after the first answer must still drain.
        let signal = ringlimit::server::ShutdownSignal::listen();
        let server = match ringlimit::server::start(&config).await {
            Ok(server) => server,
            Err(error) => {
                tracing::error!(%error, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        match server.run_until(signal).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(%error, "unclean shutdown");
                ExitCode::FAILURE
            }
        }
    })
}

/// `ringlimit ring`: the owner of each key.
fn ring(args: RingArgs) -> ExitCode {
    let peers: Vec<PeerInfo> = args
        .peers
        .iter()
        .map(|address| address.trim())
        .filter(|address| !address.is_empty())
        .map(|address| PeerInfo {
            grpc_address: address.to_string(),
            http_address: String::new(),
            data_center: String::new(),
        })
        .collect();
    if peers.is_empty() {
        eprintln!("ringlimit ring: no peers given: pass --peers HOST:PORT,... or set GUBER_PEERS");
        return ExitCode::from(2);
    }
    let ring = Ring::new(&peers);

    let keys = if args.keys.is_empty() {
        match read_keys(std::io::stdin().lock()) {
            Ok(keys) => keys,
            Err(error) => {
                eprintln!("ringlimit ring: cannot read keys from standard input: {error}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        args.keys
    };
    let keys: Vec<String> = match &args.name {
        Some(name) => keys
            .into_iter()
            .map(|key| format!("{name}_{key}"))
            .collect(),
        None => keys,
    };

    let mut owners = keys.iter().map(|key| {
        let owner = ring
            .owner(key)
            .map(|peer| peer.grpc_address.as_str())
            .unwrap_or_default();
        (key.as_str(), owner)
    });
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = if args.json {
        let entries: Vec<serde_json::Value> = owners
            .map(|(key, owner)| serde_json::json!({ "key": key, "owner": owner }))
            .collect();
        serde_json::to_writer(&mut out, &entries)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        owners.try_for_each(|(key, owner)| writeln!(out, "{key}\t{owner}"))
    };
    match written.and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ringlimit ring: cannot write the owners: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Whether the first argument after the program name is one of `names` (a subcommand).
fn command_matches(args: &[String], names: &[&str]) -> bool {
    args.get(1)
        .is_some_and(|first| names.contains(&first.as_str()))
}

/// Keys from `input`, one per line (`\n` or `\r\n`), blank lines skipped.
fn read_keys(input: impl BufRead) -> std::io::Result<Vec<String>> {
    let mut keys = Vec::new();
    for line in input.lines() {
        let line = line?;
        if !line.trim().is_empty() {
            keys.push(line);
        }
    }
    Ok(keys)
}

/// Installs the log subscriber: `GUBER_LOG_LEVEL` (or `RUST_LOG`) filters, `GUBER_LOG_FORMAT`
/// chooses text or one JSON object per line, on standard error. With tracing on (`OTEL_*`, see
/// `ringlimit::telemetry`) it also exports spans, until the returned guard is shut down.
fn init_tracing(
    config: &ServerConfig,
    telemetry: &TracingSettings,
) -> Result<Option<TracingGuard>, TelemetryError> {
    // kube logs every failed request (kube_client's builder, at error) and every refused (403)
    // watch (kube_runtime's watcher, at warn); k8s discovery reports an outage once itself, with
    // the same error (each retry at debug), so those lines are off unless the level names kube.
    let level = if config.log_level.contains("kube") {
        config.log_level.clone()
    } else {
        format!(
            "{},kube_client::client::builder=off,kube_runtime::watcher=off",
            config.log_level
        )
    };
    let mut filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // The spans made for tracing are exported, not logged (log lines stay as they are).
    if let Ok(directive) = format!("{}=off", telemetry::SPAN_TARGET).parse() {
        filter = filter.add_directive(directive);
    }
    let (otel, guard) = match telemetry::install(telemetry)? {
        Some((layer, guard)) => (Some(layer), Some(guard)),
        None => (None, None),
    };
    let subscriber = tracing_subscriber::registry().with(otel);
    // Colours only for a person at a terminal: log collectors get plain text.
    let logs = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => subscriber
            .with(logs.json().flatten_event(true).with_filter(filter))
            .init(),
        LogFormat::Text => subscriber.with(logs.with_filter(filter)).init(),
    }
    if telemetry.is_on() && !telemetry::BUILT_IN {
        tracing::warn!(
            "OTEL_* variables ask for tracing, but this build has no `otel` feature: no spans are exported"
        );
    }
    Ok(guard)
}
