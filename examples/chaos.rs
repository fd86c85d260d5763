//! The fault run behind `bench/chaos.sh`: a 3-node ringlimit cluster with etcd, on loopback, under
//! steady load, through a SIGKILL and restart, a rolling restart, and a 30 s etcd outage. It counts
//! client errors per phase by kind, and for a set of watched keys (plain ones, and `GLOBAL` ones)
//! compares the hits admitted with what the limit allows (an exact oracle), then writes a Markdown
//! section with the table.
//!
//! ```sh
//! cargo build --release --bin ringlimit --example chaos
//! target/release/examples/chaos --binary target/release/ringlimit --policy error --out /tmp/chaos-error.md
//! ```
//!
//! All traffic goes to 127.0.0.1. Every loop is bounded by a count and by a deadline, and every
//! process started here is killed when the run ends, whatever happens.

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use ringlimit::proto::{self, v1_client::V1Client};
use tonic::transport::{Channel, Endpoint};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Options of the run.
#[derive(Debug, Parser)]
struct Options {
    /// The ringlimit binary (a release build).
    #[arg(long)]
    binary: PathBuf,
    /// The etcd binary.
    #[arg(long, default_value = "/usr/bin/etcd")]
    etcd: PathBuf,
    /// GUBER_OWNER_FAILURE_POLICY for the nodes.
    #[arg(long, default_value = "error")]
    policy: String,
    /// Where to write the Markdown section.
    #[arg(long)]
    out: PathBuf,
    /// Seconds of the steady phase.
    #[arg(long, default_value_t = 10)]
    steady_secs: u64,
    /// Seconds etcd stays down.
    #[arg(long, default_value_t = 30)]
    etcd_outage_secs: u64,
    /// The nodes' etcd lease TTL, in seconds.
    #[arg(long, default_value_t = 5)]
    lease_ttl_secs: u64,
    /// Concurrent client tasks.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Pause between one task's calls, in milliseconds.
    #[arg(long, default_value_t = 10)]
    interval_ms: u64,
    /// Send no GLOBAL watched item (the load of earlier runs, to compare with).
    #[arg(long)]
    no_global: bool,
    /// Keep the nodes' and etcd's logs in this directory (by default they go to a temporary
    /// directory removed at the end). Set RUST_LOG for more detail than warnings.
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Watched keys per phase.
    #[arg(long, default_value_t = 9)]
    watched_keys: usize,
    /// Limit of each watched key per window.
    #[arg(long, default_value_t = 100)]
    limit: i64,
    /// Window of each watched key, in milliseconds (longer than a phase, so that the oracle is
    /// exactly one limit per key and any lost count shows).
    #[arg(long, default_value_t = 60_000)]
    window_ms: i64,
}

