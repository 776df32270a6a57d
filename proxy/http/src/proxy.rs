//! Forwarding one connection's requests to its endpoint.

use std::{convert::Infallible, sync::Arc, time::Instant};

use bytes::Bytes;
use http::{
    header::{self, HeaderValue},
    uri::{Authority, PathAndQuery, Scheme},
    Request, Response, StatusCode, Uri, Version,
};
use http_body_util::{Either, Full};
use hyper::{body::Incoming, upgrade::OnUpgrade};
use hyper_util::rt::TokioIo;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};
use weft_proxy_metrics::RequestSeries;
use weft_proxy_transport::{ConnectError, OrigDstAddr};

use crate::{
    balanced::Balanced,
    body::ResponseBody,
    client::{Checkout, ClientError, Endpoint, UpstreamVersion},
    headers, mesh, ERROR_HEADER,
};

/// Why the proxy answered a request itself instead of relaying the upstream's response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The upstream connection could not be made.
    #[error(transparent)]
    Connect(ConnectError),
    /// The upstream connection failed after it was made (reset, closed, protocol error).
    #[error("upstream {addr} failed: {source}")]
    Upstream {
        addr: OrigDstAddr,
        #[source]
        source: hyper::Error,
    },
    /// The request cannot be sent on as it is.
    #[error("invalid request: {0}")]
    InvalidRequest(#[source] http::Error),
    /// The mesh hop failed: mTLS to the peer proxy, or the peer refused a tunnel.
    #[error(transparent)]
    Mesh(ClientError),
    /// The destination is a Service with no ready endpoints.
    #[error("service {service} has no ready endpoints")]
    NoEndpoints { service: Arc<str> },
}

impl ProxyError {
    /// The status the caller sees: the one place errors become statuses.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::Connect(e) if e.is_timeout() => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Connect(_) | ProxyError::Upstream { .. } | ProxyError::Mesh(_) => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::NoEndpoints { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn from_client(addr: OrigDstAddr, e: ClientError) -> Self {
        match e {
            ClientError::Connect(e) => ProxyError::Connect(e),
            ClientError::Http(source) => ProxyError::Upstream { addr, source },
            e @ (ClientError::Tls { .. } | ClientError::TunnelRefused { .. }) => {
                ProxyError::Mesh(e)
            }
        }
    }

    fn into_response(self) -> Response<Either<Incoming, Full<Bytes>>> {
        let msg = self.to_string();
        let mut rsp = Response::new(Either::Right(Full::new(Bytes::from(format!("{msg}\n")))));
        *rsp.status_mut() = self.status();
        let headers = rsp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Ok(v) = HeaderValue::from_str(&msg) {
            headers.insert(ERROR_HEADER, v);
        }
        rsp
    }
}

/// Forwards the requests of one accepted connection to its endpoint.
///
/// Built once per connection (one allocation); each request clones an `Arc`.
#[derive(Clone, Debug)]
pub struct Proxy {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dst: OrigDstAddr,
    backend: Backend,
    /// Upgraded tunnels outlive their request; the drain waits for them.
    tunnels: TaskTracker,
}

/// Where a connection's requests go.
#[derive(Debug)]
pub enum Backend {
    /// Every request to one endpoint (the destination itself, or the peer proxy in front of
    /// it), counted in `series`.
    Fixed {
        endpoint: Arc<Endpoint>,
        series: Arc<RequestSeries>,
    },
    /// Each request to one of a Service's endpoints, chosen per request.
    Balanced {
        balancer: Arc<Balanced>,
        /// The HTTP version of plaintext endpoints' pools (the client's).
        version: UpstreamVersion,
        /// Counts requests answered 503 for want of endpoints.
        metrics: Arc<weft_proxy_metrics::Metrics>,
    },
}

impl Proxy {
    /// A proxy for one connection whose requests, addressed to `dst`, go to `endpoint` (the
    /// destination itself, or the peer proxy in front of it), counted in `series`.
    pub fn new(
        dst: OrigDstAddr,
        endpoint: Arc<Endpoint>,
        series: Arc<RequestSeries>,
        tunnels: TaskTracker,
    ) -> Self {
        Self::with_backend(dst, Backend::Fixed { endpoint, series }, tunnels)
    }

    /// A proxy for one connection whose requests, addressed to `dst`, go to `backend`.
    pub fn with_backend(dst: OrigDstAddr, backend: Backend, tunnels: TaskTracker) -> Self {
        Self {
            inner: Arc::new(Inner {
                dst,
                backend,
                tunnels,
            }),
        }
    }

