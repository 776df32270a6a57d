//! The rows `weftctl stat` and `weftctl stat-outbound` print, made from what a source observed
//! over the window (each proxy's [`Counters`] increase, and the pods the source knows), as
//! their JSON has them (`table` prints them). Pure.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{
    resource::{service_of, Kind, Resource, RuleName},
    window::{Counters, Direction, Figures, Flow},
};

/// A pod's workload, `kind/name` as `weft_proxy_info` names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Workload {
    pub(crate) kind: String,
    pub(crate) name: String,
}

impl Workload {
    /// `kind/name` (`deployment/api`); a bare `name` is the pod's own.
    pub(crate) fn parse(s: &str) -> Workload {
        match s.split_once('/') {
            Some((kind, name)) => Workload {
                kind: kind.to_string(),
                name: name.to_string(),
            },
            None => Workload::pod(s),
        }
    }

    /// A bare pod's workload: itself.
    pub(crate) fn pod(name: &str) -> Workload {
        Workload {
            kind: "pod".into(),
            name: name.into(),
        }
    }
}

/// One meshed pod's proxy, read over the window.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ProxyWindow {
    pub(crate) namespace: String,
    pub(crate) pod: String,
    pub(crate) workload: Workload,
    /// What it counted in the window.
    pub(crate) counters: Counters,
}

/// A pod the source knows, meshed or not (for the MESHED column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PodInfo {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) workload: Workload,
    pub(crate) meshed: bool,
}

/// A meshed pod whose proxy could not be read: its rows are partial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Failed {
    pub(crate) namespace: String,
    pub(crate) pod: String,
    /// Its workload when the source knows it.
    #[serde(skip)]
    pub(crate) workload: Option<Workload>,
    pub(crate) error: String,
}

/// What a source saw over one window.
#[derive(Debug, Clone, Default)]
pub(crate) struct Observed {
    /// Where the figures come from, for the output (`lab demo`, `prometheus http://...`).
    pub(crate) source: String,
    /// Every pod, meshed or not, when the source can list them (Prometheus cannot).
    pub(crate) pods: Option<Vec<PodInfo>>,
    pub(crate) proxies: Vec<ProxyWindow>,
    pub(crate) failed: Vec<Failed>,
    /// The window's length.
    pub(crate) seconds: f64,
    /// Meshed pods left out because there were more than the cap.
    pub(crate) skipped: usize,
}

/// The JSON of `weftctl stat`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StatReport {
    pub(crate) source: String,
    pub(crate) resource: String,
    pub(crate) window_seconds: f64,
    pub(crate) rows: Vec<StatRow>,
    /// Pods whose proxy could not be read, each with why; their rows say `partial`.
    pub(crate) errors: Vec<Failed>,
    /// Meshed pods not read because there were more than `--max-pods`.
    pub(crate) skipped_pods: usize,
}

/// One row of `weftctl stat`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct StatRow {
    pub(crate) namespace: String,
    /// `deployment`, `pod`, `namespace`, `service`, `httproute`, ... (the workload's own kind
    /// for `workload` rows).
    pub(crate) kind: String,
    pub(crate) name: String,
    /// Meshed pods read; `None` for services and routes.
    pub(crate) meshed: Option<usize>,
    /// Every pod, when the source can list them.
    pub(crate) pods: Option<usize>,
    #[serde(flatten)]
    pub(crate) figures: FiguresOut,
    /// The connections its pods accepted (inbound); `None` for Services and routes.
    pub(crate) tcp: Option<TcpOut>,
    /// A pod of this row could not be read: the figures miss its requests.
    pub(crate) partial: bool,
}

/// The TCP side of a row of pods, as `linkerd viz stat -o wide` shows it: the connections
/// their proxies accepted (inbound), open at the window's end, and the bytes read from and
/// written to them in the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct TcpOut {
    pub(crate) open_connections: f64,
    pub(crate) read_bytes: f64,
    pub(crate) write_bytes: f64,
    pub(crate) read_bytes_per_second: f64,
    pub(crate) write_bytes_per_second: f64,
}

