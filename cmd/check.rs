//! `ringlimit check`: sends rate-limit requests to a node over gRPC (`pb.gubernator.V1/GetRateLimits`)
//! and prints the answers, one line per item, or as the HTTP gateway's JSON.
//!
//! The request is built from flags (one item per `--key`) or read from a file or standard input in
//! the gateway's JSON form (`--request-json`). Exit status: 0 when the call succeeded (whatever
//! the items' status), 1 when it failed (the gRPC status is printed), 2 for bad arguments.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use ringlimit::config::go_duration;
use ringlimit::http::json;
use ringlimit::proto::{self, v1_client::V1Client};
use tonic::transport::{Channel, Endpoint};

/// Arguments of `ringlimit check`.
#[derive(Debug, Args)]
#[command(after_help = "\
Each --key is one item of the call, all with the same --name, --hits, --limit, --duration,
--algorithm, --behavior and --burst. Instead of these flags, --request-json reads a whole
GetRateLimitsReq in the HTTP gateway's JSON ({\"requests\":[{\"name\":...,\"unique_key\":...}]})
from a file, or from standard input with `-`.

Output: one line per answer,
  <name>_<key>: UNDER_LIMIT remaining 9/10 reset in 59.8s [owner 10.0.0.2:1051]
(the owner is shown when the answering node forwarded the item), or `<name>_<key>: error: ...`
for an item the node refused. With --json, each call's response is printed on one line exactly as
`POST /v1/GetRateLimits` would answer it.

Exit status: 0 when the call succeeded (even if items are OVER_LIMIT or have errors), 1 when the
call failed (the gRPC status is printed), 2 for bad arguments.

Examples:
  ringlimit check --name requests_per_sec --key account:42 --limit 10 --duration 1m
  ringlimit check --address 10.0.0.2:1051 --name api --key a --key b --hits 0 --limit 100 --duration 1h
  ringlimit check --name api --key a --limit 60 --duration 0 --behavior duration-is-gregorian,global
  ringlimit check --name api --key a --limit 5 --duration 10s --count 6
  echo '{\"requests\":[{\"name\":\"api\",\"unique_key\":\"a\",\"hits\":1,\"limit\":10,\"duration\":60000}]}' \\
    | ringlimit check --request-json - --json")]
pub struct CheckArgs {
    /// The node's gRPC address: `HOST:PORT` or `http://HOST:PORT`.
    #[arg(
        long,
        env = "GUBER_GRPC_ADDRESS",
        default_value = "localhost:1051",
        value_name = "HOST:PORT"
    )]
    address: String,

    /// The rate limit's name (namespace) of every item.
    #[arg(long, required_unless_present = "request_json")]
    name: Option<String>,

    /// A unique key; repeat for several items in one call.
    #[arg(
        long = "key",
        value_name = "KEY",
        required_unless_present = "request_json"
    )]
    keys: Vec<String>,

    /// Hits to take (0 only queries; negative hits give tokens back).
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    hits: i64,

    /// The limit: requests per duration (token bucket) or the bucket size (leaky bucket).
    #[arg(
        long,
        required_unless_present = "request_json",
        allow_negative_numbers = true
    )]
    limit: Option<i64>,

    /// The window, with a unit as the server's settings take it (`1m`, `500ms`, `1h30m`); with
    /// `duration-is-gregorian`, the interval number (0 minute, 1 hour, 2 day, 3 week, 4 month,
    /// 5 year). A bare number without that behaviour is refused: `1` would silently mean 1 ms.
    #[arg(
        long,
        value_parser = parse_duration_ms,
        required_unless_present = "request_json",
        value_name = "DURATION"
    )]
    duration: Option<DurationArg>,

    /// The algorithm.
    #[arg(long, value_enum, default_value = "token", ignore_case = true)]
    algorithm: AlgorithmArg,

    /// Behaviour flags, repeatable or comma-separated: `batching`, `no-batching`, `global`,
    /// `duration-is-gregorian`, `reset-remaining`, `multi-region`, `drain-over-limit`, or a number;
    /// they are combined.
    #[arg(
        long = "behavior",
        alias = "behaviour",
        value_parser = parse_behavior,
        value_delimiter = ',',
        value_name = "BEHAVIOR"
    )]
    behaviors: Vec<i32>,

    /// The leaky bucket's burst (0: the limit).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    burst: i64,

    /// Send the same call N times, printing each answer.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    count: u32,

    /// Read the whole GetRateLimitsReq as JSON (the HTTP gateway's form) from FILE, or `-` for
    /// standard input, instead of building it from flags.
    #[arg(
        long,
        value_name = "FILE|-",
        conflicts_with_all = ["name", "keys", "hits", "limit", "duration", "algorithm", "behaviors", "burst"]
    )]
    request_json: Option<String>,

    /// Print each response as the HTTP gateway's JSON, one line per call.
    #[arg(long)]
    json: bool,

    /// How long connecting, and then each call, may take (Go syntax).
    #[arg(long, default_value = "5s", value_parser = go_duration::parse, value_name = "DURATION")]
    timeout: Duration,

    /// TLS to the node (any --tls-* option turns it on).
    #[command(flatten)]
    tls: ringlimit::config::client_tls_args::ClientTlsArgs,
}