    /// Proxies one request. Never fails: every error becomes a response with a status.
    pub async fn handle(
        self,
        req: Request<Incoming>,
    ) -> Result<Response<ResponseBody>, Infallible> {
        let start = Instant::now();
        // A balanced connection picks its endpoint per request.
        let picked = match &self.inner.backend {
            Backend::Balanced { balancer, .. } => balancer.pick(),
            Backend::Fixed { .. } => None,
        };
        let (endpoint, port) = match (&picked, &self.inner.backend) {
            (Some(p), Backend::Balanced { version, .. }) => {
                (p.slot.endpoint(*version), p.slot.addr.port())
            }
            (_, Backend::Fixed { endpoint, .. }) => (endpoint, self.inner.dst.0.port()),
            (
                None,
                Backend::Balanced {
                    balancer, metrics, ..
                },
            ) => return Ok(no_endpoints(balancer, metrics, start)),
        };
        let result = self.forward(req, endpoint, port).await;
        let (rsp, checkout) = match result {
            Ok((rsp, checkout)) => (rsp.map(Either::Left), checkout),
            Err(e) => {
                info!(error = %e, dst = %self.inner.dst, "request failed");
                (e.into_response(), None)
            }
        };
        let status = rsp.status();
        // The endpoint's latency and circuit breaker learn the outcome as soon as the head is
        // in: an error, or a 5xx from the endpoint, is a failure.
        let series = match (picked, &self.inner.backend) {
            (Some(p), _) => {
                let series = p.slot.series.clone();
                p.finish(!status.is_server_error());
                series
            }
            (None, Backend::Fixed { series, .. }) => series.clone(),
            (None, Backend::Balanced { metrics, .. }) => {
                metrics.plaintext(weft_proxy_metrics::Direction::Outbound)
            }
        };
        Ok(rsp.map(|b| ResponseBody::new(b, series, status, start, checkout)))
    }

    async fn forward(
        &self,
        mut req: Request<Incoming>,
        endpoint: &Arc<Endpoint>,
        port: u16,
    ) -> Result<(Response<Incoming>, Option<Checkout>), ProxyError> {
        let connect = headers::is_connect(&req);
        let upgrade = connect || headers::is_upgrade(&req);
        headers::strip_hop_by_hop(req.headers_mut(), upgrade && !connect);
        let downstream = upgrade.then(|| hyper::upgrade::on(&mut req));
        let dst = self.inner.dst;
        let client_error = |e| ProxyError::from_client(dst, e);

        let (mut rsp, checkout) = if endpoint.mesh().is_none() {
            if !connect {
                self.set_upstream_uri(&mut req)?;
            }
            endpoint.send(req).await.map_err(client_error)?
        } else if upgrade {
            // The rare path, boxed so it does not swell every request's future.
            (
                Box::pin(self.upgrade_over_mesh(req, connect, endpoint, port)).await?,
                None,
            )
        } else {
            // Every request crosses the mesh hop as HTTP/2, marked with what the other side
            // needs to hand it on.
            let version = req.version();
            mesh::mark_outbound(req.headers_mut(), version, port);
            *req.version_mut() = Version::HTTP_2;
            self.set_upstream_uri(&mut req)?;
            let rsp = endpoint
                .send_h2(req.map(Either::Left))
                .await
                .map_err(client_error)?;
            (rsp, None)
        };

        let switching = rsp.status() == StatusCode::SWITCHING_PROTOCOLS;
        headers::strip_hop_by_hop(rsp.headers_mut(), switching);
        if let Some(downstream) = downstream {
            if switching || (connect && rsp.status().is_success()) {
                let upstream = hyper::upgrade::on(&mut rsp);
                self.inner.tunnels.spawn(tunnel(downstream, upstream));
            }
        }
        Ok((rsp, checkout))
    }

