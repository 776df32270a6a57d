//! Copying an opaque connection's bytes both ways, with buffers that exist only while bytes
//! flow.
//!
//! `tokio::io::copy_bidirectional` gives each direction an 8 KiB buffer for the connection's
//! whole life, so an idle proxied connection costs 16 KiB of buffers alone (issue 19 measured
//! about 23 KiB per idle connection in all). Here a direction takes a buffer from its thread's
//! pool when it reads, and gives it back as soon as a read would wait with nothing left to
//! write: an idle connection holds none, and a busy one gets a larger buffer (64 KiB: one
//! mesh HTTP/2 frame, four full TLS records, one system call where 16 KiB took four). A pool
//! keeps at most 1 MiB per thread for reuse.
//!
//! Semantics are `copy_bidirectional`'s: when one side reaches end of stream, what was read is
//! written and flushed and the other side's write half is shut down, while the opposite
//! direction carries on; the copy ends when both directions have, or at the first error.

use std::{
    cell::RefCell,
    future::poll_fn,
    io,
    pin::Pin,
    task::{ready, Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// One direction's buffer; a mesh connection's largest HTTP/2 frame is this size too
/// (`weft_proxy_http::client::MESH_MAX_FRAME_SIZE`), at most 16 MiB (HTTP/2's limit).
pub const BUFFER_SIZE: usize = 64 * 1024;

/// Buffers each thread keeps for reuse; past this, a returned buffer is freed.
const POOL_BUFFERS: usize = 16;

thread_local! {
    static POOL: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

fn take_buffer() -> Box<[u8]> {
    POOL.with(|pool| pool.borrow_mut().pop())
        .unwrap_or_else(|| vec![0; BUFFER_SIZE].into_boxed_slice())
}

fn give_buffer(buf: Box<[u8]>) {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOL_BUFFERS {
            pool.push(buf);
        }
    });
}

/// Copies `a` to `b` and `b` to `a` until both have finished; the bytes each way,
/// `(a to b, b to a)`.
pub async fn copy_bidirectional<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut a_to_b = Direction::default();
    let mut b_to_a = Direction::default();
    poll_fn(|cx| {
        let forward = a_to_b.poll(cx, Pin::new(&mut *a), Pin::new(&mut *b))?;
        let back = b_to_a.poll(cx, Pin::new(&mut *b), Pin::new(&mut *a))?;
        match (forward, back) {
            (Poll::Ready(forward), Poll::Ready(back)) => Poll::Ready(Ok((forward, back))),
            _ => Poll::Pending,
        }
    })
    .await
}

/// One direction's state.
#[derive(Default)]
struct Direction {
    /// Held only between a read that returned bytes and the write of its last byte.
    buf: Option<Box<[u8]>>,
    /// `buf[pos..cap]` is read and not yet written.
    pos: usize,
    cap: usize,
    /// Bytes written since the last flush.
    unflushed: bool,
    /// The reader reached end of stream.
    eof: bool,
    /// The writer is shut down: this direction is done.
    done: bool,
    copied: u64,
}

impl Direction {
    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<io::Result<u64>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        if self.done {
            return Poll::Ready(Ok(self.copied));
        }
        loop {
            if self.pos == self.cap && !self.eof {
                let mut buf = self.buf.take().unwrap_or_else(take_buffer);
                let mut read = ReadBuf::new(&mut buf);
                match reader.as_mut().poll_read(cx, &mut read) {
                    Poll::Pending => {
                        // Nothing to write and nothing read: the buffer goes back.
                        give_buffer(buf);
                        if self.unflushed {
                            ready!(writer.as_mut().poll_flush(cx))?;
                            self.unflushed = false;
                        }
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(e)) => {
                        give_buffer(buf);
                        return Poll::Ready(Err(e));
                    }
                    Poll::Ready(Ok(())) => {
                        let n = read.filled().len();
                        if n == 0 {
                            self.eof = true;
                            give_buffer(buf);
                        } else {
                            (self.pos, self.cap) = (0, n);
                            self.buf = Some(buf);
                        }
                    }
                }
            }
            while self.pos < self.cap {
                let Some(buf) = &self.buf else {
                    // Unreachable: bytes are pending only while the buffer is held.
                    return Poll::Ready(Err(io::Error::other("copy buffer missing")));
                };
                let n = ready!(writer.as_mut().poll_write(cx, &buf[self.pos..self.cap]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pos += n;
                self.copied += n as u64;
                self.unflushed = true;
            }
            if self.eof {
                ready!(writer.as_mut().poll_flush(cx))?;
                ready!(writer.as_mut().poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(self.copied));
            }
        }
    }
}

impl Drop for Direction {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            give_buffer(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn copies_both_ways_half_closes_and_holds_no_buffer_while_idle() {
        let (mut client, mut proxy_a) = duplex(64 * 1024);
        let (mut proxy_b, mut server) = duplex(64 * 1024);
        let copy =
            tokio::spawn(async move { copy_bidirectional(&mut proxy_a, &mut proxy_b).await });

        // More than one buffer each way, in pieces.
        let out: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let expected = out.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&out).await.expect("write");
            client.shutdown().await.expect("half-close");
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.expect("read back");
            back
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, expected, "client to server, then end of stream");
        // The other direction still flows after the client's half-close.
        server.write_all(b"after half-close").await.expect("write");
        server.shutdown().await.expect("shutdown");
        assert_eq!(writer.await.expect("joined"), b"after half-close");
        let (up, down) = copy.await.expect("joined").expect("copied");
        assert_eq!((up, down), (100_000, 16));
    }

    #[test]
    fn a_direction_holds_a_buffer_only_while_bytes_wait() {
        let (mut client, mut a) = duplex(1024);
        let (mut b, mut server) = duplex(1024);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut d = Direction::default();
        let mut poll = |d: &mut Direction| d.poll(&mut cx, Pin::new(&mut a), Pin::new(&mut b));
        let mut write = |bytes: &[u8]| {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            assert_eq!(
                Pin::new(&mut client)
                    .poll_write(&mut cx, bytes)
                    .map(Result::ok),
                Poll::Ready(Some(bytes.len()))
            );
        };

        assert!(poll(&mut d).is_pending(), "idle");
        assert!(d.buf.is_none(), "an idle direction holds no buffer");
        write(b"ping");
        assert!(poll(&mut d).is_pending());
        assert!(d.buf.is_none(), "written at once, then idle again");

        // The server does not read: its side fills (1,024 bytes) and the rest waits.
        write(&[7; 1020]);
        assert!(poll(&mut d).is_pending());
        write(&[8; 1024]);
        assert!(poll(&mut d).is_pending(), "the server's side is full");
        assert!(d.buf.is_some(), "bytes wait in the buffer");
        let mut got = vec![0; 1024];
        let mut read = ReadBuf::new(&mut got);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(Pin::new(&mut server)
            .poll_read(&mut cx, &mut read)
            .is_ready());
        assert!(poll(&mut d).is_pending());
        assert!(d.buf.is_none(), "all written: the buffer went back");
        assert_eq!(d.copied, 4 + 1020 + 1024);
    }

    #[tokio::test]
    async fn a_read_error_ends_the_copy_with_it() {
        struct Broken;
        impl AsyncRead for Broken {
            fn poll_read(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
                _: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()))
            }
        }
        impl AsyncWrite for Broken {
            fn poll_write(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                Poll::Ready(Ok(buf.len()))
            }
            fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
            fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
        }
        let (_client, mut proxy_b) = duplex(1024);
        let e = copy_bidirectional(&mut Broken, &mut proxy_b)
            .await
            .expect_err("reset");
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    }
}
