//! Pooled upstream connections: HTTP/1 on hyper's connection API, HTTP/2 on `h2` directly
//! (see [`crate::h2_client`]).
//!
//! Each endpoint (address and HTTP version) has its own pool, so the proxy always dials the
//! connection's original destination whatever the `Host` header says, and forwards `Host` and
//! `:authority` untouched:
//!
//! - HTTP/1: idle connections wait in a list; a request takes one (or dials), and the connection
//!   goes back when the response body is dropped, if it is ready for another request. A pooled
//!   connection that the server closed before our request was written is retried once on a fresh
//!   connection: the request was never sent, so nothing is replayed.
//! - HTTP/2: one multiplexed connection per endpoint, shared by every request.
//! - The mesh hop (a peer proxy, over mTLS): the apps' HTTP/1 on a pool of HTTP/1 connections
//!   as above (ALPN `weft.dev/h1`), everything else on one shared HTTP/2 connection
//!   (`weft.dev/h2`). HTTP/1 kept as HTTP/1 costs each proxy no HTTP/2 framing, stream task or
//!   HPACK per request; a peer that predates `weft.dev/h1` answers HTTP/2, and its HTTP/1
//!   requests then cross on the shared connection.
//!
//! Why not hyper-util's pooled client: profiled through the proxy (`scripts/profile.sh`), it cost
//! about 9,500 instructions per request, a quarter of the proxy's total: a task spawned per request
//! to return the connection, its pool key SipHashed several times, large futures moved. This pool
//! costs a lookup per connection and a `Vec` push/pop per request. It is also where the mesh's
//! endpoint connect (mTLS, one HTTP/2 connection per peer proxy) slots in.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex, Weak,
    },
    time::{Duration, Instant},
};

use http::{Request, Response};
use hyper::{body::Incoming, client::conn::http1};
use hyper_util::rt::TokioIo;
use tokio_rustls::TlsConnector;
use tracing::{debug, info};
use weft_proxy_metrics::{Direction, Handshake, Metrics};
use weft_proxy_transport::{connect, Coalesce, ConnectError};

use crate::{
    body::RequestBody,
    h2_client::{self, H2Connection, H2Settings, Received},
    h2_stream::Tunnel,
};

/// How upstream connections are made and kept.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// The longest a TCP connect to an upstream may take.
    pub connect_timeout: Duration,
    /// How long an unused pooled connection is kept open.
    pub idle_timeout: Duration,
    /// The most idle HTTP/1 connections kept per endpoint.
    pub max_idle_per_endpoint: usize,
}

/// The longest a mesh TLS handshake may take once TCP is connected.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest a pooled HTTP/1 mesh connection waits idle for its next request: well inside
/// [`MESH_HTTP1_IDLE_CUT`], so a peer never closes a connection this side is about to use.
pub const MESH_HTTP1_IDLE: Duration = Duration::from_secs(20);

/// How long the receiving proxy keeps an idle HTTP/1 mesh connection, or waits for a request's
/// head on one (peers are authenticated proxies; the sender closes idle ones sooner).
pub const MESH_HTTP1_IDLE_CUT: Duration = Duration::from_secs(60);

/// How to reach a peer proxy: mutual TLS that must find `server_id` at the other end.
#[derive(Clone)]
pub struct MeshConnect {
    /// The TLS 1.3 client config of the shared HTTP/2 connection; it checks the peer is
    /// `server_id`.
    pub tls: Arc<rustls::ClientConfig>,
    /// The config of pooled HTTP/1 connections (ALPN `weft.dev/h1`, then `weft.dev/h2`), for
    /// the apps' HTTP/1; `None` carries it as HTTP/2 on the shared connection
    /// (`WEFT_MESH_HTTP1_UPGRADE`).
    pub http1: Option<Arc<rustls::ClientConfig>>,
    /// The SPIFFE ID the peer must present (for errors and the pool key; the config enforces
    /// it).
    pub server_id: Arc<str>,
}

impl std::fmt::Debug for MeshConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshConnect")
            .field("server_id", &self.server_id)
            .finish_non_exhaustive()
    }
}

/// What an upstream connection carries.
pub type UpstreamBody = RequestBody;

