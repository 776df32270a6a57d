//! The bodies that travel through the stages: [`RequestBody`] on the way in, [`ResponseBody`]
//! on the way out.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use http::StatusCode;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use weft_proxy_metrics::RequestSeries;

use crate::{client::Checkout, h2_client::Received, h2_stream::H2Body, replay::ReplayBody};

/// Any error a body can end with. Boxed only when it happens.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A client's body as it arrives: read by hyper's HTTP/1 server, or straight from an HTTP/2
/// stream (see [`crate::h2_server`]).
#[derive(Debug)]
pub enum Streamed {
    H1(Incoming),
    H2(H2Body),
}

impl Body for Streamed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Streamed::H1(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Streamed::H2(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Streamed::H1(b) => b.is_end_stream(),
            Streamed::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Streamed::H1(b) => b.size_hint(),
            Streamed::H2(b) => b.size_hint(),
        }
    }
}

/// A request body on its way upstream: the client's own, streamed; a replayable copy of it
/// (retries, mirroring); or none (a tunnel's CONNECT).
///
/// One type for every stage and every upstream pool, so a stage that makes a body replayable
/// changes nothing below it. Each variant is `Unpin`, so no projection is needed.
#[derive(Debug)]
pub enum RequestBody {
    /// The client's body, frame by frame as it arrives.
    Streamed(Streamed),
    /// A body that can be sent again (see [`ReplayBody`]).
    Replay(ReplayBody<Streamed>),
    /// No body.
    Empty,
}

impl From<Incoming> for RequestBody {
    fn from(body: Incoming) -> Self {
        RequestBody::Streamed(Streamed::H1(body))
    }
}

impl From<H2Body> for RequestBody {
    fn from(body: H2Body) -> Self {
        RequestBody::Streamed(Streamed::H2(body))
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Streamed(b) => Pin::new(b).poll_frame(cx),
            RequestBody::Replay(b) => Pin::new(b).poll_frame(cx),
            RequestBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Streamed(b) => b.is_end_stream(),
            RequestBody::Replay(b) => b.is_end_stream(),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Streamed(b) => b.size_hint(),
            RequestBody::Replay(b) => b.size_hint(),
            RequestBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// An upstream's streamed body, or a short body the proxy wrote itself (an error message).
pub type Inner = Either<Received, Full<Bytes>>;

pin_project_lite::pin_project! {
    /// A response body that, when dropped (after its last frame was written, or when the client
    /// went away; hyper may never poll an empty body, but it always drops it), counts its
    /// request in `weft_requests_total` and `weft_request_duration_seconds` and hands the
    /// upstream HTTP/1 connection back to its pool.
    #[derive(Debug)]
    pub struct ResponseBody {
        #[pin]
        inner: Inner,
        recorder: Option<Recorder>,
    }
}

#[derive(Debug)]
struct Recorder {
    series: Arc<RequestSeries>,
    status: StatusCode,
    start: Instant,
    checkout: Option<Checkout>,
}

impl ResponseBody {
    /// Wraps `inner`, the body of a response with `status` to a request that arrived at `start`,
    /// read from the upstream connection `checkout` (HTTP/1).
    pub fn recorded(
        inner: Inner,
        series: Arc<RequestSeries>,
        status: StatusCode,
        start: Instant,
        checkout: Option<Checkout>,
    ) -> Self {
        Self {
            inner,
            recorder: Some(Recorder {
                series,
                status,
                start,
                checkout,
            }),
        }
    }

    /// The series the request is counted in: who served it (for its span).
    pub fn series(&self) -> Option<&RequestSeries> {
        self.recorder.as_ref().map(|r| &*r.series)
    }

    /// A body the proxy wrote itself, counted by whoever made it (or not at all).
    pub fn unrecorded(inner: Full<Bytes>) -> Self {
        Self {
            inner: Either::Right(inner),
            recorder: None,
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.series.record(self.status, self.start.elapsed());
        // `inner`, declared first, is already dropped: the response has been read (or abandoned).
        if let Some(checkout) = self.checkout.take() {
            checkout.release();
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = <Inner as Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant must stay `Unpin`: [`RequestBody::poll_frame`] relies on it.
    #[test]
    fn request_bodies_are_unpin() {
        fn unpin<T: Unpin + Send + 'static>() {}
        unpin::<Incoming>();
        unpin::<H2Body>();
        unpin::<ReplayBody<Streamed>>();
        unpin::<RequestBody>();
    }
}
