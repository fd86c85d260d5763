//! `ringlimit bench`: a load generator for a node or a cluster.
//!
//! # What it measures
//!
//! Workers (`--concurrency`, spread round robin over `--connections` separate gRPC channels or
//! HTTP client pools, themselves spread round robin over the `--target`s) send `GetRateLimits`
//! calls of `--items` items each. Each item's key is drawn from `--keys` keys with a per-worker
//! SplitMix64 generator, uniformly or with the `hot` skew (half of the draws go to the hottest 1%
//! of the keys, the other half to the rest). The report gives the successful calls and the
//! decisions (items answered UNDER or OVER) per second, the latency percentiles of the successful
//! calls (HdrHistogram, 1 µs to 60 s, 3 significant digits; one histogram per worker, merged at
//! the end), the failed calls by kind (the gRPC code name, `DEADLINE_EXCEEDED` for `--timeout`,
//! `transport`, `http_<status>`, `decode`), the items answered with an error (`item`) and the
//! UNDER_LIMIT / OVER_LIMIT answers.
//!
//! # How: closed and open loop, and coordinated omission
//!
//! In the closed loop (the default) every worker sends its next call as soon as the previous one
//! is answered, and a call's latency is the time from its send to its answer.
//!
//! With `--rate R` (open loop) the calls are scheduled at fixed intervals of 1/R s from the start:
//! slot `i` is due at `start + i/R`. Workers take the next slot from a shared atomic counter, wait
//! until it is due and send; when every worker is busy, slots are taken late and sent at once, but
//! **latency is still counted from the slot's intended send time**. A server that stalls therefore
//! shows its stall in the percentiles instead of hiding it by slowing the sender down (the
//! "coordinated omission" of closed-loop benchmarks).
//!
//! The first `--warmup` of the run is not measured. The run then lasts `--time` (calls sent after
//! it are not made) or `--calls` measured calls.
//!
//! Exit status: 0 when the run completed (even with errors), 1 when a target cannot be reached at
//! start, 2 for bad arguments.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use prost::Message as _;
use ringlimit::config::go_duration;
use ringlimit::http::json;
use ringlimit::proto::{self, v1_client::V1Client};
use ringlimit::rls::wire::rate_limit_descriptor::Entry;
use ringlimit::rls::wire::rate_limit_service_client::RateLimitServiceClient;
use ringlimit::rls::wire::{RateLimitDescriptor, RateLimitRequest, rate_limit_response};
use tonic::transport::{Channel, Endpoint};

/// The smallest latency the histograms hold, in microseconds.
const LOWEST_US: u64 = 1;
/// The largest latency the histograms hold, in microseconds (60 s); longer ones are clamped.
const HIGHEST_US: u64 = 60_000_000;
/// The histograms' precision.
const SIGNIFICANT_DIGITS: u8 = 3;
/// The share of the key space that is hot with `--distribution hot`, in keys per 100.
const HOT_KEYS_PERCENT: u64 = 1;
/// The path of the HTTP gateway's GetRateLimits.
const HTTP_PATH: &str = "/v1/GetRateLimits";

/// Arguments of `ringlimit bench`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Closed loop (default): each of the --concurrency workers sends its next call as soon as the
previous one is answered. Open loop (--rate R): calls are due every 1/R s; a worker sends a due
call at once even when late, and its latency is counted from the time it was due, so a stalling
server shows in the percentiles (no coordinated omission).

Keys are `k<N>` for N in 0..--keys under the rate limit --name. --distribution hot sends half of
the items to the hottest 1% of the keys (at least one key) and the other half to the others;
--distribution sequential uses k0, k1, ... in order across all workers (to load a key space).

Output: a report on standard output at the end (a live progress line on standard error when it
is a terminal). With --json, one JSON object:
  {\"calls\":..,\"decisions\":..,\"seconds\":..,\"calls_per_sec\":..,\"decisions_per_sec\":..,
   \"latency_us\":{\"p50\":..,\"p90\":..,\"p99\":..,\"p999\":..,\"max\":..},
   \"errors\":{\"<kind>\":..},\"under\":..,\"over\":..,\"config\":{..},
   \"series\":[{\"t\":1,\"calls\":..,\"decisions\":..,\"errors\":..,\"p50_us\":..,\"p99_us\":..},..]}
`calls` counts the successful calls and `decisions` their items answered UNDER_LIMIT or
OVER_LIMIT; latencies are those of the successful calls, in microseconds. Failed calls are
counted in `errors` by kind: gRPC code names (UNAVAILABLE, ...), DEADLINE_EXCEEDED (--timeout),
transport, http_<status>, decode; `item` counts the items answered with an error.
`series` has one point per second of the measured part (the warm-up is not in it), by the time
each call was answered: `t` is the second's end (1 for the first); `errors` counts the failed calls
and the items answered with an error; p50_us/p99_us (null in a second without a successful call)
are to about 1%. With --time T there are ceil(T) points, and calls answered after T count in the
last; with --calls, one per second begun. The points' calls, decisions and errors add up to the
totals.

Exit status: 0 when the run completed (even with errors), 1 when a target cannot be reached at
start, 2 for bad arguments.

Examples:
  ringlimit bench --time 10s
  ringlimit bench --target 10.0.0.1:1051 --connections 8 --concurrency 256 --items 10
  ringlimit bench --rate 20000 --time 30s --distribution hot --json
  ringlimit bench --http --target http://127.0.0.1:1050 --calls 100000
  ringlimit bench --targets 10.0.0.1:1051,10.0.0.2:1051,10.0.0.3:1051 --behavior global")]
pub struct BenchArgs {
    /// The node(s) to load, comma-separated: gRPC `HOST:PORT` (default 127.0.0.1:1051), or with
    /// --http the gateway's `http://HOST:PORT` (default http://127.0.0.1:1050). Connections are
    /// spread over them round robin.
    #[arg(
        long = "target",
        visible_alias = "targets",
        value_delimiter = ',',
        value_name = "ADDRESS"
    )]
    targets: Vec<String>,

    /// Send the calls as JSON to the HTTP gateway (`POST /v1/GetRateLimits`) instead of gRPC.
    #[arg(long)]
    http: bool,

    /// Send Envoy's `ShouldRateLimit` calls of this domain instead (gRPC), one descriptor
    /// `key=<key>` per item with `hits_addend` = --hits; the target's `GUBER_RLS_CONFIG` must
    /// define the domain (e.g. `descriptors: [{key: key, rate_limit: {unit: minute,
    /// requests_per_unit: N}}]`).
    #[arg(long, value_name = "DOMAIN", conflicts_with = "http")]
    rls_domain: Option<String>,

    /// Separate connections (gRPC channels; HTTP client pools with --http).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    connections: u32,

    /// Calls in flight in total (workers), spread over the connections.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..), value_name = "M")]
    concurrency: u32,

    /// Items (rate-limit requests) per call.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000), value_name = "N")]
    items: u32,

    /// The size of the key space.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..), value_name = "K")]
    keys: u64,

    /// How keys are drawn.
    #[arg(long, value_enum, default_value = "uniform", ignore_case = true)]
    distribution: Distribution,

    /// Hits per item.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    hits: i64,

    /// The limit of every item (the default is so large that nearly every answer is UNDER).
    #[arg(long, default_value_t = 1_000_000_000_000, value_parser = clap::value_parser!(i64).range(0..))]
    limit: i64,

    /// The window of the limit (Go syntax, as the server's settings: `1m`, `500ms`). Not how long
    /// to measure: that is `--time`.
    #[arg(long, default_value = "1m", value_parser = parse_limit_duration, value_name = "DURATION")]
    limit_duration: i64,

    /// Refused with a message: `--duration` could mean the limit's window or the run's length.
    #[arg(long, hide = true, value_parser = refuse_ambiguous_duration, value_name = "DURATION")]
    duration: Option<i64>,

    /// The algorithm.
    #[arg(long, value_enum, default_value = "token", ignore_case = true)]
    algorithm: crate::check::AlgorithmArg,

    /// Behaviour flags, as `ringlimit check` takes them (`global`, `no-batching`, ... or a
    /// number), repeatable or comma-separated.
    #[arg(
        long = "behavior",
        alias = "behaviour",
        value_parser = crate::check::parse_behavior,
        value_delimiter = ',',
        value_name = "BEHAVIOR"
    )]
    behaviors: Vec<i32>,

    /// The rate limit's name.
    #[arg(long, default_value = "bench")]
    name: String,

    /// Open loop: calls per second in total, at fixed intervals (default: closed loop).
    #[arg(long, value_name = "CALLS_PER_SEC")]
    rate: Option<f64>,

    /// How long to measure (Go syntax); the default is 10s unless --calls is given.
    #[arg(long, value_parser = go_duration::parse, value_name = "DURATION", conflicts_with = "calls")]
    time: Option<Duration>,

    /// Measure this many calls instead of a duration.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    calls: Option<u64>,

    /// How long to send before measuring (Go syntax).
    #[arg(long, default_value = "1s", value_parser = go_duration::parse, value_name = "DURATION")]
    warmup: Duration,

    /// How long connecting, and then each call, may take (Go syntax).
    #[arg(long, default_value = "5s", value_parser = go_duration::parse, value_name = "DURATION")]
    timeout: Duration,

    /// Print one JSON object instead of the text report.
    #[arg(long)]
    json: bool,

    /// Write the body of one call (the gRPC message, length-prefixed as on the wire) to FILE and
    /// exit without calling anything: for a C load generator (`h2load -d FILE`). With
    /// `--distribution sequential` its items carry the keys `k0, k1, …`; every call h2load
    /// makes then sends these same keys.
    #[arg(long, value_name = "FILE", conflicts_with = "http")]
    write_body: Option<std::path::PathBuf>,

    /// TLS to the targets (any --tls-* option turns it on; with --http the URLs become https).
    #[command(flatten)]
    tls: ringlimit::config::client_tls_args::ClientTlsArgs,
}

