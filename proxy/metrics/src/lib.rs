//! The Weft proxy's metrics.
//!
//! # Layout
//! - [`Metrics`]: every metric the proxy exports, registered once, with typed label arguments so a
//!   caller cannot invent a label value; [`Metrics::encode`] renders the Prometheus text format.
//! - [`io`]: [`MeteredIo`], an accepted socket whose bytes and close are counted.
//!
//! Cardinality is bounded by construction: `direction` and `flow` are enums, `status_code` is an
//! HTTP status (at most 900 values, `http` keeps the strings static), and the `port` label of
//! detection timeouts holds at most [`MAX_PORT_LABELS`] distinct ports before folding into `other`.
//!
//! The redirect check's metrics (`weft_redirect_verified`, `weft_redirect_checks_total`) are
//! defined with the rest but exported only once [`Metrics::enable_redirect_check`] is called, so a
//! proxy that does not check (loopback or explicit mode) has no such series rather than a
//! misleading 0.

#![forbid(unsafe_code)]

pub mod io;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use prometheus::{
    core::Collector, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub use io::MeteredIo;

/// Distinct ports the detection-timeout counter labels before it folds the rest into `other`.
pub const MAX_PORT_LABELS: usize = 64;

/// Request duration buckets, seconds: from a fast loopback hop to a slow backend.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Which listener a connection arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Into the pod: a peer (or an unmeshed client) calling the app.
    Inbound = 0,
    /// Out of the pod: the app calling something.
    Outbound = 1,
}

impl Direction {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// Which way bytes flowed on a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flow {
    /// From the client (the connection's opener) toward the server.
    ToServer,
    /// From the server back to the client.
    ToClient,
}

impl Flow {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Flow::ToServer => "to_server",
            Flow::ToClient => "to_client",
        }
    }
}

/// An IP address family: the `family` label of the redirect check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    /// Both families.
    pub const ALL: [Family; 2] = [Family::Ipv4, Family::Ipv6];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }
}

/// The outcome of one redirect check probe: the `result` label, a closed set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RedirectResult {
    /// The proxy's own outbound listener answered with the process's token.
    Verified,
    /// Nothing listens on the check port: the connection was not redirected.
    Refused,
    /// No connection, or no answer, within the probe timeout.
    Timeout,
    /// Something answered, but not with the token: another listener.
    WrongAnswer,
    /// Any other socket error.
    Error,
}

impl RedirectResult {
    /// Every result, so each series exists from the first check.
    pub const ALL: [RedirectResult; 5] = [
        RedirectResult::Verified,
        RedirectResult::Refused,
        RedirectResult::Timeout,
        RedirectResult::WrongAnswer,
        RedirectResult::Error,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            RedirectResult::Verified => "verified",
            RedirectResult::Refused => "refused",
            RedirectResult::Timeout => "timeout",
            RedirectResult::WrongAnswer => "wrong_answer",
            RedirectResult::Error => "error",
        }
    }
}

/// Every metric the proxy exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    tcp_opened: IntCounterVec,
    tcp_closed: IntCounterVec,
    tcp_bytes: IntCounterVec,
    detect_timeouts: IntCounterVec,
    detect_timeout_ports: Mutex<HashSet<u16>>,
    /// The plaintext series of each direction, for connections without mesh TLS.
    plaintext: [Arc<RequestSeries>; 2],
    /// Series of mTLS peers, by direction and identities; bounded by [`MAX_IDENTITY_SERIES`].
    peer_series: Mutex<HashMap<PeerKey, Arc<RequestSeries>>>,
    tls_handshakes: IntCounterVec,
    cert_expiry: IntGauge,
    inbound_refused: IntCounterVec,
    /// Series of balanced destinations; bounded by [`MAX_ENDPOINT_SERIES`].
    endpoint_series: Mutex<HashMap<Destination, Arc<RequestSeries>>>,
    config_updates: IntCounterVec,
    /// Connections that found a Service with no endpoints, by protocol.
    no_endpoints: IntCounterVec,
    /// Whether the last redirect check proved the redirection; exported once enabled.
    redirect_verified: IntGauge,
    /// Redirect check probes by family and result; exported once enabled.
    redirect_checks: IntCounterVec,
    redirect_enabled: OnceLock<()>,
}