/// `--algorithm` (shared by `check` and `bench`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum AlgorithmArg {
    /// TOKEN_BUCKET (0).
    #[value(alias = "token-bucket", alias = "token_bucket", alias = "0")]
    Token,
    /// LEAKY_BUCKET (1).
    #[value(alias = "leaky-bucket", alias = "leaky_bucket", alias = "1")]
    Leaky,
}

impl AlgorithmArg {
    /// The wire algorithm.
    pub(crate) fn to_proto(self) -> proto::Algorithm {
        match self {
            Self::Token => proto::Algorithm::TokenBucket,
            Self::Leaky => proto::Algorithm::LeakyBucket,
        }
    }
}

/// Why `ringlimit check` failed.
#[derive(Debug, thiserror::Error)]
enum CheckError {
    /// The arguments or the request JSON are unusable (exit status 2).
    #[error("{0}")]
    Usage(String),
    /// The async runtime could not be built.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// No connection to the node.
    #[error("cannot connect to {address}: {reason}")]
    Connect {
        /// The address contacted.
        address: String,
        /// What went wrong, with its causes.
        reason: String,
    },
    /// The call failed with a gRPC status.
    #[error("GetRateLimits failed: {code:?} ({number}): {message}")]
    Call {
        /// The gRPC code.
        code: tonic::Code,
        /// The gRPC code as its number.
        number: i32,
        /// The status message.
        message: String,
    },
    /// The answers could not be written.
    #[error("cannot write the answers: {0}")]
    Output(std::io::Error),
}

impl CheckError {
    fn exit_code(&self) -> ExitCode {
        match self {
            Self::Usage(_) => ExitCode::from(2),
            _ => ExitCode::FAILURE,
        }
    }
}

/// Runs `ringlimit check`.
pub fn run(args: CheckArgs) -> ExitCode {
    match check(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CheckError::Output(error)) if error.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            error.exit_code()
        }
    }
}

fn check(args: &CheckArgs) -> Result<(), CheckError> {
    let request = build_request(args)?;
    let uri = endpoint_uri(&args.address)?;
    let tls = args
        .tls
        .grpc_connector()
        .map_err(|error| CheckError::Usage(error.to_string()))?;
    let endpoint = Endpoint::from_shared(uri.clone())
        .map_err(|error| {
            CheckError::Usage(format!("invalid --address '{}': {error}", args.address))
        })?
        .connect_timeout(args.timeout)
        .timeout(args.timeout);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CheckError::Runtime)?;
    runtime.block_on(async {
        let connect_error = |reason: String| CheckError::Connect {
            address: uri.clone(),
            reason,
        };
        let connect = async {
            match tls {
                Some(tls) => endpoint.connect_with_connector(tls).await,
                None => endpoint.connect().await,
            }
        };
        let channel = tokio::time::timeout(args.timeout, connect)
            .await
            .map_err(|_| {
                connect_error(format!(
                    "timed out after {}",
                    go_duration::format(args.timeout)
                ))
            })?
            .map_err(|error| connect_error(error_chain(&error)))?;
        let mut client = V1Client::new(channel);
        let mut out = std::io::stdout().lock();
        for _ in 0..args.count {
            let response = call(&mut client, &request).await?;
            print_response(&mut out, &request, &response, args.json).map_err(CheckError::Output)?;
        }
        out.flush().map_err(CheckError::Output)
    })
}

/// One GetRateLimits call.
async fn call(
    client: &mut V1Client<Channel>,
    request: &proto::GetRateLimitsReq,
) -> Result<proto::GetRateLimitsResp, CheckError> {
    client
        .get_rate_limits(request.clone())
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| CheckError::Call {
            code: status.code(),
            number: status.code() as i32,
            message: status.message().to_string(),
        })
}

