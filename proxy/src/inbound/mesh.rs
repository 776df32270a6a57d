//! The receiving end of the mesh hop: a peer proxy's mTLS terminated, its identity read, and
//! its HTTP/2 or HTTP/1 (by the ALPN negotiated) served by `weft_proxy_http::mesh_server`.

use bytes::BytesMut;
use tracing::{debug, info};
use weft_proxy_http::{
    client::{handshake_result, TLS_HANDSHAKE_TIMEOUT},
    mesh_server::{serve_mesh, Deliver, MeshInbound, MeshProtocol},
};
use weft_proxy_metrics::{Direction, Handshake};
use weft_proxy_transport::PrefixedIo;

use super::{Inbound, InboundMesh};
use crate::{config::Target, conn::Accepted};

/// Terminates a peer proxy's mTLS and serves the mesh hop on it.
pub(super) async fn serve(inbound: &Inbound, io: Accepted, buf: BytesMut, mesh: &InboundMesh) {
    let common = &inbound.common;
    let local = io.get_ref().local_addr();
    let peer = io.get_ref().peer_addr().ok();
    let acceptor = tokio_rustls::TlsAcceptor::from(mesh.tls.server_config());
    let handshake = acceptor.accept(PrefixedIo::new(buf.freeze(), io));
    let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            common
                .metrics
                .tls_handshake(Direction::Inbound, handshake_result(&e));
            info!(error = %e, "mesh TLS handshake refused");
            return;
        }
        Err(_) => {
            common
                .metrics
                .tls_handshake(Direction::Inbound, Handshake::Timeout);
            debug!("mesh TLS handshake timed out");
            return;
        }
    };
    common
        .metrics
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
    let deliver = match (inbound.target, local) {
        (Target::Explicit(addr), _) => Deliver::To(addr),
        (Target::Transparent, Ok(local)) => Deliver::LocalPort(local.ip().to_canonical()),
        (Target::Transparent, Err(e)) => {
            debug!(error = %e, "no local address");
            return;
        }
    };
    let ctx = MeshInbound {
        deliver,
        upstreams: common.upstreams.clone(),
        series: common
            .metrics
            .mesh(Direction::Inbound, &client_id, &mesh.own_id),
        tunnels: common.drain.tasks().clone(),
        connect_timeout: common.connect_timeout,
        own_ports: mesh.own_ports.clone(),
        peer,
        peer_identity: (!client_id.is_empty()).then(|| client_id.as_str().into()),
    };
    let protocol = match tls.get_ref().1.alpn_protocol() {
        Some(weft_proxy_identity::MESH_HTTP1_ALPN) => MeshProtocol::Http1,
        _ => MeshProtocol::Http2,
    };
    let shutdown = common.drain.signal().clone();
    if let Err(e) = serve_mesh(tls, protocol, &common.server, ctx, shutdown).await {
        debug!(error = %e, "mesh connection closed with an error");
    }
}