/// Figures as printed: counts over the window, and what follows from them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct FiguresOut {
    pub(crate) requests: f64,
    pub(crate) successes: f64,
    pub(crate) success: Option<f64>,
    pub(crate) rps: f64,
    pub(crate) latency_ms_p50: Option<f64>,
    pub(crate) latency_ms_p95: Option<f64>,
    pub(crate) latency_ms_p99: Option<f64>,
    pub(crate) tls_requests: f64,
    /// The share over mutual TLS.
    pub(crate) tls: Option<f64>,
    /// Answered 504.
    pub(crate) timeouts: f64,
}

impl FiguresOut {
    fn of(f: &Figures, seconds: f64) -> FiguresOut {
        let ms = |q: f64| f.quantile(q).map(|s| s * 1000.0);
        FiguresOut {
            requests: f.requests,
            successes: f.ok,
            success: f.success(),
            rps: f.requests / seconds.max(0.001),
            latency_ms_p50: ms(0.5),
            latency_ms_p95: ms(0.95),
            latency_ms_p99: ms(0.99),
            tls_requests: f.tls,
            tls: f.tls_share(),
            timeouts: f.timeouts,
        }
    }
}

/// The JSON of `weftctl stat-outbound`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct OutboundReport {
    pub(crate) source: String,
    pub(crate) resource: String,
    pub(crate) window_seconds: f64,
    pub(crate) rows: Vec<OutboundRow>,
    pub(crate) errors: Vec<Failed>,
    pub(crate) skipped_pods: usize,
}

/// One row of `weftctl stat-outbound`: a route of a caller (`backend` `None`), or one backend
/// of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct OutboundRow {
    pub(crate) namespace: String,
    /// The caller: a workload (`deployment/web`), pod or namespace.
    pub(crate) name: String,
    /// The route rule (`httproute/<namespace>/<name>/rule/<i>`); `""` for the requests no
    /// route chose.
    pub(crate) route: String,
    /// The backend Service (`namespace/name:port`); `""` for the requests the caller's proxy
    /// answered itself (a timeout, an injected abort); `None` on the route's own row.
    pub(crate) backend: Option<String>,
    #[serde(flatten)]
    pub(crate) figures: FiguresOut,
    /// Retries the route's policy made (route rows only).
    pub(crate) retries: Option<f64>,
    /// Faults injected into the route's requests (route rows only).
    pub(crate) faults: Option<f64>,
    pub(crate) partial: bool,
}

