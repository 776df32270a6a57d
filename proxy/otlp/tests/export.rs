//! The exporter against collectors on loopback: one that answers OTLP/gRPC as a collector does
//! (`weft_testkit::otlp`: hyper's HTTP/2 server, the real protobuf messages), one that refuses
//! some spans, one that never answers, and none at all.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use http::{Method, Version};
use tokio::net::TcpListener;
use weft_proxy_otlp::{start, Resource, Settings, SpanSink, EXPORT_PATH};
use weft_proxy_trace::{Kind, Span, SpanId, TraceId};
use weft_testkit::otlp::Collector;

fn span(i: u64) -> Span {
    let now = SystemTime::now();
    Span {
        trace_id: TraceId::from_random(u128::from(i) + 1).expect("nonzero"),
        span_id: SpanId::from_random(i + 1).expect("nonzero"),
        parent: None,
        kind: Kind::Client,
        start: now,
        end: now + Duration::from_millis(1),
        method: Method::GET,
        path: format!("/{i}").into(),
        authority: Some("api:80".into()),
        version: Version::HTTP_11,
        status: Some(http::StatusCode::OK),
        error: None,
        peer: None,
        peer_identity: None,
        route: None,
        backend: None,
        retries: 0,
        fault: None,
    }
}

fn sink(addr: SocketAddr, f: impl FnOnce(&mut Settings)) -> SpanSink {
    let mut settings = Settings::new(addr.to_string());
    f(&mut settings);
    let resource = Resource {
        service_name: "web".into(),
        attributes: vec![("k8s.namespace.name", "shop".into())],
    };
    start(settings, resource).expect("the exporter thread starts")
}

/// Waits (bounded) until `done` holds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "not within 15 s: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_arrive_in_batches_with_their_resource() {
    assert_eq!(EXPORT_PATH, weft_testkit::otlp::EXPORT_PATH);
    let collector = Collector::start().await;
    let sink = sink(collector.addr, |s| {
        s.batch = 10;
        s.flush_every = Duration::from_millis(100);
    });
    for i in 0..25 {
        sink.record(span(i));
    }
    until("25 spans at the collector", || {
        collector.spans().len() == 25
    })
    .await;
    until("25 exported", || sink.counters().get().exported == 25).await;
    let requests = collector.requests();
    assert!(requests.len() >= 3, "{} requests", requests.len());
    for r in &requests {
        let rs = &r.resource_spans[0];
        assert!(rs.scope_spans[0].spans.len() <= 10);
        let resource = rs.resource.as_ref().expect("resource");
        assert_eq!(resource.attributes[0].key, "service.name");
    }
    let paths: std::collections::BTreeSet<String> = collector
        .spans()
        .iter()
        .filter_map(|s| s.attr("url.path"))
        .collect();
    assert_eq!(paths.len(), 25, "each span once");
    let c = sink.counters().get();
    assert_eq!((c.queue_full, c.export_failed, c.rejected), (0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_the_collector_refuses_are_counted() {
    let collector = Collector::rejecting(2).await;
    let sink = sink(collector.addr, |s| {
        s.batch = 5;
        s.flush_every = Duration::from_millis(50);
    });
    for i in 0..5 {
        sink.record(span(i));
    }
    until("5 spans accounted", || sink.counters().get().total() == 5).await;
    let c = sink.counters().get();
    assert_eq!((c.exported, c.rejected), (3, 2));
}

/// A collector that accepts connections and never says a word: the data path's `record` never
/// waits (10,000 spans handed over while exports hang), the queue's overflow and the timed-out
/// batches are counted, and nothing is lost from the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_collector_costs_only_dropped_spans() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            keep.lock().expect("lock").push(tcp);
        }
    });
    let sink = sink(addr, |s| {
        s.queue = 100;
        s.batch = 10;
        s.flush_every = Duration::from_millis(20);
        s.timeout = Duration::from_millis(200);
    });
    for i in 0..10_000 {
        sink.record(span(i));
    }
    let c = sink.counters().get();
    assert!(c.queue_full >= 10_000 - 100 - 10, "{c:?}");
    until("every span accounted", || {
        sink.counters().get().total() == 10_000
    })
    .await;
    let c = sink.counters().get();
    assert_eq!(c.exported, 0, "{c:?}");
    assert!(c.export_failed > 0, "{c:?}");
    assert!(
        !held.lock().expect("lock").is_empty(),
        "the exporter did dial"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_collector_counts_every_span_as_failed() {
    // A loopback port nobody listens on.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let sink = sink(addr, |s| s.flush_every = Duration::from_millis(20));
    for i in 0..5 {
        sink.record(span(i));
    }
    until("5 failed", || sink.counters().get().export_failed == 5).await;
    assert_eq!(sink.counters().get().total(), 5);
}

/// When the last sink goes, what is queued is sent at once, not after the flush interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_spans_go_when_the_sinks_do() {
    let collector = Collector::start().await;
    let sink = sink(collector.addr, |s| {
        s.batch = 100;
        s.flush_every = Duration::from_secs(600);
    });
    for i in 0..3 {
        sink.record(span(i));
    }
    drop(sink);
    until("the 3 queued spans", || collector.spans().len() == 3).await;
}
