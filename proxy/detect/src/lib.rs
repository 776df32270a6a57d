//! Protocol detection on the first bytes a client sends.
//!
//! # Layout
//! - [`detect`]: the whole decision, a pure function of the bytes read so far.
//! - [`Protocol`] / [`Detection`]: what it decides.
//!
//! The function never allocates and looks at no more than [`MAX_PEEK`] bytes, so it costs the same
//! for a well-behaved client and for one sending garbage. It answers [`Detection::NeedMore`] while
//! the bytes so far are a prefix of something it would recognise; the caller decides how long to
//! wait (the proxy's detection timeout) and falls back to opaque TCP when it stops waiting.

#![forbid(unsafe_code)]

/// The HTTP/2 connection preface a prior-knowledge client sends first (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The most bytes detection ever needs. An HTTP/1 request line longer than this is still called
/// HTTP/1 once its method and first space are seen, and the HTTP server answers it (414).
pub const MAX_PEEK: usize = 8 * 1024;

/// The longest method we accept as HTTP/1. The registered methods are at most 17 bytes
/// (`UPDATEREDIRECTREF`); anything longer is not a request line.
const MAX_METHOD_LEN: usize = 24;

/// What a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// An HTTP/1.0 or HTTP/1.1 request line.
    Http1,
    /// The HTTP/2 prior-knowledge preface.
    Http2,
    /// A TLS handshake record carrying a ClientHello: the app does its own TLS; passed through.
    Tls,
    /// Anything else: forwarded byte for byte.
    Opaque,
}

/// The outcome of looking at the bytes read so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detection {
    /// The protocol is known.
    Known(Protocol),
    /// The bytes so far are a prefix of a recognisable protocol: read more (or time out).
    NeedMore,
}

impl Protocol {
    /// A stable, low-cardinality name for logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
            Protocol::Tls => "tls",
            Protocol::Opaque => "opaque",
        }
    }

    /// Whether the proxy terminates this protocol as HTTP.
    pub const fn is_http(self) -> bool {
        matches!(self, Protocol::Http1 | Protocol::Http2)
    }
}

/// Decides the protocol from the first bytes of a connection.
///
/// Only the first [`MAX_PEEK`] bytes are considered; with that many bytes the answer is never
/// [`Detection::NeedMore`].
pub fn detect(buf: &[u8]) -> Detection {
    let buf = &buf[..buf.len().min(MAX_PEEK)];
    let Some(&first) = buf.first() else {
        return Detection::NeedMore;
    };
    if first == H2_PREFACE[0] {
        // "PRI" could also begin an HTTP/1 request with method PRI; the full preface decides.
        let n = buf.len().min(H2_PREFACE.len());
        if buf[..n] == H2_PREFACE[..n] {
            return if n == H2_PREFACE.len() {
                Detection::Known(Protocol::Http2)
            } else {
                Detection::NeedMore
            };
        }
    }
    if first == TLS_HANDSHAKE {
        return detect_tls(buf);
    }
    detect_http1(buf)
}

/// TLS record type of a handshake message.
const TLS_HANDSHAKE: u8 = 0x16;
/// Handshake message type of a ClientHello.
const TLS_CLIENT_HELLO: u8 = 0x01;

/// A TLS record header (type, legacy version 3.x, length) followed by a ClientHello's type byte.
fn detect_tls(buf: &[u8]) -> Detection {
    // [0x16, 0x03, minor, len_hi, len_lo, 0x01]
    let checks: [fn(u8) -> bool; 6] = [
        |b| b == TLS_HANDSHAKE,
        |b| b == 0x03,
        |b| b <= 0x04,
        |_| true,
        |_| true,
        |b| b == TLS_CLIENT_HELLO,
    ];
    for (i, check) in checks.iter().enumerate() {
        match buf.get(i) {
            Some(&b) if check(b) => {}
            Some(_) => return Detection::Known(Protocol::Opaque),
            None => return Detection::NeedMore,
        }
    }
    // A record length of zero cannot hold a ClientHello.
    if buf[3] == 0 && buf[4] == 0 {
        return Detection::Known(Protocol::Opaque);
    }
    Detection::Known(Protocol::Tls)
}

/// `method SP request-target SP HTTP/1.x CRLF` (RFC 9112 §3).
fn detect_http1(buf: &[u8]) -> Detection {
    // Method: a token (RFC 9110 §5.6.2), then one space.
    let mut i = 0;
    loop {
        match buf.get(i) {
            None => return Detection::NeedMore,
            Some(b' ') if i > 0 => break,
            Some(&b) if is_tchar(b) && i < MAX_METHOD_LEN => i += 1,
            Some(_) => return Detection::Known(Protocol::Opaque),
        }
    }
    // Request target and version, up to the line end. A control byte (other than CR) cannot
    // appear in a request line, and it disqualifies the line wherever it falls, whether or not
    // the line end has been read yet: the answer must not depend on how the client's bytes were
    // split into reads (the fuzz target checks this).
    let rest = &buf[i + 1..];
    for (j, &b) in rest.iter().enumerate() {
        match b {
            b'\n' => return request_line_end(&rest[..j]),
            b'\r' => {}
            0x00..=0x1f | 0x7f => return Detection::Known(Protocol::Opaque),
            _ => {}
        }
    }
    // A request line too long for the peek buffer is still HTTP/1 by its method; the HTTP
    // server rejects it with a status (414).
    if buf.len() >= MAX_PEEK {
        Detection::Known(Protocol::Http1)
    } else {
        Detection::NeedMore
    }
}

/// The rest of a request line after the method: `request-target SP HTTP/1.x [CR]`.
fn request_line_end(line: &[u8]) -> Detection {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match line.rsplit(|&b| b == b' ').next() {
        Some(b"HTTP/1.1") | Some(b"HTTP/1.0") if line.len() > 9 => {
            Detection::Known(Protocol::Http1)
        }
        _ => Detection::Known(Protocol::Opaque),
    }
}

/// `tchar` of RFC 9110 §5.6.2.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

#[cfg(test)]
mod tests;
