//! Identity and mutual TLS between proxies: the real control plane (its binary) and two proxies
//! on loopback.
//!
//! The client app talks plaintext to proxy A (outbound, explicit mode); A reaches proxy B's
//! inbound over mTLS (HTTP/1 on pooled connections, the rest on one HTTP/2 connection), and B
//! hands the request to the server app in the protocol the client spoke.

mod support;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use support::{
    app::App,
    get,
    mesh::{identity_env, proxy, route, spiffe, ControlPlane, Pki},
    read_head, TestProxy,
};
use weft_testkit::assert_eventually;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// B serves `target` for shop/api; A reaches `target` through B as shop/web, expecting
/// `expect_id` from B.
async fn pair(
    pki: &Pki,
    cp: &ControlPlane,
    target: SocketAddr,
    expect_id: &str,
) -> (TestProxy, TestProxy) {
    let b = server(pki, cp.addr, target).await;
    let a = client_expecting(pki, cp.addr, target, &b, expect_id).await;
    (a, b)
}

/// A shop/api proxy (certificate from `cp`) whose inbound delivers to `target`.
async fn server(pki: &Pki, cp: SocketAddr, target: SocketAddr) -> TestProxy {
    proxy(
        &identity_env(pki, cp, "shop", "api"),
        &[("WEFT_INBOUND_TARGET", target.to_string())],
    )
    .await
}

/// A shop/web proxy whose outbound reaches `target` through `peer`, which must be shop/api.
async fn client(pki: &Pki, cp: SocketAddr, target: SocketAddr, peer: &TestProxy) -> TestProxy {
    client_expecting(pki, cp, target, peer, &spiffe("shop", "api")).await
}

async fn client_expecting(
    pki: &Pki,
    cp: SocketAddr,
    target: SocketAddr,
    peer: &TestProxy,
    expect_id: &str,
) -> TestProxy {
    proxy(
        &identity_env(pki, cp, "shop", "web"),
        &[
            ("WEFT_OUTBOUND_TARGET", target.to_string()),
            ("WEFT_MESH_DESTINATIONS", route(target, expect_id, peer)),
        ],
    )
    .await
}

fn mesh_series(direction: &str, status: u16) -> String {
    format!(
        r#"weft_requests_total{{client_id="{}",direction="{direction}",dst_endpoint="",dst_service="",route="",server_id="{}",status_code="{status}",tls="true"}}"#,
        spiffe("shop", "web"),
        spiffe("shop", "api"),
    )
}

