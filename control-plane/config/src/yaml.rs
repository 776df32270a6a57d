//! The text of Kubernetes YAML files (several documents per file allowed), read into the same
//! typed objects the Kubernetes source watches.
//!
//! Every document that fails to parse or validate is refused with its file, document index,
//! field and reason, and any refusal refuses the whole read: the caller gets a snapshot or
//! every problem, never a half. Kinds this control plane does not use yet are skipped, not
//! refused; a kind it reads, written in a version it does not (`HTTPRoute` of
//! `gateway.networking.k8s.io/v1alpha2`), is refused rather than silently skipped.
//!
//! Kinds read: `v1` Service and Pod, `discovery.k8s.io/v1` EndpointSlice,
//! `gateway.networking.k8s.io/v1` and `v1beta1` HTTPRoute and ReferenceGrant,
//! `split.smi-spec.io/v1alpha4` and `v1alpha2` TrafficSplit, `weft.dev/v1alpha1` HTTPFault.
//!
//! Reading the files is the caller's (the control plane's local source); this module
//! only sees their text.
//!
//! YAML is read with serde_yaml (multi-document streams, the same serde path the Kubernetes
//! types use; upstream is in maintenance, which for a parser of a settled format is acceptable)
//! and every typed document through serde_path_to_error, so a type error names its field.

use std::{
    collections::HashMap,
    fmt,
    ops::ControlFlow,
    path::{Path, PathBuf},
    sync::Arc,
};

use k8s_openapi::api::{core::v1::Pod, core::v1::Service, discovery::v1::EndpointSlice};
use serde::de::DeserializeOwned;

use crate::{
    gateway::{HttpRoute, ReferenceGrant},
    model::{key, problem, Key, Problem, Snapshot},
    routes,
    smi::TrafficSplit,
};

/// Most documents one [`Reader`] reads, over all its files.
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

/// Files' texts read one after another into one snapshot, with one bound on their documents.
#[derive(Debug, Default)]
pub struct Reader {
    snapshot: Snapshot,
    errors: Vec<DocError>,
    documents: usize,
    /// Where each HTTPRoute was read, to name it if the folder as a whole refuses it.
    route_origins: HashMap<Key, (PathBuf, usize)>,
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

impl Reader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the documents of `file`'s `text` to the snapshot, their problems to the errors.
    /// `Break` when the bound on documents was passed: reading stops there, refused.
    pub fn read(&mut self, file: &Path, text: &str) -> ControlFlow<()> {
        for (index, doc) in documents(text).enumerate() {
            self.documents += 1;
            if self.documents > MAX_DOCUMENTS {
                self.errors.push(doc_error(
                    file,
                    index,
                    "",
                    format!("more than {MAX_DOCUMENTS} documents in the folder"),
                ));
                return ControlFlow::Break(());
            }
            let value = match doc {
                Ok(v) => v,
                Err(reason) => {
                    self.errors.push(doc_error(file, index, "", reason));
                    continue; // the last item: `documents` ends at a syntax error
                }
            };
            match add(&mut self.snapshot, value) {
                Ok(Some(route)) => {
                    self.route_origins
                        .insert(route, (file.to_path_buf(), index));
                }
                Ok(None) => {}
                Err(e) => self.errors.push(DocError {
                    file: file.to_path_buf(),
                    document: index,
                    field: e.field,
                    reason: e.reason,
                }),
            }
        }
        ControlFlow::Continue(())
    }

    /// Refuses `file` as a whole (it could not be read, or is not text), as its document 0.
    pub fn refuse(&mut self, file: &Path, reason: String) {
        self.errors.push(doc_error(file, 0, "", reason));
    }

    /// The snapshot, if nothing was refused; else every problem.
    ///
    /// Once every document is read, the references between them are checked too: an
    /// HTTPRoute whose backend the folder does not permit it to reference (another namespace
    /// without a ReferenceGrant, or not a Service) is refused here, by its file and document.
    /// The Kubernetes source takes such a route and marks its backend invalid instead
    /// ([`routes`]): a folder is one author's change, refused whole so the author sees the
    /// mistake at once; a cluster is many writers, where one route must not hold up others.
    pub fn finish(mut self) -> Result<Snapshot, Vec<DocError>> {
        if self.errors.is_empty() {
            for (route, field, reason) in routes::reference_problems(&self.snapshot) {
                let (file, document) = self
                    .route_origins
                    .remove(&route)
                    .unwrap_or_else(|| (PathBuf::new(), 0));
                self.errors.push(DocError {
                    file,
                    document,
                    field,
                    reason,
                });
            }
        }
        if self.errors.is_empty() {
            Ok(self.snapshot)
        } else {
            Err(self.errors)
        }
    }
}