/// `--distribution`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Distribution {
    /// Every key equally likely.
    Uniform,
    /// Half of the draws go to the hottest 1% of the keys (at least one key).
    Hot,
    /// Keys in order, `k0, k1, …`, shared by all workers, wrapping after the last: every key is
    /// used once before any is used twice (to load a key space exactly).
    Sequential,
}

/// Why `ringlimit bench` could not run.
#[derive(Debug, thiserror::Error)]
enum BenchError {
    /// The arguments are unusable (exit status 2).
    #[error("{0}")]
    Usage(String),
    /// The async runtime could not be built.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// A target could not be reached at start (exit status 1).
    #[error("cannot connect to {address}: {reason}")]
    Connect {
        /// The address contacted.
        address: String,
        /// What went wrong.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(reqwest::Error),
    /// The histograms could not be created or merged.
    #[error("histogram: {0}")]
    Histogram(String),
    /// A worker task panicked or was cancelled.
    #[error("worker failed: {0}")]
    Worker(#[from] tokio::task::JoinError),
    /// The report could not be written.
    #[error("cannot write the report: {0}")]
    Output(std::io::Error),
}

impl BenchError {
    fn exit_code(&self) -> ExitCode {
        match self {
            Self::Usage(_) => ExitCode::from(2),
            _ => ExitCode::FAILURE,
        }
    }
}

/// Runs `ringlimit bench`.
pub fn run(args: BenchArgs) -> ExitCode {
    match bench(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(BenchError::Output(error)) if error.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            error.exit_code()
        }
    }
}

/// The validated plan of a run.
#[derive(Debug, Clone)]
struct Plan {
    /// Normalized target URIs (`http://HOST:PORT`).
    targets: Vec<String>,
    /// When the run stops.
    stop: Stop,
    /// Open loop: the interval between two due calls, in nanoseconds.
    interval_ns: Option<u64>,
    /// Connections actually used (at most the concurrency).
    connections: usize,
    /// The behaviour bits of every item.
    behavior: i32,
}

/// When the measured part of a run ends.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// After this long.
    After(Duration),
    /// After this many measured calls.
    Calls(u64),
}

fn bench(args: BenchArgs) -> Result<(), BenchError> {
    let plan = plan(&args)?;
    if let Some(path) = &args.write_body {
        return write_body(&args, &plan, path);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(BenchError::Runtime)?;
    let outcome = runtime.block_on(drive(&args, &plan))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let report = json_report(&args, &plan, &outcome);
        serde_json::to_writer(&mut out, &report).map_err(std::io::Error::from)
    } else {
        write_text_report(&mut out, &args, &plan, &outcome)
    }
    .and_then(|()| writeln!(out))
    .and_then(|()| out.flush())
    .map_err(BenchError::Output)
}

/// Checks the arguments and derives the plan.
fn plan(args: &BenchArgs) -> Result<Plan, BenchError> {
    let targets: Vec<&str> = args
        .targets
        .iter()
        .map(|target| target.trim())
        .filter(|target| !target.is_empty())
        .collect();
    let targets = if targets.is_empty() {
        vec![if args.http {
            "http://127.0.0.1:1050".to_string()
        } else {
            "127.0.0.1:1051".to_string()
        }]
    } else {
        targets.into_iter().map(str::to_string).collect()
    };
    let targets = targets
        .iter()
        .map(|target| target_uri(target))
        .collect::<Result<Vec<_>, _>>()?;
    if args.name.is_empty() {
        return Err(BenchError::Usage("--name cannot be empty".to_string()));
    }
    let interval_ns = match args.rate {
        None => None,
        Some(rate) if rate.is_finite() && rate > 0.0 && rate <= 1e9 => {
            Some(((1e9 / rate).round() as u64).max(1))
        }
        Some(rate) => {
            return Err(BenchError::Usage(format!(
                "--rate must be a number of calls per second above 0 (at most 1e9), not {rate}"
            )));
        }
    };
    let stop = match (args.calls, args.time) {
        (Some(calls), _) => Stop::Calls(calls),
        (None, Some(time)) if time.is_zero() => {
            return Err(BenchError::Usage("--time must be above 0".to_string()));
        }
        (None, Some(time)) => Stop::After(time),
        (None, None) => Stop::After(Duration::from_secs(10)),
    };
    if args.timeout.is_zero() {
        return Err(BenchError::Usage("--timeout must be above 0".to_string()));
    }
    Ok(Plan {
        targets,
        stop,
        interval_ns,
        connections: args.connections.min(args.concurrency) as usize,
        behavior: args.behaviors.iter().fold(0, |all, bits| all | bits),
    })
}

