//! What [`RunningServer::shutdown`] joins, observed at the moment it returns: each test leaves the
//! task it is about busy when the node is told to stop, so it passes only if shutdown waited for
//! that task rather than for the task to happen to end first. Without the reconcilers' join, the
//! `/allow` spends' close or the reloaders' join in `shutdown`, the test about it fails.
//!
//! They replace `server::tests`' two shutdown tests, which start idle nodes: the reloader test
//! stays green without the reloaders' join (an idle reloader ends on its own before shutdown
//! returns), and the router test without the `/allow` close (no spend is in flight). Those two are
//! left to be removed with the next change to `server.rs`.

use std::sync::Arc;
use std::time::Duration;

use crate::algorithms::{Behavior, Bucket, Status, TokenBucket};
use crate::proto;
use crate::request::LimitKey;
use crate::server::{RunningServer, start};

async fn start_on_loopback(extra: &[&str]) -> RunningServer {
    let mut args = vec!["--grpc-address=127.0.0.1:0", "--http-address=127.0.0.1:0"];
    args.extend_from_slice(extra);
    let config = crate::config::server_config_from_args(args).expect("valid configuration");
    start(&config).await.expect("the node starts")
}

/// Every task that holds the router has ended when `shutdown` returns, including one still busy
/// then: here the GLOBAL reconciler's last pass, which sends the hits this node owes to an owner
/// that accepts the connection and never answers, so the pass lasts `GUBER_GLOBAL_TIMEOUT`.
#[tokio::test]
async fn shutdown_returns_after_every_task_holding_the_router_ended() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let silent_address = silent.local_addr().expect("bound").to_string();
    let peers = format!("--peers={silent_address}");
    // No sync before the shutdown: its last pass is the first call to the silent owner.
    let server = start_on_loopback(&[
        "--peer-discovery-type=static",
        &peers,
        "--global-sync-wait=1h",
        "--global-timeout=1s",
    ])
    .await;
    let router = server.node().router();
    let name = (0..10_000)
        .map(|i| format!("owed-{i}"))
        .find(|name| {
            router.owner_of(&LimitKey::new(name, "k")).as_deref() == Some(silent_address.as_str())
        })
        .expect("a key the silent peer owns");
    // This node already holds a copy of the limit, so it answers from it and owes the hit.
    let now_ms = router.evaluator().clock().now_ms();
    router.evaluator().store().put(
        LimitKey::new(&name, "k"),
        Bucket::Token(TokenBucket {
            status: Status::UnderLimit,
            limit: 10,
            duration: 60_000,
            remaining: 10,
            created_at: now_ms,
            expire_at: now_ms + 60_000,
        }),
    );
    let item = proto::RateLimitReq {
        name,
        unique_key: "k".into(),
        hits: 1,
        limit: 10,
        duration: 60_000,
        behavior: Behavior::GLOBAL.bits(),
        ..Default::default()
    };
    let answers = server
        .node()
        .get_rate_limits(vec![item])
        .await
        .expect("answered from this node's copy");
    assert_eq!((answers[0].error.as_str(), answers[0].remaining), ("", 9));
    let router = Arc::downgrade(server.node().router());
    server.shutdown().await.expect("clean shutdown");
    assert!(
        router.upgrade().is_none(),
        "a task still holds the router after shutdown returned"
    );
}

/// An idempotent `/allow` spend whose caller went away still holds the router while it runs, and
/// shutdown waits for it: here the limit's owner never answers, so the spend runs until the
/// forward times out, after the HTTP server has stopped.
#[tokio::test]
async fn shutdown_waits_for_the_allow_spends_whose_callers_left() {
    use tokio::io::AsyncWriteExt;
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let silent_address = silent.local_addr().expect("bound").to_string();
    let peers = format!("--peers={silent_address}");
    let server =
        start_on_loopback(&["--peer-discovery-type=static", &peers, "--batch-timeout=1s"]).await;
    let router = server.node().router();
    // This node keeps the user's records; the silent peer owns the user's limit.
    let user = (0..10_000)
        .map(|i| format!("user-{i}"))
        .find(|user| {
            router
                .owner_of(&LimitKey::new(crate::allow::RECORDS_RING_NAME, user))
                .is_none()
                && router
                    .owner_of(&LimitKey::new(crate::allow::limit_name("default"), user))
                    .as_deref()
                    == Some(silent_address.as_str())
        })
        .expect("a user whose limit the silent peer owns");
    let mut caller = tokio::net::TcpStream::connect(server.http_address())
        .await
        .expect("connects");
    let call = format!(
        "POST /allow?user_id={user} HTTP/1.1\r\nHost: node\r\nIdempotency-Key: k1\r\n\
         Content-Length: 0\r\n\r\n"
    );
    caller.write_all(call.as_bytes()).await.expect("sent");
    // The spend has started (it waits for the silent owner); its caller goes away.
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(caller);
    let router = Arc::downgrade(server.node().router());
    server.shutdown().await.expect("clean shutdown");
    assert!(
        router.upgrade().is_none(),
        "an /allow spend still holds the router after shutdown returned"
    );
}

/// The RLS reloader has ended when `shutdown` returns, even when a reload was under way: the
/// configuration file changes just before the shutdown, so the reloader is waiting out its
/// debounce when it is told to stop.
#[tokio::test]
async fn shutdown_joins_the_rls_reloader() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("rls.yaml");
    std::fs::write(&file, "domain: d\n").expect("written");
    let flag = format!("--rls-config={}", file.display());
    let server = start_on_loopback(&[&flag]).await;
    assert!(crate::rls::reload::watched::is_watched(&file));
    std::fs::write(&file, "domain: e\n").expect("written");
    // Long enough for the change to reach the reloader, well within its debounce.
    tokio::time::sleep(Duration::from_millis(30)).await;
    server.shutdown().await.expect("clean shutdown");
    assert!(
        !crate::rls::reload::watched::is_watched(&file),
        "the RLS reloader still runs after shutdown returned"
    );
}
