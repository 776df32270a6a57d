//! Bad input: malformed HTTP, oversized headers, slow clients, garbage. A clear status where
//! HTTP allows one, a bounded cost, and a proxy that keeps serving.

mod support;

use std::time::{Duration, Instant};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use support::{app::App, get, parse_response, TestProxy};
use weft_testkit::assert_eventually;

/// Sends `raw`, then reads whatever comes back until the proxy closes (at most 10 s).
async fn exchange(proxy: &TestProxy, raw: Vec<u8>) -> Vec<u8> {
    let s = TcpStream::connect(proxy.outbound()).await.expect("connect");
    let (mut r, mut w) = s.into_split();
    // The proxy may answer and close before reading everything: write on the side, then
    // half-close so that whatever reads our bytes (the proxy, or the app behind it) sees the end.
    let writer = tokio::spawn(async move {
        let _ = w.write_all(&raw).await;
        let _ = w.shutdown().await;
        w
    });
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), r.read_to_end(&mut out)).await;
    drop(writer.await);
    out
}

async fn still_serves(proxy: &TestProxy) {
    assert_eq!(
        get(proxy.outbound(), "/").await,
        Some((200, "ok".into())),
        "proxy stopped serving"
    );
}

#[tokio::test]
async fn malformed_http_is_answered_400() {
    let app = App::start().await;
    let proxy = TestProxy::to(app.addr).await;
    for raw in [
        &b"GET / HTTP/1.1\r\nHost: a\r\nthis is not a header\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
        b"GET / HTTP/1.1\r\nHost: a\r\nBad\x01Name: v\r\n\r\n",
    ] {
        let out = exchange(&proxy, raw.to_vec()).await;
        let (status, _) = parse_response(&out).unwrap_or_else(|| panic!("no response to {raw:?}"));
        assert_eq!(status, 400, "for {:?}", String::from_utf8_lossy(raw));
    }
    assert_eq!(
        app.connections(),
        0,
        "malformed requests must not reach the app"
    );
    still_serves(&proxy).await;
}

#[tokio::test]
async fn oversized_headers_are_answered_431() {
    let app = App::start().await;
    let proxy = TestProxy::with(&[
        ("WEFT_OUTBOUND_TARGET", &app.addr.to_string()),
        ("WEFT_MAX_HEADER_BYTES", "16384"),
    ])
    .await;
    let mut raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
    raw.resize(raw.len() + 64 * 1024, b'a');
    raw.extend_from_slice(b"\r\n\r\n");
    let out = exchange(&proxy, raw).await;
    assert_eq!(
        parse_response(&out).map(|(s, _)| s),
        Some(431),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(app.connections(), 0);
    still_serves(&proxy).await;
}

#[tokio::test]
async fn a_slow_client_is_cut_off_by_the_header_read_timeout() {
    let app = App::start().await;
    let proxy = TestProxy::with(&[
        ("WEFT_OUTBOUND_TARGET", &app.addr.to_string()),
        ("WEFT_HEADER_READ_TIMEOUT", "300ms"),
    ])
    .await;
    let mut s = TcpStream::connect(proxy.outbound()).await.expect("connect");
    let start = Instant::now();
    // A request line and one header, then nothing: the rest of the head never comes.
    s.write_all(b"GET / HTTP/1.1\r\nHost: slow\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    assert!(closed.is_ok(), "the proxy kept a stalled client for 10s");
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "cut off before the timeout"
    );
    // hyper closes the connection, with a 408 or without a response.
    if let Some((status, _)) = parse_response(&out) {
        assert_eq!(status, 408);
    }
    assert_eq!(app.connections(), 0);
    still_serves(&proxy).await;
}

#[tokio::test]
async fn garbage_and_random_bytes_cause_no_harm() {
    let app = App::start().await;
    let proxy = TestProxy::with(&[
        ("WEFT_OUTBOUND_TARGET", &app.addr.to_string()),
        ("WEFT_DETECT_TIMEOUT", "100ms"),
    ])
    .await;
    // A fixed-seed xorshift: the same inputs on every run.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // TLS-looking records of garbage, truncated HTTP/2 prefaces, HTTP with binary, random.
    let mut inputs: Vec<Vec<u8>> = vec![
        vec![0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0xde, 0xad, 0xbe, 0xef],
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff\xff\xff\xff\xff\xff".to_vec(),
        b"PRI * HTTP/2.0\r\n".to_vec(),
        b"GET /\x00\xff HTTP/1.1\r\n\r\n".to_vec(),
    ];
    for _ in 0..60 {
        let len = (next() % 4096) as usize;
        inputs.push((0..len).map(|_| next() as u8).collect());
    }
    let runs = inputs.into_iter().map(|raw| exchange(&proxy, raw));
    futures_util::future::join_all(runs).await;
    still_serves(&proxy).await;
    let opened = proxy
        .metric(r#"weft_tcp_connections_opened_total{direction="outbound"}"#)
        .expect("opened");
    assert_eventually!(
        proxy.metric(r#"weft_tcp_connections_closed_total{direction="outbound"}"#) == Some(opened),
        "every garbage connection closed (no leak): {}",
        proxy.metrics_text()
    );
}
