//! What both directions do with an accepted connection once they know where it is for: detect
//! its protocol, then serve it as HTTP through a stack of stages or forward it as opaque TCP.

use std::{sync::Arc, time::Duration};

use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;
use tracing::{debug, info};
use weft_proxy_detect::Protocol;
use weft_proxy_http::{
    client::UpstreamVersion,
    forward::{Forward, Upstream},
    stage::Stage,
    ServerSettings, Upstreams,
};
use weft_proxy_metrics::{Direction, MeteredIo, Metrics};
use weft_proxy_transport::{
    orig_dst::{orig_dst, OrigDstError},
    OrigDstAddr, PrefixedIo,
};

use crate::{
    config::{PortSet, Target},
    detect::{self, Detected},
    drain::Drain,
    outbound::HttpTarget,
    tcp::{self, To},
};

/// An accepted socket, counted from here to its drop.
pub(crate) type Accepted = MeteredIo<TcpStream>;

/// An accepted socket with the bytes detection read replayed in front of it.
pub(crate) type Replayed = PrefixedIo<Accepted>;

/// The connection's original destination: the configured one in explicit mode, else what
/// `SO_ORIGINAL_DST` says; recorded in the connection's span when known.
pub(crate) fn original_dst(
    target: Target,
    stream: &TcpStream,
) -> Result<OrigDstAddr, OrigDstError> {
    let dst = match target {
        Target::Explicit(addr) => Ok(OrigDstAddr(addr)),
        Target::Transparent => orig_dst(stream),
    };
    if let Ok(dst) = &dst {
        tracing::Span::current().record("dst", tracing::field::display(dst));
    }
    dst
}

/// What every connection of one listener shares.
#[derive(Debug)]
pub(crate) struct Common {
    pub(crate) direction: Direction,
    pub(crate) opaque_ports: PortSet,
    pub(crate) detect_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) server: ServerSettings,
    pub(crate) upstreams: Arc<Upstreams>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) drain: Drain,
}

impl Common {
    /// Counts the connection from here on and sets `TCP_NODELAY`.
    pub(crate) fn accepted(&self, stream: TcpStream) -> Accepted {
        // Counted until the socket's drop, which for an upgraded connection is the end of its
        // tunnel.
        let io = self.metrics.accepted(self.direction, stream);
        if let Err(e) = io.get_ref().set_nodelay(true) {
            debug!(error = %e, "TCP_NODELAY not set");
        }
        io
    }

    /// The connection's protocol: opaque for a port listed opaque, else what its first bytes
    /// say (continuing from `buf`, or taking `preset` when an earlier look already decided).
    /// `None` when the connection failed before that was known.
    pub(crate) async fn protocol(
        &self,
        mut io: Accepted,
        dst: OrigDstAddr,
        buf: BytesMut,
        preset: Option<Detected>,
    ) -> Option<(Protocol, Replayed)> {
        let (protocol, prefix): (Protocol, Bytes) = if self.opaque_ports.contains(dst.0.port()) {
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
                    return None;
                }
            }
        };
        tracing::Span::current().record("protocol", protocol.as_str());
        Some((protocol, PrefixedIo::new(prefix, io)))
    }

    /// To the original destination as it is, in plaintext: HTTP through the endpoint stage (the
    /// client's own HTTP version upstream), anything else as opaque TCP.
    pub(crate) async fn serve_passthrough(
        &self,
        io: Replayed,
        dst: OrigDstAddr,
        protocol: Protocol,
    ) {
        if !protocol.is_http() {
            if let Err(e) = tcp::forward(io, dst, To::Direct, self.connect_timeout).await {
                info!(error = %e, "tcp connection failed");
            }
            return;
        }
        let version = if protocol == Protocol::Http2 {
            UpstreamVersion::Http2
        } else {
            UpstreamVersion::Http1
        };
        let forward = Forward::new(
            Upstream::Plain(self.upstreams.endpoint(dst.0, version)),
            dst.0.port(),
            self.metrics.plaintext(self.direction),
            self.drain.tasks().clone(),
        );
        // The same stack type as a Service's, so hyper's server is compiled once.
        let stack = Arc::new(HttpTarget::Endpoint(forward));
        self.serve_http(io, protocol, dst, stack).await;
    }

    /// Serves an HTTP connection, each request through `stack`.
    pub(crate) async fn serve_http<S: Stage + 'static>(
        &self,
        io: Replayed,
        protocol: Protocol,
        dst: OrigDstAddr,
        stack: Arc<S>,
    ) {
        let shutdown = self.drain.signal().clone();
        if let Err(e) =
            weft_proxy_http::serve(io, protocol, &self.server, stack, dst, shutdown).await
        {
            debug!(error = %e, "http connection closed with an error");
        }
    }
}
