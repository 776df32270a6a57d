//! `weftctl stat` and `weftctl stat-outbound` against a live mesh, as a user runs them: the
//! demo's folder (web calls api, split 90/10 by the canary HTTPRoute, and the API pods call
//! backend through a route with a timeout and retries) plus a Deployment of two replicas, run
//! by `weftctl lab up`. The test sends a known set of requests inside the commands' window,
//! from inside the pods, and checks that every figure the commands print in JSON equals what
//! the proxies' own counters say, read directly before and after: requests, successes and mTLS
//! per pod, per workload and per route, each backend's share of the canary rule, timeouts and
//! retries.

mod support;

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use support::weftctl::{entry_with, weftctl, Up};
use weft_lab::{
    netns::Netns,
    prometheus::{Options, Prometheus, ProxyTarget},
    registry::LabEntry,
    wait, Metrics,
};

/// The demo's folder, and a Deployment of two replicas that web also calls.
const DEMO: &str = include_str!("../../examples/demo/mesh.yaml");
const WORKERS: &str = r#"
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: worker, namespace: demo}
spec:
  replicas: 2
  selector: {matchLabels: {app: worker}}
  template:
    metadata: {labels: {app: worker}}
    spec: {serviceAccountName: worker, containers: [{name: worker, image: worker, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: worker, namespace: demo}
spec: {selector: {app: worker}, ports: [{name: http, port: 80, targetPort: 8080}]}
"#;

/// The commands' window, and when in it the test's traffic runs: it starts after the
/// commands' first reads (well within `QUIET_BEFORE` of their start) and must be over, its
/// counters settled, `QUIET_AFTER` before their second reads.
const WINDOW: Duration = Duration::from_secs(12);
const QUIET_BEFORE: Duration = Duration::from_secs(2);
const QUIET_AFTER: Duration = Duration::from_secs(3);

/// The canary HTTPRoute's rules and the backend route's, as the proxies label them.
const CANARY_HEADER_RULE: &str = "httproute/demo/api-canary/rule/0";
const CANARY_SPLIT_RULE: &str = "httproute/demo/api-canary/rule/1";
const BACKEND_RULE: &str = "httproute/demo/backend/rule/0";

/// Every meshed pod's page, by pod name, read from inside its namespace.
fn pages(lab: &LabEntry) -> BTreeMap<String, Metrics> {
    lab.pods
        .iter()
        .filter(|p| p.identity.is_some())
        .map(|p| {
            let ns = Netns::attach(&p.netns).expect("the pod's namespace");
            let admin = SocketAddr::from((Ipv4Addr::LOCALHOST, 15190));
            let reply = weft_lab::http::get(&ns, admin, "localhost", "/metrics")
                .unwrap_or_else(|e| panic!("{}'s metrics: {e}", p.name));
            let m = Metrics::parse(&reply.body).unwrap_or_else(|e| panic!("{}: {e}", p.name));
            (p.name.clone(), m)
        })
        .collect()
}

/// The proxies' own count of what `select` picks, from `before` to `after`, summed over pods
/// `pods` (every pod when empty). Independent of weftctl's code: raw sums of the pages.
fn counted(
    before: &BTreeMap<String, Metrics>,
    after: &BTreeMap<String, Metrics>,
    pods: &[&str],
    name: &str,
    select: impl Fn(&weft_lab::Sample) -> bool,
) -> f64 {
    after
        .iter()
        .filter(|(pod, _)| pods.is_empty() || pods.contains(&pod.as_str()))
        .map(|(pod, m)| {
            let sum = |m: &Metrics| -> f64 {
                m.matching(name, &[])
                    .filter(|s| select(s))
                    .map(|s| s.value)
                    .sum()
            };
            sum(m) - before.get(pod).map_or(0.0, sum)
        })
        .sum()
}

fn is_5xx(s: &weft_lab::Sample) -> bool {
    s.label("status_code").starts_with('5')
}

/// A Service's cluster IP, from the hosts file the lab writes for `lab exec`.
fn service_ip(lab: &LabEntry, name: &str) -> SocketAddr {
    let hosts = std::fs::read_to_string(lab.hosts_file("demo")).expect("the lab's hosts file");
    let ip: Ipv4Addr = hosts
        .lines()
        .find(|l| l.split_whitespace().any(|w| w == format!("{name}.demo")))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|ip| ip.parse().ok())
        .unwrap_or_else(|| panic!("no address for {name} in:\n{hosts}"));
    SocketAddr::from((ip, 80))
}

/// A running `weftctl` command whose JSON the test reads when it ends; killed (by PID) if the
/// test fails first.
struct Running {
    what: String,
    child: Option<Child>,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let child = Command::new(weftctl())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("weftctl");
        Running {
            what: args.join(" "),
            child: Some(child),
        }
    }

    /// Its JSON, once it has ended (within twice the window).
    fn json(mut self) -> serde_json::Value {
        let patience = WINDOW * 2;
        let start = Instant::now();
        let child = self.child.as_mut().expect("running");
        while matches!(child.try_wait(), Ok(None)) {
            assert!(
                start.elapsed() < patience,
                "weftctl {} did not end within {patience:?}",
                self.what
            );
            thread::sleep(Duration::from_millis(100));
        }
        let out = self
            .child
            .take()
            .expect("running")
            .wait_with_output()
            .expect("its output");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "weftctl {}: {}\n{text}{}",
            self.what,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("weftctl {}: {e}: {text}", self.what))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The JSON row whose `key` fields are `want`.
fn row<'a>(json: &'a serde_json::Value, want: &[(&str, &str)]) -> &'a serde_json::Value {
    json["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| want.iter().all(|(k, v)| r[*k] == *v))
        .unwrap_or_else(|| panic!("no row {want:?} in {json:#}"))
}