/// A mesh series' key: direction, client identity, server identity.
type PeerKey = (Direction, Arc<str>, Arc<str>);

/// The request series' labels, in the order [`RequestSeries`] fills them.
const REQUEST_LABELS: &[&str] = &[
    "direction",
    "tls",
    "client_id",
    "server_id",
    "dst_service",
    "dst_endpoint",
    "status_code",
];

/// Distinct (service, endpoint) pairs labelled before further endpoints fold into
/// `dst_endpoint="other"` (the service stays).
pub const MAX_ENDPOINT_SERIES: usize = 1024;

/// Who a request went to when it was balanced over a Service's endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Destination {
    /// Mesh TLS to the endpoint's proxy, with both identities; or plaintext.
    pub tls: bool,
    pub client_id: Arc<str>,
    pub server_id: Arc<str>,
    /// `namespace/name:port`.
    pub service: Arc<str>,
    /// `ip:port`.
    pub endpoint: Arc<str>,
}

/// Distinct (client, server) identity pairs labelled per direction before the rest fold into
/// `client_id="other"`.
pub const MAX_IDENTITY_SERIES: usize = 1024;

/// The request series of one kind of connection: direction, whether it is mesh TLS, and the
/// identities at both ends. A connection looks it up once; each request then costs two atomic
/// updates through handles cached per status 100..=599, not two hashed lookups under a lock
/// (profiled at ~700 instructions per request).
#[derive(Debug)]
pub struct RequestSeries {
    labels: [String; 6],
    requests: IntCounterVec,
    request_duration: HistogramVec,
    handles: Box<[OnceLock<RequestHandles>]>,
}

impl RequestSeries {
    fn new(
        requests: &IntCounterVec,
        request_duration: &HistogramVec,
        direction: Direction,
        tls: bool,
        client_id: &str,
        server_id: &str,
        dst: (&str, &str),
    ) -> Self {
        Self {
            labels: [
                direction.as_str().to_string(),
                tls.to_string(),
                client_id.to_string(),
                server_id.to_string(),
                dst.0.to_string(),
                dst.1.to_string(),
            ],
            requests: requests.clone(),
            request_duration: request_duration.clone(),
            handles: CACHED_STATUSES.map(|_| OnceLock::new()).collect(),
        }
    }

    /// Counts one answered request and its duration.
    pub fn record(&self, status: http::StatusCode, elapsed: Duration) {
        let make = || {
            let [d, t, c, s, svc, ep] = &self.labels;
            let labels = [d.as_str(), t, c, s, svc, ep, status.as_str()];
            RequestHandles {
                count: self.requests.with_label_values(&labels),
                duration: self.request_duration.with_label_values(&labels),
            }
        };
        let code = status.as_u16();
        let slot = CACHED_STATUSES
            .contains(&code)
            .then(|| &self.handles[usize::from(code - CACHED_STATUSES.start())]);
        let uncached;
        let handles = match slot {
            Some(slot) => slot.get_or_init(make),
            None => {
                uncached = make();
                &uncached
            }
        };
        handles.count.inc();
        handles.duration.observe(elapsed.as_secs_f64());
    }
}

/// The outcome of a mesh TLS handshake: the `result` label, a closed set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handshake {
    /// Both sides verified.
    Ok,
    /// The peer's chain does not lead to a trusted anchor (or its signature is bad).
    Untrusted,
    /// A trusted chain, but not the identity expected.
    WrongIdentity,
    /// The peer's certificate has expired or is not yet valid.
    Expired,
    /// The peer presented no certificate.
    NoCertificate,
    /// The handshake did not finish in time.
    Timeout,
    /// Anything else (protocol errors, resets).
    Error,
}

