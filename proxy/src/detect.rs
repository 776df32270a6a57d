//! The detection stage: read a connection's first bytes, within a timeout, until
//! `weft-proxy-detect` can name the protocol.

use std::{io, time::Duration};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use weft_proxy_detect::{detect, Detection, Protocol, MAX_PEEK};

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
pub(crate) async fn read<I: AsyncRead + Unpin>(
    io: &mut I,
    timeout: Duration,
) -> io::Result<(Detected, Bytes)> {
    let mut buf = BytesMut::with_capacity(INITIAL_READ);
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(buf.len().min(MAX_PEEK - buf.len()));
        }
        let n = tokio::select! {
            biased;
            n = io.read_buf(&mut buf) => n?,
            () = &mut deadline => return Ok((Detected::Timeout, buf.freeze())),
        };
        if n == 0 {
            return Ok((Detected::Eof, buf.freeze()));
        }
        if let Detection::Known(p) = detect(&buf) {
            return Ok((Detected::Known(p), buf.freeze()));
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
