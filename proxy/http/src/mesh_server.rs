//! The receiving end of the mesh hop: HTTP/2 or HTTP/1 (by the ALPN negotiated) over the
//! terminated mTLS connection from a peer proxy. Each request is handed to the app on the port
//! it was marked for, in the protocol the calling app spoke; a CONNECT becomes a TCP connection
//! to the port.

use std::{
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::{Either, Full};
use hyper::{body::Incoming, server::conn::http2, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::debug;
use weft_proxy_metrics::RequestSeries;
use weft_proxy_transport::{connect, Coalesce, OrigDstAddr};

use crate::{
    body::{RequestBody, ResponseBody},
    client::{Upstreams, MESH_HTTP1_IDLE_CUT},
    error::ProxyError,
    forward::{upstream_version, Forward, Upstream},
    mesh,
    server::serve_http1,
    stage::{Cx, Stage},
    tap, trace, ServerSettings,
};

use Outcome::{Failed, Refused};

/// Where requests from the mesh land.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deliver {
    /// Explicit mode: one fixed address, whatever port was marked.
    To(SocketAddr),
    /// Transparent mode: the marked port on this pod's own address (the one the peer dialled).
    LocalPort(IpAddr),
}

/// One mesh connection's context.
#[derive(Debug)]
pub struct MeshInbound {
    pub deliver: Deliver,
    pub upstreams: Arc<Upstreams>,
    /// Counted with the peer's identity.
    pub series: Arc<RequestSeries>,
    pub tunnels: TaskTracker,
    pub connect_timeout: Duration,
    /// Ports that must never be delivered to (the proxy's own listeners): a loop.
    pub own_ports: Vec<u16>,
    /// The peer proxy's address and SPIFFE ID, for server spans.
    pub peer: Option<SocketAddr>,
    pub peer_identity: Option<Arc<str>>,
}

/// The most (address, version) pairs whose [`Forward`] one mesh connection keeps.
const MAX_FORWARDS_PER_CONN: usize = 32;

struct Conn {
    ctx: MeshInbound,
    forwards: Mutex<Vec<(SocketAddr, Version, Arc<Forward>)>>,
    tracing: Option<Arc<weft_proxy_trace::Tracing>>,
    tap: Option<weft_proxy_tap::Point>,
}

/// What a mesh connection carries, as its ALPN said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeshProtocol {
    /// `weft.dev/h2`: many requests at once, tunnels included.
    Http2,
    /// `weft.dev/h1`: the apps' HTTP/1, one request at a time.
    Http1,
}

/// Serves a peer proxy's requests on `io` until it closes or `shutdown` (HTTP/2: GOAWAY, then
/// open streams finish; HTTP/1: after the current response).
pub async fn serve_mesh<I>(
    io: I,
    protocol: MeshProtocol,
    settings: &ServerSettings,
    ctx: MeshInbound,
    shutdown: CancellationToken,
) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(Conn {
        ctx,
        forwards: Mutex::new(Vec::new()),
        tracing: settings.trace.clone(),
        tap: settings.tap.clone(),
    });
    let handle = move |req| conn.clone().handle(req);
    if protocol == MeshProtocol::Http1 {
        return serve_http1(
            TokioIo::new(io),
            MESH_HTTP1_IDLE_CUT,
            settings.max_header_bytes,
            service_fn(handle),
            shutdown,
        )
        .await;
    }
    // Boxed, as the app-facing HTTP/2 server does (see `server::serve`): a stream's task then
    // copies a pointer, not the request's whole future.
    let service = service_fn(move |req| Box::pin(handle(req)));
    let conn = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .max_frame_size(crate::client::MESH_MAX_FRAME_SIZE)
        // Responses finishing together leave in one write (see Coalesce).
        .serve_connection(TokioIo::new(Coalesce::new(io)), service);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => return res,
        () = shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
    }
    conn.await
}

