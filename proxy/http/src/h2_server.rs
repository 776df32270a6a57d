//! HTTP/2 from clients on `h2` directly, without hyper's server: the apps' HTTP/2 to the
//! outbound proxy, and the mesh hop's HTTP/2 from a peer proxy.
//!
//! hyper's HTTP/2 server wraps each stream's body in a body of its own (with a PING recorder
//! for an adaptive window Weft does not use), checks every response's headers for
//! connection-specific ones and stamps a `Date` on it, and hands a CONNECT's stream over
//! through its upgrade channel, whose writes then cross another channel to a task of their own,
//! each write copied (hyper 1.12's `proto::h2::server` and `upgrade`). Here a request carries
//! its stream as an [`H2Body`] the stages read straight from; a response's headers arrive here
//! already cleaned by the endpoint stage (`forward`), or made by the proxy; and a CONNECT
//! answered with success becomes a [`Tunnel`] over the stream itself. As in hyper, each stream
//! is answered in a task of its own, so one slow request holds up none of its connection's
//! others, and the request's future is boxed before that task is spawned: a future is as large
//! as its largest state whatever state it is in, and spawning moves a task's future whole
//! several times, so the stack's future (kilobytes) held in the task by value cost 5,500
//! instructions of `memcpy` per request on the client's proxy (measured; the box costs one
//! allocation). The task itself ([`Stream`]) is written out to stay small for the same reason.
//!
//! Windows and limits are hyper's server defaults, so moving off hyper changed none that a
//! client sees.

use std::{
    convert::Infallible,
    future::{poll_fn, Future},
    pin::{pin, Pin},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use h2::{server::SendResponse, Reason, RecvStream};
use http::{header, HeaderValue, Method, Request, Response};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::{
    body::{RequestBody, ResponseBody},
    h2_stream::{ConnEnd, H2Body, KeepAlive, Pipe, Tunnel},
};

/// How an HTTP/2 server connection is set up.
#[derive(Clone, Copy, Debug)]
pub struct H2ServerSettings {
    /// SETTINGS_MAX_HEADER_LIST_SIZE: a larger request head is refused.
    pub max_header_list: u32,
    /// SETTINGS_MAX_FRAME_SIZE: the largest frame this end accepts.
    pub max_frame_size: u32,
    /// PING the client this often, and close the connection if no answer comes within the
    /// second duration.
    pub keep_alive: Option<(Duration, Duration)>,
}

const STREAM_WINDOW: u32 = 1024 * 1024;
const CONN_WINDOW: u32 = 1024 * 1024;
const MAX_SEND_BUFFER: usize = 400 * 1024;
const MAX_CONCURRENT_STREAMS: u32 = 200;
const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

/// A stream's answer.
pub enum Reply {
    /// A response, its body sent as it comes.
    Response(Response<ResponseBody>),
    /// A success answering a CONNECT: the head is sent, and the stream, now a byte tunnel, is
    /// handed to the function (which must not block: it spawns what copies the bytes).
    Tunnel(Response<ResponseBody>, Box<dyn FnOnce(Tunnel) + Send>),
}

impl From<Response<ResponseBody>> for Reply {
    fn from(rsp: Response<ResponseBody>) -> Self {
        Reply::Response(rsp)
    }
}

/// An answer that cannot fail (hyper's services answer `Result`s): the edge's own.
impl From<Result<Response<ResponseBody>, Infallible>> for Reply {
    fn from(rsp: Result<Response<ResponseBody>, Infallible>) -> Self {
        let Ok(rsp) = rsp;
        Reply::Response(rsp)
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Response(rsp) => f.debug_tuple("Response").field(rsp).finish(),
            Reply::Tunnel(rsp, _) => f.debug_tuple("Tunnel").field(rsp).finish(),
        }
    }
}

