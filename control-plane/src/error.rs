//! Why the control plane did not start or stopped: one variant per cause, each saying what
//! to check, and which of them are the operator's configuration (exit 64) rather than a
//! failure at run time (exit 1).

use std::{net::SocketAddr, path::PathBuf};

use crate::{
    issuer::IssuerError, local::LoadError, serving::ServingError, tokens::TokensFileError,
};

/// Exit code for bad usage or configuration (`EX_USAGE` in BSD's sysexits).
pub const EXIT_CONFIG: u8 = 64;
/// Exit code for a failure at run time.
pub const EXIT_RUNTIME: u8 = 1;

/// Why [`crate::run`] (or [`crate::init_logging`]) failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--issuer`: the directory's files are missing, unreadable or unusable.
    #[error("--issuer: {0}")]
    Issuer(#[source] IssuerError),
    /// `--tokens`: the file is missing, unreadable or malformed.
    #[error("--tokens: {0}")]
    Tokens(#[source] TokensFileError),
    /// `--source local:DIR`: the folder does not load.
    #[error("--source local:{}: {source}", dir.display())]
    LocalSource {
        dir: PathBuf,
        #[source]
        source: LoadError,
    },
    /// `--source kubernetes` (or no `--tokens`) without a usable Kubernetes client config.
    #[error(
        "{what}: no Kubernetes API config (in-cluster service account or $KUBECONFIG): {source}"
    )]
    KubeConfig {
        /// What needed the API: `--source kubernetes`, or TokenReview without `--tokens`.
        what: &'static str,
        #[source]
        source: kube::Error,
    },
    /// `--trust-domain`, `--namespace` or `--service-account` do not make a SPIFFE ID.
    #[error(
        "the control plane's own identity from --trust-domain, --namespace and \
         --service-account: {0}"
    )]
    OwnIdentity(#[source] weft_certs::SpiffeIdError),
    /// `--log` is not a tracing filter.
    #[error("--log {filter:?}: {source}")]
    LogFilter {
        filter: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// `--log-format` is neither `plain` nor `json`.
    #[error("--log-format {0:?}: expected plain or json")]
    LogFormat(String),
    /// A listening address could not be bound (in use, not local, not permitted).
    #[error(
        "binding the {what} address {addr}: {source}; is another process using it, and is \
         the address local?"
    )]
    Bind {
        /// `gRPC` or `admin`.
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The control plane's own serving certificate could not be made.
    #[error("the control plane's serving certificate: {0}")]
    Serving(#[source] ServingError),
    /// `--addresses-file`: the bound addresses could not be written.
    #[error("--addresses-file: {0}")]
    AddressesFile(#[from] crate::addresses::AddressesFileError),
    /// The metrics registry refused a metric (a bug: names are fixed).
    #[error("registering metrics: {0}")]
    Metrics(#[source] prometheus::Error),
    /// The thread config work runs on could not be started.
    #[error("starting the config thread: {0}")]
    ConfigThread(#[source] std::io::Error),
}

impl Error {
    /// Whether the operator's flags or files are at fault, rather than the run.
    pub fn is_config(&self) -> bool {
        match self {
            Error::Issuer(_)
            | Error::Tokens(_)
            | Error::LocalSource { .. }
            | Error::KubeConfig { .. }
            | Error::OwnIdentity(_)
            | Error::LogFilter { .. }
            | Error::LogFormat(_) => true,
            Error::Bind { .. }
            | Error::Serving(_)
            | Error::AddressesFile(_)
            | Error::Metrics(_)
            | Error::ConfigThread(_) => false,
        }
    }

    /// The process exit code: [`EXIT_CONFIG`] (64) for configuration, else
    /// [`EXIT_RUNTIME`] (1).
    pub fn exit_code(&self) -> u8 {
        if self.is_config() {
            EXIT_CONFIG
        } else {
            EXIT_RUNTIME
        }
    }
}