/// `weftctl stat`'s rows for `resource` in `namespace` (all when `None`).
pub(crate) fn stat_rows(
    obs: &Observed,
    resource: &Resource,
    namespace: Option<&str>,
) -> StatReport {
    let in_ns = |ns: &str| namespace.is_none_or(|n| n == ns);
    let named = |n: &str| resource.name.as_deref().is_none_or(|want| want == n);
    let mut rows = Vec::new();
    if resource.is_served() {
        // Groups of pods: key (namespace, kind, name).
        let key =
            |namespace: &str, pod: &str, workload: &Workload| -> Option<(String, String, String)> {
                let k = match resource.kind {
                    Kind::Namespace => (
                        namespace.to_string(),
                        "namespace".to_string(),
                        namespace.to_string(),
                    ),
                    Kind::Pod => (namespace.to_string(), "pod".to_string(), pod.to_string()),
                    Kind::Workload(kind) => {
                        if kind.is_some_and(|k| k != workload.kind) {
                            return None;
                        }
                        (
                            namespace.to_string(),
                            workload.kind.clone(),
                            workload.name.clone(),
                        )
                    }
                    Kind::Service | Kind::Route(_) => return None,
                };
                (in_ns(&k.0) && named(&k.2)).then_some(k)
            };
        #[derive(Default)]
        struct Group {
            figures: Figures,
            meshed: usize,
            pods: usize,
            partial: bool,
            open: f64,
            read: f64,
            write: f64,
        }
        let mut groups: BTreeMap<(String, String, String), Group> = BTreeMap::new();
        for p in obs.proxies.iter() {
            if let Some(k) = key(&p.namespace, &p.pod, &p.workload) {
                let g = groups.entry(k).or_default();
                let c = &p.counters;
                g.figures.add(&c.figures(|d, _, _| d == Direction::Inbound));
                g.meshed += 1;
                let bytes = |f| {
                    c.bytes
                        .get(&(Direction::Inbound, f))
                        .copied()
                        .unwrap_or(0.0)
                };
                g.open += c.open.get(&Direction::Inbound).copied().unwrap_or(0.0);
                g.read += bytes(Flow::ToServer);
                g.write += bytes(Flow::ToClient);
            }
        }
        for f in &obs.failed {
            let workload = f.workload.clone().unwrap_or_else(|| Workload::pod(&f.pod));
            if let Some(k) = key(&f.namespace, &f.pod, &workload) {
                let g = groups.entry(k).or_default();
                g.partial = true;
                g.meshed += 1;
            }
        }
        if let Some(pods) = &obs.pods {
            for p in pods {
                if let Some(k) = key(&p.namespace, &p.name, &p.workload) {
                    groups.entry(k).or_default().pods += 1;
                }
            }
        }
        for ((namespace, kind, name), g) in groups {
            rows.push(StatRow {
                namespace,
                kind,
                name,
                meshed: Some(g.meshed),
                pods: obs.pods.as_ref().map(|_| g.pods),
                figures: FiguresOut::of(&g.figures, obs.seconds),
                tcp: Some(TcpOut {
                    open_connections: g.open,
                    read_bytes: g.read,
                    write_bytes: g.write,
                    read_bytes_per_second: g.read / obs.seconds.max(0.001),
                    write_bytes_per_second: g.write / obs.seconds.max(0.001),
                }),
                partial: g.partial,
            });
        }
    } else {
        // What every caller sent: by backend Service, or by route rule.
        let mut groups: BTreeMap<(String, String, String), Figures> = BTreeMap::new();
        for p in &obs.proxies {
            for (key, series) in outbound_keys(&p.counters, &resource.kind) {
                if in_ns(&key.0) && named(&key.2) {
                    groups
                        .entry(key)
                        .or_default()
                        .add(&p.counters.figures(|d, r, s| {
                            d == Direction::Outbound && series.0 == r && series.1 == s
                        }));
                }
            }
        }
        let partial = !obs.failed.is_empty();
        for ((namespace, kind, name), figures) in groups {
            rows.push(StatRow {
                namespace,
                kind,
                name,
                meshed: None,
                pods: None,
                figures: FiguresOut::of(&figures, obs.seconds),
                tcp: None,
                partial,
            });
        }
    }
    StatReport {
        source: obs.source.clone(),
        resource: resource.to_string(),
        window_seconds: obs.seconds,
        rows,
        errors: obs.failed.clone(),
        skipped_pods: obs.skipped,
    }
}

/// A row's namespace, kind and name.
type RowKey = (String, String, String);

/// The (namespace, kind, name) rows of a caller's outbound series for a Service or route
/// view, each with the (route, dst_service) it covers.
fn outbound_keys(c: &Counters, kind: &Kind) -> Vec<(RowKey, (String, String))> {
    let pairs: BTreeSet<(String, String)> = c
        .requests
        .keys()
        .filter(|s| s.direction == Direction::Outbound)
        .map(|s| (s.route.clone(), s.dst_service.clone()))
        .collect();
    pairs
        .into_iter()
        .filter_map(|(route, dst)| {
            let key = match kind {
                Kind::Service => {
                    let (ns, name) = service_of(&dst)?;
                    (ns.to_string(), "service".to_string(), name.to_string())
                }
                Kind::Route(want) => {
                    let r = RuleName::parse(&route)?;
                    if want.is_some_and(|w| w != r.kind) {
                        return None;
                    }
                    (
                        r.namespace.to_string(),
                        r.kind.to_string(),
                        r.name.to_string(),
                    )
                }
                _ => return None,
            };
            Some((key, (route, dst)))
        })
        .collect()
}

