//! HTTP through the proxy: HTTP/1.1, HTTP/2, trailers, upgrades, CONNECT, pooling, errors.

mod support;

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use support::{app::App, read_head, TestProxy};
use weft_testkit::assert_eventually;

async fn h1(addr: std::net::SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let io = TokioIo::new(TcpStream::connect(addr).await.expect("connect proxy"));
    let (send, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .expect("h1 handshake");
    tokio::spawn(conn);
    send
}

#[tokio::test]
async fn http1_keeps_host_drops_hop_by_hop_and_streams_the_body() {
    let app = App::start().await;
    let proxy = TestProxy::to(app.addr).await;
    let mut client = h1(proxy.outbound()).await;

    for i in 0..3 {
        let req = Request::post("/echo")
            .header("host", "orders.shop.svc:8080")
            .header("connection", "x-hop")
            .header("x-hop", "secret")
            .header("keep-alive", "timeout=5")
            .header("x-end-to-end", "kept")
            .body(Full::new(Bytes::from(format!("body {i}"))))
            .expect("request");
        let rsp = client.send_request(req).await.expect("response");
        assert_eq!(rsp.status(), StatusCode::OK);
        let h = rsp.headers();
        assert_eq!(h["x-seen-host"], "orders.shop.svc:8080");
        assert_eq!(h["x-seen-version"], "HTTP/1.1");
        assert_eq!(h["x-seen-x-end-to-end"], "kept");
        assert!(
            !h.contains_key("x-seen-x-hop"),
            "header named by Connection forwarded"
        );
        assert!(!h.contains_key("x-seen-keep-alive"), "keep-alive forwarded");
        let body = rsp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(body, format!("body {i}"));
    }
    assert_eq!(
        proxy.metric(r#"weft_requests_total{client_id="",direction="outbound",dst_endpoint="",dst_service="",route="",server_id="",status_code="200",tls="false"}"#),
        Some(3.0)
    );
    assert_eq!(
        proxy.metric(
            r#"weft_request_duration_seconds_count{client_id="",direction="outbound",dst_endpoint="",dst_service="",route="",server_id="",status_code="200",tls="false"}"#
        ),
        Some(3.0)
    );
}

#[tokio::test]
async fn upstream_connections_are_pooled_across_client_connections() {
    let app = App::start().await;
    let proxy = TestProxy::to(app.addr).await;
    for _ in 0..5 {
        let mut client = h1(proxy.outbound()).await;
        let rsp = client
            .send_request(
                Request::get("/")
                    .header("host", "a")
                    .body(Full::default())
                    .expect("req"),
            )
            .await
            .expect("response");
        assert_eq!(rsp.status(), StatusCode::OK);
        rsp.into_body().collect().await.expect("body");
    }
    assert_eq!(
        app.connections(),
        1,
        "five sequential requests should reuse one upstream connection"
    );
}

#[tokio::test]
async fn http2_keeps_authority_and_multiplexes() {
    let app = App::start().await;
    let proxy = TestProxy::to(app.addr).await;
    let io = TokioIo::new(TcpStream::connect(proxy.outbound()).await.expect("connect"));
    let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);

    let requests = (0..20).map(|i| {
        let mut send = send.clone();
        async move {
            let req = Request::post("http://payments.billing.svc:9090/echo")
                .version(http::Version::HTTP_2)
                .body(Full::new(Bytes::from(format!("stream {i}"))))
                .expect("request");
            let rsp = send.send_request(req).await.expect("response");
            assert_eq!(rsp.headers()["x-seen-host"], "payments.billing.svc:9090");
            assert_eq!(rsp.headers()["x-seen-version"], "HTTP/2.0");
            let body = rsp.into_body().collect().await.expect("body").to_bytes();
            assert_eq!(body, format!("stream {i}"));
        }
    });
    futures_util::future::join_all(requests).await;
    assert_eq!(
        app.connections(),
        1,
        "20 concurrent h2 streams should share one upstream connection"
    );
}

#[tokio::test]
async fn grpc_style_trailers_cross_both_ways() {
    let app = App::start().await;
    let proxy = TestProxy::to(app.addr).await;
    let io = TokioIo::new(TcpStream::connect(proxy.outbound()).await.expect("connect"));
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);

    let mut req_trailers = HeaderMap::new();
    req_trailers.insert("x-req-trailer", HeaderValue::from_static("from-client"));
    let frames = vec![
        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"\0\0\0\0\x05hello"))),
        Ok(Frame::trailers(req_trailers)),
    ];
    let req = Request::post("http://greeter.svc:50051/trailers")
        .version(http::Version::HTTP_2)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(StreamBody::new(stream::iter(frames)))
        .expect("request");
    let rsp = send.send_request(req).await.expect("response");
    assert_eq!(rsp.status(), StatusCode::OK);
    let collected = rsp.into_body().collect().await.expect("body");
    let trailers = collected
        .trailers()
        .cloned()
        .expect("response trailers arrived");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "ok");
    assert_eq!(
        trailers["x-req-trailer"], "from-client",
        "request trailers reached the server"
    );
    assert_eq!(collected.to_bytes(), "received 10 bytes");
}

