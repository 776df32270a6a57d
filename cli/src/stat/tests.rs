//! The computation behind `weftctl stat` on metric text as the proxy prints it: two reads make
//! a window; rows per workload, pod, namespace, Service and route; the outbound view with
//! timeouts and retries; the PromQL and the Prometheus answers; the API server's paths.

use std::time::Duration;

use super::{
    cluster, prom,
    resource::Resource,
    scrape::{self, Read, Target},
    table,
    view::{self, Observed, PodInfo, ProxyWindow, Workload},
    window::{Counters, Direction, Flow},
    CommonArgs, Source,
};

/// A request series line of `weft_requests_total` and its latency buckets, as the proxy
/// prints them (every label, sorted), for `n` requests that took `seconds`.
fn requests(labels: &[(&str, &str)], n: u64, seconds: f64) -> String {
    let mut all: Vec<(&str, &str)> = vec![
        ("client_id", ""),
        ("direction", ""),
        ("dst_endpoint", ""),
        ("dst_service", ""),
        ("route", ""),
        ("server_id", ""),
        ("status_code", "200"),
        ("tls", "false"),
    ];
    for (k, v) in labels {
        if let Some(slot) = all.iter_mut().find(|(ak, _)| ak == k) {
            slot.1 = v;
        }
    }
    let l = all
        .iter()
        .map(|(k, v)| format!("{k}=\"{v}\""))
        .collect::<Vec<_>>()
        .join(",");
    let mut out = format!("weft_requests_total{{{l}}} {n}\n");
    for le in ["0.001", "0.005", "0.01", "0.05", "0.1", "1", "+Inf"] {
        let bound: f64 = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().expect("bound")
        };
        let c = if seconds <= bound { n } else { 0 };
        out.push_str(&format!(
            "weft_request_duration_seconds_bucket{{{l},le=\"{le}\"}} {c}\n"
        ));
    }
    out.push_str(&format!(
        "weft_request_duration_seconds_count{{{l}}} {n}\nweft_request_duration_seconds_sum{{{l}}} {}\n",
        n as f64 * seconds
    ));
    out
}

const API_V1: &str = "spiffe://cluster.local/ns/demo/sa/api";
const WEB: &str = "spiffe://cluster.local/ns/demo/sa/web";
const CANARY: &str = "httproute/demo/api-canary/rule/1";
const BACKEND_RULE: &str = "httproute/demo/backend/rule/0";

/// `web`'s page after `k` rounds: 9k requests to api-v1, k to api-v2 through the canary rule,
/// 2k plaintext inbound from an unmeshed client (one failed).
fn web_page(k: u64) -> String {
    let mut page = String::from(
        "# HELP weft_proxy_info The workload.\n# TYPE weft_proxy_info gauge\nweft_proxy_info{workload=\"web\",workload_kind=\"deployment\"} 1\n",
    );
    page.push_str(&requests(
        &[
            ("direction", "outbound"),
            ("tls", "true"),
            ("client_id", WEB),
            ("server_id", API_V1),
            ("route", CANARY),
            ("dst_service", "demo/api-v1:80"),
            ("dst_endpoint", "198.18.0.5:8080"),
        ],
        9 * k,
        0.004,
    ));
    page.push_str(&requests(
        &[
            ("direction", "outbound"),
            ("tls", "true"),
            ("client_id", WEB),
            ("server_id", API_V1),
            ("route", CANARY),
            ("dst_service", "demo/api-v2:80"),
            ("dst_endpoint", "198.18.0.6:8080"),
        ],
        k,
        0.04,
    ));
    page.push_str(&requests(&[("direction", "inbound")], 2 * k, 0.0008));
    // Its accepted connections: 3k opened, k closed; 100 bytes in and 400 out a request.
    page.push_str(&format!(
        "weft_tcp_connections_opened_total{{direction=\"inbound\"}} {}\n\
         weft_tcp_connections_closed_total{{direction=\"inbound\"}} {k}\n\
         weft_tcp_bytes_total{{direction=\"inbound\",flow=\"to_server\"}} {}\n\
         weft_tcp_bytes_total{{direction=\"inbound\",flow=\"to_client\"}} {}\n",
        3 * k,
        200 * k,
        800 * k
    ));
    page.push_str(&requests(
        &[("direction", "inbound"), ("status_code", "503")],
        k.min(1),
        0.0008,
    ));
    page
}

