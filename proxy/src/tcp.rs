//! Opaque TCP, in one place for both directions: connect (directly, or through a peer proxy's
//! mesh tunnel, or to the endpoint a balancer picked), then copy bytes both ways, each
//! direction closed on its own (half-close).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;
use weft_proxy_http::{
    balance::Picked,
    client::{ClientError, Endpoint},
    forward::Upstream,
};
use weft_proxy_transport::{connect, ConnectError, OrigDstAddr};

/// Why an opaque forward ended early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ForwardError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("mesh tunnel to {dst}: {source}")]
    Mesh {
        dst: OrigDstAddr,
        #[source]
        source: ClientError,
    },
    #[error("{dst} cannot name a mesh tunnel: {source}")]
    Authority {
        dst: OrigDstAddr,
        #[source]
        source: http::uri::InvalidUri,
    },
    #[error("copying to or from {dst} failed: {source}")]
    Copy {
        dst: OrigDstAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Where an opaque connection goes.
#[derive(Debug)]
pub(crate) enum To<'a> {
    /// The original destination itself.
    Direct,
    /// The original destination's port, through its peer proxy's mesh connection.
    Peer(&'a Endpoint),
    /// The endpoint a Service's balancer picked; the connect's outcome feeds its state.
    Picked(Picked),
}

/// Connects the client to `to` (for the original destination `dst`) and copies until both
/// sides have closed. When one side finishes sending, the other side's write half is shut down
/// and the opposite direction carries on.
pub(crate) async fn forward<I>(
    client: I,
    dst: OrigDstAddr,
    to: To<'_>,
    connect_timeout: Duration,
) -> Result<(), ForwardError>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    match to {
        To::Direct => {
            let server = connect(dst.0, connect_timeout).await?;
            copy(client, server, dst).await
        }
        To::Peer(peer) => {
            let tunnel = open_tunnel(peer, dst).await?;
            copy(client, tunnel, dst).await
        }
        To::Picked(picked) => {
            let endpoint = OrigDstAddr(picked.slot.addr);
            match picked.slot.forward.upstream() {
                Upstream::Mesh(peer) => match open_tunnel(peer, endpoint).await {
                    Ok(tunnel) => {
                        picked.finish(true);
                        copy(client, tunnel, endpoint).await
                    }
                    Err(e) => {
                        picked.finish(false);
                        Err(e)
                    }
                },
                Upstream::Plain(_) | Upstream::PlainEither { .. } => {
                    match connect(endpoint.0, connect_timeout).await {
                        Ok(server) => {
                            picked.finish(true);
                            copy(client, server, endpoint).await
                        }
                        Err(e) => {
                            picked.finish(false);
                            Err(e.into())
                        }
                    }
                }
            }
        }
    }
}

/// A CONNECT stream to `dst`'s port over the mesh connection to its peer proxy.
async fn open_tunnel(
    peer: &Endpoint,
    dst: OrigDstAddr,
) -> Result<weft_proxy_http::h2_stream::Tunnel, ForwardError> {
    let authority = http::uri::Authority::try_from(dst.to_string())
        .map_err(|source| ForwardError::Authority { dst, source })?;
    peer.open_tunnel(authority, dst.0.port())
        .await
        .map_err(|source| ForwardError::Mesh { dst, source })
}

async fn copy<A, B>(mut client: A, mut server: B, dst: OrigDstAddr) -> Result<(), ForwardError>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (to_server, to_client) =
        weft_proxy_transport::copy::copy_bidirectional(&mut client, &mut server)
            .await
            .map_err(|source| ForwardError::Copy { dst, source })?;
    debug!(to_server, to_client, %dst, "tcp forward done");
    Ok(())
}
