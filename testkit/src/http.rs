//! A plain HTTP/1.1 request on a fresh connection, bounded in time: what tests send to an
//! admin port (`/ready`, `/metrics`).

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::prometheus::Metrics;

/// How long one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// `GET path`: the status and body, or `None` if nothing answered within
/// [`REQUEST_TIMEOUT`].
pub async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    request(addr, "GET", path, "").await
}

/// One request with `Connection: close`: the status and body, or `None` if nothing answered
/// within [`REQUEST_TIMEOUT`].
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> Option<(u16, String)> {
    let exchange = async {
        let mut tcp = TcpStream::connect(addr).await.ok()?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        tcp.write_all(req.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await.ok()?;
        parse_response(&raw)
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .ok()
        .flatten()
}

/// Status and body of a raw HTTP/1 response read to its end.
pub fn parse_response(raw: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// `GET /metrics` on `admin`, parsed; `None` if nothing answered.
///
/// # Panics
/// If it answered other than 200, or with a page that does not parse: the server under test
/// is wrong.
pub async fn metrics(admin: SocketAddr) -> Option<Metrics> {
    let (status, text) = get(admin, "/metrics").await?;
    assert_eq!(status, 200, "GET http://{admin}/metrics: {text}");
    match Metrics::parse(&text) {
        Ok(m) => Some(m),
        Err(e) => panic!("GET http://{admin}/metrics: {e}\n{text}"),
    }
}