/// `api-v1`'s page after `k` rounds: it served 9k over mTLS; it called backend through a rule
/// with retries: 4k answered 200, k timed out (504, answered by its proxy: no backend), and
/// 3k retries.
fn api_page(k: u64) -> String {
    let mut page =
        String::from("weft_proxy_info{workload=\"api\",workload_kind=\"deployment\"} 1\n");
    page.push_str(&requests(
        &[
            ("direction", "inbound"),
            ("tls", "true"),
            ("client_id", WEB),
            ("server_id", API_V1),
        ],
        9 * k,
        0.002,
    ));
    page.push_str(&requests(
        &[
            ("direction", "outbound"),
            ("tls", "true"),
            ("route", BACKEND_RULE),
            ("dst_service", "demo/backend:80"),
            ("dst_endpoint", "198.18.0.7:8080"),
        ],
        4 * k,
        0.003,
    ));
    page.push_str(&requests(
        &[
            ("direction", "outbound"),
            ("route", BACKEND_RULE),
            ("status_code", "504"),
        ],
        k,
        2.0,
    ));
    page.push_str(&format!(
        "weft_retries_total{{reason=\"status\",route=\"{BACKEND_RULE}\"}} {}\nweft_retries_total{{reason=\"timeout\",route=\"{BACKEND_RULE}\"}} {}\n",
        2 * k,
        k
    ));
    page.push_str(&format!(
        "weft_faults_injected_total{{kind=\"abort\",route=\"{BACKEND_RULE}\"}} {k}\n"
    ));
    page
}

fn read(page: &str) -> Read {
    Read::parse(page).expect("the page parses")
}

/// Two reads of web and api-v1, 2 seconds apart: k went from 10 to 20.
fn observed() -> Observed {
    let window = |page: fn(u64) -> String, ns: &str, pod: &str| {
        let (before, after) = (read(&page(10)), read(&page(20)));
        ProxyWindow {
            namespace: ns.into(),
            pod: pod.into(),
            workload: after.workload.clone().expect("weft_proxy_info"),
            counters: after.counters.since(&before.counters),
        }
    };
    Observed {
        source: "test".into(),
        pods: Some(vec![
            PodInfo {
                namespace: "demo".into(),
                name: "web-5d8f9c7b6-x7k2p".into(),
                workload: Workload::parse("deployment/web"),
                meshed: true,
            },
            PodInfo {
                namespace: "demo".into(),
                name: "api-6c9d8b7f5-q2w4e".into(),
                workload: Workload::parse("deployment/api"),
                meshed: true,
            },
            PodInfo {
                namespace: "demo".into(),
                name: "api-6c9d8b7f5-zz9zz".into(),
                workload: Workload::parse("deployment/api"),
                meshed: false,
            },
        ]),
        proxies: vec![
            window(web_page, "demo", "web-5d8f9c7b6-x7k2p"),
            window(api_page, "demo", "api-6c9d8b7f5-q2w4e"),
        ],
        failed: Vec::new(),
        seconds: 2.0,
        skipped: 0,
    }
}

