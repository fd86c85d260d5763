//! Running a node: binding both listeners, serving gRPC and HTTP, and shutting down gracefully.
//!
//! Shutdown follows what load balancers and Kubernetes expect: first report not-ready (LiveCheck,
//! HealthCheck and `grpc.health.v1` all say so) while still answering calls for the drain delay, then
//! stop accepting connections and let in-flight calls finish, bounded by the shutdown timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::batching::{BatchConfig, BatchConfigError};
use crate::clock::{Clock, SystemClock};
use crate::config::ServerConfig;
use crate::global::GlobalOptions;
use crate::grpc::{PeersService, V1Service};
use crate::handoff::{self, HandoffOptions};
use crate::limits;
use crate::metrics::Metrics;
use crate::node::{Node, NodeOptions};
use crate::owner_failure::OwnerFailureOptions;
use crate::peer_auth::{PeerAuthLayer, PeerAuthPolicy};
use crate::peers::client::PeerClientOptions;
use crate::peers::discovery::{self, DiscoveryHandle};
use crate::peers::liveness::LivenessConfig;
use crate::peers::{PeerInfo, PeerList};
use crate::proto;
use crate::request::InputLimits;

/// The gRPC service names reported by `grpc.health.v1`, besides the server as a whole ("").
const HEALTH_SERVICES: [&str; 4] = [
    "",
    "pb.gubernator.V1",
    "pb.gubernator.PeersV1",
    "envoy.service.ratelimit.v3.RateLimitService",
];

