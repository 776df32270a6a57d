//! A minimal blocking HTTP/1.1 client over a socket made inside a pod's namespace: one
//! request per connection (`Connection: close`), the whole response read to EOF, bounded.

use std::{
    fmt::Write as _,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use crate::{
    error::{Error, Result},
    netns::Netns,
};

/// Connect, read and write timeout of the lab's clients.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest response the client reads.
const MAX_RESPONSE: u64 = 4 << 20;

/// One HTTP response.
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: u16,
    /// Header names lowercased, in order.
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The client socket's own address (what a server reached directly sees as its peer).
    pub local: SocketAddr,
}

impl HttpReply {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of a `key=value` line of the body (the test app answers that way).
    pub fn field(&self, key: &str) -> Option<&str> {
        self.body
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
    }
}

/// `GET path` with `Host: host` to `dst`, from inside `ns`.
pub fn get(ns: &Netns, dst: SocketAddr, host: &str, path: &str) -> Result<HttpReply> {
    get_with(ns, dst, host, path, &[])
}

/// [`get`] with extra request headers.
pub fn get_with(
    ns: &Netns,
    dst: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<HttpReply> {
    let mut conn = ns.connect(dst, IO_TIMEOUT)?;
    request_with(&mut conn, dst, host, path, headers)
}

/// `GET path` on an open connection, which the response ends.
pub fn request(conn: &mut TcpStream, dst: SocketAddr, host: &str, path: &str) -> Result<HttpReply> {
    request_with(conn, dst, host, path, &[])
}

/// [`request`] with extra request headers.
pub fn request_with(
    conn: &mut TcpStream,
    dst: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<HttpReply> {
    let what = || format!("GET http://{host}{path} via {dst}");
    let local = conn.local_addr().map_err(Error::io(what()))?;
    // One write: the request leaves in one segment, as most clients send it.
    let mut head = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: weft-lab\r\nConnection: close\r\n"
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes()).map_err(Error::io(what()))?;
    let mut raw = Vec::new();
    conn.take(MAX_RESPONSE)
        .read_to_end(&mut raw)
        .map_err(Error::io(what()))?;
    parse_response(&raw, local).ok_or_else(|| Error::Protocol {
        what: what(),
        answer: String::from_utf8_lossy(&raw).into_owned(),
    })
}

/// Parses a whole response (Content-Length, chunked, or to EOF).
fn parse_response(raw: &[u8], local: SocketAddr) -> Option<HttpReply> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let rest = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))?
        .get(..3)?
        .parse()
        .ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let body = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else if let Some(len) = header("content-length") {
        rest.get(..len.parse::<usize>().ok()?)?.to_vec()
    } else {
        rest.to_vec()
    };
    Some(HttpReply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        local,
    })
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    for _ in 0..100_000 {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
    None
}

/// `s` as a query string value: unreserved characters as they are, the rest percent-encoded.
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded_but_unreserved_characters() {
        assert_eq!(query_escape("a b/é"), "a%20b%2F%C3%A9");
        assert_eq!(
            query_escape("rate(x{a=\"b\"}[5m])"),
            "rate%28x%7Ba%3D%22b%22%7D%5B5m%5D%29"
        );
    }

    fn local() -> SocketAddr {
        SocketAddr::from(([198, 18, 0, 2], 40000))
    }

    #[test]
    fn content_length_chunked_and_eof_bodies() {
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nX-A: b\r\n\r\npod=b1\nx=1\nextra",
            local(),
        )
        .expect("parses");
        assert_eq!(
            (r.status, r.field("pod"), r.field("x")),
            (200, Some("b1"), Some("1"))
        );
        assert_eq!(r.header("x-a"), Some("b"));
        let r = parse_response(
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nnot \r\n5\r\nready\r\n0\r\n\r\n",
            local(),
        )
        .expect("parses");
        assert_eq!((r.status, r.body.as_str()), (503, "not ready"));
        let r = parse_response(b"HTTP/1.0 404 Not Found\r\n\r\ngone", local()).expect("parses");
        assert_eq!((r.status, r.body.as_str()), (404, "gone"));
        assert!(parse_response(b"", local()).is_none());
        assert!(parse_response(b"SSH-2.0\r\n\r\n", local()).is_none());
    }
}
