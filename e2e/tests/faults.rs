//! Faults, timeouts and retries end to end (issue 16), through `weftctl lab`'s engine: real
//! proxies in pod namespaces, the control plane in local mode on the folder, the echo app's
//! delays, status paths and retry simulator as the backends. One lab, phase after phase:
//!
//! - an HTTPFault aborting 25 % of 2,000 requests falls in the binomial 99.99 % interval, and the
//!   backends' own counters show they never saw the aborted ones;
//! - a 200 ms delay on 50 % splits the latencies at the delay;
//! - a backend failing 30 % of requests with 503: with `retry` the client sees at least 99 %
//!   success (and about 70 % without);
//! - a backend failing every request: the extra load from retries stays within the budget
//!   (20 % of requests plus 10 per second over 10 s), and the budget says it was spent;
//! - `backendRequest` 100 ms against a 300 ms backend with one retry: 504 after two tries
//!   (about 200 ms); `request` 150 ms: 504 after about 150 ms; gRPC gets `DEADLINE_EXCEEDED`;
//! - a POST with a 1 MiB streaming body is never retried, and the count says so;
//! - an HTTPFault on a whole Service (`targetRef`, no route) aborts its requests, and removing
//!   it stops the injection within a second, with no restart.

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    thread,
    time::{Duration, Instant},
};

use weft_lab::netns::Netns;

mod support;

use support::lab_run::{interval, metric, tap, Lab};

/// Service `api` (two pods): the fault and timeout rules.
const API: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 19, 0, 40)), 80);
/// Service `flaky` (one pod, so the retry simulator's count per uuid is the backend's).
const FLAKY: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 19, 0, 41)), 80);
/// Service `doomed` (one pod, no route): the target of a Service-wide HTTPFault.
const DOOMED: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 19, 0, 42)), 80);

const FOLDER: &str = r#"apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {weft.dev/inject: enabled}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec: {serviceAccountName: api, containers: [{name: api, image: api, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: flaky, namespace: shop, labels: {app: flaky}}
spec: {serviceAccountName: flaky, containers: [{name: flaky, image: flaky, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: doomed, namespace: shop, labels: {app: doomed}}
spec: {serviceAccountName: doomed, containers: [{name: doomed, image: doomed, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop}
spec: {serviceAccountName: web, containers: [{name: web, image: web}]}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec: {clusterIP: 198.19.0.40, selector: {app: api}, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: flaky, namespace: shop}
spec: {clusterIP: 198.19.0.41, selector: {app: flaky}, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: doomed, namespace: shop}
spec: {clusterIP: 198.19.0.42, selector: {app: doomed}, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: weft.dev/v1alpha1
kind: HTTPFault
metadata: {name: abort-quarter, namespace: shop}
spec:
  abort: {percent: 25, httpStatus: 503}
---
apiVersion: weft.dev/v1alpha1
kind: HTTPFault
metadata: {name: delay-half, namespace: shop}
spec:
  delay: {percent: 50, fixedDelay: 200ms}
"#;

/// `api`'s rules, chosen by the `x-test` header; `flaky`'s retry rules.
const ROUTES: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: api, port: 80}]
  rules:
  - matches: [{headers: [{name: x-test, value: abort}]}]
    filters: [{type: ExtensionRef, extensionRef: {group: weft.dev, kind: HTTPFault, name: abort-quarter}}]
    backendRefs: [{name: api, port: 80}]
  - matches: [{headers: [{name: x-test, value: delay}]}]
    filters: [{type: ExtensionRef, extensionRef: {group: weft.dev, kind: HTTPFault, name: delay-half}}]
    backendRefs: [{name: api, port: 80}]
  - matches: [{headers: [{name: x-test, value: backend-timeout}]}]
    timeouts: {backendRequest: 100ms}
    retry: {attempts: 1}
    backendRefs: [{name: api, port: 80}]
  - matches: [{headers: [{name: x-test, value: request-timeout}]}]
    timeouts: {request: 150ms}
    backendRefs: [{name: api, port: 80}]
  - backendRefs: [{name: api, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: flaky, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: flaky, port: 80}]
  rules:
  - matches: [{headers: [{name: x-test, value: retry}]}]
    retry: {attempts: 3, codes: [503], backoff: 5ms}
    backendRefs: [{name: flaky, port: 80}]
  - matches: [{headers: [{name: x-test, value: storm}]}]
    retry: {attempts: 3, codes: [503]}
    backendRefs: [{name: flaky, port: 80}]
  - backendRefs: [{name: flaky, port: 80}]
"#;

/// Everything to `doomed` aborted, route or none.
const DOOM: &str = r#"apiVersion: weft.dev/v1alpha1
kind: HTTPFault
metadata: {name: doom, namespace: shop}
spec:
  targetRef: {group: "", kind: Service, name: doomed}
  abort: {percent: 100, httpStatus: 418}
"#;

/// `GET path` to `dst` from `from` with `x-test: test`, timed.
fn call(
    from: &Netns,
    dst: SocketAddr,
    path: &str,
    test: &str,
) -> (weft_lab::http::HttpReply, Duration) {
    let start = Instant::now();
    let reply = weft_lab::http::get_with(from, dst, "svc", path, &[("x-test", test)])
        .unwrap_or_else(|e| panic!("GET {path} ({test}): {e}"));
    (reply, start.elapsed())
}

/// How many requests with `uuid` a pod's echo app has seen (its retry simulator's count),
/// asked at the pod's own address (never routed).
fn seen_by(from: &Netns, pod_ip: Ipv4Addr, uuid: &str) -> u64 {
    let dst = SocketAddr::from((pod_ip, 8080));
    let reply = weft_lab::http::get(from, dst, "pod", &format!("/retry-count?uuid={uuid}"))
        .unwrap_or_else(|e| panic!("the count of {uuid} at {dst}: {e}"));
    let json: serde_json::Value =
        serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("{e}: {}", reply.body));
    json["attempts"].as_u64().unwrap_or(0)
}

fn pod_ip(lab: &Lab, name: &str) -> Ipv4Addr {
    let pod = lab
        .run
        .entry()
        .pod("shop", name)
        .unwrap_or_else(|| panic!("pod {name}"));
    pod.ip
        .parse()
        .unwrap_or_else(|e| panic!("pod {name}'s address {:?}: {e}", pod.ip))
}

/// `POST path` with a chunked body of `size` bytes, sent in 64 KiB chunks (a streaming body
/// of unknown length), and the status answered.
fn post_streaming(from: &Netns, dst: SocketAddr, path: &str, test: &str, size: usize) -> u16 {
    let mut conn = from
        .connect(dst, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {dst}: {e}"));
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: flaky\r\nx-test: {test}\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).expect("the head");
    let chunk = vec![b'x'; 64 * 1024];
    // The server may answer (and close) before it reads the body: a failed write is not the
    // test's concern, the answer is.
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len());
        let framed = [format!("{n:x}\r\n").as_bytes(), &chunk[..n], b"\r\n"].concat();
        if conn.write_all(&framed).is_err() {
            break;
        }
        left -= n;
    }
    let _ = conn.write_all(b"0\r\n\r\n");
    let mut raw = Vec::new();
    let _ = conn.take(1 << 20).read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"))
}