/// The request: from `--request-json`, or one item per `--key`.
fn build_request(args: &CheckArgs) -> Result<proto::GetRateLimitsReq, CheckError> {
    if let Some(source) = &args.request_json {
        let body = read_source(source)?;
        let request = json::decode_get_rate_limits_req(&body)
            .map_err(|error| CheckError::Usage(format!("invalid request JSON: {error}")))?;
        if request.requests.is_empty() {
            return Err(CheckError::Usage(
                "the request JSON holds no requests".to_string(),
            ));
        }
        return Ok(request);
    }
    let missing = |flag: &str| CheckError::Usage(format!("{flag} is required"));
    let name = args.name.clone().ok_or_else(|| missing("--name"))?;
    let limit = args.limit.ok_or_else(|| missing("--limit"))?;
    let duration = args.duration.ok_or_else(|| missing("--duration"))?;
    if name.is_empty() {
        return Err(CheckError::Usage("--name cannot be empty".to_string()));
    }
    if args.keys.is_empty() {
        return Err(missing("--key"));
    }
    if let Some(position) = args.keys.iter().position(String::is_empty) {
        return Err(CheckError::Usage(format!(
            "--key number {} is empty",
            position + 1
        )));
    }
    if limit < 0 {
        return Err(CheckError::Usage("--limit cannot be negative".to_string()));
    }
    if args.burst < 0 {
        return Err(CheckError::Usage("--burst cannot be negative".to_string()));
    }
    let behavior = args.behaviors.iter().fold(0, |all, bits| all | bits);
    let gregorian = behavior & proto::Behavior::DurationIsGregorian as i32 != 0;
    let duration = duration.millis_or_interval(gregorian)?;
    let requests = args
        .keys
        .iter()
        .map(|key| proto::RateLimitReq {
            name: name.clone(),
            unique_key: key.clone(),
            hits: args.hits,
            limit,
            duration,
            algorithm: args.algorithm.to_proto() as i32,
            behavior,
            burst: args.burst,
            ..Default::default()
        })
        .collect();
    Ok(proto::GetRateLimitsReq { requests })
}

/// The bytes of `source`: a file, or standard input for `-`.
fn read_source(source: &str) -> Result<Vec<u8>, CheckError> {
    let mut body = Vec::new();
    let read = if source == "-" {
        std::io::stdin().lock().read_to_end(&mut body).map(|_| ())
    } else {
        std::fs::read(source).map(|bytes| body = bytes)
    };
    read.map_err(|error| {
        let from = if source == "-" {
            "standard input".to_string()
        } else {
            format!("'{source}'")
        };
        CheckError::Usage(format!("cannot read the request JSON from {from}: {error}"))
    })?;
    Ok(body)
}

/// `http://HOST:PORT` for an `--address` value.
fn endpoint_uri(address: &str) -> Result<String, CheckError> {
    crate::address::http_uri(address).ok_or_else(|| {
        CheckError::Usage(format!(
            "invalid --address '{address}': expected HOST:PORT or http://HOST:PORT"
        ))
    })
}

/// Writes the answers of one call.
fn print_response(
    out: &mut impl Write,
    request: &proto::GetRateLimitsReq,
    response: &proto::GetRateLimitsResp,
    as_json: bool,
) -> std::io::Result<()> {
    if as_json {
        out.write_all(&json::encode_get_rate_limits_resp(response))?;
        return writeln!(out);
    }
    let now = now_ms();
    for (index, answer) in response.responses.iter().enumerate() {
        let label = match request.requests.get(index) {
            Some(item) => format!("{}_{}", item.name, item.unique_key),
            None => format!("item {index}"),
        };
        writeln!(out, "{label}: {}", describe(answer, now))?;
    }
    Ok(())
}

/// One answer as text: `UNDER_LIMIT remaining 9/10 reset in 59.8s [owner 10.0.0.2:1051]` or
/// `error: <message>`.
fn describe(answer: &proto::RateLimitResp, now_ms: i64) -> String {
    if !answer.error.is_empty() {
        return format!("error: {}", answer.error);
    }
    let status = proto::Status::try_from(answer.status)
        .map(|status| status.as_str_name().to_string())
        .unwrap_or_else(|_| format!("STATUS_{}", answer.status));
    let mut line = format!("{status} remaining {}/{}", answer.remaining, answer.limit);
    if answer.reset_time != 0 {
        let until = answer.reset_time.saturating_sub(now_ms);
        if until > 0 {
            line.push_str(&format!(" reset in {:.1}s", until as f64 / 1000.0));
        } else {
            line.push_str(" reset now");
        }
    }
    if let Some(owner) = answer.metadata.get("owner") {
        line.push_str(&format!(" [owner {owner}]"));
    }
    line
}

/// Parses `--duration`: whole milliseconds, or a Go duration.
/// `--duration` as written: with a unit, or a bare number (only meaningful as a Gregorian
/// interval, so it is checked against the behaviour once all flags are read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DurationArg {
    /// A duration with a unit, in milliseconds.
    Millis(i64),
    /// A number without a unit.
    Bare(i64),
}