/// `http://HOST:PORT` for a `--target` value.
fn target_uri(address: &str) -> Result<String, BenchError> {
    crate::address::http_uri(address).ok_or_else(|| {
        BenchError::Usage(format!(
            "invalid --target '{address}': expected HOST:PORT or http://HOST:PORT"
        ))
    })
}

/// One connection: a gRPC client or an HTTP client pool with its URL.
#[derive(Clone)]
enum Connection {
    /// A gRPC channel.
    Grpc(V1Client<Channel>),
    /// An HTTP client and the full GetRateLimits URL.
    Http(reqwest::Client, Arc<str>),
    /// Envoy's rate limit service over a gRPC channel, and the domain.
    Rls(RateLimitServiceClient<Channel>, Arc<str>),
}

/// Opens the connections, round robin over the targets; fails if a target cannot be reached.
async fn connect(args: &BenchArgs, plan: &Plan) -> Result<Vec<Connection>, BenchError> {
    let mut connections = Vec::with_capacity(plan.connections);
    for index in 0..plan.connections {
        let uri = &plan.targets[index % plan.targets.len()];
        let connect_error = |reason: String| BenchError::Connect {
            address: uri.clone(),
            reason,
        };
        if args.http {
            // The HTTP client connects lazily: prove the target listens, then build a pool.
            let authority = uri.trim_start_matches("http://");
            match tokio::time::timeout(args.timeout, tokio::net::TcpStream::connect(authority))
                .await
            {
                Err(_) => return Err(connect_error("timed out".to_string())),
                Ok(Err(error)) => return Err(connect_error(error.to_string())),
                Ok(Ok(_)) => {}
            }
            let mut client = reqwest::Client::builder()
                .timeout(args.timeout)
                .connect_timeout(args.timeout)
                .no_proxy();
            let mut url = format!("{uri}{HTTP_PATH}");
            let tls = args
                .tls
                .client_config(&[b"http/1.1"])
                .map_err(|error| BenchError::Usage(error.to_string()))?;
            if let Some(tls) = tls {
                client = client.use_preconfigured_tls(tls);
                url = url.replacen("http://", "https://", 1);
            }
            let client = client.build().map_err(BenchError::HttpClient)?;
            connections.push(Connection::Http(client, url.into()));
        } else {
            let endpoint = Endpoint::from_shared(uri.clone())
                .map_err(|error| BenchError::Usage(format!("invalid --target '{uri}': {error}")))?
                .connect_timeout(args.timeout)
                .timeout(args.timeout)
                .tcp_nodelay(true);
            let tls = args
                .tls
                .grpc_connector()
                .map_err(|error| BenchError::Usage(error.to_string()))?;
            let connect = async {
                match tls {
                    Some(tls) => endpoint.connect_with_connector(tls).await,
                    None => endpoint.connect().await,
                }
            };
            let channel = tokio::time::timeout(args.timeout, connect)
                .await
                .map_err(|_| connect_error("timed out".to_string()))?
                .map_err(|error| connect_error(error_chain(&error)))?;
            connections.push(match &args.rls_domain {
                Some(domain) => {
                    Connection::Rls(RateLimitServiceClient::new(channel), domain.as_str().into())
                }
                None => Connection::Grpc(V1Client::new(channel)),
            });
        }
    }
    Ok(connections)
}

/// What the workers share: the schedule, read-only, and a few atomics.
struct Shared {
    /// When the run (warm-up included) started.
    start: Instant,
    /// When measuring starts.
    measure_start: Instant,
    /// When the measured part ends (time-bound runs).
    measure_end: Option<Instant>,
    /// Measured calls to make (count-bound runs).
    calls: Option<u64>,
    /// Open loop: the interval between due calls, in nanoseconds.
    interval_ns: Option<u64>,
    /// Open loop: calls due during the warm-up.
    warmup_slots: u64,
    /// Open loop: every call slot of the run (warm-up included); workers past it stop.
    total_slots: u64,
    /// Open loop: one permit per call slot that is due, released by the pacer thread at the slot's
    /// intended time (to within the OS timer's ~50 µs, where tokio's timer would round up to the
    /// next millisecond and add that to every measured latency).
    due_slots: tokio::sync::Semaphore,
    /// Open loop: the next slot; closed loop with --calls: measured calls started.
    tickets: AtomicU64,
    /// Measured calls answered (for the progress line).
    done: AtomicU64,
    /// Measured calls failed (for the progress line).
    failed: AtomicU64,
    /// Whether the progress counters are kept.
    progress: bool,
    /// Set when a worker sees the end, so the others stop taking tickets.
    finished: AtomicBool,
    /// The per-second series of the measured part.
    series: SeriesCollector,
}

/// What one worker counted.
struct WorkerStats {
    /// The latencies of the successful calls, in microseconds.
    histogram: Histogram<u64>,
    /// Successful calls (failed ones are in `errors`).
    calls: u64,
    /// UNDER_LIMIT answers.
    under: u64,
    /// OVER_LIMIT answers.
    over: u64,
    /// Failed calls by kind, and items answered with an error (`item`).
    errors: BTreeMap<String, u64>,
    /// When the last measured call ended.
    last_done: Option<Instant>,
}

impl WorkerStats {
    /// Failed calls: every error but the items'.
    fn failed_calls(&self) -> u64 {
        self.errors
            .iter()
            .filter(|(kind, _)| kind.as_str() != "item")
            .map(|(_, count)| count)
            .sum()
    }

    /// Items answered UNDER_LIMIT or OVER_LIMIT.
    fn decisions(&self) -> u64 {
        self.under + self.over
    }

    fn new() -> Result<Self, BenchError> {
        Ok(Self {
            histogram: new_histogram()?,
            calls: 0,
            under: 0,
            over: 0,
            errors: BTreeMap::new(),
            last_done: None,
        })
    }

    fn error(&mut self, kind: &str, count: u64) {
        match self.errors.get_mut(kind) {
            Some(total) => *total += count,
            None => {
                self.errors.insert(kind.to_string(), count);
            }
        }
    }

    fn merge(&mut self, other: WorkerStats) -> Result<(), BenchError> {
        self.histogram
            .add(&other.histogram)
            .map_err(|error| BenchError::Histogram(format!("{error:?}")))?;
        self.calls += other.calls;
        self.under += other.under;
        self.over += other.over;
        for (kind, count) in other.errors {
            self.error(&kind, count);
        }
        self.last_done = self.last_done.max(other.last_done);
        Ok(())
    }
}

