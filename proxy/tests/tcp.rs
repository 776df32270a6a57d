//! Opaque TCP through the proxy: server-speaks-first, half-close, TLS passthrough.

mod support;

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use support::{tcp, TestProxy};
use weft_testkit::assert_eventually;

async fn read_exactly(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut buf))
        .await
        .expect("read within 10s")
        .expect("read");
    buf
}

#[tokio::test]
async fn server_speaks_first_on_an_opaque_port() {
    let server = tcp::banner_server(b"220 mail.example ESMTP\r\n").await;
    let proxy = TestProxy::with(&[
        ("WEFT_OUTBOUND_TARGET", &server.to_string()),
        ("WEFT_OPAQUE_PORTS", &server.port().to_string()),
        // Were detection not skipped, the banner would wait this long.
        ("WEFT_DETECT_TIMEOUT", "1h"),
    ])
    .await;
    let mut s = TcpStream::connect(proxy.outbound()).await.expect("connect");
    assert_eq!(
        read_exactly(&mut s, 24).await,
        b"220 mail.example ESMTP\r\n"
    );
    s.write_all(b"EHLO client\r\n").await.expect("write");
    assert_eq!(read_exactly(&mut s, 13).await, b"EHLO client\r\n");
    assert_eq!(
        proxy.metric(&format!(
            r#"weft_protocol_detect_timeouts_total{{direction="outbound",port="{}"}}"#,
            server.port()
        )),
        None
    );
}

#[tokio::test]
async fn server_speaks_first_elsewhere_falls_back_after_the_timeout_and_is_counted() {
    let server = tcp::banner_server(b"+OK ready\r\n").await;
    let proxy = TestProxy::with(&[
        ("WEFT_OUTBOUND_TARGET", &server.to_string()),
        ("WEFT_OPAQUE_PORTS", ""),
        ("WEFT_DETECT_TIMEOUT", "200ms"),
    ])
    .await;
    let mut s = TcpStream::connect(proxy.outbound()).await.expect("connect");
    assert_eq!(read_exactly(&mut s, 11).await, b"+OK ready\r\n");
    s.write_all(b"QUIT\r\n").await.expect("write");
    assert_eq!(read_exactly(&mut s, 6).await, b"QUIT\r\n");
    let series = format!(
        r#"weft_protocol_detect_timeouts_total{{direction="outbound",port="{}"}}"#,
        server.port()
    );
    assert_eq!(proxy.metric(&series), Some(1.0));
}

#[tokio::test]
async fn half_close_travels_through() {
    let server = tcp::half_close_server().await;
    let proxy = TestProxy::to(server).await;
    let mut s = TcpStream::connect(proxy.outbound()).await.expect("connect");
    s.write_all(b"hello, world").await.expect("write");
    // Our FIN: the server answers only after it sees end-of-stream.
    s.shutdown().await.expect("shutdown write");
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut answer))
        .await
        .expect("answer within 10s")
        .expect("read");
    assert_eq!(answer, "got 12 bytes");
    assert_eventually!(
        proxy.metric(r#"weft_tcp_bytes_total{direction="outbound",flow="to_server"}"#)
            == Some(12.0)
            && proxy.metric(r#"weft_tcp_bytes_total{direction="outbound",flow="to_client"}"#)
                == Some(12.0),
        "bytes counted: {}",
        proxy.metrics_text()
    );
}

#[tokio::test]
async fn an_apps_own_tls_passes_through_untouched() {
    let (server, mut received) = tcp::recording_server().await;
    let proxy = TestProxy::to(server).await;
    // A ClientHello record header and some handshake bytes, not valid TLS past that: the
    // proxy must neither parse nor alter it.
    let mut hello = vec![
        0x16, 0x03, 0x01, 0x00, 0x40, 0x01, 0x00, 0x00, 0x3c, 0x03, 0x03,
    ];
    hello.extend((0u8..53).map(|i| i.wrapping_mul(37)));
    let mut s = TcpStream::connect(proxy.outbound()).await.expect("connect");
    s.write_all(&hello).await.expect("write");
    s.shutdown().await.expect("shutdown");
    let got = tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await
        .expect("server got the connection")
        .expect("bytes");
    assert_eq!(got, hello);
}
