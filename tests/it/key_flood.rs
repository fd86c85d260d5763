//! Memory stays bounded under a flood of distinct keys: 5,000,000 distinct keys in 1000-item calls
//! against a real `ringlimit` process with a small `GUBER_CACHE_SIZE`. The store's entry count
//! (`gubernator_cache_size`, brought up to date at each scrape) never exceeds the bound, and the
//! process's resident memory (`VmRSS` in `/proc/<pid>/status`) stays under a fixed ceiling.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringlimit::proto::{self, v1_client::V1Client};

/// Distinct keys sent in all.
const KEYS: u64 = 5_000_000;
/// Items per call (the API's maximum).
const PER_CALL: u64 = 1000;
/// `GUBER_CACHE_SIZE` of the flooded node.
const CACHE_SIZE: u64 = 10_000;
/// The resident memory the process must stay under, in KiB (a debug build idles at about 20 MiB).
const RSS_CEILING_KIB: u64 = 256 * 1024;
/// Concurrent callers.
const CALLERS: u64 = 2;
/// How often (in calls per caller) the cache size and memory are sampled.
const SAMPLE_EVERY: u64 = 50;
/// A safety bound, not a speed goal: the flood takes about 350 s of wall time on a 2-core machine
/// loaded by other builds (about 200 s of CPU for client and node together, debug build).
const TIME_LIMIT: Duration = Duration::from_secs(600);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

/// Kills the node when the test ends, whether it passes or panics.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc is readable");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS is reported")
}

/// `gubernator_cache_size` from a scrape of `/metrics`.
async fn cache_size(http: &reqwest::Client, url: &str) -> u64 {
    let text = http
        .get(url)
        .send()
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .find_map(|line| line.strip_prefix("gubernator_cache_size "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .expect("gubernator_cache_size is exported") as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_distinct_keys_keeps_memory_bounded() {
    let grpc_address = format!("127.0.0.1:{}", free_port());
    let http_address = format!("127.0.0.1:{}", free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_ringlimit"))
        .env("GUBER_GRPC_ADDRESS", &grpc_address)
        .env("GUBER_HTTP_ADDRESS", &http_address)
        .env("GUBER_CACHE_SIZE", CACHE_SIZE.to_string())
        .env("GUBER_LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let node = Node(child);
    let pid = node.0.id();

    let started = Instant::now();
    let channel = loop {
        if let Ok(channel) =
            tonic::transport::Endpoint::from_shared(format!("http://{grpc_address}"))
                .expect("valid endpoint")
                .connect()
                .await
        {
            break channel;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the node never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let idle_rss = rss_kib(pid);
    let metrics_url = format!("http://{http_address}/metrics");

    let flood_started = Instant::now();
    let calls_per_caller = KEYS / PER_CALL / CALLERS;
    let mut callers = Vec::new();
    for caller in 0..CALLERS {
        let mut client = V1Client::new(channel.clone());
        let metrics_url = metrics_url.clone();
        callers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let (mut max_entries, mut max_rss) = (0u64, 0u64);
            for call in 0..calls_per_caller {
                assert!(
                    flood_started.elapsed() < TIME_LIMIT,
                    "the flood did not finish within {TIME_LIMIT:?}"
                );
                let first = (caller * calls_per_caller + call) * PER_CALL;
                let requests = (first..first + PER_CALL)
                    .map(|key| proto::RateLimitReq {
                        name: "flood".into(),
                        unique_key: format!("key-{key}"),
                        hits: 1,
                        limit: 10,
                        duration: 3_600_000,
                        ..Default::default()
                    })
                    .collect();
                let answers = client
                    .get_rate_limits(proto::GetRateLimitsReq { requests })
                    .await
                    .expect("every call is answered")
                    .into_inner()
                    .responses;
                assert_eq!(answers.len() as u64, PER_CALL);
                assert!(answers.iter().all(|answer| answer.error.is_empty()));
                if call % SAMPLE_EVERY == 0 || call + 1 == calls_per_caller {
                    max_entries = max_entries.max(cache_size(&http, &metrics_url).await);
                    max_rss = max_rss.max(rss_kib(pid));
                }
            }
            (max_entries, max_rss)
        }));
    }
    let (mut max_entries, mut max_rss) = (0, 0);
    for caller in callers {
        let (entries, rss) = caller.await.expect("caller finished");
        max_entries = max_entries.max(entries);
        max_rss = max_rss.max(rss);
    }
    let elapsed = flood_started.elapsed();
    eprintln!(
        "{KEYS} distinct keys in {elapsed:?}: at most {max_entries} cached entries (bound \
         {CACHE_SIZE}), RSS {idle_rss} KiB idle, at most {max_rss} KiB (ceiling {RSS_CEILING_KIB} KiB)"
    );
    assert!(max_entries > 0, "the cache was sampled while full");
    assert!(
        max_entries <= CACHE_SIZE,
        "{max_entries} entries exceed GUBER_CACHE_SIZE={CACHE_SIZE}"
    );
    assert!(
        max_rss < RSS_CEILING_KIB,
        "RSS reached {max_rss} KiB, over the {RSS_CEILING_KIB} KiB ceiling"
    );
}
