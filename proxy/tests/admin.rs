//! The admin server in-process: probes, metrics, shutdown.

#[macro_use]
mod support;

use weft_proxy::drain::Drained;

use support::{app::App, get, request, TestProxy};

#[tokio::test]
async fn probes_and_metrics() {
    let app = App::start().await;
    let proxy = TestProxy::to(app.addr).await;
    assert_eq!(
        get(proxy.admin(), "/live").await,
        Some((200, "live\n".into()))
    );
    assert_eq!(
        get(proxy.admin(), "/ready").await,
        Some((200, "ready\n".into()))
    );
    assert_eq!(get(proxy.admin(), "/nope").await.map(|(s, _)| s), Some(404));
    assert_eq!(
        request(proxy.admin(), "DELETE", "/metrics", "")
            .await
            .map(|(s, _)| s),
        Some(405)
    );
    assert_eq!(get(proxy.outbound(), "/").await, Some((200, "ok".into())));

    let (status, text) = get(proxy.admin(), "/metrics").await.expect("metrics");
    assert_eq!(status, 200);
    for series in [
        r#"weft_requests_total{client_id="",direction="outbound",dst_endpoint="",dst_service="",server_id="",status_code="200",tls="false"} 1"#,
        r#"weft_tcp_connections_opened_total{direction="outbound"} 1"#,
        "# TYPE weft_request_duration_seconds histogram",
        "# TYPE weft_tcp_bytes_total counter",
        r#"weft_build_info{version=""#,
    ] {
        assert!(text.contains(series), "missing {series} in\n{text}");
    }
}

#[tokio::test]
async fn post_shutdown_from_loopback_drains_and_stops() {
    let proxy = TestProxy::with(&[]).await;
    assert_eq!(
        get(proxy.admin(), "/shutdown").await.map(|(s, _)| s),
        Some(405)
    );
    assert_eq!(
        request(proxy.admin(), "POST", "/shutdown", "").await,
        Some((200, "shutdown\n".into()))
    );
    let drained = tokio::time::timeout(std::time::Duration::from_secs(10), proxy.task)
        .await
        .expect("stopped within 10s")
        .expect("task")
        .expect("run");
    assert_eq!(drained, Drained::Clean);
}

#[tokio::test]
async fn another_process_on_the_ipv6_outbound_port_is_a_start_error() {
    let Ok(squatter) = std::net::TcpListener::bind("[::1]:0") else {
        eprintln!("SKIPPED: no IPv6 loopback on this host");
        return;
    };
    let port = squatter.local_addr().expect("addr").port();
    let config = weft_proxy::Config::from_source(
        &[
            ("WEFT_OUTBOUND_PORT", port.to_string()),
            ("WEFT_INBOUND_PORT", "0".into()),
            ("WEFT_ADMIN_PORT", "0".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect::<std::collections::HashMap<_, _>>(),
    )
    .expect("config");
    let err = weft_proxy::build(config, None)
        .await
        .expect_err("[::1] port is taken");
    let msg = err.to_string();
    assert!(
        msg.contains("outbound") && msg.contains(&format!("[::1]:{port}")),
        "{msg}"
    );
}
