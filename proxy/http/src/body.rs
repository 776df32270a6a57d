//! The response body the proxy hands back, which records the request's metrics when done.

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

use crate::client::Checkout;

/// An upstream's streamed body, or a short body the proxy wrote itself (an error message).
pub type Inner = Either<Incoming, Full<Bytes>>;

pin_project_lite::pin_project! {
    /// A response body that, when dropped (after its last frame was written, or when the client
    /// went away; hyper may never poll an empty body, but it always drops it), counts its request
    /// in `weft_requests_total` and `weft_request_duration_seconds` and hands the upstream
    /// HTTP/1 connection back to its pool.
    #[derive(Debug)]
    pub struct ResponseBody {
        #[pin]
        inner: Inner,
        recorder: Recorder,
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
    pub fn new(
        inner: Inner,
        series: Arc<RequestSeries>,
        status: StatusCode,
        start: Instant,
        checkout: Option<Checkout>,
    ) -> Self {
        Self {
            inner,
            recorder: Recorder {
                series,
                status,
                start,
                checkout,
            },
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
