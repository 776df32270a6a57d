//! Canary splits and L7 routes end to end, through `weftctl lab`'s engine (`LabRun`): real
//! proxies in pod namespaces, the control plane in local mode on the folder, the echo app
//! naming the pod that answered. One lab, phase after phase:
//! a 90/10 HTTPRoute split over 2,000 requests within the binomial 99.99 % interval; a header
//! match always reaching v2; a query parameter match; a redirect (scheme, host, prefix path,
//! status, query kept) answered by the proxy; a pod's own address never routed; header modifiers and a prefix rewrite seen by the app and a
//! response header by the client; a mirror's copy reaching its backend and a failing mirror
//! not touching the client; a consumer route applying to its own namespace's clients only; an
//! invalid route refused by file and field with the last good routes kept; a weight change to
//! 0/100 taking effect within a second under 50 requests/s with no failed request; and SMI
//! TrafficSplits (v1alpha4, v1alpha2) splitting as the same HTTPRoute does, opaque TCP per
//! connection too.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use weft_lab::{netns::Netns, wait};

mod support;

use support::lab_run::{interval, metric, Lab};

const API: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(198, 19, 0, 30)), 80);

const FOLDER: &str = r#"apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {weft.dev/inject: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: ops, labels: {weft.dev/inject: enabled}}
---
apiVersion: v1
kind: Pod
metadata: {name: api-v1, namespace: shop, labels: {app: api, version: v1}}
spec: {serviceAccountName: api, containers: [{name: api, image: api, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: api-v2, namespace: shop, labels: {app: api, version: v2}}
spec: {serviceAccountName: api, containers: [{name: api, image: api, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: shadow, namespace: shop, labels: {app: shadow}}
spec: {serviceAccountName: shadow, containers: [{name: shadow, image: shadow, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop}
spec: {serviceAccountName: web, containers: [{name: web, image: web}]}
---
apiVersion: v1
kind: Pod
metadata: {name: raw, namespace: shop, annotations: {weft.dev/opaque-ports: "80"}}
spec: {serviceAccountName: raw, containers: [{name: raw, image: raw}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: ops}
spec: {serviceAccountName: client, containers: [{name: client, image: client}]}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec: {clusterIP: 198.19.0.30, selector: {app: api}, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: api-v1, namespace: shop}
spec: {clusterIP: 198.19.0.31, selector: {app: api, version: v1}, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: api-v2, namespace: shop}
spec: {clusterIP: 198.19.0.32, selector: {app: api, version: v2}, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: shadow, namespace: shop}
spec: {clusterIP: 198.19.0.33, selector: {app: shadow}, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: nowhere, namespace: shop}
spec: {clusterIP: 198.19.0.34, selector: {app: nothing}, ports: [{name: http, port: 80, targetPort: 8080}]}
"#;

/// The producer routes of `api`, with the default rule's weights.
fn routes(v1: u32, v2: u32) -> String {
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api, namespace: shop}}
spec:
  parentRefs: [{{group: "", kind: Service, name: api, port: 80}}]
  rules:
  - matches: [{{headers: [{{name: x-canary, value: "1"}}]}}]
    backendRefs: [{{name: api-v2, port: 80}}]
  - name: by-query
    matches: [{{queryParams: [{{name: env, value: canary}}]}}]
    backendRefs: [{{name: api-v2, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /old}}}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {{scheme: https, hostname: shop.example, path: {{type: ReplacePrefixMatch, replacePrefixMatch: /new}}, statusCode: 301}}
  - matches: [{{path: {{type: PathPrefix, value: /rewrite}}}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {{set: [{{name: x-added, value: "yes"}}]}}
    - type: URLRewrite
      urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /rewritten}}}}
    - type: ResponseHeaderModifier
      responseHeaderModifier: {{add: [{{name: x-route, value: rewrite}}]}}
    backendRefs: [{{name: api-v1, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /mirror}}}}]
    filters:
    - type: RequestMirror
      requestMirror: {{backendRef: {{name: shadow, port: 80}}}}
    backendRefs: [{{name: api-v1, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /broken-mirror}}}}]
    filters:
    - type: RequestMirror
      requestMirror: {{backendRef: {{name: nowhere, port: 80}}}}
    backendRefs: [{{name: api-v1, port: 80}}]
  - backendRefs: [{{name: api-v1, port: 80, weight: {v1}}}, {{name: api-v2, port: 80, weight: {v2}}}]
