//! `weftctl stat --prometheus URL`: the window's increase of each proxy's series, from
//! Prometheus's HTTP API (`/api/v1/query`, instant queries), into the same per-pod
//! [`Counters`] the direct reads make, so both sources share every row and quantile.
//!
//! One query per metric, `sum by` the labels stat groups by plus the scrape's `namespace` and
//! `pod` (the target labels the rules expect, `docs/observability.md`), and `weft_proxy_info`
//! for each pod's workload: the join on (namespace, pod) is made here, so a pod whose proxy
//! exports no `weft_proxy_info` (older than the workload label) is its own workload rather
//! than dropped. The chart's recording rules are fixed to 5 minutes and sum pods away, so
//! they serve neither a `--window` nor a pod view; these raw queries serve both.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, TcpStream, ToSocketAddrs},
    time::Duration,
};

use anyhow::{bail, Context};

use super::{
    view::{Observed, ProxyWindow, Workload},
    window::{Counters, Direction, Flow, LatencyKey, Series},
};

/// The most series one query may answer with before stat refuses it (a mesh that large wants
/// `-n`).
const MAX_SERIES: usize = 100_000;

/// A Prometheus server's HTTP API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Prometheus {
    /// `host:port`, as given.
    pub(crate) authority: String,
    /// The path prefix (`/prometheus` behind a proxy), no trailing `/`.
    pub(crate) prefix: String,
}

/// The queries of one stat, by what they read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Queries {
    pub(crate) requests: String,
    pub(crate) latency: String,
    pub(crate) retries: String,
    pub(crate) faults: String,
    pub(crate) bytes: String,
    pub(crate) open: String,
    pub(crate) info: String,
}

impl Prometheus {
    /// `http://host:port[/prefix]`; https is not spoken (put a local port-forward in front).
    pub(crate) fn parse(url: &str) -> Result<Prometheus, String> {
        Prometheus::parse_url(url).map_err(|e| format!("{e:#}"))
    }

    fn parse_url(url: &str) -> anyhow::Result<Prometheus> {
        let rest = url.strip_prefix("http://").with_context(|| {
            if url.starts_with("https://") {
                format!("{url:?}: https is not supported; reach Prometheus over http (kubectl port-forward svc/prometheus 9090)")
            } else {
                format!("{url:?}: not an http:// URL (e.g. http://127.0.0.1:9090)")
            }
        })?;
        let (authority, prefix) = match rest.split_once('/') {
            Some((a, p)) => (a, format!("/{}", p.trim_end_matches('/'))),
            None => (rest, String::new()),
        };
        let prefix = if prefix == "/" { String::new() } else { prefix };
        if authority.is_empty()
            || authority.contains('@')
            || !authority
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]_".contains(c))
        {
            bail!("{url:?}: {authority:?} is not a host[:port]");
        }
        let authority = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Ok(Prometheus { authority, prefix })
    }

    /// The request target of an instant query.
    pub(crate) fn query_path(&self, query: &str) -> String {
        format!(
            "{}/api/v1/query?query={}",
            self.prefix,
            weft_lab::http::query_escape(query)
        )
    }

    /// Runs one instant query; its vector's samples as (labels, value).
    fn query(
        &self,
        query: &str,
        timeout: Duration,
    ) -> anyhow::Result<Vec<(BTreeMap<String, String>, f64)>> {
        let what = || format!("query Prometheus at {} for {query}", self.authority);
        let addr: SocketAddr = self
            .authority
            .to_socket_addrs()
            .with_context(|| format!("resolve {}", self.authority))?
            .next()
            .with_context(|| format!("{} resolves to no address", self.authority))?;
        let mut conn = TcpStream::connect_timeout(&addr, timeout).with_context(what)?;
        conn.set_read_timeout(Some(timeout)).with_context(what)?;
        conn.set_write_timeout(Some(timeout)).with_context(what)?;
        let host = self.authority.clone();
        let reply = weft_lab::http::request(&mut conn, addr, &host, &self.query_path(query))
            .with_context(what)?;
        parse_vector(&reply.body).with_context(|| format!("{} (HTTP {})", what(), reply.status))
    }
}

