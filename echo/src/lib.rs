//! The lab's echo app: what `weftctl lab` runs on each container port of each pod. It answers
//! as Gateway API's conformance echo server (`echo-basic`) does, so a route, retry, timeout or
//! header test written against that server reads the same JSON here:
//!
//! - any path: `200` with a JSON body naming the raw request target (`path`), `host`,
//!   `method`, `proto`, every request header (`headers`, names spelled as Go spells them,
//!   values in order), the port it arrived on (`httpPort`), and who answered: `namespace`,
//!   `pod`, `service` (and `ingress`, always empty here). `?delay=1.5s` waits first (Go
//!   duration syntax, at most [`Settings::max_delay`]). `X-Echo-Set-Header: Name: value,
//!   Other: value` sets response headers.
//! - `/retry/...?uuid=U&succeedAfter=N[&responseCode=C][&delayRetry=D]`: the first `N`
//!   requests with uuid `U` fail, after `D`, with status `C`, or, without `responseCode`, by
//!   resetting the connection (HTTP/1: a TCP RST; HTTP/2: an `RST_STREAM` of that stream);
//!   the later ones are echoed. `/retry-count?uuid=U` reads what the simulator saw of `U`.
//! - `/health` answers `OK`; `/status/NNN` answers status `NNN`.
//!
//! A malformed or out-of-bounds parameter is a `400` with `{"message", "parameter"}` naming it.
//! Every route, parameter and field, with the JSON's shape, is in the crate's README; where
//! this differs from echo-basic is said there too.
//!
//! HTTP/1.1 and h2c (HTTP/2 with prior knowledge) share one port: hyper-util's auto builder
//! reads the connection preface and picks, as the pods' proxies will meet both on one
//! container port. tokio and hyper because the proxy is built on them: the lab runs the
//! echo apps of every pod in one tokio runtime, on listeners it made inside each pod's network
//! namespace, so [`Echo::serve`] takes a listener and never binds.
//!
//! ```no_run
//! use weft_echo::{Echo, EchoIdentity};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let echo = Echo::new(EchoIdentity {
//!     namespace: "shop".into(),
//!     pod: "api-0".into(),
//!     service: Some("api".into()),
//! });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! echo.serve(listener, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await?;
//! # Ok(())
//! # }
//! ```
//!
//! Bounds: a request body is read (and discarded) up to [`Settings::max_body_bytes`] within
//! [`Settings::body_timeout`]; headers are limited to 100 fields and 64 KiB (HTTP/1) or a
//! 64 KiB header list (HTTP/2); delays to [`Settings::max_delay`]; the retry simulator
//! remembers [`Settings::retry_capacity`] uuids of at most [`MAX_UUID_LEN`] bytes, the oldest
//! forgotten first; [`Settings::max_connections`] connections at once. Shutdown stops
//! accepting, lets in-flight requests finish for [`Settings::drain_timeout`], then cuts their
//! waits short.
//!
//! # Layout
//! - [`parse`]: the parsers for what clients send (query parameters, Go durations,
//!   `X-Echo-Set-Header`), pure; fuzzed in `echo/fuzz/`.
//! - `retry`: the retry simulator's bounded counts per uuid, pure.
//! - `handler`: routes, the JSON, the simulator and the delays, for one request.
//! - `server`: the accept loop, connections, drain and the connection reset.

#![forbid(unsafe_code)]

use std::{
    future::Future,
    io,
    sync::{Arc, Mutex},
    time::Duration,
};

pub mod parse;

mod handler;
mod retry;
mod server;

pub use handler::SET_HEADER;
pub use retry::{RetryCount, DEFAULT_RETRY_CAPACITY, MAX_UUID_LEN};

/// Who an echo app answers as: the JSON's `namespace`, `pod` and `service`, so a test can
/// tell which pod answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoIdentity {
    pub namespace: String,
    pub pod: String,
    /// The Service the pod backs, if any (echo-basic's `SERVICE_NAME`); `""` in the JSON when
    /// `None`, as echo-basic shows an unset one.
    pub service: Option<String>,
}