impl Conn {
    async fn handle(
        self: Arc<Self>,
        mut req: Request<Incoming>,
    ) -> Result<Response<ResponseBody>, Infallible> {
        let start = Instant::now();
        let traced = self
            .tracing
            .as_ref()
            .and_then(|t| trace::begin(t, &mut req));
        let tapped = self.tap.as_ref().and_then(|t| t.start(&req));
        let (rsp, error) = match self.deliver(req, start).await {
            Ok(rsp) => (rsp, None),
            Err(Refused(e)) => {
                // Refused here, before any stage counted it.
                self.ctx.series.record(e.status(), start.elapsed());
                debug!(error = %e, "mesh request refused");
                let kind = e.kind();
                (e.into_response(), Some(kind))
            }
            // The endpoint stage logged and counted it.
            Err(Failed(e)) => {
                let kind = e.kind();
                (e.into_response(), Some(kind))
            }
        };
        if let Some(span) = traced {
            let peer = (self.ctx.peer, self.ctx.peer_identity.clone());
            (*span).peer(peer.0, peer.1).finish(&rsp, error);
        }
        if let Some(tapped) = tapped {
            tapped.finish(tap::outcome(&rsp, error, Some(&self.ctx.series)));
        }
        Ok(rsp)
    }

    async fn deliver(
        &self,
        mut req: Request<Incoming>,
        start: Instant,
    ) -> Result<Response<ResponseBody>, Outcome> {
        let marked = mesh::take_inbound(req.headers_mut()).map_err(|e| Refused(e.into()))?;
        let addr = match self.ctx.deliver {
            Deliver::To(addr) => addr,
            Deliver::LocalPort(ip) => {
                if self.ctx.own_ports.contains(&marked.port) {
                    return Err(Refused(ProxyError::Loop { port: marked.port }));
                }
                SocketAddr::new(ip, marked.port)
            }
        };
        if req.method() == Method::CONNECT {
            return self.tunnel(req, addr, start).await.map_err(Refused);
        }
        *req.version_mut() = marked.version;
        if marked.version != Version::HTTP_2 && !req.headers().contains_key(header::HOST) {
            // HTTP/2 carried the host as :authority; HTTP/1 needs it back as a header.
            if let Some(v) = req
                .uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            {
                req.headers_mut().insert(header::HOST, v);
            }
        }
        let cx = Cx::new(OrigDstAddr(addr), start);
        let forward = self.forward(addr, marked.version);
        forward
            .call(req.map(RequestBody::Incoming), cx)
            .await
            .map_err(Failed)
    }

    /// The endpoint stage for the app at `addr` spoken to in `version`, kept per connection.
    fn forward(&self, addr: SocketAddr, version: Version) -> Arc<Forward> {
        let mut forwards = self.forwards.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, _, f)) = forwards
            .iter()
            .find(|(a, v, _)| *a == addr && *v == version)
        {
            return f.clone();
        }
        let endpoint = self.ctx.upstreams.endpoint(addr, upstream_version(version));
        let forward = Arc::new(Forward::new(
            Upstream::Plain(endpoint),
            addr.port(),
            self.ctx.series.clone(),
            self.ctx.tunnels.clone(),
        ));
        if forwards.len() >= MAX_FORWARDS_PER_CONN {
            forwards.clear();
        }
        forwards.push((addr, version, forward.clone()));
        forward
    }

    /// A CONNECT stream: a TCP connection to `addr`, bytes copied both ways until both close.
    async fn tunnel(
        &self,
        mut req: Request<Incoming>,
        addr: SocketAddr,
        start: Instant,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let mut tcp = connect(addr, self.ctx.connect_timeout)
            .await
            .map_err(ProxyError::Connect)?;
        let downstream = hyper::upgrade::on(&mut req);
        self.ctx.tunnels.spawn(async move {
            match downstream.await {
                Ok(up) => {
                    let mut up = TokioIo::new(up);
                    match weft_proxy_transport::copy::copy_bidirectional(&mut up, &mut tcp).await {
                        Ok((to_app, to_peer)) => {
                            debug!(%addr, to_app, to_peer, "mesh tunnel closed")
                        }
                        Err(e) => debug!(%addr, error = %e, "mesh tunnel failed"),
                    }
                }
                Err(e) => debug!(error = %e, "mesh tunnel did not open"),
            }
        });
        let mut rsp = Response::new(ResponseBody::recorded(
            Either::Right(Full::new(Bytes::new())),
            self.ctx.series.clone(),
            StatusCode::OK,
            start,
            None,
        ));
        *rsp.status_mut() = StatusCode::OK;
        Ok(rsp)
    }
}

/// How a mesh request ended without an upstream response.
#[derive(Debug)]
enum Outcome {
    /// Refused before any stage saw it: not counted yet.
    Refused(ProxyError),
    /// Failed in the endpoint stage, which counted it.
    Failed(ProxyError),
}