fn new_histogram() -> Result<Histogram<u64>, BenchError> {
    Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
        .map_err(|error| BenchError::Histogram(format!("{error:?}")))
}

/// The latency histograms of the series are coarser than the run's: 2 significant digits (about
/// 1%) and 32-bit counts, so that one second of one worker costs about 10 KB.
const SERIES_SIGNIFICANT_DIGITS: u8 = 2;

/// The points of a time-bound run's series: one per second begun of `time`, at least one.
fn whole_seconds(time: Duration) -> u64 {
    (time.as_secs() + u64::from(time.subsec_nanos() > 0)).max(1)
}

/// What was counted in one second of the measured part, by one worker or by all.
#[derive(Clone)]
struct SecondCounts {
    /// Successful calls.
    calls: u64,
    /// Items answered UNDER_LIMIT or OVER_LIMIT.
    decisions: u64,
    /// Failed calls and items answered with an error.
    errors: u64,
    /// The latencies of the successful calls, in microseconds.
    histogram: Histogram<u32>,
}

impl SecondCounts {
    fn new() -> Result<Self, BenchError> {
        Ok(Self {
            calls: 0,
            decisions: 0,
            errors: 0,
            histogram: Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SERIES_SIGNIFICANT_DIGITS)
                .map_err(|error| BenchError::Histogram(format!("{error:?}")))?,
        })
    }

    fn is_empty(&self) -> bool {
        self.calls == 0 && self.errors == 0
    }

    fn add(&mut self, other: &SecondCounts) -> Result<(), String> {
        self.calls += other.calls;
        self.decisions += other.decisions;
        self.errors += other.errors;
        self.histogram
            .add(&other.histogram)
            .map_err(|error| format!("{error:?}"))
    }

    fn clear(&mut self) {
        self.calls = 0;
        self.decisions = 0;
        self.errors = 0;
        self.histogram.reset();
    }

    /// The point of the second `index` (0 for the first).
    fn point(&self, index: u64) -> SecondPoint {
        let quantile = |q: f64| (self.calls > 0).then(|| self.histogram.value_at_quantile(q));
        SecondPoint {
            t: index + 1,
            calls: self.calls,
            decisions: self.decisions,
            errors: self.errors,
            p50_us: quantile(0.50),
            p99_us: quantile(0.99),
        }
    }
}

/// One point of the `--json` report's `series`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SecondPoint {
    /// The end of the second, in seconds from the start of the measured part (1 for the first).
    t: u64,
    /// Successful calls answered in the second.
    calls: u64,
    /// Their items answered UNDER_LIMIT or OVER_LIMIT.
    decisions: u64,
    /// Failed calls and items answered with an error.
    errors: u64,
    /// The median latency of the successful calls, in microseconds (none without one).
    p50_us: Option<u64>,
    /// Their 99th percentile.
    p99_us: Option<u64>,
}

impl SecondPoint {
    /// An empty second.
    fn empty(index: u64) -> Self {
        Self {
            t: index + 1,
            calls: 0,
            decisions: 0,
            errors: 0,
            p50_us: None,
            p99_us: None,
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "t": self.t,
            "calls": self.calls,
            "decisions": self.decisions,
            "errors": self.errors,
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
        })
    }
}

/// Collects the per-second series from the workers.
///
/// Each worker counts its current second alone and hands it over when it moves on to a later
/// second (or stops). A second is closed, reduced to its point and its histogram dropped, once
/// every worker has moved past it, so memory holds the points plus one merged histogram (about
/// 10 KB) per second still open: usually one or two, more while a worker waits on a slow call
/// (up to `--timeout`) or, in an open loop slower than the workers, for a due slot.
struct SeriesCollector {
    /// A time-bound run's last second: calls answered after it count in it.
    last: Option<u64>,
    inner: std::sync::Mutex<SeriesInner>,
}

struct SeriesInner {
    /// Per worker, the first second it may still add to (`u64::MAX` once it stopped).
    floors: Vec<u64>,
    /// Seconds some worker may still add to.
    open: BTreeMap<u64, SecondCounts>,
    /// The points of the closed seconds.
    closed: BTreeMap<u64, SecondPoint>,
    /// The first histogram merge that failed.
    failure: Option<String>,
}

impl SeriesCollector {
    fn new(workers: usize, seconds: Option<u64>) -> Self {
        Self {
            last: seconds.map(|seconds| seconds.saturating_sub(1)),
            inner: std::sync::Mutex::new(SeriesInner {
                floors: vec![0; workers],
                open: BTreeMap::new(),
                closed: BTreeMap::new(),
                failure: None,
            }),
        }
    }

    /// The second (0 for the first) a measured call answered at `done` counts in.
    fn index(&self, measure_start: Instant, done: Instant) -> u64 {
        let index = done.saturating_duration_since(measure_start).as_secs();
        self.last.map_or(index, |last| index.min(last))
    }

    /// Adds a worker's counts of the second `index`; the worker adds nothing before `floor` from
    /// now on.
    fn hand_over(&self, worker: usize, index: u64, counts: &SecondCounts, floor: u64) {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let inner = &mut *inner;
        if !counts.is_empty() {
            match inner.open.get_mut(&index) {
                Some(open) => {
                    if let Err(error) = open.add(counts) {
                        inner.failure.get_or_insert(error);
                    }
                }
                None => {
                    inner.open.insert(index, counts.clone());
                }
            }
        }
        if let Some(slot) = inner.floors.get_mut(worker) {
            *slot = floor;
        }
        let lowest = inner.floors.iter().copied().min().unwrap_or(u64::MAX);
        while let Some(entry) = inner.open.first_entry() {
            if *entry.key() >= lowest {
                break;
            }
            let (index, counts) = entry.remove_entry();
            inner.closed.insert(index, counts.point(index));
        }
    }

    /// The series, once every worker stopped: one point per second of a time-bound run, or per
    /// second begun of the `seconds` measured.
    fn finish(&self, seconds: f64) -> Result<Vec<SecondPoint>, BenchError> {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(error) = inner.failure.take() {
            return Err(BenchError::Histogram(error));
        }
        let open = std::mem::take(&mut inner.open);
        for (index, counts) in open {
            inner.closed.insert(index, counts.point(index));
        }
        let seen = inner.closed.keys().next_back().map_or(0, |last| last + 1);
        let points = match self.last {
            Some(last) => last + 1,
            None => (seconds.ceil() as u64).max(seen),
        };
        Ok((0..points)
            .map(|index| {
                inner
                    .closed
                    .remove(&index)
                    .unwrap_or_else(|| SecondPoint::empty(index))
            })
            .collect())
    }
}

/// A worker's counts of its current second of the series.
struct WorkerSecond {
    worker: usize,
    index: Option<u64>,
    counts: SecondCounts,
}

