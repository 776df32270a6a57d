use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Wake, Waker},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::*;

/// Records each write it takes; takes at most `max_write` bytes per call, and answers
/// `Pending` while `blocked`.
#[derive(Default)]
struct Recorder {
    writes: Vec<Vec<u8>>,
    flushes: usize,
    max_write: Option<usize>,
    blocked: bool,
}

impl Recorder {
    fn bytes(&self) -> Vec<u8> {
        self.writes.concat()
    }
}

impl AsyncWrite for Recorder {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.blocked {
            return Poll::Pending;
        }
        let n = buf.len().min(self.max_write.unwrap_or(usize::MAX));
        self.get_mut().writes.push(buf[..n].to_vec());
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().flushes += 1;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[derive(Default)]
struct Wakes(AtomicUsize);

impl Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn context() -> (Arc<Wakes>, Waker) {
    let wakes = Arc::new(Wakes::default());
    (wakes.clone(), Waker::from(wakes))
}

fn write(io: &mut Coalesce<Recorder>, cx: &mut Context<'_>, bytes: &[u8]) {
    match Pin::new(io).poll_write(cx, bytes) {
        Poll::Ready(Ok(n)) => assert_eq!(n, bytes.len()),
        other => panic!("write: {other:?}"),
    }
}

fn flush(io: &mut Coalesce<Recorder>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    Pin::new(io).poll_flush(cx)
}

#[test]
fn a_flush_waits_one_turn_and_then_writes_everything_at_once() {
    let (wakes, waker) = context();
    let mut cx = Context::from_waker(&waker);
    let mut io = Coalesce::new(Recorder::default());
    write(&mut io, &mut cx, b"one ");
    assert!(flush(&mut io, &mut cx).is_pending());
    assert_eq!(wakes.0.load(Ordering::Relaxed), 1, "it woke itself");
    assert!(io.get_ref().writes.is_empty(), "nothing written yet");
    // Other streams add theirs before the task runs again.
    write(&mut io, &mut cx, b"two ");
    write(&mut io, &mut cx, b"three");
    assert!(matches!(flush(&mut io, &mut cx), Poll::Ready(Ok(()))));
    assert_eq!(io.get_ref().writes, vec![b"one two three".to_vec()]);
    assert_eq!(io.get_ref().flushes, 1);
    assert_eq!(
        io.pending.capacity(),
        0,
        "an idle connection holds no buffer"
    );

    // The next burst waits its turn again.
    write(&mut io, &mut cx, b"four");
    assert!(flush(&mut io, &mut cx).is_pending());
    assert!(matches!(flush(&mut io, &mut cx), Poll::Ready(Ok(()))));
    assert_eq!(io.get_ref().bytes(), b"one two threefour");
    assert_eq!(wakes.0.load(Ordering::Relaxed), 2);
}

#[test]
fn a_flush_with_nothing_waiting_is_immediate() {
    let (wakes, waker) = context();
    let mut cx = Context::from_waker(&waker);
    let mut io = Coalesce::new(Recorder::default());
    assert!(matches!(flush(&mut io, &mut cx), Poll::Ready(Ok(()))));
    assert_eq!(wakes.0.load(Ordering::Relaxed), 0);
    assert_eq!(io.get_ref().flushes, 1, "the inner stream is still flushed");
}

#[test]
fn large_writes_go_through_and_the_limit_bounds_what_waits() {
    let (_, waker) = context();
    let mut cx = Context::from_waker(&waker);
    let mut io = Coalesce::new(Recorder::default());
    // Large with nothing waiting: passed on at once.
    let large = vec![1u8; WRITE_THROUGH];
    write(&mut io, &mut cx, &large);
    assert_eq!((io.get_ref().writes.len(), io.waiting()), (1, 0));
    // Smaller ones wait, up to the limit.
    let small = vec![2u8; WRITE_THROUGH - 1];
    let mut expected = large.clone();
    while io.waiting() + small.len() <= GATHER_LIMIT {
        write(&mut io, &mut cx, &small);
        expected.extend_from_slice(&small);
    }
    assert_eq!(io.get_ref().writes.len(), 1, "all kept");
    // One more would pass the limit: what waits is written first, and it is kept.
    write(&mut io, &mut cx, &small);
    expected.extend_from_slice(&small);
    assert_eq!(io.get_ref().writes.len(), 2);
    assert_eq!(io.waiting(), small.len());
    // Large behind something waiting is kept too: order first.
    write(&mut io, &mut cx, &large);
    expected.extend_from_slice(&large);
    assert_eq!(io.waiting(), small.len() + large.len());
    assert!(flush(&mut io, &mut cx).is_pending());
    assert!(matches!(flush(&mut io, &mut cx), Poll::Ready(Ok(()))));
    assert_eq!(io.get_ref().bytes(), expected);
}

#[test]
fn a_vectored_write_is_kept_whole() {
    let (_, waker) = context();
    let mut cx = Context::from_waker(&waker);
    let mut io = Coalesce::new(Recorder::default());
    assert!(io.is_write_vectored());
    // An h2 DATA frame: its 9-byte header and the payload.
    let frame = [IoSlice::new(b"123456789"), IoSlice::new(b"payload")];
    match Pin::new(&mut io).poll_write_vectored(&mut cx, &frame) {
        Poll::Ready(Ok(16)) => {}
        other => panic!("write: {other:?}"),
    }
    assert!(flush(&mut io, &mut cx).is_pending());
    assert!(matches!(flush(&mut io, &mut cx), Poll::Ready(Ok(()))));
    assert_eq!(io.get_ref().writes, vec![b"123456789payload".to_vec()]);
}

#[test]
fn partial_and_blocked_writes_lose_nothing() {
    let (_, waker) = context();
    let mut cx = Context::from_waker(&waker);
    let mut io = Coalesce::new(Recorder {
        max_write: Some(3),
        blocked: true,
        ..Recorder::default()
    });
    write(&mut io, &mut cx, b"abcdefgh");
    assert!(flush(&mut io, &mut cx).is_pending(), "its turn");
    assert!(flush(&mut io, &mut cx).is_pending(), "the socket is full");
    assert_eq!(io.waiting(), 8);
    io.inner.blocked = false;
    assert!(matches!(flush(&mut io, &mut cx), Poll::Ready(Ok(()))));
    assert_eq!(io.get_ref().bytes(), b"abcdefgh");
    assert_eq!(io.get_ref().writes.len(), 3, "3 + 3 + 2 bytes");
    // Shutdown writes what waits first.
    write(&mut io, &mut cx, b"ij");
    assert!(matches!(
        Pin::new(&mut io).poll_shutdown(&mut cx),
        Poll::Ready(Ok(()))
    ));
    assert_eq!(io.get_ref().bytes(), b"abcdefghij");
}

/// A TCP stream that counts its writes.
struct Counted {
    inner: tokio::net::TcpStream,
    writes: Arc<AtomicUsize>,
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.writes.fetch_add(1, Ordering::Relaxed);
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

const STREAMS: usize = 10;

/// Serves one HTTP/2 connection over loopback whose `STREAMS` streams each send one chunk when
/// `change` moves: the socket writes the server made for that one change.
async fn writes_for_one_change(coalesce: bool) -> usize {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let writes = Arc::new(AtomicUsize::new(0));
    let (change, watch) = tokio::sync::watch::channel(0u32);
    let server_writes = writes.clone();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        tcp.set_nodelay(true).expect("nodelay");
        let service = hyper::service::service_fn(move |_req| {
            let watch = watch.clone();
            async move {
                let updates = futures_util::stream::unfold(watch, |mut watch| async move {
                    watch.changed().await.ok()?;
                    let update = Frame::data(Bytes::from(vec![7u8; 150]));
                    Some((Ok::<_, Infallible>(update), watch))
                });
                Ok::<_, Infallible>(hyper::Response::new(StreamBody::new(updates)))
            }
        });
        let counted = Counted {
            inner: tcp,
            writes: server_writes,
        };
        let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        let _ = if coalesce {
            builder
                .serve_connection(TokioIo::new(Coalesce::new(counted)), service)
                .await
        } else {
            builder
                .serve_connection(TokioIo::new(counted), service)
                .await
        };
    });

    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http2::handshake::<
        _,
        _,
        http_body_util::Empty<Bytes>,
    >(TokioExecutor::new(), TokioIo::new(tcp))
    .await
    .expect("handshake");
    let client = tokio::spawn(conn);
    let mut bodies = Vec::new();
    for _ in 0..STREAMS {
        let response = send
            .send_request(hyper::Request::new(http_body_util::Empty::new()))
            .await
            .expect("response");
        bodies.push(response.into_body());
    }
    // Every stream is open and waiting; the connection has gone quiet.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = writes.load(Ordering::Relaxed);
    // Woken from a task on the runtime's one worker, as the control plane's hub wakes them: every
    // stream is queued before any runs. Woken from the test's own thread instead, the worker
    // could run the first streams (and flush) while later ones were still being woken, a race
    // that made this test fail now and then under load.
    tokio::spawn(async move {
        change.send_replace(1);
    })
    .await
    .expect("the change is sent");
    for body in &mut bodies {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("an update within 5 s")
            .expect("a frame")
            .expect("no error");
        assert_eq!(frame.into_data().map(|d| d.len()).ok(), Some(150));
    }
    let made = writes.load(Ordering::Relaxed) - before;
    drop(bodies);
    drop(send);
    client.abort();
    server.abort();
    made
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_change_to_many_streams_of_one_connection_is_one_write() {
    let plain = writes_for_one_change(false).await;
    let gathered = writes_for_one_change(true).await;
    // Without it each stream's update is its own write (Tokio runs the woken connection task
    // right after each stream task); with it the streams all run first.
    assert!(
        gathered <= 2,
        "{STREAMS} updates took {gathered} writes gathered ({plain} without)"
    );
}