"#
    )
}

/// A route of the `ops` namespace's own for `shop/api`: everything to api-v1.
const CONSUMER: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api-for-ops, namespace: ops}
spec:
  parentRefs: [{group: "", kind: Service, name: api, namespace: shop, port: 80}]
  rules:
  - backendRefs: [{name: api-v1, namespace: shop, port: 80}]
"#;

const BAD: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: broken, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: api-v1, port: 80}]
  rules:
  - matches: [{path: {type: RegularExpression, value: "/a("}}]
    backendRefs: [{name: api-v1, port: 80}]
"#;

fn split(version: &str, v1: &str, v2: &str) -> String {
    format!(
        "apiVersion: split.smi-spec.io/{version}\nkind: TrafficSplit\n\
         metadata: {{name: api, namespace: shop}}\n\
         spec:\n  service: api\n  backends:\n  - {{service: api-v1, weight: {v1}}}\n  - {{service: api-v2, weight: {v2}}}\n"
    )
}

/// When a request was answered, and by which pod (or why it failed).
type Answered = (Instant, Result<String, String>);

/// The answering pod's JSON for `GET path` to `api`.
fn get(from: &Netns, path: &str, headers: &[(&str, &str)]) -> serde_json::Value {
    let reply = weft_lab::http::get_with(from, API, "api.shop.svc.cluster.local", path, headers)
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(reply.status, 200, "GET {path}: {reply:?}");
    let mut json: serde_json::Value =
        serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("{e}: {}", reply.body));
    json["__response_headers"] = serde_json::json!(reply.headers);
    json
}

/// How many of `n` requests to `api` api-v2 answered.
fn count_v2(from: &Netns, n: usize, tag: &str) -> usize {
    (0..n)
        .filter(|i| get(from, &format!("/{tag}/{i}"), &[])["pod"] == "api-v2")
        .count()
}

/// A request header as the echo app saw it (any case).
fn seen_header<'a>(json: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    json["headers"]
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.get(0)?.as_str())
}