/// Which HTTP version an upstream connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UpstreamVersion {
    /// HTTP/1.1 (or 1.0), one request at a time per connection.
    Http1,
    /// HTTP/2 with prior knowledge, multiplexed.
    Http2,
}

/// Why an upstream request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection could be made.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The HTTP exchange failed (handshake, reset, protocol error).
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The mesh TLS handshake with the peer proxy failed (wrong identity, untrusted, timeout).
    #[error("mTLS to {addr} (expecting {server_id}) failed: {reason}")]
    Tls {
        addr: SocketAddr,
        server_id: Arc<str>,
        reason: String,
    },
    /// The peer proxy refused to open a tunnel.
    #[error("peer proxy {addr} refused the tunnel: {status}")]
    TunnelRefused {
        addr: SocketAddr,
        status: http::StatusCode,
    },
}

/// An HTTP exchange's failure: from hyper (HTTP/1) or `h2` (HTTP/2).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    #[error(transparent)]
    H2(#[from] h2::Error),
}

impl From<hyper::Error> for ClientError {
    fn from(e: hyper::Error) -> Self {
        ClientError::Http(e.into())
    }
}

impl From<h2::Error> for ClientError {
    fn from(e: h2::Error) -> Self {
        ClientError::Http(e.into())
    }
}

/// The pools of every endpoint the proxy has talked to recently.
#[derive(Debug)]
pub struct Upstreams {
    settings: ClientSettings,
    metrics: Arc<Metrics>,
    endpoints: Mutex<HashMap<EndpointKey, Arc<Endpoint>>>,
}

/// An endpoint: where, which HTTP version, and for the mesh hop, which peer identity.
type EndpointKey = (SocketAddr, UpstreamVersion, Option<Arc<str>>);

impl Upstreams {
    /// An empty set of pools. A background task closes connections idle for longer than the
    /// idle timeout and forgets endpoints with nothing pooled; it stops when this is dropped.
    pub fn new(settings: ClientSettings, metrics: Arc<Metrics>) -> Arc<Self> {
        let this = Arc::new(Self {
            settings,
            metrics,
            endpoints: Mutex::new(HashMap::new()),
        });
        tokio::spawn(reap(Arc::downgrade(&this)));
        this
    }

    /// The pool for `addr` speaking `version`. Called once per accepted connection.
    pub fn endpoint(&self, addr: SocketAddr, version: UpstreamVersion) -> Arc<Endpoint> {
        self.get_or_make((addr, version, None), None)
    }

    /// The connections to the peer proxy at `addr`: a pool of HTTP/1 mTLS connections for the
    /// apps' HTTP/1 (unless `mesh` has no HTTP/1 config), and one HTTP/2 mTLS connection for
    /// the rest, tunnels included.
    pub fn mesh(&self, addr: SocketAddr, mesh: MeshConnect) -> Arc<Endpoint> {
        let key = (addr, UpstreamVersion::Http2, Some(mesh.server_id.clone()));
        self.get_or_make(key, Some(mesh))
    }

    fn get_or_make(&self, key: EndpointKey, mesh: Option<MeshConnect>) -> Arc<Endpoint> {
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        let (addr, version, _) = key;
        endpoints
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Endpoint {
                    addr,
                    version,
                    settings: self.settings.clone(),
                    mesh_http1: AtomicBool::new(mesh.as_ref().is_some_and(|m| m.http1.is_some())),
                    mesh,
                    metrics: self.metrics.clone(),
                    idle: Mutex::new(Vec::new()),
                    h2: Mutex::new(None),
                    h2_connecting: tokio::sync::Mutex::new(()),
                    mesh_http1_open: Arc::new(AtomicUsize::new(0)),
                })
            })
            .clone()
    }
}

/// What became of a request given to an endpoint.
#[derive(Debug)]
pub enum Sent {
    /// The response; for HTTP/1 the connection, lent until the response body is done.
    Response(Response<Received>, Option<Checkout>),
    /// Not sent on HTTP/1: the peer proxy speaks only HTTP/2 on the mesh hop (it predates
    /// HTTP/1 mesh connections), or this endpoint holds as many HTTP/1 mesh connections as it
    /// may. Send it on the shared HTTP/2 connection. (Boxed: a rare path that would otherwise
    /// make every request's future larger.)
    Http2Only(Box<Request<UpstreamBody>>),
}