#[test]
fn a_window_is_the_increase_between_two_reads() {
    let (before, after) = (read(&web_page(10)), read(&web_page(20)));
    let w = after.counters.since(&before.counters);
    let inbound = w.figures(|d, _, _| d == Direction::Inbound);
    // 20 plaintext inbound requests in the window; the one 503 was there before.
    assert_eq!(
        (inbound.requests, inbound.ok, inbound.tls),
        (20.0, 20.0, 0.0)
    );
    let outbound = w.figures(|d, _, _| d == Direction::Outbound);
    assert_eq!((outbound.requests, outbound.tls), (100.0, 100.0));
    // 90 at ≤5ms and 10 at ≤50ms: p50 inside (1ms, 5ms], p95 and p99 inside (10ms, 50ms].
    let p50 = outbound.quantile(0.5).expect("p50");
    assert!((0.001..=0.005).contains(&p50), "{p50}");
    assert!((outbound.quantile(0.95).expect("p95") - 0.03).abs() < 1e-9);
    assert!((outbound.quantile(0.99).expect("p99") - 0.046).abs() < 1e-9);
    assert_eq!(w.figures(|_, _, _| false).quantile(0.5), None);
    assert_eq!(after.workload, Some(Workload::parse("deployment/web")));
    // Bytes are an increase; open connections the level at the later read (60 - 20).
    assert_eq!(
        w.bytes.get(&(Direction::Inbound, Flow::ToServer)),
        Some(&2000.0)
    );
    assert_eq!(
        w.bytes.get(&(Direction::Inbound, Flow::ToClient)),
        Some(&8000.0)
    );
    assert_eq!(w.open.get(&Direction::Inbound), Some(&40.0));
}

#[test]
fn a_counter_that_went_down_was_reset() {
    // The proxy restarted: what it holds now was counted since.
    let w = read(&web_page(3))
        .counters
        .since(&read(&web_page(20)).counters);
    let inbound = w.figures(|d, _, _| d == Direction::Inbound);
    // Series by series, as Prometheus's `increase`: the 200s went from 40 to 6 (reset: 6
    // counted); the 503s hold 1 as before (nothing counted).
    assert_eq!(inbound.requests, 6.0);
    // The latency series carry no status: their total went from 41 down to 7, all counted.
    assert_eq!(inbound.latency.last().map(|b| b.1), Some(7.0));
    // A series gone since counted nothing; one new since counted all it holds.
    let empty = Counters::default();
    assert_eq!(
        empty.since(&read(&web_page(5)).counters),
        Counters::default()
    );
    let all = read(&web_page(5)).counters.since(&empty);
    assert_eq!(all.figures(|_, _, _| true).requests, 61.0);
}

