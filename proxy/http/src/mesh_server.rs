//! The receiving end of the mesh hop: HTTP/2 over the terminated mTLS connection from a peer
//! proxy. Each request is handed to the app on the port it was marked for, in the protocol the
//! calling app spoke; a CONNECT stream becomes a TCP connection to the port.

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
use weft_proxy_transport::{connect, OrigDstAddr};

use crate::{
    body::ResponseBody,
    client::{UpstreamVersion, Upstreams},
    mesh, Proxy, ServerSettings, ERROR_HEADER,
};

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
}

/// The most (address, version) pairs whose [`Proxy`] one mesh connection keeps.
const MAX_PROXIES_PER_CONN: usize = 32;

struct Conn {
    ctx: MeshInbound,
    proxies: Mutex<Vec<(SocketAddr, UpstreamVersion, Proxy)>>,
}

/// Serves HTTP/2 from a peer proxy on `io` until it closes or `shutdown` (GOAWAY, then open
/// streams finish).
pub async fn serve_mesh<I>(
    io: I,
    settings: &ServerSettings,
    ctx: MeshInbound,
    shutdown: CancellationToken,
) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(Conn {
        ctx,
        proxies: Mutex::new(Vec::new()),
    });
    let service = service_fn(move |req| conn.clone().handle(req));
    let conn = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .serve_connection(TokioIo::new(io), service);
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
        let marked = match mesh::take_inbound(req.headers_mut()) {
            Ok(m) => m,
            Err(e) => return Ok(self.error(StatusCode::BAD_REQUEST, &e.to_string(), start)),
        };
        let addr = match self.ctx.deliver {
            Deliver::To(addr) => addr,
            Deliver::LocalPort(ip) => {
                if self.ctx.own_ports.contains(&marked.port) {
                    let msg = format!("port {} is the proxy's own; refusing a loop", marked.port);
                    return Ok(self.error(StatusCode::BAD_REQUEST, &msg, start));
                }
                SocketAddr::new(ip, marked.port)
            }
        };
        if req.method() == Method::CONNECT {
            return Ok(self.tunnel(req, addr, start).await);
        }
        *req.version_mut() = marked.version;
        let version = if marked.version == Version::HTTP_2 {
            UpstreamVersion::Http2
        } else {
            // HTTP/2 carried the host as :authority; HTTP/1 needs it back as a header.
            if !req.headers().contains_key(header::HOST) {
                if let Some(v) = req
                    .uri()
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
                {
                    req.headers_mut().insert(header::HOST, v);
                }
            }
            UpstreamVersion::Http1
        };
        self.proxy(addr, version).handle(req).await
    }

    fn proxy(&self, addr: SocketAddr, version: UpstreamVersion) -> Proxy {
        let mut proxies = self.proxies.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, _, p)) = proxies.iter().find(|(a, v, _)| *a == addr && *v == version) {
            return p.clone();
        }
        let proxy = Proxy::new(
            OrigDstAddr(addr),
            self.ctx.upstreams.endpoint(addr, version),
            self.ctx.series.clone(),
            self.ctx.tunnels.clone(),
        );
        if proxies.len() >= MAX_PROXIES_PER_CONN {
            proxies.clear();
        }
        proxies.push((addr, version, proxy.clone()));
        proxy
    }

    /// A CONNECT stream: a TCP connection to `addr`, bytes copied both ways until both close.
    async fn tunnel(
        &self,
        mut req: Request<Incoming>,
        addr: SocketAddr,
        start: Instant,
    ) -> Response<ResponseBody> {
        let mut tcp = match connect(addr, self.ctx.connect_timeout).await {
            Ok(tcp) => tcp,
            Err(e) => return self.error(StatusCode::BAD_GATEWAY, &e.to_string(), start),
        };
        let downstream = hyper::upgrade::on(&mut req);
        self.ctx.tunnels.spawn(async move {
            match downstream.await {
                Ok(up) => {
                    let mut up = TokioIo::new(up);
                    match tokio::io::copy_bidirectional(&mut up, &mut tcp).await {
                        Ok((to_app, to_peer)) => {
                            debug!(%addr, to_app, to_peer, "mesh tunnel closed")
                        }
                        Err(e) => debug!(%addr, error = %e, "mesh tunnel failed"),
                    }
                }
                Err(e) => debug!(error = %e, "mesh tunnel did not open"),
            }
        });
        self.respond(StatusCode::OK, Full::new(Bytes::new()), start)
    }

    fn error(&self, status: StatusCode, msg: &str, start: Instant) -> Response<ResponseBody> {
        debug!(%status, error = msg, "mesh request refused");
        let mut rsp = self.respond(status, Full::new(Bytes::from(format!("{msg}\n"))), start);
        if let Ok(v) = HeaderValue::from_str(msg) {
            rsp.headers_mut().insert(ERROR_HEADER, v);
        }
        rsp
    }

    fn respond(
        &self,
        status: StatusCode,
        body: Full<Bytes>,
        start: Instant,
    ) -> Response<ResponseBody> {
        let mut rsp = Response::new(ResponseBody::new(
            Either::Right(body),
            self.ctx.series.clone(),
            status,
            start,
            None,
        ));
        *rsp.status_mut() = status;
        rsp
    }
}