/// The shared mesh connection's HTTP/2 settings: long-lived, so kept checked with PINGs, and a
/// peer that vanished is noticed before a request is sent into the void.
const MESH_H2: H2Settings = H2Settings {
    max_frame_size: MESH_MAX_FRAME_SIZE,
    keep_alive: Some((Duration::from_secs(20), Duration::from_secs(10))),
};

/// The largest HTTP/2 frame either end of a mesh connection accepts (SETTINGS_MAX_FRAME_SIZE):
/// an opaque tunnel's copy buffer, so each read crosses as one DATA frame.
pub const MESH_MAX_FRAME_SIZE: u32 = weft_proxy_transport::copy::BUFFER_SIZE as u32;

/// Closes idle connections past their timeout, and forgets endpoints nobody holds.
async fn reap(upstreams: Weak<Upstreams>) {
    let period = match upstreams.upgrade() {
        Some(u) => (u.settings.idle_timeout / 2).max(Duration::from_millis(100)),
        None => return,
    };
    let mut tick = tokio::time::interval(period);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(upstreams) = upstreams.upgrade() else {
            return;
        };
        let mut endpoints = upstreams
            .endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        endpoints.retain(|_, endpoint| {
            endpoint.prune();
            // Held elsewhere (a live downstream connection) or still pooling: keep.
            Arc::strong_count(endpoint) > 1 || endpoint.has_connections()
        });
    }
}

/// One endpoint's connections.
#[derive(Debug)]
pub struct Endpoint {
    addr: SocketAddr,
    version: UpstreamVersion,
    settings: ClientSettings,
    /// Set for the mesh hop: TLS to a peer proxy.
    mesh: Option<MeshConnect>,
    /// The mesh hop pools HTTP/1 connections for the apps' HTTP/1: the config allows it and the
    /// peer has not answered an HTTP/1 dial with HTTP/2.
    mesh_http1: AtomicBool,
    metrics: Arc<Metrics>,
    idle: Mutex<Vec<Idle>>,
    /// The shared HTTP/2 connection and when a request last used it.
    h2: Mutex<Option<(H2Connection, Instant)>>,
    /// Held while dialling HTTP/2, so concurrent first requests share one connection.
    h2_connecting: tokio::sync::Mutex<()>,
    /// HTTP/1 mesh connections open to the peer, at most `max_idle_per_endpoint`: past it,
    /// more concurrent requests ride the shared HTTP/2 connection instead of dialling (a burst
    /// costs no burst of handshakes).
    mesh_http1_open: Arc<AtomicUsize>,
}

/// Counts an open HTTP/1 mesh connection until its task ends.
struct OpenConn(Arc<AtomicUsize>);

impl Drop for OpenConn {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct Idle {
    tx: http1::SendRequest<UpstreamBody>,
    since: Instant,
}

/// An HTTP/1 connection lent to one request; hand it back with [`Checkout::release`] when the
/// response body is done.
#[derive(Debug)]
pub struct Checkout {
    tx: http1::SendRequest<UpstreamBody>,
    endpoint: Arc<Endpoint>,
}

impl Checkout {
    /// Returns the connection to the pool if it can take another request now (its response was
    /// read to the end and it was not upgraded); otherwise it closes.
    pub fn release(self) {
        if self.tx.is_ready() {
            let mut idle = self.endpoint.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < self.endpoint.settings.max_idle_per_endpoint {
                idle.push(Idle {
                    tx: self.tx,
                    since: Instant::now(),
                });
            }
        }
    }
}

impl Endpoint {
    /// Sends `req` on a pooled or new connection. For HTTP/1 the connection comes back as a
    /// [`Checkout`] to release when the response body is done.
    pub async fn send(self: &Arc<Self>, req: Request<UpstreamBody>) -> Result<Sent, ClientError> {
        match self.version {
            UpstreamVersion::Http1 => self.send_h1(req).await,
            UpstreamVersion::Http2 => self.send_h2(req).await.map(|rsp| Sent::Response(rsp, None)),
        }
    }

