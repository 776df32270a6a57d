//! What both ends of an HTTP/2 connection on `h2` share ([`crate::h2_client`] towards
//! upstreams, [`crate::h2_server`] from clients): a body read from a stream ([`H2Body`]), a body
//! piped into one ([`Pipe`]), a CONNECT stream as bytes ([`Tunnel`]), and the keep-alive PINGs
//! that notice a peer that vanished ([`KeepAlive`]).

use std::{
    fmt,
    future::Future,
    io,
    pin::Pin,
    task::{ready, Context, Poll},
    time::Duration,
};

use bytes::{Buf, Bytes};
use h2::{Ping, PingPong, Reason, RecvStream, SendStream};
use http::{header, HeaderMap};
use http_body::{Body, Frame};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::oneshot,
    time::Sleep,
};
use tracing::debug;

/// HTTP/2's default SETTINGS_MAX_FRAME_SIZE (the mesh hop's connections take larger frames).
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16 * 1024;

/// Why a connection's PINGs ended it, or how it failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnEnd {
    #[error(transparent)]
    H2(#[from] h2::Error),
    #[error("no answer to a PING within {0:?}")]
    PingTimeout(Duration),
}

/// Sends a PING every `interval` (idle or not) and fails when an answer takes longer than
/// `timeout`. Polled by the connection's own task, beside the connection.
pub(crate) struct KeepAlive {
    pings: PingPong,
    interval: Duration,
    timeout: Duration,
    timer: Pin<Box<Sleep>>,
    awaiting_pong: bool,
}

impl KeepAlive {
    pub(crate) fn new(pings: PingPong, (interval, timeout): (Duration, Duration)) -> Self {
        Self {
            pings,
            interval,
            timeout,
            timer: Box::pin(tokio::time::sleep(interval)),
            awaiting_pong: false,
        }
    }

    /// Pending while the peer keeps answering; ready with the error that ends the connection.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ConnEnd> {
        loop {
            if self.awaiting_pong {
                match self.pings.poll_pong(cx) {
                    Poll::Ready(Ok(_)) => {
                        self.awaiting_pong = false;
                        let next = tokio::time::Instant::now() + self.interval;
                        self.timer.as_mut().reset(next);
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(e.into()),
                    Poll::Pending => {}
                }
            }
            ready!(self.timer.as_mut().poll(cx));
            if self.awaiting_pong {
                return Poll::Ready(ConnEnd::PingTimeout(self.timeout));
            }
            if let Err(e) = self.pings.send_ping(Ping::opaque()) {
                return Poll::Ready(e.into());
            }
            self.awaiting_pong = true;
            let deadline = tokio::time::Instant::now() + self.timeout;
            self.timer.as_mut().reset(deadline);
            // Again: the new deadline and the pong must be watched.
        }
    }
}

/// Copies a body into its stream, within the stream's flow-control window: a request body
/// upstream, or a response body back to the client.
pub(crate) struct Pipe<B> {
    body: B,
    stream: SendStream<Bytes>,
    /// Fires (or closes) when whoever waits for the response stopped waiting.
    cancel: Option<oneshot::Receiver<()>>,
}

impl<B> Pipe<B> {
    pub(crate) fn new(body: B, stream: SendStream<Bytes>) -> Self {
        Self {
            body,
            stream,
            cancel: None,
        }
    }

    /// Resets the stream with `CANCEL` when `cancelled` fires.
    pub(crate) fn cancel_on(&mut self, cancelled: oneshot::Receiver<()>) {
        self.cancel = Some(cancelled);
    }
}

impl<B> Future for Pipe<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: fmt::Display,
{
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        loop {
            if let Some(cancel) = &mut this.cancel {
                if let Poll::Ready(result) = Pin::new(cancel).poll(cx) {
                    if result.is_ok() {
                        this.stream.send_reset(Reason::CANCEL);
                        return Poll::Ready(());
                    }
                    // The response came; nothing to cancel any more.
                    this.cancel = None;
                }
            }
            // The peer reset the stream (or the connection failed): stop reading the body.
            if let Poll::Ready(reason) = this.stream.poll_reset(cx) {
                debug!(?reason, "peer reset a stream while its body was sent");
                return Poll::Ready(());
            }
            // One frame at a time in flight: wait for window before reading more of the body.
            if this.stream.capacity() == 0 {
                this.stream.reserve_capacity(1);
                match ready!(this.stream.poll_capacity(cx)) {
                    Some(Ok(0)) => continue,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        debug!(error = %e, "a body's stream failed");
                        return Poll::Ready(());
                    }
                    None => return Poll::Ready(()),
                }
            }
            let frame = match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => {
                    debug!(error = %e, "body failed; resetting its stream");
                    this.stream.send_reset(Reason::INTERNAL_ERROR);
                    return Poll::Ready(());
                }
                None => {
                    let _ = this.stream.send_data(Bytes::new(), true);
                    return Poll::Ready(());
                }
            };
            match frame.into_data() {
                Ok(data) => {
                    let eos = this.body.is_end_stream();
                    if let Err(e) = this.stream.send_data(data, eos) {
                        debug!(error = %e, "a body's stream failed");
                        return Poll::Ready(());
                    }
                    if eos {
                        return Poll::Ready(());
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        let _ = this.stream.send_trailers(trailers);
                        return Poll::Ready(());
                    }
                }
            }
        }
    }
}

