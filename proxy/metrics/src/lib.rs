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

#![forbid(unsafe_code)]

pub mod io;

use std::{
    collections::HashSet,
    sync::{Mutex, OnceLock},
    time::Duration,
};

use prometheus::{
    core::Collector, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGaugeVec, Opts, Registry, TextEncoder,
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
    /// The request series' handles by direction and status 100..=599, made on first use: a
    /// request then costs two atomic updates, not two hashed lookups under a lock (profiled at
    /// ~700 instructions per request).
    request_handles: [Box<[OnceLock<RequestHandles>]>; 2],
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
                    "HTTP requests the proxy answered, by response status.",
                ),
                &["direction", "status_code"],
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
                &["direction", "status_code"],
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
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Self {
            registry,
            requests,
            request_duration,
            tcp_opened,
            tcp_closed,
            tcp_bytes,
            detect_timeouts,
            detect_timeout_ports: Mutex::new(HashSet::new()),
            request_handles: [(); 2].map(|()| CACHED_STATUSES.map(|_| OnceLock::new()).collect()),
        })
    }

    /// Counts one answered request and its duration.
    pub fn request(&self, direction: Direction, status: http::StatusCode, elapsed: Duration) {
        let make = || {
            let labels = [direction.as_str(), status.as_str()];
            RequestHandles {
                count: self.requests.with_label_values(&labels),
                duration: self.request_duration.with_label_values(&labels),
            }
        };
        let code = status.as_u16();
        let slot = CACHED_STATUSES.contains(&code).then(|| {
            &self.request_handles[direction as usize][usize::from(code - CACHED_STATUSES.start())]
        });
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
