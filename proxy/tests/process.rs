//! The proxy binary as operators run it: configuration errors, signals and drain, memory,
//! and run-time log control.

mod support;

use std::{process::Command, time::Duration};

use bytes::Bytes;
use futures_util::stream;
use http::Request;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use nix::sys::signal::Signal;
use tokio::net::TcpStream;

use support::{app::App, process::ProxyProcess, request};
use weft_testkit::assert_eventually;

#[test]
fn a_bad_setting_exits_64_with_one_line_naming_it() {
    for (key, value) in [
        ("WEFT_OUTBOUND_PORT", "not-a-port"),
        ("WEFT_SHUTDOWN_GRACE", "forever"),
        ("WEFT_LOG_FORMAT", "yaml"),
        ("WEFT_OPAQUE_PORTS", "25,,587"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_weft-proxy"))
            .env_clear()
            .env(key, value)
            .output()
            .expect("run weft-proxy");
        assert_eq!(out.status.code(), Some(64), "{key}={value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(key) && stderr.contains(value), "{stderr}");
        assert!(
            out.stdout.is_empty(),
            "nothing started: {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_weft-proxy"))
        .arg("--no-such-flag")
        .output()
        .expect("run weft-proxy");
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn unusable_trust_anchors_exit_64_before_a_port_is_bound() {
    let dir = tempfile::tempdir().expect("temp dir");
    let garbage = dir.path().join("anchors.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let token = dir.path().join("token");
    std::fs::write(&token, "t\n").expect("write");
    for anchors in [garbage, dir.path().join("missing.pem")] {
        let out = Command::new(env!("CARGO_BIN_EXE_weft-proxy"))
            .env_clear()
            .env("WEFT_CONTROL_PLANE", "127.0.0.1:1")
            .env("WEFT_TRUST_ANCHORS", &anchors)
            .env("WEFT_IDENTITY_TOKEN_FILE", &token)
            .env("WEFT_NAMESPACE", "ns")
            .env("WEFT_SERVICE_ACCOUNT", "sa")
            .env("WEFT_OUTBOUND_PORT", "0")
            .env("WEFT_INBOUND_PORT", "0")
            .env("WEFT_ADMIN_PORT", "0")
            .output()
            .expect("run weft-proxy");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(64), "{anchors:?}: {stderr}");
        assert!(
            stderr.contains("WEFT_TRUST_ANCHORS") && stderr.contains(&*anchors.to_string_lossy()),
            "{stderr}"
        );
        assert!(!stdout.contains("listening"), "no port was bound: {stdout}");
    }
}

#[test]
fn help_lists_the_settings() {
    let out = Command::new(env!("CARGO_BIN_EXE_weft-proxy"))
        .arg("--help")
        .output()
        .expect("run weft-proxy");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("WEFT_OUTBOUND_TARGET (--outbound-target)"),
        "{help}"
    );
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_refuses_new_connections() {
    let mut app = App::start().await;
    let mut proxy = ProxyProcess::spawn(&[
        ("WEFT_OUTBOUND_TARGET", &app.addr.to_string()),
        ("WEFT_SHUTDOWN_GRACE", "30s"),
    ]);
    let outbound = proxy.outbound;
    let in_flight = tokio::spawn(async move { request(outbound, "GET", "/gate", "").await });
    let arrived = tokio::time::timeout(Duration::from_secs(10), app.arrivals.recv()).await;
    assert_eq!(
        arrived.expect("request reached the app").as_deref(),
        Some("/gate")
    );

    proxy.signal(Signal::SIGTERM);
    assert_eventually!(
        TcpStream::connect(outbound).await.is_err(),
        "new connections refused while draining; logs: {}",
        proxy.log_text()
    );
    assert_eq!(
        request(proxy.admin, "GET", "/ready", "")
            .await
            .map(|(s, _)| s),
        Some(503),
        "not ready while draining"
    );
    assert_eq!(
        proxy.wait_exit(Duration::from_millis(200)).await,
        None,
        "exited with a request in flight"
    );

    app.open_gate();
    let rsp = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("in-flight request completed")
        .expect("task");
    assert_eq!(rsp, Some((200, "gate opened".into())));
    let code = proxy.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(code, Some(0), "logs: {}", proxy.log_text());
}

#[tokio::test]
async fn the_grace_period_bounds_the_drain() {
    let app = App::start().await;
    let mut proxy = ProxyProcess::spawn(&[
        ("WEFT_OUTBOUND_TARGET", &app.addr.to_string()),
        ("WEFT_SHUTDOWN_GRACE", "300ms"),
    ]);
    let outbound = proxy.outbound;
    // Never released: the drain must give up on it.
    let _stuck = tokio::spawn(async move { request(outbound, "GET", "/gate", "").await });
    let mut arrivals = app.arrivals;
    tokio::time::timeout(Duration::from_secs(10), arrivals.recv())
        .await
        .expect("request reached the app");
    proxy.signal(Signal::SIGINT);
    let code = proxy.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(code, Some(0));
    assert!(
        proxy.log_text().contains("grace period over"),
        "{}",
        proxy.log_text()
    );
}

#[tokio::test]
async fn a_100_mib_body_streams_with_flat_memory() {
    const MIB: usize = 1024 * 1024;
    let app = App::start().await;
    let proxy = ProxyProcess::spawn(&[("WEFT_OUTBOUND_TARGET", &app.addr.to_string())]);
    let io = TokioIo::new(TcpStream::connect(proxy.outbound).await.expect("connect"));
    let (mut send, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .expect("handshake");
    tokio::spawn(conn);

    let mut upload = |mib: usize| {
        let chunk = Bytes::from(vec![b'u'; MIB]);
        let frames =
            (0..mib).map(move |_| Ok::<_, std::convert::Infallible>(Frame::data(chunk.clone())));
        let req = Request::post("/discard")
            .header("host", "sink")
            .body(StreamBody::new(stream::iter(frames)))
            .expect("req");
        send.send_request(req)
    };
    // Warm up: pools, buffers and allocator arenas reach their working size.
    let rsp = upload(4).await.expect("warm-up upload");
    assert_eq!(
        rsp.into_body().collect().await.expect("body").to_bytes(),
        (4 * MIB).to_string()
    );
    let before = proxy.status_kib("VmHWM");

    let rsp = upload(100).await.expect("upload");
    assert_eq!(
        rsp.into_body().collect().await.expect("body").to_bytes(),
        (100 * MIB).to_string()
    );

    let io = TokioIo::new(TcpStream::connect(proxy.outbound).await.expect("connect"));
    let (mut send, conn) = hyper::client::conn::http1::handshake::<_, Full<Bytes>>(io)
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let rsp = send
        .send_request(
            Request::get(format!("/bytes/{}", 100 * MIB))
                .header("host", "src")
                .body(Full::default())
                .expect("req"),
        )
        .await
        .expect("download");
    let mut body = rsp.into_body();
    let mut total = 0;
    while let Some(frame) = body.frame().await {
        total += frame.expect("frame").data_ref().map_or(0, Bytes::len);
    }
    assert_eq!(total, 100 * MIB);

    let after = proxy.status_kib("VmHWM");
    let growth_mib = after.saturating_sub(before) as f64 / 1024.0;
    eprintln!("proxy peak RSS {before} KiB -> {after} KiB over 200 MiB streamed");
    assert!(
        growth_mib < 16.0,
        "peak RSS grew {growth_mib:.1} MiB while streaming 100 MiB each way: bodies are being buffered"
    );
}

#[tokio::test]
async fn log_level_changes_at_run_time_from_loopback() {
    // The harness finds the ports in the `listening` line, logged at info by weft_proxy::app.
    let filter = "warn,weft_proxy::app=info";
    let proxy = ProxyProcess::spawn(&[("WEFT_LOG", filter)]);
    assert_eq!(
        request(proxy.admin, "GET", "/log-level", "").await,
        Some((200, format!("{filter}\n")))
    );
    assert_eq!(
        request(proxy.admin, "PUT", "/log-level", "info,weft_proxy=debug").await,
        Some((200, "info,weft_proxy=debug\n".into()))
    );
    assert_eq!(
        request(proxy.admin, "GET", "/log-level", "").await,
        Some((200, "info,weft_proxy=debug\n".into()))
    );
    let (status, _) = request(proxy.admin, "PUT", "/log-level", "info,[[")
        .await
        .expect("response");
    assert_eq!(status, 400);
    assert_eq!(
        request(proxy.admin, "GET", "/log-level", "").await,
        Some((200, "info,weft_proxy=debug\n".into())),
        "a bad filter leaves the old one in force"
    );
}

#[test]
fn await_ready_returns_once_the_pods_proxy_is_ready_and_fails_when_there_is_none() {
    let await_ready = |port: u16, timeout: &str| {
        Command::new(env!("CARGO_BIN_EXE_weft-proxy"))
            .env_clear()
            .env("WEFT_ADMIN_PORT", port.to_string())
            .args(["await-ready", "--timeout", timeout])
            .output()
            .expect("run weft-proxy await-ready")
    };
    // Without a control plane the proxy is ready as soon as it listens.
    let proxy = ProxyProcess::spawn(&[("WEFT_OUTBOUND_TARGET", "127.0.0.1:9")]);
    let port = proxy.admin.port();
    let out = await_ready(port, "10s");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("ready after"));

    // Gone: it gives up after its timeout, saying so.
    drop(proxy);
    let started = std::time::Instant::now();
    let out = await_ready(port, "600ms");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not ready"),
        "{out:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// What `/proc` shows of a running proxy: its environment block (NULs as newlines) and its
/// name. glibc writes a NUL after each tunable value it reads into the block itself, so
/// `GLIBC_TUNABLES=a=1:b=2` reads there as `GLIBC_TUNABLES=a=1` and `b=2` (the process's own
/// `getenv` sees a whole copy).
fn environ_and_name(proxy: &ProxyProcess) -> (String, String) {
    let pid = proxy.child.id();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    let environ = String::from_utf8_lossy(&environ).replace('\0', "\n");
    let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).expect("comm");
    (environ, name.trim().to_string())
}

#[tokio::test]
async fn on_amd_the_proxy_starts_again_with_memcpy_tuned_and_serves_under_its_name() {
    use weft_proxy::memcpy::{cpu_is_amd, THRESHOLD, TUNABLE};
    let app = App::start().await;
    let proxy = ProxyProcess::spawn(&[("WEFT_OUTBOUND_TARGET", &app.addr.to_string())]);
    let (environ, name) = environ_and_name(&proxy);
    // The same process (the PID this test started), named as before the restart.
    assert_eq!(name, "weft-proxy");
    let ours = format!("GLIBC_TUNABLES={TUNABLE}={THRESHOLD}");
    if cpu_is_amd() && cfg!(target_env = "gnu") {
        assert!(environ.lines().any(|l| l == ours), "{environ}");
    } else {
        assert!(
            !environ.contains("GLIBC_TUNABLES"),
            "left alone off AMD: {environ}"
        );
    }
    let res = request(proxy.outbound, "GET", "/tuned", "").await;
    assert_eq!(res.map(|(s, _)| s), Some(200), "served after the restart");

    // An operator's value is kept as given (no restart), other tunables with it.
    let given = format!("glibc.malloc.arena_max=2:{TUNABLE}=4096");
    let proxy = ProxyProcess::spawn(&[
        ("WEFT_OUTBOUND_TARGET", &app.addr.to_string()),
        ("GLIBC_TUNABLES", &given),
    ]);
    let (environ, name) = environ_and_name(&proxy);
    assert_eq!(name, "weft-proxy");
    assert!(
        environ.contains("GLIBC_TUNABLES=glibc.malloc.arena_max=2")
            && environ.contains(&format!("{TUNABLE}=4096"))
            && !environ.contains(&format!("={THRESHOLD}")),
        "{environ}"
    );
}
