//! Request series: `weft_requests_total` and `weft_request_duration_seconds`, by direction, mesh
//! TLS, the identities at both ends, and (outbound, balanced) the Service and endpoint. A
//! connection looks its [`RequestSeries`] up once; the per-request cost is two atomic updates.
//!
//! The identity and endpoint label sets are bounded: past [`MAX_IDENTITY_SERIES`] pairs per
//! direction the client folds into `client_id="other"`, past [`MAX_ENDPOINT_SERIES`]
//! destinations the endpoint folds into `dst_endpoint="other"`.
//!
//! A routed request also carries its route rule (`route`, `<kind>/<namespace>/<name>/rule/<i>`)
//! and, in `dst_service`, the backend Service its rule chose. A rule's name is interned once, as
//! a [`RouteLabel`], when its table is built; a request carries the label (a number) and the
//! endpoint's series finds its routed child by it (a read lock and a short scan). Bounded too:
//! past [`MAX_ROUTE_LABELS`] names a rule is `route="other"`, and past
//! [`MAX_ROUTES_PER_SERIES`] routes through one endpoint the rest share its `other` child.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock, RwLock},
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

/// Distinct route rule names labelled before further rules fold into `route="other"`.
pub const MAX_ROUTE_LABELS: usize = 1024;

/// Distinct routes one series (one endpoint) keeps apart before the rest fold into its
/// `route="other"` child.
pub const MAX_ROUTES_PER_SERIES: usize = 64;

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
    "route",
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

/// The route rule a request took, for the `route` label: a name interned by
/// [`Metrics::route_label`] when a route table is built, so a request carries a number and no
/// string. [`RouteLabel::NONE`] for a request no route chose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RouteLabel(u32);

impl RouteLabel {
    /// No route: `route=""`.
    pub const NONE: RouteLabel = RouteLabel(0);
    /// Past [`MAX_ROUTE_LABELS`]: `route="other"`.
    const OTHER: RouteLabel = RouteLabel(1);
}

/// Route rule names by [`RouteLabel`]: index 0 is `""`, 1 is `"other"`. Names are never
/// forgotten: a rule keeps its name (`<kind>/<namespace>/<name>/rule/<i>`) across edits of its
/// weights and matches, so the set grows only with new rules, and is bounded.
#[derive(Debug)]
struct RouteNames {
    names: RwLock<Vec<Arc<str>>>,
    index: Mutex<HashMap<Arc<str>, RouteLabel>>,
}

impl RouteNames {
    fn new() -> Self {
        Self {
            names: RwLock::new(vec![Arc::from(""), Arc::from("other")]),
            index: Mutex::new(HashMap::new()),
        }
    }

    fn intern(&self, name: &str) -> RouteLabel {
        if name.is_empty() {
            return RouteLabel::NONE;
        }
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(label) = index.get(name) {
            return *label;
        }
        if index.len() >= MAX_ROUTE_LABELS {
            return RouteLabel::OTHER;
        }
        let mut names = self.names.write().unwrap_or_else(|p| p.into_inner());
        let name: Arc<str> = Arc::from(name);
        let label = RouteLabel(u32::try_from(names.len()).unwrap_or(u32::MAX));
        names.push(name.clone());
        index.insert(name, label);
        label
    }

    fn name(&self, label: RouteLabel) -> Arc<str> {
        let names = self.names.read().unwrap_or_else(|p| p.into_inner());
        names
            .get(label.0 as usize)
            .cloned()
            .unwrap_or_else(|| names[RouteLabel::OTHER.0 as usize].clone())
    }
}

