//! One accepted connection, top to bottom.
//!
//! - Outbound: target (original destination) -> detect -> HTTP (hyper, pooled upstreams) or
//!   opaque TCP. A destination in the mesh map goes over the mesh hop instead: its requests
//!   and streams ride one mTLS HTTP/2 connection to the peer proxy.
//! - Inbound, with an identity: the first bytes decide. A peer proxy's ClientHello (mesh ALPN)
//!   is terminated here and served as the mesh hop; anything else is plaintext or the app's own
//!   TLS, served as before in permissive mode and refused in strict mode.
//! - Inbound, without an identity: as outbound.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use bytes::BytesMut;
use tokio::net::TcpStream;
use tracing::{debug, info};
use weft_proxy_detect::Protocol;
use weft_proxy_http::{
    client::{MeshConnect, UpstreamVersion, TLS_HANDSHAKE_TIMEOUT},
    mesh_server::{serve_mesh, Deliver, MeshInbound},
    Backend, Proxy, ServerSettings, Upstreams,
};
use weft_proxy_identity::{Hello, MeshTls};
use weft_proxy_metrics::{Direction, Handshake, MeteredIo, Metrics, RequestSeries};
use weft_proxy_transport::{orig_dst, OrigDstAddr, PrefixedIo};

use crate::{
    config::{MtlsMode, PortSet, Target},
    detect::{self, Detected, FirstLook},
    drain::Drain,
    outbound::{Resolution, Router},
    redirect_check::CheckAddr,
    tcp,
};

/// What one listener does with each connection it accepts.
#[derive(Debug)]
pub(crate) struct Stack {
    pub(crate) direction: Direction,
    pub(crate) target: Target,
    pub(crate) opaque_ports: PortSet,
    pub(crate) detect_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) server: ServerSettings,
    pub(crate) upstreams: Arc<Upstreams>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) drain: Drain,
    pub(crate) mesh: Option<Arc<Mesh>>,
    /// Outbound with a control plane: what each destination is (discovery).
    pub(crate) router: Option<Arc<Router>>,
    /// Transparent mode: the redirect check's addresses, never forwarded. The outbound listener
    /// answers a probe there; the inbound one closes it.
    pub(crate) redirect_check: Option<Arc<CheckAddr>>,
}

/// The proxy's identity and who it reaches over the mesh hop.
#[derive(Debug)]
pub(crate) struct Mesh {
    pub(crate) tls: Arc<MeshTls>,
    pub(crate) own_id: Arc<str>,
    pub(crate) destinations: HashMap<SocketAddr, MeshRoute>,
    pub(crate) inbound_mode: MtlsMode,
    /// The proxy's own ports: never a delivery target.
    pub(crate) own_ports: Vec<u16>,
}

/// How to reach one meshed destination, prepared once so a connection costs a map lookup and
/// two reference counts.
#[derive(Debug)]
pub(crate) struct MeshRoute {
    /// The peer proxy's inbound listener.
    pub(crate) proxy: SocketAddr,
    /// The TLS config that checks the peer's identity, and both identities.
    pub(crate) connect: MeshConnect,
    /// The request series of this (client, server) pair.
    pub(crate) series: Arc<RequestSeries>,
}

type Accepted = MeteredIo<TcpStream>;

impl Stack {
    /// Serves one connection to the end. Errors are logged here, in the connection's span.
    pub(crate) async fn serve(self: Arc<Self>, stream: TcpStream) {
        let dst = match self.target {
            Target::Explicit(addr) => Ok(OrigDstAddr(addr)),
            Target::Transparent => orig_dst(&stream),
        };
        if let Ok(dst) = &dst {
            tracing::Span::current().record("dst", tracing::field::display(dst));
            if let Some(check) = self.redirect_check.as_deref().filter(|c| c.is_check(dst.0)) {
                // The proxy's own probe, not app traffic: not counted, never forwarded.
                return self.serve_redirect_check(stream, check).await;
            }
        }
        // Counted from here to the socket's drop, which for an upgraded connection is the end
        // of its tunnel.
        let io = self.metrics.accepted(self.direction, stream);
        if let Err(e) = io.get_ref().set_nodelay(true) {
            debug!(error = %e, "TCP_NODELAY not set");
        }
        match (&self.mesh, self.direction) {
            (Some(mesh), Direction::Inbound) => {
                // A peer proxy dials the inbound port itself: no original destination.
                self.serve_inbound(io, dst.ok(), mesh).await;
            }
            _ => match dst {
                Ok(dst) => {
                    let peer = match &self.mesh {
                        Some(mesh) => mesh.destinations.get(&dst.0),
                        None => None,
                    };
                    self.serve_plain(io, dst, BytesMut::new(), None, peer).await;
                }
                Err(e) => {
                    // Anyone who can reach the port can cause this: no log flood at info.
                    debug!(error = %e, "connection refused");
                }
            },
        }
    }

