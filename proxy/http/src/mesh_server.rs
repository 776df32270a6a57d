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
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::debug;
use weft_proxy_metrics::RequestSeries;
use weft_proxy_transport::{connect, Coalesce, OrigDstAddr};

use crate::{
    body::{BoxError, RequestBody, ResponseBody},
    client::{Upstreams, MESH_HTTP1_IDLE_CUT, MESH_MAX_FRAME_SIZE},
    error::ProxyError,
    forward::{upstream_version, Forward, Upstream},
    h2_server::{serve_h2, H2ServerSettings, Reply},
    h2_stream::Tunnel,
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
) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(Conn {
        ctx,
        forwards: Mutex::new(Vec::new()),
        tracing: settings.trace.clone(),
        tap: settings.tap.clone(),
    });
    if protocol == MeshProtocol::Http1 {
        let answer = move |req: Request<Incoming>| {
            let conn = conn.clone();
            async move {
                match conn.handle(req.map(RequestBody::from)).await {
                    // Never a tunnel: an HTTP/1 CONNECT is upgraded by hyper (see `tunnel`).
                    Reply::Response(rsp) | Reply::Tunnel(rsp, _) => Ok::<_, Infallible>(rsp),
                }
            }
        };
        serve_http1(
            TokioIo::new(io),
            MESH_HTTP1_IDLE_CUT,
            settings.max_header_bytes,
            service_fn(answer),
            shutdown,
        )
        .await?;
        return Ok(());
    }
    let h2 = H2ServerSettings {
        max_header_list: u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX),
        max_frame_size: MESH_MAX_FRAME_SIZE,
        keep_alive: Some((Duration::from_secs(20), Duration::from_secs(10))),
    };
    // Responses finishing together leave in one write (see Coalesce).
    let answer = move |req| conn.clone().handle(req);
    serve_h2(Coalesce::new(io), &h2, answer, shutdown).await?;
    Ok(())
}

impl Conn {
    async fn handle(self: Arc<Self>, mut req: Request<RequestBody>) -> Reply {
        let start = Instant::now();
        let traced = self
            .tracing
            .as_ref()
            .and_then(|t| trace::begin(t, &mut req));
        let tapped = self.tap.as_ref().and_then(|t| t.start(&req));
        let (reply, error) = match self.deliver(req, start).await {
            Ok(reply) => (reply, None),
            Err(Refused(e)) => {
                // Refused here, before any stage counted it.
                self.ctx.series.record(e.status(), start.elapsed());
                debug!(error = %e, "mesh request refused");
                let kind = e.kind();
                (Reply::Response(e.into_response()), Some(kind))
            }
            // The endpoint stage logged and counted it.
            Err(Failed(e)) => {
                let kind = e.kind();
                (Reply::Response(e.into_response()), Some(kind))
            }
        };
        let (Reply::Response(rsp) | Reply::Tunnel(rsp, _)) = &reply;
        if let Some(span) = traced {
            let peer = (self.ctx.peer, self.ctx.peer_identity.clone());
            (*span).peer(peer.0, peer.1).finish(rsp, error);
        }
        if let Some(tapped) = tapped {
            tapped.finish(tap::outcome(rsp, error, Some(&self.ctx.series)));
        }
        reply
    }

    async fn deliver(
        &self,
        mut req: Request<RequestBody>,
        start: Instant,
    ) -> Result<Reply, Outcome> {
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
            .call(req, cx)
            .await
            .map(Reply::Response)
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
    /// Over HTTP/2 the stream itself becomes the tunnel once the answer is sent; over HTTP/1,
    /// hyper's upgrade of the connection.
    async fn tunnel(
        &self,
        mut req: Request<RequestBody>,
        addr: SocketAddr,
        start: Instant,
    ) -> Result<Reply, ProxyError> {
        let mut tcp = connect(addr, self.ctx.connect_timeout)
            .await
            .map_err(ProxyError::Connect)?;
        let mut rsp = Response::new(ResponseBody::recorded(
            Either::Right(Full::new(Bytes::new())),
            self.ctx.series.clone(),
            StatusCode::OK,
            start,
            None,
        ));
        *rsp.status_mut() = StatusCode::OK;
        let tunnels = self.ctx.tunnels.clone();
        if req.version() == Version::HTTP_2 {
            let open = move |mut up: Tunnel| {
                tunnels.spawn(async move { copy(&mut up, &mut tcp, addr).await });
            };
            return Ok(Reply::Tunnel(rsp, Box::new(open)));
        }
        let downstream = hyper::upgrade::on(&mut req);
        tunnels.spawn(async move {
            match downstream.await {
                Ok(up) => copy(&mut TokioIo::new(up), &mut tcp, addr).await,
                Err(e) => debug!(error = %e, "mesh tunnel did not open"),
            }
        });
        Ok(Reply::Response(rsp))
    }
}

/// Copies a mesh tunnel's bytes both ways until both sides close.
async fn copy<A>(up: &mut A, tcp: &mut TcpStream, addr: SocketAddr)
where
    A: AsyncRead + AsyncWrite + Unpin,
{
    match weft_proxy_transport::copy::copy_bidirectional(up, tcp).await {
        Ok((to_app, to_peer)) => debug!(%addr, to_app, to_peer, "mesh tunnel closed"),
        Err(e) => debug!(%addr, error = %e, "mesh tunnel failed"),
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