impl WorkerSecond {
    fn new(worker: usize) -> Result<Self, BenchError> {
        Ok(Self {
            worker,
            index: None,
            counts: SecondCounts::new()?,
        })
    }

    /// The counts of the second a call answered at `done` counts in, after handing over the
    /// previous second's.
    fn at(&mut self, shared: &Shared, done: Instant) -> &mut SecondCounts {
        let index = shared.series.index(shared.measure_start, done);
        match self.index {
            Some(current) if current == index => {}
            Some(current) => {
                shared
                    .series
                    .hand_over(self.worker, current, &self.counts, index);
                self.counts.clear();
                self.index = Some(index);
            }
            None => self.index = Some(index),
        }
        &mut self.counts
    }

    /// Hands over the last second: the worker stopped.
    fn finish(self, shared: &Shared) {
        let current = self.index.unwrap_or(0);
        shared
            .series
            .hand_over(self.worker, current, &self.counts, u64::MAX);
    }
}

/// The merged result of a run.
struct Outcome {
    stats: WorkerStats,
    seconds: f64,
    /// One point per second of the measured part.
    series: Vec<SecondPoint>,
}

/// Connects, runs the workers (and the progress line) and merges their counts.
async fn drive(args: &BenchArgs, plan: &Plan) -> Result<Outcome, BenchError> {
    let connections = connect(args, plan).await?;
    let start = Instant::now();
    let measure_start = start + args.warmup;
    let warmup_slots = match plan.interval_ns {
        Some(interval) => (args.warmup.as_nanos() as u64).div_ceil(interval),
        None => 0,
    };
    let progress = std::io::stderr().is_terminal();
    let shared = Arc::new(Shared {
        start,
        measure_start,
        measure_end: match plan.stop {
            Stop::After(time) => Some(measure_start + time),
            Stop::Calls(_) => None,
        },
        calls: match plan.stop {
            Stop::Calls(calls) => Some(calls),
            Stop::After(_) => None,
        },
        interval_ns: plan.interval_ns,
        warmup_slots,
        total_slots: match (plan.interval_ns, plan.stop) {
            (None, _) => 0,
            (Some(_), Stop::Calls(calls)) => warmup_slots.saturating_add(calls),
            (Some(interval), Stop::After(time)) => {
                ((args.warmup + time).as_nanos() as u64).div_ceil(interval)
            }
        },
        due_slots: tokio::sync::Semaphore::new(0),
        tickets: AtomicU64::new(0),
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        progress,
        finished: AtomicBool::new(false),
        series: SeriesCollector::new(
            args.concurrency as usize,
            match plan.stop {
                Stop::After(time) => Some(whole_seconds(time)),
                Stop::Calls(_) => None,
            },
        ),
    });
    let template = Arc::new(template(args, plan));
    let progress_task = progress.then(|| tokio::spawn(show_progress(Arc::clone(&shared))));
    if let Some(interval) = plan.interval_ns {
        let shared = Arc::clone(&shared);
        let wake_at_end = args.concurrency as usize;
        std::thread::Builder::new()
            .name("bench-pacer".into())
            .spawn(move || pace(&shared, interval, wake_at_end))
            .map_err(BenchError::Runtime)?;
    }
    let mut workers = Vec::with_capacity(args.concurrency as usize);
    for index in 0..args.concurrency as usize {
        let connection = connections[index % connections.len()].clone();
        let stats = WorkerStats::new()?;
        let second = WorkerSecond::new(index)?;
        workers.push(tokio::spawn(worker(
            index as u64,
            connection,
            Arc::clone(&template),
            Arc::clone(&shared),
            stats,
            second,
        )));
    }
    let mut total = WorkerStats::new()?;
    for handle in workers {
        total.merge(handle.await?)?;
    }
    shared.finished.store(true, Ordering::Relaxed);
    if let Some(task) = progress_task {
        task.await?;
    }
    let end = match shared.measure_end {
        // A time-bound run lasts its time, unless calls were still answered after it.
        Some(end) => total.last_done.map_or(end, |last| last.max(end)),
        None => total.last_done.unwrap_or(measure_start),
    };
    let seconds = end.saturating_duration_since(measure_start).as_secs_f64();
    let series = shared.series.finish(seconds)?;
    Ok(Outcome {
        stats: total,
        seconds,
        series,
    })
}

/// The live progress line (stderr is a terminal): measured calls, their rate and the errors.
async fn show_progress(shared: Arc<Shared>) {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        if shared.finished.load(Ordering::Relaxed) {
            break;
        }
        let now = Instant::now();
        let message = if now < shared.measure_start {
            format!(
                "warming up ({:.1}s left)",
                (shared.measure_start - now).as_secs_f64()
            )
        } else {
            let done = shared.done.load(Ordering::Relaxed);
            let failed = shared.failed.load(Ordering::Relaxed);
            let elapsed = (now - shared.measure_start).as_secs_f64().max(1e-9);
            let goal = match (shared.measure_end, shared.calls) {
                (Some(end), _) => format!(
                    "{elapsed:.1}s of {:.1}s",
                    (end - shared.measure_start).as_secs_f64()
                ),
                (None, Some(calls)) => format!("{elapsed:.1}s, {calls} calls to make"),
                (None, None) => format!("{elapsed:.1}s"),
            };
            format!(
                "{done} calls, {:.0} calls/s, {failed} errors, {goal}",
                done as f64 / elapsed
            )
        };
        bar.set_message(message);
        bar.tick();
    }
    bar.finish_and_clear();
}

/// `--write-body`: one call's message, framed as gRPC frames it (a zero compression flag and the
/// length as 4 big-endian bytes, then the message), written to `path`.
fn write_body(args: &BenchArgs, plan: &Plan, path: &std::path::Path) -> Result<(), BenchError> {
    let request = template(args, plan).request(&mut SplitMix64::new(1));
    let message = match &args.rls_domain {
        Some(domain) => rls_request(domain, request).encode_to_vec(),
        None => request.encode_to_vec(),
    };
    let length = u32::try_from(message.len())
        .map_err(|_| BenchError::Usage("the call is larger than 4 GiB".to_string()))?;
    let mut body = Vec::with_capacity(5 + message.len());
    body.push(0);
    body.extend_from_slice(&length.to_be_bytes());
    body.extend_from_slice(&message);
    std::fs::write(path, body).map_err(BenchError::Output)
}

/// The items of every call: from the arguments and the plan's behaviour bits.
fn template(args: &BenchArgs, plan: &Plan) -> Template {
    Template {
        name: args.name.clone(),
        hits: args.hits,
        limit: args.limit,
        duration: args.limit_duration,
        algorithm: args.algorithm.to_proto() as i32,
        behavior: plan.behavior,
        items: args.items as usize,
        keys: KeyPicker::new(args.keys, args.distribution),
    }
}

/// What every call's items share, and how keys are drawn.
struct Template {
    name: String,
    hits: i64,
    limit: i64,
    duration: i64,
    algorithm: i32,
    behavior: i32,
    items: usize,
    keys: KeyPicker,
}

