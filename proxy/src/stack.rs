//! One accepted connection, top to bottom:
//! target (original destination) -> detect -> HTTP (hyper, pooled upstreams) or opaque TCP.
//!
//! Inbound and outbound share this path for now. Identity, mTLS and policy slot in on the
//! inbound side after detection; routing and load balancing on the outbound side before the
//! endpoint connect.

use std::{sync::Arc, time::Duration};

use tokio::net::TcpStream;
use tracing::{debug, info};
use weft_proxy_detect::Protocol;
use weft_proxy_http::{client::UpstreamVersion, Proxy, ServerSettings, Upstreams};
use weft_proxy_metrics::{Direction, Metrics};
use weft_proxy_transport::{orig_dst, OrigDstAddr, PrefixedIo};

use crate::{
    config::{PortSet, Target},
    detect::{self, Detected},
    drain::Drain,
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
}

impl Stack {
    /// Serves one connection to the end. Errors are logged here, in the connection's span.
    pub(crate) async fn serve(self: Arc<Self>, stream: TcpStream) {
        // Counted from here to the socket's drop, which for an upgraded connection is the end
        // of its tunnel.
        let mut io = self.metrics.accepted(self.direction, stream);
        if let Err(e) = io.get_ref().set_nodelay(true) {
            debug!(error = %e, "TCP_NODELAY not set");
        }
        let dst = match self.target {
            Target::Explicit(addr) => OrigDstAddr(addr),
            Target::Transparent => match orig_dst(io.get_ref()) {
                Ok(dst) => dst,
                Err(e) => {
                    // Anyone who can reach the port can cause this: no log flood at info.
                    debug!(error = %e, "connection refused");
                    return;
                }
            },
        };
        tracing::Span::current().record("dst", tracing::field::display(dst));

        let (protocol, prefix) = if self.opaque_ports.contains(dst.0.port()) {
            (Protocol::Opaque, bytes::Bytes::new())
        } else {
            match detect::read(&mut io, self.detect_timeout).await {
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

        if protocol.is_http() {
            let version = if protocol == Protocol::Http2 {
                UpstreamVersion::Http2
            } else {
                UpstreamVersion::Http1
            };
            let proxy = Proxy::new(
                dst,
                version,
                &self.upstreams,
                self.direction,
                self.metrics.clone(),
                self.drain.tasks().clone(),
            );
            let shutdown = self.drain.signal().clone();
            if let Err(e) =
                weft_proxy_http::serve(io, protocol, &self.server, proxy, shutdown).await
            {
                debug!(error = %e, "http connection closed with an error");
            }
        } else if let Err(e) = tcp::forward(io, dst, self.connect_timeout).await {
            info!(error = %e, "tcp connection failed");
        }
    }
}