/// Serves HTTP/2 on `io` until the client closes the connection or, after `shutdown` fires,
/// until the streams open then are answered (GOAWAY first, so the client opens no more). Each
/// stream's request is answered by `answer`, in a task of its own.
pub async fn serve_h2<I, A, F>(
    io: I,
    settings: &H2ServerSettings,
    answer: A,
    shutdown: CancellationToken,
) -> Result<(), ConnEnd>
where
    I: AsyncRead + AsyncWrite + Unpin,
    A: Fn(Request<RequestBody>) -> F,
    F: Future + Send + 'static,
    F::Output: Into<Reply>,
{
    let handshake = h2::server::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONN_WINDOW)
        .max_frame_size(settings.max_frame_size)
        .max_header_list_size(settings.max_header_list)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESET_STREAMS))
        .handshake::<_, Bytes>(io);
    let mut conn = tokio::select! {
        conn = handshake => conn?,
        () = shutdown.cancelled() => return Ok(()),
    };
    let mut keep_alive = settings
        .keep_alive
        .and_then(|every| Some(KeepAlive::new(conn.ping_pong()?, every)));
    let mut shutdown = pin!(shutdown.cancelled_owned());
    let mut draining = false;
    loop {
        let next = poll_fn(|cx| {
            if !draining && shutdown.as_mut().poll(cx).is_ready() {
                conn.graceful_shutdown();
                draining = true;
            }
            if let Some(Poll::Ready(end)) = keep_alive.as_mut().map(|k| k.poll(cx)) {
                return Poll::Ready(Err(end));
            }
            conn.poll_accept(cx).map(Ok)
        })
        .await?;
        match next {
            Some(Ok((req, respond))) => {
                tokio::spawn(answer_stream(&answer, req, respond));
            }
            Some(Err(e)) => return Err(e.into()),
            None => return Ok(()),
        }
    }
}

/// A stream's request, its body its own stream (a CONNECT's is kept for its tunnel), and the
/// task that answers it.
fn answer_stream<A, F>(
    answer: &A,
    req: Request<RecvStream>,
    respond: SendResponse<Bytes>,
) -> Stream<F>
where
    A: Fn(Request<RequestBody>) -> F,
{
    let (head, recv) = req.into_parts();
    let (body, connect) = if head.method == Method::CONNECT {
        (RequestBody::Empty, Some(recv))
    } else {
        (H2Body::new(&head.headers, recv).into(), None)
    };
    Stream {
        respond,
        state: State::Answering {
            answer: Box::pin(answer(Request::from_parts(head, body))),
            connect,
        },
    }
}

/// One stream's task, from its request to the end of its response. Written out rather than an
/// `async fn`, whose state would keep the request's and the response's heads side by side: the
/// task is copied whole as it is spawned, so it is kept to a pointer, the stream's handle and a
/// response body.
struct Stream<F> {
    respond: SendResponse<Bytes>,
    state: State<F>,
}

enum State<F> {
    Answering {
        answer: Pin<Box<F>>,
        /// A CONNECT's receiving half, for its tunnel.
        connect: Option<RecvStream>,
    },
    Body(Pipe<ResponseBody>),
}

impl<F> Future for Stream<F>
where
    F: Future,
    F::Output: Into<Reply>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            let pipe = match &mut this.state {
                State::Body(pipe) => return Pin::new(pipe).poll(cx),
                State::Answering { answer, connect } => {
                    let reply = match answer.as_mut().poll(cx) {
                        Poll::Ready(reply) => reply.into(),
                        Poll::Pending => {
                            // The client gave up on the stream: dropping the answer's future (with
                            // the task) cancels what it started upstream.
                            if let Poll::Ready(reason) = this.respond.poll_reset(cx) {
                                debug!(?reason, "client reset a stream before its answer");
                                return Poll::Ready(());
                            }
                            return Poll::Pending;
                        }
                    };
                    match (reply, connect.take()) {
                        (Reply::Tunnel(rsp, open), Some(recv)) => {
                            let (head, _counted) = rsp.into_parts();
                            match this
                                .respond
                                .send_response(Response::from_parts(head, ()), false)
                            {
                                Ok(send) => open(Tunnel::new(send, recv)),
                                Err(e) => debug!(error = %e, "answering a CONNECT failed"),
                            }
                            return Poll::Ready(());
                        }
                        (Reply::Response(rsp) | Reply::Tunnel(rsp, _), _) => {
                            match send_head(&mut this.respond, rsp) {
                                Some(pipe) => pipe,
                                None => return Poll::Ready(()),
                            }
                        }
                    }
                }
            };
            // The answer's future is dropped here; the body is sent as it comes.
            this.state = State::Body(pipe);
        }
    }
}