    /// Sends on an idle pooled HTTP/1 connection, or a new one: plaintext, or for the mesh hop
    /// an HTTP/1 mTLS connection to the peer proxy (see [`Endpoint::mesh_http1`]), where a
    /// peer without them hands the request back as [`Sent::Http2Only`].
    pub async fn send_h1(
        self: &Arc<Self>,
        req: Request<UpstreamBody>,
    ) -> Result<Sent, ClientError> {
        let mut req = req;
        if let Some(mut tx) = self.take_idle() {
            match tx.try_send_request(req).await {
                Ok(rsp) => return Ok(self.lent(rsp, tx)),
                Err(mut e) => match e.take_message() {
                    // Not written: the pooled connection was closing. Retry on a new one.
                    Some(unsent) => {
                        debug!(addr = %self.addr, error = %e.error(), "pooled connection was closed; reconnecting");
                        req = unsent;
                    }
                    None => return Err(e.into_error().into()),
                },
            }
        }
        // Dialling is the rare path: boxed, so its large future does not swell the future every
        // request carries (hyper moves that into a task per HTTP/2 stream).
        let Some(mut tx) = Box::pin(self.connect_h1()).await? else {
            return Ok(Sent::Http2Only(Box::new(req)));
        };
        let rsp = tx.send_request(req).await?;
        Ok(self.lent(rsp, tx))
    }

    fn lent(
        self: &Arc<Self>,
        rsp: Response<Incoming>,
        tx: http1::SendRequest<UpstreamBody>,
    ) -> Sent {
        let checkout = Checkout {
            tx,
            endpoint: self.clone(),
        };
        Sent::Response(rsp.map(Received::H1), Some(checkout))
    }

    /// Whether the apps' HTTP/1 to this peer proxy crosses as HTTP/1 on pooled connections
    /// (false for plaintext endpoints, with `WEFT_MESH_HTTP1_UPGRADE`, and once the peer
    /// answered an HTTP/1 dial with HTTP/2).
    pub fn mesh_http1(&self) -> bool {
        self.mesh_http1.load(Ordering::Relaxed)
    }

    /// The mesh hop, if this endpoint is a peer proxy.
    pub fn mesh(&self) -> Option<&MeshConnect> {
        self.mesh.as_ref()
    }

    /// The address dialled.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Opens a byte stream to `port` on the peer proxy's pod: an HTTP/2 CONNECT on the shared
    /// mesh connection. Opaque TCP and HTTP/1 upgrades ride these.
    pub async fn open_tunnel(
        &self,
        authority: http::uri::Authority,
        port: u16,
    ) -> Result<Tunnel, ClientError> {
        let mut req = Request::new(RequestBody::Empty);
        *req.method_mut() = http::Method::CONNECT;
        *req.uri_mut() = http::Uri::from(authority);
        *req.version_mut() = http::Version::HTTP_2;
        req.headers_mut()
            .insert(crate::mesh::DST_PORT_HEADER, http::HeaderValue::from(port));
        let rsp = self.send_h2(req).await?;
        let status = rsp.status();
        match rsp.into_body().take_tunnel() {
            Some(tunnel) if status == http::StatusCode::OK => Ok(tunnel),
            _ => Err(ClientError::TunnelRefused {
                addr: self.addr,
                status,
            }),
        }
    }

    /// Sends on the shared HTTP/2 connection, dialling it first if needed.
    pub async fn send_h2(
        &self,
        req: Request<UpstreamBody>,
    ) -> Result<Response<Received>, ClientError> {
        // The stream opens before the first await, so the request is not kept in this future
        // while the response is awaited.
        let response = match self.shared_h2() {
            Some(conn) => conn.send(req)?,
            None => Box::pin(self.dial_h2()).await?.send(req)?,
        };
        Ok(response.await?)
    }

    /// The shared HTTP/2 connection, dialled unless another request just did.
    async fn dial_h2(&self) -> Result<H2Connection, ClientError> {
        let _dialling = self.h2_connecting.lock().await;
        if let Some(conn) = self.shared_h2() {
            return Ok(conn);
        }
        let conn = self.connect_h2().await?;
        *self.h2.lock().unwrap_or_else(|p| p.into_inner()) = Some((conn.clone(), Instant::now()));
        Ok(conn)
    }

    /// A ready idle HTTP/1 connection, newest first; stale or closed ones are dropped.
    fn take_idle(&self) -> Option<http1::SendRequest<UpstreamBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let timeout = self.h1_idle_timeout();
        while let Some(conn) = idle.pop() {
            if conn.tx.is_ready() && conn.since.elapsed() < timeout {
                return Some(conn.tx);
            }
        }
        None
    }