/// The queries for a window of `window` seconds, over pods of `namespace` when given.
pub(crate) fn queries(window: Duration, namespace: Option<&str>) -> Queries {
    let range = format!("{}s", window.as_secs().max(1));
    let selector = namespace.map_or_else(String::new, |ns| {
        format!("{{namespace=\"{}\"}}", escape(ns))
    });
    let increase = |metric: &str, by: &str| {
        format!("sum by (namespace, pod, {by}) (increase({metric}{selector}[{range}]))")
    };
    Queries {
        requests: increase(
            "weft_requests_total",
            "direction, tls, route, dst_service, status_code",
        ),
        latency: increase(
            "weft_request_duration_seconds_bucket",
            "direction, route, dst_service, le",
        ),
        retries: increase("weft_retries_total", "route"),
        faults: increase("weft_faults_injected_total", "route"),
        bytes: increase("weft_tcp_bytes_total", "direction, flow"),
        // A level at the window's end, not an increase.
        open: format!(
            "sum by (namespace, pod, direction) (weft_tcp_connections_opened_total{selector} \
             - weft_tcp_connections_closed_total{selector})"
        ),
        // Over the window: a pod a rollout replaced within it still names its workload.
        info: format!(
            "max by (namespace, pod, workload_kind, workload) \
             (max_over_time(weft_proxy_info{selector}[{range}]))"
        ),
    }
}

/// Reads the window from Prometheus: every pod with series in it, by its workload.
pub(crate) fn observe(
    prom: &Prometheus,
    window: Duration,
    namespace: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<Observed> {
    let q = queries(window, namespace);
    let requests = prom.query(&q.requests, timeout)?;
    let latency = prom.query(&q.latency, timeout)?;
    let retries = prom.query(&q.retries, timeout)?;
    let faults = prom.query(&q.faults, timeout)?;
    let bytes = prom.query(&q.bytes, timeout)?;
    let open = prom.query(&q.open, timeout)?;
    let info = prom.query(&q.info, timeout)?;
    let mut obs = assemble(&Answers {
        requests: &requests,
        latency: &latency,
        retries: &retries,
        faults: &faults,
        bytes: &bytes,
        open: &open,
        info: &info,
    });
    obs.source = format!("prometheus http://{}{}", prom.authority, prom.prefix);
    obs.seconds = window.as_secs_f64().max(1.0);
    Ok(obs)
}

type Vector = [(BTreeMap<String, String>, f64)];

/// What Prometheus answered to each of [`Queries`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Answers<'a> {
    pub(crate) requests: &'a Vector,
    pub(crate) latency: &'a Vector,
    pub(crate) retries: &'a Vector,
    pub(crate) faults: &'a Vector,
    pub(crate) bytes: &'a Vector,
    pub(crate) open: &'a Vector,
    pub(crate) info: &'a Vector,
}

