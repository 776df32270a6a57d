//! Local mode's config source: a folder of Kubernetes YAML (`*.yaml`, `*.yml`), read with
//! [`weft_control_plane_config::yaml`] into the same typed objects the Kubernetes source
//! watches, and polled for changes (at once when inotify reports one, [`wake`]).
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
    time::{Duration, SystemTime},
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
    config_thread::ConfigThread,
    files::{read_bounded, ReadError},
    metrics::Metrics,
    source::{ConfigSource, SourceFuture},
};

mod wake;
use wake::FolderEvents;

/// Largest YAML file read.
const MAX_FILE_BYTES: u64 = 8 << 20;

/// Reads every YAML file directly in `dir`, in name order.
pub fn load_dir(dir: &Path) -> Result<Snapshot, Vec<DocError>> {
    load_dir_cached(dir, &mut ParseCache::new())
}

/// [`load_dir`], parsing only the documents `cache` has not seen (see
/// [`weft_control_plane_config::yaml`]); what this read did not use leaves the cache.
pub fn load_dir_cached(dir: &Path, cache: &mut ParseCache) -> Result<Snapshot, Vec<DocError>> {
    load_files(dir, read_files(dir), cache)
}

/// The folder's YAML files, each with its bytes or why they could not be read.
type Files = Vec<(PathBuf, Result<Vec<u8>, ReadError>)>;

fn read_files(dir: &Path) -> std::io::Result<Files> {
    Ok(yaml_files(dir)?
        .into_iter()
        .map(|file| {
            let read = read_bounded(&file, MAX_FILE_BYTES);
            (file, read)
        })
        .collect())
}

