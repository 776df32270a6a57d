//! The endpoint layer of outbound: an endpoint discovery named, made into the stage that sends
//! its requests (plainly, or over the mesh hop to its proxy with the identity it must present)
//! and counted in a series labelled with its Service and address.

use std::{net::SocketAddr, sync::Arc};

use tokio_util::task::TaskTracker;
use weft_certs::SpiffeId;
use weft_proxy_discovery::EndpointInfo;
use weft_proxy_http::{
    client::{MeshConnect, UpstreamVersion},
    forward::{Forward, Upstream},
    Upstreams,
};
use weft_proxy_identity::MeshTls;
use weft_proxy_metrics::{Destination, Direction, Metrics, RequestSeries};

/// Why an endpoint cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("no TLS config for identity {identity}: {reason}")]
pub(crate) struct NoTls {
    identity: SpiffeId,
    reason: String,
}

/// What every outbound endpoint is built from.
#[derive(Debug)]
pub(crate) struct Endpoints {
    pub(crate) upstreams: Arc<Upstreams>,
    pub(crate) tls: Arc<MeshTls>,
    pub(crate) own_id: Arc<str>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) tunnels: TaskTracker,
    /// `WEFT_MESH_HTTP1_UPGRADE`: the apps' HTTP/1 crosses as HTTP/2 on the shared connection.
    pub(crate) http1_upgrade: bool,
}

impl Endpoints {
    /// How to reach the peer proxy that must be `identity` at `proxy`.
    pub(crate) fn mesh_connect(
        &self,
        identity: &SpiffeId,
        proxy: SocketAddr,
    ) -> Result<Arc<weft_proxy_http::client::Endpoint>, NoTls> {
        let tls = self.tls.client_configs(identity).map_err(|e| NoTls {
            identity: identity.clone(),
            reason: e.to_string(),
        })?;
        let connect = MeshConnect {
            tls: tls.http2,
            http1: (!self.http1_upgrade).then_some(tls.http1),
            server_id: identity.to_string().into(),
        };
        Ok(self.upstreams.mesh(proxy, connect))
    }

    /// The stage for one endpoint of `service`.
    pub(crate) fn forward(&self, service: &Arc<str>, ep: &EndpointInfo) -> Result<Forward, NoTls> {
        let (upstream, series) = match &ep.mesh {
            Some(m) => {
                let peer = SocketAddr::new(ep.addr.ip(), m.inbound_port);
                let upstream = Upstream::Mesh(self.mesh_connect(&m.identity, peer)?);
                let series = self.series(service, ep.addr, Some(&m.identity));
                (upstream, series)
            }
            None => (
                Upstream::PlainEither {
                    h1: self.upstreams.endpoint(ep.addr, UpstreamVersion::Http1),
                    h2: self.upstreams.endpoint(ep.addr, UpstreamVersion::Http2),
                },
                self.series(service, ep.addr, None),
            ),
        };
        Ok(Forward::new(
            upstream,
            ep.addr.port(),
            series,
            self.tunnels.clone(),
        ))
    }

    /// The series of requests to `addr` of `service`, over mTLS to `server_id` or in
    /// plaintext.
    fn series(
        &self,
        service: &Arc<str>,
        addr: SocketAddr,
        server_id: Option<&SpiffeId>,
    ) -> Arc<RequestSeries> {
        let tls = server_id.is_some();
        self.metrics.endpoint(Destination {
            tls,
            client_id: if tls {
                self.own_id.clone()
            } else {
                Arc::from("")
            },
            server_id: server_id.map_or_else(|| Arc::from(""), |id| id.to_string().into()),
            service: service.clone(),
            endpoint: addr.to_string().into(),
        })
    }

    /// The series of a static mesh destination's requests.
    pub(crate) fn peer_series(&self, server_id: &str) -> Arc<RequestSeries> {
        self.metrics
            .mesh(Direction::Outbound, &self.own_id, server_id)
    }
}

/// Whether `forward` still reaches `ep` as it says: the same peer proxy and identity, or
/// plaintext for a plaintext endpoint.
pub(crate) fn same_upstream(forward: &Forward, ep: &EndpointInfo) -> bool {
    match (forward.upstream(), &ep.mesh) {
        (Upstream::Mesh(e), Some(m)) => {
            e.addr() == SocketAddr::new(ep.addr.ip(), m.inbound_port)
                && e.mesh()
                    .is_some_and(|c| *c.server_id == *m.identity.to_string())
        }
        (Upstream::PlainEither { .. } | Upstream::Plain(_), None) => true,
        _ => false,
    }
}
