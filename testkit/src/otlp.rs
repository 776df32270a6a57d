//! A fake OpenTelemetry collector: OTLP/gRPC `Export` calls over HTTP/2 on loopback (hyper's
//! server, the real protobuf messages), every request kept for the test to read. It may report
//! some spans of each request rejected, as a collector's partial success does.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
    },
    common::v1::any_value::Value,
    trace::v1::Span,
};
use prost::Message;
use tokio::net::TcpListener;

/// The gRPC method spans arrive on.
pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// A running fake collector.
#[derive(Clone, Debug)]
pub struct Collector {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

/// A span as received, with its resource's `service.name`.
#[derive(Clone, Debug)]
pub struct Received {
    pub service: String,
    pub span: Span,
}

impl Received {
    /// The string or integer attribute `key`, as text.
    pub fn attr(&self, key: &str) -> Option<String> {
        let v = self
            .span
            .attributes
            .iter()
            .find(|a| a.key == key)?
            .value
            .as_ref()?
            .value
            .as_ref()?;
        match v {
            Value::StringValue(s) => Some(s.clone()),
            Value::IntValue(i) => Some(i.to_string()),
            Value::BoolValue(b) => Some(b.to_string()),
            other => Some(format!("{other:?}")),
        }
    }

    /// Its trace id, span id and parent span id as lowercase hex.
    pub fn ids(&self) -> (String, String, String) {
        (
            hex(&self.span.trace_id),
            hex(&self.span.span_id),
            hex(&self.span.parent_span_id),
        )
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Collector {
    /// Listens on 127.0.0.1:0, accepting every span.
    pub async fn start() -> Self {
        Self::rejecting(0).await
    }

    /// Listens on 127.0.0.1:0, reporting `n` spans of each request rejected.
    pub async fn rejecting(n: i64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the collector");
        let addr = listener.local_addr().expect("its address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let store = requests.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let store = store.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let store = store.clone();
                        async move { Ok::<_, Infallible>(export(req, n, &store).await) }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Collector { addr, requests }
    }

    /// Every export request so far.
    pub fn requests(&self) -> Vec<ExportTraceServiceRequest> {
        self.requests.lock().expect("lock").clone()
    }

    /// Every span so far, in arrival order.
    pub fn spans(&self) -> Vec<Received> {
        let mut out = Vec::new();
        for r in self.requests() {
            for rs in r.resource_spans {
                let service = rs
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|a| a.key == "service.name")
                    .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                        Value::StringValue(s) => Some(s.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                for ss in rs.scope_spans {
                    for span in ss.spans {
                        out.push(Received {
                            service: service.clone(),
                            span,
                        });
                    }
                }
            }
        }
        out
    }
}

type GrpcBody =
    StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

/// One unary call: a length-prefixed message in, one out, `grpc-status` in the trailers.
async fn export(
    req: Request<Incoming>,
    reject: i64,
    store: &Mutex<Vec<ExportTraceServiceRequest>>,
) -> Response<GrpcBody> {
    let status = |code: &str| {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", code.parse().expect("a status"));
        trailers
    };
    let mut frames = Vec::new();
    let ok = req.uri().path() == EXPORT_PATH;
    let request = match req.into_body().collect().await {
        Ok(body) if ok => {
            let mut body = body.to_bytes();
            (body.len() >= 5 && body.get_u8() == 0 && body.get_u32() as usize == body.len())
                .then(|| ExportTraceServiceRequest::decode(body).ok())
                .flatten()
        }
        _ => None,
    };
    match request {
        Some(request) => {
            store.lock().expect("lock").push(request);
            let response = ExportTraceServiceResponse {
                partial_success: (reject > 0).then(|| ExportTracePartialSuccess {
                    rejected_spans: reject,
                    error_message: "refused by the test".into(),
                }),
            };
            let mut frame = BytesMut::new();
            frame.put_u8(0);
            frame.put_u32(u32::try_from(response.encoded_len()).unwrap_or(0));
            let _ = response.encode(&mut frame);
            frames.push(Ok(Frame::data(frame.freeze())));
            frames.push(Ok(Frame::trailers(status("0"))));
        }
        // INVALID_ARGUMENT (or UNIMPLEMENTED for another path), in the trailers.
        None => frames.push(Ok(Frame::trailers(status(if ok { "3" } else { "12" })))),
    }
    Response::builder()
        .header("content-type", "application/grpc")
        .body(StreamBody::new(futures_util::stream::iter(frames)))
        .unwrap_or_else(|_| Response::new(StreamBody::new(futures_util::stream::iter(Vec::new()))))
}
