//! The inbound side: connections redirected to the proxy on their way into the pod, and peer
//! proxies' mesh connections.
//!
//! - With an identity, the first bytes decide. A peer proxy's ClientHello (mesh ALPN) is
//!   terminated and served as the mesh hop ([`mesh`]): each request is handed to the app on
//!   the port it was marked for. Anything else is plaintext or the app's own TLS: served as
//!   below in permissive mode, refused and counted in strict mode.
//! - Otherwise: protocol detection, then HTTP (each request to the app through the endpoint
//!   stage) or opaque TCP to the original destination.
//!
//! Inbound policy (who may call what) is a stage of its own between the mesh hop's TLS and the
//! app, per request with the client's identity.

mod mesh;

use std::sync::Arc;

use bytes::BytesMut;
use tokio::net::TcpStream;
use tracing::debug;
use weft_proxy_detect::Protocol;
use weft_proxy_identity::{Hello, MeshTls};
use weft_proxy_transport::OrigDstAddr;

use crate::{
    config::{MtlsMode, Target},
    conn::{original_dst, Accepted, Common},
    detect::{self, Detected, FirstLook},
    redirect_check::CheckAddr,
};

/// The inbound listener's connections.
#[derive(Debug)]
pub(crate) struct Inbound {
    pub(crate) common: Common,
    pub(crate) target: Target,
    /// With an identity: mesh TLS is terminated here.
    pub(crate) mesh: Option<InboundMesh>,
    /// Transparent mode: the redirect check's addresses, which never belong here.
    pub(crate) redirect_check: Option<Arc<CheckAddr>>,
}

/// The proxy's identity, as the inbound side uses it.
#[derive(Debug)]
pub(crate) struct InboundMesh {
    pub(crate) tls: Arc<MeshTls>,
    pub(crate) own_id: Arc<str>,
    pub(crate) mode: MtlsMode,
    /// The proxy's own ports: never a delivery target.
    pub(crate) own_ports: Vec<u16>,
}

impl Inbound {
    /// Serves one connection to the end. Errors are logged here, in the connection's span.
    pub(crate) async fn serve(self: Arc<Self>, stream: TcpStream) {
        let dst = original_dst(self.target, &stream);
        if let Ok(dst) = &dst {
            if self
                .redirect_check
                .as_deref()
                .is_some_and(|c| c.is_check(dst.0))
            {
                debug!(
                    "a connection to the redirect check port reached the inbound listener; \
                     closing it (the check rule must redirect to the outbound port)"
                );
                return;
            }
        }
        let io = self.common.accepted(stream);
        match (&self.mesh, dst) {
            // A peer proxy dials the inbound port itself: no original destination.
            (Some(mesh), dst) => self.serve_with_identity(io, dst.ok(), mesh).await,
            (None, Ok(dst)) => self.serve_plain(io, dst, BytesMut::new(), None).await,
            (None, Err(e)) => {
                // Anyone who can reach the port can cause this: no log flood at info.
                debug!(error = %e, "connection refused");
            }
        }
    }

    /// With an identity: mesh TLS is terminated; the rest depends on the mode.
    async fn serve_with_identity(
        &self,
        mut io: Accepted,
        dst: Option<OrigDstAddr>,
        mesh: &InboundMesh,
    ) {
        let (look, buf) = match detect::read_hello(&mut io, self.common.detect_timeout).await {
            Ok(r) => r,
            Err(e) => {
                debug!(error = %e, "connection failed before its first bytes were read");
                return;
            }
        };
        if look == FirstLook::Hello(Hello::Mesh) {
            return mesh::serve(self, io, buf, mesh).await;
        }
        let Some(dst) = dst else {
            debug!("a direct connection to the inbound port that is not mesh TLS; closing");
            self.common.metrics.inbound_refused("not_mesh_tls");
            return;
        };
        if mesh.mode == MtlsMode::Strict {
            debug!(first_look = ?look, "strict mTLS: refusing a connection that is not mesh TLS");
            self.common
                .metrics
                .inbound_refused("plaintext_in_strict_mode");
            return;
        }
        let preset = match look {
            FirstLook::Eof => Some(Detected::Eof),
            FirstLook::Timeout => Some(Detected::Timeout),
            FirstLook::Hello(Hello::OtherTls) => Some(Detected::Known(Protocol::Tls)),
            FirstLook::Hello(_) => None,
        };
        self.serve_plain(io, dst, buf, preset).await;
    }

    /// Detection, then HTTP or opaque TCP to the original destination.
    async fn serve_plain(
        &self,
        io: Accepted,
        dst: OrigDstAddr,
        buf: BytesMut,
        preset: Option<Detected>,
    ) {
        let Some((protocol, io)) = self.common.protocol(io, dst, buf, preset).await else {
            return;
        };
        self.common.serve_passthrough(io, dst, protocol).await;
    }
}
