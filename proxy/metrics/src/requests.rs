//! Request series: `weft_requests_total` and `weft_request_duration_seconds`, by direction, mesh
//! TLS, the identities at both ends, and (outbound, balanced) the Service and endpoint. A
//! connection looks its [`RequestSeries`] up once; the per-request cost is two atomic updates.
//!
//! The identity and endpoint label sets are bounded: past [`MAX_IDENTITY_SERIES`] pairs per
//! direction the client folds into `client_id="other"`, past [`MAX_ENDPOINT_SERIES`]
//! destinations the endpoint folds into `dst_endpoint="other"`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};

use crate::{labels::Direction, registry::register, Metrics};

/// Distinct (service, endpoint) pairs labelled before further endpoints fold into
/// `dst_endpoint="other"` (the service stays).
pub const MAX_ENDPOINT_SERIES: usize = 1024;

/// Distinct (client, server) identity pairs labelled per direction before the rest fold into
/// `client_id="other"`.
pub const MAX_IDENTITY_SERIES: usize = 1024;

/// Request duration buckets, seconds: from a fast loopback hop to a slow backend.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

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

/// Statuses with a cached handle: every standard one.
const CACHED_STATUSES: std::ops::RangeInclusive<u16> = 100..=599;

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

/// The request metrics and the series handed out so far.
#[derive(Debug)]
pub(crate) struct Requests {
    requests: IntCounterVec,
    request_duration: HistogramVec,
    /// The plaintext series of each direction, for connections without mesh TLS.
    plaintext: [Arc<RequestSeries>; 2],
    /// Series of mTLS peers, by direction and identities; bounded by [`MAX_IDENTITY_SERIES`].
    peer_series: Mutex<HashMap<PeerKey, Arc<RequestSeries>>>,
    /// Series of balanced destinations; bounded by [`MAX_ENDPOINT_SERIES`].
    endpoint_series: Mutex<HashMap<Destination, Arc<RequestSeries>>>,
}

/// A mesh series' key: direction, client identity, server identity.
type PeerKey = (Direction, Arc<str>, Arc<str>);

#[derive(Debug)]
struct RequestHandles {
    count: IntCounter,
    duration: Histogram,
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

impl Requests {
    pub(crate) fn register(registry: &Registry) -> prometheus::Result<Self> {
        let requests = register(
            registry,
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
            registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "weft_request_duration_seconds",
                    "Time from a request's arrival to the end of its response body.",
                )
                .buckets(DURATION_BUCKETS.to_vec()),
                REQUEST_LABELS,
            ),
        )?;
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
        Ok(Self {
            requests,
            request_duration,
            plaintext,
            peer_series: Mutex::new(HashMap::new()),
            endpoint_series: Mutex::new(HashMap::new()),
        })
    }
}

impl Metrics {
    /// The outbound series of requests balanced to `dst`. Called when an endpoint joins a
    /// balancer, not per request.
    pub fn endpoint(&self, dst: Destination) -> Arc<RequestSeries> {
        let r = &self.requests;
        let mut series = r.endpoint_series.lock().unwrap_or_else(|p| p.into_inner());
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
                    &r.requests,
                    &r.request_duration,
                    Direction::Outbound,
                    dst.tls,
                    &dst.client_id,
                    &dst.server_id,
                    (&dst.service, &dst.endpoint),
                ))
            })
            .clone()
    }

    /// The series for plaintext (non-mesh) connections in `direction`.
    pub fn plaintext(&self, direction: Direction) -> Arc<RequestSeries> {
        self.requests.plaintext[direction as usize].clone()
    }

    /// The series for a mesh connection in `direction` between `client_id` and `server_id`.
    /// Called once per connection.
    pub fn mesh(
        &self,
        direction: Direction,
        client_id: &str,
        server_id: &str,
    ) -> Arc<RequestSeries> {
        let r = &self.requests;
        let mut series = r.peer_series.lock().unwrap_or_else(|p| p.into_inner());
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
                    &r.requests,
                    &r.request_duration,
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
        self.requests.plaintext[direction as usize].record(status, elapsed);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::{
        test_support::{sample, text},
        Direction, Metrics,
    };

    #[test]
    fn unusual_statuses_and_unused_series() {
        let m = Metrics::new("t").expect("metrics");
        let odd = http::StatusCode::from_u16(799).expect("status");
        m.request(Direction::Inbound, odd, Duration::from_millis(1));
        m.request(Direction::Inbound, odd, Duration::from_millis(1));
        m.request(
            Direction::Outbound,
            http::StatusCode::NOT_FOUND,
            Duration::from_millis(1),
        );
        let text = text(&m);
        assert_eq!(
            sample(
                &text,
                r#"weft_requests_total{client_id="",direction="inbound",dst_endpoint="",dst_service="",server_id="",status_code="799",tls="false"}"#
            ),
            Some("2")
        );
        assert_eq!(
            sample(
                &text,
                r#"weft_requests_total{client_id="",direction="outbound",dst_endpoint="",dst_service="",server_id="",status_code="404",tls="false"}"#
            ),
            Some("1")
        );
        // Cached handles exist only once used: no zero-valued series for every status.
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("weft_requests_total{"))
                .count(),
            2,
            "{text}"
        );
    }
}
