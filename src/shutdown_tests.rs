//! What [`RunningServer::shutdown`] joins, observed at the moment it returns: each test leaves the
//! task it is about busy when the node is told to stop, so it passes only if shutdown waited for
//! that task rather than for the task to happen to end first. Without the reconcilers' join, the
//! `/allow` spends' close or the reloaders' join in `shutdown`, the test about it fails.
//!
//! They replace two earlier tests that started idle nodes: that reloader test stayed green without
//! the reloaders' join (an idle reloader ends on its own before shutdown returns), and that router
//! test without the `/allow` close (no spend was in flight).

use std::sync::Arc;
use std::time::Duration;

use crate::algorithms::{Behavior, Bucket, Status, TokenBucket};
use crate::proto;
use crate::request::LimitKey;
use crate::server::RunningServer;
use crate::test_nodes::{node, node_with_a_silent_peer};

/// Shuts `server` down; whether anything still held its router when shutdown returned.
async fn router_held_after_shutdown(server: RunningServer) -> bool {
    let router = Arc::downgrade(server.node().router());
    server.shutdown().await.expect("clean shutdown");
    router.upgrade().is_some()
}

/// Every task that holds the router has ended when `shutdown` returns, including one still busy
/// then: here the GLOBAL reconciler's last pass, which sends the hits this node owes to an owner
/// that accepts the connection and never answers, so the pass lasts `GUBER_GLOBAL_TIMEOUT`.
#[tokio::test]
async fn shutdown_returns_after_every_task_holding_the_router_ended() {
    // No sync before the shutdown: its last pass is the first call to the silent owner.
    let (server, silent) =
        node_with_a_silent_peer(&["--global-sync-wait=1h", "--global-timeout=1s"]).await;
    let key = silent.owns_first(
        &server,
        |i| LimitKey::new(format!("owed-{i}"), "k"),
        |_| true,
    );
    // This node already holds a copy of the limit, so it answers from it and owes the hit.
    let evaluator = server.node().router().evaluator();
    let now_ms = evaluator.clock().now_ms();
    evaluator.store().put(
        key.clone(),
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
        name: key.name,
        unique_key: key.unique_key,
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
    assert!(
        !router_held_after_shutdown(server).await,
        "a task still holds the router after shutdown returned"
    );
}

/// An idempotent `/allow` spend whose caller went away still holds the router while it runs, and
/// shutdown waits for it: here the limit's owner never answers, so the spend runs until the
/// forward times out, after the HTTP server has stopped.
#[tokio::test]
async fn shutdown_waits_for_the_allow_spends_whose_callers_left() {
    use tokio::io::AsyncWriteExt;
    let (server, silent) = node_with_a_silent_peer(&["--batch-timeout=1s"]).await;
    // The silent peer owns the user's limit; this node keeps the user's records.
    let router = server.node().router();
    let user = silent
        .owns_first(
            &server,
            |i| LimitKey::new(crate::allow::limit_name("default"), format!("user-{i}")),
            |key| {
                let records = LimitKey::new(crate::allow::RECORDS_RING_NAME, &key.unique_key);
                router.owner_of(&records).is_none()
            },
        )
        .unique_key;
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
    assert!(
        !router_held_after_shutdown(server).await,
        "an /allow spend still holds the router after shutdown returned"
    );
}

/// The RLS reloader has ended when `shutdown` returns, even when a reload was under way: the
/// configuration file changes just before the shutdown, so the reloader is waiting out its
/// debounce when it is told to stop.
#[tokio::test]
async fn shutdown_joins_the_rls_reloader() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config_file = dir.path().join("rls.yaml");
    std::fs::write(&config_file, "domain: d\n").expect("written");
    let server = node(&[&format!("--rls-config={}", config_file.display())]).await;
    let watched = || crate::rls::reload::watched::is_watched(&config_file);
    assert!(watched());
    std::fs::write(&config_file, "domain: e\n").expect("written");
    // Long enough for the change to reach the reloader, well within its debounce.
    tokio::time::sleep(Duration::from_millis(30)).await;
    server.shutdown().await.expect("clean shutdown");
    assert!(
        !watched(),
        "the RLS reloader still runs after shutdown returned"
    );
}