#[test]
fn workloads_pods_and_namespaces_are_measured_by_what_they_served() {
    let obs = observed();
    let report = view::stat_rows(&obs, &Resource::parse("deploy").expect("deploy"), None);
    let rows: Vec<_> = report
        .rows
        .iter()
        .map(|r| {
            (
                r.name.as_str(),
                r.meshed,
                r.pods,
                r.figures.requests,
                r.figures.success,
                r.figures.tls,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("api", Some(1), Some(2), 90.0, Some(1.0), Some(1.0)),
            ("web", Some(1), Some(1), 20.0, Some(1.0), Some(0.0)),
        ]
    );
    assert_eq!(report.rows[0].figures.rps, 45.0);
    let tcp = report.rows[1].tcp.clone().expect("web's connections");
    assert_eq!(
        (
            tcp.open_connections,
            tcp.read_bytes,
            tcp.write_bytes_per_second
        ),
        (40.0, 2000.0, 4000.0)
    );
    let wide = table::stat_table(&report, true);
    assert!(
        wide.contains("TCP_CONN") && wide.contains("1000.0B/s") && wide.contains("4000.0B/s"),
        "{wide}"
    );
    let table = table::stat_table(&report, false);
    assert!(
        table.starts_with("NAMESPACE   NAME   MESHED   SUCCESS"),
        "{table}"
    );
    assert!(
        table.contains("api    1/2      100.00%   45.0rps") && table.contains("0.00%"),
        "{table}"
    );

    let pods = view::stat_rows(&obs, &Resource::parse("po").expect("po"), Some("demo"));
    assert_eq!(pods.rows.len(), 3, "{:?}", pods.rows);
    let unmeshed = &pods.rows[1];
    assert_eq!(
        (
            unmeshed.name.as_str(),
            unmeshed.meshed,
            unmeshed.pods,
            unmeshed.figures.success
        ),
        ("api-6c9d8b7f5-zz9zz", Some(0), Some(1), None)
    );
    let ns = view::stat_rows(&obs, &Resource::parse("ns").expect("ns"), None);
    assert_eq!(ns.rows.len(), 1);
    assert_eq!(
        (ns.rows[0].figures.requests, ns.rows[0].meshed),
        (110.0, Some(2))
    );
    // Another namespace, or a name that is not there: no rows.
    assert!(
        view::stat_rows(&obs, &Resource::parse("ns").expect("ns"), Some("shop"))
            .rows
            .is_empty()
    );
    assert!(
        view::stat_rows(&obs, &Resource::parse("deploy/nope").expect("r"), None)
            .rows
            .is_empty()
    );
    let one = view::stat_rows(&obs, &Resource::parse("workload/web").expect("r"), None);
    assert_eq!(
        (one.rows.len(), one.rows[0].kind.as_str()),
        (1, "deployment")
    );
    // Every kind in one list: the table says which each is.
    let all = view::stat_rows(&obs, &Resource::parse("wl").expect("r"), None);
    let table = table::stat_table(&all, false);
    assert!(
        table.contains("deployment/api ") && table.contains("deployment/web "),
        "{table}"
    );
}

#[test]
fn services_and_routes_are_measured_at_their_callers() {
    let obs = observed();
    let svc = view::stat_rows(&obs, &Resource::parse("svc").expect("svc"), None);
    let by: Vec<(&str, f64, Option<f64>)> = svc
        .rows
        .iter()
        .map(|r| (r.name.as_str(), r.figures.requests, r.figures.success))
        .collect();
    assert_eq!(
        by,
        [
            ("api-v1", 90.0, Some(1.0)),
            ("api-v2", 10.0, Some(1.0)),
            ("backend", 40.0, Some(1.0)),
        ]
    );
    let routes = view::stat_rows(&obs, &Resource::parse("route").expect("route"), None);
    let by: Vec<(&str, f64, Option<f64>, f64)> = routes
        .rows
        .iter()
        .map(|r| {
            (
                r.name.as_str(),
                r.figures.requests,
                r.figures.success,
                r.figures.timeouts,
            )
        })
        .collect();
    // backend's rule: 40 answered, 10 timed out.
    assert_eq!(
        by,
        [
            ("api-canary", 100.0, Some(1.0), 0.0),
            ("backend", 50.0, Some(0.8), 10.0)
        ]
    );
    let canary = view::stat_rows(
        &obs,
        &Resource::parse("httproute/api-canary").expect("r"),
        Some("demo"),
    );
    assert_eq!(canary.rows.len(), 1);
    assert!(
        view::stat_rows(&obs, &Resource::parse("ts").expect("ts"), None)
            .rows
            .is_empty()
    );
}

#[test]
fn the_outbound_view_has_each_route_then_its_backends_with_timeouts_and_retries() {
    let obs = observed();
    let report = view::outbound_rows(&obs, &Resource::parse("deploy").expect("deploy"), None);
    let rows: Vec<_> = report
        .rows
        .iter()
        .map(|r| {
            (
                r.name.as_str(),
                r.route.as_str(),
                r.backend.as_deref(),
                r.figures.requests,
                r.figures.timeouts.into(),
                r.retries,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (
                "deployment/api",
                BACKEND_RULE,
                None,
                50.0,
                Some(10.0),
                Some(30.0)
            ),
            (
                "deployment/api",
                BACKEND_RULE,
                Some(""),
                10.0,
                Some(10.0),
                None
            ),
            (
                "deployment/api",
                BACKEND_RULE,
                Some("demo/backend:80"),
                40.0,
                Some(0.0),
                None
            ),
            ("deployment/web", CANARY, None, 100.0, Some(0.0), Some(0.0)),
            (
                "deployment/web",
                CANARY,
                Some("demo/api-v1:80"),
                90.0,
                Some(0.0),
                None
            ),
            (
                "deployment/web",
                CANARY,
                Some("demo/api-v2:80"),
                10.0,
                Some(0.0),
                None
            ),
        ]
    );
    assert_eq!(report.rows[0].faults, Some(10.0));
    assert_eq!(report.rows[0].figures.success, Some(0.8));
    let table = table::outbound_table(&report, true);
    assert!(
        table.contains("├─► (proxy)") && table.contains("└─► demo/backend:80"),
        "{table}"
    );
    // Timeouts and retries as shares of the route's requests: 10 and 30 of 50.
    let route_line = table.lines().nth(1).expect("the route's line");
    assert!(
        route_line.contains("20.00%")
            && route_line.contains("60.00%")
            && route_line.contains("1.00s"),
        "{table}"
    );
    let web = view::outbound_rows(&obs, &Resource::parse("deploy/web").expect("r"), None);
    assert_eq!(web.rows.len(), 3);
    let json = serde_json::to_value(&web).expect("json");
    assert_eq!(json["rows"][1]["backend"], "demo/api-v1:80");
    assert_eq!(json["rows"][1]["requests"], 90.0);
    assert_eq!(json["rows"][1]["rps"], 45.0);
}

#[test]
fn a_pod_that_cannot_be_read_is_named_and_its_rows_are_partial() {
    let targets = [
        Target {
            namespace: "demo".into(),
            pod: "web".into(),
            workload: None,
        },
        Target {
            namespace: "demo".into(),
            pod: "broken".into(),
            workload: Some(Workload::parse("deployment/api")),
        },
        Target {
            namespace: "demo".into(),
            pod: "garbled".into(),
            workload: None,
        },
    ];
    let mut reads = 0;
    let obs = scrape::observe_twice(&targets, Duration::ZERO, &mut |t| {
        reads += 1;
        match t.pod.as_str() {
            "web" => Ok(web_page(reads)),
            "broken" => Err("connect to 198.18.0.9:15190 timed out".into()),
            _ => Ok("weft_requests_total{ 1\n".into()),
        }
    });
    assert_eq!(obs.proxies.len(), 1);
    assert_eq!(obs.proxies[0].workload, Workload::parse("deployment/web"));
    let errors: Vec<(&str, &str)> = obs
        .failed
        .iter()
        .map(|f| (f.pod.as_str(), f.error.as_str()))
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].1.contains("timed out"), "{errors:?}");
    assert!(
        errors[1].1.contains("does not parse") && errors[1].1.contains("line 1"),
        "{errors:?}"
    );
    let report = view::stat_rows(&obs, &Resource::parse("deploy").expect("r"), None);
    let api = report
        .rows
        .iter()
        .find(|r| r.name == "api")
        .expect("api's row");
    assert!(api.partial && api.figures.success.is_none());
    let table = table::stat_table(&report, false);
    assert!(
        table.contains("api (partial)")
            && table.contains("partial: pod demo/broken could not be read: connect to"),
        "{table}"
    );
}

