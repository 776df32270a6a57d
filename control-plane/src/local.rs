//! Local mode's config source: a folder of Kubernetes YAML (`*.yaml`, `*.yml`), read with
//! [`weft_control_plane_config::yaml`] into the same typed objects the Kubernetes source
//! watches, and polled for changes.
//!
//! A folder is taken whole or not at all: any document that fails to parse or validate, or a
//! file that cannot be read, refuses the load with every problem listed by file, document
//! index, field and reason, so nothing half-applied can reach a proxy; the caller keeps its
//! last good snapshot.
//!
//! Routes have no status to write in a folder: each time a folder is taken, every HTTPRoute's
//! conditions that are not true (a parent Service not found, a backend not found) and every
//! TrafficSplit not in force are logged at warn, the rest at debug, with the same reasons the
//! Kubernetes mode writes to `status.parents`
//! ([`weft_control_plane_config::routes::route_statuses`]).

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use weft_control_plane_config::{
    model::Snapshot,
    routes,
    yaml::{DocError, ParseCache, Reader},
};

use crate::{
    files::{read_bounded, ReadError},
    metrics::Metrics,
    source::{ConfigSource, SourceFuture},
};

/// Largest YAML file read.
const MAX_FILE_BYTES: u64 = 8 << 20;

/// Reads every YAML file directly in `dir`, in name order.
pub fn load_dir(dir: &Path) -> Result<Snapshot, Vec<DocError>> {
    load_dir_cached(dir, &mut ParseCache::new())
}

/// [`load_dir`], parsing only the documents `cache` has not seen (see
/// [`weft_control_plane_config::yaml`]); what this read did not use leaves the cache.
pub fn load_dir_cached(dir: &Path, cache: &mut ParseCache) -> Result<Snapshot, Vec<DocError>> {
    let result = read_dir_into(dir, cache);
    cache.sweep();
    result
}

fn read_dir_into(dir: &Path, cache: &mut ParseCache) -> Result<Snapshot, Vec<DocError>> {
    let files = yaml_files(dir).map_err(|e| {
        vec![DocError {
            file: dir.to_path_buf(),
            document: 0,
            field: String::new(),
            reason: format!("cannot read the folder: {e}"),
        }]
    })?;
    let mut reader = Reader::new();
    for file in files {
        let text = match read_bounded(&file, MAX_FILE_BYTES) {
            Ok(raw) => match String::from_utf8(raw) {
                Ok(t) => t,
                Err(_) => {
                    reader.refuse(&file, "not UTF-8 text".into());
                    continue;
                }
            },
            Err(ReadError::Io(e)) => {
                reader.refuse(&file, format!("cannot read: {e}"));
                continue;
            }
            Err(ReadError::TooLarge(max)) => {
                reader.refuse(&file, format!("larger than {max} bytes"));
                continue;
            }
        };
        if reader.read_cached(&file, &text, cache).is_break() {
            break;
        }
    }
    reader.finish()
}

/// The folder's `*.yaml` and `*.yml` files, in name order.
fn yaml_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The local folder as a [`ConfigSource`]: polled every `interval`, compared by content, and
/// published only when a changed folder loads whole.
///
/// Polling rather than inotify, as for the issuer files: a ConfigMap volume updates by
/// swapping a `..data` symlink, editors write through temporary files and renames, and a
/// content comparison is right in every case for the cost of reading a few files a second.
#[derive(Debug)]
pub struct LocalSource {
    dir: PathBuf,
    interval: Duration,
    metrics: Arc<Metrics>,
    /// The folder's content when `snapshot` was read.
    fingerprint: u64,
    /// The typed documents of the last read, by their text: a read after an edit parses only
    /// what changed.
    cache: ParseCache,
    snapshot: Arc<Snapshot>,
}

impl LocalSource {
    /// Loads `dir` now: a folder that does not load is a start error listing every problem,
    /// since starting empty would tell every proxy that no Service exists.
    pub fn load(
        dir: PathBuf,
        interval: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<Self, LoadError> {
        metrics.config_source(NAME);
        let fingerprint = fingerprint(&dir);
        let mut cache = ParseCache::new();
        let snapshot = load_dir_cached(&dir, &mut cache).map_err(|errors| {
            metrics.config_refused(NAME, errors.len());
            LoadError(errors)
        })?;
        metrics.config_read(NAME, true);
        log_routes(&snapshot);
        Ok(Self {
            dir,
            interval,
            metrics,
            fingerprint,
            cache,
            snapshot: Arc::new(snapshot),
        })
    }

    /// What the folder held when last loaded.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.clone()
    }

