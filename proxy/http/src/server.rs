//! Serving an accepted connection as HTTP.

use std::time::Duration;

use hyper::{
    server::conn::{http1, http2},
    service::service_fn,
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use weft_proxy_detect::Protocol;

use crate::Proxy;

/// Limits on what a client may send.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// An HTTP/1 client must finish sending a request's headers within this time, or is cut off.
    pub header_read_timeout: Duration,
    /// The largest request head accepted: HTTP/1 answers 431 past it, HTTP/2 refuses the stream.
    /// At least 8 KiB (hyper's minimum buffer).
    pub max_header_bytes: usize,
}

/// The smallest `max_header_bytes` hyper can work with.
pub const MIN_HEADER_BYTES: usize = 8 * 1024;

/// Serves HTTP on `io` (the protocol was already detected) until the client closes or, after
/// `shutdown` fires, until in-flight requests finish: HTTP/1 closes after the current response,
/// HTTP/2 sends GOAWAY and lets open streams complete.
pub async fn serve<I>(
    io: I,
    protocol: Protocol,
    settings: &ServerSettings,
    proxy: Proxy,
    shutdown: CancellationToken,
) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| proxy.clone().handle(req));
    let io = TokioIo::new(io);
    if protocol == Protocol::Http2 {
        let conn = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
            .serve_connection(io, service);
        tokio::pin!(conn);
        tokio::select! {
            res = conn.as_mut() => return res,
            () = shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
        }
        conn.await
    } else {
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(settings.header_read_timeout)
            .max_buf_size(settings.max_header_bytes.max(MIN_HEADER_BYTES))
            .serve_connection(io, service)
            .with_upgrades();
        tokio::pin!(conn);
        tokio::select! {
            res = conn.as_mut() => return res,
            () = shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
        }
        conn.await
    }
}