    fn shared_h2(&self) -> Option<H2Connection> {
        let mut h2 = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        let (tx, used) = h2.as_mut().filter(|(tx, _)| !tx.is_closed())?;
        *used = Instant::now();
        Some(tx.clone())
    }

    /// A new HTTP/1 connection: plaintext, or for the mesh hop see [`Self::connect_mesh_http1`].
    async fn connect_h1(&self) -> Result<Option<http1::SendRequest<UpstreamBody>>, ClientError> {
        if self.mesh.is_some() {
            return self.connect_mesh_http1().await;
        }
        let io = TokioIo::new(connect(self.addr, self.settings.connect_timeout).await?);
        let (tx, conn) = http1::Builder::new().handshake(io).await?;
        let addr = self.addr;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                debug!(%addr, error = %e, "upstream connection closed with an error");
            }
        });
        Ok(Some(tx))
    }

    /// A new HTTP/1 mTLS connection to the peer proxy, or `None`: this endpoint holds as many
    /// as it may (`max_idle_per_endpoint`), or the peer answered with HTTP/2 (it predates
    /// `weft.dev/h1`; that connection becomes the shared one, and this endpoint sends its
    /// HTTP/1 there from now on).
    async fn connect_mesh_http1(
        &self,
    ) -> Result<Option<http1::SendRequest<UpstreamBody>>, ClientError> {
        let Some((mesh, config)) = self.mesh.as_ref().and_then(|m| Some((m, m.http1.clone()?)))
        else {
            return Ok(None);
        };
        let open = &self.mesh_http1_open;
        if open.fetch_add(1, Ordering::Relaxed) >= self.settings.max_idle_per_endpoint {
            open.fetch_sub(1, Ordering::Relaxed);
            return Ok(None);
        }
        let counted = OpenConn(open.clone());
        let tcp = connect(self.addr, self.settings.connect_timeout).await?;
        let tls = self.tls_connect(mesh, config, tcp).await?;
        if tls.get_ref().1.alpn_protocol() != Some(weft_proxy_identity::MESH_HTTP1_ALPN) {
            self.mesh_http1.store(false, Ordering::Relaxed);
            info!(addr = %self.addr, "the peer proxy has no HTTP/1 mesh connections; HTTP/1 crosses as HTTP/2");
            let tx = h2_client::handshake(Coalesce::new(tls), MESH_H2, self.addr).await?;
            let mut h2 = self.h2.lock().unwrap_or_else(|p| p.into_inner());
            if h2.as_ref().is_none_or(|(tx, _)| tx.is_closed()) {
                *h2 = Some((tx, Instant::now()));
            }
            return Ok(None);
        }
        let (tx, conn) = http1::Builder::new().handshake(TokioIo::new(tls)).await?;
        let addr = self.addr;
        tokio::spawn(async move {
            let _counted = counted;
            if let Err(e) = conn.await {
                debug!(%addr, error = %e, "mesh connection closed with an error");
            }
        });
        Ok(Some(tx))
    }

    async fn connect_h2(&self) -> Result<H2Connection, ClientError> {
        let tcp = connect(self.addr, self.settings.connect_timeout).await?;
        Ok(match &self.mesh {
            None => h2_client::handshake(tcp, H2Settings::default(), self.addr).await?,
            Some(mesh) => {
                let tls = self.tls_connect(mesh, mesh.tls.clone(), tcp).await?;
                // Requests sent together leave in one write (see Coalesce).
                h2_client::handshake(Coalesce::new(tls), MESH_H2, self.addr).await?
            }
        })
    }

    /// The idle bound of this endpoint's HTTP/1 connections.
    fn h1_idle_timeout(&self) -> Duration {
        if self.mesh.is_some() {
            self.settings.idle_timeout.min(MESH_HTTP1_IDLE)
        } else {
            self.settings.idle_timeout
        }
    }

    async fn tls_connect(
        &self,
        mesh: &MeshConnect,
        config: Arc<rustls::ClientConfig>,
        tcp: tokio::net::TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, ClientError> {
        // No SNI is sent (see the config); the name only satisfies the API.
        let name = rustls::pki_types::ServerName::IpAddress(self.addr.ip().into());
        let handshake = TlsConnector::from(config).connect(name, tcp);
        let (result, reason) = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok(tls)) => {
                self.metrics
                    .tls_handshake(Direction::Outbound, Handshake::Ok);
                return Ok(tls);
            }
            Ok(Err(e)) => (handshake_result(&e), e.to_string()),
            Err(_) => (
                Handshake::Timeout,
                format!("no handshake within {TLS_HANDSHAKE_TIMEOUT:?}"),
            ),
        };
        self.metrics.tls_handshake(Direction::Outbound, result);
        Err(ClientError::Tls {
            addr: self.addr,
            server_id: mesh.server_id.clone(),
            reason,
        })
    }

    /// Drops idle connections past the idle timeout, and an HTTP/2 connection that is closed or
    /// unused for that long (requests still in flight keep it open until they finish).
    fn prune(&self) {
        let timeout = self.settings.idle_timeout;
        let h1_timeout = self.h1_idle_timeout();
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|c| c.since.elapsed() < h1_timeout && !c.tx.is_closed());
        let mut h2 = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        if h2
            .as_ref()
            .is_some_and(|(tx, used)| tx.is_closed() || used.elapsed() >= timeout)
        {
            *h2 = None;
        }
    }

    fn has_connections(&self) -> bool {
        !self
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
            || self.h2.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }
}

