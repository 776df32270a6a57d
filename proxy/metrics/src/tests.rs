use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

fn text(m: &Metrics) -> String {
    String::from_utf8(m.encode().expect("encode")).expect("utf-8")
}

fn sample<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
}

#[test]
fn requests_and_connections_render_with_their_labels() {
    let m = Metrics::new("1.2.3").expect("metrics");
    m.request(
        Direction::Outbound,
        http::StatusCode::OK,
        Duration::from_millis(3),
    );
    m.request(
        Direction::Outbound,
        http::StatusCode::OK,
        Duration::from_millis(3),
    );
    m.request(
        Direction::Inbound,
        http::StatusCode::BAD_GATEWAY,
        Duration::from_millis(1),
    );
    let (socket, _peer) = tokio::io::duplex(64);
    let conn = m.accepted(Direction::Inbound, socket);
    assert_eq!(
        sample(
            &text(&m),
            r#"weft_tcp_connections_closed_total{direction="inbound"}"#
        ),
        Some("0")
    );
    drop(conn);
    let text = text(&m);
    assert_eq!(
        sample(
            &text,
            r#"weft_requests_total{client_id="",direction="outbound",dst_endpoint="",dst_service="",server_id="",status_code="200",tls="false"}"#
        ),
        Some("2"),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"weft_requests_total{client_id="",direction="inbound",dst_endpoint="",dst_service="",server_id="",status_code="502",tls="false"}"#
        ),
        Some("1")
    );
    assert_eq!(
        sample(
            &text,
            r#"weft_request_duration_seconds_bucket{client_id="",direction="outbound",dst_endpoint="",dst_service="",server_id="",status_code="200",tls="false",le="0.005"}"#
        ),
        Some("2")
    );
    assert_eq!(
        sample(
            &text,
            r#"weft_tcp_connections_opened_total{direction="inbound"}"#
        ),
        Some("1")
    );
    assert_eq!(
        sample(
            &text,
            r#"weft_tcp_connections_closed_total{direction="inbound"}"#
        ),
        Some("1")
    );
    assert_eq!(
        sample(&text, r#"weft_build_info{version="1.2.3"}"#),
        Some("1")
    );
    assert!(text.contains("# TYPE weft_request_duration_seconds histogram"));
}

#[test]
fn unusual_statuses_and_unused_series() {
    let m = Metrics::new("t").expect("metrics");
    let odd = http::StatusCode::from_u16(799).expect("status");
    m.request(Direction::Inbound, odd, Duration::from_millis(1));
    m.request(Direction::Inbound, odd, Duration::from_millis(1));
    m.request(
        Direction::Outbound,
        http::StatusCode::NOT_FOUND,
        Duration::from_millis(1),
    );
    let text = text(&m);
    assert_eq!(
        sample(
            &text,
            r#"weft_requests_total{client_id="",direction="inbound",dst_endpoint="",dst_service="",server_id="",status_code="799",tls="false"}"#
        ),
        Some("2")
    );
    assert_eq!(
        sample(
            &text,
            r#"weft_requests_total{client_id="",direction="outbound",dst_endpoint="",dst_service="",server_id="",status_code="404",tls="false"}"#
        ),
        Some("1")
    );
    // Cached handles exist only once used: no zero-valued series for every status.
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("weft_requests_total{"))
            .count(),
        2,
        "{text}"
    );
}

#[test]
fn detect_timeout_ports_are_bounded() {
    let m = Metrics::new("t").expect("metrics");
    for port in 0..(MAX_PORT_LABELS as u16 + 10) {
        m.detect_timeout(Direction::Outbound, 1000 + port);
    }
    m.detect_timeout(Direction::Outbound, 1000);
    let text = text(&m);
    let series = text
        .lines()
        .filter(|l| l.starts_with("weft_protocol_detect_timeouts_total{"))
        .count();
    assert_eq!(series, MAX_PORT_LABELS + 1, "{text}");
    assert_eq!(
        sample(
            &text,
            r#"weft_protocol_detect_timeouts_total{direction="outbound",port="1000"}"#
        ),
        Some("2")
    );
    assert_eq!(
        sample(
            &text,
            r#"weft_protocol_detect_timeouts_total{direction="outbound",port="other"}"#
        ),
        Some("10")
    );
}

#[tokio::test]
async fn metered_io_counts_both_ways() {
    let m = Metrics::new("t").expect("metrics");
    let (a, mut b) = tokio::io::duplex(1024);
    let mut io = m.accepted(Direction::Inbound, a);
    b.write_all(b"12345").await.expect("write");
    let mut buf = [0u8; 5];
    io.read_exact(&mut buf).await.expect("read");
    io.write_all(b"abc").await.expect("write");
    let text = text(&m);
    assert_eq!(
        sample(
            &text,
            r#"weft_tcp_bytes_total{direction="inbound",flow="to_server"}"#
        ),
        Some("5")
    );
    assert_eq!(
        sample(
            &text,
            r#"weft_tcp_bytes_total{direction="inbound",flow="to_client"}"#
        ),
        Some("3")
    );
}

#[test]
fn redirect_check_series_exist_only_once_enabled() {
    let m = Metrics::new("t").expect("metrics");
    m.redirect_verified(true);
    m.redirect_probe(Family::Ipv4, RedirectResult::Verified);
    let before = text(&m);
    assert!(!before.contains("weft_redirect"), "{before}");

    m.enable_redirect_check().expect("enable");
    m.enable_redirect_check()
        .expect("a second call does nothing");
    m.redirect_probe(Family::Ipv6, RedirectResult::WrongAnswer);
    let page = text(&m);
    assert_eq!(
        sample(&page, "weft_redirect_verified "),
        Some("1"),
        "{page}"
    );
    assert_eq!(
        sample(
            &page,
            r#"weft_redirect_checks_total{family="ipv4",result="verified"}"#
        ),
        Some("1")
    );
    assert_eq!(
        sample(
            &page,
            r#"weft_redirect_checks_total{family="ipv6",result="wrong_answer"}"#
        ),
        Some("1")
    );
    assert_eq!(
        page.lines()
            .filter(|l| l.starts_with("weft_redirect_checks_total{"))
            .count(),
        Family::ALL.len() * RedirectResult::ALL.len(),
        "every family and result from the start: {page}"
    );
    m.redirect_verified(false);
    assert_eq!(sample(&text(&m), "weft_redirect_verified "), Some("0"));
}
