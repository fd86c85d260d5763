//! The watcher itself: the Kubernetes client, the list-and-watch loop and its backoff (the I/O
//! half of Kubernetes discovery; the rules are in [`super::peers`] and [`super::settings`]).

use std::fmt::Debug;
use std::hash::BuildHasher;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
use prometheus::IntCounter;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::K8sOptions;
use super::peers::{Change, WatchedObjects};
use super::settings::{K8sSettings, SettingsError, Watched};
use crate::peers::discovery::etcd::Backoff;
use crate::peers::{PeerInfo, PeerList};

/// How long [`K8sDiscovery::start`] waits for the first complete list before serving alone.
pub const START_WAIT: Duration = Duration::from_secs(5);
/// How long [`K8sDiscovery::stop`] waits for the watcher task to end before aborting it.
const STOP_WAIT: Duration = Duration::from_secs(1);
/// The first retry delay after a failed list or watch.
const BACKOFF_MIN: Duration = Duration::from_millis(800);
/// The longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Why Kubernetes discovery could not start.
#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    /// A `GUBER_K8S_*` setting is missing or wrong.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The kubeconfig file named by `GUBER_K8S_KUBECONFIG` is unusable.
    #[error("k8s discovery: GUBER_K8S_KUBECONFIG: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// Neither a kubeconfig nor the in-cluster service account could be loaded.
    #[error("k8s discovery: no Kubernetes configuration (in-cluster or kubeconfig): {0}")]
    Infer(#[from] kube::config::InferConfigError),
    /// The client could not be built from the configuration.
    #[error("k8s discovery: cannot build the Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// A running Kubernetes watcher.
pub struct K8sDiscovery {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// What the watcher task needs besides its stream.
struct Publisher {
    me: PeerInfo,
    port: u16,
    peers: PeerList,
    synced: watch::Sender<bool>,
}

impl K8sDiscovery {
    /// Builds the client (`GUBER_K8S_KUBECONFIG`, else `KUBECONFIG`/`~/.kube/config`, else the
    /// in-cluster service account), starts the watcher, and waits up to [`START_WAIT`] for the
    /// first list. `me` must already carry the pod address ([`K8sSettings::me_address`]).
    pub async fn start(
        config: &K8sOptions,
        me: PeerInfo,
        peers: PeerList,
        errors: IntCounter,
    ) -> Result<Self, K8sError> {
        let settings = K8sSettings::from_config(config)?;
        let client = client(&settings).await?;
        let (synced, first_list) = watch::channel(false);
        let publisher = Publisher {
            me,
            port: settings.pod_port,
            peers,
            synced,
        };
        let (stop, stopped) = watch::channel(false);
        let watcher_config = watcher::Config::default().labels(&settings.label_selector);
        let namespace = settings.namespace.as_str();
        tracing::info!(
            namespace = %settings.namespace,
            selector = %settings.label_selector,
            mechanism = ?settings.mechanism,
            me = %settings.me_address(),
            "k8s discovery: watching"
        );
        // The task ends when `stop` says so or is dropped (a start that failed later).
        let watching = Watching {
            client,
            namespace,
            config: watcher_config,
            publisher,
            errors,
            stopped,
        };
        let task = match settings.watched {
            Watched::EndpointSlices => watching.spawn(super::peers::slice_addresses),
            Watched::Endpoints => watching.spawn(super::peers::endpoints_addresses),
            Watched::Pods => watching.spawn(super::peers::pod_address),
        };
        if !crate::peers::discovery::first_within(START_WAIT, first_list).await {
            tracing::warn!(
                wait = ?START_WAIT,
                "k8s discovery: no complete list from the API server yet; serving alone while \
                 the watcher retries"
            );
        }
        Ok(Self { stop, task })
    }

    /// Stops watching (the task is joined, or aborted after a second).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if timeout(STOP_WAIT, &mut task).await.is_err() {
            task.abort();
        }
    }
}

