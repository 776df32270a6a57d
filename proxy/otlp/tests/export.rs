//! The exporter against collectors on loopback: one that answers OTLP/gRPC as a collector does
//! (hyper's HTTP/2 server, the real protobuf messages), one that refuses some spans, one that
//! never answers, and none at all.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, Method, Request, Response, Version};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio::net::TcpListener;
use weft_proxy_otlp::{start, Resource, Settings, SpanSink, EXPORT_PATH};
use weft_proxy_trace::{Kind, Span, SpanId, TraceId};

/// What the fake collector does with an export.
#[derive(Clone, Copy)]
enum Answer {
    Accept,
    /// Accept, but report this many spans of each request rejected.
    Reject(i64),
}

#[derive(Default)]
struct Received {
    requests: Vec<ExportTraceServiceRequest>,
}

impl Received {
    fn spans(&self) -> usize {
        self.requests
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|rs| &rs.scope_spans)
            .map(|ss| ss.spans.len())
            .sum()
    }
}

/// A collector on loopback answering `Export` calls with `answer`.
async fn collector(answer: Answer) -> (SocketAddr, Arc<Mutex<Received>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let received = Arc::new(Mutex::new(Received::default()));
    let store = received.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let store = store.clone();
                    async move { Ok::<_, Infallible>(export(req, answer, &store).await) }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, received)
}

type GrpcBody =
    StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

/// One gRPC unary call: a length-prefixed message in, one out, `grpc-status` in the trailers.
async fn export(
    req: Request<Incoming>,
    answer: Answer,
    store: &Mutex<Received>,
) -> Response<GrpcBody> {
    assert_eq!(req.method(), Method::POST);
    assert_eq!(req.uri().path(), EXPORT_PATH);
    assert_eq!(req.headers()["content-type"], "application/grpc");
    let mut body = req.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(body.get_u8(), 0, "not compressed");
    let len = body.get_u32() as usize;
    assert_eq!(len, body.len());
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP request");
    store.lock().expect("lock").requests.push(request);
    let response = ExportTraceServiceResponse {
        partial_success: match answer {
            Answer::Accept => None,
            Answer::Reject(n) => Some(ExportTracePartialSuccess {
                rejected_spans: n,
                error_message: "too old".into(),
            }),
        },
    };
    let mut frame = BytesMut::new();
    frame.put_u8(0);
    frame.put_u32(u32::try_from(response.encoded_len()).expect("small"));
    response.encode(&mut frame).expect("encode");
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().expect("value"));
    let frames = vec![
        Ok(Frame::data(frame.freeze())),
        Ok(Frame::trailers(trailers)),
    ];
    Response::builder()
        .header("content-type", "application/grpc")
        .body(StreamBody::new(futures_util::stream::iter(frames)))
        .expect("response")
}

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
    let (addr, received) = collector(Answer::Accept).await;
    let sink = sink(addr, |s| {
        s.batch = 10;
        s.flush_every = Duration::from_millis(100);
    });
    for i in 0..25 {
        sink.record(span(i));
    }
    until("25 spans at the collector", || {
        received.lock().expect("lock").spans() == 25
    })
    .await;
    until("25 exported", || sink.counters().get().exported == 25).await;
    let got = received.lock().expect("lock");
    assert!(got.requests.len() >= 3, "{} requests", got.requests.len());
    for r in &got.requests {
        let rs = &r.resource_spans[0];
        assert!(rs.scope_spans[0].spans.len() <= 10);
        let resource = rs.resource.as_ref().expect("resource");
        assert_eq!(resource.attributes[0].key, "service.name");
    }
    let paths: std::collections::BTreeSet<String> = got
        .requests
        .iter()
        .flat_map(|r| &r.resource_spans[0].scope_spans[0].spans)
        .filter_map(|s| {
            s.attributes
                .iter()
                .find(|a| a.key == "url.path")
                .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                    opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(v) => {
                        Some(v.clone())
                    }
                    _ => None,
                })
        })
        .collect();
    assert_eq!(paths.len(), 25, "each span once");
    let c = sink.counters().get();
    assert_eq!((c.queue_full, c.export_failed, c.rejected), (0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_the_collector_refuses_are_counted() {
    let (addr, _) = collector(Answer::Reject(2)).await;
    let sink = sink(addr, |s| {
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
    let (addr, received) = collector(Answer::Accept).await;
    let sink = sink(addr, |s| {
        s.batch = 100;
        s.flush_every = Duration::from_secs(600);
    });
    for i in 0..3 {
        sink.record(span(i));
    }
    drop(sink);
    until("the 3 queued spans", || {
        received.lock().expect("lock").spans() == 3
    })
    .await;
}
