//! The gRPC port: TLS, then HTTP/2 served by hyper with tonic's generated service, its writes
//! gathered per scheduler turn ([`Coalesce`]) so that a change pushed to many streams of one
//! connection leaves as one TLS record and one system call.
//!
//! tonic's own server is not used: serving with hyper directly gives the TLS acceptor (our
//! certificate resolver), the handshake timeout and the connection cap without tonic's router
//! and its dependencies.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use rustls::ServerConfig;
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, warn};
use weft_api::{
    destination::destination_server::DestinationServer, identity::identity_server::IdentityServer,
    route::routes_server::RoutesServer,
};
use weft_proxy_transport::Coalesce;

use crate::{
    discovery::DestinationService,
    identity::IdentityService,
    peer::{Identify, PeerIdentity},
    routes::RouteService,
};

/// Bounds on what one client can make the server hold.
#[derive(Clone, Debug)]
pub struct Limits {
    pub handshake_timeout: Duration,
    pub max_connections: usize,
    pub max_concurrent_streams: u32,
    pub max_header_list_bytes: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            // A proxy opens one discovery stream per destination it talks to and one route
            // stream per Service, all on one connection.
            max_concurrent_streams: 8192,
            max_header_list_bytes: 16 * 1024,
        }
    }
}

/// The services served on the gRPC port.
#[derive(Debug)]
pub struct Served {
    pub identity: IdentityService,
    pub destination: DestinationService,
    pub routes: RouteService,
}

/// Serves gRPC on `listener` until `shutdown`; connections are tracked by `tasks`. A client
/// certificate presented is checked by `identify`, and the identity it proves travels with
/// each of the connection's requests ([`PeerIdentity`]).
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    served: Served,
    identify: Identify,
    limits: Limits,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let service = Services {
        identity: IdentityServer::new(served.identity)
            .max_decoding_message_size(weft_api::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(weft_api::MAX_MESSAGE_BYTES),
        destination: DestinationServer::new(served.destination)
            .max_decoding_message_size(weft_api::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(weft_api::MAX_UPDATE_BYTES),
        routes: RoutesServer::new(served.routes)
            .max_decoding_message_size(weft_api::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(weft_api::MAX_UPDATE_BYTES),
        peer: None,
    };
    let acceptor = TlsAcceptor::from(tls);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: back off rather than spin.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let service = service.clone();
        let identify = identify.clone();
        let limits = limits.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let _permit = permit;
            serve_conn(tcp, peer, acceptor, service, &identify, &limits, shutdown).await;
        });
    }
}

async fn serve_conn(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    mut service: Services,
    identify: &Identify,
    limits: &Limits,
    shutdown: CancellationToken,
) {
    let _ = tcp.set_nodelay(true);
    // A client still in its handshake at shutdown has no call in flight: drop it rather than
    // hold the exit up for the rest of the handshake timeout.
    let handshake = tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp));
    let tls = tokio::select! {
        r = handshake => match r {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
        _ = shutdown.cancelled() => return,
    };
    if let Some(chain) = tls.get_ref().1.peer_certificates() {
        match identify.identify(chain) {
            Ok(id) => service.peer = Some(id),
            Err(e) => {
                debug!(%peer, error = %e, "client certificate not accepted; the connection is unauthenticated")
            }
        }
    }
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_list_bytes)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .serve_connection(
            TokioIo::new(Coalesce::new(tls)),
            TowerToHyperService::new(service),
        );
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        debug!(%peer, error = %e, "gRPC connection closed with an error");
    }
}

/// Every service on one port, routed by the gRPC path's service name (tonic's `Routes` would
/// bring axum for a `match`), with the connection's authenticated caller.
#[derive(Clone, Debug)]
struct Services {
    identity: IdentityServer<IdentityService>,
    destination: DestinationServer<DestinationService>,
    routes: RoutesServer<RouteService>,
    /// Who the connection's client certificate proves, given to each request.
    peer: Option<PeerIdentity>,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl tower_service::Service<http::Request<hyper::body::Incoming>> for Services {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<hyper::body::Incoming>) -> Self::Future {
        if let Some(peer) = &self.peer {
            req.extensions_mut().insert(peer.clone());
        }
        let path = req.uri().path();
        if path.starts_with("/weft.destination.v1.Destination/") {
            Box::pin(self.destination.call(req))
        } else if path.starts_with("/weft.route.v1.Routes/") {
            Box::pin(self.routes.call(req))
        } else {
            Box::pin(self.identity.call(req))
        }
    }
}