/// `weftctl stat-outbound`'s rows: for each caller group of `resource` (a workload, pod or
/// namespace) in `namespace`, each route it used, then that route's backends.
pub(crate) fn outbound_rows(
    obs: &Observed,
    resource: &Resource,
    namespace: Option<&str>,
) -> OutboundReport {
    let in_ns = |ns: &str| namespace.is_none_or(|n| n == ns);
    let named = |n: &str| resource.name.as_deref().is_none_or(|want| want == n);
    let caller = |p_ns: &str, pod: &str, w: &Workload| -> Option<(String, String)> {
        let name = match resource.kind {
            Kind::Namespace => p_ns.to_string(),
            Kind::Pod => pod.to_string(),
            Kind::Workload(kind) => {
                if kind.is_some_and(|k| k != w.kind) {
                    return None;
                }
                w.name.clone()
            }
            Kind::Service | Kind::Route(_) => return None,
        };
        (in_ns(p_ns) && named(&name)).then(|| {
            let shown = match resource.kind {
                Kind::Workload(_) => format!("{}/{}", w.kind, w.name),
                _ => name,
            };
            (p_ns.to_string(), shown)
        })
    };
    #[derive(Default)]
    struct Route {
        figures: Figures,
        retries: f64,
        faults: f64,
        backends: BTreeMap<String, Figures>,
    }
    let mut callers: BTreeMap<(String, String), BTreeMap<String, Route>> = BTreeMap::new();
    for p in &obs.proxies {
        let Some(key) = caller(&p.namespace, &p.pod, &p.workload) else {
            continue;
        };
        let routes = callers.entry(key).or_default();
        let pairs: BTreeSet<(&str, &str)> = p
            .counters
            .requests
            .keys()
            .filter(|s| s.direction == Direction::Outbound)
            .map(|s| (s.route.as_str(), s.dst_service.as_str()))
            .collect();
        for (route, dst) in pairs {
            let f = p
                .counters
                .figures(|d, r, s| d == Direction::Outbound && r == route && s == dst);
            let entry = routes.entry(route.to_string()).or_default();
            entry.figures.add(&f);
            entry.backends.entry(dst.to_string()).or_default().add(&f);
        }
        for (route, n) in &p.counters.retries {
            routes.entry(route.clone()).or_default().retries += n;
        }
        for (route, n) in &p.counters.faults {
            routes.entry(route.clone()).or_default().faults += n;
        }
    }
    let partial_callers: BTreeSet<(String, String)> = obs
        .failed
        .iter()
        .filter_map(|f| {
            let w = f.workload.clone().unwrap_or_else(|| Workload::pod(&f.pod));
            caller(&f.namespace, &f.pod, &w)
        })
        .collect();
    let mut rows = Vec::new();
    for ((namespace, name), routes) in callers {
        let partial = partial_callers.contains(&(namespace.clone(), name.clone()));
        // Routed first, by name; the requests no route chose last.
        let mut ordered: Vec<(String, Route)> = routes.into_iter().collect();
        ordered.sort_by_key(|(r, _)| (r.is_empty(), r.clone()));
        for (route, r) in ordered {
            rows.push(OutboundRow {
                namespace: namespace.clone(),
                name: name.clone(),
                route: route.clone(),
                backend: None,
                figures: FiguresOut::of(&r.figures, obs.seconds),
                retries: Some(r.retries),
                faults: Some(r.faults),
                partial,
            });
            for (backend, f) in r.backends {
                rows.push(OutboundRow {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    route: route.clone(),
                    backend: Some(backend),
                    figures: FiguresOut::of(&f, obs.seconds),
                    retries: None,
                    faults: None,
                    partial,
                });
            }
        }
    }
    OutboundReport {
        source: obs.source.clone(),
        resource: resource.to_string(),
        window_seconds: obs.seconds,
        rows,
        errors: obs.failed.clone(),
        skipped_pods: obs.skipped,
    }
}