#[test]
fn routes_split_match_filter_mirror_and_follow_edits() {
    let Some(mut lab) = Lab::start(
        "routes through the lab",
        "routes",
        &[
            ("mesh.yaml", FOLDER),
            ("routes.yaml", &routes(90, 10)),
            ("consumer.yaml", CONSUMER),
        ],
    ) else {
        return;
    };
    let web = lab.netns("shop", "web");

    // The default rule splits 90/10.
    let n = 2000;
    let v2 = count_v2(&web, n, "split");
    let (low, high) = interval(n, 0.1);
    println!("90/10 over {n} requests: {v2} to api-v2 (99.99 % interval {low}-{high})");
    assert!(
        (low..=high).contains(&v2),
        "{v2} of {n} to api-v2, expected {low}-{high}"
    );

    // Each request is counted with the rule that chose it and the backend it went to, so a
    // canary's share is read from the metrics (the default rule is the route's seventh).
    let by_rule = |backend: &str| {
        metric(
            &web,
            "weft_requests_total",
            &[
                ("direction", "outbound"),
                ("route", "httproute/shop/api/rule/6"),
                ("dst_service", backend),
                ("status_code", "200"),
            ],
        ) as usize
    };
    assert_eq!(by_rule("shop/api-v2:80"), v2, "api-v2's requests by rule");
    assert_eq!(
        by_rule("shop/api-v1:80"),
        n - v2,
        "api-v1's requests by rule"
    );
    // `/config` shows the routes the client's proxy holds, with the rule's weights.
    let config = weft_lab::http::get(
        &web,
        SocketAddr::from((Ipv4Addr::LOCALHOST, 15190)),
        "localhost",
        "/config",
    )
    .expect("GET /config");
    let config: serde_json::Value = serde_json::from_str(&config.body).expect("JSON");
    let api = config["destinations"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["service"] == "shop/api:80"))
        .unwrap_or_else(|| panic!("shop/api:80 in {config:#}"));
    assert_eq!(
        api["routes"]["names"],
        serde_json::json!(["httproute/shop/api"]),
        "{api:#}"
    );
    let default_rule = api["routes"]["rules"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "httproute/shop/api/rule/6"))
        .unwrap_or_else(|| panic!("the default rule in {api:#}"));
    assert_eq!(
        default_rule["backends"],
        serde_json::json!([
            {"service": "shop/api-v1:80", "weight": 90},
            {"service": "shop/api-v2:80", "weight": 10},
        ]),
        "{default_rule:#}"
    );

    // A header match always reaches v2.
    for i in 0..20 {
        let json = get(&web, &format!("/canary/{i}"), &[("x-canary", "1")]);
        assert_eq!(json["pod"], "api-v2", "{json}");
    }

    // A query parameter match (a named rule), and a redirect answered by the proxy.
    for i in 0..10 {
        let json = get(&web, &format!("/q/{i}?env=canary"), &[]);
        assert_eq!(json["pod"], "api-v2", "{json}");
    }
    let redirect = weft_lab::http::get(&web, API, "api", "/old/page?x=1").expect("GET /old");
    assert_eq!(redirect.status, 301, "{redirect:?}");
    assert_eq!(
        redirect.header("location"),
        Some("https://shop.example/new/page?x=1"),
        "{redirect:?}"
    );
    // Traffic to a pod's own address is never routed.
    let pod_ip: Ipv4Addr = lab
        .run
        .entry()
        .pod("shop", "api-v1")
        .expect("api-v1")
        .ip
        .parse()
        .expect("an IP");
    let direct = weft_lab::http::get(
        &web,
        SocketAddr::from((pod_ip, 8080)),
        "api-v1",
        "/old/page",
    )
    .expect("GET the pod");
    assert_eq!(direct.status, 200, "{direct:?}");

    // Header modifier and prefix rewrite seen by the app, a response header by the client.
    let json = get(&web, "/rewrite/cart?id=7", &[]);
    assert_eq!(json["pod"], "api-v1", "{json}");
    assert_eq!(json["path"], "/rewritten/cart?id=7", "{json}");
    assert_eq!(seen_header(&json, "x-added"), Some("yes"), "{json}");
    assert!(
        json["__response_headers"]
            .as_array()
            .is_some_and(|h| h.iter().any(|p| p[0] == "x-route" && p[1] == "rewrite")),
        "{json}"
    );

    // A mirror's copy reaches its backend; a failing mirror does not touch the client.
    let shadow = lab.netns("shop", "shadow");
    for i in 0..5 {
        assert_eq!(get(&web, &format!("/mirror/{i}"), &[])["pod"], "api-v1");
    }
    wait::until(
        "the shadow to serve the copies",
        Duration::from_secs(5),
        || {
            (metric(&shadow, "weft_requests_total", &[("direction", "inbound")]) >= 5.0)
                .then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for i in 0..5 {
        assert_eq!(
            get(&web, &format!("/broken-mirror/{i}"), &[])["pod"],
            "api-v1"
        );
    }
    wait::until(
        "the failed copies to be counted",
        Duration::from_secs(5),
        || {
            (metric(&web, "weft_mirror_requests_total", &[("result", "failed")]) >= 5.0)
                .then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));

    // The consumer route applies to its namespace's clients only.
    let ops = lab.netns("ops", "client");
    for i in 0..40 {
        assert_eq!(
            get(&ops, &format!("/ops/{i}"), &[])["pod"],
            "api-v1",
            "ops' own route"
        );
    }
    assert!(
        count_v2(&web, 100, "shop") > 0,
        "shop's clients keep the producer split"
    );

    // An invalid route is refused by file and field; the last good routes stay.
    std::fs::write(lab.dir().join("zz-bad.yaml"), BAD).expect("write");
    wait::until("the refusal", Duration::from_secs(10), || {
        lab.poll();
        lab.events
            .iter()
            .find(|e| e.starts_with("refused") && e.contains("zz-bad.yaml"))
            .cloned()
    })
    .map(|e| assert!(e.contains("rules[0].matches[0].path"), "{e}"))
    .unwrap_or_else(|e| panic!("{e}: {:#?}", lab.events));
    assert_eq!(get(&web, "/still", &[("x-canary", "1")])["pod"], "api-v2");
    // Removing it brings back the set in force: nothing to apply.
    std::fs::remove_file(lab.dir().join("zz-bad.yaml")).expect("remove");
    for _ in 0..3 {
        assert!(!lab.poll(), "the set in force is unchanged");
        thread::sleep(Duration::from_millis(100));
    }

    // A weight change under 50 requests/s: in force within a second, no request failing.
    let seen: Arc<Mutex<Vec<Answered>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let client = {
        let (seen, done) = (seen.clone(), done.clone());
        let ns_name = lab
            .run
            .entry()
            .pod("shop", "web")
            .expect("web")
            .netns
            .clone();
        thread::spawn(move || {
            let ns = Netns::attach(&ns_name).expect("web");
            let start = Instant::now();
            let mut next = start;
            while !done.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(30) {
                let r = weft_lab::http::get(&ns, API, "api", "/live")
                    .map_err(|e| e.to_string())
                    .and_then(|r| {
                        if r.status != 200 {
                            return Err(format!("status {}", r.status));
                        }
                        let json: serde_json::Value =
                            serde_json::from_str(&r.body).map_err(|e| e.to_string())?;
                        Ok(json["pod"].as_str().unwrap_or("").to_string())
                    });
                seen.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((Instant::now(), r));
                next += Duration::from_millis(20);
                thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        })
    };
    thread::sleep(Duration::from_secs(1));
    let written = Instant::now();
    std::fs::write(lab.dir().join("routes.yaml"), routes(0, 100)).expect("write");
    let poll_start = Instant::now();
    while poll_start.elapsed() < Duration::from_secs(3) {
        lab.poll();
        thread::sleep(Duration::from_millis(50));
    }
    done.store(true, Ordering::Relaxed);
    client.join().expect("the client");
    let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let failed: Vec<_> = seen.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    let last_v1 = seen
        .iter()
        .filter(|(_, r)| r.as_deref() == Ok("api-v1"))
        .map(|(t, _)| *t)
        .max()
        .expect("api-v1 answered before the edit");
    let took = last_v1.saturating_duration_since(written);
    println!(
        "0/100 in force {took:?} after the write ({} requests, none failed)",
        seen.len()
    );
    assert!(
        took < Duration::from_secs(1),
        "api-v1 still answered {took:?} after the edit"
    );
    assert!(seen
        .iter()
        .rev()
        .take(20)
        .all(|(_, r)| r.as_deref() == Ok("api-v2")));

    // TrafficSplits split as the same HTTPRoute does (the HTTPRoute would shadow them).
    lab.edit("consumer.yaml", None);
    lab.edit("routes.yaml", None);
    for (version, v1, v2) in [("v1alpha4", "90", "10"), ("v1alpha2", "900m", "100m")] {
        lab.edit("split.yaml", Some(&split(version, v1, v2)));
        // The canary header means nothing to a TrafficSplit: wait until the old route is gone.
        wait::until(
            "the split to replace the route",
            Duration::from_secs(5),
            || {
                (0..20)
                    .any(|_| get(&web, "/", &[("x-canary", "1")])["pod"] == "api-v1")
                    .then_some(())
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let n = 1000;
        let v2 = count_v2(&web, n, version);
        let (low, high) = interval(n, 0.1);
        println!("TrafficSplit {version} 90/10 over {n}: {v2} to api-v2 ({low}-{high})");
        assert!(
            (low..=high).contains(&v2),
            "{version}: {v2} of {n}, expected {low}-{high}"
        );
    }
    // Opaque TCP (port 80 is opaque to `raw`'s proxy): the split's weights per connection.
    let raw = lab.netns("shop", "raw");
    let n = 600;
    let v2 = count_v2(&raw, n, "tcp");
    let (low, high) = interval(n, 0.1);
    println!("TrafficSplit over opaque TCP, {n} connections: {v2} to api-v2 ({low}-{high})");
    assert!(
        (low..=high).contains(&v2),
        "TCP: {v2} of {n}, expected {low}-{high}"
    );
    let raw_http = metric(&raw, "weft_requests_total", &[("direction", "outbound")]);
    assert_eq!(
        raw_http, 0.0,
        "raw's proxy forwarded TCP, not HTTP requests"
    );
}
