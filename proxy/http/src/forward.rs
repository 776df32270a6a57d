//! The endpoint stage: one request to one endpoint's connection pool.
//!
//! Hop-by-hop headers are dropped both ways, the URI takes the form the upstream's version
//! needs, a request for a meshed endpoint is marked for the mesh hop, and an upgrade or CONNECT
//! that the upstream accepts becomes a byte tunnel. Each try is counted in the endpoint's
//! request series: a response when its body is dropped, a failure at once.

use std::sync::Arc;

use http::{
    header,
    uri::{Authority, PathAndQuery, Scheme},
    Request, Response, StatusCode, Uri, Version,
};
use http_body_util::Either;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};
use weft_proxy_metrics::RequestSeries;
use weft_proxy_transport::OrigDstAddr;

use crate::{
    body::{RequestBody, ResponseBody},
    client::{Endpoint, Sent, UpstreamVersion},
    error::ProxyError,
    h2_client::Received,
    headers, mesh,
    stage::{Cx, Stage, StageResult},
};

/// Where one endpoint's requests go.
#[derive(Debug)]
pub enum Upstream {
    /// Its proxy, over the mesh hop: the apps' HTTP/1 on pooled HTTP/1 mTLS connections, the
    /// rest on one shared HTTP/2 mTLS connection (see [`crate::client`]).
    Mesh(Arc<Endpoint>),
    /// The endpoint itself, in plaintext, in one HTTP version: the pool of a connection whose
    /// requests all come in the client's version.
    Plain(Arc<Endpoint>),
    /// The endpoint itself, in plaintext, a pool per HTTP version: a Service's endpoint, shared
    /// by HTTP/1 and HTTP/2 clients.
    PlainEither {
        h1: Arc<Endpoint>,
        h2: Arc<Endpoint>,
    },
}

impl Upstream {
    /// The pool for a request of `version`.
    pub fn pool(&self, version: Version) -> &Arc<Endpoint> {
        match self {
            Upstream::Mesh(e) | Upstream::Plain(e) => e,
            Upstream::PlainEither { h2, .. } if version == Version::HTTP_2 => h2,
            Upstream::PlainEither { h1, .. } => h1,
        }
    }

    /// Whether requests cross the mesh hop.
    pub fn is_mesh(&self) -> bool {
        matches!(self, Upstream::Mesh(_))
    }
}

/// The upstream pool version a request of `version` uses.
pub fn upstream_version(version: Version) -> UpstreamVersion {
    if version == Version::HTTP_2 {
        UpstreamVersion::Http2
    } else {
        UpstreamVersion::Http1
    }
}

/// Sends each request to one endpoint.
#[derive(Debug)]
pub struct Forward {
    upstream: Upstream,
    /// The app's port on the endpoint: what a peer proxy delivers a mesh request to.
    port: u16,
    /// Every try to this endpoint.
    series: Arc<RequestSeries>,
    /// Upgraded tunnels outlive their request; the drain waits for them.
    tunnels: TaskTracker,
}

impl Forward {
    /// Requests to `upstream`, for the app's `port` there, counted in `series`.
    pub fn new(
        upstream: Upstream,
        port: u16,
        series: Arc<RequestSeries>,
        tunnels: TaskTracker,
    ) -> Self {
        Self {
            upstream,
            port,
            series,
            tunnels,
        }
    }

    /// The upstream's pools.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// Readies `req` for its upstream and says how to send it.
    fn prepare(
        &self,
        req: &mut Request<RequestBody>,
        connect: bool,
        upgrade: bool,
        dst: OrigDstAddr,
    ) -> Result<Sending, ProxyError> {
        if !self.upstream.is_mesh() {
            if !connect {
                set_upstream_uri(req, dst)?;
            }
            return Ok(Sending::Pool);
        }
        if upgrade {
            return Ok(Sending::MeshUpgrade);
        }
        // Marked with what the other side needs to hand it on; HTTP/1 stays HTTP/1 where the
        // peer pools it, everything else crosses as HTTP/2.
        let version = req.version();
        mesh::mark_outbound(req.headers_mut(), version, self.port);
        if version != Version::HTTP_2 && self.upstream.pool(version).mesh_http1() {
            *req.version_mut() = Version::HTTP_11;
            set_upstream_uri(req, dst)?;
            return Ok(Sending::MeshHttp1);
        }
        as_mesh_http2(req, dst)?;
        Ok(Sending::Mesh)
    }

