//! What one proxy's `/metrics` says about the requests it carried, reduced to the labels
//! `weftctl stat` and the demo's table group by, and the window between two reads of it: the
//! one computation behind both, pure and tested on real metric text.
//!
//! - [`Counters::read`]: a page's `weft_requests_total` (by direction, `tls`, `route`,
//!   `dst_service`, status), `weft_request_duration_seconds` buckets (by direction, `route`,
//!   `dst_service`), `weft_retries_total` and `weft_faults_injected_total` (by route), and the
//!   accepted connections' bytes and how many are open. The identity labels are summed away.
//! - [`Counters::since`]: what was counted between two reads (a counter that went down was
//!   reset, as Prometheus's `increase` reads it: what it holds now was counted since).
//! - [`Figures`]: requests, successes, mTLS and timeouts with the latency histogram, summed
//!   over whatever a caller selects; success rate, mTLS share and interpolated quantiles
//!   (as Prometheus's `histogram_quantile`).
//!
//! Success is a response that is not 5xx, as the chart's recording rules count it
//! (`docs/observability.md`): the errors a proxy answers itself (502, 503, 504) are failures. A
//! timeout is a 504: the proxy answers `timeouts.request` and `timeouts.backendRequest` so, and
//! a connect timeout too.

use std::collections::BTreeMap;

use weft_lab::Metrics;
use weft_metrics_text::Histogram;

/// Which listener counted a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Direction {
    /// Requests the pod served.
    Inbound,
    /// Requests the pod sent.
    Outbound,
}

impl Direction {
    fn parse(label: &str) -> Option<Direction> {
        match label {
            "inbound" => Some(Direction::Inbound),
            "outbound" => Some(Direction::Outbound),
            _ => None,
        }
    }
}

/// A request series as stat groups it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Series {
    pub(crate) direction: Direction,
    pub(crate) tls: bool,
    /// `<kind>/<namespace>/<name>/rule/<i>`, `""` when no route chose the request.
    pub(crate) route: String,
    /// `namespace/name:port` of the Service (a route's backend) it went to, `""` when none
    /// (inbound, or answered by the proxy itself: a timeout, an injected abort).
    pub(crate) dst_service: String,
    /// The HTTP status; 0 when the label is not one.
    pub(crate) status: u16,
}

/// A latency histogram's series as stat groups them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct LatencyKey {
    pub(crate) direction: Direction,
    pub(crate) route: String,
    pub(crate) dst_service: String,
}

/// One proxy's counters at one moment, or (from [`Counters::since`]) their increase over a
/// window.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Counters {
    pub(crate) requests: BTreeMap<Series, f64>,
    /// Cumulative counts by upper bound, sorted by bound (the last `+Inf`).
    pub(crate) latency: BTreeMap<LatencyKey, Vec<(f64, f64)>>,
    /// Retries made, by route (every reason).
    pub(crate) retries: BTreeMap<String, f64>,
    /// Faults injected, by route (delays and aborts).
    pub(crate) faults: BTreeMap<String, f64>,
    /// Bytes on the connections the proxy accepted, by direction and flow (`to_server`: read
    /// from the client; `to_client`: written to it).
    pub(crate) bytes: BTreeMap<(Direction, Flow), f64>,
    /// Connections open (opened less closed), by direction: a level, which
    /// [`Counters::since`] keeps as the later read has it.
    pub(crate) open: BTreeMap<Direction, f64>,
}

/// Which way bytes went on an accepted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Flow {
    /// From the client: what the proxy read.
    ToServer,
    /// To the client: what the proxy wrote.
    ToClient,
}

impl Flow {
    pub(crate) fn parse(label: &str) -> Option<Flow> {
        match label {
            "to_server" => Some(Flow::ToServer),
            "to_client" => Some(Flow::ToClient),
            _ => None,
        }
    }
}

/// Requests, their outcome and their latency, summed over what a caller selected.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Figures {
    pub(crate) requests: f64,
    /// Answered with a status that is not 5xx.
    pub(crate) ok: f64,
    /// Carried over mutual TLS.
    pub(crate) tls: f64,
    /// Answered 504.
    pub(crate) timeouts: f64,
    /// Cumulative counts by upper bound, sorted.
    pub(crate) latency: Vec<(f64, f64)>,
}

impl Counters {
    /// The series of one page that stat reads.
    pub(crate) fn read(m: &Metrics) -> Counters {
        let mut c = Counters::default();
        for s in m.matching("weft_requests_total", &[]) {
            let Some(direction) = Direction::parse(s.label("direction")) else {
                continue;
            };
            let series = Series {
                direction,
                tls: s.label("tls") == "true",
                route: s.label("route").to_string(),
                dst_service: s.label("dst_service").to_string(),
                status: s.label("status_code").parse().unwrap_or(0),
            };
            *c.requests.entry(series).or_default() += s.value;
        }
        let mut buckets: BTreeMap<LatencyKey, BTreeMap<Bound, f64>> = BTreeMap::new();
        for s in m.matching("weft_request_duration_seconds_bucket", &[]) {
            let Some(direction) = Direction::parse(s.label("direction")) else {
                continue;
            };
            let Some(le) = parse_bound(s.label("le")) else {
                continue;
            };
            let key = LatencyKey {
                direction,
                route: s.label("route").to_string(),
                dst_service: s.label("dst_service").to_string(),
            };
            *buckets
                .entry(key)
                .or_default()
                .entry(Bound(le))
                .or_default() += s.value;
        }
        c.latency = buckets
            .into_iter()
            .map(|(k, b)| (k, b.into_iter().map(|(le, n)| (le.0, n)).collect()))
            .collect();
        for s in m.matching("weft_retries_total", &[]) {
            *c.retries.entry(s.label("route").to_string()).or_default() += s.value;
        }
        for s in m.matching("weft_faults_injected_total", &[]) {
            *c.faults.entry(s.label("route").to_string()).or_default() += s.value;
        }
        for s in m.matching("weft_tcp_bytes_total", &[]) {
            if let (Some(d), Some(f)) = (
                Direction::parse(s.label("direction")),
                Flow::parse(s.label("flow")),
            ) {
                *c.bytes.entry((d, f)).or_default() += s.value;
            }
        }
        for (name, sign) in [
            ("weft_tcp_connections_opened_total", 1.0),
            ("weft_tcp_connections_closed_total", -1.0),
        ] {
            for s in m.matching(name, &[]) {
                if let Some(d) = Direction::parse(s.label("direction")) {
                    *c.open.entry(d).or_default() += sign * s.value;
                }
            }
        }
        c
    }

