//! Prometheus and the Grafana dashboards against the demo mesh: the built-in folder of `weftctl
//! demo` (`examples/demo/mesh.yaml`) with its fault switch on (a fifth of the API pods' calls
//! to `backend` aborted with 503, a tenth delayed), traffic as the demo sends it (web to the
//! canary Service `api`, some of it with `x-canary: 1`; both API pods to `backend`, and a few of
//! api-v1's calls answered 503 once by the echo app's retry simulator, which the route
//! retries), every proxy
//! tracing to Jaeger when it is built, and a real Prometheus (Debian's) in the node namespace
//! scraping every proxy and the control plane each second with Weft's rules loaded.
//!
//! - Prometheus sees every proxy and the control plane up under the jobs and labels
//!   docs/observability.md gives, each proxy's workload (`weft_proxy_info`, from the
//!   `WEFT_WORKLOAD` the lab sets as the injector does), and the rules' workload and route
//!   series, the canary's two backends among them.
//! - Every dashboard in `helm/weft/dashboards/`: each template variable's query run and set to a
//!   real value of the mesh, then every panel target's expression (with `$__rate_interval` and
//!   friends substituted as Grafana would) parsed and run by Prometheus and returning at least
//!   one series. A failure names the dashboard, the panel and the expression.
//!
//! `make dashboards-preview` runs the ignored `preview_data` below: the same mesh for longer, every
//! panel's data over that time as JSON for `scripts/dashboards-preview.py` to draw.
//!
//! Needs what the netns tier needs and Debian's `prometheus`; otherwise `SKIPPED:`, unless
//! `WEFT_REQUIRE_NETNS_TESTS=1`.

mod support;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use support::lab_run::Lab;
use weft_lab::{
    control_plane,
    jaeger::{self, Jaeger},
    netns::Netns,
    prometheus::{Options, Prometheus, ProxyTarget, Series},
    wait, GATEWAY,
};

/// The demo's folder, as `weftctl demo` runs it.
const DEMO_FOLDER: &str = include_str!("../../examples/demo/mesh.yaml");
/// The folder's one file.
const FOLDER_FILE: &str = "mesh.yaml";
/// Requests per second on each call.
const RPS: u32 = 20;
/// Where Prometheus listens, on the node namespace's loopback.
const PROMETHEUS: &str = "127.0.0.1:9090";
/// Where Jaeger's query API listens, on the node namespace's loopback.
const JAEGER_QUERY: &str = "127.0.0.1:16686";
/// Jaeger's OTLP/gRPC port, on the bridge's gateway address.
const OTLP_PORT: u16 = 4317;

/// The demo mesh with its traffic, Prometheus and (when built) Jaeger; all removed on drop.
struct Mesh {
    // Dropped in this order: the clients, then Jaeger and Prometheus, then the lab.
    traffic: Traffic,
    _jaeger: Option<Jaeger>,
    prometheus: Prometheus,
    lab: Lab,
    _work: tempfile::TempDir,
}

impl Mesh {
    /// Starts it, or `None` (after a loud `SKIPPED:` line) when the machine cannot.
    fn start(test: &str) -> Option<Mesh> {
        if !weft_lab::prereq::should_run(test) || !weft_lab::prometheus::should_run(test) {
            return None;
        }
        let folder = DEMO_FOLDER.replace(
            "abort: {percent: 0, httpStatus: 503}",
            "abort: {percent: 20, httpStatus: 503}\n  delay: {percent: 10, fixedDelay: 30ms}",
        );
        assert_ne!(folder, DEMO_FOLDER, "the demo's fault switch was not found");
        let collector = SocketAddr::from((GATEWAY, OTLP_PORT)).to_string();
        let lab = Lab::start_with(
            test,
            "dashboards",
            &[(FOLDER_FILE, &folder)],
            vec![
                ("WEFT_TRACE_COLLECTOR".into(), collector),
                ("WEFT_TRACE_SAMPLING".into(), "0.2".into()),
            ],
        )?;
        let work = tempfile::tempdir().expect("tempdir");
        let node = lab.run.cluster().node();
        // After the pods: the gateway address is the bridge's from the first pod on.
        let jaeger = jaeger::locate().is_ok().then(|| {
            Jaeger::start(
                work.path(),
                SocketAddr::from((GATEWAY, OTLP_PORT)),
                JAEGER_QUERY.parse().expect("addr"),
                Some(node),
            )
            .expect("Jaeger starts in the node namespace")
        });
        let prometheus = Prometheus::start(
            work.path(),
            PROMETHEUS.parse().expect("addr"),
            Some(node),
            &Options {
                interval: Duration::from_secs(1),
                rules: Some(repo().join("helm/weft/rules/weft.rules.yaml")),
                control_plane: Some(control_plane::admin_addr()),
            },
        )
        .expect("Prometheus starts in the node namespace");
        prometheus
            .set_proxies(&ProxyTarget::of_lab(&lab.run.entry().pods))
            .expect("the proxies' targets");
        let traffic = Traffic::start(&lab);
        Some(Mesh {
            traffic,
            _jaeger: jaeger,
            prometheus,
            lab,
            _work: work,
        })
    }

