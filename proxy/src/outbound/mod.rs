//! The outbound side: the app's own connections, redirected to the proxy.
//!
//! One connection, top to bottom: its original destination (a redirect check probe is answered
//! here and goes no further), its protocol, then what the destination is, in three layers:
//!
//! - **logical** ([`logical`]): the destination as the client named it. A Service (discovery
//!   says so) becomes a [`LogicalService`]; an address in the static mesh map
//!   (`WEFT_MESH_DESTINATIONS`) is a known peer; anything else passes through as it is.
//! - **routes** ([`routes`]): the HTTPRoutes and TrafficSplit in force on a Service: each
//!   request's rule, filters and weighted backend Service (none attached: the Service is its
//!   own one backend).
//! - **concrete** ([`concrete`]): a backend Service of the logical one, balanced over its
//!   endpoints.
//! - **endpoint** ([`endpoint`]): one endpoint's pool, plaintext or over the mesh hop to its
//!   proxy with the identity it must present.
//!
//! HTTP runs each request through the stages (routes -> balance -> forward); opaque TCP picks
//! once per connection (a TrafficSplit's weights, then the balancer), in `tcp`.

pub(crate) mod concrete;
pub(crate) mod endpoint;
pub(crate) mod logical;
pub(crate) mod policy;
pub(crate) mod routes;

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use futures_util::future::Either;
use http::Request;
use tokio::net::TcpStream;
use tracing::{debug, info};
use weft_proxy_http::{
    body::RequestBody,
    client::Endpoint,
    forward::{Forward, Upstream},
    stage::{Cx, Stage, StageResult},
};
use weft_proxy_transport::OrigDstAddr;

pub(crate) use self::logical::{Destinations, Logical, LogicalService};
use crate::{
    config::Target,
    conn::{original_dst, Common, Replayed},
    redirect_check::CheckAddr,
    tcp::{self, To},
};

/// The outbound listener's connections.
#[derive(Debug)]
pub(crate) struct Outbound {
    pub(crate) common: Common,
    pub(crate) target: Target,
    /// With a control plane: what each destination is.
    pub(crate) destinations: Option<Arc<Destinations>>,
    /// Destinations reached over the mesh hop without discovery (`WEFT_MESH_DESTINATIONS`).
    pub(crate) peers: HashMap<SocketAddr, StaticPeer>,
    /// Transparent mode: the redirect check's addresses, answered here and never forwarded.
    pub(crate) redirect_check: Option<Arc<CheckAddr>>,
}

/// A destination in the static mesh map: its peer proxy's connection, prepared once so a
/// connection costs a map lookup and two reference counts.
#[derive(Debug)]
pub(crate) struct StaticPeer {
    pub(crate) endpoint: Arc<Endpoint>,
    pub(crate) series: Arc<weft_proxy_metrics::RequestSeries>,
}

/// Where one HTTP connection's requests go: its per-request stack.
#[derive(Debug)]
pub(crate) enum HttpTarget {
    /// Every request to one endpoint (the destination itself, or its peer proxy).
    Endpoint(Forward),
    /// Each request through a Service's split, balancer and endpoints.
    Service(Arc<LogicalService>),
}

impl Stage for HttpTarget {
    fn call(
        &self,
        req: Request<RequestBody>,
        cx: Cx,
    ) -> impl std::future::Future<Output = StageResult> + Send + '_ {
        // Not an `async fn`: that would keep a copy of the request in the future.
        match self {
            HttpTarget::Endpoint(forward) => Either::Left(forward.call(req, cx)),
            HttpTarget::Service(service) => Either::Right(service.call(req, cx)),
        }
    }
}

impl Outbound {
    /// Serves one connection to the end. Errors are logged here, in the connection's span.
    pub(crate) async fn serve(self: Arc<Self>, stream: TcpStream) {
        let dst = original_dst(self.target, &stream);
        if let Ok(dst) = &dst {
            if let Some(check) = self.redirect_check.as_deref().filter(|c| c.is_check(dst.0)) {
                // The proxy's own probe, not app traffic: not counted, never forwarded.
                match check.answer(stream).await {
                    Ok(()) => tracing::trace!("redirect check answered"),
                    Err(e) => debug!(error = %e, "answering a redirect check failed"),
                }
                return;
            }
        }
        // Counted even when refused below: the operator sees the refusals.
        let io = self.common.accepted(stream);
        let dst = match dst {
            Ok(dst) => dst,
            Err(e) => {
                // Anyone who can reach the port can cause this: no log flood at info.
                debug!(error = %e, "connection refused");
                return;
            }
        };
        let Some((protocol, io)) = self
            .common
            .protocol(io, dst, Default::default(), None)
            .await
        else {
            return;
        };
        let logical = match (self.peers.get(&dst.0), &self.destinations) {
            (Some(peer), _) => return self.serve_peer(io, dst, protocol, peer).await,
            (None, Some(destinations)) => destinations.resolve(dst.0).await,
            (None, None) => Logical::Passthrough,
        };
        match logical {
            Logical::Passthrough => self.common.serve_passthrough(io, dst, protocol).await,
            Logical::Service(service) => {
                tracing::Span::current().record("service", service.name.as_ref());
                self.serve_service(io, dst, protocol, service).await
            }
        }
    }

    /// Over the mesh hop to a destination of the static map.
    async fn serve_peer(
        &self,
        io: Replayed,
        dst: OrigDstAddr,
        protocol: weft_proxy_detect::Protocol,
        peer: &StaticPeer,
    ) {
        if protocol.is_http() {
            let forward = Forward::new(
                Upstream::Mesh(peer.endpoint.clone()),
                dst.0.port(),
                peer.series.clone(),
                self.common.drain.tasks().clone(),
            );
            let stack = Arc::new(HttpTarget::Endpoint(forward));
            self.common.serve_http(io, protocol, dst, stack).await;
        } else {
            self.forward_tcp(io, dst, To::Peer(&peer.endpoint)).await;
        }
    }

    /// A Service's connection: HTTP split and balanced per request, opaque TCP per connection.
    async fn serve_service(
        &self,
        io: Replayed,
        dst: OrigDstAddr,
        protocol: weft_proxy_detect::Protocol,
        service: Arc<LogicalService>,
    ) {
        if protocol.is_http() {
            let stack = Arc::new(HttpTarget::Service(service));
            self.common.serve_http(io, protocol, dst, stack).await;
            return;
        }
        let router = service.router.load_full();
        let backend = match router.as_deref().and_then(|r| r.tcp_pick()) {
            None => service.split.pick(),
            Some(Ok(backend)) => backend,
            Some(Err(why)) => {
                info!(service = %service.name, reason = %why, "the TrafficSplit's share cannot be served; closing the connection");
                return;
            }
        };
        let Some(picked) = backend.pick() else {
            self.common.metrics.no_endpoints("tcp");
            info!(service = %backend.service(), "no ready endpoints; closing the connection");
            return;
        };
        self.forward_tcp(io, dst, To::Picked(picked)).await;
    }

    async fn forward_tcp(&self, io: Replayed, dst: OrigDstAddr, to: To<'_>) {
        if let Err(e) = tcp::forward(io, dst, to, self.common.connect_timeout).await {
            info!(error = %e, "tcp connection failed");
        }
    }
}

#[cfg(test)]
mod tests;