fn num(v: &serde_json::Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

/// GETs `path` on `dst` from inside `from`, `n` times; the statuses.
fn send(
    from: &Netns,
    dst: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> Vec<u16> {
    (0..n)
        .map(|i| {
            let path = path.replace("{i}", &i.to_string());
            weft_lab::http::get_with(from, dst, host, &path, headers)
                .unwrap_or_else(|e| panic!("GET {host}{path}: {e}"))
                .status
        })
        .collect()
}

#[test]
fn stat_agrees_with_the_proxies_own_counters() {
    if !weft_lab::prereq::should_run("weftctl stat") {
        return;
    }
    let folder = tempfile::tempdir().expect("tempdir");
    std::fs::write(folder.path().join("mesh.yaml"), format!("{DEMO}{WORKERS}"))
        .expect("write the folder");
    let name = format!("stat-{}", std::process::id() % 100_000);
    let up = Up::start(folder.path(), &name);
    let lab = entry_with(&name, 6, &up);
    let api = service_ip(&lab, "api");
    let backend = service_ip(&lab, "backend");
    let worker = service_ip(&lab, "worker");
    let netns = |pod: &str| {
        let p = lab
            .pod("demo", pod)
            .unwrap_or_else(|| panic!("pod {pod}: {:?}", lab.pods));
        Netns::attach(&p.netns).expect("its namespace")
    };
    let (web, api_v1) = (netns("web"), netns("api-v1"));
    let workers: Vec<String> = lab
        .pods
        .iter()
        .filter(|p| p.name.starts_with("worker-"))
        .map(|p| p.name.clone())
        .collect();
    assert_eq!(workers.len(), 2, "{:?}", lab.pods);

    // Traffic before the window, so that most series exist at the commands' first read and
    // the window is a difference, not a first count.
    let warm = [
        send(&web, api, "api", "/warm", &[], 10),
        send(&web, worker, "worker", "/warm", &[], 4),
        send(&api_v1, backend, "backend", "/warm", &[], 4),
    ];
    assert!(warm.iter().flatten().all(|s| *s == 200), "{warm:?}");
    thread::sleep(Duration::from_millis(500));
    let before = pages(&lab);
    // The lab names each proxy's workload, as the injector does.
    assert_eq!(
        before["web"].get(
            "weft_proxy_info",
            &[("workload_kind", "pod"), ("workload", "web")]
        ),
        Some(1.0),
        "{}",
        before["web"]
    );
    assert_eq!(
        before[&workers[0]].get(
            "weft_proxy_info",
            &[("workload_kind", "deployment"), ("workload", "worker")]
        ),
        Some(1.0)
    );

    let window = format!("{}s", WINDOW.as_secs());
    let common = ["--lab", &name, "--window", &window, "-o", "json"];
    let started = Instant::now();
    let commands: Vec<Running> = [
        vec!["stat", "po", "-n", "demo"],
        vec!["stat", "deploy"],
        vec!["stat", "route"],
        vec!["stat", "svc", "-n", "demo"],
        vec!["stat-outbound", "po", "-n", "demo"],
        vec!["stat", "ns"],
    ]
    .into_iter()
    .map(|mut args| {
        args.extend(common);
        Running::start(&args)
    })
    .collect();
    thread::sleep(QUIET_BEFORE);

    // The traffic: two requests to backend that outlive the route's 2 s timeout (504 from
    // api-v1's proxy), in the background; ten the backend fails once with 503 (retried, then
    // 200); 30 to api (the 90/10 split), 5 with `x-canary: 1` (the header rule: api-v2); 6 to
    // the workers.
    let slow = {
        let ns = api_v1.name().to_string();
        thread::spawn(move || {
            let from = Netns::attach(&ns).expect("api-v1's namespace");
            send(&from, backend, "backend", "/slow/{i}?delay=3s", &[], 2)
        })
    };
    let retried = send(
        &api_v1,
        backend,
        "backend",
        &format!(
            "/retry/{{i}}?uuid=stat-{}-{{i}}&succeedAfter=1&responseCode=503",
            std::process::id()
        ),
        &[],
        10,
    );
    let split = send(&web, api, "api", "/", &[], 30);
    let canary = send(&web, api, "api", "/", &[("x-canary", "1")], 5);
    let to_workers = send(&web, worker, "worker", "/", &[], 6);
    let slow = slow.join().expect("the slow requests");
    assert_eq!(slow, [504, 504], "the route's 2 s timeout answers");
    assert!(
        [retried, split, canary, to_workers]
            .iter()
            .flatten()
            .all(|s| *s == 200),
        "every other request answered 200 (the 503s retried)"
    );
    let traffic_over = started.elapsed();
    assert!(
        traffic_over + QUIET_AFTER < WINDOW,
        "the traffic took {traffic_over:?}: too close to the commands' second read at {WINDOW:?}; \
         the figures could not be compared"
    );
    let reports: Vec<serde_json::Value> = commands.into_iter().map(Running::json).collect();
    let after = pages(&lab);
    let [pods, deploys, routes, services, outbound, namespaces] = &reports[..] else {
        panic!("six reports");
    };

    for report in &reports {
        assert_eq!(report["errors"], serde_json::json!([]), "{report:#}");
        let w = num(report, "window_seconds");
        assert!(
            (WINDOW.as_secs_f64()..WINDOW.as_secs_f64() + 3.0).contains(&w),
            "window {w} s: {report:#}"
        );
    }

    // Per pod: what each served (inbound), successes and mTLS, as its own counters say.
    let inbound = |s: &weft_lab::Sample| s.label("direction") == "inbound";
    for pod in before.keys() {
        let r = row(pods, &[("name", pod)]);
        let p = [pod.as_str()];
        let want = counted(&before, &after, &p, "weft_requests_total", inbound);
        assert_eq!(num(r, "requests"), want, "{pod}: {r}");
        let ok = counted(&before, &after, &p, "weft_requests_total", |s| {
            inbound(s) && !is_5xx(s)
        });
        assert_eq!(num(r, "successes"), ok, "{pod}: {r}");
        let tls = counted(&before, &after, &p, "weft_requests_total", |s| {
            inbound(s) && s.label("tls") == "true"
        });
        assert_eq!(num(r, "tls_requests"), tls, "{pod}: {r}");
        assert!(
            (num(r, "rps") - want / num(pods, "window_seconds")).abs() < 1e-9,
            "{r}"
        );
        assert_eq!(
            (r["meshed"].as_u64(), r["pods"].as_u64()),
            (Some(1), Some(1)),
            "{r}"
        );
        // The bytes its proxy read from and wrote to the connections it accepted: the
        // commands' window lies inside the test's reads, and holds all of the traffic.
        for (flow, key) in [("to_server", "read_bytes"), ("to_client", "write_bytes")] {
            let bytes = counted(&before, &after, &p, "weft_tcp_bytes_total", |s| {
                inbound(s) && s.label("flow") == flow
            });
            let got = num(&r["tcp"], key);
            assert!(
                got <= bytes && got >= 0.9 * bytes,
                "{pod} {key}: {got} of {bytes}: {r}"
            );
        }
    }
    // The traffic is in it: backend served the 10 retried requests twice (503, then 200; the
    // 2 slow ones too, if its proxy counted them after their callers gave up); api-v1 and
    // api-v2 together the 35 to api; all over mTLS.
    let backend_row = row(pods, &[("name", "backend")]);
    let served = num(backend_row, "requests");
    assert!(served >= 20.0, "{backend_row}");
    assert!(
        served - num(backend_row, "successes") >= 10.0,
        "{backend_row}"
    );
    assert_eq!(backend_row["tls"], 1.0, "{backend_row}");
    // api-v1's proxy reaches backend's over pooled HTTP/1 mesh connections: the window's
    // requests reused them (a few opened for 20 requests), and the two that timed out closed
    // theirs, so how many are open at the read is whatever backend's proxy says, not a
    // constant.
    let empty = BTreeMap::new();
    let inbound_level = |name| {
        counted(&empty, &after, &["backend"], name, |s| {
            s.label("direction") == "inbound"
        })
    };
    let open_now = inbound_level("weft_tcp_connections_opened_total")
        - inbound_level("weft_tcp_connections_closed_total");
    let opened = counted(
        &before,
        &after,
        &["backend"],
        "weft_tcp_connections_opened_total",
        |s| s.label("direction") == "inbound",
    );
    assert!(
        num(&backend_row["tcp"], "read_bytes") > 0.0
            && num(&backend_row["tcp"], "open_connections") == open_now
            && opened <= 4.0,
        "api-v1's proxy reached backend's over reused connections ({opened} opened, {open_now} \
         open at the end): {backend_row}"
    );
    let apis = num(row(pods, &[("name", "api-v1")]), "requests")
        + num(row(pods, &[("name", "api-v2")]), "requests");
    assert_eq!(apis, 35.0, "{pods:#}");

    // Per namespace: every meshed pod's, as many as the lab runs.
    let ns = row(namespaces, &[("name", "demo")]);
    let want = counted(&before, &after, &[], "weft_requests_total", inbound);
    assert_eq!(num(ns, "requests"), want, "{ns}");
    assert_eq!(
        (ns["meshed"].as_u64(), ns["pods"].as_u64()),
        (Some(6), Some(6)),
        "{ns}"
    );

    // Per Deployment: its two replicas summed.
    let w = row(deploys, &[("name", "worker")]);
    let want = counted(
        &before,
        &after,
        &workers.iter().map(String::as_str).collect::<Vec<_>>(),
        "weft_requests_total",
        inbound,
    );
    assert_eq!((num(w, "requests"), want), (6.0, 6.0), "{w}");
    assert_eq!(
        (w["meshed"].as_u64(), w["pods"].as_u64()),
        (Some(2), Some(2)),
        "{w}"
    );
    assert!(
        deploys["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .all(|r| r["kind"] == "deployment"),
        "{deploys:#}"
    );

    // Per route: what every caller sent through it.
    let outbound_of = |rule: &'static str| {
        move |s: &weft_lab::Sample| {
            s.label("direction") == "outbound" && s.label("route").starts_with(rule)
        }
    };
    for (route, prefix) in [
        ("api-canary", "httproute/demo/api-canary/"),
        ("backend", "httproute/demo/backend/"),
    ] {
        let r = row(routes, &[("name", route)]);
        let want = counted(
            &before,
            &after,
            &[],
            "weft_requests_total",
            outbound_of(prefix),
        );
        let ok = counted(&before, &after, &[], "weft_requests_total", |s| {
            outbound_of(prefix)(s) && !is_5xx(s)
        });
        assert_eq!(
            (num(r, "requests"), num(r, "successes")),
            (want, ok),
            "{route}: {r}"
        );
    }
    assert_eq!(
        num(row(routes, &[("name", "api-canary")]), "requests"),
        35.0
    );

    // Per Service: what callers sent each backend Service.
    for svc in ["api-v1", "api-v2", "backend", "worker"] {
        let r = row(services, &[("name", svc)]);
        let want = counted(&before, &after, &[], "weft_requests_total", |s| {
            s.label("direction") == "outbound" && s.label("dst_service") == format!("demo/{svc}:80")
        });
        assert_eq!(num(r, "requests"), want, "{svc}: {r}");
    }

    // The outbound view: web's canary split, backend by backend, with each one's share.
    let split_of = |backend: &str| {
        counted(&before, &after, &["web"], "weft_requests_total", |s| {
            s.label("direction") == "outbound"
                && s.label("route") == CANARY_SPLIT_RULE
                && s.label("dst_service") == backend
        })
    };
    let (v1, v2) = (split_of("demo/api-v1:80"), split_of("demo/api-v2:80"));
    assert_eq!(v1 + v2, 30.0);
    let split = row(outbound, &[("name", "web"), ("route", CANARY_SPLIT_RULE)]);
    assert!(split["backend"].is_null(), "{split}");
    assert_eq!(num(split, "requests"), 30.0, "{split}");
    for (b, want) in [("demo/api-v1:80", v1), ("demo/api-v2:80", v2)] {
        let got = outbound["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .find(|r| r["name"] == "web" && r["route"] == CANARY_SPLIT_RULE && r["backend"] == b)
            .map_or(0.0, |r| num(r, "requests"));
        assert_eq!(got, want, "web -> {b}: {outbound:#}");
        assert_eq!(got / 30.0, want / (v1 + v2));
    }
    let header = row(
        outbound,
        &[
            ("name", "web"),
            ("route", CANARY_HEADER_RULE),
            ("backend", "demo/api-v2:80"),
        ],
    );
    assert_eq!(num(header, "requests"), 5.0, "{header}");

    // api-v1's calls to backend: the tries counted as answered, the two timeouts answered by
    // its own proxy (no backend), and the retries its route made.
    let b = row(outbound, &[("name", "api-v1"), ("route", BACKEND_RULE)]);
    let route = |s: &weft_lab::Sample| {
        s.label("direction") == "outbound" && s.label("route") == BACKEND_RULE
    };
    let want = counted(&before, &after, &["api-v1"], "weft_requests_total", route);
    let timeouts = counted(&before, &after, &["api-v1"], "weft_requests_total", |s| {
        route(s) && s.label("status_code") == "504"
    });
    let retries = counted(&before, &after, &["api-v1"], "weft_retries_total", |s| {
        s.label("route") == BACKEND_RULE
    });
    let rows_of_b: Vec<&serde_json::Value> = outbound["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["name"] == "api-v1" && r["route"] == BACKEND_RULE)
        .collect();
    assert!(b["backend"].is_null(), "{b}");
    assert_eq!(
        (num(b, "requests"), num(b, "timeouts"), num(b, "retries")),
        (want, timeouts, retries),
        "{rows_of_b:#?}"
    );
    assert_eq!((timeouts, retries), (2.0, 10.0), "{rows_of_b:#?}");
    let by_proxy = row(
        outbound,
        &[("name", "api-v1"), ("route", BACKEND_RULE), ("backend", "")],
    );
    assert_eq!(num(by_proxy, "timeouts"), 2.0, "{by_proxy}");
    let to_backend = row(
        outbound,
        &[
            ("name", "api-v1"),
            ("route", BACKEND_RULE),
            ("backend", "demo/backend:80"),
        ],
    );
    assert_eq!(num(to_backend, "requests") + 2.0, want, "{to_backend}");

    // The table a user reads: one line per pod, the MESHED column, no partial rows.
    let out = Command::new(weftctl())
        .args(["stat", "po", "-n", "demo", "--lab", &name, "--window", "1s"])
        .output()
        .expect("weftctl stat");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(table.starts_with("NAMESPACE"), "{table}");
    assert_eq!(
        table
            .lines()
            .filter(|l| l.starts_with("demo ") && l.contains(" 1/1 "))
            .count(),
        6,
        "{table}"
    );
    assert!(!table.contains("partial"), "{table}");

    // A lab that does not run is named.
    let out = Command::new(weftctl())
        .args(["stat", "--lab", "no-such-lab", "--window", "1s"])
        .output()
        .expect("weftctl stat");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no-such-lab"),
        "{err}"
    );
    drop(up);
}

/// Where the test's Prometheus listens, on the lab's node namespace's loopback.
const PROMETHEUS: &str = "127.0.0.1:9090";

/// Sends `path` from `from` to `dst` until `done` (at most `max` requests); how many it sent.
fn send_until(
    from: &Netns,
    dst: SocketAddr,
    host: &str,
    max: usize,
    done: impl Fn() -> bool,
) -> usize {
    for i in 0..max {
        if done() {
            return i;
        }
        let status = weft_lab::http::get(from, dst, host, "/warm")
            .unwrap_or_else(|e| panic!("GET {host}/warm: {e}"))
            .status;
        assert_eq!(status, 200);
    }
    panic!("{max} requests to {host} and still not done");
}

#[test]
fn stat_from_prometheus_agrees_with_the_proxies_own_counters() {
    if !weft_lab::prereq::should_run("weftctl stat --prometheus")
        || !weft_lab::prometheus::should_run("weftctl stat --prometheus")
    {
        return;
    }
    let folder = tempfile::tempdir().expect("tempdir");
    std::fs::write(folder.path().join("mesh.yaml"), DEMO).expect("write the folder");
    let name = format!("statp-{}", std::process::id() % 100_000);
    let up = Up::start(folder.path(), &name);
    let lab = entry_with(&name, 4, &up);
    let node = Netns::attach(&lab.node).expect("the lab's node namespace");
    let work = tempfile::tempdir().expect("tempdir");
    let prometheus = Prometheus::start(
        work.path(),
        PROMETHEUS.parse().expect("addr"),
        Some(&node),
        &Options::default(),
    )
    .expect("Prometheus starts in the node namespace");
    prometheus
        .set_proxies(&ProxyTarget::of_lab(&lab.pods))
        .expect("the proxies' targets");
    let (api, backend) = (service_ip(&lab, "api"), service_ip(&lab, "backend"));
    let netns = |pod: &str| {
        Netns::attach(&lab.pod("demo", pod).expect("the pod").netns).expect("its namespace")
    };
    let (web, api_v1) = (netns("web"), netns("api-v1"));

    // Every series the window reads exists before it: Prometheus's `increase` counts nothing
    // of a series before its first sample. The canary split's api-v2 backend is a 10 % draw.
    let series_of_web = |route: &str, backend: &str| {
        pages(&lab)["web"].sum(
            "weft_requests_total",
            &[("route", route), ("dst_service", backend)],
        ) > 0.0
    };
    send_until(&web, api, "api", 300, || {
        series_of_web(CANARY_SPLIT_RULE, "demo/api-v1:80")
            && series_of_web(CANARY_SPLIT_RULE, "demo/api-v2:80")
    });
    let retry_path = |round: &str| {
        format!(
            "/retry/{{i}}?uuid=statp-{}-{round}-{{i}}&succeedAfter=1&responseCode=503",
            std::process::id()
        )
    };
    assert!(
        send(&api_v1, backend, "backend", &retry_path("warm"), &[], 3)
            .iter()
            .chain(&send(&web, api, "api", "/warm", &[("x-canary", "1")], 2))
            .all(|s| *s == 200)
    );
    // Scraped: every proxy up, and Prometheus's latest values the proxies' own.
    let settled = || {
        let direct: f64 = pages(&lab)
            .values()
            .map(|m| m.sum("weft_requests_total", &[]))
            .sum();
        let scraped = prometheus
            .query("sum(weft_requests_total)")
            .ok()
            .and_then(|s| s.first().and_then(|s| s.values.first()).map(|v| v.1));
        let up = prometheus
            .query("count(up{job=\"weft-proxies\"} == 1)")
            .ok()
            .and_then(|s| s.first().and_then(|s| s.values.first()).map(|v| v.1));
        (scraped == Some(direct) && up == Some(4.0)).then_some(())
    };
    wait::until(
        "Prometheus to have scraped every proxy",
        Duration::from_secs(30),
        settled,
    )
    .unwrap_or_else(|e| panic!("{e}\nprometheus's log:\n{}", prometheus.log()));
    // A quiet gap, in which the window will begin.
    thread::sleep(Duration::from_secs(4));
    let before = pages(&lab);
    let t_before = Instant::now();
    let split = send(&web, api, "api", "/", &[], 40);
    let canary = send(&web, api, "api", "/", &[("x-canary", "1")], 5);
    let retried = send(&api_v1, backend, "backend", &retry_path("window"), &[], 10);
    assert!([split, canary, retried].iter().flatten().all(|s| *s == 200));
    thread::sleep(Duration::from_millis(500));
    let after = pages(&lab);
    wait::until(
        "Prometheus to have scraped the traffic",
        Duration::from_secs(30),
        settled,
    )
    .unwrap_or_else(|e| panic!("{e}\nprometheus's log:\n{}", prometheus.log()));
    // A window of 25 s, from inside the quiet gap before the traffic to now: long against
    // the 1 s scrapes, so that `increase` extrapolates its samples by less than a tenth.
    thread::sleep(Duration::from_secs(23).saturating_sub(t_before.elapsed()));
    let window = format!("{}s", t_before.elapsed().as_secs() + 2);
    let stat = |args: &[&str]| -> serde_json::Value {
        let out = node
            .command(weftctl())
            .args(args)
            .args([
                "--prometheus",
                &format!("http://{PROMETHEUS}"),
                "--window",
                &window,
                "-o",
                "json",
            ])
            .output()
            .expect("weftctl stat in the node namespace");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "weftctl {args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    };
    let pods = stat(&["stat", "po", "-n", "demo"]);
    let outbound = stat(&["stat-outbound", "po/web", "-n", "demo"]);
    let backend_calls = stat(&["stat-outbound", "po/api-v1", "-n", "demo"]);
    let workloads = stat(&["stat", "-n", "demo"]);
    assert!(
        pods["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("prometheus")),
        "{pods:#}"
    );

    // `increase` extrapolates what its samples saw to the window's ends: never less than the
    // proxies counted, and here (1 s scrapes, a 25 s window) at most a fifth more. The shares
    // of one proxy's series, sampled together, agree closely.
    let close = |got: f64, want: f64, what: &str| {
        assert!(
            got >= want - 1e-6 && got <= want * 1.2 + 1e-6,
            "{what}: Prometheus says {got}, the proxies counted {want}"
        );
    };
    let inbound = |s: &weft_lab::Sample| s.label("direction") == "inbound";
    for pod in ["api-v1", "api-v2", "backend"] {
        let r = row(&pods, &[("name", pod)]);
        let want = counted(&before, &after, &[pod], "weft_requests_total", inbound);
        let ok = counted(&before, &after, &[pod], "weft_requests_total", |s| {
            inbound(s) && !is_5xx(s)
        });
        assert!(want > 0.0, "{pod} served in the window");
        close(num(r, "requests"), want, pod);
        let success = num(r, "success");
        assert!(
            (success - ok / want).abs() < 0.02,
            "{pod}: {success} vs {ok}/{want}: {r}"
        );
        assert_eq!(r["tls"], 1.0, "{pod}: {r}");
        // Prometheus knows meshed pods only.
        assert_eq!(
            (r["meshed"].as_u64(), r["pods"].as_u64()),
            (Some(1), None),
            "{r}"
        );
    }
    // The canary split at web's proxy, backend by backend.
    let share = |backend: &str| {
        counted(&before, &after, &["web"], "weft_requests_total", |s| {
            s.label("route") == CANARY_SPLIT_RULE && s.label("dst_service") == backend
        })
    };
    let (v1, v2) = (share("demo/api-v1:80"), share("demo/api-v2:80"));
    assert_eq!(v1 + v2, 40.0);
    let rule = row(&outbound, &[("route", CANARY_SPLIT_RULE)]);
    close(num(rule, "requests"), 40.0, "the canary split rule");
    for (b, want) in [("demo/api-v1:80", v1), ("demo/api-v2:80", v2)] {
        let r = row(&outbound, &[("route", CANARY_SPLIT_RULE), ("backend", b)]);
        let got = num(r, "requests") / num(rule, "requests");
        assert!(
            (got - want / 40.0).abs() < 0.02,
            "{b}: share {got}, counted {want}/40"
        );
    }
    let header = row(
        &outbound,
        &[("route", CANARY_HEADER_RULE), ("backend", "demo/api-v2:80")],
    );
    close(num(header, "requests"), 5.0, "the x-canary rule");
    // api-v1's retries to backend.
    let b = row(&backend_calls, &[("route", BACKEND_RULE)]);
    let retries = counted(&before, &after, &["api-v1"], "weft_retries_total", |s| {
        s.label("route") == BACKEND_RULE
    });
    assert_eq!(retries, 10.0);
    close(num(b, "retries"), retries, "retries");
    // The workload of each pod, from weft_proxy_info joined on (namespace, pod).
    let names: Vec<(&str, &str)> = workloads["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| Some((r["kind"].as_str()?, r["name"].as_str()?)))
        .collect();
    assert_eq!(
        names,
        [
            ("pod", "api-v1"),
            ("pod", "api-v2"),
            ("pod", "backend"),
            ("pod", "web")
        ],
        "{workloads:#}"
    );
    drop(prometheus);
    drop(up);
}