    /// A connection whose original destination is a redirect check address.
    async fn serve_redirect_check(&self, stream: TcpStream, check: &CheckAddr) {
        match self.direction {
            Direction::Outbound => match check.answer(stream).await {
                Ok(()) => tracing::trace!("redirect check answered"),
                Err(e) => debug!(error = %e, "answering a redirect check failed"),
            },
            Direction::Inbound => debug!(
                "a connection to the redirect check port reached the inbound listener; closing \
                 it (the check rule must redirect to the outbound port)"
            ),
        }
    }

    /// Inbound with an identity: mesh TLS is terminated; the rest depends on the mode.
    async fn serve_inbound(&self, mut io: Accepted, dst: Option<OrigDstAddr>, mesh: &Mesh) {
        let (look, buf) = match detect::read_hello(&mut io, self.detect_timeout).await {
            Ok(r) => r,
            Err(e) => {
                debug!(error = %e, "connection failed before its first bytes were read");
                return;
            }
        };
        if look == FirstLook::Hello(Hello::Mesh) {
            return self.serve_mesh(io, buf, mesh).await;
        }
        let Some(dst) = dst else {
            debug!("a direct connection to the inbound port that is not mesh TLS; closing");
            self.metrics.inbound_refused("not_mesh_tls");
            return;
        };
        if mesh.inbound_mode == MtlsMode::Strict {
            debug!(first_look = ?look, "strict mTLS: refusing a connection that is not mesh TLS");
            self.metrics.inbound_refused("plaintext_in_strict_mode");
            return;
        }
        let preset = match look {
            FirstLook::Eof => Some(Detected::Eof),
            FirstLook::Timeout => Some(Detected::Timeout),
            FirstLook::Hello(Hello::OtherTls) => Some(Detected::Known(Protocol::Tls)),
            FirstLook::Hello(_) => None,
        };
        self.serve_plain(io, dst, buf, preset, None).await;
    }

