//! Opaque TCP: bytes copied both ways, each direction closed on its own (half-close).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;
use weft_proxy_transport::{connect, ConnectError, OrigDstAddr};

/// Why an opaque forward ended early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ForwardError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
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
