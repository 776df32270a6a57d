//! What `weftctl demo` shows besides its table: a real Prometheus scraping every proxy and the
//! control plane with Weft's rules, and a real Jaeger taking every proxy's spans, both inside
//! the lab's node namespace, reachable from this machine's browser through loopback
//! forwarders ([`crate::forward`]): Prometheus on `127.0.0.1:9090`, Jaeger's query API on
//! `127.0.0.1:16686` (another port when one is taken).
//!
//! Either may be missing (Debian's `prometheus` not installed, Jaeger not built by `make
//! jaeger-tools`): the demo runs on without it and [`Observability::notes`] says why.
//! Jaeger starts after the lab's first pod, because the bridge's gateway address (where it
//! takes OTLP) exists only from then on; the proxies are told where it will be before that
//! ([`tracing_env`]).

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use crate::{
    control_plane,
    error::{Error, Result},
    forward::Forwarder,
    jaeger::{self, Jaeger},
    prometheus::{self, Options, Prometheus, ProxyTarget},
    run::LabRun,
    wait, GATEWAY,
};

/// Weft's Prometheus rules, as the chart ships them.
pub const RULES: &str = include_str!("../../helm/weft/rules/weft.rules.yaml");
/// Prometheus's port, inside the node namespace (its loopback) and, when free, on this
/// machine's loopback.
pub const PROMETHEUS_PORT: u16 = 9090;
/// Jaeger's query API and UI port, likewise.
pub const JAEGER_QUERY_PORT: u16 = 16686;
/// Jaeger's OTLP/gRPC port, on the bridge's gateway address.
pub const OTLP_PORT: u16 = 4317;
/// The share of requests the demo's proxies trace.
pub const SAMPLING: f64 = 0.2;
/// How long [`Observability::check`] waits for data.
const CHECK_PATIENCE: Duration = Duration::from_secs(15);

/// Prometheus and Jaeger for a lab run, with their forwarders; stopped on drop.
#[derive(Debug)]
pub struct Observability {
    // Dropped in this order: the forwarders, then the servers, then their files.
    prometheus_forward: Option<Forwarder>,
    jaeger_forward: Option<Forwarder>,
    prometheus: Option<Prometheus>,
    jaeger: Option<Jaeger>,
    notes: Vec<String>,
    _work: tempfile::TempDir,
}

/// The proxies' tracing settings for a lab whose Jaeger [`Observability::start`] will run, or
/// `None` (with why) when Jaeger is not built.
pub fn tracing_env() -> std::result::Result<Vec<(String, String)>, String> {
    jaeger::locate().map_err(|e| e.to_string())?;
    Ok(vec![
        (
            "WEFT_TRACE_COLLECTOR".into(),
            SocketAddr::from((GATEWAY, OTLP_PORT)).to_string(),
        ),
        ("WEFT_TRACE_SAMPLING".into(), SAMPLING.to_string()),
    ])
}

impl Observability {
    /// Starts Prometheus (when installed) and, with `tracing`, Jaeger in `run`'s node
    /// namespace, and their forwarders on this machine's loopback. Never fails: what cannot
    /// start is left out and noted.
    pub fn start(run: &LabRun, tracing: bool) -> Result<Observability> {
        let work = tempfile::Builder::new()
            .prefix("weft-demo-observe-")
            .tempdir()
            .map_err(Error::io("make a folder for Prometheus and Jaeger"))?;
        let node = run.cluster().node();
        let mut o = Observability {
            prometheus_forward: None,
            jaeger_forward: None,
            prometheus: None,
            jaeger: None,
            notes: Vec::new(),
            _work: work,
        };
        let inside = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        if prometheus::installed() {
            let rules = o._work.path().join("weft.rules.yaml");
            let started = std::fs::write(&rules, RULES)
                .map_err(Error::io(format!("write {}", rules.display())))
                .and_then(|()| {
                    Prometheus::start(
                        o._work.path(),
                        inside(PROMETHEUS_PORT),
                        Some(node),
                        &Options {
                            interval: Duration::from_secs(1),
                            rules: Some(rules),
                            control_plane: Some(control_plane::admin_addr()),
                        },
                    )
                });
            match started {
                Ok(p) => {
                    p.set_proxies(&ProxyTarget::of_lab(&run.entry().pods))?;
                    match Forwarder::start(node, inside(PROMETHEUS_PORT), inside(PROMETHEUS_PORT)) {
                        Ok(f) => o.prometheus_forward = Some(f),
                        Err(e) => o.notes.push(format!("Prometheus not forwarded: {e}")),
                    }
                    o.prometheus = Some(p);
                }
                Err(e) => o.notes.push(format!("Prometheus did not start: {e}")),
            }
        } else {
            o.notes.push(
                "no Prometheus: Debian's prometheus package is not installed (`make deps`)".into(),
            );
        }
        if tracing {
            match Jaeger::start(
                o._work.path(),
                SocketAddr::from((GATEWAY, OTLP_PORT)),
                inside(JAEGER_QUERY_PORT),
                Some(node),
            ) {
                Ok(j) => {
                    match Forwarder::start(
                        node,
                        inside(JAEGER_QUERY_PORT),
                        inside(JAEGER_QUERY_PORT),
                    ) {
                        Ok(f) => o.jaeger_forward = Some(f),
                        Err(e) => o.notes.push(format!("Jaeger not forwarded: {e}")),
                    }
                    o.jaeger = Some(j);
                }
                Err(e) => o.notes.push(format!("Jaeger did not start: {e}")),
            }
        }
        Ok(o)
    }

