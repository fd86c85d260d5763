//! `ringlimit healthcheck`: asks a node's HTTP gateway `GET /v1/HealthCheck` and turns the answer
//! into an exit code, for container `HEALTHCHECK` instructions and Kubernetes exec probes.
//!
//! The request is made with a minimal HTTP/1.1 client over a plain TCP connection (one request,
//! `Connection: close`, read to the end), so the binary needs no HTTP client library; the whole
//! exchange is bounded by `--timeout`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use ringlimit::config::go_duration;
use ringlimit::http::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest answer read; a health answer is a few hundred bytes.
const MAX_RESPONSE_BYTES: u64 = 1024 * 1024;

/// Arguments of `ringlimit healthcheck`.
#[derive(Debug, Args)]
#[command(after_help = "\
Exit status: 0 when the node answers HTTP 200 with status \"healthy\"; 2 when it answers but is
unhealthy (HTTP 503, or a status other than \"healthy\"); 1 on any error (connection refused,
timeout, an unexpected answer). One line is printed: `healthy: 3 peers`, `unhealthy: <message>`
or `error: <reason>`. A node of an etcd or DNS cluster that serves alone because it cannot reach
its discovery backend is unhealthy (exit 2) unless it runs with GUBER_SERVE_ALONE_HEALTHY=true.

The URL defaults to http://$GUBER_HTTP_ADDRESS, so inside a node's container, with the node's own
environment, no flag is needed. A bare HOST:PORT is accepted; a wildcard listen address (0.0.0.0
or [::]) is reached through the loopback interface.

Examples:
  ringlimit healthcheck
  ringlimit healthcheck --url http://10.0.0.2:1050 --timeout 500ms
  HEALTHCHECK CMD [\"ringlimit\", \"healthcheck\"]            (Dockerfile)
  livenessProbe: {exec: {command: [ringlimit, healthcheck]}}   (Kubernetes)")]
pub struct HealthcheckArgs {
    /// The node's HTTP gateway: `http://HOST:PORT`, `https://HOST:PORT` or `HOST:PORT`.
    #[arg(
        long,
        env = "GUBER_HTTP_ADDRESS",
        default_value = "http://127.0.0.1:1050",
        value_name = "URL"
    )]
    url: String,

    /// How long the whole check may take (Go syntax: `2s`, `500ms`).
    #[arg(long, default_value = "2s", value_parser = go_duration::parse, value_name = "DURATION")]
    timeout: Duration,

    /// TLS to the gateway (an `https://` URL or any --tls-* option turns it on).
    #[command(flatten)]
    tls: ringlimit::config::client_tls_args::ClientTlsArgs,
}