impl Template {
    /// A call with fresh keys.
    fn request(&self, rng: &mut SplitMix64) -> proto::GetRateLimitsReq {
        let mut requests = Vec::with_capacity(self.items);
        for _ in 0..self.items {
            let mut unique_key = String::with_capacity(12);
            // Writing to a String cannot fail.
            let _ = write!(unique_key, "k{}", self.keys.pick(rng));
            requests.push(proto::RateLimitReq {
                name: self.name.clone(),
                unique_key,
                hits: self.hits,
                limit: self.limit,
                duration: self.duration,
                algorithm: self.algorithm,
                behavior: self.behavior,
                ..Default::default()
            });
        }
        proto::GetRateLimitsReq { requests }
    }
}

/// Draws key indexes, uniformly, with the hot skew, or in order.
#[derive(Debug, Clone)]
struct KeyPicker {
    keys: u64,
    /// With the hot skew: the hot keys are `0..hot`; 0 otherwise.
    hot: u64,
    /// With the sequential order: the next index, shared by every worker.
    next: Option<Arc<AtomicU64>>,
}

impl KeyPicker {
    fn new(keys: u64, distribution: Distribution) -> Self {
        let hot = match distribution {
            Distribution::Uniform | Distribution::Sequential => 0,
            Distribution::Hot => (keys * HOT_KEYS_PERCENT / 100).max(1),
        };
        let next = (distribution == Distribution::Sequential).then(|| Arc::new(AtomicU64::new(0)));
        Self { keys, hot, next }
    }

    /// A key index in `0..keys`: with the hot skew, half of the draws fall in `0..hot` and half in
    /// `hot..keys` (all in `0..hot` when every key is hot); in order, the next index.
    fn pick(&self, rng: &mut SplitMix64) -> u64 {
        if let Some(next) = &self.next {
            return next.fetch_add(1, Ordering::Relaxed) % self.keys;
        }
        let draw = rng.next();
        if self.hot == 0 {
            return below(draw, self.keys);
        }
        let cold = self.keys - self.hot;
        if draw & 1 == 0 || cold == 0 {
            below(draw >> 1, self.hot)
        } else {
            self.hot + below(draw >> 1, cold)
        }
    }
}

/// Maps a random `u64` to `0..bound` (Lemire's multiply-shift, negligible bias).
fn below(draw: u64, bound: u64) -> u64 {
    ((u128::from(draw) * u128::from(bound)) >> 64) as u64
}

/// SplitMix64: a fast, deterministic generator, one per worker.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The answer of one call, as counted.
enum CallResult {
    /// The call succeeded: the answers.
    Answered(proto::GetRateLimitsResp),
    /// The call failed: its kind.
    Failed(String),
}

