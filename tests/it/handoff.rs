//! State handoff with real processes of the binary on loopback, so SIGTERM and restarts are real.
//!
//! Membership comes from a real etcd (`tests/support_etcd`): a static `GUBER_PEERS` list never
//! changes at run time, so with it no ring ever changes and there is nothing to hand off; etcd is
//! how a node joins and leaves a running cluster. Every wait is a bounded poll. Durations on the
//! 2-core CI machine: join ≈ 3 s, leave ≈ 3 s, rolling restart ≈ 15–25 s, snapshots ≈ 3 s.

use crate::common;
use crate::support_etcd;

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use common::{OVER, UNDER, spread_key, token};
use ringlimit::peers::{PeerInfo, Ring};
use ringlimit::proto::{self, v1_client::V1Client};
use support_etcd::{Etcd, eventually, unique_prefix};
use tonic::transport::Channel;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

/// One ringlimit process.
struct Proc {
    child: Option<Child>,
    grpc: String,
    http: String,
    args: Vec<String>,
    log: std::path::PathBuf,
}

impl Proc {
    /// Starts the binary on fresh loopback ports with `extra` flags; its stderr goes to `log`.
    fn start(extra: &[String], log: std::path::PathBuf) -> Proc {
        let grpc = format!("127.0.0.1:{}", free_port());
        let http = format!("127.0.0.1:{}", free_port());
        let mut proc = Proc {
            child: None,
            grpc,
            http,
            args: extra.to_vec(),
            log,
        };
        proc.spawn();
        proc
    }