/// Reads one file's text as a folder's files are read, alone: for tests and the fuzz target.
pub fn load_text(file: &Path, text: &str) -> Result<Snapshot, Vec<DocError>> {
    let mut reader = Reader::new();
    let _ = reader.read(file, text);
    reader.finish()
}

/// The documents of one file's text, in order, each as a YAML value or why it is not YAML
/// (`not YAML: ...`). A syntax error is the last item: nothing after it can be read reliably.
/// What the control plane's reader and the lab's folder reader (`weft-lab`) both read files
/// with, so they split and parse a file alike.
pub fn documents(text: &str) -> impl Iterator<Item = Result<serde_yaml::Value, String>> + '_ {
    let mut failed = false;
    serde_yaml::Deserializer::from_str(text).map_while(move |doc| {
        if failed {
            return None;
        }
        let value: Result<serde_yaml::Value, _> = serde::Deserialize::deserialize(doc);
        failed = value.is_err();
        Some(value.map_err(|e| format!("not YAML: {e}")))
    })
}

fn doc_error(file: &Path, document: usize, field: &str, reason: String) -> DocError {
    DocError {
        file: file.to_path_buf(),
        document,
        field: field.to_string(),
        reason,
    }
}

/// Adds one document's object; `Some` with its key when it is an HTTPRoute.
pub(crate) fn add(
    snapshot: &mut Snapshot,
    value: serde_yaml::Value,
) -> Result<Option<Key>, Problem> {
    if value.is_null() {
        return Ok(None); // an empty document (a trailing `---`)
    }
    let text = |field: &str| {
        value
            .get(field)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let api_version = text("apiVersion").ok_or_else(|| problem("apiVersion", "missing"))?;
    let kind = text("kind").ok_or_else(|| problem("kind", "missing"))?;
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", &api_version));
    let refuse_version = |versions: &str| {
        Err(problem(
            "apiVersion",
            format!("{api_version}: {kind} is read as {group}/{versions}"),
        ))
    };
    match (group, kind.as_str()) {
        ("", "Service") if version == "v1" => {
            snapshot.add_service(Arc::new(typed::<Service>(value)?))?
        }
        ("discovery.k8s.io", "EndpointSlice") if version == "v1" => {
            snapshot.add_endpoint_slice(Arc::new(typed::<EndpointSlice>(value)?))?
        }
        ("", "Pod") if version == "v1" => snapshot.add_pod(Arc::new(typed::<Pod>(value)?))?,
        (crate::gateway::GROUP, "HTTPRoute") => {
            if !matches!(version, "v1" | "v1beta1") {
                return refuse_version("v1 or v1beta1");
            }
            let route = Arc::new(typed::<HttpRoute>(value)?);
            let route_key = key(&route.metadata)?;
            snapshot.add_http_route(route)?;
            return Ok(Some(route_key));
        }
        (crate::gateway::GROUP, "ReferenceGrant") => {
            if !matches!(version, "v1" | "v1beta1") {
                return refuse_version("v1beta1 or v1");
            }
            snapshot.add_reference_grant(Arc::new(typed::<ReferenceGrant>(value)?))?
        }
        (crate::fault::GROUP, "HTTPFault") => {
            if version != "v1alpha1" {
                return refuse_version("v1alpha1");
            }
            snapshot.add_http_fault(Arc::new(typed::<crate::fault::HttpFault>(value)?))?
        }
        (crate::smi::GROUP, "TrafficSplit") => {
            if !matches!(version, "v1alpha4" | "v1alpha2") {
                return refuse_version("v1alpha4 or v1alpha2");
            }
            snapshot.add_traffic_split(Arc::new(typed::<TrafficSplit>(value)?))?
        }
        _ => {}
    }
    Ok(None)
}

/// `value` as the typed object `T`, a type error naming its field (`spec.ports[0].port`).
pub fn typed<T: DeserializeOwned>(value: serde_yaml::Value) -> Result<T, Problem> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { String::new() } else { field };
        Problem {
            field,
            reason: e.into_inner().to_string(),
        }
    })
}

#[cfg(test)]
mod tests;
