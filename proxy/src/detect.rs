//! The detection stage: read a connection's first bytes, within a timeout, until
//! `weft-proxy-detect` can name the protocol.

use std::{io, time::Duration};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use weft_proxy_detect::{detect, Detection, Protocol, MAX_PEEK};
use weft_proxy_identity::{classify, hello::MAX_HELLO_BYTES, Hello};

/// What the stage found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Detected {
    /// The client's bytes named the protocol.
    Known(Protocol),
    /// The client closed its side before its bytes named a protocol.
    Eof,
    /// The client sent nothing recognisable before the timeout: maybe a server-speaks-first
    /// protocol on a port not listed as opaque.
    Timeout,
}

/// First read size: enough for a request line in almost every case; grows to [`MAX_PEEK`].
const INITIAL_READ: usize = 1024;

/// Reads from `io` until the protocol is known, the client closes, or `timeout` passes.
/// Returns what was read, to be replayed in front of the connection.
#[cfg(test)]
pub(crate) async fn read<I: AsyncRead + Unpin>(
    io: &mut I,
    timeout: Duration,
) -> io::Result<(Detected, Bytes)> {
    read_more(io, BytesMut::new(), timeout).await
}

/// [`read`], continuing from bytes an earlier stage already read.
pub(crate) async fn read_more<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: BytesMut,
    timeout: Duration,
) -> io::Result<(Detected, Bytes)> {
    let decide = |b: &[u8]| match detect(b) {
        Detection::Known(p) => Some(p),
        Detection::NeedMore => None,
    };
    let (found, buf) = read_until(io, buf, timeout, MAX_PEEK, decide).await?;
    let detected = match found {
        Found::Known(p) => Detected::Known(p),
        Found::Eof => Detected::Eof,
        Found::Timeout => Detected::Timeout,
    };
    Ok((detected, buf.freeze()))
}

/// What the inbound side's first look found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FirstLook {
    /// A peer proxy's mesh TLS, or the app's own TLS, or neither.
    Hello(Hello),
    Eof,
    Timeout,
}

/// Reads until the bytes are known to be a mesh ClientHello, other TLS, or not TLS. Plaintext
/// is decided by its first byte, so it costs no extra wait.
pub(crate) async fn read_hello<I: AsyncRead + Unpin>(
    io: &mut I,
    timeout: Duration,
) -> io::Result<(FirstLook, BytesMut)> {
    let decide = |b: &[u8]| match classify(b) {
        Hello::NeedMore => None,
        other => Some(other),
    };
    let (found, buf) = read_until(io, BytesMut::new(), timeout, MAX_HELLO_BYTES, decide).await?;
    let look = match found {
        Found::Known(h) => FirstLook::Hello(h),
        Found::Eof => FirstLook::Eof,
        Found::Timeout => FirstLook::Timeout,
    };
    Ok((look, buf))
}

enum Found<T> {
    Known(T),
    Eof,
    Timeout,
}

/// Reads into `buf` until `decide` answers, the client closes, or `timeout` passes. `decide`
/// must answer by `max` bytes (the read never grows past `max` plus one read).
async fn read_until<I, T>(
    io: &mut I,
    mut buf: BytesMut,
    timeout: Duration,
    max: usize,
    decide: impl Fn(&[u8]) -> Option<T>,
) -> io::Result<(Found<T>, BytesMut)>
where
    I: AsyncRead + Unpin,
{
    if !buf.is_empty() {
        if let Some(t) = decide(&buf) {
            return Ok((Found::Known(t), buf));
        }
    }
    if buf.capacity() == 0 {
        buf.reserve(INITIAL_READ);
    }
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(buf.len().min(max.saturating_sub(buf.len())).max(1));
        }
        let n = tokio::select! {
            biased;
            n = io.read_buf(&mut buf) => n?,
            () = &mut deadline => return Ok((Found::Timeout, buf)),
        };
        if n == 0 {
            return Ok((Found::Eof, buf));
        }
        if let Some(t) = decide(&buf) {
            return Ok((Found::Known(t), buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn silent_client_times_out_with_nothing_read() {
        let (mut a, _b) = tokio::io::duplex(64);
        let (d, bytes) = read(&mut a, Duration::from_secs(10)).await.expect("read");
        assert_eq!(d, Detected::Timeout);
        assert!(bytes.is_empty());
    }

    #[tokio::test]
    async fn request_split_across_writes_is_http1_and_kept_whole() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            b.write_all(b"GET /x HT").await.expect("write");
            b.write_all(b"TP/1.1\r\nHost: h\r\n\r\n")
                .await
                .expect("write");
            b
        });
        let (d, bytes) = read(&mut a, Duration::from_secs(10)).await.expect("read");
        assert_eq!(d, Detected::Known(Protocol::Http1));
        assert!(bytes.starts_with(b"GET /x HTTP/1.1\r\n"));
        drop(writer.await);
    }

    #[tokio::test]
    async fn a_long_request_line_is_read_up_to_the_peek_limit() {
        let (mut a, mut b) = tokio::io::duplex(MAX_PEEK * 2);
        let mut line = b"GET /".to_vec();
        line.resize(MAX_PEEK * 2 - 10, b'a');
        b.write_all(&line).await.expect("write");
        let (d, bytes) = read(&mut a, Duration::from_secs(10)).await.expect("read");
        assert_eq!(d, Detected::Known(Protocol::Http1));
        assert!(bytes.len() <= MAX_PEEK + INITIAL_READ, "{}", bytes.len());
    }

    #[tokio::test]
    async fn early_close_is_eof() {
        let (mut a, b) = tokio::io::duplex(64);
        drop(b);
        let (d, _) = read(&mut a, Duration::from_secs(10)).await.expect("read");
        assert_eq!(d, Detected::Eof);
    }
}