    /// Reads the folder again if its content changed. `Ok(Some)` is a new snapshot, `Ok(None)`
    /// no change (or no change since a refusal), `Err` a refused change.
    fn poll(&mut self) -> Result<Option<Arc<Snapshot>>, LoadError> {
        let fingerprint = fingerprint(&self.dir);
        if fingerprint == self.fingerprint {
            return Ok(None);
        }
        self.fingerprint = fingerprint;
        let (parsed, reused) = self.cache.counts();
        let result = load_dir_cached(&self.dir, &mut self.cache);
        let (now_parsed, now_reused) = self.cache.counts();
        debug!(
            parsed = now_parsed - parsed,
            reused = now_reused - reused,
            "folder read again: pieces parsed and reused"
        );
        match result {
            Ok(snapshot) => {
                self.metrics.config_read(NAME, true);
                if *self.snapshot == snapshot {
                    return Ok(None);
                }
                self.snapshot = Arc::new(snapshot);
                Ok(Some(self.snapshot.clone()))
            }
            Err(errors) => {
                self.metrics.config_read(NAME, false);
                self.metrics.config_refused(NAME, errors.len());
                Err(LoadError(errors))
            }
        }
    }
}

const NAME: &str = "local";

impl ConfigSource for LocalSource {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(
        mut self: Box<Self>,
        out: watch::Sender<Arc<Snapshot>>,
        shutdown: CancellationToken,
    ) -> SourceFuture {
        Box::pin(async move {
            let mut tick = tokio::time::interval(self.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                // Reading and parsing files is blocking work: off the async workers.
                let (source, result) = match tokio::task::spawn_blocking(move || {
                    let result = self.poll();
                    (self, result)
                })
                .await
                {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(error = %e, "reading the config folder panicked");
                        return;
                    }
                };
                self = source;
                match result {
                    Ok(Some(snapshot)) => {
                        info!(
                            dir = %self.dir.display(),
                            services = snapshot.services.len(),
                            endpoint_slices = snapshot.endpoint_slices.len(),
                            pods = snapshot.pods.len(),
                            "config folder changed; new config in force"
                        );
                        log_routes(&snapshot);
                        out.send_replace(snapshot);
                    }
                    Ok(None) => {}
                    Err(e) => warn!(
                        dir = %self.dir.display(),
                        "config folder change refused; the previous config stays in force: {e}"
                    ),
                }
            }
        })
    }
}

/// Logs the conditions of the folder's routes: what is wrong at warn, the rest at debug.
fn log_routes(snapshot: &Snapshot) {
    for status in routes::route_statuses(snapshot) {
        let route = format!("{}/{}", status.route.0, status.route.1);
        for parent in &status.ignored_service_parents {
            warn!(
                route,
                parent = %parent.name,
                "HTTPRoute parent of kind Service without group \"\" is not a Service (the group \
                 defaults to gateway.networking.k8s.io): write group: \"\" to attach the route"
            );
        }
        for parent in &status.parents {
            let namespace = parent
                .parent_ref
                .namespace
                .as_deref()
                .unwrap_or(&status.route.0);
            let parent_name = format!("{namespace}/{}", parent.parent_ref.name);
            for c in &parent.conditions {
                if c.status {
                    tracing::debug!(route, parent = parent_name, condition = c.type_, reason = c.reason, message = %c.message, "HTTPRoute condition");
                } else {
                    warn!(route, parent = parent_name, condition = c.type_, reason = c.reason, message = %c.message, "HTTPRoute condition false");
                }
            }
        }
    }
    for split in routes::split_statuses(snapshot) {
        let name = format!("{}/{}", split.split.0, split.split.1);
        if split.in_force && split.missing_backends.is_empty() {
            tracing::debug!(split = name, message = %split.message, "TrafficSplit");
        } else {
            warn!(split = name, message = %split.message, "TrafficSplit not fully in force");
        }
    }
}

/// A folder that did not load, with every problem.
#[derive(Debug)]
pub struct LoadError(pub Vec<DocError>);

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} document(s) refused", self.0.len())?;
        for e in &self.0 {
            write!(f, "; {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

/// A digest of the folder's YAML files' names and contents (bounded reads; unreadable files
/// count by their error, so a fixed permission is a change).
fn fingerprint(dir: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for file in yaml_files(dir).unwrap_or_default() {
        file.hash(&mut h);
        match read_bounded(&file, MAX_FILE_BYTES) {
            Ok(raw) => raw.hash(&mut h),
            Err(ReadError::Io(e)) => e.kind().hash(&mut h),
            Err(ReadError::TooLarge(_)) => "too large".hash(&mut h),
        }
    }
    h.finish()
}

#[cfg(test)]
mod tests;
