//! Serving an accepted connection as HTTP: the edge of the per-request path.
//!
//! Each request enters its connection's stack here with its [`Cx`], and leaves as a response:
//! the upstream's, or the one [`ProxyError::into_response`] makes of a failure.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
    time::{Duration, Instant},
};

use http::{Request, Response};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use weft_proxy_detect::Protocol;
use weft_proxy_transport::OrigDstAddr;

use crate::{
    body::{BoxError, RequestBody, ResponseBody},
    h2_server::{serve_h2, H2ServerSettings},
    h2_stream::DEFAULT_MAX_FRAME_SIZE,
    stage::{Cx, Stage, StageResult},
    tap,
    trace::{self, Begun},
};

/// Limits on what a client may send.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// An HTTP/1 client must finish sending a request's headers within this time, or is cut off.
    pub header_read_timeout: Duration,
    /// The largest request head accepted: HTTP/1 answers 431 past it, HTTP/2 refuses the stream.
    /// At least 8 KiB (hyper's minimum buffer).
    pub max_header_bytes: usize,
    /// Tracing: each request's context read and passed on, sampled requests' spans recorded
    /// (see [`crate::trace`]). `None`: trace headers pass through untouched.
    pub trace: Option<Arc<weft_proxy_trace::Tracing>>,
    /// Tap: each request a subscriber's filter matches published with its answer (see
    /// `weft_proxy_tap`); while nobody taps, one atomic load per request.
    pub tap: Option<weft_proxy_tap::Point>,
}

/// The smallest `max_header_bytes` hyper can work with.
pub const MIN_HEADER_BYTES: usize = 8 * 1024;

/// Answers one request with `stack`: never fails, every error becomes a status. `traced` is
/// the request's span when [`trace::begin`] sampled it, `tapped` the request as a tap captured
/// it; both end here with the answer's head.
pub fn handle<S: Stage>(
    stack: &S,
    dst: OrigDstAddr,
    req: Request<RequestBody>,
    traced: Option<Box<Begun>>,
    tapped: Option<Box<weft_proxy_tap::Started>>,
) -> Handle<impl Future<Output = StageResult> + Send + '_> {
    let cx = Cx::new(dst, Instant::now());
    Handle {
        answer: stack.call(req, cx),
        traced,
        tapped,
    }
}

pin_project_lite::pin_project! {
    /// A request's answer from its stack, an error made a response (the stage that failed
    /// logged and counted it). Written out rather than an `async` block, which would hold the
    /// stack's future twice (captured, then awaited).
    #[derive(Debug)]
    pub struct Handle<F> {
        #[pin]
        answer: F,
        traced: Option<Box<Begun>>,
        tapped: Option<Box<weft_proxy_tap::Started>>,
    }
}

impl<F: Future<Output = StageResult>> Future for Handle<F> {
    type Output = Result<Response<ResponseBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let (rsp, error) = match ready!(this.answer.poll(cx)) {
            Ok(rsp) => (rsp, None),
            Err(e) => {
                let kind = e.kind();
                (e.into_response(), Some(kind))
            }
        };
        if let Some(span) = this.traced.take() {
            (*span).served_by(rsp.body().series()).finish(&rsp, error);
        }
        if let Some(tapped) = this.tapped.take() {
            tapped.finish(tap::outcome(&rsp, error, rsp.body().series()));
        }
        Poll::Ready(Ok(rsp))
    }
}

/// Serves HTTP on `io` (the protocol was already detected), each request through `stack`,
/// until the client closes or, after `shutdown` fires, until in-flight requests finish: HTTP/1
/// closes after the current response, HTTP/2 sends GOAWAY and lets open streams complete.
pub async fn serve<I, S>(
    io: I,
    protocol: Protocol,
    settings: &ServerSettings,
    stack: Arc<S>,
    dst: OrigDstAddr,
    shutdown: CancellationToken,
) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Stage + 'static,
{
    let tracing = settings.trace.clone();
    let tap = settings.tap.clone();
    let answer = move |mut req: Request<RequestBody>| {
        let stack = stack.clone();
        let traced = tracing.as_ref().and_then(|t| trace::begin(t, &mut req));
        let tapped = tap.as_ref().and_then(|t| t.start(&req));
        async move { handle(&*stack, dst, req, traced, tapped).await }
    };
    if protocol == Protocol::Http2 {
        // Each stream's task boxes its request's future (see `h2_server`).
        let h2 = H2ServerSettings {
            max_header_list: u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX),
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            keep_alive: None,
        };
        serve_h2(io, &h2, answer, shutdown).await?;
    } else {
        // HTTP/1 keeps the request's future in one buffer per connection: no box.
        let answer = move |req: Request<Incoming>| answer(req.map(RequestBody::from));
        serve_http1(
            TokioIo::new(io),
            settings.header_read_timeout,
            settings.max_header_bytes,
            service_fn(answer),
            shutdown,
        )
        .await?;
    }
    Ok(())
}

/// Serves HTTP/1 (upgrades included) on `io` until the client closes or, after `shutdown`
/// fires, the current response is sent. `header_read_timeout` also bounds an idle keep-alive
/// connection's wait for its next request.
pub(crate) async fn serve_http1<I, S>(
    io: TokioIo<I>,
    header_read_timeout: Duration,
    max_header_bytes: usize,
    service: S,
    shutdown: CancellationToken,
) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = ResponseBody>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(max_header_bytes.max(MIN_HEADER_BYTES))
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => return res,
        () = shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
    }
    conn.await
}