/// A gRPC call (HTTP/2 without TLS, `content-type: application/grpc`) with curl, from `from`:
/// the response head as curl prints it.
fn grpc_call(from: &Netns, dst: SocketAddr, path: &str, test: &str) -> String {
    let url = format!("http://{dst}{path}");
    // An empty gRPC message: not compressed, length 0.
    let body = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(body.path(), [0u8; 5]).expect("write");
    let data = format!("@{}", body.path().display());
    let out = from
        .command("curl")
        .args([
            "-sS",
            "--http2-prior-knowledge",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-D",
            "-",
            "-X",
            "POST",
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            "-H",
        ])
        .arg(format!("x-test: {test}"))
        .args(["--data-binary", &data, &url])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).to_lowercase()
}

#[test]
fn faults_timeouts_and_retries_through_the_lab() {
    let Some(mut lab) = Lab::start(
        "faults, timeouts and retries through the lab",
        "faults",
        &[("mesh.yaml", FOLDER), ("routes.yaml", ROUTES)],
    ) else {
        return;
    };
    let web = lab.netns("shop", "web");
    let api_pods: Vec<Ipv4Addr> = lab
        .run
        .entry()
        .pods
        .iter()
        .filter(|p| p.name.starts_with("api-"))
        .map(|p| pod_ip(&lab, &p.name))
        .collect();
    assert_eq!(api_pods.len(), 2, "{:?}", lab.run.entry().pods);
    let flaky = pod_ip(&lab, "flaky");
    let route_label = |rule: usize| format!("httproute/shop/api/rule/{rule}");

    // Abort 25 % of 2,000 requests; the backends see exactly the others. The first 40 are
    // tapped: an aborted one names its fault.
    let tapped = tap(&web, "path=/retry/a&limit=40", 40);
    let n = 2000;
    let mut aborted = 0;
    for i in 0..n {
        let (reply, _) = call(&web, API, "/retry/a?uuid=aborts&succeedAfter=0", "abort");
        match reply.status {
            200 => {}
            503 => {
                assert_eq!(
                    reply.header("weft-fault"),
                    Some("abort shop/abort-quarter"),
                    "request {i}: {reply:?}"
                );
                aborted += 1;
            }
            other => panic!("request {i}: {other}: {reply:?}"),
        }
    }
    let (low, high) = interval(n, 0.25);
    println!("abort 25 % over {n}: {aborted} aborted (99.99 % interval {low}-{high})");
    let events = tapped.join().expect("the tap");
    assert_eq!(events.len(), 40);
    for e in &events {
        match e["status"].as_u64() {
            Some(503) => assert_eq!(e["fault"], "abort shop/abort-quarter", "{e}"),
            _ => assert!(e.get("fault").is_none(), "{e}"),
        }
    }
    // P(no abort in 40) = 0.75^40, about 1e-5.
    assert!(events.iter().any(|e| e["status"] == 503), "{events:?}");
    assert!((low..=high).contains(&aborted), "{aborted} of {n} aborted");
    let reached: u64 = api_pods.iter().map(|ip| seen_by(&web, *ip, "aborts")).sum();
    assert_eq!(
        reached,
        (n - aborted) as u64,
        "the backends saw only the others"
    );
    assert_eq!(
        metric(
            &web,
            "weft_faults_injected_total",
            &[("kind", "abort"), ("route", &route_label(0))]
        ) as usize,
        aborted
    );

    // Delay 200 ms on half: the latencies split at the delay.
    let n = 100;
    let (mut slow, mut fast_max) = (0, Duration::ZERO);
    for _ in 0..n {
        let (reply, took) = call(&web, API, "/", "delay");
        assert_eq!(reply.status, 200, "{reply:?}");
        if took >= Duration::from_millis(200) {
            slow += 1;
            assert_eq!(reply.header("weft-fault"), Some("delay shop/delay-half"));
        } else {
            fast_max = fast_max.max(took);
            assert_eq!(reply.header("weft-fault"), None, "{reply:?}");
        }
    }
    let (low, high) = interval(n, 0.5);
    println!("delay 200 ms on 50 % over {n}: {slow} delayed, the others at most {fast_max:?}");
    assert!((low..=high).contains(&slow), "{slow} of {n} delayed");
    assert!(
        fast_max < Duration::from_millis(150),
        "an undelayed request took {fast_max:?}"
    );
    assert_eq!(
        metric(
            &web,
            "weft_faults_injected_total",
            &[("kind", "delay"), ("route", &route_label(1))]
        ) as usize,
        slow
    );

    // A backend failing 30 % with 503 (the first try of 3 requests in 10): with retries every
    // request succeeds; without, 30 % fail. At 40 requests/s the budget covers the retries.
    let paced = |n: usize, test: &str, tag: &str| -> usize {
        let start = Instant::now();
        (0..n)
            .filter(|i| {
                let fails = usize::from(i % 10 < 3);
                let path = format!("/retry/x?uuid={tag}-{i}&succeedAfter={fails}&responseCode=503");
                let ok = call(&web, FLAKY, &path, test).0.status == 200;
                let due = start + Duration::from_millis(25) * (*i as u32 + 1);
                thread::sleep(due.saturating_duration_since(Instant::now()));
                ok
            })
            .count()
    };
    let n = 400;
    // The first 50 tapped: the 15 that failed once say they were retried.
    let tapped = tap(&web, "path=/retry/x&limit=50", 50);
    let ok = paced(n, "retry", "r");
    let events = tapped.join().expect("the tap");
    assert_eq!(events.len(), 50);
    let retried = events.iter().filter(|e| e["retries"] == 1).count();
    assert_eq!(
        retried, 15,
        "one retry for each of the 3 in 10 failing first: {events:?}"
    );
    assert!(events.iter().all(|e| e["status"] == 200), "{events:?}");
    println!("30 % failing, with retries: {ok} of {n} succeeded");
    assert!(ok * 100 >= n * 99, "{ok} of {n} succeeded with retries");
    let retries = metric(
        &web,
        "weft_retries_total",
        &[
            ("route", "httproute/shop/flaky/rule/0"),
            ("reason", "status"),
        ],
    );
    assert_eq!(retries as usize, n * 3 / 10, "one retry per failure");
    let ok = paced(100, "none", "p");
    assert_eq!(ok, 70, "without retries 30 of 100 fail");

    // A backend failing everything: retries stay within the budget.
    let n = 400;
    let start = Instant::now();
    for _ in 0..n {
        let (reply, _) = call(
            &web,
            FLAKY,
            "/retry/x?uuid=storm&succeedAfter=1000000&responseCode=503",
            "storm",
        );
        assert_eq!(reply.status, 503, "{reply:?}");
    }
    let seconds = start.elapsed().as_secs_f64();
    let tries = seen_by(&web, flaky, "storm");
    let extra = tries - n as u64;
    // 20 % of the requests plus 10 per second over the 10 s window (at most the whole window
    // when the run took less).
    let allowed = (n as f64 * 0.2 + 10.0 * seconds.max(10.0)).ceil() as u64;
    println!("100 % failing: {n} requests made {tries} tries in {seconds:.1}s (budget {allowed})");
    assert!(
        extra <= allowed,
        "{extra} retries, the budget allows {allowed}"
    );
    assert!(extra < n as u64 * 3, "retries were capped");
    assert!(
        metric(
            &web,
            "weft_retry_budget_exhausted_total",
            &[("route", "httproute/shop/flaky/rule/1")]
        ) > 0.0,
        "the budget says it was spent"
    );

    // backendRequest 100 ms against a 300 ms backend, one retry: 504 after two tries.
    for _ in 0..3 {
        let (reply, took) = call(&web, API, "/?delay=300ms", "backend-timeout");
        assert_eq!(reply.status, 504, "{reply:?}");
        let why = reply.header("weft-proxy-error").unwrap_or_default();
        assert!(why.contains("backendRequest"), "{reply:?}");
        assert!(took >= Duration::from_millis(200), "504 after {took:?}");
        println!("backendRequest 100 ms x 2 tries: 504 after {took:?}");
    }
    assert_eq!(
        metric(
            &web,
            "weft_retries_total",
            &[("route", &route_label(2)), ("reason", "timeout")]
        ),
        3.0
    );
    // request 150 ms: 504 after about 150 ms.
    for _ in 0..3 {
        let (reply, took) = call(&web, API, "/?delay=300ms", "request-timeout");
        assert_eq!(reply.status, 504, "{reply:?}");
        let why = reply.header("weft-proxy-error").unwrap_or_default();
        assert!(why.contains("request timeout"), "{reply:?}");
        assert!(took >= Duration::from_millis(150), "504 after {took:?}");
        println!("request 150 ms: 504 after {took:?}");
    }
    // gRPC: DEADLINE_EXCEEDED (4) as trailers-only.
    let head = grpc_call(&web, API, "/grpc.Test/Slow?delay=300ms", "request-timeout");
    assert!(head.starts_with("http/2 200"), "{head}");
    assert!(head.contains("grpc-status: 4"), "{head}");

    // A POST with a 1 MiB streaming body is never retried; the count says so.
    let status = post_streaming(
        &web,
        FLAKY,
        "/retry/x?uuid=big&succeedAfter=1&responseCode=503",
        "retry",
        1 << 20,
    );
    assert_eq!(status, 503, "not retried");
    assert_eq!(seen_by(&web, flaky, "big"), 1, "tried once");
    assert_eq!(
        metric(
            &web,
            "weft_retries_skipped_total",
            &[("route", "httproute/shop/flaky/rule/0"), ("reason", "body")]
        ),
        1.0
    );

    // A fault on a whole Service (no route): every request aborted; removing it stops the
    // injection within a second, no restart.
    assert_eq!(call(&web, DOOMED, "/", "").0.status, 200);
    lab.edit("doom.yaml", Some(DOOM));
    let start = Instant::now();
    loop {
        let (reply, _) = call(&web, DOOMED, "/", "");
        if reply.status == 418 {
            assert_eq!(reply.header("weft-fault"), Some("abort shop/doom"));
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "never aborted: {reply:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..20 {
        assert_eq!(call(&web, DOOMED, "/", "").0.status, 418);
    }
    let written = Instant::now();
    lab.edit("doom.yaml", None);
    let took = loop {
        let (reply, _) = call(&web, DOOMED, "/", "");
        if reply.status == 200 {
            break written.elapsed();
        }
        assert!(
            written.elapsed() < Duration::from_secs(5),
            "still aborted: {reply:?}"
        );
        thread::sleep(Duration::from_millis(20));
    };
    println!("the fault removed: requests succeed {took:?} after the edit");
    assert!(took < Duration::from_secs(1), "{took:?}");
    for _ in 0..20 {
        assert_eq!(call(&web, DOOMED, "/", "").0.status, 200);
    }
}