/// The per-pod counters of the queries' answers, joined with `weft_proxy_info`.
pub(crate) fn assemble(a: &Answers<'_>) -> Observed {
    let Answers {
        requests,
        latency,
        retries,
        faults,
        bytes,
        open,
        info,
    } = *a;
    let label = |m: &BTreeMap<String, String>, k: &str| m.get(k).cloned().unwrap_or_default();
    let pod_key = |m: &BTreeMap<String, String>| (label(m, "namespace"), label(m, "pod"));
    let mut pods: BTreeMap<(String, String), Counters> = BTreeMap::new();
    let direction = |m: &BTreeMap<String, String>| match m.get("direction").map(String::as_str) {
        Some("inbound") => Some(Direction::Inbound),
        Some("outbound") => Some(Direction::Outbound),
        _ => None,
    };
    for (m, v) in requests {
        let Some(d) = direction(m) else { continue };
        let s = Series {
            direction: d,
            tls: label(m, "tls") == "true",
            route: label(m, "route"),
            dst_service: label(m, "dst_service"),
            status: label(m, "status_code").parse().unwrap_or(0),
        };
        *pods
            .entry(pod_key(m))
            .or_default()
            .requests
            .entry(s)
            .or_default() += v;
    }
    for (m, v) in latency {
        let Some(d) = direction(m) else { continue };
        let le = match label(m, "le").as_str() {
            "+Inf" => f64::INFINITY,
            le => match le.parse::<f64>() {
                Ok(v) => v,
                Err(_) => continue,
            },
        };
        let key = LatencyKey {
            direction: d,
            route: label(m, "route"),
            dst_service: label(m, "dst_service"),
        };
        let buckets = pods
            .entry(pod_key(m))
            .or_default()
            .latency
            .entry(key)
            .or_default();
        buckets.push((le, *v));
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    for (m, v) in retries {
        *pods
            .entry(pod_key(m))
            .or_default()
            .retries
            .entry(label(m, "route"))
            .or_default() += v;
    }
    for (m, v) in faults {
        *pods
            .entry(pod_key(m))
            .or_default()
            .faults
            .entry(label(m, "route"))
            .or_default() += v;
    }
    for (m, v) in bytes {
        if let (Some(d), Some(f)) = (direction(m), Flow::parse(&label(m, "flow"))) {
            *pods
                .entry(pod_key(m))
                .or_default()
                .bytes
                .entry((d, f))
                .or_default() += v;
        }
    }
    for (m, v) in open {
        if let Some(d) = direction(m) {
            *pods
                .entry(pod_key(m))
                .or_default()
                .open
                .entry(d)
                .or_default() += v;
        }
    }
    let workloads: BTreeMap<(String, String), Workload> = info
        .iter()
        .map(|(m, _)| {
            (
                pod_key(m),
                Workload {
                    kind: label(m, "workload_kind"),
                    name: label(m, "workload"),
                },
            )
        })
        .collect();
    // A pod with a proxy but no request yet still counts as meshed.
    for key in workloads.keys() {
        pods.entry(key.clone()).or_default();
    }
    let proxies = pods
        .into_iter()
        .filter(|((ns, pod), _)| !ns.is_empty() && !pod.is_empty())
        .map(|((namespace, pod), counters)| ProxyWindow {
            workload: workloads
                .get(&(namespace.clone(), pod.clone()))
                .cloned()
                .unwrap_or_else(|| Workload::pod(&pod)),
            namespace,
            pod,
            counters,
        })
        .collect();
    Observed {
        proxies,
        ..Observed::default()
    }
}

/// An instant query's answer: `{"status":"success","data":{"resultType":"vector","result":[...]}}`.
pub(crate) fn parse_vector(body: &str) -> anyhow::Result<Vec<(BTreeMap<String, String>, f64)>> {
    let v: serde_json::Value = serde_json::from_str(body)
        .with_context(|| format!("the answer is not JSON: {}", clip(body)))?;
    if v["status"] != "success" {
        bail!(
            "Prometheus answered {}: {}",
            v["errorType"].as_str().unwrap_or("an error"),
            v["error"].as_str().unwrap_or(&clip(body))
        );
    }
    if v["data"]["resultType"] != "vector" {
        bail!("expected a vector, got {}", v["data"]["resultType"]);
    }
    let result = v["data"]["result"]
        .as_array()
        .with_context(|| format!("no result array: {}", clip(body)))?;
    if result.len() > MAX_SERIES {
        bail!(
            "{} series, more than stat reads ({MAX_SERIES}); narrow it with -n",
            result.len()
        );
    }
    result
        .iter()
        .map(|s| {
            let labels = s["metric"]
                .as_object()
                .with_context(|| format!("a sample without labels: {s}"))?
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            let value = s["value"][1]
                .as_str()
                .and_then(|v| match v {
                    "NaN" => Some(0.0),
                    v => v.parse::<f64>().ok(),
                })
                .with_context(|| format!("a sample without a value: {s}"))?;
            Ok((labels, value))
        })
        .collect()
}

fn clip(s: &str) -> String {
    s.chars().take(200).collect()
}

/// A PromQL string literal's content.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
