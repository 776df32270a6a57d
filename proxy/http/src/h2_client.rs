//! HTTP/2 to upstreams on `h2` directly, without hyper's client.
//!
//! hyper's HTTP/2 client hands each request over a channel to the connection's task, which
//! opens the stream and spawns a task per request to wait for the response and pass it back
//! through a oneshot; a CONNECT stream's writes go through another channel to a task of their
//! own, each write copied into a new buffer (hyper 1.12's `proto::h2::client` and `upgrade`):
//! per request a task spawned and two channels crossed, each a wake-up (BENCHMARKS.md, "the
//! HTTP/2 upstream client on `h2` directly", measures what that cost). Here the request's own task
//! opens the stream (`h2`'s stream store is shared behind a lock, so no hand-off is needed),
//! waits for the response itself, and a tunnel writes straight into its stream. A task is
//! spawned only for a request body that is still arriving when the request leaves.
//!
//! The connection's task also keeps a long-lived mesh connection checked with PINGs, as hyper's
//! keep-alive did.

use std::{
    future::{poll_fn, Future},
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{ready, Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use h2::{
    client::{ResponseFuture, SendRequest},
    RecvStream, SendStream,
};
use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::oneshot,
};
use tracing::debug;

use crate::{
    body::{BoxError, RequestBody},
    h2_stream::{ConnEnd, H2Body, KeepAlive, Pipe, Tunnel, DEFAULT_MAX_FRAME_SIZE},
};

/// How an HTTP/2 upstream connection is set up.
#[derive(Clone, Copy, Debug)]
pub struct H2Settings {
    /// SETTINGS_MAX_FRAME_SIZE: the largest frame this end accepts.
    pub max_frame_size: u32,
    /// PING the peer this often, and close the connection if no answer comes within the
    /// second duration.
    pub keep_alive: Option<(Duration, Duration)>,
}

impl Default for H2Settings {
    fn default() -> Self {
        Self {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            keep_alive: None,
        }
    }
}

/// Flow-control windows and limits: hyper's client defaults, so moving off hyper changed no
/// window a stream sees.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONN_WINDOW: u32 = 5 * 1024 * 1024;
const MAX_SEND_BUFFER: usize = 1024 * 1024;
const MAX_HEADER_LIST: u32 = 16 * 1024;
const INITIAL_MAX_SEND_STREAMS: usize = 100;
const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

/// One HTTP/2 connection to an upstream: a handle to open streams on it. Clones share it.
#[derive(Clone, Debug)]
pub struct H2Connection {
    tx: SendRequest<Bytes>,
    /// Set when the connection's task ends (closed, failed, or no answer to a PING).
    closed: Arc<AtomicBool>,
}

/// The HTTP/2 handshake on `io`; the connection's task is spawned.
pub async fn handshake<I>(
    io: I,
    settings: H2Settings,
    addr: std::net::SocketAddr,
) -> Result<H2Connection, h2::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut conn) = h2::client::Builder::new()
        .initial_max_send_streams(INITIAL_MAX_SEND_STREAMS)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONN_WINDOW)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESET_STREAMS))
        .max_frame_size(settings.max_frame_size)
        .enable_push(false)
        .handshake::<_, Bytes>(io)
        .await?;
    let closed = Arc::new(AtomicBool::new(false));
    let mut keep_alive = settings
        .keep_alive
        .and_then(|every| Some(KeepAlive::new(conn.ping_pong()?, every)));
    let done = closed.clone();
    tokio::spawn(async move {
        let mut conn = std::pin::pin!(conn);
        let result = poll_fn(|cx| {
            if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                return Poll::Ready(result.map_err(ConnEnd::H2));
            }
            match &mut keep_alive {
                Some(k) => k.poll(cx).map(Err),
                None => Poll::Pending,
            }
        })
        .await;
        done.store(true, Ordering::Release);
        if let Err(e) = result {
            debug!(%addr, error = %e, "upstream connection closed with an error");
        }
    });
    Ok(H2Connection { tx, closed })
}