    /// An HTTP/1 upgrade or CONNECT to a meshed destination: HTTP/1 inside a CONNECT stream to
    /// the port, which the upgrade then owns.
    async fn upgrade_over_mesh(
        &self,
        mut req: Request<RequestBody>,
        connect: bool,
        endpoint: &Endpoint,
        dst: OrigDstAddr,
    ) -> Result<Response<Received>, ProxyError> {
        let client_error = |e| ProxyError::from_client(dst, e);
        *req.version_mut() = Version::HTTP_11;
        if !connect {
            set_upstream_uri(&mut req, dst)?;
        }
        let tunnel = endpoint
            .open_tunnel(authority(dst)?, self.port)
            .await
            .map_err(client_error)?;
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tunnel))
            .await
            .map_err(|e| client_error(e.into()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                debug!(error = %e, "tunnelled upgrade connection failed");
            }
        });
        tx.send_request(req)
            .await
            .map(|rsp| rsp.map(Received::H1))
            .map_err(|e| client_error(e.into()))
    }
}

/// How a prepared request is sent.
enum Sending {
    /// Plaintext, on the endpoint's pool in the request's own version.
    Pool,
    /// As HTTP/2 on the mesh connection to the endpoint's proxy.
    Mesh,
    /// As HTTP/1 on a pooled mesh connection to the endpoint's proxy.
    MeshHttp1,
    /// An upgrade or CONNECT: HTTP/1 inside a CONNECT stream on the mesh connection.
    MeshUpgrade,
}

/// The endpoint a request was sent to, and who wants to know how it went: the balancer that
/// chose it, or nobody.
pub trait Chosen: Send {
    /// The endpoint's stage.
    fn forward(&self) -> &Forward;
    /// Called once, when the response head arrived (or the try failed).
    fn finish(self, success: bool);
}

impl Chosen for &Forward {
    fn forward(&self) -> &Forward {
        self
    }

    fn finish(self, _: bool) {}
}

/// Sends one request to `chosen`'s endpoint and readies the response for the client; counts
/// the try, and tells `chosen` how it went as soon as the response head is in. One `async fn`,
/// so its future holds the request once.
pub async fn send<C: Chosen>(chosen: C, mut req: Request<RequestBody>, cx: Cx) -> StageResult {
    let this = chosen.forward();
    let dst = cx.dst;
    let connect = headers::is_connect(&req);
    let upgrade = connect || headers::is_upgrade(&req);
    headers::strip_hop_by_hop(req.headers_mut(), upgrade && !connect);
    let downstream = upgrade.then(|| hyper::upgrade::on(&mut req));
    let endpoint = this.upstream.pool(req.version());
    let client_error = |e| ProxyError::from_client(dst, e);

    let sent = match this.prepare(&mut req, connect, upgrade, dst) {
        Err(e) => Err(e),
        Ok(Sending::Pool) => endpoint.send(req).await.map_err(client_error),
        // The rare path, boxed so it does not swell every request's future.
        Ok(Sending::MeshUpgrade) => Box::pin(this.upgrade_over_mesh(req, connect, endpoint, dst))
            .await
            .map(|rsp| Sent::Response(rsp, None)),
        Ok(Sending::Mesh) => endpoint
            .send_h2(req)
            .await
            .map(|rsp| Sent::Response(rsp, None))
            .map_err(client_error),
        Ok(Sending::MeshHttp1) => endpoint.send_h1(req).await.map_err(client_error),
    };
    let sent = match sent {
        Ok(Sent::Response(rsp, checkout)) => Ok((rsp, checkout)),
        // Once per peer that predates HTTP/1 mesh connections: boxed.
        Ok(Sent::Http2Only(req)) => Box::pin(resend_as_http2(endpoint, *req, dst))
            .await
            .map(|rsp| (rsp, None)),
        Err(e) => Err(e),
    };
    let (mut rsp, checkout) = match sent {
        Ok(sent) => sent,
        Err(e) => {
            if e.is_upstream_failure() {
                info!(error = %e, %dst, "request failed");
            } else {
                debug!(error = %e, %dst, "request refused");
            }
            this.series
                .routed(cx.route)
                .record(e.status(), cx.start.elapsed());
            chosen.finish(false);
            return Err(e);
        }
    };

    let status = rsp.status();
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    headers::strip_hop_by_hop(rsp.headers_mut(), switching);
    if let Some(downstream) = downstream {
        if switching || (connect && status.is_success()) {
            let upstream = hyper::upgrade::on(&mut rsp);
            this.tunnels.spawn(tunnel(downstream, upstream));
        }
    }
    let series = this.series.routed(cx.route);
    // An error, or a 5xx from the endpoint, is a failure.
    chosen.finish(!status.is_server_error());
    Ok(rsp.map(|b| ResponseBody::recorded(Either::Left(b), series, status, cx.start, checkout)))
}