#[tokio::test]
async fn websocket_upgrade_becomes_a_tunnel() {
    let app = App::start().await;
    let proxy = TestProxy::to(app.addr).await;
    let mut s = TcpStream::connect(proxy.outbound()).await.expect("connect");
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: chat.svc\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .expect("write upgrade");
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    for msg in [&b"\x81\x05hello"[..], b"\x81\x03bye"] {
        s.write_all(msg).await.expect("write frame");
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut back))
            .await
            .expect("echo within 10s")
            .expect("read echo");
        assert_eq!(back, msg);
    }
    // The tunnel is the connection: open while it lasts, closed when it ends.
    let closed = r#"weft_tcp_connections_closed_total{direction="outbound"}"#;
    assert_eq!(
        proxy.metric(closed),
        Some(0.0),
        "counted closed while the tunnel is open"
    );
    drop(s);
    assert_eventually!(proxy.metric(closed) == Some(1.0), "tunnel close counted");
}

#[tokio::test]
async fn connect_opens_a_tunnel() {
    let app = App::start().await;
    let proxy = TestProxy::to(app.addr).await;
    let mut s = TcpStream::connect(proxy.outbound()).await.expect("connect");
    s.write_all(b"CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n")
        .await
        .expect("write connect");
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s.write_all(b"through the tunnel").await.expect("write");
    let mut back = [0u8; 18];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut back))
        .await
        .expect("echo within 10s")
        .expect("read");
    assert_eq!(&back, b"through the tunnel");
}

