//! The proxy's discovery client.
//!
//! # Layout
//! - [`Discovery`]: one `Watch` stream per [`DiscoveryTarget`] (an address the proxy sees
//!   traffic for, or a Service by name), all on one HTTP/2 connection to the control plane,
//!   each feeding a `watch` channel of [`Resolved`].
//! - [`routes`]: the route service's answers, compiled tables ([`RouteState`]).
//! - [`model`]: what an answer holds, checked: [`EndpointSet`], [`EndpointInfo`], and how a
//!   wire update applies to the state held.
//!
//! The control plane being away changes nothing a connection sees: the last answer stays in
//! force, and the stream is reopened with capped, jittered backoff. A destination nobody
//! holds a receiver for is dropped (its stream closed), so the set follows the traffic.

#![forbid(unsafe_code)]

pub mod model;
mod reader;
pub mod routes;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use weft_api::{client::H2Connection, destination::destination_client::DestinationClient};
use weft_proxy_identity::{certify::Held, control_plane::origin, ControlPlaneDialer};
use weft_proxy_metrics::Metrics;

use crate::reader::{Read, StreamReader};
pub use model::{
    DiscoveryTarget, EndpointInfo, EndpointSet, MeshPeer, Resolved, ServiceName, UpdateError,
};
pub use routes::{RouteState, Routes};

/// How discovery behaves.
#[derive(Clone, Debug)]
pub struct Settings {
    /// First retry delay after a failed stream; doubles per failure up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Most destinations watched at once; past it, new destinations are forwarded as they are
    /// (and counted), rather than growing without bound.
    pub max_destinations: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            max_destinations: 10_000,
        }
    }
}

/// Watches destinations on the control plane.
#[derive(Debug)]
pub struct Discovery {
    dialer: ControlPlaneDialer,
    proxy_id: String,
    settings: Settings,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    /// The one connection every stream shares; replaced when it closes.
    conn: tokio::sync::Mutex<Option<H2Connection>>,
    /// With an identity: the certificate held. The connection is dialled once there is one, so
    /// that the control plane knows who asks (consumer routes are chosen by the caller's
    /// namespace, from its client certificate).
    certified: Option<watch::Receiver<Option<Held>>>,
    destinations: Mutex<Table<Destinations>>,
    routes: Mutex<Table<routes::RouteKind>>,
}

/// The watched targets of one kind, each with the sender of its answer.
type Table<K> = HashMap<<K as Kind>::Target, Arc<watch::Sender<<K as Kind>::Answer>>>;

/// One kind of watch the control plane serves, as [`Discovery`]'s shared machinery (the table
/// of targets, one stream per target on the shared connection, backoff, forgetting targets
/// nobody holds) sees it. Each kind brings its target, its answer and how a stream of its
/// updates is read.
trait Kind: Sized + Send + Sync + 'static {
    type Target: Clone + Eq + std::hash::Hash + std::fmt::Display + Send + Sync + 'static;
    type Answer: Send + Sync + 'static;
    /// For logs: `discovery`, `route`.
    const WHAT: &'static str;
    /// What a target holds until the control plane first answers.
    fn pending() -> Self::Answer;
    /// This kind's table in `discovery`.
    fn table(discovery: &Discovery) -> &Mutex<Table<Self>>;
    /// One stream on `conn`, from subscription to its end, applying each update to `tx`. A
    /// received update resets `failures`.
    fn stream<'a>(
        discovery: &'a Discovery,
        conn: H2Connection,
        target: &'a Self::Target,
        tx: &'a watch::Sender<Self::Answer>,
        failures: &'a mut u32,
    ) -> impl std::future::Future<Output = Result<(), StreamError>> + Send + 'a;
}

/// The destination service's answers: endpoints per address or Service port.
#[derive(Debug)]
struct Destinations;

impl Kind for Destinations {
    type Target = DiscoveryTarget;
    type Answer = Resolved;
    const WHAT: &'static str = "discovery";

    fn pending() -> Resolved {
        Resolved::Pending
    }

    fn table(discovery: &Discovery) -> &Mutex<Table<Self>> {
        &discovery.destinations
    }

    async fn stream(
        discovery: &Discovery,
        conn: H2Connection,
        dst: &DiscoveryTarget,
        tx: &watch::Sender<Resolved>,
        failures: &mut u32,
    ) -> Result<(), StreamError> {
        let mut client = DestinationClient::with_origin(conn, origin())
            .max_decoding_message_size(weft_api::MAX_UPDATE_BYTES);
        let mut stream = client
            .watch(dst.watch_request(discovery.proxy_id.clone()))
            .await
            .map_err(StreamError::status)?
            .into_inner();
        let mut reader = StreamReader::new();
        while let Some(update) = stream.message().await.map_err(StreamError::status)? {
            let version = update.version;
            let read = reader.read(tx, update, &discovery.metrics)?;
            read.report(Self::WHAT, dst, version, failures);
        }
        Err(StreamError::Closed)
    }
}

