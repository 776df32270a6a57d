//! The text of Kubernetes YAML files (several documents per file allowed), read into the same
//! typed objects the Kubernetes source watches.
//!
//! Every document that fails to parse or validate is refused with its file, document index,
//! field and reason, and any refusal refuses the whole read: the caller gets a snapshot or
//! every problem, never a half. Kinds this control plane does not use yet are skipped, not
//! refused. Reading the files is the caller's (the control plane's local source); this module
//! only sees their text.
//!
//! YAML is read with serde_yaml (multi-document streams, the same serde path the Kubernetes
//! types use; upstream is in maintenance, which for a parser of a settled format is acceptable)
//! and every typed document through serde_path_to_error, so a type error names its field.

use std::{
    fmt,
    ops::ControlFlow,
    path::{Path, PathBuf},
    sync::Arc,
};

use k8s_openapi::api::{core::v1::Pod, core::v1::Service, discovery::v1::EndpointSlice};
use serde::de::DeserializeOwned;

use crate::model::{problem, Problem, Snapshot};

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
            if let Err(e) = add(&mut self.snapshot, value) {
                self.errors.push(DocError {
                    file: file.to_path_buf(),
                    document: index,
                    field: e.field,
                    reason: e.reason,
                });
            }
        }
        ControlFlow::Continue(())
    }

    /// Refuses `file` as a whole (it could not be read, or is not text), as its document 0.
    pub fn refuse(&mut self, file: &Path, reason: String) {
        self.errors.push(doc_error(file, 0, "", reason));
    }

    /// The snapshot, if nothing was refused; else every problem.
    pub fn finish(self) -> Result<Snapshot, Vec<DocError>> {
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