/// One worker: takes its next call (closed loop) or slot (open loop), sends it and counts it.
async fn worker(
    index: u64,
    mut connection: Connection,
    template: Arc<Template>,
    shared: Arc<Shared>,
    mut stats: WorkerStats,
    mut second: WorkerSecond,
) -> WorkerStats {
    let mut rng = SplitMix64::new(0x5EED_0000_0000_0000 ^ index.wrapping_mul(0x9E37_79B9));
    loop {
        let Some((intended, measured)) = next_send(&shared).await else {
            break;
        };
        let request = template.request(&mut rng);
        let result = call(&mut connection, request).await;
        let done = Instant::now();
        if !measured {
            continue;
        }
        stats.last_done = Some(done);
        let point = second.at(&shared, done);
        match result {
            CallResult::Answered(response) => {
                let micros = done.saturating_duration_since(intended).as_micros();
                let micros = u64::try_from(micros).unwrap_or(HIGHEST_US).max(LOWEST_US);
                stats.histogram.saturating_record(micros);
                let mut item_errors = 0;
                let mut decisions = 0;
                for answer in &response.responses {
                    if !answer.error.is_empty() {
                        item_errors += 1;
                    } else if answer.status == proto::Status::OverLimit as i32 {
                        stats.over += 1;
                        decisions += 1;
                    } else {
                        stats.under += 1;
                        decisions += 1;
                    }
                }
                stats.calls += 1;
                point.calls += 1;
                point.decisions += decisions;
                point.errors += item_errors;
                point.histogram.saturating_record(micros);
                if item_errors > 0 {
                    stats.error("item", item_errors);
                }
                if shared.progress {
                    shared.done.fetch_add(1, Ordering::Relaxed);
                }
            }
            CallResult::Failed(kind) => {
                stats.error(&kind, 1);
                point.errors += 1;
                if shared.progress {
                    shared.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    second.finish(&shared);
    stats
}

/// The intended send time of the worker's next call and whether it is measured, after waiting
/// for it to be due (open loop); `None` when the run is over.
async fn next_send(shared: &Shared) -> Option<(Instant, bool)> {
    if shared.finished.load(Ordering::Relaxed) {
        return None;
    }
    match shared.interval_ns {
        None => {
            let now = Instant::now();
            if now < shared.measure_start {
                return Some((now, false));
            }
            if let Some(end) = shared.measure_end
                && now >= end
            {
                shared.finished.store(true, Ordering::Relaxed);
                return None;
            }
            if let Some(calls) = shared.calls
                && shared.tickets.fetch_add(1, Ordering::Relaxed) >= calls
            {
                shared.finished.store(true, Ordering::Relaxed);
                return None;
            }
            Some((now, true))
        }
        Some(interval) => {
            // Wait for a slot to be due; a closed semaphore cannot happen (it is never closed).
            shared.due_slots.acquire().await.ok()?.forget();
            let slot = shared.tickets.fetch_add(1, Ordering::Relaxed);
            if slot >= shared.total_slots {
                shared.finished.store(true, Ordering::Relaxed);
                return None;
            }
            let intended = shared.start + Duration::from_nanos(slot.saturating_mul(interval));
            // Measured by the slot's time, so the warm-up boundary is the same for every worker.
            let measured = slot >= shared.warmup_slots && intended >= shared.measure_start;
            Some((intended, measured))
        }
    }
}

/// The shortest sleep of the open-loop pacer thread.
const PACER_MIN_SLEEP: Duration = Duration::from_micros(100);

/// Open loop: releases each call slot when it is due, from an OS thread whose sleeps are precise
/// to the kernel's timer slack. Slots that are due while every worker is busy wait as permits, and
/// their latency still counts from the intended time. After the last slot it releases one more
/// permit per worker, so that every worker wakes, sees the end, and stops.
fn pace(shared: &Shared, interval_ns: u64, wake_at_end: usize) {
    let mut released = 0u64;
    while released < shared.total_slots && !shared.finished.load(Ordering::Relaxed) {
        let elapsed = shared.start.elapsed().as_nanos() as u64;
        let due = (elapsed / interval_ns + 1).min(shared.total_slots);
        if due > released {
            shared
                .due_slots
                .add_permits(usize::try_from(due - released).unwrap_or(usize::MAX >> 4));
            released = due;
        }
        // Sleep until the next slot, but never less than PACER_MIN_SLEEP: at high rates slots are
        // released a few at a time rather than by a thread that never sleeps (it shares the cores
        // with the servers being measured). A slot is then released at most that much late, and
        // its latency still counts from its intended time.
        let next = shared.start + Duration::from_nanos(released.saturating_mul(interval_ns));
        let now = Instant::now();
        std::thread::sleep(next.saturating_duration_since(now).max(PACER_MIN_SLEEP));
    }
    shared.due_slots.add_permits(wake_at_end);
}

/// Sends one call.
async fn call(connection: &mut Connection, request: proto::GetRateLimitsReq) -> CallResult {
    match connection {
        Connection::Grpc(client) => match client.get_rate_limits(request).await {
            Ok(response) => CallResult::Answered(response.into_inner()),
            Err(status) => CallResult::Failed(status_kind(&status).to_string()),
        },
        Connection::Rls(client, domain) => rls_call(client, domain, request).await,
        Connection::Http(client, url) => {
            let body = json::encode_get_rate_limits_req(&request);
            let response = match client
                .post(&**url)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await
            {
                Ok(response) => response,
                Err(error) if error.is_timeout() => {
                    return CallResult::Failed("DEADLINE_EXCEEDED".to_string());
                }
                Err(_) => return CallResult::Failed("transport".to_string()),
            };
            let status = response.status();
            let body = match response.bytes().await {
                Ok(body) => body,
                Err(error) if error.is_timeout() => {
                    return CallResult::Failed("DEADLINE_EXCEEDED".to_string());
                }
                Err(_) => return CallResult::Failed("transport".to_string()),
            };
            if !status.is_success() {
                return CallResult::Failed(format!("http_{}", status.as_u16()));
            }
            match json::decode_get_rate_limits_resp(&body) {
                Ok(response) => CallResult::Answered(response),
                Err(_) => CallResult::Failed("decode".to_string()),
            }
        }
    }
}

/// `request`'s items as the descriptors (`key=<unique_key>`) of one `ShouldRateLimit` call of
/// `domain`, with the first item's hits as `hits_addend`.
fn rls_request(domain: &str, request: proto::GetRateLimitsReq) -> RateLimitRequest {
    let hits = request.requests.first().map_or(1, |item| item.hits);
    RateLimitRequest {
        domain: domain.to_string(),
        descriptors: request
            .requests
            .into_iter()
            .map(|item| RateLimitDescriptor {
                entries: vec![Entry {
                    key: "key".to_string(),
                    value: item.unique_key,
                }],
                ..Default::default()
            })
            .collect(),
        hits_addend: u32::try_from(hits).unwrap_or(1),
    }
}

/// One `ShouldRateLimit` call carrying `request`'s items as descriptors (`key=<unique_key>`), its
/// answer read back as a `GetRateLimits` response (OVER_LIMIT descriptors as OVER_LIMIT items).
async fn rls_call(
    client: &mut RateLimitServiceClient<Channel>,
    domain: &str,
    request: proto::GetRateLimitsReq,
) -> CallResult {
    match client.should_rate_limit(rls_request(domain, request)).await {
        Ok(response) => CallResult::Answered(proto::GetRateLimitsResp {
            responses: response
                .into_inner()
                .statuses
                .into_iter()
                .map(|status| proto::RateLimitResp {
                    status: i32::from(status.code == rate_limit_response::Code::OverLimit as i32),
                    limit: status
                        .current_limit
                        .map_or(0, |limit| i64::from(limit.requests_per_unit)),
                    remaining: i64::from(status.limit_remaining),
                    ..Default::default()
                })
                .collect(),
        }),
        Err(status) => CallResult::Failed(status_kind(&status).to_string()),
    }
}

/// The kind of a failed gRPC call: `DEADLINE_EXCEEDED` when `--timeout` expired, `transport` when
/// the client failed (the connection, HTTP/2) and the code's name when the server answered it.
fn status_kind(status: &tonic::Status) -> &'static str {
    let mut source = std::error::Error::source(status);
    if source.is_none() {
        return code_name(status.code());
    }
    while let Some(error) = source {
        if error.is::<tonic::TimeoutExpired>() {
            return "DEADLINE_EXCEEDED";
        }
        source = error.source();
    }
    "transport"
}

/// The canonical gRPC name of a code (`UNAVAILABLE`, `DEADLINE_EXCEEDED`, ...).
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The latency percentiles, in microseconds.
fn percentiles(histogram: &Histogram<u64>) -> [(&'static str, u64); 5] {
    [
        ("p50", histogram.value_at_quantile(0.50)),
        ("p90", histogram.value_at_quantile(0.90)),
        ("p99", histogram.value_at_quantile(0.99)),
        ("p999", histogram.value_at_quantile(0.999)),
        ("max", histogram.max()),
    ]
}

/// `count / seconds`, 0 for an empty run.
fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// The effective options, as the report's `config`.
fn config_json(args: &BenchArgs, plan: &Plan) -> serde_json::Value {
    serde_json::json!({
        "targets": plan.targets,
        "protocol": if args.http { "http" } else if args.rls_domain.is_some() { "rls" } else { "grpc" },
        "connections": plan.connections,
        "concurrency": args.concurrency,
        "items": args.items,
        "keys": args.keys,
        "distribution": match args.distribution {
            Distribution::Uniform => "uniform",
            Distribution::Hot => "hot",
            Distribution::Sequential => "sequential",
        },
        "hits": args.hits,
        "limit": args.limit,
        "duration_ms": args.limit_duration,
        "algorithm": args.algorithm.to_proto().as_str_name(),
        "behavior": plan.behavior,
        "name": args.name,
        "loop": if plan.interval_ns.is_some() { "open" } else { "closed" },
        "rate": args.rate,
        "time": match plan.stop {
            Stop::After(time) => Some(go_duration::format(time)),
            Stop::Calls(_) => None,
        },
        "calls": match plan.stop {
            Stop::Calls(calls) => Some(calls),
            Stop::After(_) => None,
        },
        "warmup": go_duration::format(args.warmup),
        "timeout": go_duration::format(args.timeout),
    })
}

/// The `--json` report.
fn json_report(args: &BenchArgs, plan: &Plan, outcome: &Outcome) -> serde_json::Value {
    let stats = &outcome.stats;
    let latency: serde_json::Map<String, serde_json::Value> = percentiles(&stats.histogram)
        .into_iter()
        .map(|(name, value)| (name.to_string(), value.into()))
        .collect();
    serde_json::json!({
        "calls": stats.calls,
        "decisions": stats.decisions(),
        "seconds": outcome.seconds,
        "calls_per_sec": per_second(stats.calls, outcome.seconds),
        "decisions_per_sec": per_second(stats.decisions(), outcome.seconds),
        "latency_us": latency,
        "errors": stats.errors,
        "under": stats.under,
        "over": stats.over,
        "config": config_json(args, plan),
        "series": outcome.series.iter().map(SecondPoint::json).collect::<Vec<_>>(),
    })
}

/// The text report.
fn write_text_report(
    out: &mut impl Write,
    args: &BenchArgs,
    plan: &Plan,
    outcome: &Outcome,
) -> std::io::Result<()> {
    let stats = &outcome.stats;
    let mode = match args.rate {
        Some(rate) => format!("open loop at {rate} calls/s"),
        None => "closed loop".to_string(),
    };
    writeln!(
        out,
        "{} calls of {} item(s){} in {:.2}s: {mode}, {} in flight over {} {} connection(s) to {}",
        stats.calls,
        args.items,
        match stats.failed_calls() {
            0 => String::new(),
            failed => format!(" (and {failed} failed)"),
        },
        outcome.seconds,
        args.concurrency,
        plan.connections,
        if args.http { "HTTP" } else { "gRPC" },
        plan.targets.join(","),
    )?;
    writeln!(
        out,
        "calls/s      {:.1}",
        per_second(stats.calls, outcome.seconds)
    )?;
    writeln!(
        out,
        "decisions/s  {:.1}",
        per_second(stats.decisions(), outcome.seconds)
    )?;
    let latency = percentiles(&stats.histogram)
        .into_iter()
        .map(|(name, value)| {
            let name = if name == "p999" { "p99.9" } else { name };
            format!("{name} {value}")
        })
        .collect::<Vec<_>>()
        .join("  ");
    writeln!(out, "latency µs   {latency}")?;
    writeln!(
        out,
        "answers      UNDER {}  OVER {}",
        stats.under, stats.over
    )?;
    let errors = if stats.errors.is_empty() {
        "none".to_string()
    } else {
        stats
            .errors
            .iter()
            .map(|(kind, count)| format!("{kind} {count}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    write!(out, "errors       {errors}")
}

/// `error` and its causes, joined by `: `.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `--limit-duration`: a Go duration, in whole milliseconds as the wire takes it.
fn parse_limit_duration(text: &str) -> Result<i64, String> {
    let duration = go_duration::parse(text)?;
    i64::try_from(duration.as_millis()).map_err(|_| format!("duration '{text}' is too long"))
}

/// `--duration` is ambiguous in a load generator, so it only ever explains the two real options.
fn refuse_ambiguous_duration(_: &str) -> Result<i64, String> {
    Err(
        "ringlimit bench has no --duration: use --time for how long to measure, or \
         --limit-duration for the window of the limit"
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_keys_stay_in_range_and_spread() {
        let picker = KeyPicker::new(10, Distribution::Uniform);
        let mut rng = SplitMix64::new(1);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            seen[picker.pick(&mut rng) as usize] += 1;
        }
        assert!(seen.iter().all(|&count| count > 800), "{seen:?}");
    }

    #[test]
    fn hot_keys_take_half_of_the_draws() {
        let picker = KeyPicker::new(10_000, Distribution::Hot);
        let mut rng = SplitMix64::new(7);
        let draws = 100_000;
        let hot = (0..draws).filter(|_| picker.pick(&mut rng) < 100).count();
        assert!((45_000..55_000).contains(&hot), "{hot}");
        let single = KeyPicker::new(1, Distribution::Hot);
        assert!((0..100).all(|_| single.pick(&mut rng) == 0));
    }

    #[test]
    fn sequential_keys_cover_the_space_once_across_clones_then_wrap() {
        let picker = KeyPicker::new(1000, Distribution::Sequential);
        let other_worker = picker.clone();
        let mut rng = SplitMix64::new(7);
        let mut seen: Vec<u64> = (0..500)
            .flat_map(|_| [picker.pick(&mut rng), other_worker.pick(&mut rng)])
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
        assert_eq!(picker.pick(&mut rng), 0);
    }

    #[test]
    fn the_series_closes_seconds_fills_gaps_and_keeps_late_calls_in_the_last() {
        let start = Instant::now();
        let at = |millis: u64| start + Duration::from_millis(millis);
        // Two workers, a 3 s run.
        let series = SeriesCollector::new(2, Some(whole_seconds(Duration::from_millis(2500))));
        assert_eq!(series.index(start, at(999)), 0);
        assert_eq!(series.index(start, at(1000)), 1);
        assert_eq!(series.index(start, at(2600)), 2);
        // A call answered after the run's time counts in its last second.
        assert_eq!(series.index(start, at(9000)), 2);

        let mut one = SecondCounts::new().expect("histogram");
        one.calls = 3;
        one.decisions = 6;
        one.histogram.saturating_record(100);
        one.histogram.saturating_record(100);
        one.histogram.saturating_record(10_000);
        // Worker 0 moves to second 2: second 0 stays open while worker 1 may still add to it.
        series.hand_over(0, 0, &one, 2);
        {
            let inner = series.inner.lock().expect("lock");
            assert!(inner.closed.is_empty());
            assert_eq!(inner.open.len(), 1);
        }
        let mut two = SecondCounts::new().expect("histogram");
        two.errors = 1;
        series.hand_over(1, 0, &two, 1);
        {
            let inner = series.inner.lock().expect("lock");
            assert_eq!(inner.open.len(), 0);
            assert_eq!(inner.closed.len(), 1);
        }
        series.hand_over(0, 2, &one, u64::MAX);
        series.hand_over(1, 1, &SecondCounts::new().expect("histogram"), u64::MAX);
        let points = series.finish(2.6).expect("points");
        assert_eq!(points.len(), 3);
        assert_eq!(
            points[0],
            SecondPoint {
                t: 1,
                calls: 3,
                decisions: 6,
                errors: 1,
                p50_us: Some(100),
                p99_us: Some(points[0].p99_us.expect("p99")),
            }
        );
        assert!((9_900..=10_100).contains(&points[0].p99_us.expect("p99")));
        // The second without an answer is there, empty.
        assert_eq!(points[1], SecondPoint::empty(1));
        assert_eq!(points[2].calls, 3);
        assert_eq!(points[2].t, 3);

        // A run by count: a point per second begun.
        let series = SeriesCollector::new(1, None);
        series.hand_over(0, 1, &one, u64::MAX);
        let points = series.finish(1.2).expect("points");
        assert_eq!(points.len(), 2);
        assert_eq!(points[0], SecondPoint::empty(0));
        assert_eq!(whole_seconds(Duration::from_secs(3)), 3);
        assert_eq!(whole_seconds(Duration::from_millis(10)), 1);
    }

    #[test]
    fn targets_become_http_uris() {
        assert_eq!(
            target_uri("127.0.0.1:1051").ok(),
            Some("http://127.0.0.1:1051".into())
        );
        assert_eq!(
            target_uri("http://127.0.0.1:1050/").ok(),
            Some("http://127.0.0.1:1050".into())
        );
        assert!(target_uri("nowhere").is_err());
        assert!(target_uri("https://x:1").is_err());
    }
}