/// A body read from an HTTP/2 stream (a response from an upstream, a request from a client);
/// its flow-control window is given back as each frame is taken.
#[derive(Debug)]
pub struct H2Body {
    recv: RecvStream,
    data_done: bool,
    /// What `Content-Length` says is still to come; [`UNKNOWN_LENGTH`] without one (not an
    /// `Option`: the body stays as small as hyper's).
    remaining: u64,
}

const UNKNOWN_LENGTH: u64 = u64::MAX;

impl H2Body {
    /// The body of the message whose head carried `headers`.
    pub(crate) fn new(headers: &HeaderMap, recv: RecvStream) -> Self {
        Self {
            recv,
            data_done: false,
            remaining: content_length(headers).unwrap_or(UNKNOWN_LENGTH),
        }
    }
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = &mut *self;
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    if this.remaining != UNKNOWN_LENGTH {
                        this.remaining = this.remaining.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => this.data_done = true,
            }
        }
        match ready!(this.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        if self.is_end_stream() {
            http_body::SizeHint::with_exact(0)
        } else if self.remaining == UNKNOWN_LENGTH {
            http_body::SizeHint::default()
        } else {
            http_body::SizeHint::with_exact(self.remaining)
        }
    }
}

/// The length a message's `Content-Length` declares, for its body's size hint (as hyper's
/// HTTP/2 body gives it).
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// A CONNECT stream as a byte stream: reads take the DATA frames' bytes and give their window
/// back; writes go into the stream as DATA within its window, with no task or channel between.
#[derive(Debug)]
pub struct Tunnel {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// Received and not yet read.
    pending: Bytes,
}

impl Tunnel {
    pub(crate) fn new(send: SendStream<Bytes>, recv: RecvStream) -> Self {
        Self {
            send,
            recv,
            pending: Bytes::new(),
        }
    }
}

fn h2_io_error(e: h2::Error) -> io::Error {
    if e.is_io() {
        e.into_io()
            .unwrap_or_else(|| io::ErrorKind::BrokenPipe.into())
    } else {
        io::Error::other(e)
    }
}

impl AsyncRead for Tunnel {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.pending.is_empty() {
            match ready!(this.recv.poll_data(cx)) {
                None => return Poll::Ready(Ok(())),
                Some(Ok(data)) => this.pending = data,
                Some(Err(e)) => {
                    return Poll::Ready(match e.reason() {
                        // The peer closed its side, as a TCP FIN would.
                        Some(Reason::NO_ERROR | Reason::CANCEL) => Ok(()),
                        Some(Reason::STREAM_CLOSED) => {
                            Err(io::Error::new(io::ErrorKind::BrokenPipe, e))
                        }
                        _ => Err(h2_io_error(e)),
                    });
                }
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending[..n]);
        this.pending.advance(n);
        let _ = this.recv.flow_control().release_capacity(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Tunnel {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let this = &mut *self;
        let mut capacity = this.send.capacity();
        if capacity == 0 {
            this.send.reserve_capacity(buf.len());
            capacity = loop {
                match ready!(this.send.poll_capacity(cx)) {
                    Some(Ok(0)) => {}
                    Some(Ok(n)) => break n,
                    Some(Err(e)) => return Poll::Ready(Err(h2_io_error(e))),
                    None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
                }
            };
        }
        let n = capacity.min(buf.len());
        this.send
            .send_data(Bytes::copy_from_slice(&buf[..n]), false)
            .map_err(h2_io_error)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The connection's task writes what was sent.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // END_STREAM: this side is done, as a TCP FIN; the other direction carries on.
        let _ = self.send.send_data(Bytes::new(), true);
        Poll::Ready(Ok(()))
    }
}