    /// Where a browser on this machine reaches Prometheus, if it runs.
    pub fn prometheus_url(&self) -> Option<String> {
        self.prometheus_forward
            .as_ref()
            .map(|f| format!("http://{}", f.local_addr()))
    }

    /// Where a browser on this machine reaches Jaeger's query API, if it runs.
    pub fn jaeger_url(&self) -> Option<String> {
        self.jaeger_forward
            .as_ref()
            .map(|f| format!("http://{}", f.local_addr()))
    }

    /// What did not start, and why.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The running Prometheus.
    pub fn prometheus(&self) -> Option<&Prometheus> {
        self.prometheus.as_ref()
    }

    /// Tells Prometheus the lab's pods as they are now (after an edit).
    pub fn update(&self, run: &LabRun) -> Result<()> {
        match &self.prometheus {
            Some(p) => p.set_proxies(&ProxyTarget::of_lab(&run.entry().pods)),
            None => Ok(()),
        }
    }

    /// What is wrong, waiting up to 15 s for it to come right: Prometheus scrapes every meshed
    /// pod's proxy and the control plane and has recorded a workload's requests; Jaeger holds
    /// a trace of one of the meshed pods' services. Nothing for what does not run.
    pub fn check(&self, run: &LabRun) -> Vec<String> {
        let mut failures = Vec::new();
        let meshed = ProxyTarget::of_lab(&run.entry().pods).len();
        if let Some(p) = &self.prometheus {
            let checks = [
                (
                    format!(r#"count(up{{job="{}"}} == 1)"#, prometheus::PROXY_JOB),
                    meshed as f64,
                    format!("{meshed} proxies scraped"),
                ),
                (
                    format!(
                        r#"count(up{{job="{}"}} == 1)"#,
                        prometheus::CONTROL_PLANE_JOB
                    ),
                    1.0,
                    "the control plane scraped".to_string(),
                ),
                (
                    "count(workload:weft_requests:rate5m > 0)".to_string(),
                    1.0,
                    "a workload's requests recorded by the rules".to_string(),
                ),
            ];
            for (expr, want, what) in checks {
                let mut last = None;
                let got = wait::until(what.clone(), CHECK_PATIENCE, || {
                    let v = p
                        .query(&expr)
                        .ok()?
                        .first()
                        .and_then(|s| s.values.first())
                        .map(|v| v.1);
                    last = v;
                    v.is_some_and(|v| v >= want).then_some(())
                });
                if got.is_err() {
                    failures.push(format!(
                        "Prometheus: not {what} within {CHECK_PATIENCE:?} ({expr} = {last:?})"
                    ));
                }
            }
        }
        if let Some(j) = &self.jaeger {
            let services: Vec<String> = run
                .entry()
                .pods
                .iter()
                .filter_map(|p| p.identity.as_deref())
                .filter_map(|id| id.rsplit_once("/sa/").map(|(_, sa)| sa.to_string()))
                .collect();
            let traced = wait::until("a trace in Jaeger", CHECK_PATIENCE, || {
                services
                    .iter()
                    .any(|s| j.traces(s).is_ok_and(|t| !t.is_empty()))
                    .then_some(())
            });
            if traced.is_err() {
                failures.push(format!(
                    "Jaeger: no trace of {} within {CHECK_PATIENCE:?}",
                    services.join(", ")
                ));
            }
        }
        failures
    }
}
