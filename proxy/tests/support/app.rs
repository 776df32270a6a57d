//! A fake app server: HTTP/1.1 and HTTP/2 (prior knowledge) on one port, with routes that
//! show what arrived and exercise streaming, trailers and upgrades.
//!
//! - `/echo`: streams the request body back; `x-seen-*` headers report what the server saw.
//! - `/trailers`: reads the request (with its trailers), answers a body and gRPC-style trailers.
//! - `/ws` (with `Upgrade: websocket`): 101, then echoes bytes.
//! - `CONNECT`: 200, then echoes bytes.
//! - `/gate`: reports arrival, then waits for the test to open the gate.
//! - `/barrier`: waits until `barrier` requests are in flight at once.
//! - `/discard`: counts the request body without keeping it, answers the count.
//! - `/bytes/N`: streams N bytes in 64 KiB chunks.
//! - anything else: 200 "ok".

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::{mpsc, Barrier, Notify},
};

type Body = BoxBody<Bytes, hyper::Error>;

/// The running fake app.
pub struct App {
    pub addr: SocketAddr,
    state: Arc<State>,
    /// Paths of requests that reached `/gate`, in arrival order.
    pub arrivals: mpsc::UnboundedReceiver<String>,
}

struct State {
    connections: AtomicUsize,
    gate: Notify,
    barrier: Barrier,
    arrived: mpsc::UnboundedSender<String>,
}

impl App {
    /// Starts the app on 127.0.0.1:0.
    pub async fn start() -> Self {
        Self::with_barrier(1).await
    }

    /// Starts the app with `/barrier` releasing once `n` requests are waiting.
    pub async fn with_barrier(n: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind app");
        let addr = listener.local_addr().expect("app addr");
        let (arrived, arrivals) = mpsc::unbounded_channel();
        let state = Arc::new(State {
            connections: AtomicUsize::new(0),
            gate: Notify::new(),
            barrier: Barrier::new(n),
            arrived,
        });
        let accept_state = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                accept_state.connections.fetch_add(1, Ordering::SeqCst);
                let state = accept_state.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(route(&state, req).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            state,
            arrivals,
        }
    }

    /// TCP connections the app has accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Lets every request waiting at `/gate` answer.
    pub fn open_gate(&self) {
        self.state.gate.notify_waiters();
    }
}

async fn route(state: &State, mut req: Request<Incoming>) -> Response<Body> {
    if req.method() == Method::CONNECT {
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(echo_upgraded(on_upgrade));
        return Response::new(empty());
    }
    let path = req.uri().path().to_string();
    match path.as_str() {
        "/echo" => {
            let seen = seen_headers(&req);
            let mut rsp = Response::new(req.into_body().boxed());
            *rsp.headers_mut() = seen;
            rsp
        }
        "/trailers" => {
            let collected = match req.into_body().collect().await {
                Ok(c) => c,
                Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}")),
            };
            let req_trailer = collected
                .trailers()
                .and_then(|t| t.get("x-req-trailer").cloned())
                .unwrap_or(HeaderValue::from_static("missing"));
            let body_len = collected.to_bytes().len();
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            trailers.insert("grpc-message", HeaderValue::from_static("ok"));
            trailers.insert("x-req-trailer", req_trailer);
            let frames = vec![
                Ok::<_, hyper::Error>(Frame::data(Bytes::from(format!(
                    "received {body_len} bytes"
                )))),
                Ok(Frame::trailers(trailers)),
            ];
            let mut rsp = Response::new(StreamBody::new(stream::iter(frames)).boxed());
            rsp.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/grpc"));
            rsp
        }
        "/ws" => {
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(echo_upgraded(on_upgrade));
            let mut rsp = Response::new(empty());
            *rsp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            rsp.headers_mut()
                .insert("upgrade", HeaderValue::from_static("websocket"));
            rsp.headers_mut()
                .insert("connection", HeaderValue::from_static("upgrade"));
            rsp
        }
        "/gate" => {
            let opened = state.gate.notified();
            let _ = state.arrived.send(path);
            opened.await;
            text(StatusCode::OK, "gate opened".into())
        }
        "/barrier" => {
            state.barrier.wait().await;
            text(StatusCode::OK, "all arrived".into())
        }
        "/discard" => {
            let mut body = req.into_body();
            let mut n: u64 = 0;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => n += f.data_ref().map_or(0, |d| d.len() as u64),
                    Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}")),
                }
            }
            text(StatusCode::OK, n.to_string())
        }
        p if p.starts_with("/bytes/") => {
            let total: usize = p["/bytes/".len()..].parse().unwrap_or(0);
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let chunks = total / chunk.len();
            let rest = total % chunk.len();
            let frames = (0..chunks)
                .map(move |_| chunk.clone())
                .chain((rest > 0).then(|| Bytes::from(vec![b'x'; rest])))
                .map(|b| Ok::<_, hyper::Error>(Frame::data(b)));
            Response::new(StreamBody::new(stream::iter(frames)).boxed())
        }
        _ => text(StatusCode::OK, "ok".into()),
    }
}

fn seen_headers(req: &Request<Incoming>) -> HeaderMap {
    let mut seen = HeaderMap::new();
    let host = req
        .headers()
        .get("host")
        .cloned()
        .or_else(|| {
            req.uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        })
        .unwrap_or(HeaderValue::from_static("none"));
    seen.insert("x-seen-host", host);
    let version = format!("{:?}", req.version());
    seen.insert(
        "x-seen-version",
        HeaderValue::from_str(&version).expect("version"),
    );
    for name in [
        "x-hop",
        "keep-alive",
        "proxy-connection",
        "te",
        "x-end-to-end",
        "traceparent",
        "tracestate",
        "b3",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-sampled",
    ] {
        if let Some(v) = req.headers().get(name) {
            seen.insert(
                http::HeaderName::from_bytes(format!("x-seen-{name}").as_bytes()).expect("name"),
                v.clone(),
            );
        }
    }
    seen
}

async fn echo_upgraded(on_upgrade: hyper::upgrade::OnUpgrade) {
    let Ok(upgraded) = on_upgrade.await else {
        return;
    };
    let mut io = TokioIo::new(upgraded);
    let mut buf = [0u8; 4096];
    loop {
        match io.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if io.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut rsp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *rsp.status_mut() = status;
    rsp
}