    /// An HTTP/1 upgrade or CONNECT to a meshed destination: HTTP/1 inside a CONNECT stream to
    /// the port, which the upgrade then owns.
    async fn upgrade_over_mesh(
        &self,
        mut req: Request<Incoming>,
        connect: bool,
        endpoint: &Endpoint,
        port: u16,
    ) -> Result<Response<Incoming>, ProxyError> {
        let dst = self.inner.dst;
        let client_error = |e| ProxyError::from_client(dst, e);
        *req.version_mut() = Version::HTTP_11;
        if !connect {
            self.set_upstream_uri(&mut req)?;
        }
        let tunnel = endpoint
            .open_tunnel(self.authority()?, port)
            .await
            .map_err(client_error)?;
        let (mut tx, conn) = hyper::client::conn::http1::handshake(tunnel)
            .await
            .map_err(|e| client_error(e.into()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                debug!(error = %e, "tunnelled upgrade connection failed");
            }
        });
        tx.send_request(req)
            .await
            .map_err(|e| client_error(e.into()))
    }

    /// The destination as an authority, for requests that name none.
    fn authority(&self) -> Result<Authority, ProxyError> {
        Authority::try_from(self.inner.dst.to_string())
            .map_err(|e| ProxyError::InvalidRequest(e.into()))
    }

    /// The URI form each upstream version needs, leaving `Host` alone: HTTP/1 sends
    /// origin-form (`/path?query`); HTTP/2 needs a scheme and `:authority`, kept from the client
    /// or taken from its `Host` header. The common cases (origin-form HTTP/1, full HTTP/2) change
    /// nothing.
    fn set_upstream_uri(&self, req: &mut Request<Incoming>) -> Result<(), ProxyError> {
        let uri = req.uri();
        if req.version() != Version::HTTP_2 {
            if uri.authority().is_some() {
                let path = uri
                    .path_and_query()
                    .cloned()
                    .unwrap_or(PathAndQuery::from_static("/"));
                *req.uri_mut() = Uri::from(path);
            }
            return Ok(());
        }
        if uri.scheme().is_some() && uri.authority().is_some() {
            return Ok(());
        }
        let authority = match req
            .headers()
            .get(header::HOST)
            .map(|h| Authority::try_from(h.as_bytes()))
        {
            Some(Ok(a)) => a,
            _ => self.authority()?,
        };
        let mut parts = std::mem::take(req.uri_mut()).into_parts();
        parts.scheme.get_or_insert(Scheme::HTTP);
        parts.authority = Some(authority);
        parts
            .path_and_query
            .get_or_insert(PathAndQuery::from_static("/"));
        *req.uri_mut() =
            Uri::from_parts(parts).map_err(|e| ProxyError::InvalidRequest(e.into()))?;
        Ok(())
    }
}

/// The answer for a Service without endpoints: 503, counted.
fn no_endpoints(
    balancer: &Balanced,
    metrics: &weft_proxy_metrics::Metrics,
    start: Instant,
) -> Response<ResponseBody> {
    metrics.no_endpoints("http");
    let e = ProxyError::NoEndpoints {
        service: balancer.service().clone(),
    };
    debug!(error = %e, "request refused");
    let rsp = e.into_response();
    let status = rsp.status();
    let series = metrics.plaintext(weft_proxy_metrics::Direction::Outbound);
    rsp.map(|b| ResponseBody::new(b, series, status, start, None))
}

/// Copies bytes both ways between the two sides of a switched connection until both close.
async fn tunnel(downstream: OnUpgrade, upstream: OnUpgrade) {
    let (down, up) = match tokio::try_join!(downstream, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            debug!(error = %e, "upgrade did not complete");
            return;
        }
    };
    let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
    match tokio::io::copy_bidirectional(&mut down, &mut up).await {
        Ok((to_server, to_client)) => debug!(to_server, to_client, "upgraded connection closed"),
        Err(e) => debug!(error = %e, "upgraded connection failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// hyper moves this future into a new task for every HTTP/2 stream: its size is copied per
    /// request. Profiling found the dial path's futures inflating it (2,904 bytes); boxed, it is
    /// 2,032, the rest being hyper's own send futures. The HTTP/2 request body became an
    /// `Either` (so the mesh hop can send a body-less CONNECT on the same connection): 2,072. Balancing picks an endpoint per request and holds the pick (the endpoint and its
    /// in-flight record) across the request: 2,128, kept in the future rather than boxed, since
    /// a heap allocation per request costs more than copying 56 bytes.
    /// A regression guard.
    #[test]
    fn the_per_request_future_stays_small() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let _guard = rt.enter();
        let metrics = Arc::new(weft_proxy_metrics::Metrics::new("t").expect("metrics"));
        let upstreams = crate::Upstreams::new(
            crate::ClientSettings {
                connect_timeout: std::time::Duration::from_secs(1),
                idle_timeout: std::time::Duration::from_secs(1),
                max_idle_per_endpoint: 1,
            },
            metrics.clone(),
        );
        let dst = OrigDstAddr(([127, 0, 0, 1], 1).into());
        let proxy = Proxy::new(
            dst,
            upstreams.endpoint(dst.0, crate::client::UpstreamVersion::Http2),
            metrics.plaintext(weft_proxy_metrics::Direction::Outbound),
            TaskTracker::new(),
        );
        // A request body of the real type needs a connection; the future's size does not
        // depend on the value, so build the future inside a closure that is never called.
        let make = |req: Request<Incoming>| proxy.clone().handle(req);
        let size = size_of_return(&make);
        assert!(size <= 2128, "Proxy::handle's future grew to {size} bytes");

        fn size_of_return<F, Fut>(_: &F) -> usize
        where
            F: Fn(Request<Incoming>) -> Fut,
        {
            std::mem::size_of::<Fut>()
        }
    }
}