/// The Kubernetes client for `settings`.
async fn client(settings: &K8sSettings) -> Result<Client, K8sError> {
    let config = match &settings.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}

/// What a watcher task needs, whichever kind of object it watches.
struct Watching<'a> {
    client: Client,
    namespace: &'a str,
    config: watcher::Config,
    publisher: Publisher,
    errors: IntCounter,
    stopped: watch::Receiver<bool>,
}

impl Watching<'_> {
    /// Spawns the task that watches the namespace's `K` objects and publishes their `addresses`.
    fn spawn<K>(self, addresses: fn(&K) -> Vec<std::net::IpAddr>) -> JoinHandle<()>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + Debug
            + DeserializeOwned
            + Send
            + Sync
            + 'static,
        K::DynamicType: Default,
    {
        let api: Api<K> = Api::namespaced(self.client, self.namespace);
        let events = watcher::watcher(api, self.config);
        tokio::spawn(run(
            events,
            addresses,
            self.publisher,
            self.errors,
            self.stopped,
        ))
    }
}

/// The watcher loop: folds events into the watched objects and publishes the peer list.
async fn run<K, S>(
    events: S,
    addresses: fn(&K) -> Vec<std::net::IpAddr>,
    publisher: Publisher,
    errors: IntCounter,
    mut stopped: watch::Receiver<bool>,
) where
    K: Resource + Clone + Debug + DeserializeOwned + Send + 'static,
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Send,
{
    let mut events = std::pin::pin!(events);
    let mut objects = WatchedObjects::default();
    let mut failures: u64 = 0;
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    let random = std::collections::hash_map::RandomState::new();
    loop {
        let next = tokio::select! {
            next = events.next() => next,
            _ = stopped.wait_for(|stop| *stop) => break,
        };
        let event = match next {
            None => break,
            Some(Err(error)) => {
                errors.inc();
                failures += 1;
                if failures == 1 {
                    tracing::warn!(
                        %error,
                        "k8s discovery: the watch failed; keeping the last peer list and retrying \
                         with backoff (further failures are counted in \
                         ringlimit_kubernetes_watch_errors_total, not logged)"
                    );
                } else {
                    tracing::debug!(%error, failures, "k8s discovery: the watch failed again");
                }
                let delay = super::peers::jittered(backoff.next_delay(), random.hash_one(failures));
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stopped.wait_for(|stop| *stop) => break,
                }
                continue;
            }
            Some(Ok(event)) => event,
        };
        // `Init` comes before every list attempt, successful or not: only data from the server
        // ends an outage.
        if !matches!(event, Event::Init) {
            backoff.reset();
            if failures > 0 {
                tracing::info!(failures, "k8s discovery: the watch works again");
                failures = 0;
            }
        }
        let change = match event {
            Event::Init => Change::Relist,
            Event::InitApply(object) => Change::Listed(object.name_any(), addresses(&object)),
            Event::InitDone => Change::ListDone,
            Event::Apply(object) => Change::Applied(object.name_any(), addresses(&object)),
            Event::Delete(object) => Change::Deleted(object.name_any()),
        };
        let done = matches!(change, Change::ListDone);
        if objects.apply(change) {
            publish(&objects, &publisher);
        }
        if done {
            publisher.synced.send_replace(true);
        }
    }
}

/// Replaces the peer list with the ready addresses, unless there are none.
fn publish(objects: &WatchedObjects, publisher: &Publisher) {
    let list = super::peers::peers_from_ips(objects.ips(), publisher.port, &publisher.me);
    if list.is_empty() {
        tracing::warn!("k8s discovery: no ready address; keeping the last peer list");
        return;
    }
    let old = publisher.peers.snapshot();
    let diff = crate::peers::discovery::etcd::diff_peers(&old, &list);
    if publisher.peers.replace(list) {
        for address in &diff.joined {
            tracing::info!(peer = %address, "peer joined");
        }
        for address in &diff.left {
            tracing::info!(peer = %address, "peer left");
        }
    }
}