impl H2Connection {
    /// Whether the connection has ended; a closed one takes no more requests.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Sends `req`: opens its stream now (no hand-off to the connection's task) and returns the
    /// response head's future. A body still arriving is piped on by a task of its own. A
    /// successful CONNECT's response carries the stream as a [`Tunnel`] (see
    /// [`Received::take_tunnel`]).
    pub fn send(&self, req: Request<RequestBody>) -> Result<ResponseWait, h2::Error> {
        // A fresh handle has no stream pending open, so it may send at once: the stream opens
        // now, or queues inside `h2` until the peer's stream limit allows.
        let mut tx = self.tx.clone();
        let (head, body) = req.into_parts();
        let connect = head.method == Method::CONNECT;
        let eos = !connect && body.is_end_stream();
        let (response, stream) = tx.send_request(Request::from_parts(head, ()), eos)?;
        if connect {
            return Ok(ResponseWait {
                response,
                held: Held::Tunnel(Box::new(stream)),
            });
        }
        let held = if eos {
            Held::Nothing
        } else {
            let mut pipe = Pipe::new(body, stream);
            // The body is often already here whole (a small request read with its head): sent
            // now, no task is needed. Polled without a waker: if it must wait, the task it is
            // spawned into polls it again and is the one woken.
            match Pin::new(&mut pipe).poll(&mut Context::from_waker(std::task::Waker::noop())) {
                Poll::Ready(()) => Held::Nothing,
                Poll::Pending => {
                    let (cancel, cancelled) = oneshot::channel();
                    pipe.cancel_on(cancelled);
                    tokio::spawn(pipe);
                    Held::Pipe(cancel)
                }
            }
        };
        Ok(ResponseWait { response, held })
    }
}

/// A response head on its way. Dropped before it came (the caller gave up), it resets the
/// stream and stops the request body's pipe.
#[derive(Debug)]
pub struct ResponseWait {
    response: ResponseFuture,
    held: Held,
}

/// What a request in flight keeps besides its response's future (one or the other: every
/// request's future carries this).
#[derive(Debug)]
enum Held {
    Nothing,
    /// Tells the request body's pipe that the caller gave up.
    Pipe(oneshot::Sender<()>),
    /// A CONNECT's sending half, for its tunnel (boxed: rare, and twice the others' size).
    Tunnel(Box<SendStream<Bytes>>),
}

impl Future for ResponseWait {
    type Output = Result<Response<Received>, h2::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let rsp = ready!(Pin::new(&mut self.response).poll(cx))?;
        // Answered: a pipe carries on to the end of the body.
        Poll::Ready(Ok(match std::mem::replace(&mut self.held, Held::Nothing) {
            Held::Tunnel(send) if rsp.status().is_success() => {
                rsp.map(|recv| Received::Tunnel(Some(Box::new(Tunnel::new(*send, recv)))))
            }
            _ => with_body(rsp),
        }))
    }
}

impl Drop for ResponseWait {
    fn drop(&mut self) {
        if let Held::Pipe(cancel) = std::mem::replace(&mut self.held, Held::Nothing) {
            let _ = cancel.send(());
        }
    }
}

/// A response head and its stream as a response with an [`H2Body`].
fn with_body(rsp: Response<RecvStream>) -> Response<Received> {
    let (head, recv) = rsp.into_parts();
    let body = H2Body::new(&head.headers, recv);
    Response::from_parts(head, Received::H2(body))
}

/// A response from an upstream: read by hyper (HTTP/1), from an h2 stream, or a successful
/// CONNECT whose stream is now a byte tunnel (and whose body is empty).
#[derive(Debug)]
pub enum Received {
    /// From hyper's HTTP/1 client.
    H1(Incoming),
    /// From an HTTP/2 stream.
    H2(H2Body),
    /// A CONNECT's stream, until [`Received::take_tunnel`] takes it (boxed: rare, and large
    /// beside the others).
    Tunnel(Option<Box<Tunnel>>),
}

impl Received {
    /// The byte stream a successful CONNECT opened, once.
    pub fn take_tunnel(&mut self) -> Option<Tunnel> {
        match self {
            Received::Tunnel(t) => t.take().map(|t| *t),
            _ => None,
        }
    }
}

impl Body for Received {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Received::H1(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Received::H2(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Received::Tunnel(_) => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Received::H1(b) => b.is_end_stream(),
            Received::H2(b) => b.is_end_stream(),
            Received::Tunnel(_) => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Received::H1(b) => b.size_hint(),
            Received::H2(b) => b.size_hint(),
            Received::Tunnel(_) => SizeHint::with_exact(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{TcpListener, TcpStream},
        time::timeout,
    };

    use h2::Reason;

    use super::*;

    const LIMIT: Duration = Duration::from_secs(10);

    /// An `h2` server on loopback; each stream goes to `stream`. With `serve` false it answers
    /// the handshake and then is never polled again (a peer that hung).
    async fn server<F, Fut>(serve: bool, stream: F) -> SocketAddr
    where
        F: Fn(Request<RecvStream>, h2::server::SendResponse<Bytes>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let mut conn = h2::server::handshake(tcp).await.expect("server handshake");
            if !serve {
                // Held, never polled: no PING is answered.
                tokio::time::sleep(LIMIT).await;
                drop(conn);
                return;
            }
            while let Some(Ok((req, respond))) = conn.accept().await {
                tokio::spawn(stream(req, respond));
            }
        });
        addr
    }