/// The echo app's bounds. [`Settings::default`] is what the lab uses; tests shorten them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The longest `?delay=` or `?delayRetry=` honoured; a longer one is a 400.
    pub max_delay: Duration,
    /// How much of a request body is read (and discarded) before answering.
    pub max_body_bytes: u64,
    /// How long reading that much may take before the echo answers anyway.
    pub body_timeout: Duration,
    /// How long an HTTP/1 client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// How many uuids the retry simulator remembers; past it, the oldest is forgotten.
    pub retry_capacity: usize,
    /// How many connections one [`Echo::serve`] serves at once; more wait to be accepted.
    pub max_connections: usize,
    /// How long, after shutdown, in-flight requests have to finish before their waits are
    /// cut short (they are then reset).
    pub drain_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_delay: Duration::from_secs(60),
            max_body_bytes: 1024 * 1024,
            body_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            retry_capacity: DEFAULT_RETRY_CAPACITY,
            max_connections: 1024,
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// Why an echo app could not serve a listener.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listener's own address could not be read.
    #[error(
        "reading the echo listener's local address failed: {0}; is the socket bound and listening?"
    )]
    LocalAddr(#[source] io::Error),
    /// A std listener could not be handed to tokio.
    #[error("handing the echo's std listener to tokio failed: {0}; is it a listening TCP socket, and is this called inside a tokio runtime?")]
    FromStd(#[source] io::Error),
}

/// An echo app: its identity and the retry simulator's counts, shared by every listener it
/// serves and every connection. Cheap to clone (one `Arc`).
#[derive(Debug, Clone)]
pub struct Echo {
    shared: Arc<handler::Shared>,
}

impl Echo {
    /// An echo app answering as `identity`, with the default [`Settings`].
    pub fn new(identity: EchoIdentity) -> Self {
        Self::with_settings(identity, Settings::default())
    }

    /// An echo app answering as `identity`, within `settings`.
    pub fn with_settings(identity: EchoIdentity, settings: Settings) -> Self {
        let retries = Mutex::new(retry::RetryCounters::new(settings.retry_capacity));
        Self {
            shared: Arc::new(handler::Shared {
                identity,
                settings,
                retries,
            }),
        }
    }

    /// Who this app answers as.
    pub fn identity(&self) -> &EchoIdentity {
        &self.shared.identity
    }

    /// What the retry simulator saw of `uuid` (what `/retry-count?uuid=` answers); `None` if
    /// it never saw it or has forgotten it.
    pub fn retry_count(&self, uuid: &str) -> Option<RetryCount> {
        self.shared.retry_count(uuid)
    }

    /// Serves HTTP/1.1 and h2c on `listener` until `shutdown` completes; then stops
    /// accepting, lets in-flight requests finish (idle HTTP/1 connections close, HTTP/2 ones
    /// get a GOAWAY) for [`Settings::drain_timeout`], cuts the waits of any still running
    /// (they are reset), and returns. The JSON's `httpPort` is the listener's port. Call it
    /// once per listener; the listeners of one `Echo` share its retry counts.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServeError> {
        let port = listener.local_addr().map_err(ServeError::LocalAddr)?.port();
        server::serve(self.shared.clone(), listener, port, shutdown).await;
        Ok(())
    }

    /// [`Echo::serve`] for a std listener, such as one made by a thread that entered a pod's
    /// network namespace (the socket stays in the namespace it was made in). It is switched to
    /// non-blocking here. Must run inside a tokio runtime.
    pub async fn serve_std(
        &self,
        listener: std::net::TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServeError> {
        listener
            .set_nonblocking(true)
            .map_err(ServeError::FromStd)?;
        let listener = tokio::net::TcpListener::from_std(listener).map_err(ServeError::FromStd)?;
        self.serve(listener, shutdown).await
    }
}
