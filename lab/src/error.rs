//! What can go wrong while building or driving a cluster, each with what to check.

use std::{io, path::PathBuf, time::Duration};

/// A lab failure. Every message names the step, the command or the address involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// A setup command exited non-zero.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    /// A setup command ran past its bound and was killed.
    #[error("`{command}` did not finish within {after:?} and was killed")]
    CommandTimeout { command: String, after: Duration },
    /// A CNI plugin answered with a CNI error (`{"code","msg","details"}`).
    #[error("CNI {command} of plugin {plugin} failed with CNI error {code}: {msg} ({details})")]
    Cni {
        plugin: String,
        command: String,
        code: u64,
        msg: String,
        details: String,
    },
    /// A CNI plugin's answer is not what the CNI 1.0 spec says it must be.
    #[error(
        "CNI {command} of plugin {plugin}: {problem}; it wrote {output:?} (stderr {stderr:?})"
    )]
    CniProtocol {
        plugin: String,
        command: String,
        problem: String,
        output: String,
        stderr: String,
    },
    /// A Weft binary has not been built.
    #[error("{binary} not found at {}; build it with `cargo build -p {package}`", path.display())]
    MissingBinary {
        binary: &'static str,
        package: &'static str,
        path: PathBuf,
    },
    /// A test tool built by a script of the repository (Jaeger) has not been built.
    #[error("{tool} not found by `{script} --locate`: {reason}")]
    ToolNotBuilt {
        tool: &'static str,
        script: &'static str,
        reason: String,
    },
    /// Something the lab waits for did not happen in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: String, after: Duration },
    /// A process the lab started exited while it was needed.
    #[error("{what} exited early ({status}); its log:\n{log}")]
    Exited {
        what: String,
        status: String,
        log: String,
    },
    /// The trust anchor or issuer could not be made.
    #[error("making the lab's PKI: {0}")]
    Pki(#[from] weft_certs::CaError),
    /// An address pool (pod IPs, Service IPs) has no address left.
    #[error("no free address left in {pool}")]
    Exhausted { pool: &'static str },
    /// A name or spec the lab was given is unusable.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    /// A lab's folder could not be read at all.
    #[error(transparent)]
    Folder(#[from] crate::folder::FolderError),
    /// The control plane's YAML for a lab's folder could not be made or written.
    #[error(transparent)]
    FolderYaml(Box<crate::folder::WriteError>),
    /// Prometheus refused a query: the expression and its reason (a parse error, a bad
    /// matching).
    #[error("prometheus refused the query {expr:?}: {error}")]
    Query { expr: String, error: String },
    /// A peer answered with something that is not the protocol expected.
    #[error("{what}: unexpected answer {answer:?}")]
    Protocol { what: String, answer: String },
}

/// The lab's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O failure while doing `what`.
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

impl From<crate::folder::WriteError> for Error {
    fn from(e: crate::folder::WriteError) -> Error {
        // Boxed: a `WriteError` may itself hold an `Error`.
        Error::FolderYaml(Box::new(e))
    }
}