    async fn dial(addr: SocketAddr, settings: H2Settings) -> H2Connection {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        handshake(tcp, settings, addr)
            .await
            .expect("client handshake")
    }

    async fn never_answer(_: Request<RecvStream>, respond: h2::server::SendResponse<Bytes>) {
        tokio::time::sleep(LIMIT).await;
        drop(respond);
    }

    #[tokio::test]
    async fn a_peer_that_stops_answering_pings_is_closed_and_a_live_one_is_not() {
        let every = Some((Duration::from_millis(50), Duration::from_millis(100)));
        let settings = H2Settings {
            keep_alive: every,
            ..H2Settings::default()
        };
        let hung = dial(server(false, never_answer).await, settings).await;
        let live = dial(server(true, never_answer).await, settings).await;
        timeout(LIMIT, async {
            while !hung.is_closed() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the hung peer's connection closes within the PING timeout");
        // Several intervals later the answering peer's connection is still open and usable.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !live.is_closed(),
            "a peer that answers PINGs stays connected"
        );
        let req = Request::builder()
            .uri("http://api/")
            .body(RequestBody::Empty)
            .expect("request");
        assert!(
            hung.send(req).is_err(),
            "a closed connection takes no request"
        );
    }

    #[tokio::test]
    async fn a_connect_stream_is_a_byte_tunnel_both_ways_with_half_close() {
        let addr = server(true, |req, mut respond| async move {
            assert_eq!(req.method(), Method::CONNECT);
            let mut up = req.into_body();
            let mut down = respond
                .send_response(Response::new(()), false)
                .expect("answer");
            // Echo every byte, then end the stream when the client ends its side.
            while let Some(data) = up.data().await {
                let data = data.expect("data");
                let _ = up.flow_control().release_capacity(data.len());
                down.send_data(data, false).expect("echo");
            }
            down.send_data(Bytes::new(), true).expect("end");
        })
        .await;
        let conn = dial(addr, H2Settings::default()).await;
        let req = Request::builder()
            .method(Method::CONNECT)
            .uri("127.0.0.1:80")
            .body(RequestBody::Empty)
            .expect("request");
        let rsp = timeout(LIMIT, conn.send(req).expect("sent"))
            .await
            .expect("answered in time")
            .expect("answered");
        assert_eq!(rsp.status(), http::StatusCode::OK);
        let mut tunnel = rsp.into_body().take_tunnel().expect("a tunnel");
        // Larger than a stream's initial window (64 KiB): the writes wait for window.
        let sent: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let (mut rd, mut wr) = tokio::io::split(&mut tunnel);
        let write = async {
            wr.write_all(&sent).await.expect("write");
            wr.shutdown().await.expect("half close");
        };
        let mut back = Vec::new();
        let read = rd.read_to_end(&mut back);
        timeout(LIMIT, async { tokio::join!(write, read) })
            .await
            .expect("echoed in time")
            .1
            .expect("read to the end");
        assert_eq!(back.len(), sent.len());
        assert!(back == sent, "every byte came back in order");
    }

    #[tokio::test]
    async fn a_response_given_up_on_resets_its_stream() {
        let (reset_tx, reset_rx) = oneshot::channel();
        let reset_tx = std::sync::Mutex::new(Some(reset_tx));
        let addr = server(true, move |_req, mut respond| {
            let tx = reset_tx.lock().expect("lock").take();
            async move {
                let reason = poll_fn(|cx| respond.poll_reset(cx)).await.expect("reset");
                if let Some(tx) = tx {
                    let _ = tx.send(reason);
                }
            }
        })
        .await;
        let conn = dial(addr, H2Settings::default()).await;
        let req = Request::builder()
            .uri("http://api/slow")
            .body(RequestBody::Empty)
            .expect("request");
        let waiting = conn.send(req).expect("sent");
        let gave_up = timeout(Duration::from_millis(100), waiting).await;
        assert!(gave_up.is_err(), "the server never answers");
        let reason = timeout(LIMIT, reset_rx)
            .await
            .expect("reset in time")
            .expect("reason");
        assert_eq!(reason, Reason::CANCEL);
    }

    /// Every response carries one of these by value: keep it no larger than hyper's own body.
    #[test]
    fn a_received_body_is_no_larger_than_hypers() {
        assert!(
            std::mem::size_of::<Received>() <= std::mem::size_of::<Incoming>(),
            "Received {} bytes, Incoming {}",
            std::mem::size_of::<Received>(),
            std::mem::size_of::<Incoming>()
        );
    }
}