async fn h1_get(addr: std::net::SocketAddr, path: &str) -> http::Response<Bytes> {
    let io = TokioIo::new(TcpStream::connect(addr).await.expect("connect"));
    let (mut tx, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .expect("h1 handshake");
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", "api.shop.svc")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let rsp = tx.send_request(req).await.expect("response");
    let (parts, body) = rsp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    http::Response::from_parts(parts, body)
}

#[tokio::test]
async fn http1_and_http2_cross_their_mtls_connections_and_both_identities_show() {
    let pki = Pki::new(1);
    let cp = ControlPlane::start(&pki, DAY).await;
    let app = App::start().await;
    let (a, b) = pair(&pki, &cp, app.addr, &spiffe("shop", "api")).await;

    // HTTP/1.1 in, HTTP/1.1 out at the far end.
    let rsp = h1_get(a.outbound(), "/echo").await;
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(rsp.headers()["x-seen-version"], "HTTP/1.1");
    assert_eq!(rsp.headers()["x-seen-host"], "api.shop.svc");

    // HTTP/2 in, HTTP/2 out, on the same mesh connection.
    let io = TokioIo::new(TcpStream::connect(a.outbound()).await.expect("connect"));
    let (mut tx, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    for _ in 0..3 {
        let req = Request::get("http://api.shop.svc/echo")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let rsp = tx.send_request(req).await.expect("h2 response");
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(rsp.headers()["x-seen-version"], "HTTP/2.0");
        assert_eq!(rsp.headers()["x-seen-host"], "api.shop.svc");
    }

    // HTTP/1 on its pooled connection, HTTP/2 on the shared one.
    assert_eq!(
        b.metric(r#"weft_tcp_connections_opened_total{direction="inbound"}"#),
        Some(2.0),
        "one mesh connection for HTTP/1, one for HTTP/2:\n{}",
        b.metrics_text()
    );
    assert_eventually!(
        a.metric(&mesh_series("outbound", 200)) == Some(4.0),
        "A counts 4 mTLS requests with both identities:\n{}",
        a.metrics_text()
    );
    assert_eventually!(
        b.metric(&mesh_series("inbound", 200)) == Some(4.0),
        "B counts 4 mTLS requests with both identities:\n{}",
        b.metrics_text()
    );
    assert_eq!(
        a.metric(r#"weft_tls_handshakes_total{direction="outbound",result="ok"}"#),
        Some(2.0)
    );
    assert_eq!(
        b.metric(r#"weft_tls_handshakes_total{direction="inbound",result="ok"}"#),
        Some(2.0)
    );
    let expiry = a
        .metric("weft_identity_cert_expiry_timestamp_seconds")
        .expect("expiry metric");
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as f64;
    assert!(
        (now + 23.0 * 3600.0..=now + 24.0 * 3600.0 + 60.0).contains(&expiry),
        "A's certificate expires in about a day: {expiry} vs now {now}"
    );
    assert_eq!(
        cp.metric("weft_identity_certificates_issued_total").await,
        Some(2.0)
    );
}

/// `held` HTTP/1 requests held at the app at once, then five one after another, through A
/// (with `upgrade` as `WEFT_MESH_HTTP1_UPGRADE` and `max_idle` as `WEFT_UPSTREAM_MAX_IDLE`);
/// how many mesh connections B accepted.
async fn http1_mesh_connections(upgrade: &str, held: usize, max_idle: usize) -> f64 {
    let pki = Pki::new(1);
    let cp = ControlPlane::start(&pki, DAY).await;
    let mut app = App::start().await;
    let b = server(&pki, cp.addr, app.addr).await;
    let a = proxy(
        &identity_env(&pki, cp.addr, "shop", "web"),
        &[
            ("WEFT_OUTBOUND_TARGET", app.addr.to_string()),
            (
                "WEFT_MESH_DESTINATIONS",
                route(app.addr, &spiffe("shop", "api"), &b),
            ),
            ("WEFT_MESH_HTTP1_UPGRADE", upgrade.to_string()),
            ("WEFT_UPSTREAM_MAX_IDLE", max_idle.to_string()),
        ],
    )
    .await;
    let outbound = a.outbound();
    let waiting: Vec<_> = (0..held)
        .map(|_| tokio::spawn(async move { h1_get(outbound, "/gate").await }))
        .collect();
    for _ in 0..held {
        tokio::time::timeout(Duration::from_secs(10), app.arrivals.recv())
            .await
            .expect("the held requests reach the app at once")
            .expect("arrival");
    }
    app.open_gate();
    for rsp in waiting {
        assert_eq!(rsp.await.expect("join").status(), StatusCode::OK);
    }
    for _ in 0..5 {
        let rsp = h1_get(outbound, "/echo").await;
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(rsp.headers()["x-seen-version"], "HTTP/1.1");
    }
    let served = (held + 5) as f64;
    assert_eventually!(
        b.metric(&mesh_series("inbound", 200)) == Some(served),
        "B served the {served} requests:\n{}",
        b.metrics_text()
    );
    let opened = b
        .metric(r#"weft_tcp_connections_opened_total{direction="inbound"}"#)
        .expect("inbound connections counted");
    assert_eq!(
        a.metric(r#"weft_tls_handshakes_total{direction="outbound",result="ok"}"#),
        Some(opened),
        "a handshake per mesh connection"
    );
    opened
}

#[tokio::test]
async fn concurrent_http1_requests_cross_on_pooled_connections_that_are_reused() {
    assert_eq!(
        http1_mesh_connections("off", 3, 64).await,
        3.0,
        "one connection per request in flight, reused by the five that followed"
    );
}

#[tokio::test]
async fn past_the_pool_limit_http1_rides_the_shared_connection() {
    assert_eq!(
        http1_mesh_connections("off", 4, 2).await,
        3.0,
        "two HTTP/1 connections, and the shared HTTP/2 one for the requests beyond them"
    );
}

#[tokio::test]
async fn with_the_upgrade_http1_is_multiplexed_on_the_shared_connection() {
    assert_eq!(http1_mesh_connections("on", 3, 64).await, 1.0);
}

/// A peer proxy from before `weft.dev/h1`: its mTLS offers only `weft.dev/h2`, and it answers
/// every request with the version it arrived in and its marks. Counts the connections.
async fn older_peer(pki: &Pki) -> (SocketAddr, Arc<AtomicU32>) {
    use hyper::service::service_fn;
    let tls = pki.mesh_tls("shop", "api");
    let mut config = (*tls.server_config()).clone();
    config.alpn_protocols = vec![weft_proxy_identity::MESH_ALPN.to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let conns = Arc::new(AtomicU32::new(0));
    let counted = conns.clone();
    tokio::spawn(async move {
        // Bounded: the test makes a handful of connections.
        for _ in 0..16 {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            counted.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let mut rsp = http::Response::new(Full::new(Bytes::new()));
                    let seen = format!("{:?}", req.version());
                    rsp.headers_mut()
                        .insert("x-arrived-as", seen.parse().expect("value"));
                    if let Some(proto) = req.headers().get("weft-orig-proto") {
                        rsp.headers_mut().insert("x-orig-proto", proto.clone());
                    }
                    Ok::<_, std::convert::Infallible>(rsp)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, conns)
}

#[tokio::test]
async fn http1_to_a_peer_without_http1_connections_crosses_as_http2() {
    let pki = Pki::new(1);
    let cp = ControlPlane::start(&pki, DAY).await;
    let (peer, conns) = older_peer(&pki).await;
    let target: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
    let a = proxy(
        &identity_env(&pki, cp.addr, "shop", "web"),
        &[
            ("WEFT_OUTBOUND_TARGET", target.to_string()),
            (
                "WEFT_MESH_DESTINATIONS",
                format!("{target}={}@{peer}", spiffe("shop", "api")),
            ),
        ],
    )
    .await;
    for _ in 0..3 {
        let rsp = h1_get(a.outbound(), "/").await;
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(rsp.headers()["x-arrived-as"], "HTTP/2.0");
        assert_eq!(rsp.headers()["x-orig-proto"], "HTTP/1.1");
    }
    assert_eq!(
        conns.load(Ordering::SeqCst),
        1,
        "the HTTP/1 dial that got HTTP/2 became the shared connection"
    );
}

#[tokio::test]
async fn opaque_tcp_and_websocket_upgrades_ride_the_mesh_connection() {
    let pki = Pki::new(1);
    let cp = ControlPlane::start(&pki, DAY).await;
    let app = App::start().await;
    let (a, b) = pair(&pki, &cp, app.addr, &spiffe("shop", "api")).await;

    // A WebSocket-style upgrade: 101, then bytes both ways.
    let mut ws = TcpStream::connect(a.outbound()).await.expect("connect");
    ws.write_all(
        b"GET /ws HTTP/1.1\r\nHost: api\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .expect("write");
    let head = read_head(&mut ws).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    ws.write_all(b"ping over the mesh").await.expect("write");
    let mut buf = [0u8; 18];
    ws.read_exact(&mut buf).await.expect("echo");
    assert_eq!(&buf, b"ping over the mesh");

    // Opaque TCP (not HTTP): a CONNECT stream to the app's port; the app's CONNECT echo is not
    // involved, the bytes go straight to its socket, so speak HTTP inside by hand.
    let mut tcp = TcpStream::connect(a.outbound()).await.expect("connect");
    tcp.write_all(b"\x00\x01binary hello").await.expect("write");
    // The app is an HTTP server: binary garbage gets a 400 back through the tunnel.
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut got))
        .await
        .expect("answer within 10s")
        .expect("read");
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 400"),
        "the app's own answer came back through the mesh tunnel: {:?}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(
        b.metric(r#"weft_tcp_connections_opened_total{direction="inbound"}"#),
        Some(1.0),
        "both rode one mesh connection"
    );
    drop(ws);
}

/// Bulk bytes cross an opaque tunnel intact while they flow both ways at once: megabytes in
/// 64 KiB frames (the mesh connection's frame size) and in writes of odd sizes, in order.
#[tokio::test]
async fn bulk_opaque_bytes_cross_the_mesh_tunnel_intact_both_ways() {
    const LEN: usize = 8 << 20;
    let pki = Pki::new(1);
    let cp = ControlPlane::start(&pki, DAY).await;
    let echo = support::tcp::echo_server().await;
    let (a, b) = pair(&pki, &cp, echo, &spiffe("shop", "api")).await;

    // Not HTTP from the first byte: the outbound proxy takes it as opaque TCP.
    let data: Vec<u8> = (0..LEN).map(|i| (i * 7 % 251) as u8).collect();
    let (mut r, mut w) = TcpStream::connect(a.outbound())
        .await
        .expect("connect")
        .into_split();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        for chunk in sent.chunks(100_003) {
            w.write_all(chunk).await?;
        }
        w.shutdown().await
    });
    let mut got = Vec::with_capacity(LEN);
    tokio::time::timeout(Duration::from_secs(60), r.read_to_end(&mut got))
        .await
        .expect("the echo ends within 60s")
        .expect("read");
    writer.await.expect("writer").expect("write");
    assert_eq!(
        got.len(),
        LEN,
        "every byte came back, and the end of stream after them"
    );
    if let Some(at) = got.iter().zip(&data).position(|(g, d)| g != d) {
        panic!("the echo differs from what was sent at byte {at}");
    }
    assert_eq!(
        b.metric(r#"weft_tcp_connections_opened_total{direction="inbound"}"#),
        Some(1.0),
        "it crossed as one tunnel"
    );
}

#[tokio::test]
async fn a_peer_with_the_wrong_identity_is_refused() {
    let pki = Pki::new(1);
    let cp = ControlPlane::start(&pki, DAY).await;
    let app = App::start().await;
    let (a, _b) = pair(&pki, &cp, app.addr, &spiffe("shop", "billing")).await;
    let rsp = h1_get(a.outbound(), "/echo").await;
    assert_eq!(rsp.status(), StatusCode::BAD_GATEWAY);
    let why = rsp.headers()["weft-proxy-error"].to_str().expect("ascii");
    assert!(
        why.contains("spiffe://cluster.local/ns/shop/sa/billing")
            && why.contains("spiffe://cluster.local/ns/shop/sa/api"),
        "the error names both identities: {why}"
    );
    assert_eq!(
        a.metric(r#"weft_tls_handshakes_total{direction="outbound",result="wrong_identity"}"#),
        Some(1.0),
        "{}",
        a.metrics_text()
    );
    assert_eq!(app.connections(), 0, "nothing reached the app");
}

#[tokio::test]
async fn a_peer_from_another_trust_anchor_is_refused() {
    let pki = Pki::new(1);
    let other = Pki::new(1);
    let cp = ControlPlane::start(&pki, DAY).await;
    let other_cp = ControlPlane::start(&other, DAY).await;
    let app = App::start().await;
    // B's certificate comes from another PKI altogether.
    let b = server(&other, other_cp.addr, app.addr).await;
    let a = client(&pki, cp.addr, app.addr, &b).await;
    let rsp = h1_get(a.outbound(), "/").await;
    assert_eq!(rsp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(
        a.metric(r#"weft_tls_handshakes_total{direction="outbound",result="untrusted"}"#),
        Some(1.0),
        "{}",
        a.metrics_text()
    );
    assert_eq!(
        b.metric(r#"weft_tls_handshakes_total{direction="inbound",result="ok"}"#),
        Some(0.0),
        "B accepted nothing"
    );
    assert_eq!(app.connections(), 0, "nothing reached the app");
}

#[tokio::test]
async fn an_expired_peer_is_refused() {
    let pki = Pki::new(1);
    let cp = ControlPlane::start(&pki, DAY).await;
    // B's control plane hands out 2-second certificates, then goes away: B cannot renew.
    let short = ControlPlane::start(&pki, Duration::from_secs(2)).await;
    let app = App::start().await;
    let b = server(&pki, short.addr, app.addr).await;
    short.stop().await;
    let a = client(&pki, cp.addr, app.addr, &b).await;
    let expiry = b
        .metric("weft_identity_cert_expiry_timestamp_seconds")
        .expect("expiry");
    // Wait (bounded) until B's certificate is past its end.
    assert_eventually!(
        @ Duration::from_secs(5),
        (time::OffsetDateTime::now_utc().unix_timestamp() as f64) > expiry + 1.0,
        "B's certificate expired"
    );
    let rsp = h1_get(a.outbound(), "/").await;
    assert_eq!(rsp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(
        a.metric(r#"weft_tls_handshakes_total{direction="outbound",result="expired"}"#),
        Some(1.0),
        "{}",
        a.metrics_text()
    );
    assert_eq!(app.connections(), 0);
}

#[tokio::test]
async fn strict_mode_refuses_plaintext_and_permissive_serves_it() {
    let pki = Pki::new(1);
    let cp = ControlPlane::start(&pki, DAY).await;
    let app = App::start().await;
    let env = identity_env(&pki, cp.addr, "shop", "api");
    let strict = proxy(
        &env,
        &[
            ("WEFT_INBOUND_TARGET", app.addr.to_string()),
            ("WEFT_INBOUND_MTLS", "strict".into()),
        ],
    )
    .await;
    let permissive = proxy(&env, &[("WEFT_INBOUND_TARGET", app.addr.to_string())]).await;
    let inbound =
        |p: &TestProxy| std::net::SocketAddr::from(([127, 0, 0, 1], p.addrs.inbound.port()));

    assert_eq!(
        get(inbound(&strict), "/").await,
        None,
        "strict closes plaintext"
    );
    assert_eq!(
        strict
            .metric(r#"weft_inbound_connections_refused_total{reason="plaintext_in_strict_mode"}"#),
        Some(1.0)
    );
    assert_eq!(app.connections(), 0);
    assert_eq!(
        get(inbound(&permissive), "/").await.map(|(s, _)| s),
        Some(200),
        "permissive serves an unmeshed client"
    );
    // A meshed client gets through strict mode.
    let a = client(&pki, cp.addr, app.addr, &strict).await;
    assert_eq!(h1_get(a.outbound(), "/").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_proxy_is_not_ready_until_it_holds_a_certificate() {
    let pki = Pki::new(1);
    // Nothing listens at the control plane's address yet: it ran once to get its ports, and
    // is stopped until the proxy has been waiting a while.
    let stopped = ControlPlane::start(&pki, DAY).await.stop().await;
    let addr = stopped.addr;
    let mut settings: Vec<(String, String)> = identity_env(&pki, addr, "shop", "web");
    settings.extend([
        ("WEFT_OUTBOUND_PORT".into(), "0".into()),
        ("WEFT_INBOUND_PORT".into(), "0".into()),
        ("WEFT_ADMIN_PORT".into(), "0".into()),
    ]);
    let source: std::collections::HashMap<String, String> = settings.into_iter().collect();
    let config = weft_proxy::Config::from_source(&source).expect("config");
    let app = weft_proxy::build(config, None).await.expect("build");
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], app.addrs().admin.port()));
    let drain = app.drain();
    let task = tokio::spawn(app.run());
    // Bounded: the proxy retries with backoff; it must stay unready meanwhile. The sleep is
    // the thing under test: half a second of retries in which nothing may make it ready.
    for _ in 0..20 {
        let status = get(admin, "/ready").await.map(|(s, _)| s);
        assert!(
            status == Some(503) || status.is_none(),
            "ready without a certificate: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let cp = stopped.start_again().await;
    assert_eventually!(
        get(admin, "/ready").await.map(|(s, _)| s) == Some(200),
        "ready once the control plane answers"
    );
    drain.start();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    cp.stop().await;
}

#[tokio::test]
async fn stopping_the_control_plane_leaves_traffic_flowing() {
    let pki = Pki::new(1);
    let cp = ControlPlane::start(&pki, DAY).await;
    let app = App::start().await;
    let (a, b) = pair(&pki, &cp, app.addr, &spiffe("shop", "api")).await;
    assert_eq!(h1_get(a.outbound(), "/").await.status(), StatusCode::OK);
    cp.stop().await;
    for _ in 0..5 {
        assert_eq!(h1_get(a.outbound(), "/").await.status(), StatusCode::OK);
    }
    assert_eq!(get(a.admin(), "/ready").await.map(|(s, _)| s), Some(200));
    assert_eq!(get(b.admin(), "/ready").await.map(|(s, _)| s), Some(200));
}

#[tokio::test]
async fn five_second_certificates_renew_under_a_long_lived_stream_without_error() {
    let pki = Pki::new(1);
    let cp = ControlPlane::start(&pki, Duration::from_secs(5)).await;
    let app = App::start().await;
    let (a, b) = pair(&pki, &cp, app.addr, &spiffe("shop", "api")).await;
    let first = (
        a.metric("weft_identity_cert_expiry_timestamp_seconds"),
        b.metric("weft_identity_cert_expiry_timestamp_seconds"),
    );

    // A long-lived upgraded stream, and a keep-alive client, across several renewals.
    let mut ws = TcpStream::connect(a.outbound()).await.expect("connect");
    ws.write_all(
        b"GET /ws HTTP/1.1\r\nHost: api\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .expect("write");
    assert!(read_head(&mut ws).await.starts_with("HTTP/1.1 101"));
    let io = TokioIo::new(TcpStream::connect(a.outbound()).await.expect("connect"));
    let (mut tx, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .expect("handshake");
    tokio::spawn(conn);

    let start = tokio::time::Instant::now();
    let mut rounds = 0;
    while start.elapsed() < Duration::from_secs(8) && rounds < 100 {
        rounds += 1;
        let msg = format!("round {rounds:03}");
        ws.write_all(msg.as_bytes()).await.expect("stream write");
        let mut buf = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), ws.read_exact(&mut buf))
            .await
            .expect("echo within 5s")
            .expect("stream read");
        assert_eq!(buf, msg.as_bytes());
        let req = Request::get("/")
            .header("host", "api")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let rsp = tx.send_request(req).await.expect("keep-alive request");
        assert_eq!(rsp.status(), StatusCode::OK, "round {rounds}");
        rsp.into_body().collect().await.expect("body");
        // Pacing, not synchronisation: the rounds are spread over the 8 s so that the
        // streams live across several renewals of the 5-second certificates.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let later = (
        a.metric("weft_identity_cert_expiry_timestamp_seconds"),
        b.metric("weft_identity_cert_expiry_timestamp_seconds"),
    );
    assert!(
        later.0 > first.0 && later.1 > first.1,
        "both proxies renewed: {first:?} -> {later:?}"
    );
    let issued = cp
        .metric("weft_identity_certificates_issued_total")
        .await
        .expect("issued");
    assert!(issued >= 4.0, "at least one renewal each: {issued} issued");
    // A new mesh connection after renewal uses the new certificates.
    let c = client(&pki, cp.addr, app.addr, &b).await;
    assert_eq!(h1_get(c.outbound(), "/").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn issuer_rotation_through_overlapping_anchors_drops_no_request() {
    // Both anchors are trusted everywhere from the start; the issuer moves from the first to
    // the second while requests keep flowing and 3-second certificates renew.
    let pki = Pki::new(2);
    let cp = ControlPlane::start(&pki, Duration::from_secs(3)).await;
    let app = App::start().await;
    let (a, _b) = pair(&pki, &cp, app.addr, &spiffe("shop", "api")).await;
    let outbound = a.outbound();
    let served = Arc::new(AtomicU32::new(0));
    let counted = served.clone();
    let load = tokio::spawn(async move {
        let (mut ok, mut failed) = (0u32, Vec::new());
        let start = tokio::time::Instant::now();
        while start.elapsed() < Duration::from_secs(6) && ok + (failed.len() as u32) < 400 {
            match get(outbound, "/").await {
                Some((200, _)) => ok += 1,
                other => failed.push(other),
            }
            counted.store(ok, Ordering::Relaxed);
            // Pacing, not synchronisation: a steady trickle of requests across the rotation.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (ok, failed)
    });
    // Rotate once requests are flowing under the first issuer.
    assert_eventually!(
        served.load(Ordering::Relaxed) >= 10,
        "requests flow before the rotation"
    );
    pki.issue_from(1);
    assert_eventually!(
        cp.metric(r#"weft_identity_file_reloads_total{file="issuer",result="applied"}"#)
            .await
            == Some(1.0),
        "the control plane took the new issuer"
    );
    let (ok, failed) = load.await.expect("load");
    assert!(
        failed.is_empty(),
        "{} requests failed: {failed:?}",
        failed.len()
    );
    assert!(ok > 50, "only {ok} requests ran");
    let issued = cp
        .metric("weft_identity_certificates_issued_total")
        .await
        .expect("issued");
    assert!(
        issued >= 4.0,
        "both proxies renewed under the new issuer: {issued}"
    );
}
