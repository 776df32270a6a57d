//! Sockets: the accept loop, one task per connection serving HTTP/1.1 and h2c through
//! hyper-util's auto builder, the drain at shutdown, and the connection reset.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use http::Version;
use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn, Instrument};

use crate::handler::{self, Answer, Shared};

/// The most header fields one HTTP/1 request may carry (hyper's default, stated).
const MAX_HEADERS: usize = 100;
/// The most bytes of header one request may carry, HTTP/1 buffer and HTTP/2 header list.
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// How long to wait after an accept error (out of file descriptors, say) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// After the drain ran out and the waits were cut, how long the connections get to close.
const ABORT_GRACE: Duration = Duration::from_secs(1);

/// The error a service returns to make hyper drop the request without a response: HTTP/1
/// closes the connection (reset, see [`ResettableStream`]), HTTP/2 resets the stream.
#[derive(Debug, thiserror::Error)]
#[error("the echo app resets this request's connection (retry simulator, or shutdown)")]
struct ResetRequest;

/// Serves `listener` until `shutdown` completes, then drains. See [`crate::Echo::serve`].
pub(crate) async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    port: u16,
    shutdown: impl Future<Output = ()>,
) {
    let settings = &shared.settings;
    let graceful = CancellationToken::new();
    let abort = CancellationToken::new();
    let limit = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let ids = AtomicU64::new(0);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            (stream, peer, permit) = accept(&listener, &limit) => {
                let id = ids.fetch_add(1, Ordering::Relaxed);
                let span = tracing::debug_span!("echo_conn", id, %peer, port);
                connections.spawn(
                    connection(shared.clone(), stream, port, graceful.clone(), abort.clone(), permit)
                        .instrument(span),
                );
            }
        }
    }
    drop(listener);
    graceful.cancel();
    let open = connections.len();
    if tokio::time::timeout(settings.drain_timeout, join_all(&mut connections))
        .await
        .is_err()
    {
        warn!(
            port,
            open,
            drain_timeout = ?settings.drain_timeout,
            "echo connections still busy when the drain ran out; cutting their waits"
        );
        abort.cancel();
        if tokio::time::timeout(ABORT_GRACE, join_all(&mut connections))
            .await
            .is_err()
        {
            connections.shutdown().await;
        }
    }
}

async fn join_all(connections: &mut JoinSet<()>) {
    while connections.join_next().await.is_some() {}
}

/// The next connection, once there is room for one more.
async fn accept(
    listener: &TcpListener,
    limit: &Arc<Semaphore>,
) -> (TcpStream, SocketAddr, OwnedSemaphorePermit) {
    loop {
        // The semaphore is never closed, so this only waits for room.
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return std::future::pending().await;
        };
        match listener.accept().await {
            Ok((stream, peer)) => return (stream, peer, permit),
            Err(error) => {
                warn!(%error, "echo accept failed; retrying (is the process out of file descriptors?)");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

async fn connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    port: u16,
    graceful: CancellationToken,
    abort: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let header_read_timeout = shared.settings.header_read_timeout;
    let reset = Arc::new(AtomicBool::new(false));
    let io = TokioIo::new(ResettableStream {
        inner: stream,
        reset: reset.clone(),
    });
    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let shared = shared.clone();
        let reset = reset.clone();
        let abort = abort.clone();
        async move {
            let version = req.version();
            match handler::answer(&shared, port, &abort, req).await {
                Answer::Respond(response) => Ok(response),
                Answer::Reset => {
                    // HTTP/2 multiplexes: reset the stream, not every stream on the connection.
                    if version != Version::HTTP_2 {
                        reset.store(true, Ordering::Relaxed);
                    }
                    Err(ResetRequest)
                }
            }
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = graceful.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        debug!(%error, "echo connection ended with an error");
    }
}

/// The connection's socket, which closes with a TCP reset (`SO_LINGER` 0) rather than a FIN
/// when the retry simulator asked for one: the reset happens when hyper drops the
/// connection, after the service returned its error, so no byte of a response goes out.
struct ResettableStream {
    inner: TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for ResettableStream {
    fn drop(&mut self) {
        if self.reset.load(Ordering::Relaxed) {
            if let Err(error) = self.inner.set_zero_linger() {
                debug!(%error, "SO_LINGER 0 on a connection to reset failed; it closes with a FIN");
            }
        }
    }
}

impl AsyncRead for ResettableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