    /// What was counted from `before` to `self`. A counter lower than before was reset (the
    /// proxy restarted): all it holds was counted since, as Prometheus's `increase` reads it.
    /// A series gone since `before` counted nothing.
    pub(crate) fn since(&self, before: &Counters) -> Counters {
        fn diff<K: Ord + Clone>(
            now: &BTreeMap<K, f64>,
            then: &BTreeMap<K, f64>,
        ) -> BTreeMap<K, f64> {
            now.iter()
                .map(|(k, n)| (k.clone(), increase(then.get(k).copied(), *n)))
                .collect()
        }
        let latency = self
            .latency
            .iter()
            .map(|(k, now)| {
                let then = before.latency.get(k);
                let total = |b: &[(f64, f64)]| b.last().map_or(0.0, |l| l.1);
                let reset = then.is_some_and(|t| total(t) > total(now));
                let buckets = now
                    .iter()
                    .map(|&(le, n)| {
                        let was = then
                            .filter(|_| !reset)
                            .and_then(|t| t.iter().find(|b| b.0 == le))
                            .map_or(0.0, |b| b.1);
                        (le, (n - was).max(0.0))
                    })
                    .collect();
                (k.clone(), buckets)
            })
            .collect();
        Counters {
            requests: diff(&self.requests, &before.requests),
            latency,
            retries: diff(&self.retries, &before.retries),
            faults: diff(&self.faults, &before.faults),
            bytes: diff(&self.bytes, &before.bytes),
            open: self.open.clone(),
        }
    }

    /// The figures of the series `keep` selects, by direction, route and backend.
    pub(crate) fn figures(&self, keep: impl Fn(Direction, &str, &str) -> bool) -> Figures {
        let mut f = Figures::default();
        for (s, n) in &self.requests {
            if keep(s.direction, &s.route, &s.dst_service) {
                f.add_requests(s, *n);
            }
        }
        for (k, buckets) in &self.latency {
            if keep(k.direction, &k.route, &k.dst_service) {
                f.add_latency(buckets);
            }
        }
        f
    }
}

impl Figures {
    fn add_requests(&mut self, s: &Series, n: f64) {
        self.requests += n;
        if !(500..600).contains(&s.status) {
            self.ok += n;
        }
        if s.tls {
            self.tls += n;
        }
        if s.status == 504 {
            self.timeouts += n;
        }
    }

    fn add_latency(&mut self, buckets: &[(f64, f64)]) {
        let mut merged: BTreeMap<Bound, f64> =
            self.latency.iter().map(|&(le, n)| (Bound(le), n)).collect();
        for &(le, n) in buckets {
            *merged.entry(Bound(le)).or_default() += n;
        }
        self.latency = merged.into_iter().map(|(le, n)| (le.0, n)).collect();
    }

    /// Adds `other`'s figures to these.
    pub(crate) fn add(&mut self, other: &Figures) {
        self.requests += other.requests;
        self.ok += other.ok;
        self.tls += other.tls;
        self.timeouts += other.timeouts;
        self.add_latency(&other.latency);
    }

    /// The share answered without a 5xx; `None` without requests.
    pub(crate) fn success(&self) -> Option<f64> {
        (self.requests > 0.0).then(|| self.ok / self.requests)
    }

    /// The share carried over mutual TLS; `None` without requests.
    pub(crate) fn tls_share(&self) -> Option<f64> {
        (self.requests > 0.0).then(|| self.tls / self.requests)
    }

    /// The `q` quantile of the latency, in seconds, interpolated inside its bucket as
    /// Prometheus's `histogram_quantile` does (one in the `+Inf` bucket is the largest finite
    /// bound). `None` without observations.
    pub(crate) fn quantile(&self, q: f64) -> Option<f64> {
        let count = self.latency.last().map_or(0.0, |l| l.1);
        Histogram {
            buckets: self.latency.clone(),
            count,
            sum: 0.0,
        }
        .quantile(q)
    }
}

/// A counter's increase from `before` (absent: 0) to `now`; a lower `now` is a reset.
fn increase(before: Option<f64>, now: f64) -> f64 {
    match before {
        Some(b) if b <= now => now - b,
        _ => now,
    }
}

/// A bucket's `le` as a number.
fn parse_bound(le: &str) -> Option<f64> {
    match le {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        le => le.parse().ok().filter(|v: &f64| !v.is_nan()),
    }
}

/// A histogram bound, ordered (the `le` label as a number).
#[derive(Debug, Clone, Copy)]
struct Bound(f64);

impl PartialEq for Bound {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Bound {}

impl PartialOrd for Bound {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Bound {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}