/// Sorts a failed handshake for `weft_tls_handshakes_total`, from the rustls error inside.
pub fn handshake_result(e: &std::io::Error) -> Handshake {
    use rustls::{CertificateError as C, Error as E};
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<E>()) else {
        return Handshake::Error;
    };
    match tls {
        E::InvalidCertificate(C::Expired | C::NotValidYet | C::ExpiredContext { .. }) => {
            Handshake::Expired
        }
        E::InvalidCertificate(C::Other(other))
            if other
                .0
                .downcast_ref::<weft_certs::verify::IdentityError>()
                .is_some() =>
        {
            Handshake::WrongIdentity
        }
        E::InvalidCertificate(_) => Handshake::Untrusted,
        E::NoCertificatesPresented => Handshake::NoCertificate,
        E::AlertReceived(rustls::AlertDescription::CertificateRequired) => Handshake::NoCertificate,
        E::AlertReceived(
            rustls::AlertDescription::BadCertificate
            | rustls::AlertDescription::UnknownCA
            | rustls::AlertDescription::CertificateUnknown,
        ) => Handshake::Untrusted,
        E::AlertReceived(rustls::AlertDescription::CertificateExpired) => Handshake::Expired,
        _ => Handshake::Error,
    }
}

#[cfg(test)]
mod tests {
    use std::{io, sync::Arc};

    use rustls::{AlertDescription as A, CertificateError as C, Error as E, OtherError};

    use super::*;

    fn io_err(e: E) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn handshake_failures_are_sorted_by_cause() {
        let wrong_id = weft_certs::verify::IdentityError::Mismatch {
            expected: "spiffe://cluster.local/ns/a/sa/b".parse().expect("id"),
            presented: vec!["spiffe://cluster.local/ns/a/sa/c".into()],
        };
        for (e, want) in [
            (E::InvalidCertificate(C::Expired), Handshake::Expired),
            (E::InvalidCertificate(C::NotValidYet), Handshake::Expired),
            (
                E::InvalidCertificate(C::Other(OtherError(Arc::new(wrong_id)))),
                Handshake::WrongIdentity,
            ),
            (
                E::InvalidCertificate(C::UnknownIssuer),
                Handshake::Untrusted,
            ),
            (E::InvalidCertificate(C::BadSignature), Handshake::Untrusted),
            (E::NoCertificatesPresented, Handshake::NoCertificate),
            (
                E::AlertReceived(A::CertificateRequired),
                Handshake::NoCertificate,
            ),
            (E::AlertReceived(A::UnknownCA), Handshake::Untrusted),
            (E::AlertReceived(A::CertificateExpired), Handshake::Expired),
            (E::AlertReceived(A::HandshakeFailure), Handshake::Error),
        ] {
            let shown = format!("{e:?}");
            assert_eq!(handshake_result(&io_err(e)), want, "{shown}");
        }
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(handshake_result(&reset), Handshake::Error);
    }
}
