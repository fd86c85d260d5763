//! The loaded configuration, and keeping it current without a restart.
//!
//! `GUBER_RLS_CONFIG` names one file, or a directory whose `*.yaml`/`*.yml` files each hold one
//! domain (hidden entries such as Kubernetes' `..data` are skipped, symlinks are followed). A
//! change under it (seen through `notify`) or SIGHUP reloads the whole set; a set with any error is
//! rejected as a whole, logged and counted (`ringlimit_rls_config_load_error_total`), and the last
//! good configuration stays: a broken edit never takes limits away or the node out of service. At
//! start an error stops the start instead, so a bad rollout fails fast.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::config::{ConfigError, RlsConfig, parse_domain};
use super::metrics::RlsMetrics;

/// The most files a configuration directory may hold.
pub const MAX_FILES: usize = 1000;

/// How long file events are gathered before one reload (editors write in several steps).
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// The current configuration and where it comes from.
#[derive(Debug)]
pub struct RlsState {
    source: Option<PathBuf>,
    current: ArcSwapOption<RlsConfig>,
    last_error: Mutex<Option<String>>,
    metrics: Arc<RlsMetrics>,
}

impl RlsState {
    /// Loads `source` (none: no configuration, every call is refused). An error fails the start.
    pub fn load(source: Option<PathBuf>, metrics: Arc<RlsMetrics>) -> Result<Self, ConfigError> {
        let current = match &source {
            Some(path) => {
                let config = read_source(path).inspect_err(|_| metrics.config_load_error.inc())?;
                metrics.config_load_success.inc();
                tracing::info!(path = %path.display(), domains = config.domains.len(), "RLS configuration loaded");
                Some(Arc::new(config))
            }
            None => None,
        };
        Ok(Self {
            source,
            current: ArcSwapOption::new(current),
            last_error: Mutex::new(None),
            metrics,
        })
    }

    /// A state holding `config` with no source (for tests and embedding).
    pub fn fixed(config: RlsConfig, metrics: Arc<RlsMetrics>) -> Self {
        Self {
            source: None,
            current: ArcSwapOption::new(Some(Arc::new(config))),
            last_error: Mutex::new(None),
            metrics,
        }
    }

    /// The configuration in force, if any.
    pub fn current(&self) -> Option<Arc<RlsConfig>> {
        self.current.load_full()
    }

    /// Where the configuration is read from.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// The error of the last rejected reload, while it is not fixed.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }

    /// The counters.
    pub fn metrics(&self) -> &Arc<RlsMetrics> {
        &self.metrics
    }