/// Sends a response's head; its body, unless there is none, is left to pipe. A body that ends
/// here is dropped here: its request is counted now.
fn send_head(
    respond: &mut SendResponse<Bytes>,
    rsp: Response<ResponseBody>,
) -> Option<Pipe<ResponseBody>> {
    let (mut head, body) = rsp.into_parts();
    let eos = body.is_end_stream();
    if !eos && !head.headers.contains_key(header::CONTENT_LENGTH) {
        // A body of known length says so, as hyper's server did.
        if let Some(len) = body.size_hint().exact() {
            head.headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
    }
    match respond.send_response(Response::from_parts(head, ()), eos) {
        Ok(stream) if !eos => Some(Pipe::new(body, stream)),
        Ok(_) => None,
        Err(e) => {
            debug!(error = %e, "sending a response's head failed");
            respond.send_reset(Reason::INTERNAL_ERROR);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{net::SocketAddr, sync::Arc, time::Instant};

    use http::StatusCode;
    use http_body_util::{Either, Full};
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{TcpListener, TcpStream},
        sync::oneshot,
        task::JoinHandle,
        time::timeout,
    };
    use weft_proxy_metrics::{Direction, Metrics};

    use super::*;
    use crate::{body::Streamed, h2_client::Received, h2_stream::DEFAULT_MAX_FRAME_SIZE};

    const LIMIT: Duration = Duration::from_secs(10);

    /// `serve_h2` on one loopback connection, answered by `answer`.
    async fn server<A, F>(
        keep_alive: Option<(Duration, Duration)>,
        answer: A,
    ) -> (
        SocketAddr,
        CancellationToken,
        JoinHandle<Result<(), ConnEnd>>,
    )
    where
        A: Fn(Request<RequestBody>) -> F + Send + Sync + 'static,
        F: Future<Output = Reply> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let served = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let settings = H2ServerSettings {
                max_header_list: 16 * 1024,
                max_frame_size: DEFAULT_MAX_FRAME_SIZE,
                keep_alive,
            };
            serve_h2(tcp, &settings, answer, stop).await
        });
        (addr, shutdown, served)
    }

    /// An `h2` client whose connection is driven by a task of its own.
    async fn client(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let (tx, conn) = h2::client::handshake(tcp).await.expect("client handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        tx.ready().await.expect("ready")
    }

    fn request(method: Method, uri: &str) -> Request<()> {
        Request::builder()
            .method(method)
            .uri(uri)
            .body(())
            .expect("request")
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    /// Reads a stream's data to its end, giving the window back as it goes.
    async fn read_all(body: &mut RecvStream) -> Vec<u8> {
        let mut got = Vec::new();
        while let Some(data) = body.data().await {
            let data = data.expect("data");
            let _ = body.flow_control().release_capacity(data.len());
            got.extend_from_slice(&data);
        }
        got
    }

    /// Sends `data` in 16 KiB pieces as the stream's window allows, then `trailers` or
    /// END_STREAM.
    async fn write_all(
        stream: &mut h2::SendStream<Bytes>,
        data: &[u8],
        trailers: Option<http::HeaderMap>,
    ) {
        for chunk in data.chunks(16 * 1024) {
            stream.reserve_capacity(chunk.len());
            let mut left = Bytes::copy_from_slice(chunk);
            while !left.is_empty() {
                let n = poll_fn(|cx| stream.poll_capacity(cx))
                    .await
                    .expect("open")
                    .expect("capacity");
                let piece = left.split_to(n.min(left.len()));
                stream.send_data(piece, false).expect("send");
            }
        }
        match trailers {
            Some(t) => stream.send_trailers(t).expect("trailers"),
            None => stream.send_data(Bytes::new(), true).expect("end"),
        }
    }

    #[tokio::test]
    async fn a_request_body_streams_through_past_the_windows_with_its_trailers() {
        let metrics = Arc::new(Metrics::new("t").expect("metrics"));
        let series = metrics.plaintext(Direction::Inbound);
        // The answer echoes the request's own stream back as the response body.
        let (addr, _shutdown, _served) = server(None, move |req| {
            let series = series.clone();
            async move {
                let (head, body) = req.into_parts();
                let RequestBody::Streamed(Streamed::H2(body)) = body else {
                    panic!("an HTTP/2 request's body is its stream");
                };
                assert_eq!(head.version, http::Version::HTTP_2);
                let body = ResponseBody::recorded(
                    Either::Left(Received::H2(body)),
                    series,
                    StatusCode::OK,
                    Instant::now(),
                    None,
                );
                Reply::Response(Response::new(body))
            }
        })
        .await;
        let mut tx = client(addr).await;
        let (rsp, mut up) = tx
            .send_request(request(Method::POST, "http://api/echo"), false)
            .expect("sent");
        // Twice the server's 1 MiB stream window, and far past the client's 64 KiB one: both
        // ends must give window back as they read.
        let sent = pattern(2 * 1024 * 1024 + 3);
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let write = write_all(&mut up, &sent, Some(trailers));
        let read = async {
            let rsp = rsp.await.expect("answered");
            assert_eq!(rsp.status(), StatusCode::OK);
            let mut body = rsp.into_body();
            let got = read_all(&mut body).await;
            let trailers = body.trailers().await.expect("trailers");
            (got, trailers)
        };
        let ((), (got, trailers)) = timeout(LIMIT, async { tokio::join!(write, read) })
            .await
            .expect("echoed in time");
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "every byte came back in order");
        let trailers = trailers.expect("the trailers came back");
        assert_eq!(trailers["grpc-status"], "0");
        // Counted once its body ended.
        let text = String::from_utf8(metrics.encode().expect("encode")).expect("utf-8");
        assert!(
            text.lines()
                .any(|l| l.starts_with("weft_requests_total") && l.ends_with(" 1")),
            "{text}"
        );
    }

    /// Tells when it is dropped.
    struct Dropped(Option<oneshot::Sender<()>>);

    impl Drop for Dropped {
        fn drop(&mut self) {
            if let Some(tx) = self.0.take() {
                let _ = tx.send(());
            }
        }
    }

    #[tokio::test]
    async fn a_stream_the_client_resets_drops_its_answer() {
        let (started_tx, started_rx) = oneshot::channel();
        let (dropped_tx, dropped_rx) = oneshot::channel();
        let signals = std::sync::Mutex::new(Some((started_tx, dropped_tx)));
        let (addr, _shutdown, _served) = server(None, move |_req| {
            let (started, dropped) = signals.lock().expect("lock").take().expect("one request");
            let guard = Dropped(Some(dropped));
            async move {
                let _guard = guard;
                let _ = started.send(());
                std::future::pending::<Reply>().await
            }
        })
        .await;
        let mut tx = client(addr).await;
        let (rsp, up) = tx
            .send_request(request(Method::GET, "http://api/slow"), true)
            .expect("sent");
        timeout(LIMIT, started_rx)
            .await
            .expect("the answer starts in time")
            .expect("started");
        // Dropping every handle to an open stream resets it (CANCEL).
        drop((rsp, up));
        timeout(LIMIT, dropped_rx)
            .await
            .expect("the answer is dropped in time")
            .expect("dropped, not leaked");
    }

    #[tokio::test]
    async fn a_connect_answered_with_success_becomes_a_byte_tunnel() {
        let (addr, _shutdown, _served) = server(None, |req| async move {
            assert_eq!(req.method(), Method::CONNECT);
            assert!(
                matches!(req.body(), RequestBody::Empty),
                "a CONNECT's stream is the tunnel's, not a body"
            );
            let rsp = Response::new(ResponseBody::unrecorded(Full::new(Bytes::new())));
            // Echo every byte, then close this side when the client closes its own.
            let open = |tunnel: Tunnel| {
                tokio::spawn(async move {
                    let (mut rd, mut wr) = tokio::io::split(tunnel);
                    tokio::io::copy(&mut rd, &mut wr).await.expect("echo");
                    wr.shutdown().await.expect("half close");
                });
            };
            Reply::Tunnel(rsp, Box::new(open))
        })
        .await;
        let mut tx = client(addr).await;
        let (rsp, mut up) = tx
            .send_request(request(Method::CONNECT, "127.0.0.1:9"), false)
            .expect("sent");
        let rsp = timeout(LIMIT, rsp)
            .await
            .expect("answered in time")
            .expect("answered");
        assert_eq!(rsp.status(), StatusCode::OK);
        let mut down = rsp.into_body();
        let sent = pattern(300_000);
        let echoed = timeout(LIMIT, async {
            tokio::join!(write_all(&mut up, &sent, None), read_all(&mut down)).1
        })
        .await
        .expect("echoed in time");
        assert!(echoed == sent, "every byte came back in order");
    }

    #[tokio::test]
    async fn shutdown_lets_an_open_stream_finish_then_ends_the_connection() {
        let (started_tx, started_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel::<()>();
        let signals = std::sync::Mutex::new(Some((started_tx, release_rx)));
        let (addr, shutdown, served) = server(None, move |_req| {
            let (started, release) = signals.lock().expect("lock").take().expect("one request");
            async move {
                let _ = started.send(());
                let _ = release.await;
                let body = Full::new(Bytes::from_static(b"done"));
                Reply::Response(Response::new(ResponseBody::unrecorded(body)))
            }
        })
        .await;
        let mut tx = client(addr).await;
        let (rsp, _) = tx
            .send_request(request(Method::GET, "http://api/"), true)
            .expect("sent");
        // The stream is open on the server (its answer has started) before the drain starts.
        timeout(LIMIT, started_rx)
            .await
            .expect("the answer starts in time")
            .expect("started");
        shutdown.cancel();
        // Nothing to wait for: the connection must still be there a while later.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!served.is_finished(), "an open stream holds the connection");
        let _ = release_tx.send(());
        let rsp = timeout(LIMIT, rsp)
            .await
            .expect("answered in time")
            .expect("answered");
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(read_all(&mut rsp.into_body()).await, b"done");
        let ended = timeout(LIMIT, served)
            .await
            .expect("the connection ends in time")
            .expect("joined");
        assert!(ended.is_ok(), "a graceful end: {ended:?}");
    }

    #[tokio::test]
    async fn a_client_that_stops_answering_pings_is_closed() {
        let every = Some((Duration::from_millis(50), Duration::from_millis(100)));
        let (addr, _shutdown, served) = server(every, |_req| async {
            Reply::Response(Response::new(ResponseBody::unrecorded(Full::default())))
        })
        .await;
        let tcp = TcpStream::connect(addr).await.expect("connect");
        // Held and never polled: the client's end answers no PING.
        let (_tx, _conn) = h2::client::handshake(tcp).await.expect("handshake");
        let ended = timeout(LIMIT, served)
            .await
            .expect("closed within the PING timeout")
            .expect("joined");
        assert!(
            matches!(ended, Err(ConnEnd::PingTimeout(_))),
            "ended by its PING timeout: {ended:?}"
        );
    }

    /// Reads what a raw client gets back, to the end: `serve_h2` must not panic on bytes that
    /// are not HTTP/2.
    #[tokio::test]
    async fn bytes_that_are_not_http2_end_the_connection_with_an_error() {
        let (addr, _shutdown, served) = server(None, |_req| async {
            Reply::Response(Response::new(ResponseBody::unrecorded(Full::default())))
        })
        .await;
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        let mut back = Vec::new();
        let _ = timeout(LIMIT, tcp.read_to_end(&mut back)).await;
        let ended = timeout(LIMIT, served)
            .await
            .expect("ended in time")
            .expect("joined");
        assert!(ended.is_err(), "not HTTP/2: {ended:?}");
    }
}