/// Why a health check could not be completed (exit status 1).
#[derive(Debug, thiserror::Error)]
enum HealthcheckError {
    /// The URL is not `http://HOST:PORT[/]` or `HOST:PORT`.
    #[error("invalid URL '{0}': expected http://HOST:PORT, https://HOST:PORT or HOST:PORT")]
    InvalidUrl(String),
    /// The async runtime could not be built.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// The TLS options are unusable.
    #[error("{0}")]
    Tls(String),
    /// The connection or the exchange failed.
    #[error("{address}: {source}")]
    Io {
        /// The address contacted.
        address: String,
        /// The failure.
        source: std::io::Error,
    },
    /// No complete answer within the timeout.
    #[error("no answer from {address} within {timeout}")]
    Timeout {
        /// The address contacted.
        address: String,
        /// The timeout, in Go syntax.
        timeout: String,
    },
    /// The answer is not a well-formed HTTP/1.x response.
    #[error("malformed HTTP answer: {0}")]
    Malformed(String),
    /// The answer has a status other than 200 and 503.
    #[error("unexpected HTTP status {status}: {body}")]
    UnexpectedStatus {
        /// The HTTP status code.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// A 200 answer whose body is not a HealthCheckResp.
    #[error("unreadable HealthCheck answer: {0}")]
    BadBody(String),
}

/// What the node said.
#[derive(Debug, PartialEq, Eq)]
enum Health {
    /// Healthy, with this many peers.
    Healthy(i32),
    /// Unhealthy, with the node's message.
    Unhealthy(String),
}

/// Runs `ringlimit healthcheck`: 0 healthy, 2 unhealthy, 1 error.
pub fn run(args: HealthcheckArgs) -> ExitCode {
    match check(&args) {
        Ok(Health::Healthy(peers)) => {
            let plural = if peers == 1 { "" } else { "s" };
            println!("healthy: {peers} peer{plural}");
            ExitCode::SUCCESS
        }
        Ok(Health::Unhealthy(message)) => {
            println!("unhealthy: {message}");
            ExitCode::from(2)
        }
        Err(error) => {
            println!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn check(args: &HealthcheckArgs) -> Result<Health, HealthcheckError> {
    let url = args.url.trim();
    let https = url.starts_with("https://");
    let address = authority(&url.replacen("https://", "http://", 1))?;
    let tls = match args.tls.client_config(&[b"http/1.1"]) {
        Ok(Some(config)) => {
            let host = address
                .rsplit_once(':')
                .map_or(address.as_str(), |(host, _)| host);
            Some((std::sync::Arc::new(config), args.tls.server_name_for(host)))
        }
        Ok(None) if https => {
            return Err(HealthcheckError::Tls(
                "an https:// URL needs --tls-ca (or --tls-insecure-skip-verify)".into(),
            ));
        }
        Ok(None) => None,
        Err(error) => return Err(HealthcheckError::Tls(error.to_string())),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(HealthcheckError::Runtime)?;
    let (status, body) = runtime.block_on(async {
        tokio::time::timeout(args.timeout, fetch(&address, tls))
            .await
            .unwrap_or_else(|_| {
                Err(HealthcheckError::Timeout {
                    address: address.clone(),
                    timeout: go_duration::format(args.timeout),
                })
            })
    })?;
    interpret(status, &body)
}

/// `HOST:PORT` from `http://HOST:PORT[/]` or `HOST:PORT`, with a wildcard host replaced by the
/// loopback address of the same family.
fn authority(url: &str) -> Result<String, HealthcheckError> {
    let invalid = || HealthcheckError::InvalidUrl(url.to_string());
    let trimmed = url.trim();
    if trimmed.starts_with("https://") {
        // `check` turns https:// into TLS and passes the http:// form here.
        return Err(invalid());
    }
    let rest = trimmed.strip_prefix("http://").unwrap_or(trimmed);
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains(['/', '?', '#', ' ', '@']) {
        return Err(invalid());
    }
    let (host, port) = rest.rsplit_once(':').ok_or_else(invalid)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(invalid());
    }
    let host = match host {
        "0.0.0.0" => "127.0.0.1",
        "[::]" => "[::1]",
        other => other,
    };
    Ok(format!("{host}:{port}"))
}

/// One `GET /v1/HealthCheck` over a fresh connection (TLS with `tls`'s configuration and server
/// name): the status code and the (de-chunked) body.
async fn fetch(
    address: &str,
    tls: Option<(std::sync::Arc<rustls::ClientConfig>, String)>,
) -> Result<(u16, Vec<u8>), HealthcheckError> {
    let io_error = |source| HealthcheckError::Io {
        address: address.to_string(),
        source,
    };
    let stream = TcpStream::connect(address).await.map_err(io_error)?;
    match tls {
        Some((config, name)) => {
            let name = rustls_pki_types::ServerName::try_from(name.clone()).map_err(|error| {
                HealthcheckError::Tls(format!("invalid TLS server name '{name}': {error}"))
            })?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, stream)
                .await
                .map_err(io_error)?;
            exchange(stream, address).await
        }
        None => exchange(stream, address).await,
    }
}

/// Sends the request on `stream` and reads the whole answer.
async fn exchange(
    mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    address: &str,
) -> Result<(u16, Vec<u8>), HealthcheckError> {
    let io_error = |source| HealthcheckError::Io {
        address: address.to_string(),
        source,
    };
    let request = format!(
        "GET /v1/HealthCheck HTTP/1.1\r\nHost: {address}\r\nAccept: application/json\r\n\
         User-Agent: ringlimit-healthcheck\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(io_error)?;
    let mut raw = Vec::new();
    stream
        .take(MAX_RESPONSE_BYTES)
        .read_to_end(&mut raw)
        .await
        .map_err(io_error)?;
    parse_response(&raw)
}

/// Splits an HTTP/1.x response into its status code and body, decoding a chunked body.
fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), HealthcheckError> {
    let malformed = |what: &str| HealthcheckError::Malformed(what.to_string());
    let end = find(raw, b"\r\n\r\n").ok_or_else(|| malformed("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| malformed("headers are not UTF-8"))?;
    let body = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(malformed(&format!("status line {status_line:?}")));
    }
    let status = parts
        .next()
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| malformed(&format!("status line {status_line:?}")))?;
    let chunked = lines.any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("transfer-encoding")
                && value.to_ascii_lowercase().contains("chunked")
        })
    });
    let body = if chunked {
        dechunk(body).ok_or_else(|| malformed("bad chunked body"))?
    } else {
        body.to_vec()
    };
    Ok((status, body))
}