fn parse_files(files: Files, cache: &mut ParseCache) -> Result<Snapshot, Vec<DocError>> {
    let mut reader = Reader::new();
    for (file, read) in files {
        let text = match read {
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

/// The local folder as a [`ConfigSource`]: polled every `interval` and whenever inotify says
/// the folder changed ([`wake`]), compared by content, and published only when a changed
/// folder loads whole.
///
/// What is read is decided by the poll, never by an event: a ConfigMap volume updates by
/// swapping a `..data` symlink, editors write through temporary files and renames, and a
/// content comparison is right in every case; events only make it run sooner (a change is in
/// force milliseconds after the write rather than up to `interval` later). A poll first
/// compares each file's metadata ([`Stamps`]); only when that moved, or is too recent to prove
/// anything, are the files read and their content compared, and a changed folder is parsed
/// from that same read.
#[derive(Debug)]
pub struct LocalSource {
    dir: PathBuf,
    interval: Duration,
    metrics: Arc<Metrics>,
    /// The folder's files' metadata and content when last read.
    seen: Seen,
    /// The typed documents of the last read, by their text: a read after an edit parses only
    /// what changed.
    cache: ParseCache,
    /// Where polls run.
    work: ConfigThread,
    snapshot: Arc<Snapshot>,
}

impl LocalSource {
    /// Loads `dir` now: a folder that does not load is a start error listing every problem,
    /// since starting empty would tell every proxy that no Service exists.
    pub fn load(
        dir: PathBuf,
        interval: Duration,
        metrics: Arc<Metrics>,
        work: ConfigThread,
    ) -> Result<Self, LoadError> {
        metrics.config_source(NAME);
        let mut seen = Seen::default();
        let files = seen.read(&dir);
        let mut cache = ParseCache::new();
        let snapshot = load_files(&dir, files, &mut cache).map_err(|errors| {
            metrics.config_refused(NAME, errors.len());
            LoadError(errors)
        })?;
        metrics.config_read(NAME, true);
        log_routes(&snapshot);
        Ok(Self {
            dir,
            interval,
            metrics,
            seen,
            cache,
            work,
            snapshot: Arc::new(snapshot),
        })
    }

    /// Logs that the folder's changes are seen by the poll alone from now on, and why.
    fn polling_only(&self, what: &str, error: &std::io::Error) {
        warn!(
            dir = %self.dir.display(),
            %error,
            "{what} the config folder; changes are read every {:?}",
            self.interval
        );
    }

    /// What the folder held when last loaded.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.clone()
    }

    /// Reads the folder again if its content changed. `Ok(Some)` is a new snapshot, `Ok(None)`
    /// no change (or no change since a refusal), `Err` a refused change.
    fn poll(&mut self) -> Result<Option<Arc<Snapshot>>, LoadError> {
        let Some(files) = self.seen.changed(&self.dir) else {
            return Ok(None);
        };
        let (parsed, reused) = self.cache.counts();
        let result = load_files(&self.dir, files, &mut self.cache);
        let (now_parsed, now_reused) = self.cache.counts();
        debug!(
            parsed = now_parsed - parsed,
            reused = now_reused - reused,
            "folder read again: pieces parsed and reused"
        );
        match result {
            Ok(snapshot) => {
                self.metrics.config_read(NAME, true);
                if self.snapshot.same(&snapshot) {
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
        // Watching starts here, not when the future first runs: an edit made once `run` has
        // returned is seen.
        let mut events = match FolderEvents::watch(&self.dir) {
            Ok(events) => Some(events),
            Err(e) => {
                self.polling_only("cannot watch", &e);
                None
            }
        };
        Box::pin(async move {
            let mut tick = tokio::time::interval(self.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                    r = folder_changed(&mut events) => match r {
                        Ok(()) => tick.reset(),
                        Err(e) => {
                            self.polling_only("stopped watching", &e);
                            events = None;
                        }
                    },
                }
                // Reading and parsing files is blocking work: off the async workers.
                let work = self.work.clone();
                let (source, result) = match work
                    .run(move || {
                        let result = self.poll();
                        (self, result)
                    })
                    .await
                {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(error = %e, "reading the config folder failed");
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

/// The next change `events` reports; never, without a watch.
async fn folder_changed(events: &mut Option<FolderEvents>) -> std::io::Result<()> {
    match events {
        Some(events) => events.changed().await,
        None => std::future::pending().await,
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

/// Parses files read from `dir` (`Err`: the folder itself could not be listed).
fn load_files(
    dir: &Path,
    files: std::io::Result<Files>,
    cache: &mut ParseCache,
) -> Result<Snapshot, Vec<DocError>> {
    let result = match files {
        Ok(files) => parse_files(files, cache),
        Err(e) => Err(vec![DocError {
            file: dir.to_path_buf(),
            document: 0,
            field: String::new(),
            reason: format!("cannot read the folder: {e}"),
        }]),
    };
    cache.sweep();
    result
}

/// How long after a file's last change its metadata alone is trusted: longer than any
/// filesystem's timestamp granularity, so a write in the same tick as the read before it
/// (same size, same mtime) is still seen by reading the content.
const SETTLE: Duration = Duration::from_secs(2);

/// What the last read of the folder saw.
#[derive(Debug)]
struct Seen {
    /// [`SETTLE`] (shorter in tests).
    settle: Duration,
    /// Reads of the folder's content so far.
    reads: u64,
    /// Each file's metadata at that read.
    stamps: Stamps,
    /// When that read started.
    at: Option<SystemTime>,
    /// A digest of the names and contents it read.
    digest: u64,
}

impl Default for Seen {
    fn default() -> Self {
        Self {
            settle: SETTLE,
            reads: 0,
            stamps: Stamps::default(),
            at: None,
            digest: 0,
        }
    }
}

impl Seen {
    /// Reads the folder and remembers what it held.
    fn read(&mut self, dir: &Path) -> std::io::Result<Files> {
        self.read_stamped(dir, Stamps::of(dir))
    }

    /// [`Seen::read`], with the files' metadata just taken.
    fn read_stamped(&mut self, dir: &Path, stamps: Stamps) -> std::io::Result<Files> {
        self.reads += 1;
        self.stamps = stamps;
        self.at = Some(SystemTime::now());
        let files = read_files(dir);
        self.digest = digest(&files);
        files
    }

    /// The folder's files, read again, if their content may have changed since the last
    /// read; `None` when it certainly did not. Metadata that did not move and settled before
    /// the last read started proves the content is what that read saw (as git's index does
    /// for racy timestamps); anything else is settled by reading and comparing the content.
    fn changed(&mut self, dir: &Path) -> Option<std::io::Result<Files>> {
        let stamps = Stamps::of(dir);
        if stamps == self.stamps
            && self
                .at
                .and_then(|at| at.checked_sub(self.settle))
                .is_some_and(|settled| stamps.all_before(settled))
        {
            return None;
        }
        let digest = self.digest;
        let files = self.read_stamped(dir, stamps);
        (self.digest != digest).then_some(files)
    }
}

/// Each YAML file's metadata, in name order (following symlinks, as a ConfigMap's are):
/// size, modification and change times, inode and device; or the error that stat gave.
#[derive(Debug, Default, PartialEq, Eq)]
struct Stamps(Vec<(PathBuf, Result<Stamp, std::io::ErrorKind>)>);

#[derive(Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: (i64, i64),
    changed: (i64, i64),
    inode: u64,
    device: u64,
}

impl Stamps {
    fn of(dir: &Path) -> Self {
        use std::os::unix::fs::MetadataExt;
        let Ok(files) = yaml_files(dir) else {
            return Self::default();
        };
        Self(
            files
                .into_iter()
                .map(|file| {
                    let stamp = std::fs::metadata(&file)
                        .map(|m| Stamp {
                            len: m.len(),
                            modified: (m.mtime(), m.mtime_nsec()),
                            changed: (m.ctime(), m.ctime_nsec()),
                            inode: m.ino(),
                            device: m.dev(),
                        })
                        .map_err(|e| e.kind());
                    (file, stamp)
                })
                .collect(),
        )
    }

    /// Whether every file was last modified and changed before `at`.
    fn all_before(&self, at: SystemTime) -> bool {
        let Ok(at) = at.duration_since(SystemTime::UNIX_EPOCH) else {
            return false;
        };
        let at = (at.as_secs() as i64, i64::from(at.subsec_nanos()));
        self.0.iter().all(|(_, stamp)| {
            stamp
                .as_ref()
                .is_ok_and(|s| s.modified < at && s.changed < at)
        })
    }
}

/// A digest of the files' names and contents; an unreadable file counts by its error, so a
/// fixed permission is a change.
fn digest(files: &std::io::Result<Files>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match files {
        Ok(files) => {
            for (file, read) in files {
                file.hash(&mut h);
                match read {
                    Ok(raw) => raw.hash(&mut h),
                    Err(ReadError::Io(e)) => e.kind().hash(&mut h),
                    Err(ReadError::TooLarge(_)) => "too large".hash(&mut h),
                }
            }
        }
        Err(e) => e.kind().hash(&mut h),
    }
    h.finish()
}

#[cfg(test)]
mod tests;
