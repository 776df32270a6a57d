//! Opaque TCP: bytes copied both ways, each direction closed on its own (half-close).

use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;
use weft_proxy_http::{
    balanced::{Picked, Upstream},
    client::{ClientError, Endpoint},
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
    #[error("copying to or from {dst} failed: {source}")]
    Copy {
        dst: OrigDstAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Connects to `dst` and copies until both sides have closed. When one side finishes sending,
/// the other side's write half is shut down and the opposite direction carries on.
pub(crate) async fn forward<I>(
    mut client: I,
    dst: OrigDstAddr,
    connect_timeout: Duration,
) -> Result<(), ForwardError>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut server = connect(dst.0, connect_timeout).await?;
    let (to_server, to_client) = tokio::io::copy_bidirectional(&mut client, &mut server)
        .await
        .map_err(|source| ForwardError::Copy { dst, source })?;
    debug!(to_server, to_client, "tcp forward done");
    Ok(())
}

/// Opens a CONNECT stream to `dst`'s port over the mesh connection to its peer proxy and copies
/// until both sides have closed, with half-close as in [`forward`].
pub(crate) async fn forward_mesh<I>(
    mut client: I,
    dst: OrigDstAddr,
    peer: &Endpoint,
) -> Result<(), ForwardError>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let authority = authority(dst)?;
    let tunnel = peer
        .open_tunnel(authority, dst.0.port())
        .await
        .map_err(|source| ForwardError::Mesh { dst, source })?;
    let mut server = TokioIo::new(tunnel);
    let (to_server, to_client) = tokio::io::copy_bidirectional(&mut client, &mut server)
        .await
        .map_err(|source| ForwardError::Copy { dst, source })?;
    debug!(to_server, to_client, "mesh tcp forward done");
    Ok(())
}

/// Connects to the endpoint `picked` chose (plainly, or through its proxy) and copies until
/// both sides have closed. The connect's outcome and time feed the endpoint's balancer state.
pub(crate) async fn forward_balanced<I>(
    mut client: I,
    picked: Picked,
    connect_timeout: Duration,
) -> Result<(), ForwardError>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let dst = OrigDstAddr(picked.slot.addr);
    let copied = match &picked.slot.upstream {
        Upstream::Plain { .. } => match connect(dst.0, connect_timeout).await {
            Ok(mut server) => {
                picked.finish(true);
                tokio::io::copy_bidirectional(&mut client, &mut server).await
            }
            Err(e) => {
                picked.finish(false);
                return Err(e.into());
            }
        },
        Upstream::Mesh(peer) => {
            let authority = authority(dst)?;
            match peer.open_tunnel(authority, dst.0.port()).await {
                Ok(tunnel) => {
                    picked.finish(true);
                    tokio::io::copy_bidirectional(&mut client, &mut TokioIo::new(tunnel)).await
                }
                Err(source) => {
                    picked.finish(false);
                    return Err(ForwardError::Mesh { dst, source });
                }
            }
        }
    };
    let (to_server, to_client) = copied.map_err(|source| ForwardError::Copy { dst, source })?;
    debug!(to_server, to_client, endpoint = %dst, "balanced tcp forward done");
    Ok(())
}

/// `dst` as the authority of a CONNECT stream on the mesh hop.
fn authority(dst: OrigDstAddr) -> Result<http::uri::Authority, ForwardError> {
    http::uri::Authority::try_from(dst.to_string()).map_err(|e| ForwardError::Copy {
        dst,
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
    })
}
