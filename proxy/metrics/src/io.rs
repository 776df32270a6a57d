//! Byte counting on a connection.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::tcp::ConnectionGuard;

pin_project_lite::pin_project! {
    /// An accepted connection's socket, counted: bytes read from and written to it (one atomic
    /// add per read or write call), and its close, when the socket itself is dropped: after an
    /// HTTP upgrade that is when the tunnel ends, not when the HTTP exchange does.
    #[derive(Debug)]
    pub struct MeteredIo<T> {
        #[pin]
        io: T,
        read: IntCounter,
        written: IntCounter,
        _open: ConnectionGuard,
    }
}

impl<T> MeteredIo<T> {
    /// Made by [`crate::Metrics::accepted`].
    pub(crate) fn new(io: T, read: IntCounter, written: IntCounter, open: ConnectionGuard) -> Self {
        Self {
            io,
            read,
            written,
            _open: open,
        }
    }

    /// The wrapped I/O.
    pub fn get_ref(&self) -> &T {
        &self.io
    }
}

impl<T: AsyncRead> AsyncRead for MeteredIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.io.poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.read.inc_by(n as u64);
        }
        res
    }
}

impl<T: AsyncWrite> AsyncWrite for MeteredIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.io.poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            this.written.inc_by(n as u64);
        }
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.io.poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = res {
            this.written.inc_by(n as u64);
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::{
        test_support::{sample, text},
        Direction, Metrics,
    };

    #[tokio::test]
    async fn metered_io_counts_both_ways() {
        let m = Metrics::new("t").expect("metrics");
        let (a, mut b) = tokio::io::duplex(1024);
        let mut io = m.accepted(Direction::Inbound, a);
        b.write_all(b"12345").await.expect("write");
        let mut buf = [0u8; 5];
        io.read_exact(&mut buf).await.expect("read");
        io.write_all(b"abc").await.expect("write");
        let text = text(&m);
        assert_eq!(
            sample(
                &text,
                r#"weft_tcp_bytes_total{direction="inbound",flow="to_server"}"#
            ),
            Some("5")
        );
        assert_eq!(
            sample(
                &text,
                r#"weft_tcp_bytes_total{direction="inbound",flow="to_client"}"#
            ),
            Some("3")
        );
    }
}