/// The hard cap on one run, whatever the options.
const RUN_LIMIT: Duration = Duration::from_secs(15 * 60);
/// Background (unwatched) items per call, with limits no one reaches.
const BACKGROUND_ITEMS: usize = 4;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let options = Options::parse();
    let deadline = Instant::now() + RUN_LIMIT;
    let dir = std::env::temp_dir().join(format!("ringlimit-chaos-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let log_dir = options.log_dir.clone().unwrap_or_else(|| dir.clone());
    std::fs::create_dir_all(&log_dir)?;
    let mut cluster = ChaosCluster::new(&options, &dir, &log_dir)?;
    let result = run(&options, &mut cluster, deadline).await;
    cluster.stop_all();
    let _ = std::fs::remove_dir_all(&dir);
    let report = result?;
    std::fs::write(&options.out, report)?;
    eprintln!("chaos: wrote {}", options.out.display());
    Ok(())
}

async fn run(
    options: &Options,
    cluster: &mut ChaosCluster,
    deadline: Instant,
) -> Result<String, Error> {
    cluster.start_etcd()?;
    cluster.wait_etcd(Duration::from_secs(20)).await?;
    for index in 0..3 {
        cluster.start_node(index)?;
    }
    cluster.wait_converged(Duration::from_secs(30)).await?;
    eprintln!("chaos: cluster of 3 is up (policy {})", options.policy);

    let load = Arc::new(Load::new(options, cluster.grpc_addresses()));
    let workers: Vec<_> = (0..options.workers)
        .map(|worker| tokio::spawn(Arc::clone(&load).work(worker, deadline)))
        .collect();

    // Phase 0: steady.
    load.begin_phase("steady");
    tokio::time::sleep(Duration::from_secs(options.steady_secs)).await;

    // Phase 1: kill -9 one node, restart it after 3 s.
    load.begin_phase("kill -9 node 2, restart after 3 s");
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.kill_node(1);
    load.set_down(1, true);
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.start_node(1)?;
    cluster.wait_serving(1, Duration::from_secs(20)).await?;
    load.set_down(1, false);
    cluster.wait_converged(Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Phase 2: rolling restart, SIGTERM then start, one node at a time.
    load.begin_phase("rolling restart (SIGTERM + start, one at a time)");
    for index in 0..3 {
        load.set_down(index, true);
        cluster.terminate_node(index, Duration::from_secs(40)).await;
        cluster.start_node(index)?;
        cluster.wait_serving(index, Duration::from_secs(20)).await?;
        load.set_down(index, false);
        cluster.wait_converged(Duration::from_secs(30)).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // Phase 3: etcd down for the outage, then back.
    load.begin_phase(&format!(
        "etcd stopped for {} s, then restarted",
        options.etcd_outage_secs
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.stop_etcd();
    tokio::time::sleep(Duration::from_secs(options.etcd_outage_secs)).await;
    cluster.start_etcd()?;
    cluster.wait_etcd(Duration::from_secs(20)).await?;
    cluster.wait_registered(Duration::from_secs(30)).await?;
    cluster.wait_converged(Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Phase 4: steady again.
    load.begin_phase("steady after the faults");
    tokio::time::sleep(Duration::from_secs(options.steady_secs.min(10))).await;

    load.stop.store(true, Ordering::SeqCst);
    for worker in workers {
        let _ = tokio::time::timeout(Duration::from_secs(5), worker).await;
    }
    let timelines = load.over_timelines();
    if !timelines.is_empty() {
        // Where a lost count shows: next to the nodes' logs, or on stderr without --log-dir.
        match &options.log_dir {
            Some(dir) => std::fs::write(dir.join("over-keys.txt"), &timelines)?,
            None => eprint!("{timelines}"),
        }
    }
    Ok(load.report(options))
}

// ---------------------------------------------------------------------------------------------
// Processes

/// etcd and the three nodes, on fixed loopback ports chosen at start so restarts reuse them.
struct ChaosCluster {
    binary: PathBuf,
    etcd_binary: PathBuf,
    dir: PathBuf,
    log_dir: PathBuf,
    etcd_ports: (u16, u16),
    etcd: Option<Child>,
    nodes: Vec<(u16, u16)>,
    children: Vec<Option<Child>>,
    policy: String,
    lease_ttl_secs: u64,
}

/// A free loopback port below Linux's ephemeral range (32768–60999): nodes are restarted on the
/// same ports, and an ephemeral port could meanwhile become the source port of some outgoing
/// connection. `taken` holds the ports already chosen.
fn free_port(taken: &mut Vec<u16>) -> Result<u16, Error> {
    let start = (std::process::id() as usize * 7919) % 10_000;
    let port = (0..10_000)
        .map(|i| 20_000 + ((start + i) % 10_000) as u16)
        .find(|port| !taken.contains(port) && TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .ok_or("no free loopback port between 20000 and 30000")?;
    taken.push(port);
    Ok(port)
}

impl ChaosCluster {
    fn new(options: &Options, dir: &Path, log_dir: &Path) -> Result<Self, Error> {
        let mut taken = Vec::new();
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push((free_port(&mut taken)?, free_port(&mut taken)?));
        }
        Ok(Self {
            binary: options.binary.clone(),
            etcd_binary: options.etcd.clone(),
            dir: dir.to_path_buf(),
            log_dir: log_dir.to_path_buf(),
            etcd_ports: (free_port(&mut taken)?, free_port(&mut taken)?),
            etcd: None,
            nodes,
            children: vec![None, None, None],
            policy: options.policy.clone(),
            lease_ttl_secs: options.lease_ttl_secs,
        })
    }

    fn etcd_endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.etcd_ports.0)
    }

    fn grpc_addresses(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|(grpc, _)| format!("127.0.0.1:{grpc}"))
            .collect()
    }

    fn log(&self, name: &str) -> Result<Stdio, Error> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_dir.join(name))?;
        Ok(Stdio::from(file))
    }

    fn start_etcd(&mut self) -> Result<(), Error> {
        let client = format!("http://127.0.0.1:{}", self.etcd_ports.0);
        let peer = format!("http://127.0.0.1:{}", self.etcd_ports.1);
        let child = Command::new(&self.etcd_binary)
            .arg("--name=chaos")
            .arg(format!(
                "--data-dir={}",
                self.dir.join("etcd-data").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=chaos={peer}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(self.log("etcd.log")?)
            .spawn()?;
        self.etcd = Some(child);
        Ok(())
    }

    fn stop_etcd(&mut self) {
        if let Some(mut child) = self.etcd.take() {
            signal(&child, "TERM");
            if !wait_exit(&mut child, Duration::from_secs(10)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    async fn wait_etcd(&self, limit: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let probe = async {
                let mut client = etcd_client::Client::connect([self.etcd_endpoint()], None).await?;
                client.get("ready", None).await
            };
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), probe).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err("etcd did not answer in time".into())
    }

    /// Waits until all three registrations are in etcd again.
    async fn wait_registered(&self, limit: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let get = async {
                let mut client = etcd_client::Client::connect([self.etcd_endpoint()], None).await?;
                client
                    .get(
                        "/ringlimit-chaos/",
                        Some(
                            etcd_client::GetOptions::new()
                                .with_prefix()
                                .with_keys_only(),
                        ),
                    )
                    .await
            };
            if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(1), get).await
                && response.kvs().len() == 3
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err("the nodes did not register again in time".into())
    }

    fn start_node(&mut self, index: usize) -> Result<(), Error> {
        let (grpc, http) = self.nodes[index];
        let child = Command::new(&self.binary)
            .env("GUBER_GRPC_ADDRESS", format!("127.0.0.1:{grpc}"))
            .env("GUBER_HTTP_ADDRESS", format!("127.0.0.1:{http}"))
            .env("GUBER_PEER_DISCOVERY_TYPE", "etcd")
            .env("GUBER_ETCD_ENDPOINTS", self.etcd_endpoint())
            .env("GUBER_ETCD_KEY_PREFIX", "/ringlimit-chaos/")
            .env("GUBER_ETCD_LEASE_TTL", format!("{}s", self.lease_ttl_secs))
            .env("GUBER_ETCD_DIAL_TIMEOUT", "2s")
            .env("GUBER_OWNER_FAILURE_POLICY", &self.policy)
            .env("GUBER_LOG_LEVEL", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(self.log(&format!("node{}.log", index + 1))?)
            .spawn()?;
        self.children[index] = Some(child);
        Ok(())
    }

    fn kill_node(&mut self, index: usize) {
        if let Some(mut child) = self.children[index].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn terminate_node(&mut self, index: usize, limit: Duration) {
        if let Some(mut child) = self.children[index].take() {
            signal(&child, "TERM");
            let exited = tokio::task::spawn_blocking(move || {
                let exited = wait_exit(&mut child, limit);
                if !exited {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                exited
            })
            .await
            .unwrap_or(false);
            if !exited {
                eprintln!(
                    "chaos: node {} did not exit on SIGTERM within {limit:?}; killed",
                    index + 1
                );
            }
        }
    }

    async fn wait_serving(&self, index: usize, limit: Duration) -> Result<(), Error> {
        let address = self.grpc_addresses()[index].clone();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(mut client) = V1Client::connect(format!("http://{address}")).await
                && client.live_check(proto::LiveCheckReq {}).await.is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("node {} did not start in time", index + 1).into())
    }

    /// Waits until every node's ring holds all three peers (read from `/metrics`:
    /// `HealthCheck` reports unhealthy for a while after a peer failed, which is not the question).
    async fn wait_converged(&self, limit: Duration) -> Result<(), Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()?;
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let mut all = true;
            for (_, port) in &self.nodes {
                let url = format!("http://127.0.0.1:{port}/metrics");
                let scrape = match http.get(&url).send().await {
                    Ok(response) => response.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                };
                let peers = scrape
                    .lines()
                    .find(|line| line.starts_with("ringlimit_peers{scope=\"local\"}"))
                    .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok());
                if peers != Some(3.0) {
                    all = false;
                    break;
                }
            }
            if all {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err("the cluster did not converge to 3 peers on every node in time".into())
    }

    fn stop_all(&mut self) {
        for index in 0..self.children.len() {
            self.kill_node(index);
        }
        if let Some(mut etcd) = self.etcd.take() {
            let _ = etcd.kill();
            let _ = etcd.wait();
        }
    }
}

impl Drop for ChaosCluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Sends `SIGname` to the child (through `kill`, which every Debian has).
fn signal(child: &Child, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status();
}

/// Polls until the child exits or `limit` passes; returns whether it exited.
fn wait_exit(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

// ---------------------------------------------------------------------------------------------
// Load and the oracle

/// One phase's counts.
#[derive(Default)]
struct PhaseStats {
    name: String,
    started: Option<Instant>,
    ended: Option<Instant>,
    calls: u64,
    items: u64,
    call_errors: BTreeMap<String, u64>,
    item_errors: BTreeMap<String, u64>,
    fallback_answers: u64,
    watched: HashMap<String, KeyStats>,
    watched_global: HashMap<String, KeyStats>,
}

/// What a watched key admitted, and when its traffic began and ended.
struct KeyStats {
    first_sent: Instant,
    last_answered: Instant,
    admitted: i64,
    answered: u64,
    /// Every answer, for the timeline of a key that ends over the oracle.
    answers: Vec<KeyAnswer>,
}

/// One answer for a watched key: when, from which node, and what it said.
struct KeyAnswer {
    at: std::time::SystemTime,
    node: usize,
    under: bool,
    remaining: i64,
    owner: String,
}

/// The load: workers send to the nodes not stopped by the script (like a client behind a
/// health-checking load balancer), each call one watched item, one watched `GLOBAL` item and a few
/// background items.
struct Load {
    nodes: Vec<String>,
    down: Vec<AtomicBool>,
    phase: AtomicUsize,
    phases: Mutex<Vec<PhaseStats>>,
    stop: AtomicBool,
    watched_keys: usize,
    limit: i64,
    window_ms: i64,
    interval: Duration,
    global: bool,
}

impl Load {
    fn new(options: &Options, nodes: Vec<String>) -> Self {
        Self {
            down: nodes.iter().map(|_| AtomicBool::new(false)).collect(),
            nodes,
            phase: AtomicUsize::new(0),
            phases: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            watched_keys: options.watched_keys,
            limit: options.limit,
            window_ms: options.window_ms,
            interval: Duration::from_millis(options.interval_ms),
            global: !options.no_global,
        }
    }

    fn begin_phase(&self, name: &str) {
        let mut phases = self.phases.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if let Some(last) = phases.last_mut() {
            last.ended = Some(now);
        }
        phases.push(PhaseStats {
            name: name.to_string(),
            started: Some(now),
            ..PhaseStats::default()
        });
        self.phase.store(phases.len(), Ordering::SeqCst);
        eprintln!("chaos: phase {}: {name}", phases.len());
    }

    fn set_down(&self, index: usize, down: bool) {
        self.down[index].store(down, Ordering::SeqCst);
    }

    async fn work(self: Arc<Self>, worker: usize, deadline: Instant) {
        let clients: Vec<V1Client<Channel>> = self
            .nodes
            .iter()
            .filter_map(|address| {
                let endpoint = Endpoint::from_shared(format!("http://{address}")).ok()?;
                Some(V1Client::new(
                    endpoint
                        .connect_timeout(Duration::from_secs(1))
                        .connect_lazy(),
                ))
            })
            .collect();
        let mut sequence: u64 = worker as u64;
        // Bounded by count (a run never needs this many calls) and by the deadline.
        for _ in 0..10_000_000u64 {
            if self.stop.load(Ordering::SeqCst) || Instant::now() >= deadline {
                break;
            }
            let phase = self.phase.load(Ordering::SeqCst);
            if phase == 0 {
                tokio::time::sleep(self.interval).await;
                continue;
            }
            sequence = sequence.wrapping_add(self.nodes.len() as u64 + 1);
            let Some(target) = (0..self.nodes.len())
                .map(|offset| (sequence as usize + offset) % self.nodes.len())
                .find(|&index| !self.down[index].load(Ordering::SeqCst))
            else {
                tokio::time::sleep(self.interval).await;
                continue;
            };
            let watched = format!(
                "{}",
                splitmix(phase as u64 * 1_000 + sequence % self.watched_keys as u64)
            );
            let mut requests = vec![proto::RateLimitReq {
                name: format!("chaos_watched_{phase}"),
                unique_key: watched.clone(),
                hits: 1,
                limit: self.limit,
                duration: self.window_ms,
                ..Default::default()
            }];
            // The same key space with GLOBAL behaviour, under another name: the copies on every
            // node and the owner's broadcasts must survive the faults as plain keys do.
            if self.global {
                requests.push(proto::RateLimitReq {
                    name: format!("chaos_watched_global_{phase}"),
                    behavior: proto::Behavior::Global as i32,
                    ..requests[0].clone()
                });
            }
            for i in 0..BACKGROUND_ITEMS {
                requests.push(proto::RateLimitReq {
                    name: "chaos_background".into(),
                    unique_key: format!(
                        "{}",
                        splitmix(sequence.wrapping_mul(31) + i as u64) % 10_000
                    ),
                    hits: 1,
                    limit: 1_000_000,
                    duration: 60_000,
                    ..Default::default()
                });
            }
            let items = requests.len() as u64;
            let mut client = clients[target].clone();
            let sent = Instant::now();
            let outcome = tokio::time::timeout(
                Duration::from_secs(2),
                client.get_rate_limits(proto::GetRateLimitsReq { requests }),
            )
            .await;
            let answered = Instant::now();
            {
                let mut phases = self.phases.lock().unwrap_or_else(|p| p.into_inner());
                let Some(stats) = phases.get_mut(phase - 1) else {
                    continue;
                };
                stats.calls += 1;
                stats.items += items;
                match outcome {
                    Err(_) => {
                        *stats
                            .call_errors
                            .entry("call timed out (2 s)".into())
                            .or_default() += 1
                    }
                    Ok(Err(status)) => {
                        *stats
                            .call_errors
                            .entry(format!("call failed: {:?}", status.code()))
                            .or_default() += 1
                    }
                    Ok(Ok(response)) => {
                        let responses = response.into_inner().responses;
                        for (index, answer) in responses.iter().enumerate() {
                            if answer.metadata.contains_key("fallback") {
                                stats.fallback_answers += 1;
                            }
                            if !answer.error.is_empty() {
                                *stats
                                    .item_errors
                                    .entry(error_kind(&answer.error))
                                    .or_default() += 1;
                            } else if index == 0 || (index == 1 && self.global) {
                                let keys = if index == 0 {
                                    &mut stats.watched
                                } else {
                                    &mut stats.watched_global
                                };
                                let key = keys.entry(watched.clone()).or_insert(KeyStats {
                                    first_sent: sent,
                                    last_answered: answered,
                                    admitted: 0,
                                    answered: 0,
                                    answers: Vec::new(),
                                });
                                key.answers.push(KeyAnswer {
                                    at: std::time::SystemTime::now(),
                                    node: target,
                                    under: answer.status == proto::Status::UnderLimit as i32,
                                    remaining: answer.remaining,
                                    owner: answer
                                        .metadata
                                        .get("owner")
                                        .cloned()
                                        .unwrap_or_default(),
                                });
                                key.last_answered = answered;
                                key.answered += 1;
                                if answer.status == proto::Status::UnderLimit as i32 {
                                    key.admitted += 1;
                                }
                            }
                        }
                    }
                }
            }
            tokio::time::sleep(self.interval).await;
        }
    }

    /// The Markdown section: one row per phase.
    fn report(&self, options: &Options) -> String {
        let phases = self.phases.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        out.push_str(&format!(
            "### `GUBER_OWNER_FAILURE_POLICY={}`\n\n\
             | phase | seconds | calls (items) | client call errors | item errors | fallback answers | watched keys over the oracle | admitted / oracle (sum over {keys} keys) | worst key: admitted − oracle | GLOBAL keys over the oracle | GLOBAL admitted / oracle | GLOBAL worst key |\n\
             |---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|\n",
            options.policy,
            keys = options.watched_keys
        ));
        for stats in phases.iter() {
            let seconds = match (stats.started, stats.ended) {
                (Some(start), Some(end)) => end.duration_since(start).as_secs_f64(),
                (Some(start), None) => start.elapsed().as_secs_f64(),
                _ => 0.0,
            };
            let plain = self.oracle(&stats.watched);
            let global = self.oracle(&stats.watched_global);
            out.push_str(&format!(
                "| {} | {:.1} | {} ({}) | {} | {} | {} | {} | {} |\n",
                stats.name,
                seconds,
                stats.calls,
                stats.items,
                kinds(&stats.call_errors),
                kinds(&stats.item_errors),
                stats.fallback_answers,
                plain.columns(),
                global.columns(),
            ));
        }
        out
    }

    /// For every plain watched key that ended over the oracle, its answers around each moment the
    /// count went back up (a lost count shows there), or all of them with `CHAOS_DUMP_OVER_KEYS`
    /// set (a few lost hits need not show as a jump): one line per answer, UTC seconds of the day
    /// first so it lines up with the nodes' logs.
    fn over_timelines(&self) -> String {
        let phases = self.phases.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        for stats in phases.iter() {
            for (name, key) in &stats.watched {
                let elapsed = key.last_answered.duration_since(key.first_sent).as_millis() as i64;
                let oracle = self.limit * (elapsed / self.window_ms + 1);
                if key.admitted <= oracle {
                    continue;
                }
                out.push_str(&format!(
                    "phase '{}' key {name}: admitted {} of {oracle}\n",
                    stats.name, key.admitted
                ));
                let mut answers: Vec<&KeyAnswer> = key.answers.iter().collect();
                answers.sort_by_key(|answer| answer.at);
                // Answers of concurrent workers arrive a little out of order; a lost count is a
                // jump above the lowest count seen so far by more than the workers in flight.
                let slack = 8;
                let mut lowest = i64::MAX;
                let mut shown = 0;
                for index in 0..answers.len() {
                    let remaining = answers[index].remaining;
                    let jumped = (lowest != i64::MAX && remaining > lowest + slack)
                        || std::env::var_os("CHAOS_DUMP_OVER_KEYS").is_some();
                    lowest = if jumped {
                        remaining
                    } else {
                        lowest.min(remaining)
                    };
                    if !jumped || shown > 2000 {
                        continue;
                    }
                    shown += 1;
                    out.push_str("  --\n");
                    for answer in &answers[index.saturating_sub(4)..(index + 3).min(answers.len())]
                    {
                        let utc = answer
                            .at
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap_or_default();
                        out.push_str(&format!(
                            "  {}.{:06} node{} {} remaining {} owner {}\n",
                            utc.as_secs() % 86_400,
                            utc.subsec_micros(),
                            answer.node + 1,
                            if answer.under { "UNDER" } else { "OVER " },
                            answer.remaining,
                            answer.owner
                        ));
                    }
                }
            }
        }
        out
    }

    /// The watched keys of one kind against the oracle.
    fn oracle(&self, keys: &HashMap<String, KeyStats>) -> OracleSummary {
        let mut summary = OracleSummary {
            keys: keys.len(),
            ..OracleSummary::default()
        };
        for key in keys.values() {
            let elapsed = key.last_answered.duration_since(key.first_sent).as_millis() as i64;
            // Token bucket windows start at a hit on an expired bucket and last window_ms,
            // so at most floor(elapsed / window) + 1 of them fit between the first send and
            // the last answer.
            let oracle = self.limit * (elapsed / self.window_ms + 1);
            summary.admitted += key.admitted;
            summary.allowed += oracle;
            if key.admitted > oracle {
                summary.over_keys += 1;
            }
            summary.worst = Some(summary.worst.map_or(key.admitted - oracle, |worst: i64| {
                worst.max(key.admitted - oracle)
            }));
        }
        summary
    }
}

/// Watched keys of one kind in one phase, against the oracle.
#[derive(Default)]
struct OracleSummary {
    keys: usize,
    admitted: i64,
    allowed: i64,
    over_keys: usize,
    worst: Option<i64>,
}

impl OracleSummary {
    /// Three table cells: keys over the oracle, admitted / oracle, the worst key.
    fn columns(&self) -> String {
        let worst = match self.worst {
            None => "n/a".to_string(),
            Some(w) if w > 0 => format!("+{w}"),
            Some(w) => w.to_string(),
        };
        format!(
            "{} of {} | {} / {} | {}",
            self.over_keys, self.keys, self.admitted, self.allowed, worst
        )
    }
}

/// A short class for an item error, so the table groups them.
fn error_kind(error: &str) -> String {
    if error.contains("forwarding to owner") {
        if error.contains("peer is down") {
            "owner marked down".into()
        } else if error.contains("timed out") {
            "owner timed out".into()
        } else if error.contains("left the cluster") {
            "owner left".into()
        } else {
            "owner unreachable".into()
        }
    } else {
        error.chars().take(60).collect()
    }
}

fn kinds(counts: &BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        return "0".into();
    }
    counts
        .iter()
        .map(|(kind, count)| format!("{count} {kind}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A well-mixed number (keys that spread over the FNV-1 ring).
fn splitmix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