/// Why one stream ended.
#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error(transparent)]
    Dial(#[from] weft_proxy_identity::DialError),
    #[error("the control plane answered {code:?}: {message}")]
    Status { code: tonic::Code, message: String },
    #[error("the control plane sent an unusable update: {0}")]
    Update(#[from] UpdateError),
    #[error("the control plane closed the stream")]
    Closed,
}

impl StreamError {
    fn status(s: tonic::Status) -> StreamError {
        StreamError::Status {
            code: s.code(),
            message: s.message().to_string(),
        }
    }
}

impl Read {
    /// Logs what reading one update did to a stream, and resets `failures` once one applied.
    fn report(self, what: &str, target: &impl std::fmt::Display, version: u64, failures: &mut u32) {
        match self {
            Read::Applied { first } => {
                if first && *failures > 0 {
                    info!(%target, "{what} stream re-established");
                }
                *failures = 0;
            }
            // A newer control plane: the stream stays open and the answer held stays.
            Read::Ignored { first: true } => warn!(
                %target,
                version,
                "the control plane sent an update of a kind this proxy does not know (is \
                 the control plane newer than this proxy?); ignored, the last answer stays \
                 in force; further ones on this stream are counted in \
                 weft_config_updates_total{{kind=\"unknown\"}}"
            ),
            Read::Ignored { first: false } => {
                debug!(%target, version, "an update of an unknown kind ignored")
            }
        }
    }
}

impl Discovery {
    pub fn new(
        dialer: ControlPlaneDialer,
        proxy_id: String,
        settings: Settings,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
        certified: Option<watch::Receiver<Option<Held>>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            dialer,
            proxy_id,
            settings,
            metrics,
            shutdown,
            conn: tokio::sync::Mutex::new(None),
            certified,
            destinations: Mutex::new(HashMap::new()),
            routes: Mutex::new(HashMap::new()),
        })
    }

    fn lock<K: Kind>(&self) -> std::sync::MutexGuard<'_, Table<K>> {
        K::table(self).lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What is known of `target` (an address, or a Service by name), and its changes. The
    /// first call for a target starts its watch; the value is [`Resolved::Pending`] until the
    /// control plane first answers. `None` when the destination table is full.
    pub fn resolve(
        self: &Arc<Self>,
        target: impl Into<DiscoveryTarget>,
    ) -> Option<watch::Receiver<Resolved>> {
        self.watch::<Destinations>(target.into())
    }

    /// The routes of the Service port a connection to `dst` (a cluster IP and port) is for,
    /// as this proxy's namespace sees them, and their changes. The value is
    /// [`RouteState::Pending`] until the control plane first answers (and stays so with a
    /// control plane that does not serve routes). `None` when the table is full.
    pub fn routes(
        self: &Arc<Self>,
        dst: std::net::SocketAddr,
    ) -> Option<watch::Receiver<RouteState>> {
        self.watch::<routes::RouteKind>(dst)
    }

    /// `target`'s answer of kind `K` and its changes, its watch started by the first call;
    /// `None` when `K`'s table is full.
    fn watch<K: Kind>(self: &Arc<Self>, target: K::Target) -> Option<watch::Receiver<K::Answer>> {
        let mut watches = self.lock::<K>();
        if let Some(tx) = watches.get(&target) {
            return Some(tx.subscribe());
        }
        if watches.len() >= self.settings.max_destinations {
            return None;
        }
        let (tx, rx) = watch::channel(K::pending());
        let tx = Arc::new(tx);
        watches.insert(target.clone(), tx.clone());
        tokio::spawn(self.clone().follow::<K>(target, tx));
        Some(rx)
    }

    /// The control plane dialled.
    pub fn control_plane(&self) -> &str {
        self.dialer.addr()
    }

    /// Keeps `target`'s answer current until nobody holds a receiver or shutdown.
    async fn follow<K: Kind>(
        self: Arc<Self>,
        target: K::Target,
        tx: Arc<watch::Sender<K::Answer>>,
    ) {
        let mut failures: u32 = 0;
        let mut last_error = String::new();
        loop {
            let result = tokio::select! {
                r = self.stream::<K>(&target, &tx, &mut failures) => r,
                _ = tx.closed() => Ok(()),
                _ = self.shutdown.cancelled() => return,
            };
            if tx.is_closed() && self.forget::<K>(&target, &tx) {
                debug!(%target, "no longer watched ({})", K::WHAT);
                return;
            }
            let e = match result {
                Ok(()) => StreamError::Closed,
                Err(e) => e,
            };
            failures = failures.saturating_add(1);
            let delay = backoff(&self.settings, failures);
            let msg = e.to_string();
            // An outage fails every target's stream in step: one line per distinct error per
            // target, the rest at debug.
            if msg != last_error {
                warn!(%target, error = %msg, retry_in = ?delay, "{} stream failed; the last answer stays in force", K::WHAT);
                last_error = msg;
            } else {
                debug!(%target, error = %msg, retry_in = ?delay, "{} stream failed again", K::WHAT);
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = tx.closed() => {}
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    /// Drops `target` if it still has no receivers (a new one may have arrived meanwhile).
    fn forget<K: Kind>(&self, target: &K::Target, tx: &Arc<watch::Sender<K::Answer>>) -> bool {
        let mut watches = self.lock::<K>();
        if tx.receiver_count() == 0 {
            watches.remove(target);
            true
        } else {
            false
        }
    }

    /// One stream of kind `K` on the shared connection.
    async fn stream<K: Kind>(
        &self,
        target: &K::Target,
        tx: &watch::Sender<K::Answer>,
        failures: &mut u32,
    ) -> Result<(), StreamError> {
        let conn = self.connection().await?;
        K::stream(self, conn, target, tx, failures).await
    }

    /// The shared connection, dialled if there is none or it closed.
    async fn connection(&self) -> Result<H2Connection, StreamError> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = conn.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        *conn = None;
        if let Some(mut certified) = self.certified.clone() {
            // The certifier gone (shutdown) ends the wait too; the dial then says what fails.
            let _ = certified.wait_for(Option::is_some).await;
        }
        let c = self.dialer.connect().await?;
        *conn = Some(c.clone());
        Ok(c)
    }
}

/// `min * 2^(n-1)`, capped, with up to 50 % random reduction so a fleet does not retry in step.
fn backoff(settings: &Settings, failures: u32) -> Duration {
    let exp = settings
        .min_backoff
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(settings.max_backoff);
    exp.mul_f64(1.0 - 0.5 * rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use weft_certs::{Ca, SpiffeId, TrustBundle};

    use super::*;

    /// Discovery against a control plane that refuses connections (loopback port 1): only the
    /// table of watched targets is under test here.
    fn discovery(max_destinations: usize) -> Arc<Discovery> {
        let anchor = Ca::new_anchor(
            "cluster.local",
            Duration::from_secs(3600),
            time::OffsetDateTime::now_utc(),
        )
        .expect("anchor");
        let bundle = TrustBundle::from_pem(anchor.cert_pem()).expect("bundle");
        let id = SpiffeId::new("cluster.local", "weft", "weft-control-plane").expect("id");
        let dialer = ControlPlaneDialer::new(
            "127.0.0.1:1".into(),
            id,
            bundle,
            Duration::from_secs(1),
            None,
        )
        .expect("dialer");
        Discovery::new(
            dialer,
            "spiffe://cluster.local/ns/shop/sa/web".into(),
            Settings {
                max_destinations,
                ..Settings::default()
            },
            Arc::new(Metrics::new("test").expect("metrics")),
            CancellationToken::new(),
            None,
        )
    }

    #[tokio::test]
    async fn targets_are_watched_by_address_and_by_service_name() {
        let discovery = discovery(2);
        let addr: SocketAddr = "198.19.0.10:80".parse().expect("addr");
        let api = ServiceName {
            namespace: "shop".into(),
            name: "api".into(),
            port: 80,
        };
        // The call the data path makes, with a bare SocketAddr, and one by name.
        let a1 = discovery.resolve(addr).expect("watched");
        let a2 = discovery
            .resolve(DiscoveryTarget::Addr(addr))
            .expect("watched");
        let s1 = discovery.resolve(api.clone()).expect("watched");
        assert!(a1.same_channel(&a2), "one watch per address");
        assert!(!a1.same_channel(&s1), "the name is a target of its own");
        assert_eq!(*s1.borrow(), Resolved::Pending);
        assert_eq!(discovery.lock::<Destinations>().len(), 2);
        // The bound counts both kinds of key.
        let other: SocketAddr = "198.19.0.11:80".parse().expect("addr");
        assert!(discovery.resolve(other).is_none());
        assert!(
            discovery.resolve(api).is_some(),
            "a watched target still resolves"
        );
        discovery.shutdown.cancel();
    }
}