/// The payload of a `Transfer-Encoding: chunked` body, or `None` if it is malformed.
fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find(body, b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// The verdict on an answer.
fn interpret(status: u16, body: &[u8]) -> Result<Health, HealthcheckError> {
    match status {
        200 => {
            let health = json::decode_health_check_resp(body)
                .map_err(|error| HealthcheckError::BadBody(error.to_string()))?;
            if health.status == "healthy" {
                Ok(Health::Healthy(health.peer_count))
            } else if health.message.is_empty() {
                Ok(Health::Unhealthy(format!("status {:?}", health.status)))
            } else {
                Ok(Health::Unhealthy(health.message))
            }
        }
        503 => {
            // The google.rpc.Status error body; fall back to the raw text.
            let message = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|value| value.get("message")?.as_str().map(str::to_string))
                .unwrap_or_else(|| snippet(body));
            Ok(Health::Unhealthy(message))
        }
        status => Err(HealthcheckError::UnexpectedStatus {
            status,
            body: snippet(body),
        }),
    }
}

/// The first line of `body`, at most 200 characters.
fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_bare_addresses_give_the_authority() {
        let ok = |url: &str| authority(url).ok();
        assert_eq!(ok("http://127.0.0.1:1050"), Some("127.0.0.1:1050".into()));
        assert_eq!(ok("http://localhost:1050/"), Some("localhost:1050".into()));
        assert_eq!(ok("10.0.0.1:1050"), Some("10.0.0.1:1050".into()));
        assert_eq!(ok("0.0.0.0:1050"), Some("127.0.0.1:1050".into()));
        assert_eq!(ok("[::]:1050"), Some("[::1]:1050".into()));
        assert!(authority("localhost").is_err());
        assert!(authority("https://x:1").is_err());
        assert!(authority("http://x:1/v1/HealthCheck").is_err());
    }

    #[test]
    fn responses_are_split_and_dechunked() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_response(raw).ok(), Some((200, b"{}".to_vec())));
        let raw = b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n\
                    3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(raw).ok(), Some((503, b"abcde".to_vec())));
        assert!(parse_response(b"").is_err());
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
    }

    #[test]
    fn answers_are_judged() {
        let healthy = br#"{"status":"healthy","message":"","peer_count":3,"advertise_address":"A","local_peers":[],"region_peers":[]}"#;
        assert_eq!(interpret(200, healthy).ok(), Some(Health::Healthy(3)));
        let unhealthy =
            br#"{"code":14,"message":"this instance is not found in the peer list","details":[]}"#;
        assert_eq!(
            interpret(503, unhealthy).ok(),
            Some(Health::Unhealthy(
                "this instance is not found in the peer list".into()
            ))
        );
        let odd = br#"{"status":"unhealthy","message":"peer 10.0.0.2 failed"}"#;
        assert_eq!(
            interpret(200, odd).ok(),
            Some(Health::Unhealthy("peer 10.0.0.2 failed".into()))
        );
        assert!(interpret(404, b"not found").is_err());
        assert!(interpret(200, b"<html>").is_err());
    }
}
