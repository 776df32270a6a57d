//! Tracing through two proxies on loopback (explicit mode): a client's request through one
//! proxy's outbound listener to another's inbound listener, then the app. The spans go to a fake
//! collector (`weft_testkit::otlp`); the app reports the context it received.

mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use support::{app::App, TestProxy};
use weft_testkit::{assert_eventually, otlp::Collector};

/// The app behind an inbound proxy behind an outbound proxy, both tracing to `collector` and
/// sampling `sampling` of the requests that start a trace.
async fn chain(collector: &Collector, sampling: &str) -> (App, TestProxy, TestProxy) {
    let app = App::start().await;
    let trace = collector.addr.to_string();
    let server = TestProxy::with(&[
        ("WEFT_INBOUND_TARGET", &app.addr.to_string()),
        ("WEFT_TRACE_COLLECTOR", &trace),
        ("WEFT_TRACE_SAMPLING", sampling),
        ("WEFT_TRACE_SERVICE_NAME", "api"),
    ])
    .await;
    let inbound = SocketAddr::from(([127, 0, 0, 1], server.addrs.inbound.port()));
    let client = TestProxy::with(&[
        ("WEFT_OUTBOUND_TARGET", &inbound.to_string()),
        ("WEFT_TRACE_COLLECTOR", &trace),
        ("WEFT_TRACE_SAMPLING", sampling),
        ("WEFT_TRACE_SERVICE_NAME", "web"),
    ])
    .await;
    (app, server, client)
}

/// GET /echo through `proxy` with `headers`; the response's headers (the app's `x-seen-*`).
async fn get(proxy: &TestProxy, headers: &[(&str, &str)]) -> http::HeaderMap {
    let io = TokioIo::new(TcpStream::connect(proxy.outbound()).await.expect("connect"));
    let (mut send, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut req = Request::get("/echo").header("host", "api.shop.svc:8080");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let rsp = send
        .send_request(req.body(Empty::<Bytes>::new()).expect("request"))
        .await
        .expect("response");
    assert_eq!(rsp.status(), 200);
    let headers = rsp.headers().clone();
    let _ = rsp.into_body().collect().await;
    headers
}

fn seen(h: &http::HeaderMap, name: &str) -> Option<String> {
    h.get(format!("x-seen-{name}"))
        .map(|v| v.to_str().expect("ascii").to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sampled_request_leaves_a_client_and_a_server_span_in_one_trace() {
    let collector = Collector::start().await;
    let (_app, server, client) = chain(&collector, "1").await;
    let seen_by_app = get(&client, &[]).await;
    assert_eventually!(collector.spans().len() == 2, "two spans at the collector");
    let spans = collector.spans();
    let c = spans
        .iter()
        .find(|s| s.service == "web")
        .expect("the client span");
    let s = spans
        .iter()
        .find(|s| s.service == "api")
        .expect("the server span");
    let (c_trace, c_span, c_parent) = c.ids();
    let (s_trace, s_span, s_parent) = s.ids();
    assert_eq!(c_trace, s_trace, "one trace");
    assert_eq!(c_parent, "", "the client's proxy started it");
    assert_eq!(
        s_parent, c_span,
        "the server span is the client span's child"
    );
    assert_eq!(c.span.kind, 3, "CLIENT");
    assert_eq!(s.span.kind, 2, "SERVER");
    for span in [c, s] {
        assert_eq!(span.attr("http.request.method").as_deref(), Some("GET"));
        assert_eq!(span.attr("url.path").as_deref(), Some("/echo"));
        assert_eq!(
            span.attr("http.response.status_code").as_deref(),
            Some("200")
        );
        assert_eq!(span.attr("server.address").as_deref(), Some("api.shop.svc"));
        assert!(span.span.end_time_unix_nano >= span.span.start_time_unix_nano);
    }
    // The app sees the server proxy's span as its parent, sampled.
    assert_eq!(
        seen(&seen_by_app, "traceparent"),
        Some(format!("00-{s_trace}-{s_span}-01"))
    );
    for proxy in [&client, &server] {
        assert_eventually!(
            proxy.metric(r#"weft_trace_spans_total{result="exported"}"#) == Some(1.0),
            "the proxy counts its exported span"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b3_callers_join_their_own_trace_and_keep_their_format() {
    let collector = Collector::start().await;
    let (_app, _server, client) = chain(&collector, "0").await;
    let trace = "463ac35c9f6413ad";
    let caller = "a2fb4a1d1a96d312";
    let seen_by_app = get(&client, &[("b3", &format!("{trace}-{caller}-1"))]).await;
    assert_eventually!(
        collector.spans().len() == 2,
        "two spans, sampled by the caller"
    );
    let spans = collector.spans();
    let c = spans
        .iter()
        .find(|s| s.service == "web")
        .expect("client span");
    let s = spans
        .iter()
        .find(|s| s.service == "api")
        .expect("server span");
    let padded = format!("0000000000000000{trace}");
    assert_eq!(c.ids().0, padded);
    assert_eq!(c.ids().2, caller, "the caller's span is the parent");
    assert_eq!(s.ids().2, c.ids().1);
    // The app gets B3 back in 64 bits, with the server span as its parent.
    assert_eq!(
        seen(&seen_by_app, "b3"),
        Some(format!("{trace}-{}-1", s.ids().1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_no_is_followed_and_its_headers_pass_untouched() {
    let collector = Collector::start().await;
    let (_app, _server, client) = chain(&collector, "1").await;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    let seen_by_app = get(&client, &[("traceparent", tp), ("tracestate", "k=v")]).await;
    assert_eq!(seen(&seen_by_app, "traceparent").as_deref(), Some(tp));
    assert_eq!(seen(&seen_by_app, "tracestate").as_deref(), Some("k=v"));
    // A sampled request after it is exported, so the unsampled one would have been too.
    let _ = get(&client, &[]).await;
    assert_eventually!(
        collector.spans().len() == 2,
        "the second request's two spans"
    );
    let traces: std::collections::BTreeSet<String> =
        collector.spans().iter().map(|s| s.ids().0).collect();
    assert!(
        !traces.contains("4bf92f3577b34da6a3ce929d0e0e4736"),
        "nothing of the unsampled trace"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_not_sampled_tells_the_next_hop_so() {
    let collector = Collector::start().await;
    let (_app, _server, client) = chain(&collector, "0").await;
    let seen_by_app = get(&client, &[]).await;
    let tp = seen(&seen_by_app, "traceparent").expect("a traceparent downstream");
    assert!(tp.starts_with("00-") && tp.ends_with("-00"), "{tp}");
    assert!(collector.spans().is_empty());
}

#[tokio::test]
async fn without_a_collector_trace_headers_pass_untouched() {
    let app = App::start().await;
    let proxy = TestProxy::to(app.addr).await;
    let seen_by_app = get(&proxy, &[("b3", "garbage")]).await;
    assert_eq!(seen(&seen_by_app, "b3").as_deref(), Some("garbage"));
    assert!(seen(&seen_by_app, "traceparent").is_none());
    assert!(proxy
        .metric(r#"weft_trace_spans_total{result="exported"}"#)
        .is_none());
}
