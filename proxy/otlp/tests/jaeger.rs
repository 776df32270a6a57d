//! The exporter against a real Jaeger (v2, built from its Go module by
//! `scripts/jaeger-build.sh`; `weft_lab::jaeger` runs it on loopback): the spans we send come
//! back from Jaeger's query API with their ids, parents, kinds, service and attributes, so our
//! OTLP is what a real collector reads. Skipped loudly when Jaeger is not built, unless
//! `WEFT_REQUIRE_JAEGER_TESTS=1` (CI).

use std::{
    net::{SocketAddr, TcpListener},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use http::{Method, StatusCode, Version};
use weft_lab::jaeger::{self, Jaeger, Trace};
use weft_proxy_otlp::{start, Resource, Settings};
use weft_proxy_trace::{Kind, Span, SpanId, TraceId};

/// How long the spans may take to show up in Jaeger.
const PATIENCE: Duration = Duration::from_secs(20);

/// Two free ports on 127.0.0.1, held together while drawn so they differ.
fn two_loopback_addrs() -> (SocketAddr, SocketAddr) {
    let a = TcpListener::bind("127.0.0.1:0").expect("bind");
    let b = TcpListener::bind("127.0.0.1:0").expect("bind");
    (a.local_addr().expect("addr"), b.local_addr().expect("addr"))
}

fn span(trace: TraceId, id: SpanId, parent: Option<SpanId>, kind: Kind) -> Span {
    let end = SystemTime::now();
    Span {
        trace_id: trace,
        span_id: id,
        parent,
        kind,
        start: end - Duration::from_millis(3),
        end,
        method: Method::POST,
        path: "/orders".into(),
        authority: Some("api.shop.svc.cluster.local:80".into()),
        version: Version::HTTP_11,
        status: Some(StatusCode::CREATED),
        error: None,
        peer: Some("198.18.0.7:15143".parse().expect("addr")),
        peer_identity: Some(Arc::from(match kind {
            Kind::Client => "spiffe://cluster.local/ns/shop/sa/api",
            Kind::Server => "spiffe://cluster.local/ns/shop/sa/web",
        })),
        route: None,
        backend: None,
        retries: 0,
        fault: None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn jaeger_reads_our_spans() {
    if !jaeger::should_run("weft-proxy-otlp: spans in a real Jaeger") {
        return;
    }
    let began = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let (otlp, query) = two_loopback_addrs();
    let j = Jaeger::start(dir.path(), otlp, query, None).unwrap_or_else(|e| panic!("{e}"));
    let started = began.elapsed();

    let settings = Settings {
        flush_every: Duration::from_millis(100),
        ..Settings::new(otlp.to_string())
    };
    let sink = start(
        settings,
        Resource {
            service_name: "web".into(),
            attributes: vec![("k8s.namespace.name", "shop".into())],
        },
    )
    .expect("exporter");

    // One hop: web's client span and, under it, the server span. And a trace of its own whose
    // id has a zero high half (a 64-bit B3 id), which Jaeger prints short.
    let one = TraceId([
        0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47,
        0x36,
    ]);
    let client = SpanId([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
    let server = SpanId([0x53, 0x99, 0x5c, 0x3f, 0x42, 0xcd, 0x8a, 0xd8]);
    let two = TraceId([
        0, 0, 0, 0, 0, 0, 0, 0, 0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6, 7, 8,
    ]);
    let lone = SpanId([0x11; 8]);
    sink.record(span(one, client, None, Kind::Client));
    sink.record(span(one, server, Some(client), Kind::Server));
    sink.record(span(two, lone, None, Kind::Client));

    let deadline = Instant::now() + PATIENCE;
    let (traces, last_error) = loop {
        let (traces, error) = match j.traces("web") {
            Ok(t) => (t, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        let spans: usize = traces.iter().map(|t| t.spans.len()).sum();
        if spans >= 3 || Instant::now() > deadline {
            break (traces, error);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let arrived = began.elapsed();
    let find = |id: TraceId| -> &Trace {
        traces
            .iter()
            .find(|t| t.trace_id == hex(&id.0))
            .unwrap_or_else(|| {
                let counts = sink.counters().get();
                panic!(
                    "trace {} not in Jaeger after {PATIENCE:?} (exporter: {counts:?}; \
                     last query error: {last_error:?}): {traces:#?}\njaeger's log:\n{}",
                    hex(&id.0),
                    j.log()
                )
            })
    };

    let t1 = find(one);
    assert_eq!(t1.spans.len(), 2, "{t1:#?}");
    let c = t1.span(&hex(&client.0)).expect("the client span");
    let s = t1.span(&hex(&server.0)).expect("the server span");
    assert_eq!(c.parent, None);
    assert_eq!(s.parent.as_deref(), Some(hex(&client.0).as_str()));
    assert_eq!(c.kind.as_deref(), Some("client"));
    assert_eq!(s.kind.as_deref(), Some("server"));
    for (span, peer) in [
        (c, "spiffe://cluster.local/ns/shop/sa/api"),
        (s, "spiffe://cluster.local/ns/shop/sa/web"),
    ] {
        assert_eq!(span.service, "web");
        assert_eq!(span.operation, "POST");
        assert_eq!(
            span.tag("http.request.method").and_then(|v| v.as_str()),
            Some("POST")
        );
        assert_eq!(
            span.tag("http.response.status_code")
                .and_then(|v| v.as_i64()),
            Some(201)
        );
        assert_eq!(
            span.tag("weft.peer.identity").and_then(|v| v.as_str()),
            Some(peer)
        );
    }

    let t2 = find(two);
    assert_eq!(t2.trace_id, format!("{:032x}", 0xa1b2_c3d4_e5f6_0708_u64));
    assert_eq!(t2.spans.len(), 1, "{t2:#?}");
    assert_eq!(t2.spans[0].span_id, hex(&lone.0));
    assert_eq!(t2.spans[0].parent, None);
    assert_eq!(traces.len(), 2, "nothing else in Jaeger: {traces:#?}");
    assert_eq!(sink.counters().get().exported, 3);
    eprintln!(
        "jaeger (pid {:?}) answered after {started:?}; the spans were there after {arrived:?}",
        j.pid()
    );
}