#[test]
fn the_promql_sums_each_series_by_pod_over_the_window() {
    let q = prom::queries(Duration::from_secs(60), Some("de\"mo"));
    assert_eq!(
        q.requests,
        "sum by (namespace, pod, direction, tls, route, dst_service, status_code) \
         (increase(weft_requests_total{namespace=\"de\\\"mo\"}[60s]))"
    );
    assert_eq!(
        q.latency,
        "sum by (namespace, pod, direction, route, dst_service, le) \
         (increase(weft_request_duration_seconds_bucket{namespace=\"de\\\"mo\"}[60s]))"
    );
    assert_eq!(
        q.open,
        "sum by (namespace, pod, direction) (weft_tcp_connections_opened_total{namespace=\"de\\\"mo\"} \
         - weft_tcp_connections_closed_total{namespace=\"de\\\"mo\"})"
    );
    let all = prom::queries(Duration::from_secs(300), None);
    assert_eq!(
        all.retries,
        "sum by (namespace, pod, route) (increase(weft_retries_total[300s]))"
    );
    assert_eq!(
        all.info,
        "max by (namespace, pod, workload_kind, workload) \
         (max_over_time(weft_proxy_info[300s]))"
    );
    let p = prom::Prometheus::parse("http://127.0.0.1:9090/prom/").expect("url");
    assert_eq!(
        p.query_path("sum(x{a=\"b\"})"),
        "/prom/api/v1/query?query=sum%28x%7Ba%3D%22b%22%7D%29"
    );
    assert_eq!(
        prom::Prometheus::parse("http://prometheus")
            .expect("url")
            .authority,
        "prometheus:80"
    );
    for (bad, says) in [
        ("https://p:9090", "https is not supported"),
        ("127.0.0.1:9090", "not an http:// URL"),
        ("http://user@p:9090", "is not a host[:port]"),
        ("http://", "is not a host[:port]"),
    ] {
        let e = prom::Prometheus::parse(bad).expect_err(bad);
        assert!(e.contains(says), "{bad}: {e}");
    }
}

