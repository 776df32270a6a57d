//! Pooled upstream connections, on hyper's connection API.
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
//!
//! Why not hyper-util's pooled client: profiled through the proxy (`scripts/profile.sh`), it cost
//! about 9,500 instructions per request, a quarter of the proxy's total: a task spawned per request
//! to return the connection, its pool key SipHashed several times, large futures moved. This pool
//! costs a lookup per connection and a `Vec` push/pop per request. It is also where the mesh's
//! endpoint connect (mTLS, one HTTP/2 connection per peer proxy) slots in.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, Weak},
    time::{Duration, Instant},
};

use http::{Request, Response};
use hyper::{
    body::Incoming,
    client::conn::{http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio_rustls::TlsConnector;
use tracing::debug;
use weft_proxy_metrics::{Direction, Handshake, Metrics};
use weft_proxy_transport::{connect, Coalesce, ConnectError};

use crate::body::RequestBody;

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

/// How to reach a peer proxy: mutual TLS that must find `server_id` at the other end.
#[derive(Clone)]
pub struct MeshConnect {
    /// The TLS 1.3 client config that checks the peer is `server_id`.
    pub tls: Arc<rustls::ClientConfig>,
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
    Http(#[from] hyper::Error),
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

    /// The one HTTP/2 mTLS connection to the peer proxy at `addr`, shared by every request and
    /// tunnel to that peer whatever the app's protocol.
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
                    mesh,
                    metrics: self.metrics.clone(),
                    idle: Mutex::new(Vec::new()),
                    h2: Mutex::new(None),
                    h2_connecting: tokio::sync::Mutex::new(()),
                })
            })
            .clone()
    }
}

/// The HTTP/2 handshake on `io`, the connection's task spawned.
async fn h2_handshake<I>(
    builder: &http2::Builder<TokioExecutor>,
    io: I,
    addr: SocketAddr,
) -> Result<http2::SendRequest<UpstreamBody>, ClientError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, conn) = builder.handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(%addr, error = %e, "upstream connection closed with an error");
        }
    });
    Ok(tx)
}

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
    metrics: Arc<Metrics>,
    idle: Mutex<Vec<Idle>>,
    /// The shared HTTP/2 connection and when a request last used it.
    h2: Mutex<Option<(http2::SendRequest<UpstreamBody>, Instant)>>,
    /// Held while dialling HTTP/2, so concurrent first requests share one connection.
    h2_connecting: tokio::sync::Mutex<()>,
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
    pub async fn send(
        self: &Arc<Self>,
        req: Request<UpstreamBody>,
    ) -> Result<(Response<Incoming>, Option<Checkout>), ClientError> {
        match self.version {
            UpstreamVersion::Http1 => self.send_h1(req).await.map(|(rsp, c)| (rsp, Some(c))),
            UpstreamVersion::Http2 => self.send_h2(req).await.map(|rsp| (rsp, None)),
        }
    }

    async fn send_h1(
        self: &Arc<Self>,
        req: Request<UpstreamBody>,
    ) -> Result<(Response<Incoming>, Checkout), ClientError> {
        let mut req = req;
        if let Some(mut tx) = self.take_idle() {
            match tx.try_send_request(req).await {
                Ok(rsp) => {
                    return Ok((
                        rsp,
                        Checkout {
                            tx,
                            endpoint: self.clone(),
                        },
                    ))
                }
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
        let mut tx = Box::pin(self.connect_h1()).await?;
        let rsp = tx.send_request(req).await?;
        Ok((
            rsp,
            Checkout {
                tx,
                endpoint: self.clone(),
            },
        ))
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
    ) -> Result<hyper::upgrade::Upgraded, ClientError> {
        let mut req = Request::new(RequestBody::Empty);
        *req.method_mut() = http::Method::CONNECT;
        *req.uri_mut() = http::Uri::from(authority);
        *req.version_mut() = http::Version::HTTP_2;
        req.headers_mut()
            .insert(crate::mesh::DST_PORT_HEADER, http::HeaderValue::from(port));
        let mut rsp = self.send_h2(req).await?;
        if rsp.status() != http::StatusCode::OK {
            return Err(ClientError::TunnelRefused {
                addr: self.addr,
                status: rsp.status(),
            });
        }
        Ok(hyper::upgrade::on(&mut rsp).await?)
    }

    /// Sends on the shared HTTP/2 connection, dialling it first if needed.
    pub async fn send_h2(
        &self,
        req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, ClientError> {
        let mut tx = match self.shared_h2() {
            Some(tx) => tx,
            None => {
                let _dialling = self.h2_connecting.lock().await;
                match self.shared_h2() {
                    Some(tx) => tx,
                    None => {
                        let tx = Box::pin(self.connect_h2()).await?;
                        *self.h2.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some((tx.clone(), Instant::now()));
                        tx
                    }
                }
            }
        };
        tx.ready().await?;
        Ok(tx.send_request(req).await?)
    }

    /// A ready idle HTTP/1 connection, newest first; stale or closed ones are dropped.
    fn take_idle(&self) -> Option<http1::SendRequest<UpstreamBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(conn) = idle.pop() {
            if conn.tx.is_ready() && conn.since.elapsed() < self.settings.idle_timeout {
                return Some(conn.tx);
            }
        }
        None
    }

    fn shared_h2(&self) -> Option<http2::SendRequest<UpstreamBody>> {
        let mut h2 = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        let (tx, used) = h2.as_mut().filter(|(tx, _)| !tx.is_closed())?;
        *used = Instant::now();
        Some(tx.clone())
    }

    async fn connect_h1(&self) -> Result<http1::SendRequest<UpstreamBody>, ClientError> {
        let io = TokioIo::new(connect(self.addr, self.settings.connect_timeout).await?);
        let (tx, conn) = http1::Builder::new().handshake(io).await?;
        let addr = self.addr;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                debug!(%addr, error = %e, "upstream connection closed with an error");
            }
        });
        Ok(tx)
    }

    async fn connect_h2(&self) -> Result<http2::SendRequest<UpstreamBody>, ClientError> {
        let tcp = connect(self.addr, self.settings.connect_timeout).await?;
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder.timer(TokioTimer::new());
        match &self.mesh {
            None => h2_handshake(&builder, tcp, self.addr).await,
            Some(mesh) => {
                let tls = self.tls_connect(mesh, tcp).await?;
                // Mesh connections are long-lived and shared: keep them checked, so a peer that
                // vanished is noticed before a request is sent into the void.
                builder
                    .keep_alive_interval(Duration::from_secs(20))
                    .keep_alive_timeout(Duration::from_secs(10))
                    .keep_alive_while_idle(true);
                // Requests sent together leave in one write (see Coalesce).
                h2_handshake(&builder, Coalesce::new(tls), self.addr).await
            }
        }
    }

    async fn tls_connect(
        &self,
        mesh: &MeshConnect,
        tcp: tokio::net::TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, ClientError> {
        // No SNI is sent (see the config); the name only satisfies the API.
        let name = rustls::pki_types::ServerName::IpAddress(self.addr.ip().into());
        let handshake = TlsConnector::from(mesh.tls.clone()).connect(name, tcp);
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
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|c| c.since.elapsed() < timeout && !c.tx.is_closed());
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
