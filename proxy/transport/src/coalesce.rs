//! Writes gathered until the scheduler has run everything else that was ready, then sent as one.
//!
//! An HTTP/2 connection is written by its own task: hyper runs each stream (a request, a
//! response body, a control-plane watch) in another task that hands its frame to the
//! connection's h2 state and wakes the connection task. Tokio runs the woken task next (its
//! LIFO slot), so the connection task flushed each frame as it came: one TLS record and one
//! `writev` per frame, though the connection's other streams were about to send theirs. The
//! control plane pushing one change to a proxy's ten watches made ten writes (114,147 `writev`
//! for 110,000 updates in `weft-bench discovery`).
//!
//! [`Coalesce`] sits under h2: what h2 writes is kept, and the first flush with bytes waiting
//! wakes the task and returns `Pending`. Tokio puts a task that woke itself at the back of the
//! run queue (as `yield_now` does), so the other tasks that were ready run first and add their
//! frames; the task's next flush sends everything gathered in one write. This is Envoy's rule of
//! writing at the end of the event loop's turn. It costs one more poll of the connection task
//! per flush and, when nothing else is ready, no waiting.
//!
//! Only small writes are gathered (copied): one of [`WRITE_THROUGH`] bytes or more with nothing
//! waiting is passed on as it is. Memory is bounded: at most [`GATHER_LIMIT`] bytes wait (past
//! it, they are written at once), and the buffer is released when it has been written, so an
//! idle connection holds none.

use std::{
    io::{self, IoSlice},
    pin::Pin,
    task::{ready, Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most bytes kept before a write: four TLS records.
pub const GATHER_LIMIT: usize = 64 * 1024;

/// A write this large with nothing waiting goes straight through, uncopied: it is worth its
/// own system call (bulk data: an h2 DATA frame is up to 16 KiB).
pub const WRITE_THROUGH: usize = 8 * 1024;

/// An I/O stream whose flushes wait for the rest of the scheduler's round (see the module).
#[derive(Debug)]
pub struct Coalesce<T> {
    inner: T,
    /// Bytes written to us and not yet to `inner`, from `sent` on.
    pending: Vec<u8>,
    sent: usize,
    /// The last flush was put off: the next one writes.
    deferred: bool,
}

impl<T> Coalesce<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            sent: 0,
            deferred: false,
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Bytes waiting to be written.
    fn waiting(&self) -> usize {
        self.pending.len() - self.sent
    }
}

impl<T: AsyncWrite + Unpin> Coalesce<T> {
    /// Writes everything waiting to `inner`, then releases the buffer.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.pending = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> Coalesce<T> {
    /// Keeps `bufs` (`total` bytes) to write later, or writes them now when they are large
    /// enough to be worth their own write or would pass the limit.
    fn poll_gather(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
        total: usize,
    ) -> Poll<io::Result<usize>> {
        if self.waiting() + total > GATHER_LIMIT {
            ready!(self.poll_drain(cx))?;
        }
        if self.waiting() == 0 && total >= WRITE_THROUGH {
            return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        }
        if self.pending.is_empty() {
            self.pending.reserve(total);
        }
        for b in bufs {
            self.pending.extend_from_slice(b);
        }
        Poll::Ready(Ok(total))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesce<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_gather(cx, &[IoSlice::new(buf)], buf.len())
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total = bufs.iter().map(|b| b.len()).sum();
        self.get_mut().poll_gather(cx, bufs, total)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.waiting() > 0 && !this.deferred {
            // Back of the run queue: whatever else is ready writes first.
            this.deferred = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        ready!(this.poll_drain(cx))?;
        this.deferred = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests;