    /// (Re)starts the process on the same addresses and flags.
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_ringlimit"))
            .arg(format!("--grpc-address={}", self.grpc))
            .arg(format!("--http-address={}", self.http))
            .arg("--shutdown-timeout=10s")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("the binary starts");
        self.child = Some(child);
    }

    /// Sends SIGTERM and waits (at most 30 s) for the exit; returns the exit code.
    async fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(exit) = child.try_wait().expect("wait works") {
                return exit.code();
            }
            assert!(
                Instant::now() < deadline,
                "the node did not exit within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn peer(&self) -> PeerInfo {
        PeerInfo {
            grpc_address: self.grpc.clone(),
            http_address: self.http.clone(),
            data_center: String::new(),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A client of `grpc`, connecting as soon as the node listens (bounded: 20 s).
async fn client(grpc: &str) -> V1Client<Channel> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match V1Client::connect(format!("http://{grpc}")).await {
            Ok(client) => return client,
            Err(error) if Instant::now() > deadline => panic!("{grpc} never came up: {error}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The last lines each node logged, for a failure message (a flaky membership wait could not be
/// explained after the fact without them).
fn log_tails(nodes: &[&Proc]) -> String {
    nodes
        .iter()
        .map(|node| {
            let log = std::fs::read_to_string(&node.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n");
            format!("--- {} ({}):\n{tail}", node.grpc, node.log.display())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits (at most 60 s: etcd and the nodes share a loaded CI machine) until every node in `nodes`
/// is healthy and sees exactly `nodes`.
async fn wait_for_membership(nodes: &[&Proc]) {
    let expected: Vec<String> = {
        let mut addresses: Vec<String> = nodes.iter().map(|p| p.grpc.clone()).collect();
        addresses.sort();
        addresses
    };
    for node in nodes {
        let client = client(&node.grpc).await;
        let last = Arc::new(Mutex::new(String::new()));
        let agreed = eventually(Duration::from_secs(60), || {
            let mut client = client.clone();
            let expected = expected.clone();
            let last = last.clone();
            async move {
                match client.health_check(proto::HealthCheckReq {}).await {
                    Ok(health) => {
                        let mut seen: Vec<String> = health
                            .into_inner()
                            .local_peers
                            .into_iter()
                            .map(|p| p.grpc_address)
                            .collect();
                        seen.sort();
                        *last.lock().unwrap() = format!("{seen:?}");
                        seen == expected
                    }
                    Err(status) => {
                        *last.lock().unwrap() = status.to_string();
                        false
                    }
                }
            }
        })
        .await;
        assert!(
            agreed,
            "{} never saw the membership {expected:?}; last answer: {}\n{}",
            node.grpc,
            last.lock().unwrap(),
            log_tails(nodes)
        );
    }
}

fn etcd_args(etcd: &Etcd, prefix: &str) -> Vec<String> {
    vec![
        "--peer-discovery-type=etcd".into(),
        format!("--etcd-endpoints={}", etcd.endpoint()),
        format!("--etcd-key-prefix={prefix}"),
    ]
}

/// `count` keys (namespace `test`) that `owner` owns in the ring of `members`.
fn keys_owned_by(members: &[PeerInfo], owner: &str, prefix: &str, count: usize) -> Vec<String> {
    let ring = Ring::new(members);
    let keys: Vec<String> = (0..100_000)
        .map(|i| spread_key(prefix, i))
        .filter(|key| ring.owner_of("test", key).map(|p| p.grpc_address.as_str()) == Some(owner))
        .take(count)
        .collect();
    assert_eq!(keys.len(), count);
    keys
}

async fn one(client: &mut V1Client<Channel>, item: proto::RateLimitReq) -> proto::RateLimitResp {
    let mut answers = client
        .get_rate_limits(proto::GetRateLimitsReq {
            requests: vec![item],
        })
        .await
        .expect("the call succeeds")
        .into_inner()
        .responses;
    assert_eq!(answers.len(), 1);
    answers.remove(0)
}

/// Spends `spent` of `limit` on every key through `client`, checking each answer.
async fn spend(client: &mut V1Client<Channel>, keys: &[String], spent: i64, limit: i64) {
    for key in keys {
        let answer = one(client, token(key, spent, limit, 600_000)).await;
        assert_eq!(answer.error, "");
        assert_eq!(
            (answer.status, answer.remaining),
            (UNDER, limit - spent),
            "{key}"
        );
    }
}

/// Checks that every key continues from `limit - spent`: a query answers it, the rest of the
/// limit is admitted and one more hit is refused.
async fn assert_counts_continue(
    client: &mut V1Client<Channel>,
    keys: &[String],
    spent: i64,
    limit: i64,
) {
    for key in keys {
        let query = one(client, token(key, 0, limit, 600_000)).await;
        assert_eq!(query.error, "", "{key}");
        assert_eq!(
            query.remaining,
            limit - spent,
            "{key}: the count was reset or lost"
        );
        let rest = one(client, token(key, limit - spent, limit, 600_000)).await;
        assert_eq!((rest.status, rest.remaining), (UNDER, 0), "{key}");
        let over = one(client, token(key, 1, limit, 600_000)).await;
        assert_eq!(over.status, OVER, "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_with_handoff_keeps_counts() {
    let etcd = Etcd::start().await;
    let prefix = unique_prefix("handoff-join");
    let dir = tempfile::tempdir().unwrap();
    let args = etcd_args(&etcd, &prefix);
    let a = Proc::start(&args, dir.path().join("a.log"));
    let b = Proc::start(&args, dir.path().join("b.log"));
    wait_for_membership(&[&a, &b]).await;

    // Keys that the third node will own once it joins; spend on them before it exists.
    let mut c = Proc::start(&args, dir.path().join("c.log"));
    let c_child = c.child.take();
    let _ = c_child.map(|mut child| {
        let _ = child.kill();
        child.wait()
    });
    let members = [a.peer(), b.peer(), c.peer()];
    let keys = keys_owned_by(&members, &c.grpc, "join", 20);
    let mut via_a = client(&a.grpc).await;
    spend(&mut via_a, &keys, 6, 10).await;

    c.spawn();
    wait_for_membership(&[&a, &b, &c]).await;
    // The new owner answers, and the counts continue rather than restart.
    let answer = one(&mut via_a, token(&keys[0], 0, 10, 600_000)).await;
    assert_eq!(
        answer.metadata.get("owner"),
        Some(&c.grpc),
        "the joined node owns the key"
    );
    assert_counts_continue(&mut via_a, &keys, 6, 10).await;
    let mut via_c = client(&c.grpc).await;
    let local = one(&mut via_c, token(&keys[1], 0, 10, 600_000)).await;
    assert_eq!((local.remaining, local.metadata.get("owner")), (0, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_leave_keeps_counts() {
    let etcd = Etcd::start().await;
    let prefix = unique_prefix("handoff-leave");
    let dir = tempfile::tempdir().unwrap();
    let args = etcd_args(&etcd, &prefix);
    let a = Proc::start(&args, dir.path().join("a.log"));
    let b = Proc::start(&args, dir.path().join("b.log"));
    let mut c = Proc::start(&args, dir.path().join("c.log"));
    wait_for_membership(&[&a, &b, &c]).await;
    let members = [a.peer(), b.peer(), c.peer()];
    let keys = keys_owned_by(&members, &c.grpc, "leave", 20);
    let mut via_a = client(&a.grpc).await;
    spend(&mut via_a, &keys, 7, 10).await;

    assert_eq!(c.terminate().await, Some(0), "a graceful leave exits 0");
    wait_for_membership(&[&a, &b]).await;
    assert_counts_continue(&mut via_a, &keys, 7, 10).await;
}

/// Two nodes on etcd whose handoff waits `delay` after a change (long enough for a restart to
/// fit inside it) and whose join wait is 8 s, once the start's handoffs are over.
struct SlowHandoffPair {
    _etcd: Etcd,
    dir: tempfile::TempDir,
    a: Proc,
    b: Proc,
    delay: Duration,
}

impl SlowHandoffPair {
    async fn start(name: &str, delay: Duration) -> Self {
        let etcd = Etcd::start().await;
        let prefix = unique_prefix(name);
        let dir = tempfile::tempdir().unwrap();
        let mut args = etcd_args(&etcd, &prefix);
        args.push(format!("--handoff-delay={}ms", delay.as_millis()));
        args.push("--handoff-join-wait=8s".into());
        let a = Proc::start(&args, dir.path().join("a.log"));
        let b = Proc::start(&args, dir.path().join("b.log"));
        wait_for_membership(&[&a, &b]).await;
        // Let the start's handoffs (each node waits for the other's "complete", sent after the
        // delay) finish before spending. A fixed wait for the timer-driven pass: nothing a test
        // can read says it finished (a pass that moves nothing logs nothing).
        tokio::time::sleep(delay + Duration::from_millis(500)).await;
        SlowHandoffPair {
            _etcd: etcd,
            dir,
            a,
            b,
            delay,
        }
    }

    /// `count` keys b owns in the ring of both.
    fn keys_of_b(&self, prefix: &str, count: usize) -> Vec<String> {
        keys_owned_by(&[self.a.peer(), self.b.peer()], &self.b.grpc, prefix, count)
    }

    /// Asserts that b restarted within a's handoff delay (measured from `restart`).
    fn assert_restart_within_the_delay(&self, restart: Instant) {
        assert!(
            restart.elapsed() < self.delay,
            "the restart took {:?}: longer than a's handoff delay, so it tests nothing",
            restart.elapsed()
        );
    }

    /// Asserts that b owns `keys` again and each continues from `limit - spent`: b asked directly
    /// (it holds the query until a's handoff is complete, or its join wait ends), then through a.
    async fn assert_keys_back_on_b(&self, keys: &[String], spent: i64, limit: i64, what: &str) {
        let mut via_b = client(&self.b.grpc).await;
        let direct = one(&mut via_b, token(&keys[0], 0, limit, 600_000)).await;
        assert_eq!(
            (direct.error.as_str(), direct.remaining),
            ("", limit - spent),
            "{what}"
        );
        let mut via_a = client(&self.a.grpc).await;
        let answer = one(&mut via_a, token(&keys[1], 0, limit, 600_000)).await;
        assert_eq!(
            answer.metadata.get("owner"),
            Some(&self.b.grpc),
            "b owns the key again"
        );
        assert_counts_continue(&mut via_a, keys, spent, limit).await;
    }
}

/// A node that restarts before its peers' handoff delay has passed: to them the ring looks
/// unchanged (it left and came back between two looks), yet the keys it handed over on leaving
/// must go back to it. Before the peer list tracked when each peer entered it, the peers kept
/// those keys, never told the restarted node "complete", and it started them from zero after its
/// join wait: a whole extra limit. The long delay makes the coalescing certain; the long join
/// wait makes the restarted node wait for its peers rather than give up first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_quicker_than_the_handoff_delay_gets_its_keys_back() {
    let mut pair = SlowHandoffPair::start("handoff-bounce", Duration::from_secs(2)).await;
    let keys = pair.keys_of_b("bounce", 20);
    let mut via_a = client(&pair.a.grpc).await;
    spend(&mut via_a, &keys, 8, 10).await;

    let restart = Instant::now();
    assert_eq!(
        pair.b.terminate().await,
        Some(0),
        "a graceful leave exits 0"
    );
    pair.b.spawn();
    wait_for_membership(&[&pair.a, &pair.b]).await;
    pair.assert_restart_within_the_delay(restart);
    pair.assert_keys_back_on_b(&keys, 8, 10, "b started the key from zero")
        .await;
    let log = std::fs::read_to_string(pair.dir.path().join("b.log")).unwrap_or_default();
    assert!(
        !log.contains("did not complete their handoff"),
        "a told the restarted b that its handoff was complete:\n{log}"
    );
}

/// A restarted node must not answer on its own in the moment between opening its port and
/// learning its peers from etcd: its ring would hold only itself, so every key would start from a
/// full bucket there. It does not today (the port is bound before discovery starts, but served
/// only after etcd's first list, and the handoff's wait is registered before the first call); this
/// guards that order. It was a candidate cause of the few hits over the limit bench/chaos.sh's
/// rolling restart showed now and then, and passed before any change, so it is not that cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_answers_nothing_alone_before_it_knows_its_peers() {
    let etcd = Etcd::start().await;
    let prefix = unique_prefix("handoff-first-list");
    let dir = tempfile::tempdir().unwrap();
    let args = etcd_args(&etcd, &prefix);
    let a = Proc::start(&args, dir.path().join("a.log"));
    let mut b = Proc::start(&args, dir.path().join("b.log"));
    wait_for_membership(&[&a, &b]).await;
    let members = [a.peer(), b.peer()];
    let keys = keys_owned_by(&members, &b.grpc, "first-list", 20);
    let mut via_a = client(&a.grpc).await;
    // Wait until b answers through a (the start's handoffs are over), then use up every key.
    let ready = eventually(Duration::from_secs(30), || {
        let mut via_a = via_a.clone();
        let key = keys[0].clone();
        async move {
            via_a
                .get_rate_limits(proto::GetRateLimitsReq {
                    requests: vec![token(&key, 0, 10, 600_000)],
                })
                .await
                .is_ok_and(|answer| answer.into_inner().responses[0].error.is_empty())
        }
    })
    .await;
    assert!(ready, "a never answered b's keys");
    spend(&mut via_a, &keys, 10, 10).await;

    assert_eq!(b.terminate().await, Some(0), "a graceful leave exits 0");
    b.spawn();
    // Call b from the moment its port accepts, one key after another, each already used up: the
    // answer must be OVER_LIMIT (or an error), never a fresh bucket. Bounded: 20 s to come up,
    // then one pass over the keys.
    let deadline = Instant::now() + Duration::from_secs(20);
    let channel = loop {
        match tonic::transport::Endpoint::from_shared(format!("http://{}", b.grpc))
            .expect("an address")
            .connect()
            .await
        {
            Ok(channel) => break channel,
            Err(error) if Instant::now() > deadline => panic!("b never came up: {error}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    };
    let mut via_b = V1Client::new(channel);
    let mut fresh = Vec::new();
    for key in &keys {
        let Ok(answer) = via_b
            .get_rate_limits(proto::GetRateLimitsReq {
                requests: vec![token(key, 1, 10, 600_000)],
            })
            .await
        else {
            continue;
        };
        let answer = &answer.get_ref().responses[0];
        if answer.error.is_empty() && answer.status == UNDER {
            fresh.push((key.clone(), answer.remaining));
        }
    }
    assert!(
        fresh.is_empty(),
        "the restarted b admitted hits on used-up keys (answered alone before it knew its peers): {fresh:?}"
    );
}

/// A key first used while a peer is away, on the node that owns it in the meantime, goes to the
/// peer when it comes back, even when it comes back within the handoff delay. The pass used to
/// hand off only keys held when the change (the peer leaving) was first seen, and planned against
/// the ring after the delay (the peer back): a key created in between stayed behind, and the
/// peer started it from zero (the few lost hits of bench/chaos.sh's rolling restart, found from
/// its per-key timelines).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_first_used_while_a_peer_restarts_goes_back_to_it() {
    let mut pair = SlowHandoffPair::start("handoff-new-key", Duration::from_secs(3)).await;
    // Keys no one has used yet, which b owns when it is there.
    let keys = pair.keys_of_b("new-while-away", 5);
    let mut via_a = client(&pair.a.grpc).await;

    let restart = Instant::now();
    assert_eq!(
        pair.b.terminate().await,
        Some(0),
        "a graceful leave exits 0"
    );
    // a alone now owns them: the first hits land in a's store, after a saw b leave.
    wait_for_membership(&[&pair.a]).await;
    spend(&mut via_a, &keys, 4, 10).await;
    pair.b.spawn();
    wait_for_membership(&[&pair.a, &pair.b]).await;
    pair.assert_restart_within_the_delay(restart);
    pair.assert_keys_back_on_b(
        &keys,
        4,
        10,
        "b started a key first used while it was away from zero",
    )
    .await;
}

/// Kills `proc` with SIGKILL (no leave, no handoff: a crash).
fn crash(proc: &mut Proc) {
    if let Some(mut child) = proc.child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Whether a query of `key` through `client` answers without an item error within `limit`.
async fn answers_within(client: &V1Client<Channel>, key: &str, limit: Duration) -> bool {
    eventually(limit, || {
        let mut client = client.clone();
        let key = key.to_string();
        async move {
            one(&mut client, token(&key, 0, 10, 600_000))
                .await
                .error
                .is_empty()
        }
    })
    .await
}

/// A peer restarted after a crash (on the same address, so the peer list never changes) is
/// called again as soon as it calls in, not after the rest of its down period: its first
/// `Transfer` ("complete", sent at its start) marks it up. Before, its keys failed with "owner
/// marked down" for up to `GUBER_PEER_DOWN_MAX_BACKOFF` after it was back (hundreds of item
/// errors in `bench/chaos.sh`). The 20 s backoff puts the failure far from the pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_restarted_after_a_crash_is_called_again_at_once() {
    let etcd = Etcd::start().await;
    let prefix = unique_prefix("handoff-crash");
    let dir = tempfile::tempdir().unwrap();
    let mut args = etcd_args(&etcd, &prefix);
    args.extend([
        "--peer-down-backoff=20s".into(),
        "--peer-down-max-backoff=20s".into(),
        "--etcd-lease-ttl=30s".into(),
    ]);
    let a = Proc::start(&args, dir.path().join("a.log"));
    let mut b = Proc::start(&args, dir.path().join("b.log"));
    wait_for_membership(&[&a, &b]).await;
    let key = keys_owned_by(&[a.peer(), b.peer()], &b.grpc, "crash", 1).remove(0);
    let mut via_a = client(&a.grpc).await;
    let alive = answers_within(&via_a, &key, Duration::from_secs(10)).await;
    assert!(alive, "b answers through a before the crash");

    crash(&mut b);
    let refused = one(&mut via_a, token(&key, 0, 10, 600_000)).await;
    assert!(!refused.error.is_empty(), "the crashed owner cannot answer");
    b.spawn();
    // (Not `wait_for_membership`: a reports the failure as unhealthy for 30 s.)
    let _ = client(&b.grpc).await;
    let back = Instant::now();
    let answered = answers_within(&via_a, &key, Duration::from_secs(8)).await;
    assert!(
        answered,
        "a still refuses b's keys {:?} after b came back (its down period is 20 s)",
        back.elapsed()
    );
}

/// A leaving node waits until its peers no longer list it. It used to ask with `HealthCheck`,
/// which answers UNAVAILABLE (without the list) while the peer's own calls failed recently, so
/// one peer that had seen a crash held every leave for the whole `GUBER_HANDOFF_LEAVE_WAIT`.
/// `Transfer` now answers whether the sender is still listed. The 30 s leave wait puts the
/// failure far from the pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leave_is_not_held_up_by_a_peer_that_saw_a_failure() {
    let etcd = Etcd::start().await;
    let prefix = unique_prefix("handoff-unhealthy");
    let dir = tempfile::tempdir().unwrap();
    let mut args = etcd_args(&etcd, &prefix);
    args.extend([
        "--handoff-leave-wait=30s".into(),
        "--etcd-lease-ttl=30s".into(),
        "--peer-down-backoff=100ms".into(),
        "--peer-down-max-backoff=100ms".into(),
    ]);
    let a = Proc::start(&args, dir.path().join("a.log"));
    let mut b = Proc::start(&args, dir.path().join("b.log"));
    let mut c = Proc::start(&args, dir.path().join("c.log"));
    wait_for_membership(&[&a, &b, &c]).await;
    // a sees a call to b fail: it reports itself unhealthy for GUBER_PEER_FAILURE_WINDOW (30 s).
    let key = keys_owned_by(&[a.peer(), b.peer(), c.peer()], &b.grpc, "unhealthy", 1).remove(0);
    let mut via_a = client(&a.grpc).await;
    crash(&mut b);
    let refused = one(&mut via_a, token(&key, 0, 10, 600_000)).await;
    assert!(!refused.error.is_empty(), "the crashed owner cannot answer");
    b.spawn();
    // (a cannot be asked: it reports itself unhealthy now, which is the point.)
    let via_b = client(&b.grpc).await;
    let b_sees_all = eventually(Duration::from_secs(20), || {
        let mut via_b = via_b.clone();
        async move {
            via_b
                .health_check(proto::HealthCheckReq {})
                .await
                .is_ok_and(|health| health.get_ref().local_peers.len() == 3)
        }
    })
    .await;
    assert!(b_sees_all, "b came back and sees the three nodes");
    assert!(
        via_a.health_check(proto::HealthCheckReq {}).await.is_err(),
        "a reports the recent failure"
    );

    let leaving = Instant::now();
    assert_eq!(c.terminate().await, Some(0), "a graceful leave exits 0");
    let took = leaving.elapsed();
    let log = std::fs::read_to_string(dir.path().join("c.log")).unwrap_or_default();
    assert!(
        took < Duration::from_secs(10) && !log.contains("did not confirm the leave"),
        "the leave took {took:?} (leave wait 30 s):\n{log}"
    );
}

/// Envoy RLS counters are ordinary buckets on the ring: graceful leaves move them like any other
/// key. Two of three nodes leave in turn; every counter, wherever it lived, must still be spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rls_counters_survive_graceful_leaves() {
    use envoy_types::pb::envoy::service::ratelimit::v3::{
        rate_limit_response::Code, rate_limit_service_client::RateLimitServiceClient,
    };
    // A day window: a test of a few seconds would only see a reset across midnight UTC.
    let seconds_into_day = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 86_400;
    if seconds_into_day > 86_400 - 60 {
        tokio::time::sleep(Duration::from_secs(86_400 - seconds_into_day + 1)).await;
    }
    let etcd = Etcd::start().await;
    let prefix = unique_prefix("handoff-rls");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rls.yaml");
    std::fs::write(
        &config,
        "domain: leave\ndescriptors:\n  - key: user\n    rate_limit:\n      unit: day\n      requests_per_unit: 3\n",
    )
    .unwrap();
    let mut args = etcd_args(&etcd, &prefix);
    args.push(format!("--rls-config={}", config.display()));
    let a = Proc::start(&args, dir.path().join("a.log"));
    let mut b = Proc::start(&args, dir.path().join("b.log"));
    let mut c = Proc::start(&args, dir.path().join("c.log"));
    wait_for_membership(&[&a, &b, &c]).await;
    let mut via_a = RateLimitServiceClient::connect(format!("http://{}", a.grpc))
        .await
        .expect("a answers RLS");
    let users: Vec<String> = (0..12).map(|i| format!("user-{i}")).collect();
    for user in &users {
        let request = crate::rls::request("leave", &[&[("user", user.as_str())]]);
        for spent in 1..=3 {
            let answer = crate::rls::call(&mut via_a, &request).await;
            assert_eq!(
                answer.overall_code,
                Code::Ok as i32,
                "{user}: hit {spent} of 3"
            );
        }
    }
    assert_eq!(b.terminate().await, Some(0));
    wait_for_membership(&[&a, &c]).await;
    assert_eq!(c.terminate().await, Some(0));
    wait_for_membership(&[&a]).await;
    for user in &users {
        let request = crate::rls::request("leave", &[&[("user", user.as_str())]]);
        let answer = crate::rls::call(&mut via_a, &request).await;
        assert_eq!(
            answer.overall_code,
            Code::OverLimit as i32,
            "{user}: the counter was lost in a leave"
        );
    }
}

/// Per-run figures of the rolling restart.
#[derive(Default)]
struct Load {
    calls: AtomicU64,
    errors: AtomicU64,
    admitted: Mutex<HashMap<String, i64>>,
    first_error: Mutex<Option<String>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_under_load_has_no_errors_and_no_over_admission() {
    let etcd = Etcd::start().await;
    let prefix = unique_prefix("handoff-rolling");
    let dir = tempfile::tempdir().unwrap();
    let args = etcd_args(&etcd, &prefix);
    let mut nodes = vec![
        Proc::start(&args, dir.path().join("n0.log")),
        Proc::start(&args, dir.path().join("n1.log")),
        Proc::start(&args, dir.path().join("n2.log")),
    ];
    wait_for_membership(&nodes.iter().collect::<Vec<_>>()).await;

    // 30 watched keys spread over the owners, with limits from 20 to 136 so that some run out
    // early and most during the restarts.
    let keys: Vec<(String, i64)> = (0..30)
        .map(|i| (spread_key("rolling", i), 20 + 4 * i as i64))
        .collect();
    let targets: Arc<RwLock<Vec<Option<V1Client<Channel>>>>> = Arc::new(RwLock::new(Vec::new()));
    for node in &nodes {
        let connected = client(&node.grpc).await;
        targets.write().unwrap().push(Some(connected));
    }
    let load = Arc::new(Load::default());
    let stop = Arc::new(AtomicBool::new(false));
    const MAX_CALLS_PER_WORKER: u64 = 100_000;
    let mut workers = Vec::new();
    for worker in 0..4u64 {
        let (targets, load, stop, keys) =
            (targets.clone(), load.clone(), stop.clone(), keys.clone());
        workers.push(tokio::spawn(async move {
            let mut i = worker;
            for _ in 0..MAX_CALLS_PER_WORKER {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                i += 1;
                let (key, limit) = &keys[(i as usize * 7) % keys.len()];
                let target = {
                    let targets = targets.read().unwrap();
                    let live: Vec<&V1Client<Channel>> = targets.iter().flatten().collect();
                    live[i as usize % live.len()].clone()
                };
                let mut target = target;
                load.calls.fetch_add(1, Ordering::Relaxed);
                let result = target
                    .get_rate_limits(proto::GetRateLimitsReq {
                        requests: vec![token(key, 1, *limit, 600_000)],
                    })
                    .await;
                let failure = match result {
                    Ok(answer) => match answer.into_inner().responses.pop() {
                        Some(answer) if answer.error.is_empty() => {
                            if answer.status == UNDER {
                                *load
                                    .admitted
                                    .lock()
                                    .unwrap()
                                    .entry(key.clone())
                                    .or_default() += 1;
                            }
                            None
                        }
                        Some(answer) => Some(answer.error),
                        None => Some("no answer".to_string()),
                    },
                    Err(status) => Some(status.to_string()),
                };
                if let Some(failure) = failure {
                    load.errors.fetch_add(1, Ordering::Relaxed);
                    load.first_error.lock().unwrap().get_or_insert(failure);
                }
            }
        }));
    }

    let started = Instant::now();
    // Pacing, not a wait for something: the load runs against the whole cluster for a while first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for index in 0..nodes.len() {
        // As a load balancer would on not-ready: stop sending to the node, then terminate it.
        targets.write().unwrap()[index] = None;
        assert_eq!(
            nodes[index].terminate().await,
            Some(0),
            "node {index} exits 0"
        );
        nodes[index].spawn();
        wait_for_membership(&nodes.iter().collect::<Vec<_>>()).await;
        let fresh = client(&nodes[index].grpc).await;
        targets.write().unwrap()[index] = Some(fresh);
        // Pacing: the load runs against the restarted node for a while before the next restart.
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        tokio::time::timeout(Duration::from_secs(30), worker)
            .await
            .expect("the load stops")
            .unwrap();
    }

    let calls = load.calls.load(Ordering::Relaxed);
    let errors = load.errors.load(Ordering::Relaxed);
    let admitted = load.admitted.lock().unwrap().clone();
    let mut worst = (0i64, 0i64, String::new());
    let mut exhausted = 0;
    for (key, limit) in &keys {
        let got = admitted.get(key).copied().unwrap_or(0);
        if got == *limit {
            exhausted += 1;
        }
        if got - limit > worst.0 - worst.1 || worst.2.is_empty() {
            worst = (got, *limit, key.clone());
        }
    }
    println!(
        "rolling restart: {calls} calls in {:.1} s, {errors} errors, {exhausted}/{} keys admitted exactly their limit, \
         worst key admitted {} of {} ({})",
        started.elapsed().as_secs_f64(),
        keys.len(),
        worst.0,
        worst.1,
        worst.2
    );
    let over = keys
        .iter()
        .any(|(key, limit)| admitted.get(key).copied().unwrap_or(0) > *limit);
    if errors > 0 || over {
        for (index, node) in nodes.iter().enumerate() {
            let log = std::fs::read_to_string(dir.path().join(format!("n{index}.log")))
                .unwrap_or_default();
            println!("--- node {index} ({}) log ---\n{log}", node.grpc);
        }
    }
    assert_eq!(
        errors,
        0,
        "client errors; first: {:?}",
        load.first_error.lock().unwrap()
    );
    for (key, limit) in &keys {
        let got = admitted.get(key).copied().unwrap_or(0);
        assert!(
            got <= *limit,
            "{key} admitted {got} with a limit of {limit}"
        );
    }
    assert!(
        exhausted > 0,
        "the load ran some keys out, so over-admission would show"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_restores_counts_on_a_single_node_and_survives_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("ringlimit.snapshot");
    let args = vec![format!("--snapshot-path={}", snapshot.display())];
    let log = dir.path().join("node.log");
    let mut node = Proc::start(&args, log.clone());
    let keys: Vec<String> = (0..50).map(|i| spread_key("snap", i)).collect();
    let mut api = client(&node.grpc).await;
    spend(&mut api, &keys, 3, 10).await;
    // A bucket whose window ends before the restart is not restored.
    let short = one(&mut api, token("short-lived", 5, 10, 300)).await;
    assert_eq!(short.remaining, 5);
    assert_eq!(node.terminate().await, Some(0));
    assert!(snapshot.is_file(), "the snapshot was written");
    tokio::time::sleep(Duration::from_millis(400)).await;

    node.spawn();
    let mut api = client(&node.grpc).await;
    assert_counts_continue(&mut api, &keys, 3, 10).await;
    let fresh = one(&mut api, token("short-lived", 0, 10, 300)).await;
    assert_eq!(fresh.remaining, 10, "an expired bucket is not restored");
    assert_eq!(node.terminate().await, Some(0));

    // A corrupt file: a clear warning, an empty start, never a crash.
    std::fs::write(
        &snapshot,
        b"RLSN\0\0\0\x01 this is not protobuf \xff\xff\xff",
    )
    .unwrap();
    node.spawn();
    let mut api = client(&node.grpc).await;
    let answer = one(&mut api, token(&keys[0], 1, 10, 600_000)).await;
    assert_eq!(
        (answer.error.as_str(), answer.remaining),
        ("", 9),
        "started empty"
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("cannot restore the snapshot; starting empty"),
        "a clear warning is logged:\n{logged}"
    );
    assert_eq!(node.terminate().await, Some(0));
}
