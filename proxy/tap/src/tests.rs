use std::time::Duration;

use http_body_util::BodyExt;
use serde_json::Value;

use super::*;

fn request(method: Method, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).expect("request")
}

fn spec(query: &str) -> Spec {
    Spec::parse(Some(query)).expect("spec")
}

fn outcome(status: u16) -> Outcome<'static> {
    Outcome {
        status: StatusCode::from_u16(status).expect("status"),
        tls: true,
        src_identity: "spiffe://cluster.local/ns/shop/sa/web",
        dst_identity: "spiffe://cluster.local/ns/shop/sa/api",
        route: "httproute/shop/api/rule/0",
        backend: "shop/api-v2:80",
        endpoint: "198.18.0.7:8080",
        ..Outcome::default()
    }
}

/// The events queued on `stream` now, without waiting.
async fn drain(stream: &mut Stream) -> Vec<Value> {
    let mut out = Vec::new();
    while let Ok(Some(line)) = tokio::time::timeout(Duration::from_millis(20), stream.frame()).await
    {
        let data = line.expect("infallible").into_data().expect("data");
        assert!(data.ends_with(b"\n"), "a frame holds whole lines");
        for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            out.push(serde_json::from_slice(line).expect("json line"));
        }
    }
    out
}

fn tap_one(point: &Point, req: &Request<()>, status: u16) {
    if let Some(s) = point.start(req) {
        s.finish(outcome(status));
    }
}

#[test]
fn nobody_tapping_captures_nothing() {
    let tap = Tap::new();
    let point = Point::new(tap.clone(), Direction::Outbound);
    assert!(point.start(&request(Method::GET, "/", &[])).is_none());
    assert_eq!(tap.counts(), Counts::default());
}

#[tokio::test]
async fn a_tapped_request_is_one_json_line_with_who_served_it() {
    let tap = Tap::new();
    let point = Point::new(tap.clone(), Direction::Outbound);
    let mut stream = tap.subscribe(Spec::default()).expect("subscribe");
    let req = request(Method::POST, "http://api.shop:80/v1/orders?id=7", &[]);
    let started = point.start(&req).expect("captured");
    std::thread::sleep(Duration::from_millis(2));
    started.finish(Outcome {
        error: Some("timeout"),
        ..outcome(504)
    });
    let events = drain(&mut stream).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e["direction"], "outbound");
    assert_eq!(e["method"], "POST");
    assert_eq!(e["authority"], "api.shop:80");
    assert_eq!(e["path"], "/v1/orders", "the query is not part of the path");
    assert_eq!(e["status"], 504);
    assert_eq!(e["error"], "timeout");
    assert_eq!(e["tls"], true);
    assert_eq!(e["src_identity"], "spiffe://cluster.local/ns/shop/sa/web");
    assert_eq!(e["dst_identity"], "spiffe://cluster.local/ns/shop/sa/api");
    assert_eq!(e["route"], "httproute/shop/api/rule/0");
    assert_eq!(e["backend"], "shop/api-v2:80");
    assert_eq!(e["endpoint"], "198.18.0.7:8080");
    assert!(e["latency_ms"].as_f64().expect("latency") >= 2.0, "{e}");
    assert!(e["ts"].as_f64().expect("ts") > 1.7e9, "{e}");
    assert!(e.get("headers").is_none(), "no headers unless asked: {e}");
    assert_eq!(tap.counts().sent, 1);
}

#[tokio::test]
async fn each_tap_sees_what_its_filter_names() {
    let tap = Tap::new();
    let out = Point::new(tap.clone(), Direction::Outbound);
    let inb = Point::new(tap.clone(), Direction::Inbound);
    let mut gets = tap.subscribe(spec("method=GET&path=/api")).expect("tap");
    let mut inbound = tap.subscribe(spec("direction=inbound")).expect("tap");
    let mut host = tap.subscribe(spec("authority=web.shop")).expect("tap");
    tap_one(
        &out,
        &request(Method::GET, "/api/x", &[("host", "Web.Shop")]),
        200,
    );
    tap_one(&out, &request(Method::POST, "/api/x", &[]), 200);
    tap_one(&inb, &request(Method::GET, "/other", &[]), 503);
    let paths = |events: Vec<Value>| -> Vec<String> {
        events
            .iter()
            .map(|e| {
                let field = |k: &str| e[k].as_str().expect("string").to_owned();
                format!(
                    "{} {} {}",
                    field("direction"),
                    field("method"),
                    field("path")
                )
            })
            .collect()
    };
    assert_eq!(paths(drain(&mut gets).await), ["outbound GET /api/x"]);
    assert_eq!(paths(drain(&mut inbound).await), ["inbound GET /other"]);
    assert_eq!(paths(drain(&mut host).await), ["outbound GET /api/x"]);
}