    /// Terminates a peer proxy's mTLS and serves the mesh hop on it.
    async fn serve_mesh(&self, io: Accepted, buf: BytesMut, mesh: &Mesh) {
        let local = io.get_ref().local_addr();
        let acceptor = tokio_rustls::TlsAcceptor::from(mesh.tls.server_config());
        let handshake = acceptor.accept(PrefixedIo::new(buf.freeze(), io));
        let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                let result = weft_proxy_http::client::handshake_result(&e);
                self.metrics.tls_handshake(Direction::Inbound, result);
                info!(error = %e, "mesh TLS handshake refused");
                return;
            }
            Err(_) => {
                self.metrics
                    .tls_handshake(Direction::Inbound, Handshake::Timeout);
                debug!("mesh TLS handshake timed out");
                return;
            }
        };
        self.metrics
            .tls_handshake(Direction::Inbound, Handshake::Ok);
        let client_id = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(weft_certs::peer_identity)
            .map(|id| id.to_string())
            .unwrap_or_default();
        tracing::Span::current().record("protocol", "mesh");
        tracing::Span::current().record("client_id", client_id.as_str());
        let deliver = match (self.target, local) {
            (Target::Explicit(addr), _) => Deliver::To(addr),
            (Target::Transparent, Ok(local)) => Deliver::LocalPort(local.ip().to_canonical()),
            (Target::Transparent, Err(e)) => {
                debug!(error = %e, "no local address");
                return;
            }
        };
        let ctx = MeshInbound {
            deliver,
            upstreams: self.upstreams.clone(),
            series: self
                .metrics
                .mesh(Direction::Inbound, &client_id, &mesh.own_id),
            tunnels: self.drain.tasks().clone(),
            connect_timeout: self.connect_timeout,
            own_ports: mesh.own_ports.clone(),
        };
        let shutdown = self.drain.signal().clone();
        if let Err(e) = serve_mesh(tls, &self.server, ctx, shutdown).await {
            debug!(error = %e, "mesh connection closed with an error");
        }
    }

    /// Detection, then HTTP or opaque TCP, to `dst` directly or over the mesh hop to `peer`.
    async fn serve_plain(
        &self,
        mut io: Accepted,
        dst: OrigDstAddr,
        buf: BytesMut,
        preset: Option<Detected>,
        peer: Option<&MeshRoute>,
    ) {
        let (protocol, prefix) = if self.opaque_ports.contains(dst.0.port()) {
            (Protocol::Opaque, buf.freeze())
        } else {
            let detected = match preset {
                Some(d) => Ok((d, buf.freeze())),
                None => detect::read_more(&mut io, buf, self.detect_timeout).await,
            };
            match detected {
                Ok((Detected::Known(p), prefix)) => (p, prefix),
                Ok((Detected::Eof, prefix)) => (Protocol::Opaque, prefix),
                Ok((Detected::Timeout, prefix)) => {
                    // The metric is the operator's signal; a log line per connection of a
                    // server-speaks-first protocol would flood.
                    debug!(
                        timeout = ?self.detect_timeout,
                        port = dst.0.port(),
                        "no protocol detected before the timeout; forwarding as opaque TCP \
                         (list the port in WEFT_OPAQUE_PORTS if its server speaks first)"
                    );
                    self.metrics.detect_timeout(self.direction, dst.0.port());
                    (Protocol::Opaque, prefix)
                }
                Err(e) => {
                    debug!(error = %e, "connection failed before a protocol was detected");
                    return;
                }
            }
        };
        tracing::Span::current().record("protocol", protocol.as_str());
        let io = PrefixedIo::new(prefix, io);

        let mesh = peer.map(|route| {
            (
                self.upstreams.mesh(route.proxy, route.connect.clone()),
                route.series.clone(),
            )
        });
        // Not in the static map: discovery says whether it is a Service.
        let balanced = match (&mesh, &self.router, self.direction) {
            (None, Some(router), Direction::Outbound) => match router.resolve(dst.0).await {
                Resolution::Balanced(b) => Some(b),
                Resolution::Passthrough => None,
            },
            _ => None,
        };
        if let Some(balancer) = balanced {
            tracing::Span::current().record("service", balancer.service().as_ref());
            return self.serve_balanced(io, dst, protocol, balancer).await;
        }

        if protocol.is_http() {
            let (endpoint, series) = match mesh {
                Some(m) => m,
                None => (
                    self.upstreams.endpoint(dst.0, upstream_version(protocol)),
                    self.metrics.plaintext(self.direction),
                ),
            };
            self.serve_http(io, dst, protocol, Backend::Fixed { endpoint, series })
                .await;
        } else {
            let result = match mesh {
                Some((endpoint, _)) => tcp::forward_mesh(io, dst, &endpoint).await,
                None => tcp::forward(io, dst, self.connect_timeout).await,
            };
            if let Err(e) = result {
                info!(error = %e, "tcp connection failed");
            }
        }
    }

    /// Serves an HTTP connection whose requests go to `backend`.
    async fn serve_http(
        &self,
        io: PrefixedIo<Accepted>,
        dst: OrigDstAddr,
        protocol: Protocol,
        backend: Backend,
    ) {
        let proxy = Proxy::with_backend(dst, backend, self.drain.tasks().clone());
        let shutdown = self.drain.signal().clone();
        if let Err(e) = weft_proxy_http::serve(io, protocol, &self.server, proxy, shutdown).await {
            debug!(error = %e, "http connection closed with an error");
        }
    }

    /// A Service's connection: HTTP balanced per request, opaque TCP per connection.
    async fn serve_balanced(
        &self,
        io: PrefixedIo<Accepted>,
        dst: OrigDstAddr,
        protocol: Protocol,
        balancer: Arc<weft_proxy_http::balanced::Balanced>,
    ) {
        if protocol.is_http() {
            let backend = Backend::Balanced {
                balancer,
                version: upstream_version(protocol),
                metrics: self.metrics.clone(),
            };
            self.serve_http(io, dst, protocol, backend).await;
        } else {
            let Some(picked) = balancer.pick() else {
                self.metrics.no_endpoints("tcp");
                info!(service = %balancer.service(), "no ready endpoints; closing the connection");
                return;
            };
            if let Err(e) = tcp::forward_balanced(io, picked, self.connect_timeout).await {
                info!(error = %e, "tcp connection failed");
            }
        }
    }
}

/// The upstream pool's HTTP version for a detected protocol: the client's own.
fn upstream_version(protocol: Protocol) -> UpstreamVersion {
    if protocol == Protocol::Http2 {
        UpstreamVersion::Http2
    } else {
        UpstreamVersion::Http1
    }
}
