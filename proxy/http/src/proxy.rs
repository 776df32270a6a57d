//! Forwarding one connection's requests to its endpoint.

use std::{convert::Infallible, error::Error as _, sync::Arc, time::Instant};

use bytes::Bytes;
use http::{
    header::{self, HeaderValue},
    uri::{Authority, PathAndQuery, Scheme},
    Request, Response, StatusCode, Uri,
};
use http_body_util::{Either, Full};
use hyper::{body::Incoming, upgrade::OnUpgrade};
use hyper_util::rt::TokioIo;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};
use weft_proxy_metrics::{Direction, Metrics};
use weft_proxy_transport::{ConnectError, OrigDstAddr};

use crate::{
    body::ResponseBody,
    client::{UpstreamClient, UpstreamVersion, Upstreams},
    headers, ERROR_HEADER,
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
        source: hyper_util::client::legacy::Error,
    },
    /// The request cannot be sent on as it is.
    #[error("invalid request: {0}")]
    InvalidRequest(#[source] http::Error),
}

impl ProxyError {
    /// The status the caller sees: the one place errors become statuses.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::Connect(e) if e.is_timeout() => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Connect(_) | ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
        }
    }

    fn from_client(addr: OrigDstAddr, e: hyper_util::client::legacy::Error) -> Self {
        // The connector's own error carries the reason worth showing; find it in the chain.
        let mut source = e.source();
        while let Some(s) = source {
            if let Some(c) = s.downcast_ref::<ConnectError>() {
                return ProxyError::Connect(match c {
                    ConnectError::Refused { addr } => ConnectError::Refused { addr: *addr },
                    ConnectError::TimedOut { addr, timeout } => ConnectError::TimedOut {
                        addr: *addr,
                        timeout: *timeout,
                    },
                    ConnectError::Io { addr, source } => ConnectError::Io {
                        addr: *addr,
                        source: std::io::Error::new(source.kind(), source.to_string()),
                    },
                });
            }
            source = s.source();
        }
        ProxyError::Upstream { addr, source: e }
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
    /// The endpoint as a URI authority: the pooled client's key for HTTP/1 requests, whose
    /// `Host` header travels separately.
    authority: Authority,
    client: UpstreamClient,
    direction: Direction,
    metrics: Arc<Metrics>,
    /// Upgraded tunnels outlive their request; the drain waits for them.
    tunnels: TaskTracker,
}

impl Proxy {
    /// A proxy for one connection whose requests go to `dst` as `version`.
    pub fn new(
        dst: OrigDstAddr,
        version: UpstreamVersion,
        upstreams: &Upstreams,
        direction: Direction,
        metrics: Arc<Metrics>,
        tunnels: TaskTracker,
    ) -> Self {
        let authority = Authority::try_from(dst.0.to_string())
            .unwrap_or_else(|_| Authority::from_static("upstream"));
        Self {
            inner: Arc::new(Inner {
                dst,
                authority,
                client: upstreams.client(dst.0, version),
                direction,
                metrics,
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
        let rsp = match self.forward(req).await {
            Ok(rsp) => rsp.map(Either::Left),
            Err(e) => {
                info!(error = %e, dst = %self.inner.dst, "request failed");
                e.into_response()
            }
        };
        let status = rsp.status();
        let inner = &self.inner;
        Ok(
            rsp.map(|b| {
                ResponseBody::new(b, inner.metrics.clone(), inner.direction, status, start)
            }),
        )
    }

    async fn forward(&self, mut req: Request<Incoming>) -> Result<Response<Incoming>, ProxyError> {
        let connect = headers::is_connect(&req);
        let upgrade = connect || headers::is_upgrade(&req);
        headers::strip_hop_by_hop(req.headers_mut(), upgrade && !connect);
        if !connect {
            self.set_upstream_uri(&mut req)?;
        }
        let downstream = upgrade.then(|| hyper::upgrade::on(&mut req));

        let mut rsp = self
            .inner
            .client
            .request(req)
            .await
            .map_err(|e| ProxyError::from_client(self.inner.dst, e))?;

        let switching = rsp.status() == StatusCode::SWITCHING_PROTOCOLS;
        headers::strip_hop_by_hop(rsp.headers_mut(), switching);
        if let Some(downstream) = downstream {
            if switching || (connect && rsp.status().is_success()) {
                let upstream = hyper::upgrade::on(&mut rsp);
                self.inner.tunnels.spawn(tunnel(downstream, upstream));
            }
        }
        Ok(rsp)
    }

    /// Gives the request the absolute URI the pooled client needs, leaving `Host` alone.
    fn set_upstream_uri(&self, req: &mut Request<Incoming>) -> Result<(), ProxyError> {
        let is_h2 = req.version() == http::Version::HTTP_2;
        let mut parts = std::mem::take(req.uri_mut()).into_parts();
        parts.scheme.get_or_insert(Scheme::HTTP);
        // HTTP/1 sends origin-form upstream, so the authority only keys the pool; HTTP/2 sends
        // it as `:authority`, so the client's own is kept.
        if !is_h2 || parts.authority.is_none() {
            parts.authority = Some(self.inner.authority.clone());
        }
        parts
            .path_and_query
            .get_or_insert(PathAndQuery::from_static("/"));
        *req.uri_mut() =
            Uri::from_parts(parts).map_err(|e| ProxyError::InvalidRequest(e.into()))?;
        Ok(())
    }
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