#[tokio::test]
async fn headers_come_when_asked_and_sensitive_ones_are_redacted() {
    let tap = Tap::new();
    let point = Point::new(tap.clone(), Direction::Inbound);
    let mut redacted = tap.subscribe(spec("headers=redacted")).expect("tap");
    let mut all = tap.subscribe(spec("headers=all")).expect("tap");
    let mut none = tap.subscribe(Spec::default()).expect("tap");
    let long = "v".repeat(MAX_HEADER_VALUE + 10);
    let req = request(
        Method::GET,
        "/",
        &[
            ("authorization", "Bearer s3cr3t"),
            ("cookie", "sid=1"),
            ("x-session-id", "abc"),
            ("x-request-id", "r-1"),
            ("x-long", &long),
        ],
    );
    tap_one(&point, &req, 200);
    let header = |e: &Value, name: &str| -> Option<String> {
        e["headers"]
            .as_array()?
            .iter()
            .find_map(|pair| (pair[0] == name).then(|| pair[1].as_str().expect("value").to_owned()))
    };
    let r = &drain(&mut redacted).await[0];
    assert_eq!(header(r, "authorization").as_deref(), Some(REDACTED));
    assert_eq!(header(r, "cookie").as_deref(), Some(REDACTED));
    assert_eq!(header(r, "x-session-id").as_deref(), Some(REDACTED));
    assert_eq!(header(r, "x-request-id").as_deref(), Some("r-1"));
    let cut = header(r, "x-long").expect("x-long");
    assert_eq!(cut.len(), MAX_HEADER_VALUE + 3);
    assert!(cut.ends_with("..."));
    let a = &drain(&mut all).await[0];
    assert_eq!(header(a, "authorization").as_deref(), Some("Bearer s3cr3t"));
    assert!(drain(&mut none).await[0].get("headers").is_none());
}

#[test]
fn sensitive_names() {
    for yes in [
        "Authorization",
        "proxy-authorization",
        "cookie",
        "Set-Cookie",
        "x-auth-token",
        "X-Api-Key",
        "x-apikey",
        "client-secret",
        "x-password",
        "x-session",
    ] {
        assert!(is_sensitive(yes), "{yes}");
    }
    for no in [
        "host",
        "user-agent",
        "x-request-id",
        "content-type",
        "accept",
    ] {
        assert!(!is_sensitive(no), "{no}");
    }
}

#[tokio::test]
async fn a_tap_ends_after_its_limit_and_leaves() {
    let tap = Tap::new();
    let point = Point::new(tap.clone(), Direction::Outbound);
    let mut stream = tap.subscribe(spec("limit=3")).expect("tap");
    for _ in 0..5 {
        tap_one(&point, &request(Method::GET, "/", &[]), 200);
    }
    assert_eq!(tap.counts().streams, 0, "the subscription ended");
    assert!(!tap.is_active());
    let mut n = 0;
    while let Some(frame) = stream.frame().await {
        let data = frame.expect("infallible").into_data().expect("data");
        n += data.iter().filter(|b| **b == b'\n').count();
    }
    assert_eq!(n, 3, "three events, then the end of the body");
}

#[tokio::test]
async fn a_reader_that_stops_reading_loses_events_not_time() {
    let tap = Tap::new();
    let point = Point::new(tap.clone(), Direction::Outbound);
    let mut stream = tap.subscribe(spec("limit=100000")).expect("tap");
    let n = BUFFER * 4;
    let start = Instant::now();
    for _ in 0..n {
        tap_one(&point, &request(Method::GET, "/", &[]), 200);
    }
    // Nothing waited: 1,024 requests published in far less than a second even on a loaded
    // machine (each is a few microseconds); the reader's queue held BUFFER of them.
    assert!(start.elapsed() < Duration::from_secs(5));
    let c = tap.counts();
    assert_eq!(c.sent, BUFFER as u64);
    assert_eq!(c.dropped, (n - BUFFER) as u64);
    // Once it reads again, it hears how many it missed before the next event.
    let queued = drain(&mut stream).await;
    assert_eq!(queued.len(), BUFFER);
    tap_one(&point, &request(Method::GET, "/next", &[]), 200);
    let after = drain(&mut stream).await;
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(after[0]["dropped"], (n - BUFFER) as u64);
    assert_eq!(after[1]["path"], "/next");
}

#[tokio::test]
async fn taps_are_bounded_and_a_dropped_reader_frees_its_place() {
    let tap = Tap::new();
    let mut open: Vec<Stream> = (0..MAX_TAPS)
        .map(|_| tap.subscribe(Spec::default()).expect("tap"))
        .collect();
    assert_eq!(tap.subscribe(Spec::default()).map(|_| ()), Err(Busy));
    assert_eq!(tap.counts().streams, MAX_TAPS as u64);
    open.pop();
    assert_eq!(tap.counts().streams, (MAX_TAPS - 1) as u64);
    let _again = tap.subscribe(Spec::default()).expect("a place is free");
    drop(open);
    assert_eq!(tap.counts().streams, 1);
}

#[test]
fn a_closed_reader_is_removed_on_the_next_request() {
    let tap = Tap::new();
    let point = Point::new(tap.clone(), Direction::Outbound);
    let stream = tap.subscribe(Spec::default()).expect("tap");
    let started = point
        .start(&request(Method::GET, "/", &[]))
        .expect("captured");
    // The reader leaves while the request is in flight.
    drop(stream);
    started.finish(outcome(200));
    assert_eq!(tap.counts(), Counts::default());
}

#[tokio::test]
async fn a_burst_goes_out_in_one_frame() {
    let tap = Tap::new();
    let point = Point::new(tap.clone(), Direction::Outbound);
    let mut stream = tap.subscribe(Spec::default()).expect("tap");
    for _ in 0..10 {
        tap_one(&point, &request(Method::GET, "/", &[]), 200);
    }
    let frame = stream
        .frame()
        .await
        .expect("a frame")
        .expect("infallible")
        .into_data()
        .expect("data");
    assert_eq!(frame.iter().filter(|b| **b == b'\n').count(), 10);
}
