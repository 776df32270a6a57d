//! Local mode's config source: a folder of Kubernetes YAML (`*.yaml`, `*.yml`, several documents
//! per file allowed), read into the same typed objects the Kubernetes source watches.
//!
//! A folder is taken whole or not at all: any document that fails to parse or validate refuses
//! the load with every problem listed by file, document index, field and reason, so nothing
//! half-applied can reach a proxy; the caller keeps its last good snapshot. Kinds this control
//! plane does not use yet are skipped, not refused.
//!
//! YAML is read with serde_yaml (multi-document streams, the same serde path the Kubernetes
//! types use; upstream is in maintenance, which for a parser of a settled format is acceptable)
//! and every typed document through serde_path_to_error, so a type error names its field.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use k8s_openapi::api::{core::v1::Pod, core::v1::Service, discovery::v1::EndpointSlice};
use serde::de::DeserializeOwned;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    files::{read_bounded, ReadError},
    metrics::Metrics,
    model::{problem, Problem, Snapshot},
    source::{ConfigSource, SourceFuture},
};

/// Largest YAML file read.
const MAX_FILE_BYTES: u64 = 8 << 20;
/// Most documents read from the whole folder.
const MAX_DOCUMENTS: usize = 100_000;
/// One refused document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocError {
    pub file: PathBuf,
    /// Position of the document in its file, from 0.
    pub document: usize,
    /// The field at fault (`spec.ports[0].port`), empty when the document as a whole is.
    pub field: String,
    pub reason: String,
}

impl fmt::Display for DocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} document {}", self.file.display(), self.document)?;
        if !self.field.is_empty() {
            write!(f, " field {}", self.field)?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// Reads every YAML file directly in `dir`, in name order.
pub fn load_dir(dir: &Path) -> Result<Snapshot, Vec<DocError>> {
    let whole = |reason: String| {
        vec![DocError {
            file: dir.to_path_buf(),
            document: 0,
            field: String::new(),
            reason,
        }]
    };
    let files = yaml_files(dir).map_err(|e| whole(format!("cannot read the folder: {e}")))?;
    let mut snapshot = Snapshot::default();
    let mut errors = Vec::new();
    let mut documents = 0;
    for file in files {
        let text = match read_bounded(&file, MAX_FILE_BYTES) {
            Ok(raw) => match String::from_utf8(raw) {
                Ok(t) => t,
                Err(_) => {
                    errors.push(doc_error(&file, 0, "", "not UTF-8 text".into()));
                    continue;
                }
            },
            Err(ReadError::Io(e)) => {
                errors.push(doc_error(&file, 0, "", format!("cannot read: {e}")));
                continue;
            }
            Err(ReadError::TooLarge(max)) => {
                errors.push(doc_error(&file, 0, "", format!("larger than {max} bytes")));
                continue;
            }
        };
        if read_documents(&file, &text, &mut snapshot, &mut errors, &mut documents).is_err() {
            return Err(errors);
        }
    }
    if errors.is_empty() {
        Ok(snapshot)
    } else {
        Err(errors)
    }
}

/// Reads one file's text as the folder loader does, alone: for tests and the fuzz target.
pub fn load_text(file: &Path, text: &str) -> Result<Snapshot, Vec<DocError>> {
    let (mut snapshot, mut errors, mut documents) = (Snapshot::default(), Vec::new(), 0);
    let _ = read_documents(file, text, &mut snapshot, &mut errors, &mut documents);
    if errors.is_empty() {
        Ok(snapshot)
    } else {
        Err(errors)
    }
}

/// Adds the documents of `text` to `snapshot`, their problems to `errors`. `Err` when the
/// folder's document bound was passed: reading stops there.
fn read_documents(
    file: &Path,
    text: &str,
    snapshot: &mut Snapshot,
    errors: &mut Vec<DocError>,
    documents: &mut usize,
) -> Result<(), ()> {
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        *documents += 1;
        if *documents > MAX_DOCUMENTS {
            errors.push(doc_error(
                file,
                index,
                "",
                format!("more than {MAX_DOCUMENTS} documents in the folder"),
            ));
            return Err(());
        }
        let value: Result<serde_yaml::Value, _> = serde::Deserialize::deserialize(doc);
        let value = match value {
            Ok(v) => v,
            Err(e) => {
                errors.push(doc_error(file, index, "", format!("not YAML: {e}")));
                // A syntax error ends the stream: nothing after it can be read reliably.
                break;
            }
        };
        if let Err(e) = add(snapshot, value) {
            errors.push(DocError {
                file: file.to_path_buf(),
                document: index,
                field: e.field,
                reason: e.reason,
            });
        }
    }
    Ok(())
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

fn doc_error(file: &Path, document: usize, field: &str, reason: String) -> DocError {
    DocError {
        file: file.to_path_buf(),
        document,
        field: field.to_string(),
        reason,
    }
}

fn add(snapshot: &mut Snapshot, value: serde_yaml::Value) -> Result<(), Problem> {
    if value.is_null() {
        return Ok(()); // an empty document (a trailing `---`)
    }
    let text = |field: &str| {
        value
            .get(field)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let api_version = text("apiVersion").ok_or_else(|| problem("apiVersion", "missing"))?;
    let kind = text("kind").ok_or_else(|| problem("kind", "missing"))?;
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "Service") => snapshot.add_service(Arc::new(typed::<Service>(value)?)),
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            snapshot.add_endpoint_slice(Arc::new(typed::<EndpointSlice>(value)?))
        }
        ("v1", "Pod") => snapshot.add_pod(Arc::new(typed::<Pod>(value)?)),
        _ => Ok(()),
    }
}

fn typed<T: DeserializeOwned>(value: serde_yaml::Value) -> Result<T, Problem> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { String::new() } else { field };
        Problem {
            field,
            reason: e.into_inner().to_string(),
        }
    })
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
        let snapshot = load_dir(&dir).map_err(|errors| {
            metrics.config_refused(NAME, errors.len());
            LoadError(errors)
        })?;
        metrics.config_read(NAME, true);
        Ok(Self {
            dir,
            interval,
            metrics,
            fingerprint,
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
        match load_dir(&self.dir) {
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
