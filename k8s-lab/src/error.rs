//! What can go wrong while building, starting or driving the k8s tier's cluster.

use std::{io, path::PathBuf, time::Duration};

/// A k8s-lab failure. Every message names the component, the command or the file involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The network-namespace lab underneath (namespaces, processes, waits) failed.
    #[error(transparent)]
    Lab(#[from] weft_lab::Error),
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// The Kubernetes binaries have not been built (or not for these sources).
    #[error("the Kubernetes binaries are not built: {0}; run `make k8s` first")]
    NotBuilt(String),
    /// A test tool built or installed by a script of the repository is not there yet.
    #[error("{tool} is not set up: {reason}; run `{script}` (`make test` does)")]
    ToolMissing {
        tool: String,
        reason: String,
        script: String,
    },
    /// A tool the node needs is not installed.
    #[error("{0}; `make deps` installs what the k8s tier needs")]
    Missing(String),
    /// A component did not come up, or exited; the end of its log says why.
    #[error("{component} failed: {reason}; the last lines of its log ({log}):\n{tail}")]
    Component {
        component: String,
        reason: String,
        log: String,
        tail: String,
    },
    /// Making the cluster's certificates failed.
    #[error("making the cluster's PKI ({what}): {source}")]
    Pki {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    /// An image could not be built or imported.
    #[error("image {image}: {reason}")]
    Image { image: String, reason: String },
    /// `kubectl` failed.
    #[error("`kubectl {args}` failed: {stderr}")]
    Kubectl { args: String, stderr: String },
    /// `helm` failed.
    #[error("`helm {args}` failed: {stderr}")]
    Helm { args: String, stderr: String },
    /// `kubernetes-validate` refused objects (or could not run).
    #[error("kubernetes-validate (Kubernetes {version}, strict) refused: {report}")]
    Validate { version: String, report: String },
    /// A CRD case file (or its folder) is not what `crds::cases` reads.
    #[error("CRD case {}: {reason}", file.display())]
    Case { file: PathBuf, reason: String },
    /// Something the cluster waits for did not happen in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: String, after: Duration },
}

/// The k8s lab's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O failure while doing `what`.
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}