/// Why the server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The configured address.
        address: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The batching settings are inconsistent.
    #[error("invalid batching configuration: {0}")]
    Batching(#[from] BatchConfigError),
    /// Peer discovery could not start.
    #[error("peer discovery failed: {0}")]
    Discovery(#[from] discovery::DiscoveryError),
    /// The reflection service could not load the descriptors (a build problem).
    #[error("cannot build gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// The HTTP server failed.
    #[error("HTTP server failed: {0}")]
    Http(std::io::Error),
    /// A server task panicked or was cancelled.
    #[error("server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// A gRPC runtime could not start or ended abnormally (`GUBER_GRPC_RUNTIMES`).
    #[error(transparent)]
    GrpcRuntime(#[from] crate::grpc_runtimes::ShardError),
    /// In-flight calls did not finish within the shutdown timeout.
    #[error("in-flight calls did not finish within {0:?}")]
    ShutdownTimeout(Duration),
    /// The TLS settings or files are unusable (the message names the variable).
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The peer secret settings are unusable (the message names the variable, never the value).
    #[error(transparent)]
    PeerSecret(#[from] crate::peer_auth::PeerSecretError),
    /// The RLS configuration (`GUBER_RLS_CONFIG`) is invalid (the message names file, line, field).
    #[error("invalid RLS configuration: {0}")]
    Rls(#[from] crate::rls::config::ConfigError),
}

/// A node that is serving. Dropping it does not stop it; call [`RunningServer::shutdown`].
pub struct RunningServer {
    grpc_address: SocketAddr,
    http_address: SocketAddr,
    node: Arc<Node>,
    health: HealthReporter,
    /// Keeps `grpc.health.v1` in step with [`Node::serving_alone`]; aborted at shutdown.
    health_task: JoinHandle<()>,
    discovery: DiscoveryHandle,
    stop: watch::Sender<bool>,
    grpc_task: JoinHandle<Result<(), ServerError>>,
    http_task: JoinHandle<std::io::Result<()>>,
    global_task: JoinHandle<()>,
    owner_failure_task: JoinHandle<()>,
    /// Tells the GLOBAL and owner-failure loops to make their final pass and stop; sent only once
    /// the listeners stopped, so hits owed by the last calls are in it.
    flush: watch::Sender<bool>,
    drain_delay: Duration,
    /// The longest a reconciliation call may take (GLOBAL or owner-failure), so the final pass
    /// always gets one try.
    flush_timeout: Duration,
    shutdown_timeout: Duration,
    handoff_task: JoinHandle<()>,
    /// `/allow`, whose idempotent spends outlive their callers; shutdown waits for them
    /// ([`crate::allow::AllowService::close`]).
    allow: Arc<crate::allow::AllowService>,
    /// The reloaders (TLS certificates on SIGHUP, the RLS configuration); they end once `stop`
    /// is sent, and shutdown joins them.
    reloaders: Vec<JoinHandle<()>>,
}

/// How long shutdown waits for a reloader to notice the stop before aborting it.
const RELOADER_STOP_WAIT: Duration = Duration::from_secs(1);

/// Binds both listeners and starts serving `config` with the system clock.
pub async fn start(config: &ServerConfig) -> Result<RunningServer, ServerError> {
    start_with_clock(config, Arc::new(SystemClock)).await
}

/// Like [`start`], with an injected clock (for tests).
pub async fn start_with_clock(
    config: &ServerConfig,
    clock: Arc<dyn Clock>,
) -> Result<RunningServer, ServerError> {
    let tls = crate::tls::from_config(&crate::tls::TlsConfig::from(config))?;
    let peer_auth = PeerAuthPolicy {
        secret: config.peer_secret()?,
        require_client_certificate: tls
            .as_ref()
            .is_some_and(|tls| tls.settings().peers_require_client_certificate()),
    };
    warn_if_peer_plane_open(config, &peer_auth);
    let grpc_listener = bind(&config.grpc_address).await?;
    let http_listener = bind(&config.http_address).await?;
    let grpc_address = local_address(&grpc_listener, &config.grpc_address)?;
    let http_address = local_address(&http_listener, &config.http_address)?;

    // With port 0 the real port is only known now; advertise it unless told otherwise.
    // Under k8s discovery peers list this node as GUBER_K8S_POD_IP:GUBER_K8S_POD_PORT.
    let k8s_address = discovery::k8s::advertise_address(&discovery::DiscoveryOptions::from(config))
        .map_err(discovery::DiscoveryError::from)?;
    let advertise_address = match (k8s_address, config.advertise_address.as_deref()) {
        (Some(pod_address), _) => pod_address,
        (None, Some(address)) if !address.is_empty() => address.to_string(),
        _ if config.grpc_address.ends_with(":0") => grpc_address.to_string(),
        _ => config.grpc_address.clone(),
    };
    let me = PeerInfo {
        grpc_address: advertise_address,
        http_address: http_address.to_string(),
        data_center: config.data_center.clone(),
    };
    let max_request_size = usize::try_from(config.max_request_size).unwrap_or(usize::MAX);
    let peers = PeerList::single(me.clone());
    let metrics = Metrics::new();
    let discovery = discovery::start(
        &discovery::DiscoveryOptions::from(config),
        me,
        peers.clone(),
        &metrics,
    )
    .await?;
    let node = Arc::new(Node::new(NodeOptions {
        cache_size: config.cache_size,
        clock,
        peers,
        peer_clients: PeerClientOptions {
            batch: batch_config(config)?,
            timeout: config.batch_timeout,
            max_message_size: max_request_size,
            liveness: LivenessConfig {
                threshold: config.peer_down_threshold,
                backoff: config.peer_down_backoff,
                max_backoff: config.peer_down_max_backoff,
                probe_timeout: config.batch_timeout,
            },
            tls: tls.as_ref().map(|tls| tls.peer_connector()),
            secret: peer_auth.secret.clone(),
        },
        peer_failure_window: config.peer_failure_window,
        discovery: discovery.backend_status(),
        serve_alone_healthy: config.serve_alone_healthy,
        global: GlobalOptions::from(config),
        metrics,
        limits: InputLimits::from(config),
        admin: crate::admin::AdminOptions {
            http_loopback_only: crate::admin::access::is_loopback(&http_address),
            ..crate::admin::AdminOptions::from(config)
        },
        owner_failure: OwnerFailureOptions::from(config),
    }));

    let allow = Arc::new(crate::allow::AllowService::new(
        Arc::clone(node.router()),
        crate::allow::AllowOptions::from(config),
    ));
    let rls = crate::rls::start(crate::rls::RlsOptions::from(config), &node)?;
    let handoff_options = HandoffOptions::from(config);
    if let Some(path) = &handoff_options.snapshot_path {
        crate::tasks::handoff::restore_snapshot(node.router(), path);
    }
    node.handoff().configure(handoff_options);

    let (health, health_service) = tonic_health::server::health_reporter();
    let initial = serving_status(&node);
    if let Some(message) = node.serving_alone() {
        tracing::warn!(%message, "reporting unhealthy until the discovery backend is reached");
    }
    for service in HEALTH_SERVICES {
        health.set_service_status(service, initial).await;
    }
    let health_task = tokio::spawn(follow_health(Arc::clone(&node), health.clone(), initial));
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(crate::rls::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(crate::rls::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let (stop, stopped) = watch::channel(false);
    // Overload and hostile-client protection (src/limits): concurrency bounds shared by both
    // surfaces (clients and peers in separate pools), per-call deadlines, and a connection bound
    // per listener.
    let admission = limits::AdmissionPools::new(
        config.max_concurrent_requests as usize,
        config.peer_admission_limit(),
    );
    let grpc_connections = limits::ConnectionLimit::new(config.max_connections as usize, "grpc");
    let http_connections = limits::ConnectionLimit::new(config.max_connections as usize, "http");
    // The layers every gRPC call goes through, on tonic's server (TLS, `shared`) and on
    // `crate::grpc_connections` (the per-core runtimes) alike.
    let grpc_layers = tower::ServiceBuilder::new()
        // Outermost: a span for every call, refused ones included (off unless OTEL_* ask).
        .layer(crate::telemetry::TraceLayer::grpc())
        .layer(crate::grpc::oversized_message_layer())
        // The peer plane's one gate: every service but V1, health and reflection. It comes before
        // admission, so calls without the peer credentials cannot take the peers' pool.
        .layer(PeerAuthLayer::new(
            peer_auth,
            node.metrics().peer_auth_refused.clone(),
        ))
        .layer(limits::CallLimitsLayer::<limits::GrpcRejection>::new(
            admission.clone(),
        ));
    let v1_server = crate::grpc::V1Server::new(V1Service::new(Arc::clone(&node)), max_request_size);
    let peers_server =
        crate::grpc::PeersServer::new(PeersService::new(Arc::clone(&node)), max_request_size);
    let rls_server = crate::rls::service::server(Arc::clone(&rls.service), max_request_size);
    let mut grpc_routes = tonic::service::Routes::new(v1_server.clone())
        .add_service(peers_server.clone())
        .add_service(crate::allow::grpc::server(Arc::clone(&allow)))
        .add_service(rls_server.clone())
        .add_service(
            handoff::pb::handoff_server::HandoffServer::new(
                crate::tasks::handoff_service::HandoffService::new(Arc::clone(node.router())),
            )
            .max_decoding_message_size(max_request_size),
        );
    if let Some(admin_views) = crate::admin_views::grpc::service(node.router()) {
        grpc_routes = grpc_routes.add_service(admin_views);
    }
    let grpc_routes = grpc_routes
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .prepare();
    let max_connection_age =
        Some(Duration::from_secs(config.grpc_max_conn_age_sec)).filter(|age| !age.is_zero());
    let keepalive_interval =
        Some(config.grpc_keepalive_interval).filter(|interval| !interval.is_zero());
    let mut builder = tonic::transport::Server::builder()
        .layer(grpc_layers.clone())
        .max_concurrent_streams(config.grpc_max_concurrent_streams)
        .http2_keepalive_interval(keepalive_interval)
        .http2_keepalive_timeout(Some(config.grpc_keepalive_timeout));
    if let Some(age) = max_connection_age {
        builder = builder.max_connection_age(age);
    }
    let grpc_router = builder.add_routes(grpc_routes.clone());
    let http2_settings = crate::grpc_connections::Http2Settings {
        max_concurrent_streams: config.grpc_max_concurrent_streams,
        keepalive_interval,
        keepalive_timeout: config.grpc_keepalive_timeout,
        max_connection_age,
    };
    let grpc_service = grpc_layers.service(crate::grpc::Dispatch::new(
        v1_server,
        peers_server,
        rls_server,
        grpc_routes,
    ));
    // Before serving: a node that joins must know whom it waits for before its first request.
    let handoff_task = crate::tasks::handoff::spawn(Arc::clone(node.router()), stopped.clone());
    // TLS (when configured) is accepted first; the connection bound counts the connections that
    // completed their handshake (the acceptor bounds the handshakes in progress itself).
    // Plaintext connections are served on runtimes of their own (see `crate::grpc_runtimes`);
    // TLS ones, and all when `GUBER_GRPC_RUNTIMES=shared`, on this one.
    let grpc_idle_timeout = config.grpc_idle_timeout;
    let grpc_task = match (&tls, config.grpc_runtimes.shards()) {
        (Some(tls), _) => {
            let serving = grpc_router.serve_with_incoming_shutdown(
                limits::idle::idle_incoming(
                    grpc_connections.limit_incoming(tls.grpc_incoming(grpc_listener)),
                    grpc_idle_timeout,
                ),
                wait_for_stop(stopped.clone()),
            );
            tokio::spawn(async move { serving.await.map_err(ServerError::Grpc) })
        }
        (None, None) => {
            let serving = grpc_router.serve_with_incoming_shutdown(
                limits::idle::idle_incoming(
                    grpc_connections.limit_incoming(limits::nodelay::incoming(grpc_listener)),
                    grpc_idle_timeout,
                ),
                wait_for_stop(stopped.clone()),
            );
            tokio::spawn(async move { serving.await.map_err(ServerError::Grpc) })
        }
        (None, Some(shards)) => {
            let stopped_serving = stopped.clone();
            crate::grpc_runtimes::serve(
                shards,
                // The listener's stream ends at stop, which ends every shard's stream.
                grpc_connections
                    .limit_incoming(limits::nodelay::incoming(grpc_listener))
                    .take_until(wait_for_stop(stopped.clone())),
                move |incoming| {
                    let serving = crate::grpc_connections::serve(
                        limits::idle::idle_incoming(incoming, grpc_idle_timeout),
                        grpc_service.clone(),
                        http2_settings.clone(),
                        wait_for_stop(stopped_serving.clone()),
                    );
                    async move {
                        serving.await;
                        Ok::<(), ServerError>(())
                    }
                },
            )
            .map_err(|source| ServerError::Bind {
                address: grpc_address.to_string(),
                source,
            })?
        }
    };
    let mut reloaders = Vec::with_capacity(2);
    if let Some(tls) = &tls {
        reloaders.push(tls.spawn_reload_on_sighup(stopped.clone()));
    }
    reloaders.push(crate::rls::reload::spawn_reloader(
        Arc::clone(&rls.state),
        stopped.clone(),
    ));

    // The reconcilers keep running while in-flight calls drain, and make their final pass after
    // the listeners stopped (see `RunningServer::shutdown`).
    let (flush, flushing) = watch::channel(false);
    let global_task = tokio::spawn(crate::tasks::global_sync::run(
        Arc::clone(node.router()),
        flushing.clone(),
    ));
    // Sends hits taken locally while owners were unreachable.
    let owner_failure_task = tokio::spawn(crate::tasks::owner_failure::run(
        Arc::clone(node.router()),
        flushing,
    ));

    let http_router = crate::http::gateway::router(Arc::clone(&node), max_request_size)
        .merge(crate::admin_views::resources::routes(Arc::clone(&allow)))
        .merge(crate::allow::http::router(Arc::clone(&allow)))
        .merge(crate::rls::http::router(rls.service, max_request_size))
        .layer(limits::CallLimitsLayer::<crate::http::gateway::HttpRejection>::new(admission))
        .layer(crate::telemetry::TraceLayer::http());
    let http_timeouts = limits::http_server::HttpTimeouts {
        header: config.http_header_timeout,
        body: config.http_body_timeout,
    };
    let http_task = match &tls {
        Some(tls) => tokio::spawn(limits::http_server::serve(
            limits::connections::LimitedListener::new(
                tls.http_incoming(http_listener),
                http_connections,
            ),
            http_router,
            http_timeouts,
            wait_for_stop(stopped),
        )),
        None => tokio::spawn(limits::http_server::serve(
            limits::connections::LimitedListener::new(
                limits::nodelay::listener(http_listener),
                http_connections,
            ),
            http_router,
            http_timeouts,
            wait_for_stop(stopped),
        )),
    };

    tracing::info!(grpc = %grpc_address, http = %http_address, tls = tls.is_some(), "ringlimit is serving");
    Ok(RunningServer {
        grpc_address,
        http_address,
        node,
        health,
        health_task,
        discovery,
        stop,
        grpc_task,
        http_task,
        global_task,
        owner_failure_task,
        flush,
        drain_delay: config.shutdown_drain_delay,
        flush_timeout: config.global_timeout.max(config.batch_timeout),
        shutdown_timeout: config.shutdown_timeout,
        handoff_task,
        allow,
        reloaders,
    })
}

/// How often `grpc.health.v1` is brought in step with the node's health.
const HEALTH_FOLLOW_INTERVAL: Duration = Duration::from_millis(250);

/// What `grpc.health.v1` reports for `node`: not serving while it serves alone without its
/// discovery backend (see [`crate::peers::discovery::health`]). Recent peer-call failures, which
/// make `HealthCheck` unhealthy, do not count here: readiness probes read this, and one dead peer
/// must not take every node out of its Service.
fn serving_status(node: &Node) -> ServingStatus {
    if node.serving_alone().is_some() {
        ServingStatus::NotServing
    } else {
        ServingStatus::Serving
    }
}

/// Updates `grpc.health.v1` whenever [`serving_status`] changes, until aborted.
async fn follow_health(node: Arc<Node>, health: HealthReporter, mut reported: ServingStatus) {
    let mut ticker = tokio::time::interval(HEALTH_FOLLOW_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let status = serving_status(&node);
        if status == reported || node.is_shutting_down() {
            continue;
        }
        match node.serving_alone() {
            Some(message) => tracing::warn!(%message, "reporting unhealthy"),
            None => tracing::info!("discovery backend reached; reporting healthy"),
        }
        for service in HEALTH_SERVICES {
            health.set_service_status(service, status).await;
        }
        reported = status;
    }
}

impl RunningServer {
    /// The bound gRPC address (the real port when configured with port 0).
    pub fn grpc_address(&self) -> SocketAddr {
        self.grpc_address
    }

    /// The bound HTTP address.
    pub fn http_address(&self) -> SocketAddr {
        self.http_address
    }

    /// The node being served.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Serves until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn run_until_signal(self) -> Result<(), ServerError> {
        self.run_until(ShutdownSignal::listen()).await
    }

    /// Serves until `signal` fires (listen for it before [`start`]; see [`ShutdownSignal`]), then
    /// shuts down gracefully.
    pub async fn run_until(self, signal: ShutdownSignal) -> Result<(), ServerError> {
        signal.recv().await;
        tracing::info!("shutdown signal received; draining");
        self.shutdown().await
    }

    /// Shuts down gracefully: report not-ready, leave the cluster, keep answering for the drain
    /// delay, stop accepting connections, wait (at most the shutdown timeout) for in-flight calls
    /// to finish, send what this node still owes other nodes (a final GLOBAL and owner-failure
    /// pass), then write the snapshot (when configured) with whatever could not be delivered.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        self.node.begin_shutdown();
        // From here on only shutdown sets `grpc.health.v1`.
        self.health_task.abort();
        let _ = (&mut self.health_task).await;
        // Graceful leave: hand owned state to the owners without this node while peers still
        // route here, deregister, wait until peers dropped this node, hand off what came meanwhile.
        let handoff = self.node.handoff().options();
        let new_owners = if handoff.on_leave {
            crate::tasks::handoff::leave(self.node.router()).await
        } else {
            Vec::new()
        };
        self.discovery.leave().await;
        crate::tasks::handoff::finish_leave(self.node.router(), &new_owners).await;
        for service in HEALTH_SERVICES {
            self.health
                .set_service_status(service, ServingStatus::NotServing)
                .await;
        }
        if !self.drain_delay.is_zero() {
            tokio::time::sleep(self.drain_delay).await;
        }
        // Receivers may all be gone if both servers already stopped; that is fine.
        let _ = self.stop.send(true);
        let started = tokio::time::Instant::now();
        let servers = async {
            let (grpc, http) = tokio::join!(&mut self.grpc_task, &mut self.http_task);
            grpc??;
            http?.map_err(ServerError::Http)?;
            Ok::<(), ServerError>(())
        };
        let outcome = tokio::time::timeout(self.shutdown_timeout, servers).await;
        if outcome.is_err() {
            // Calls still running past the timeout are cut off, so nothing answers any more
            // while the owed hits are sent and the snapshot is written.
            self.grpc_task.abort();
            self.http_task.abort();
            let _ = tokio::join!(&mut self.grpc_task, &mut self.http_task);
        }
        // The reloaders saw `stop`; join them (a reload in progress finishes first).
        for mut reloader in std::mem::take(&mut self.reloaders) {
            if tokio::time::timeout(RELOADER_STOP_WAIT, &mut reloader)
                .await
                .is_err()
            {
                reloader.abort();
                let _ = reloader.await;
            }
        }
        // Idempotent `/allow` spends whose callers went away still run; they are recorded (and
        // queue what they owe) before the final passes, at most one call's timeout twice.
        if !self.allow.close(self.flush_timeout.saturating_mul(2)).await {
            tracing::warn!("an idempotent /allow spend did not finish before shutdown");
        }
        // Every call has finished: whatever they owe is queued. The final passes get what is
        // left of the shutdown timeout, and at least one call's timeout.
        let _ = self.flush.send(true);
        let flush_budget = self
            .shutdown_timeout
            .saturating_sub(started.elapsed())
            .max(self.flush_timeout.saturating_mul(2));
        let reconcilers = async {
            let (global, owner_failure) =
                tokio::join!(&mut self.global_task, &mut self.owner_failure_task);
            global?;
            owner_failure?;
            Ok::<(), ServerError>(())
        };
        let flushed = tokio::time::timeout(flush_budget, reconcilers).await;
        if flushed.is_err() {
            self.global_task.abort();
            self.owner_failure_task.abort();
            let _ = tokio::join!(&mut self.global_task, &mut self.owner_failure_task);
            tracing::warn!(
                ?flush_budget,
                "the final pass of owed hits did not finish in time"
            );
        }
        self.handoff_task.abort();
        let _ = (&mut self.handoff_task).await;
        // Nothing forwards any more: the peers' batching tasks answer what they hold and end.
        self.node
            .router()
            .peer_clients()
            .close(self.flush_timeout)
            .await;
        let owed = crate::tasks::handoff::take_owed(self.node.router());
        match &handoff.snapshot_path {
            Some(path) => {
                crate::tasks::handoff::save_snapshot_with_owed(self.node.router(), path, &owed)
            }
            None if !owed.is_empty() => tracing::warn!(
                limits = owed.len(),
                "hits owed to other nodes could not be delivered and are lost (set GUBER_SNAPSHOT_PATH to keep them)"
            ),
            None => {}
        }
        match outcome {
            Ok(result) => {
                if let Ok(reconciled) = flushed {
                    reconciled?;
                }
                tracing::info!("ringlimit stopped");
                result
            }
            Err(_) => Err(ServerError::ShutdownTimeout(self.shutdown_timeout)),
        }
    }
}

/// Logs one warning when a cluster's peer plane is open to anyone who reaches the gRPC port.
fn warn_if_peer_plane_open(config: &ServerConfig, policy: &PeerAuthPolicy) {
    if policy.is_open() && config.peer_discovery_type != crate::config::DiscoveryType::None {
        tracing::warn!(
            "the peer plane is unauthenticated: anyone who reaches the gRPC port can overwrite \
             GLOBAL state (PeersV1/UpdatePeerGlobals), spend limits as a peer \
             (PeersV1/GetPeerRateLimits), inject handoff state (ringlimit.v1.Handoff) and read admin \
             stats (ringlimit.v1.Admin); set GUBER_PEER_SECRET (or GUBER_PEER_SECRET_FILE) on every \
             node, or GUBER_TLS_CLIENT_AUTH=require-and-verify, or keep the gRPC port on a private \
             network (see docs/security.md)"
        );
    }
}

/// The batching policy of forwarded items, from `GUBER_BATCH_*` and `GUBER_DISABLE_BATCHING`.
fn batch_config(config: &ServerConfig) -> Result<BatchConfig, BatchConfigError> {
    let limit = usize::try_from(config.batch_limit).unwrap_or(usize::MAX);
    let batch = BatchConfig {
        wait: config.batch_wait,
        limit,
        disabled: config.disable_batching,
        max_queue: limit.saturating_mul(10),
        // Peers share GUBER_MAX_REQUEST_SIZE: a batch never exceeds what the owner accepts.
        max_bytes: crate::batching::budget::MessageBudget::for_limit(
            usize::try_from(config.max_request_size).unwrap_or(usize::MAX),
        )
        .max_bytes(),
        ..BatchConfig::default()
    };
    batch.validate()?;
    Ok(batch)
}

async fn bind(address: &str) -> Result<TcpListener, ServerError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| ServerError::Bind {
            address: address.to_string(),
            source,
        })
}

fn local_address(listener: &TcpListener, address: &str) -> Result<SocketAddr, ServerError> {
    listener.local_addr().map_err(|source| ServerError::Bind {
        address: address.to_string(),
        source,
    })
}

async fn wait_for_stop(mut stopped: watch::Receiver<bool>) {
    // An error means the sender is gone, which also means stop.
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
/// SIGINT (Ctrl-C) or SIGTERM, listened for from the moment [`ShutdownSignal::listen`] is called.
///
/// Create it before [`start`]: a SIGTERM that arrives after the listeners answer but before the
/// process listens for it would otherwise kill the process at once (the default action), with no
/// drain, no handoff and no snapshot. A signal that arrives early is kept until [`recv`](Self::recv).
pub struct ShutdownSignal {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignal {
    /// Starts listening for SIGTERM now (SIGINT is listened for once [`recv`](Self::recv) runs).
    pub fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let terminate = match signal(SignalKind::terminate()) {
                Ok(terminate) => Some(terminate),
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the server");
                    None
                }
            };
            Self { terminate }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    /// Resolves on SIGINT or SIGTERM.
    pub async fn recv(self) {
        let interrupt = tokio::signal::ctrl_c();
        #[cfg(unix)]
        if let Some(mut terminate) = self.terminate {
            tokio::select! {
                _ = interrupt => {}
                _ = terminate.recv() => {}
            }
            return;
        }
        let _ = interrupt.await;
    }
}