#[test]
fn prometheus_answers_make_the_same_rows_as_direct_reads() {
    // What Prometheus answers for web's window (as increases), in its JSON.
    let answer = |result: &str| {
        format!(r#"{{"status":"success","data":{{"resultType":"vector","result":[{result}]}}}}"#)
    };
    let sample = |labels: &str, v: &str| {
        format!(
            r#"{{"metric":{{"namespace":"demo","pod":"web-1",{labels}}},"value":[1700000000.1,"{v}"]}}"#
        )
    };
    let requests = prom::parse_vector(&answer(&[
        sample(
            &format!(r#""direction":"outbound","tls":"true","route":"{CANARY}","dst_service":"demo/api-v1:80","status_code":"200""#),
            "90",
        ),
        sample(
            &format!(r#""direction":"outbound","tls":"true","route":"{CANARY}","dst_service":"demo/api-v2:80","status_code":"200""#),
            "10",
        ),
        sample(r#""direction":"inbound","tls":"false","route":"","dst_service":"","status_code":"503""#, "5"),
        sample(r#""direction":"inbound","tls":"false","route":"","dst_service":"","status_code":"200""#, "15"),
    ]
    .join(",")))
    .expect("requests");
    let latency = prom::parse_vector(&answer(
        &[
            sample(
                r#""direction":"inbound","route":"","dst_service":"","le":"0.001""#,
                "10",
            ),
            sample(
                r#""direction":"inbound","route":"","dst_service":"","le":"+Inf""#,
                "20",
            ),
            sample(
                r#""direction":"inbound","route":"","dst_service":"","le":"0.01""#,
                "20",
            ),
        ]
        .join(","),
    ))
    .expect("latency");
    let info = prom::parse_vector(&answer(&[
        sample(r#""workload_kind":"deployment","workload":"web""#, "1"),
        r#"{"metric":{"namespace":"demo","pod":"idle-1","workload_kind":"deployment","workload":"idle"},"value":[1,"1"]}"#.to_string(),
    ]
    .join(",")))
    .expect("info");
    let bytes = prom::parse_vector(&answer(
        &[
            sample(r#""direction":"inbound","flow":"to_server""#, "2000"),
            sample(r#""direction":"inbound","flow":"to_client""#, "8000"),
        ]
        .join(","),
    ))
    .expect("bytes");
    let open = prom::parse_vector(&answer(&sample(r#""direction":"inbound""#, "3")))
        .expect("open connections");
    let mut obs = prom::assemble(&prom::Answers {
        requests: &requests,
        latency: &latency,
        bytes: &bytes,
        open: &open,
        info: &info,
        ..prom::Answers::default()
    });
    obs.seconds = 10.0;
    let report = view::stat_rows(&obs, &Resource::parse("deploy").expect("r"), None);
    let rows: Vec<_> = report
        .rows
        .iter()
        .map(|r| {
            (
                r.name.as_str(),
                r.meshed,
                r.pods,
                r.figures.requests,
                r.figures.success,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("idle", Some(1), None, 0.0, None),
            ("web", Some(1), None, 20.0, Some(0.75))
        ]
    );
    let web = &report.rows[1].figures;
    assert_eq!(web.rps, 2.0);
    let tcp = report.rows[1].tcp.clone().expect("web's connections");
    assert_eq!(
        (
            tcp.open_connections,
            tcp.read_bytes_per_second,
            tcp.write_bytes
        ),
        (3.0, 200.0, 8000.0)
    );
    // Half at ≤1ms: p50 is the first bucket's bound.
    assert_eq!(web.latency_ms_p50, Some(1.0));
    let table = table::stat_table(&report, false);
    // Prometheus knows the meshed pods only: MESHED is a count, not x/y.
    let idle: Vec<&str> = table
        .lines()
        .find(|l| l.contains("idle"))
        .expect("idle's line")
        .split_whitespace()
        .collect();
    assert_eq!(idle[..5], ["demo", "idle", "1", "-", "0.0rps"], "{table}");
    let out = view::outbound_rows(&obs, &Resource::parse("deploy/web").expect("r"), None);
    assert_eq!(out.rows[1].figures.requests, 90.0);

    let error = r#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#;
    let e = prom::parse_vector(error).expect_err("an error").to_string();
    assert!(
        e.contains("bad_data") && e.contains("parse error at char 5"),
        "{e}"
    );
    let e = prom::parse_vector("<html>")
        .expect_err("not json")
        .to_string();
    assert!(e.contains("not JSON") && e.contains("<html>"), "{e}");
    let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
    assert!(prom::parse_vector(matrix).is_err());
}

#[test]
fn the_api_server_path_of_a_proxy_and_the_pods_that_have_one() {
    assert_eq!(
        cluster::metrics_path("demo", "web-5d8f9c7b6-x7k2p").expect("path"),
        "/api/v1/namespaces/demo/pods/web-5d8f9c7b6-x7k2p:15190/proxy/metrics"
    );
    for (ns, pod) in [
        ("de/mo", "web"),
        ("demo", "../x"),
        ("demo", "a?b"),
        ("", "web"),
    ] {
        assert!(cluster::metrics_path(ns, pod).is_err(), "{ns} {pod}");
    }
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": "api-6c9d8b7f5-q2w4e", "namespace": "shop",
            "labels": {"pod-template-hash": "6c9d8b7f5"},
            "annotations": {"weft.dev/injected": "0.1.0"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "api-6c9d8b7f5", "uid": "u", "controller": true}]
        },
        "spec": {"containers": [{"name": "api"}],
                 "initContainers": [{"name": "weft-proxy", "restartPolicy": "Always"}]},
        "status": {"phase": "Running"}
    }))
    .expect("a pod");
    let info = cluster::pod_info(&pod).expect("a running pod");
    assert!(info.meshed);
    assert_eq!(info.workload, Workload::parse("deployment/api"));
    let mut pending = pod.clone();
    pending.status = None;
    assert_eq!(cluster::pod_info(&pending), None);
    let mut plain = pod;
    plain.metadata.annotations = None;
    plain.spec = Some(k8s_openapi::api::core::v1::PodSpec::default());
    assert!(!cluster::pod_info(&plain).expect("running").meshed);
}

#[test]
fn the_source_is_the_one_named_else_the_only_lab_else_the_kubeconfig() {
    let common =
        |prometheus: Option<&str>, lab: Option<&str>, kubeconfig: Option<&str>| CommonArgs {
            window: None,
            output: "table".into(),
            prometheus: prometheus.map(|p| prom::Prometheus::parse(p).expect("a URL")),
            lab: lab.map(str::to_string),
            kubeconfig: kubeconfig.map(Into::into),
            max_pods: 200,
        };
    let labs = || Ok(vec!["demo".to_string()]);
    assert!(matches!(
        super::choose(&common(Some("http://127.0.0.1:9090"), None, None), labs),
        Ok(Source::Prometheus(_))
    ));
    assert_eq!(
        super::choose(&common(None, None, None), labs).expect("the lab"),
        Source::Lab("demo".into())
    );
    assert_eq!(
        super::choose(&common(None, None, None), || Ok(Vec::new())).expect("kubeconfig"),
        Source::Cluster(None)
    );
    let e = super::choose(&common(None, None, None), || {
        Ok(vec!["a".into(), "b".into()])
    })
    .expect_err("ambiguous")
    .to_string();
    assert!(
        e.contains("several labs run (a, b)") && e.contains("--lab"),
        "{e}"
    );
    let e = super::choose(&common(Some("http://p:1"), Some("demo"), None), labs)
        .expect_err("two sources")
        .to_string();
    assert!(e.contains("one source"), "{e}");
    assert_eq!(
        super::choose(&common(None, None, Some("/k")), labs).expect("kubeconfig"),
        Source::Cluster(Some("/k".into()))
    );
    // The registry is read only when no flag names a source; unreadable, it is an error then.
    let broken = || Err(anyhow::anyhow!("read /run/weft-lab/x.json: not JSON"));
    let e = super::choose(&common(None, None, None), broken)
        .expect_err("no source")
        .to_string();
    assert!(e.contains("x.json"), "{e}");
    assert_eq!(
        super::choose(&common(None, Some("demo"), None), broken).expect("the lab named"),
        Source::Lab("demo".into())
    );
}

#[test]
fn a_labs_meshed_pods_are_read_up_to_the_cap_and_the_rest_counted() {
    let pod =
        |ns: &str, name: &str, meshed: bool, workload: Option<&str>| weft_lab::registry::PodEntry {
            namespace: ns.into(),
            name: name.into(),
            netns: format!("weft-lab-1-0-{ns}-{name}"),
            ip: "198.18.0.9".into(),
            identity: meshed.then(|| format!("spiffe://cluster.local/ns/{ns}/sa/{name}")),
            ports: vec![8080],
            workload: workload.map(str::to_string),
        };
    let lab = weft_lab::registry::LabEntry {
        name: "t".into(),
        pid: 1,
        folder: "/tmp/f".into(),
        node: "weft-lab-1-0-node".into(),
        dir: "/tmp/d".into(),
        pods: vec![
            pod("shop", "api-b866h6vnlx-drd6x", true, Some("deployment/api")),
            pod("shop", "api-b866h6vnlx-bdjmt", true, Some("deployment/api")),
            pod("shop", "plain", false, None),
            pod("ops", "collector", true, None),
        ],
    };
    let (pods, targets, skipped) = scrape::lab_targets(&lab, Some("shop"), 1);
    assert_eq!(pods.len(), 3, "every pod of the namespace, meshed or not");
    assert_eq!(pods[0].workload, Workload::parse("deployment/api"));
    assert_eq!(pods[2].workload, Workload::parse("pod/plain"));
    assert_eq!((targets.len(), skipped), (1, 1));
    let (_, all, none) = scrape::lab_targets(&lab, None, 200);
    assert_eq!((all.len(), none), (3, 0));
    let obs = Observed {
        pods: Some(pods),
        skipped,
        seconds: 1.0,
        ..Observed::default()
    };
    let report = view::stat_rows(&obs, &Resource::parse("deploy").expect("r"), None);
    let table = table::stat_table(&report, false);
    assert!(
        table.contains("partial: 1 meshed pods were not read (more than --max-pods)"),
        "{table}"
    );
    assert_eq!(
        serde_json::to_value(&report).expect("json")["skipped_pods"],
        1
    );
}