    /// Runs `expr`; a failure names it and shows Prometheus's log.
    fn query(&self, expr: &str) -> Vec<Series> {
        self.prometheus
            .query(expr)
            .unwrap_or_else(|e| panic!("{e}\nprometheus's log:\n{}", self.prometheus.log()))
    }

    /// Waits (at most `patience`) until `expr` returns a first value of at least `want`.
    fn wait_for(&self, expr: &str, want: f64, patience: Duration) {
        let mut last = Vec::new();
        let done = wait::until(format!("{expr} >= {want}"), patience, || {
            last = self.prometheus.query(expr).ok()?;
            let value = last.first().and_then(|s| s.values.first()).map(|v| v.1);
            value.is_some_and(|v| v >= want).then_some(())
        });
        if let Err(e) = done {
            panic!(
                "{e}; last answer {last:?}; client counts {:?}\nprometheus's log:\n{}",
                self.traffic.counts(),
                self.prometheus.log()
            );
        }
    }

    /// Waits until every proxy and the control plane are scraped and `scrapes` samples of
    /// each are in, with requests of every call among them.
    fn wait_for_data(&self, scrapes: u32) {
        let patience = Duration::from_secs(u64::from(scrapes) + 20);
        self.wait_for(r#"count(up{job="weft-proxies"} == 1)"#, 4.0, patience);
        self.wait_for(r#"count(up{job="weft-control-plane"} == 1)"#, 1.0, patience);
        self.wait_for(
            r#"min(count_over_time(up{job=~"weft-proxies|weft-control-plane"}[5m]))"#,
            f64::from(scrapes),
            patience,
        );
        self.wait_for(
            r#"count(sum by (pod) (weft_requests_total{direction="inbound"}))"#,
            3.0,
            patience,
        );
    }
}

/// One stream of requests: from a pod to a Service, with a header, `rps` a second; `retried`
/// requests go to the echo app's retry simulator (one 503, then an answer).
struct Call {
    from: &'static str,
    to: &'static str,
    header: Option<(&'static str, &'static str)>,
    rps: u32,
    retried: bool,
}

/// The demo's clients: a thread per call inside the caller's pod namespace, stopped on drop.
struct Traffic {
    stop: Arc<AtomicBool>,
    handles: Vec<thread::JoinHandle<(u64, u64)>>,
    counts: Vec<Arc<[std::sync::atomic::AtomicU64; 2]>>,
}

impl Traffic {
    /// web calls `api` (and a fifth as often with `x-canary: 1`), both API pods `backend`,
    /// [`RPS`] a second each, for at most 15 minutes.
    fn start(lab: &Lab) -> Traffic {
        let service = |name: &str| {
            let s = &lab.run.folder().services[&("demo".to_string(), name.to_string())];
            (s.addr(80).expect("a cluster IP"), s.host())
        };
        let call = |from, to, header, rps, retried| Call {
            from,
            to,
            header,
            rps,
            retried,
        };
        let calls = [
            call("web", "api", None, RPS, false),
            call("web", "api", Some(("x-canary", "1")), RPS / 5, false),
            call("api-v1", "backend", None, RPS, false),
            call("api-v2", "backend", None, RPS, false),
            // backend's route retries 503s: each of these is answered on its second try.
            call("api-v1", "backend", None, RPS / 10, true),
        ];
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        let mut counts = Vec::new();
        for c in calls {
            let ns = lab.netns("demo", c.from);
            let (dst, host) = service(c.to);
            let count = Arc::new([
                std::sync::atomic::AtomicU64::new(0),
                std::sync::atomic::AtomicU64::new(0),
            ]);
            counts.push(count.clone());
            let stop = stop.clone();
            handles.push(thread::spawn(move || {
                client(&ns, dst, &host, &c, &stop, &count)
            }));
        }
        Traffic {
            stop,
            handles,
            counts,
        }
    }

    /// (answered, failed) of each call so far.
    fn counts(&self) -> Vec<(u64, u64)> {
        self.counts
            .iter()
            .map(|c| (c[0].load(Ordering::Relaxed), c[1].load(Ordering::Relaxed)))
            .collect()
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// `call`'s requests to `dst` from inside `ns` (`GET /`, or the retry simulator with a new
/// uuid each time), `call.rps` a second until `stop` (bounded: 15 minutes).
fn client(
    ns: &Netns,
    dst: SocketAddr,
    host: &str,
    call: &Call,
    stop: &AtomicBool,
    count: &[std::sync::atomic::AtomicU64; 2],
) -> (u64, u64) {
    let interval = Duration::from_secs(1) / call.rps.max(1);
    let started = Instant::now();
    let limit = Duration::from_secs(15 * 60);
    let headers: Vec<(&str, &str)> = call.header.into_iter().collect();
    let mut next = Instant::now();
    let max = u64::from(call.rps) * limit.as_secs();
    for i in 0..max {
        if stop.load(Ordering::Relaxed) || started.elapsed() > limit {
            break;
        }
        let path = if call.retried {
            format!(
                "/retry/{}?succeedAfter=1&responseCode=503&uuid=u{i}",
                call.from
            )
        } else {
            "/".to_string()
        };
        // Any answer counts as answered: the fault switch makes some of them 503 on purpose.
        match weft_lab::http::get_with(ns, dst, host, &path, &headers) {
            Ok(_) => count[0].fetch_add(1, Ordering::Relaxed),
            Err(_) => count[1].fetch_add(1, Ordering::Relaxed),
        };
        next += interval;
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    (
        count[0].load(Ordering::Relaxed),
        count[1].load(Ordering::Relaxed),
    )
}

/// The repository (this crate is `e2e/` in it).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// What stands for Grafana's `$__rate_interval` with a 1 s scrape interval: four scrapes and
/// some (Grafana's rule is max(4 x scrape interval, $__interval + scrape interval)).
const RATE_INTERVAL: &str = "10s";
/// What stands for `$__interval` (the step of a graph some hundreds of points wide).
const INTERVAL: &str = "2s";

/// One dashboard file, read.
struct Dashboard {
    file: String,
    json: serde_json::Value,
}

/// One panel target's expression, where it is.
struct Expr {
    dashboard: String,
    panel: String,
    panel_id: u64,
    ref_id: String,
    expr: String,
    /// An instant query (stat, bargauge, table) rather than a range.
    instant: bool,
}

/// Every dashboard of `helm/weft/dashboards/`, by file name.
fn dashboards() -> Vec<Dashboard> {
    let dir = repo().join("helm/weft/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no dashboards in {}", dir.display());
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            Dashboard {
                file: path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                json,
            }
        })
        .collect()
}

/// `text` with Grafana's built-in variables and `values` (`$name` and `${name}`) put in.
fn substitute(text: &str, values: &BTreeMap<String, String>, rate_interval: &str) -> String {
    let mut out = text
        .replace("$__rate_interval", rate_interval)
        .replace("${__rate_interval}", rate_interval)
        .replace("$__interval", INTERVAL)
        .replace("${__interval}", INTERVAL);
    // Longest names first, so `$namespace` is not taken for a `$name` followed by text.
    let mut names: Vec<&String> = values.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for name in names {
        let value = &values[name];
        out = out
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    out
}

/// The dashboard's query variables set as Grafana would on loading it: each one's
/// `label_values(expr, label)` run (with the variables before it put in), and its saved
/// `current` value kept when the mesh has it, else the first value in order. A variable whose
/// query returns nothing, or that is not `label_values(...)`, is a failure.
fn variables(mesh: &Mesh, d: &Dashboard) -> BTreeMap<String, String> {
    let mut values = BTreeMap::new();
    let list = d.json["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for var in list {
        let name = var["name"].as_str().unwrap_or_default().to_string();
        match var["type"].as_str() {
            Some("datasource") => continue,
            Some("query") => {}
            other => panic!(
                "{}: variable {name}: type {other:?} is not handled here",
                d.file
            ),
        }
        let query = var["query"]["query"]
            .as_str()
            .or_else(|| var["query"].as_str())
            .unwrap_or_else(|| panic!("{}: variable {name} has no query", d.file));
        let query = substitute(query, &values, RATE_INTERVAL);
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap_or_else(|| {
                panic!(
                    "{}: variable {name}: {query:?} is not label_values(expr, label)",
                    d.file
                )
            });
        let (expr, label) = inner
            .rsplit_once(',')
            .unwrap_or_else(|| panic!("{}: variable {name}: {query:?} names no label", d.file));
        let label = label.trim();
        let series = mesh
            .prometheus
            .query(expr)
            .unwrap_or_else(|e| panic!("{}: variable {name}: {e}", d.file));
        let mut found: Vec<String> = series
            .iter()
            .filter_map(|s| s.labels.get(label).cloned())
            .filter(|v| !v.is_empty())
            .collect();
        found.sort();
        found.dedup();
        let current = var["current"]["value"].as_str().map(str::to_string);
        let value = match current {
            Some(c) if found.contains(&c) => c,
            _ => found.first().cloned().unwrap_or_else(|| {
                panic!(
                    "{}: variable {name}: {query:?} found no {label} in the mesh",
                    d.file
                )
            }),
        };
        values.insert(name, value);
    }
    values
}

/// Every panel target of `d` (rows' panels too), variables put in.
fn expressions(d: &Dashboard, values: &BTreeMap<String, String>, rate_interval: &str) -> Vec<Expr> {
    let mut panels: Vec<serde_json::Value> = Vec::new();
    for p in d.json["panels"].as_array().cloned().unwrap_or_default() {
        panels.extend(p["panels"].as_array().cloned().unwrap_or_default());
        panels.push(p);
    }
    let mut out = Vec::new();
    for p in panels {
        for t in p["targets"].as_array().cloned().unwrap_or_default() {
            let expr = t["expr"].as_str().unwrap_or_default();
            out.push(Expr {
                dashboard: d.file.clone(),
                panel: p["title"].as_str().unwrap_or_default().to_string(),
                panel_id: p["id"].as_u64().unwrap_or_default(),
                ref_id: t["refId"].as_str().unwrap_or_default().to_string(),
                expr: substitute(expr, values, rate_interval),
                instant: t["instant"].as_bool().unwrap_or(false),
            });
        }
    }
    out
}

/// The label sets of `series`, as `name=value` lists, for messages.
fn label_sets(series: &[Series]) -> Vec<BTreeMap<String, String>> {
    series.iter().map(|s| s.labels.clone()).collect()
}

/// One mesh for both checks: each mesh is four proxies, a control plane and a Prometheus on a
/// machine that CI shares with every other test.
#[test]
fn prometheus_scrapes_the_demo_mesh_and_every_dashboard_query_returns_data() {
    let test = "prometheus_scrapes_the_demo_mesh_and_every_dashboard_query_returns_data";
    let dashboards = dashboards();
    let Some(mesh) = Mesh::start(test) else {
        return;
    };
    // Enough scrapes for the rate windows ($__rate_interval: 10 s) and the rules.
    mesh.wait_for_data(15);
    scrapes_and_rules(&mesh);
    dashboard_queries(&mesh, &dashboards);
}

/// Prometheus scrapes every proxy and the control plane as docs/observability.md says, and
/// the rules record the workloads and the canary route.
fn scrapes_and_rules(mesh: &Mesh) {
    // Every proxy under the job and labels of docs/observability.md, and the control plane.
    let up = mesh.query(r#"up{job="weft-proxies"}"#);
    let pods: Vec<(String, String)> = up
        .iter()
        .map(|s| (s.labels["namespace"].clone(), s.labels["pod"].clone()))
        .collect();
    let want: Vec<(String, String)> = ["api-v1", "api-v2", "backend", "web"]
        .iter()
        .map(|p| ("demo".to_string(), (*p).to_string()))
        .collect();
    let mut sorted = pods.clone();
    sorted.sort();
    assert_eq!(sorted, want, "{:?}", label_sets(&up));
    let cp = mesh.query(r#"up{job="weft-control-plane",namespace="weft"} == 1"#);
    assert_eq!(cp.len(), 1, "{:?}", label_sets(&cp));

    // Each proxy names its workload as the injector would for a bare pod, and the rules
    // join it (not the fallback: the info series is there).
    let info = mesh.query(r#"weft_proxy_info{workload_kind="pod"}"#);
    let mut named: Vec<(String, String)> = info
        .iter()
        .map(|s| (s.labels["pod"].clone(), s.labels["workload"].clone()))
        .collect();
    named.sort();
    let want_named: Vec<(String, String)> =
        want.iter().map(|(_, p)| (p.clone(), p.clone())).collect();
    assert_eq!(named, want_named, "{:?}", label_sets(&info));
    let workloads = mesh.query(r#"workload:weft_requests:rate5m{namespace="demo"} > 0"#);
    let mut served: Vec<String> = workloads
        .iter()
        .map(|s| format!("{}/{}", s.labels["workload_kind"], s.labels["workload"]))
        .collect();
    served.sort();
    assert_eq!(
        served,
        ["pod/api-v1", "pod/api-v2", "pod/backend"],
        "{:?}",
        label_sets(&workloads)
    );

    // The canary: rule 1 of api-canary splits between both versions.
    let canary = mesh.query(
        r#"route_backend:weft_requests:rate5m{route="httproute/demo/api-canary/rule/1"} > 0"#,
    );
    let mut backends: Vec<String> = canary
        .iter()
        .map(|s| s.labels["dst_service"].clone())
        .collect();
    backends.sort();
    assert_eq!(
        backends,
        ["demo/api-v1:80", "demo/api-v2:80"],
        "{:?}",
        label_sets(&canary)
    );
    // The fault switch shows as the API pods' 503s to backend.
    let aborted = mesh.query(
        r#"sum(rate(weft_requests_total{direction="outbound",route="httproute/demo/backend/rule/0",status_code="503"}[1m])) > 0"#,
    );
    assert_eq!(
        aborted.len(),
        1,
        "no aborted calls to backend: {:?}",
        label_sets(&mesh.query(r#"weft_requests_total{direction="outbound"}"#))
    );
}

/// Every dashboard's variables set from the mesh, and every panel target run: each parses and
/// returns at least one series.
fn dashboard_queries(mesh: &Mesh, dashboards: &[Dashboard]) {
    let mut failures = Vec::new();
    let mut checked = 0;
    for d in dashboards {
        let values = variables(mesh, d);
        for e in expressions(d, &values, RATE_INTERVAL) {
            checked += 1;
            if e.expr.contains('$') {
                failures.push(format!(
                    "{} / {} / {}: a variable was left in {:?}",
                    e.dashboard, e.panel, e.ref_id, e.expr
                ));
                continue;
            }
            match mesh.prometheus.query(&e.expr) {
                Ok(series) if !series.is_empty() => {}
                Ok(_) => failures.push(format!(
                    "{} / {} / {}: no data for {:?} (variables {values:?})",
                    e.dashboard, e.panel, e.ref_id, e.expr
                )),
                Err(err) => failures.push(format!(
                    "{} / {} / {}: {err}",
                    e.dashboard, e.panel, e.ref_id
                )),
            }
        }
    }
    assert!(checked > 0, "no panel targets in the dashboards");
    assert!(
        failures.is_empty(),
        "{} of {checked} dashboard queries failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// `make dashboards-preview`: the mesh for `WEFT_DASHBOARDS_PREVIEW_SECONDS` (180 by default,
/// 30 to 600), the canary's weights moved from 90/10 to 50/50 halfway, then every panel
/// target's data over the run (range queries; instant ones at the end) written as JSON to
/// `WEFT_DASHBOARDS_PREVIEW_OUT` for scripts/dashboards-preview.py to draw.
#[test]
#[ignore = "make dashboards-preview runs it: minutes of traffic"]
fn preview_data() {
    let test = "preview_data";
    let out = std::env::var_os("WEFT_DASHBOARDS_PREVIEW_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/dashboards-preview/data.json"));
    let seconds: u64 = std::env::var("WEFT_DASHBOARDS_PREVIEW_SECONDS")
        .ok()
        .map(|s| {
            s.parse()
                .unwrap_or_else(|_| panic!("WEFT_DASHBOARDS_PREVIEW_SECONDS={s:?} is not a number"))
        })
        .unwrap_or(180);
    assert!(
        (30..=600).contains(&seconds),
        "WEFT_DASHBOARDS_PREVIEW_SECONDS={seconds}: from 30 to 600"
    );
    let dashboards = dashboards();
    let Some(mut mesh) = Mesh::start(test) else {
        return;
    };
    mesh.wait_for_data(5);
    let started = Instant::now();
    let start = unix_now();
    thread::sleep(Duration::from_secs(seconds / 2));
    let folder = std::fs::read_to_string(mesh.lab.dir().join(FOLDER_FILE)).expect("the folder");
    let fifty = folder
        .replace("weight: 90}", "weight: 50}")
        .replace("weight: 10}", "weight: 50}");
    assert_ne!(fifty, folder, "the canary's weights were not found");
    mesh.lab.edit(FOLDER_FILE, Some(&fifty));
    thread::sleep(Duration::from_secs(seconds).saturating_sub(started.elapsed()));
    let end = unix_now();
    // About 150 points a graph; Grafana's $__rate_interval for such a step and 1 s scrapes.
    let step = Duration::from_secs(((end - start) / 150.0).ceil().max(1.0) as u64);
    let rate_interval = format!("{}s", (step.as_secs() + 1).max(4) * 4);
    let mut data = serde_json::Map::new();
    for d in &dashboards {
        let values = variables(&mesh, d);
        let mut panels = serde_json::Map::new();
        for e in expressions(d, &values, &rate_interval) {
            let series = if e.instant {
                mesh.prometheus.query(&e.expr)
            } else {
                mesh.prometheus.query_range(&e.expr, start, end, step)
            }
            .unwrap_or_else(|err| panic!("{} / {} / {}: {err}", e.dashboard, e.panel, e.ref_id));
            let json: Vec<serde_json::Value> = series
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "labels": s.labels,
                        "values": s.values.iter().map(|(t, v)| {
                            serde_json::json!([t, if v.is_finite() { serde_json::json!(v) } else { serde_json::Value::Null }])
                        }).collect::<Vec<_>>(),
                    })
                })
                .collect();
            let panel = panels
                .entry(e.panel_id.to_string())
                .or_insert_with(|| serde_json::json!({}));
            panel[e.ref_id.as_str()] = serde_json::json!(json);
        }
        data.insert(
            d.file.clone(),
            serde_json::json!({"variables": values, "panels": panels}),
        );
    }
    let doc = serde_json::json!({
        "start": start,
        "end": end,
        "step": step.as_secs(),
        "rate_interval": rate_interval,
        "dashboards": data,
    });
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    }
    std::fs::write(&out, format!("{doc:#}\n"))
        .unwrap_or_else(|e| panic!("write {}: {e}", out.display()));
    eprintln!(
        "preview data of {} dashboards: {}",
        dashboards.len(),
        out.display()
    );
}

/// Seconds since the Unix epoch, now.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}