#[tokio::test]
async fn refused_upstream_is_a_502_that_says_why() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let proxy = TestProxy::to(closed).await;
    let mut client = h1(proxy.outbound()).await;
    let rsp = client
        .send_request(
            Request::get("/")
                .header("host", "gone")
                .body(Full::default())
                .expect("req"),
        )
        .await
        .expect("response");
    assert_eq!(rsp.status(), StatusCode::BAD_GATEWAY);
    let why = rsp.headers()["weft-proxy-error"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(
        why.contains("refused") && why.contains(&closed.to_string()),
        "{why}"
    );
    assert_eq!(
        proxy.metric(r#"weft_requests_total{client_id="",direction="outbound",dst_endpoint="",dst_service="",route="",server_id="",status_code="502",tls="false"}"#),
        Some(1.0)
    );
}

#[tokio::test]
async fn thousand_concurrent_connections() {
    const N: usize = 1000;
    // Four descriptors per proxied connection live in this one process (client, proxy's two
    // sides, server).
    rlimit::increase_nofile_limit(8 * N as u64).expect("raise RLIMIT_NOFILE");
    let app = App::with_barrier(N).await;
    let proxy = TestProxy::with(&[
        ("WEFT_OUTBOUND_TARGET", &app.addr.to_string()),
        ("WEFT_THREADS", "2"),
    ])
    .await;
    let outbound = proxy.outbound();
    let clients = (0..N).map(|_| async move {
        let mut client = h1(outbound).await;
        let req = Request::get("/barrier")
            .header("host", "fan.in")
            .body(Full::default())
            .expect("req");
        let rsp = client.send_request(req).await.expect("response");
        let status = rsp.status();
        let body = rsp.into_body().collect().await.expect("body").to_bytes();
        (status, body)
    });
    // The app answers none until all N requests are in flight at once.
    let results = tokio::time::timeout(
        Duration::from_secs(60),
        futures_util::future::join_all(clients),
    )
    .await
    .expect("all connections served within 60s");
    assert_eq!(results.len(), N);
    for (status, body) in results {
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "all arrived");
    }
    assert_eq!(
        app.connections(),
        N,
        "every request held its own upstream connection"
    );
    assert_eq!(
        proxy.metric(r#"weft_tcp_connections_opened_total{direction="outbound"}"#),
        Some(N as f64)
    );
}

#[tokio::test]
async fn empty_head_request_is_counted() {
    let app = App::start().await;
    let proxy = TestProxy::to(app.addr).await;
    let mut client = {
        let io = TokioIo::new(TcpStream::connect(proxy.outbound()).await.expect("connect"));
        let (send, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(io)
            .await
            .expect("handshake");
        tokio::spawn(conn);
        send
    };
    let rsp = client
        .send_request(
            Request::head("/")
                .header("host", "h")
                .body(Empty::new())
                .expect("req"),
        )
        .await
        .expect("response");
    assert_eq!(rsp.status(), StatusCode::OK);
    drop(rsp);
    assert_eventually!(
        proxy.metric(r#"weft_requests_total{client_id="",direction="outbound",dst_endpoint="",dst_service="",route="",server_id="",status_code="200",tls="false"}"#) == Some(1.0),
        "HEAD request counted"
    );
}

#[tokio::test]
async fn the_inbound_listener_proxies_and_labels_inbound() {
    let app = App::start().await;
    let proxy = TestProxy::with(&[("WEFT_INBOUND_TARGET", &app.addr.to_string())]).await;
    let inbound = std::net::SocketAddr::from(([127, 0, 0, 1], proxy.addrs.inbound.port()));
    assert_eq!(support::get(inbound, "/").await, Some((200, "ok".into())));
    assert_eq!(
        proxy.metric(r#"weft_requests_total{client_id="",direction="inbound",dst_endpoint="",dst_service="",route="",server_id="",status_code="200",tls="false"}"#),
        Some(1.0)
    );
    assert_eq!(
        proxy.metric(r#"weft_requests_total{client_id="",direction="outbound",dst_endpoint="",dst_service="",route="",server_id="",status_code="200",tls="false"}"#),
        None
    );
}

/// An upstream that answers one request per connection and then closes it without saying so
/// (no `Connection: close`): its connections look reusable until they are not.
async fn one_shot_upstream() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (closed_tx, closed) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                let _ = read_head(&mut s).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
                let _ = s.shutdown().await;
                drop(s);
                let _ = closed_tx.send(());
            });
        }
    });
    (addr, closed)
}

/// Mostly the pool's readiness check at checkout catches these; the retry in `send_h1` covers
/// the narrower race where the close lands between checkout and write, which this test cannot
/// force.
#[tokio::test]
async fn pooled_connections_closed_by_the_upstream_cause_no_errors() {
    let (upstream, _closed) = one_shot_upstream().await;
    let proxy = TestProxy::to(upstream).await;
    let mut client = h1(proxy.outbound()).await;
    for i in 0..30 {
        let rsp = client
            .send_request(
                Request::get("/")
                    .header("host", "flaky")
                    .body(Full::default())
                    .expect("req"),
            )
            .await
            .expect("response");
        assert_eq!(
            rsp.status(),
            StatusCode::OK,
            "request {i}: {:?}",
            rsp.headers().get("weft-proxy-error")
        );
        rsp.into_body().collect().await.expect("body");
    }
}

#[tokio::test]
async fn idle_upstream_connections_are_closed_after_the_idle_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let upstream = listener.local_addr().expect("addr");
    let (closed_tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let _ = read_head(&mut s).await;
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await
            .expect("write");
        // Keep-alive from our side: only the proxy closing makes this read return.
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
        let _ = closed_tx.send(());
    });
    let proxy = TestProxy::with(&[
        ("WEFT_OUTBOUND_TARGET", &upstream.to_string()),
        ("WEFT_UPSTREAM_IDLE_TIMEOUT", "300ms"),
    ])
    .await;
    let mut client = h1(proxy.outbound()).await;
    let rsp = client
        .send_request(
            Request::get("/")
                .header("host", "idle")
                .body(Full::default())
                .expect("req"),
        )
        .await
        .expect("response");
    rsp.into_body().collect().await.expect("body");
    let start = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(10), closed.recv())
        .await
        .expect("the proxy closed its idle upstream connection within 10s");
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "closed before it was idle long"
    );
}
