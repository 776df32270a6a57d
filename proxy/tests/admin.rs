//! The admin server in-process: probes, metrics, shutdown.

mod support;

use weft_proxy::drain::Drained;

use support::{app::App, get, metric_value, request, TestProxy};
use weft_testkit::assert_eventually;

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
        r#"weft_requests_total{client_id="",direction="outbound",dst_endpoint="",dst_service="",route="",server_id="",status_code="200",tls="false"} 1"#,
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

#[tokio::test]
async fn without_redirection_the_redirect_check_keeps_the_proxy_unready_and_says_why() {
    // No iptables here: the check's connection is refused by a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let config = weft_proxy::Config::from_source(
        &[
            ("WEFT_OUTBOUND_PORT", "0".to_string()),
            ("WEFT_INBOUND_PORT", "0".into()),
            ("WEFT_ADMIN_PORT", "0".into()),
            ("WEFT_REDIRECT_CHECK", "100ms".into()),
            ("WEFT_REDIRECT_CHECK_PORT", port.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect::<std::collections::HashMap<_, _>>(),
    )
    .expect("config");
    let app = weft_proxy::build(config, None).await.expect("build");
    let (admin, drain, metrics) = (
        std::net::SocketAddr::from(([127, 0, 0, 1], app.addrs().admin.port())),
        app.drain(),
        app.metrics(),
    );
    let task = tokio::spawn(app.run());
    let refused = r#"weft_redirect_checks_total{family="ipv4",result="refused"}"#;
    let text = || String::from_utf8(metrics.encode().expect("encode")).expect("utf-8");
    assert_eventually!(
        metric_value(&text(), refused) >= Some(2.0),
        "two refused checks in\n{}",
        text()
    );
    assert_eq!(metric_value(&text(), "weft_redirect_verified"), Some(0.0));

    let (status, body) = get(admin, "/ready").await.expect("/ready");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with(&format!(
            "not ready: traffic redirection not verified: connecting to 127.0.0.1:{port} was \
             refused, so outbound traffic is not being redirected to this proxy"
        )),
        "{body}"
    );
    let (status, body) = get(admin, "/config").await.expect("/config");
    assert_eq!(status, 200);
    let view: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let check = &view["redirect_check"];
    assert_eq!(
        (&check["enabled"], &check["verified"]),
        (&true.into(), &false.into()),
        "{view}"
    );
    assert_eq!(check["interval_seconds"], 0.1);
    assert_eq!(
        check["addresses"][0]["address"],
        format!("127.0.0.1:{port}")
    );
    assert_eq!(check["addresses"][0]["result"], "refused");
    // The proxy's own probes are not app traffic.
    assert_eq!(
        metric_value(
            &text(),
            r#"weft_tcp_connections_opened_total{direction="outbound"}"#
        ),
        None,
        "{}",
        text()
    );

    drain.start();
    let drained = tokio::time::timeout(std::time::Duration::from_secs(10), task)
        .await
        .expect("the check does not hold up the drain")
        .expect("task")
        .expect("run");
    assert_eq!(drained, Drained::Clean);
}

#[tokio::test]
async fn with_the_redirect_check_off_there_is_no_redirect_metric() {
    let proxy = TestProxy::with(&[]).await;
    assert!(!proxy.metrics_text().contains("weft_redirect"));
    let (_, body) = get(proxy.admin(), "/config").await.expect("/config");
    let view: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        view["redirect_check"],
        serde_json::json!({ "enabled": false })
    );
}