impl Handshake {
    /// Every result, so each series exists from the start.
    pub const ALL: [Handshake; 7] = [
        Handshake::Ok,
        Handshake::Untrusted,
        Handshake::WrongIdentity,
        Handshake::Expired,
        Handshake::NoCertificate,
        Handshake::Timeout,
        Handshake::Error,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Handshake::Ok => "ok",
            Handshake::Untrusted => "untrusted",
            Handshake::WrongIdentity => "wrong_identity",
            Handshake::Expired => "expired",
            Handshake::NoCertificate => "no_certificate",
            Handshake::Timeout => "timeout",
            Handshake::Error => "error",
        }
    }
}

#[derive(Debug)]
struct RequestHandles {
    count: IntCounter,
    duration: Histogram,
}

/// Statuses with a cached handle: every standard one.
const CACHED_STATUSES: std::ops::RangeInclusive<u16> = 100..=599;

impl Metrics {
    /// Registers every metric, with `weft_build_info` set to `version`.
    ///
    /// Fails only if a metric definition is invalid, which the tests rule out.
    pub fn new(version: &str) -> prometheus::Result<Self> {
        let registry = Registry::new();
        let requests = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "weft_requests_total",
                    "HTTP requests the proxy answered, by response status. tls is \"true\" \
                     on the mesh hop (mTLS), with the SPIFFE IDs of both ends in client_id and \
                     server_id; empty otherwise. Outbound requests to a Service carry \
                     dst_service (namespace/name:port) and dst_endpoint (ip:port).",
                ),
                REQUEST_LABELS,
            ),
        )?;
        let request_duration = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "weft_request_duration_seconds",
                    "Time from a request's arrival to the end of its response body.",
                )
                .buckets(DURATION_BUCKETS.to_vec()),
                REQUEST_LABELS,
            ),
        )?;
        let tcp_opened = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "weft_tcp_connections_opened_total",
                    "TCP connections accepted.",
                ),
                &["direction"],
            ),
        )?;
        let tcp_closed = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "weft_tcp_connections_closed_total",
                    "TCP connections closed.",
                ),
                &["direction"],
            ),
        )?;
        let tcp_bytes = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "weft_tcp_bytes_total",
                    "Bytes carried on accepted connections.",
                ),
                &["direction", "flow"],
            ),
        )?;
        let detect_timeouts = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "weft_protocol_detect_timeouts_total",
                    "Connections whose client sent nothing recognisable before the detection \
                     timeout and were forwarded as opaque TCP; a server-speaks-first port to list \
                     in WEFT_OPAQUE_PORTS.",
                ),
                &["direction", "port"],
            ),
        )?;
        let build_info = register(
            &registry,
            IntGaugeVec::new(
                Opts::new("weft_build_info", "The proxy's build; always 1."),
                &["version"],
            ),
        )?;
        build_info.with_label_values(&[version]).set(1);
        let tls_handshakes = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "weft_tls_handshakes_total",
                    "Mesh TLS handshakes, by direction and result.",
                ),
                &["direction", "result"],
            ),
        )?;
        let cert_expiry = register(
            &registry,
            IntGauge::new(
                "weft_identity_cert_expiry_timestamp_seconds",
                "When the proxy's current certificate expires, seconds since the Unix epoch; 0 \
                 before the first one.",
            ),
        )?;
        let inbound_refused = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "weft_inbound_connections_refused_total",
                    "Inbound connections refused before reaching the app, by reason.",
                ),
                &["reason"],
            ),
        )?;
        let config_updates = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "weft_config_updates_total",
                    "Discovery updates received from the control plane, by kind (snapshot, \
                     delta, not_a_service) and result (applied, refused); kind=unknown, \
                     result=ignored for a kind this proxy does not know (a newer control plane).",
                ),
                &["kind", "result"],
            ),
        )?;
        for kind in ["snapshot", "delta", "not_a_service"] {
            for result in ["applied", "refused"] {
                config_updates.with_label_values(&[kind, result]);
            }
        }
        config_updates.with_label_values(&["unknown", "ignored"]);
        let no_endpoints = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "weft_no_endpoints_total",
                    "Requests (http) and connections (tcp) to a Service that had no ready \
                     endpoints, answered 503 or closed.",
                ),
                &["protocol"],
            ),
        )?;
        // Registered by `enable_redirect_check`, not here.
        let redirect_verified = IntGauge::new(
            "weft_redirect_verified",
            "1 when the last redirect check proved that the pod's iptables rules send the \
             proxy's check connections (127.0.0.1 and ::1 on the check port) to its own outbound \
             listener, 0 otherwise (and before the first check). Absent when the check is off.",
        )?;
        let redirect_checks = IntCounterVec::new(
            Opts::new(
                "weft_redirect_checks_total",
                "Redirect check probes, by address family and result (verified, refused, \
                 timeout, wrong_answer, error). Absent when the check is off.",
            ),
            &["family", "result"],
        )?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let plaintext = [Direction::Inbound, Direction::Outbound].map(|d| {
            Arc::new(RequestSeries::new(
                &requests,
                &request_duration,
                d,
                false,
                "",
                "",
                ("", ""),
            ))
        });
        for d in [Direction::Inbound, Direction::Outbound] {
            for h in Handshake::ALL {
                tls_handshakes.with_label_values(&[d.as_str(), h.as_str()]);
            }
        }
        Ok(Self {
            registry,
            requests,
            request_duration,
            tcp_opened,
            tcp_closed,
            tcp_bytes,
            detect_timeouts,
            detect_timeout_ports: Mutex::new(HashSet::new()),
            plaintext,
            peer_series: Mutex::new(HashMap::new()),
            tls_handshakes,
            cert_expiry,
            inbound_refused,
            endpoint_series: Mutex::new(HashMap::new()),
            config_updates,
            no_endpoints,
            redirect_verified,
            redirect_checks,
            redirect_enabled: OnceLock::new(),
        })
    }

    /// Starts exporting the redirect check's metrics, with a zero for every family and result;
    /// a second call does nothing.
    pub fn enable_redirect_check(&self) -> prometheus::Result<()> {
        if self.redirect_enabled.get().is_some() {
            return Ok(());
        }
        self.registry
            .register(Box::new(self.redirect_verified.clone()))?;
        self.registry
            .register(Box::new(self.redirect_checks.clone()))?;
        for family in Family::ALL {
            for result in RedirectResult::ALL {
                self.redirect_checks
                    .with_label_values(&[family.as_str(), result.as_str()]);
            }
        }
        let _ = self.redirect_enabled.set(());
        Ok(())
    }

    /// Counts one redirect check probe.
    pub fn redirect_probe(&self, family: Family, result: RedirectResult) {
        self.redirect_checks
            .with_label_values(&[family.as_str(), result.as_str()])
            .inc();
    }

    /// Sets whether the last redirect check proved the redirection.
    pub fn redirect_verified(&self, verified: bool) {
        self.redirect_verified.set(i64::from(verified));
    }

    /// The outbound series of requests balanced to `dst`. Called when an endpoint joins a
    /// balancer, not per request.
    pub fn endpoint(&self, dst: Destination) -> Arc<RequestSeries> {
        let mut series = self
            .endpoint_series
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(s) = series.get(&dst) {
            return s.clone();
        }
        let dst = if series.len() < MAX_ENDPOINT_SERIES {
            dst
        } else {
            Destination {
                endpoint: Arc::from("other"),
                ..dst
            }
        };
        series
            .entry(dst.clone())
            .or_insert_with(|| {
                Arc::new(RequestSeries::new(
                    &self.requests,
                    &self.request_duration,
                    Direction::Outbound,
                    dst.tls,
                    &dst.client_id,
                    &dst.server_id,
                    (&dst.service, &dst.endpoint),
                ))
            })
            .clone()
    }

    /// One discovery update received: `kind` is `snapshot`, `delta` or `not_a_service`.
    pub fn config_update(&self, kind: &'static str, applied: bool) {
        let result = if applied { "applied" } else { "refused" };
        self.config_updates.with_label_values(&[kind, result]).inc();
    }

    /// One discovery update of a kind this proxy does not know, ignored.
    pub fn config_update_ignored(&self) {
        self.config_updates
            .with_label_values(&["unknown", "ignored"])
            .inc();
    }

    /// A request (`http`) or connection (`tcp`) found its Service without endpoints.
    pub fn no_endpoints(&self, protocol: &'static str) {
        self.no_endpoints.with_label_values(&[protocol]).inc();
    }

    /// The series for plaintext (non-mesh) connections in `direction`.
    pub fn plaintext(&self, direction: Direction) -> Arc<RequestSeries> {
        self.plaintext[direction as usize].clone()
    }

    /// The series for a mesh connection in `direction` between `client_id` and `server_id`.
    /// Called once per connection.
    pub fn mesh(
        &self,
        direction: Direction,
        client_id: &str,
        server_id: &str,
    ) -> Arc<RequestSeries> {
        let mut series = self.peer_series.lock().unwrap_or_else(|p| p.into_inner());
        let key = (
            direction,
            Arc::<str>::from(client_id),
            Arc::<str>::from(server_id),
        );
        if let Some(s) = series.get(&key) {
            return s.clone();
        }
        let (client_id, key) = if series.len() < MAX_IDENTITY_SERIES {
            (client_id, key)
        } else {
            ("other", (direction, Arc::from("other"), key.2))
        };
        series
            .entry(key)
            .or_insert_with(|| {
                Arc::new(RequestSeries::new(
                    &self.requests,
                    &self.request_duration,
                    direction,
                    true,
                    client_id,
                    server_id,
                    ("", ""),
                ))
            })
            .clone()
    }

    /// Counts one answered plaintext request and its duration.
    pub fn request(&self, direction: Direction, status: http::StatusCode, elapsed: Duration) {
        self.plaintext[direction as usize].record(status, elapsed);
    }

    /// Counts a mesh TLS handshake.
    pub fn tls_handshake(&self, direction: Direction, result: Handshake) {
        self.tls_handshakes
            .with_label_values(&[direction.as_str(), result.as_str()])
            .inc();
    }

    /// Sets when the proxy's certificate expires.
    pub fn cert_expires_at(&self, unix_seconds: i64) {
        self.cert_expiry.set(unix_seconds);
    }

    /// Counts an inbound connection refused for `reason` (a static label value).
    pub fn inbound_refused(&self, reason: &'static str) {
        self.inbound_refused.with_label_values(&[reason]).inc();
    }

    /// Counts an accepted connection and wraps its socket so that its bytes and its close are
    /// counted too.
    pub fn accepted<T>(&self, direction: Direction, io: T) -> MeteredIo<T> {
        let d = direction.as_str();
        self.tcp_opened.with_label_values(&[d]).inc();
        MeteredIo::new(
            io,
            self.tcp_bytes
                .with_label_values(&[d, Flow::ToServer.as_str()]),
            self.tcp_bytes
                .with_label_values(&[d, Flow::ToClient.as_str()]),
            ConnectionGuard {
                closed: self.tcp_closed.with_label_values(&[d]),
            },
        )
    }

    /// Counts a detection timeout on destination `port`.
    pub fn detect_timeout(&self, direction: Direction, port: u16) {
        let port_str = port.to_string();
        let label = {
            let mut seen = self
                .detect_timeout_ports
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if seen.contains(&port) || seen.len() < MAX_PORT_LABELS {
                seen.insert(port);
                port_str.as_str()
            } else {
                "other"
            }
        };
        self.detect_timeouts
            .with_label_values(&[direction.as_str(), label])
            .inc();
    }

    /// Renders every metric in the Prometheus text exposition format (version 0.0.4).
    pub fn encode(&self) -> prometheus::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(16 * 1024);
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(out)
    }

    /// The content type of [`Metrics::encode`]'s output.
    pub fn content_type() -> &'static str {
        prometheus::TEXT_FORMAT
    }
}

/// Counts a connection's close when dropped.
#[derive(Debug)]
struct ConnectionGuard {
    closed: IntCounter,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.closed.inc();
    }
}

fn register<C: Collector + Clone + 'static>(
    registry: &Registry,
    c: prometheus::Result<C>,
) -> prometheus::Result<C> {
    let c = c?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

#[cfg(test)]
mod tests;