/// The request series of one kind of connection: direction, whether it is mesh TLS, and the
/// identities at both ends. A connection looks it up once; each request then costs two atomic
/// updates through handles cached per status 100..=599, not two hashed lookups under a lock
/// (profiled at ~700 instructions per request). Routed requests are counted in a child series
/// per route ([`RequestSeries::routed`]), made on the first such request.
#[derive(Debug)]
pub struct RequestSeries {
    /// direction, tls, client_id, server_id, route, dst_service, dst_endpoint.
    labels: [Arc<str>; 7],
    requests: IntCounterVec,
    request_duration: HistogramVec,
    handles: Box<[OnceLock<RequestHandles>]>,
    route_names: Arc<RouteNames>,
    /// The same series with a route, by route; bounded by [`MAX_ROUTES_PER_SERIES`] (+1 for
    /// `other`).
    routed: RwLock<Vec<(RouteLabel, Arc<RequestSeries>)>>,
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
    route_names: Arc<RouteNames>,
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
        r: &Requests,
        direction: Direction,
        tls: bool,
        client_id: &str,
        server_id: &str,
        dst: (&str, &str),
    ) -> Self {
        Self::with_labels(
            r.requests.clone(),
            r.request_duration.clone(),
            r.route_names.clone(),
            [
                direction.as_str(),
                if tls { "true" } else { "false" },
                client_id,
                server_id,
                "",
                dst.0,
                dst.1,
            ]
            .map(Arc::from),
        )
    }

    fn with_labels(
        requests: IntCounterVec,
        request_duration: HistogramVec,
        route_names: Arc<RouteNames>,
        labels: [Arc<str>; 7],
    ) -> Self {
        Self {
            labels,
            requests,
            request_duration,
            handles: CACHED_STATUSES.map(|_| OnceLock::new()).collect(),
            route_names,
            routed: RwLock::new(Vec::new()),
        }
    }

    /// Whether over mesh TLS (`tls`).
    pub fn tls(&self) -> bool {
        &*self.labels[1] == "true"
    }

    /// The SPIFFE ID on the client side (`client_id`), empty when not mTLS.
    pub fn client_id(&self) -> &Arc<str> {
        &self.labels[2]
    }

    /// The SPIFFE ID on the server side (`server_id`), empty when not mTLS.
    pub fn server_id(&self) -> &Arc<str> {
        &self.labels[3]
    }

    /// The route rule (`route`), empty when none.
    pub fn route(&self) -> &Arc<str> {
        &self.labels[4]
    }

    /// The backend Service (`dst_service`), empty when none.
    pub fn dst_service(&self) -> &Arc<str> {
        &self.labels[5]
    }

    /// The endpoint (`dst_endpoint`, `ip:port`), empty when not balanced.
    pub fn dst_endpoint(&self) -> &Arc<str> {
        &self.labels[6]
    }

    /// This series for requests of `route`: itself for [`RouteLabel::NONE`], otherwise its
    /// child with that `route` label, made on first use. Per request a read lock and a scan of
    /// the few routes through this endpoint.
    pub fn routed(self: &Arc<Self>, route: RouteLabel) -> Arc<RequestSeries> {
        if route == RouteLabel::NONE {
            return self.clone();
        }
        {
            let routed = self.routed.read().unwrap_or_else(|p| p.into_inner());
            if let Some((_, s)) = routed.iter().find(|(l, _)| *l == route) {
                return s.clone();
            }
        }
        let mut routed = self.routed.write().unwrap_or_else(|p| p.into_inner());
        let route =
            if routed.len() < MAX_ROUTES_PER_SERIES || routed.iter().any(|(l, _)| *l == route) {
                route
            } else {
                RouteLabel::OTHER
            };
        if let Some((_, s)) = routed.iter().find(|(l, _)| *l == route) {
            return s.clone();
        }
        let mut labels = self.labels.clone();
        labels[4] = self.route_names.name(route);
        let child = Arc::new(RequestSeries::with_labels(
            self.requests.clone(),
            self.request_duration.clone(),
            self.route_names.clone(),
            labels,
        ));
        routed.push((route, child.clone()));
        child
    }

    /// Counts one answered request and its duration.
    pub fn record(&self, status: http::StatusCode, elapsed: Duration) {
        let make = || {
            let [d, t, c, s, route, svc, ep] = &self.labels;
            let labels = [&**d, t, c, s, route, svc, ep, status.as_str()];
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
        let route_names = Arc::new(RouteNames::new());
        let plaintext = [Direction::Inbound, Direction::Outbound].map(|d| {
            Arc::new(RequestSeries::with_labels(
                requests.clone(),
                request_duration.clone(),
                route_names.clone(),
                [d.as_str(), "false", "", "", "", "", ""].map(Arc::from),
            ))
        });
        Ok(Self {
            requests,
            request_duration,
            plaintext,
            peer_series: Mutex::new(HashMap::new()),
            endpoint_series: Mutex::new(HashMap::new()),
            route_names,
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
                    r,
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
                    r,
                    direction,
                    true,
                    client_id,
                    server_id,
                    ("", ""),
                ))
            })
            .clone()
    }

    /// The label of route rule `name` (`<kind>/<namespace>/<name>/rule/<i>`), for requests the
    /// rule routes: interned when a route table is built, not per request.
    pub fn route_label(&self, name: &str) -> RouteLabel {
        self.requests.route_names.intern(name)
    }

    /// The name of route label `label` (`""` for none).
    pub(crate) fn route_name(&self, label: RouteLabel) -> Arc<str> {
        self.requests.route_names.name(label)
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
                r#"weft_requests_total{client_id="",direction="inbound",dst_endpoint="",dst_service="",route="",server_id="",status_code="799",tls="false"}"#
            ),
            Some("2")
        );
        assert_eq!(
            sample(
                &text,
                r#"weft_requests_total{client_id="",direction="outbound",dst_endpoint="",dst_service="",route="",server_id="",status_code="404",tls="false"}"#
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

    #[test]
    fn routed_requests_carry_their_rule_and_are_bounded() {
        let m = Metrics::new("t").expect("metrics");
        let series = m.endpoint(crate::Destination {
            tls: false,
            client_id: "".into(),
            server_id: "".into(),
            service: "shop/api-v2:80".into(),
            endpoint: "198.18.0.7:8080".into(),
        });
        let rule = m.route_label("httproute/shop/api/rule/0");
        assert_eq!(
            rule,
            m.route_label("httproute/shop/api/rule/0"),
            "interned once"
        );
        assert_eq!(m.route_label(""), crate::RouteLabel::NONE);
        let ok = http::StatusCode::OK;
        series.routed(rule).record(ok, Duration::from_millis(1));
        series.routed(rule).record(ok, Duration::from_millis(1));
        series
            .routed(crate::RouteLabel::NONE)
            .record(ok, Duration::from_millis(1));
        let scraped = text(&m);
        assert_eq!(
            sample(
                &scraped,
                r#"weft_requests_total{client_id="",direction="outbound",dst_endpoint="198.18.0.7:8080",dst_service="shop/api-v2:80",route="httproute/shop/api/rule/0",server_id="",status_code="200",tls="false"}"#
            ),
            Some("2"),
            "{scraped}"
        );
        assert_eq!(
            sample(
                &scraped,
                r#"weft_requests_total{client_id="",direction="outbound",dst_endpoint="198.18.0.7:8080",dst_service="shop/api-v2:80",route="",server_id="",status_code="200",tls="false"}"#
            ),
            Some("1"),
            "{scraped}"
        );

        // Past the bound of routes through one endpoint, the rest share `other`.
        for i in 1..=crate::MAX_ROUTES_PER_SERIES + 3 {
            let label = m.route_label(&format!("httproute/shop/r{i}/rule/0"));
            series.routed(label).record(ok, Duration::from_millis(1));
        }
        let scraped = text(&m);
        let routes: std::collections::BTreeSet<&str> = scraped
            .lines()
            .filter(|l| l.starts_with("weft_requests_total{"))
            .filter_map(|l| l.split("route=\"").nth(1)?.split('"').next())
            .collect();
        assert_eq!(routes.len(), crate::MAX_ROUTES_PER_SERIES + 2, "{routes:?}");
        assert!(routes.contains("other"), "{routes:?}");
        assert!(routes.contains(""), "{routes:?}");
        // A rule already labelled keeps its own series.
        assert!(std::sync::Arc::ptr_eq(
            &series.routed(rule),
            &series.routed(rule)
        ));

        // Past the bound of names, a rule is `other`.
        for i in 0..crate::MAX_ROUTE_LABELS {
            m.route_label(&format!("httproute/many/r{i}/rule/0"));
        }
        assert_eq!(
            m.route_label("httproute/many/one-too-many/rule/0"),
            crate::RouteLabel::OTHER
        );
    }
}