impl Stage for Forward {
    fn call(
        &self,
        req: Request<RequestBody>,
        cx: Cx,
    ) -> impl std::future::Future<Output = StageResult> + Send + '_ {
        send(self, req, cx)
    }
}

/// A request readied for HTTP/1 over the mesh, sent as HTTP/2 on the shared connection instead.
async fn resend_as_http2(
    endpoint: &Endpoint,
    mut req: Request<RequestBody>,
    dst: OrigDstAddr,
) -> Result<Response<Received>, ProxyError> {
    as_mesh_http2(&mut req, dst)?;
    endpoint
        .send_h2(req)
        .await
        .map_err(|e| ProxyError::from_client(dst, e))
}

/// An app's request (marked) made an HTTP/2 request for the shared mesh connection.
fn as_mesh_http2<B>(req: &mut Request<B>, dst: OrigDstAddr) -> Result<(), ProxyError> {
    *req.version_mut() = Version::HTTP_2;
    set_upstream_uri(req, dst)
}

/// The destination as an authority, for requests that name none.
fn authority(dst: OrigDstAddr) -> Result<Authority, ProxyError> {
    Authority::try_from(dst.to_string()).map_err(|e| ProxyError::InvalidRequest(e.into()))
}

/// The URI form each upstream version needs, leaving `Host` alone: HTTP/1 sends origin-form
/// (`/path?query`); HTTP/2 needs a scheme and `:authority`, kept from the client or taken from
/// its `Host` header. The common cases (origin-form HTTP/1, full HTTP/2) change nothing.
fn set_upstream_uri<B>(req: &mut Request<B>, dst: OrigDstAddr) -> Result<(), ProxyError> {
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
        _ => authority(dst)?,
    };
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    parts.scheme.get_or_insert(Scheme::HTTP);
    parts.authority = Some(authority);
    parts
        .path_and_query
        .get_or_insert(PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::from_parts(parts).map_err(|e| ProxyError::InvalidRequest(e.into()))?;
    Ok(())
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
    match weft_proxy_transport::copy::copy_bidirectional(&mut down, &mut up).await {
        Ok((to_server, to_client)) => debug!(to_server, to_client, "upgraded connection closed"),
        Err(e) => debug!(error = %e, "upgraded connection failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http1_goes_upstream_in_origin_form_and_http2_with_an_authority() {
        let dst = OrigDstAddr(([127, 0, 0, 1], 8080).into());
        let mut req = Request::builder()
            .uri("http://example.com/a?b")
            .body(())
            .expect("request");
        set_upstream_uri(&mut req, dst).expect("uri");
        assert_eq!(req.uri(), "/a?b");

        let mut req = Request::builder()
            .version(Version::HTTP_2)
            .uri("/a")
            .header(header::HOST, "api.shop")
            .body(())
            .expect("request");
        set_upstream_uri(&mut req, dst).expect("uri");
        assert_eq!(req.uri(), "http://api.shop/a");

        let mut req = Request::builder()
            .version(Version::HTTP_2)
            .uri("/a")
            .body(())
            .expect("request");
        set_upstream_uri(&mut req, dst).expect("uri");
        assert_eq!(
            req.uri(),
            "http://127.0.0.1:8080/a",
            "the destination as a last resort"
        );
    }
}