    /// Reads the source again: applies it if valid, else keeps the current configuration, logs
    /// and counts the error. Returns whether a different configuration is now in force.
    pub fn reload(&self) -> Result<bool, ConfigError> {
        let Some(path) = &self.source else {
            return Ok(false);
        };
        match read_source(path) {
            Ok(config) => {
                self.metrics.config_load_success.inc();
                *lock(&self.last_error) = None;
                let changed = self.current().as_deref() != Some(&config);
                if changed {
                    tracing::info!(path = %path.display(), domains = config.domains.len(), "RLS configuration reloaded");
                    self.current.store(Some(Arc::new(config)));
                }
                Ok(changed)
            }
            Err(error) => {
                self.metrics.config_load_error.inc();
                tracing::error!(%error, "RLS configuration rejected; keeping the last good one");
                *lock(&self.last_error) = Some(error.to_string());
                Err(error)
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn io_error(path: &Path, error: &std::io::Error) -> ConfigError {
    ConfigError {
        file: path.display().to_string(),
        line: 0,
        field: String::new(),
        message: format!("cannot read: {error}"),
    }
}

/// Reads a file, or every `*.yaml`/`*.yml` file of a directory (sorted by name), into one
/// configuration.
pub fn read_source(path: &Path) -> Result<RlsConfig, ConfigError> {
    let metadata = std::fs::metadata(path).map_err(|error| io_error(path, &error))?;
    let files = if metadata.is_dir() {
        let mut files = Vec::new();
        let entries = std::fs::read_dir(path).map_err(|error| io_error(path, &error))?;
        for entry in entries {
            let entry = entry.map_err(|error| io_error(path, &error))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let is_yaml = name.ends_with(".yaml") || name.ends_with(".yml");
            if name.starts_with('.') || !is_yaml {
                continue;
            }
            let file = entry.path();
            if std::fs::metadata(&file).is_ok_and(|metadata| metadata.is_file()) {
                files.push(file);
            }
        }
        if files.len() > MAX_FILES {
            return Err(ConfigError {
                file: path.display().to_string(),
                line: 0,
                field: String::new(),
                message: format!("more than {MAX_FILES} configuration files"),
            });
        }
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut domains = Vec::with_capacity(files.len());
    for file in files {
        let bytes = std::fs::read(&file).map_err(|error| io_error(&file, &error))?;
        let name = file.display().to_string();
        let text = String::from_utf8(bytes).map_err(|_| ConfigError {
            file: name.clone(),
            line: 0,
            field: String::new(),
            message: "not UTF-8 text".into(),
        })?;
        domains.push(parse_domain(&name, &text)?);
    }
    RlsConfig::from_domains(domains)
}

/// Reloads `state` when its source changes or on SIGHUP, until `stopped` turns true.
///
/// Without a source nothing is watched. The SIGHUP handler and the watcher are in place when this
/// returns (so a SIGHUP sent afterwards reloads rather than ends the process).
pub fn spawn_reloader(state: Arc<RlsState>, mut stopped: watch::Receiver<bool>) -> JoinHandle<()> {
    let Some(source) = state.source().map(Path::to_path_buf) else {
        return tokio::spawn(async {});
    };
    let changed = Arc::new(Notify::new());
    let watcher = watch_source(&source, Arc::clone(&changed));
    #[cfg(test)]
    let watching = watched::Watching::new(source.clone());
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .inspect_err(|error| tracing::warn!(%error, "cannot listen for SIGHUP"))
        .ok();
    tokio::spawn(async move {
        // Kept alive for as long as the loop runs.
        let _watcher = watcher;
        #[cfg(test)]
        let _watching = watching;
        loop {
            #[cfg(unix)]
            let sighup = async {
                match hangup.as_mut() {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let sighup = std::future::pending::<()>();
            tokio::select! {
                _ = changed.notified() => {
                    tokio::time::sleep(DEBOUNCE).await;
                }
                _ = sighup => {
                    tracing::info!("SIGHUP: reloading the RLS configuration");
                }
                result = stopped.changed() => {
                    let stop = result.is_err() || *stopped.borrow();
                    if stop {
                        return;
                    }
                    continue;
                }
            }
            let _ = state.reload();
        }
    })
}

/// The sources a reloader task watches right now, so tests can tell that the task has ended (its
/// [`Watching`](watched::Watching) is dropped with the task, whether it returned or was aborted).
#[cfg(test)]
pub(crate) mod watched {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    static SOURCES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

    /// Whether a reloader task still watches `source`.
    pub(crate) fn is_watched(source: &Path) -> bool {
        super::lock(&SOURCES)
            .iter()
            .any(|watched| watched == source)
    }

    /// `source` counts as watched while this lives.
    pub(super) struct Watching(PathBuf);

    impl Watching {
        pub(super) fn new(source: PathBuf) -> Self {
            super::lock(&SOURCES).push(source.clone());
            Watching(source)
        }
    }

    impl Drop for Watching {
        fn drop(&mut self) {
            let mut sources = super::lock(&SOURCES);
            if let Some(index) = sources.iter().position(|watched| *watched == self.0) {
                sources.swap_remove(index);
            }
        }
    }
}

/// Watches the file's directory (editors and ConfigMaps replace files rather than write them), or
/// the directory recursively; `None` (logged) when the platform refuses, leaving SIGHUP.
fn watch_source(source: &Path, changed: Arc<Notify>) -> Option<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let (target, mode) = if source.is_dir() {
        (source.to_path_buf(), RecursiveMode::Recursive)
    } else {
        let parent = source
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        (parent.to_path_buf(), RecursiveMode::NonRecursive)
    };
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|event| !event.kind.is_access()) {
            changed.notify_one();
        }
    });
    match watcher {
        Ok(mut watcher) => match watcher.watch(&target, mode) {
            Ok(()) => Some(watcher),
            Err(error) => {
                tracing::warn!(%error, path = %target.display(), "cannot watch the RLS configuration; reload with SIGHUP");
                None
            }
        },
        Err(error) => {
            tracing::warn!(%error, "cannot watch the RLS configuration; reload with SIGHUP");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn metrics() -> Arc<RlsMetrics> {
        Arc::new(RlsMetrics::new(&Metrics::new()))
    }

    #[test]
    fn a_directory_is_read_file_by_file_and_errors_keep_the_last_good_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "domain: a\n").unwrap();
        std::fs::write(dir.path().join("b.yml"), "domain: b\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not yaml").unwrap();
        std::fs::write(dir.path().join(".hidden.yaml"), "broken: [").unwrap();
        let state = RlsState::load(Some(dir.path().to_path_buf()), metrics()).unwrap();
        let domains: Vec<_> = state.current().unwrap().domains.keys().cloned().collect();
        assert_eq!(domains, ["a", "b"]);
        assert_eq!(state.metrics().config_load_success.get(), 1);

        std::fs::write(dir.path().join("c.yaml"), "domain: a\n").unwrap();
        let error = state.reload().unwrap_err();
        assert!(
            error.to_string().contains("duplicate domain 'a'"),
            "{error}"
        );
        assert_eq!(state.current().unwrap().domains.len(), 2);
        assert_eq!(state.metrics().config_load_error.get(), 1);
        assert!(state.last_error().is_some());

        std::fs::write(dir.path().join("c.yaml"), "domain: c\n").unwrap();
        assert!(state.reload().unwrap());
        assert_eq!(state.current().unwrap().domains.len(), 3);
        assert!(state.last_error().is_none());
        assert!(!state.reload().unwrap(), "nothing changed");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn sighup_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("one.yaml");
        std::fs::write(&file, "domain: before\n").unwrap();
        let state = Arc::new(RlsState::load(Some(file.clone()), metrics()).unwrap());
        // Changed before anything watches it: only the SIGHUP can make it count.
        std::fs::write(&file, "domain: after\n").unwrap();
        let (stop, stopped) = watch::channel(false);
        let task = spawn_reloader(Arc::clone(&state), stopped);
        let status = std::process::Command::new("kill")
            .args(["-HUP", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !state.current().unwrap().domains.contains_key("after") {
            assert!(
                std::time::Instant::now() < deadline,
                "SIGHUP did not reload"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.send(true).unwrap();
        task.await.unwrap();
    }

    #[test]
    fn a_broken_file_at_start_fails_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("one.yaml");
        std::fs::write(&file, "domain: d\ndescriptors:\n  - key: ''\n").unwrap();
        let error = RlsState::load(Some(file.clone()), metrics()).unwrap_err();
        assert_eq!(error.line, 3);
        assert!(error.file.ends_with("one.yaml"));
        let missing = RlsState::load(Some(dir.path().join("missing.yaml")), metrics()).unwrap_err();
        assert!(missing.message.contains("cannot read"));
    }
}