impl DurationArg {
    /// The wire's `duration`: milliseconds, or with `duration-is-gregorian` the interval number.
    fn millis_or_interval(self, gregorian: bool) -> Result<i64, CheckError> {
        match (self, gregorian) {
            (Self::Millis(millis), _) => Ok(millis),
            (Self::Bare(interval), true) => Ok(interval),
            (Self::Bare(number), false) => Err(CheckError::Usage(format!(
                "--duration {number} has no unit: write {number}ms, {number}s or {number}m (a bare \
                 number is the interval with --behavior duration-is-gregorian)"
            ))),
        }
    }
}

fn parse_duration_ms(text: &str) -> Result<DurationArg, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) {
        return text
            .parse::<i64>()
            .map(DurationArg::Bare)
            .map_err(|error| format!("'{text}' is not a number: {error}"));
    }
    let duration = go_duration::parse(text)?;
    i64::try_from(duration.as_millis())
        .map(DurationArg::Millis)
        .map_err(|_| format!("duration '{text}' is too long"))
}

/// Parses one `--behavior` value: a name (any case, `-` or `_`) or a non-negative number.
pub(crate) fn parse_behavior(text: &str) -> Result<i32, String> {
    let normalized = text.trim().to_ascii_lowercase().replace('_', "-");
    let bits = match normalized.as_str() {
        "batching" => proto::Behavior::Batching as i32,
        "no-batching" => proto::Behavior::NoBatching as i32,
        "global" => proto::Behavior::Global as i32,
        "duration-is-gregorian" | "gregorian" => proto::Behavior::DurationIsGregorian as i32,
        "reset-remaining" => proto::Behavior::ResetRemaining as i32,
        "multi-region" => proto::Behavior::MultiRegion as i32,
        "drain-over-limit" => proto::Behavior::DrainOverLimit as i32,
        other => match other.parse::<i32>() {
            Ok(number) if number >= 0 => number,
            _ => {
                return Err(format!(
                    "'{text}' is not a behaviour: expected batching, no-batching, global, \
                     duration-is-gregorian, reset-remaining, multi-region, drain-over-limit or a \
                     non-negative number"
                ));
            }
        },
    };
    Ok(bits)
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

/// The current time in epoch milliseconds.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit_unless_gregorian() {
        assert_eq!(parse_duration_ms("1m"), Ok(DurationArg::Millis(60_000)));
        assert_eq!(parse_duration_ms("1.5s"), Ok(DurationArg::Millis(1_500)));
        assert_eq!(parse_duration_ms("0"), Ok(DurationArg::Bare(0)));
        assert!(parse_duration_ms("soon").is_err());
        assert!(parse_duration_ms("-5").is_err());
        let bare = parse_duration_ms("1").expect("a number parses");
        assert_eq!(bare.millis_or_interval(true).ok(), Some(1));
        let error = bare
            .millis_or_interval(false)
            .expect_err("1 without a unit");
        assert!(
            error.to_string().contains("--duration 1 has no unit"),
            "{error}"
        );
        assert_eq!(
            DurationArg::Millis(1_000).millis_or_interval(false).ok(),
            Some(1_000)
        );
    }

    #[test]
    fn behaviours_are_names_or_numbers() {
        assert_eq!(parse_behavior("global"), Ok(2));
        assert_eq!(parse_behavior("NO_BATCHING"), Ok(1));
        assert_eq!(parse_behavior("Drain-Over-Limit"), Ok(32));
        assert_eq!(parse_behavior("6"), Ok(6));
        assert!(parse_behavior("sometimes").is_err());
        assert!(parse_behavior("-1").is_err());
    }

    #[test]
    fn addresses_become_http_uris() {
        assert_eq!(
            endpoint_uri("localhost:1051").ok(),
            Some("http://localhost:1051".into())
        );
        assert_eq!(
            endpoint_uri("http://10.0.0.1:1051/").ok(),
            Some("http://10.0.0.1:1051".into())
        );
        assert_eq!(
            endpoint_uri("0.0.0.0:1051").ok(),
            Some("http://127.0.0.1:1051".into())
        );
        assert!(endpoint_uri("localhost").is_err());
        assert!(endpoint_uri("ftp://x:1").is_err());
    }

    #[test]
    fn answers_read_as_one_line() {
        let mut answer = proto::RateLimitResp {
            status: proto::Status::UnderLimit as i32,
            limit: 10,
            remaining: 9,
            reset_time: 1_000 + 59_800,
            ..Default::default()
        };
        answer
            .metadata
            .insert("owner".into(), "10.0.0.2:1051".into());
        assert_eq!(
            describe(&answer, 1_000),
            "UNDER_LIMIT remaining 9/10 reset in 59.8s [owner 10.0.0.2:1051]"
        );
        let refused = proto::RateLimitResp {
            error: "field 'unique_key' cannot be empty".into(),
            ..Default::default()
        };
        assert_eq!(
            describe(&refused, 0),
            "error: field 'unique_key' cannot be empty"
        );
    }
}
