//! The echo app on real sockets (loopback, port 0): the JSON over HTTP/1.1 and h2c on one
//! port, delays as measured by the client, the retry simulator's statuses and resets, response
//! headers on demand, and shutdown.

use std::{
    io::ErrorKind,
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::oneshot,
    task::JoinHandle,
};
use weft_echo::{Echo, EchoIdentity, RetryCount, ServeError, Settings};

/// The most any one step of a test may take.
const PATIENCE: Duration = Duration::from_secs(10);

struct Running {
    addr: SocketAddr,
    echo: Echo,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl Running {
    async fn start(settings: Settings) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let echo = Echo::with_settings(
            EchoIdentity {
                namespace: "shop".into(),
                pod: "api-0".into(),
                service: Some("api".into()),
            },
            settings,
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = echo.clone();
        let task = tokio::spawn(async move {
            serving
                .serve(listener, async move {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Self {
            addr,
            echo,
            stop: Some(stop),
            task,
        })
    }

    /// Signals shutdown and waits (bounded) for `serve` to return; how long that took.
    async fn stop(mut self) -> Result<Duration> {
        let start = Instant::now();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(PATIENCE, &mut self.task)
            .await
            .context("serve did not return after shutdown")???;
        Ok(start.elapsed())
    }
}

async fn h1(addr: SocketAddr) -> Result<http1::SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    let (send, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(send)
}

async fn h2(addr: SocketAddr) -> Result<http2::SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    let (send, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(send)
}

fn get(target: &str) -> http::request::Builder {
    Request::get(target).header("host", "api.shop")
}

async fn send1(
    client: &mut http1::SendRequest<Empty<Bytes>>,
    req: http::request::Builder,
) -> Result<(Response<()>, Bytes)> {
    let req = req.body(Empty::new())?;
    let response = tokio::time::timeout(PATIENCE, async {
        let response = client.send_request(req).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok::<_, anyhow::Error>((Response::from_parts(parts, ()), body))
    })
    .await??;
    Ok(response)
}

async fn send2(
    client: &mut http2::SendRequest<Empty<Bytes>>,
    req: http::request::Builder,
) -> Result<(Response<()>, Bytes)> {
    let req = req.body(Empty::new())?;
    let response = tokio::time::timeout(PATIENCE, async {
        let response = client.send_request(req).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok::<_, anyhow::Error>((Response::from_parts(parts, ()), body))
    })
    .await??;
    Ok(response)
}

fn json(body: &Bytes) -> Result<Value> {
    serde_json::from_slice(body).with_context(|| format!("not JSON: {body:?}"))
}

#[tokio::test]
async fn http1_answers_the_echo_json() -> Result<()> {
    let echo = Running::start(Settings::default()).await?;
    let mut client = h1(echo.addr).await?;
    let (response, body) = send1(
        &mut client,
        get("/some/path?a=1&b=two")
            .header("x-multi", "one")
            .header("x-multi", "two")
            .header("accept", "*/*"),
    )
    .await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let json = json(&body)?;
    assert_eq!(json["path"], "/some/path?a=1&b=two");
    assert_eq!(json["host"], "api.shop");
    assert_eq!(json["method"], "GET");
    assert_eq!(json["proto"], "HTTP/1.1");
    assert_eq!(
        json["headers"]["X-Multi"],
        serde_json::json!(["one", "two"])
    );
    assert_eq!(json["headers"]["Accept"], serde_json::json!(["*/*"]));
    assert!(json["headers"].get("Host").is_none(), "{json}");
    assert_eq!(json["httpPort"], echo.addr.port().to_string());
    assert_eq!(json["namespace"], "shop");
    assert_eq!(json["pod"], "api-0");
    assert_eq!(json["service"], "api");
    assert_eq!(json["ingress"], "");
    // Keep-alive: the same connection answers again.
    let (response, _) = send1(&mut client, get("/again")).await?;
    assert_eq!(response.status(), StatusCode::OK);
    echo.stop().await?;
    Ok(())
}

#[tokio::test]
async fn h2c_on_the_same_port_answers_the_echo_json() -> Result<()> {
    let echo = Running::start(Settings::default()).await?;
    let mut client = h2(echo.addr).await?;
    let (response, body) = send2(
        &mut client,
        Request::get("http://api.shop:8080/h2/path?q=1")
            .header("x-multi", "one")
            .header("x-multi", "two"),
    )
    .await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let json = json(&body)?;
    assert_eq!(json["proto"], "HTTP/2.0");
    assert_eq!(json["path"], "/h2/path?q=1");
    assert_eq!(json["host"], "api.shop:8080");
    assert_eq!(json["method"], "GET");
    assert_eq!(
        json["headers"]["X-Multi"],
        serde_json::json!(["one", "two"])
    );
    assert_eq!(json["pod"], "api-0");
    // And HTTP/1.1 on the very same listener.
    let mut client = h1(echo.addr).await?;
    let (_, body) = send1(&mut client, get("/")).await?;
    assert_eq!(self::json(&body)?["proto"], "HTTP/1.1");
    echo.stop().await?;
    Ok(())
}

#[tokio::test]
async fn delay_is_measured_by_the_client_and_a_malformed_one_is_a_400() -> Result<()> {
    let echo = Running::start(Settings::default()).await?;
    let mut client = h1(echo.addr).await?;
    let start = Instant::now();
    let (response, _) = send1(&mut client, get("/?delay=300ms")).await?;
    let took = start.elapsed();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        took >= Duration::from_millis(300),
        "answered after {took:?}"
    );
    assert!(took < Duration::from_secs(5), "answered after {took:?}");

    let mut h2 = h2(echo.addr).await?;
    let start = Instant::now();
    let (response, _) = send2(&mut h2, Request::get("http://api.shop/?delay=0.2s")).await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(start.elapsed() >= Duration::from_millis(200));

    for bad in ["/?delay=soon", "/?delay=5", "/?delay=90s"] {
        let start = Instant::now();
        let (response, body) = send1(&mut client, get(bad)).await?;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert!(start.elapsed() < Duration::from_secs(5));
        let json = json(&body)?;
        assert_eq!(json["parameter"], "delay", "{bad}: {json}");
        assert!(json["message"]
            .as_str()
            .is_some_and(|m| m.contains("delay")));
    }
    echo.stop().await?;
    Ok(())
}

#[tokio::test]
async fn echo_set_header_sets_response_headers_on_both_protocols() -> Result<()> {
    let echo = Running::start(Settings::default()).await?;
    let mut client = h1(echo.addr).await?;
    let (response, _) = send1(
        &mut client,
        get("/").header("X-Echo-Set-Header", "X-Foo: bar, X-Other: 1"),
    )
    .await?;
    assert_eq!(response.headers()["x-foo"], "bar");
    assert_eq!(response.headers()["x-other"], "1");
    let mut client = h2(echo.addr).await?;
    let (response, _) = send2(
        &mut client,
        Request::get("http://api.shop/").header("x-echo-set-header", "X-Foo: h2"),
    )
    .await?;
    assert_eq!(response.headers()["x-foo"], "h2");
    echo.stop().await?;
    Ok(())
}

#[tokio::test]
async fn retry_fails_with_the_code_then_succeeds_and_counts_are_readable() -> Result<()> {
    let echo = Running::start(Settings::default()).await?;
    let mut client = h1(echo.addr).await?;
    let target = "/retry/route?uuid=7a0c&succeedAfter=2&responseCode=503";
    for attempt in 1..=2 {
        let (response, _) = send1(&mut client, get(target)).await?;
        assert_eq!(
            response.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "attempt {attempt}"
        );
    }
    let (response, body) = send1(&mut client, get(target)).await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json(&body)?["path"], target);
    let (_, body) = send1(&mut client, get("/retry-count?uuid=7a0c")).await?;
    assert_eq!(
        json(&body)?,
        serde_json::json!({"uuid": "7a0c", "attempts": 3, "failures": 2})
    );
    assert_eq!(
        echo.echo.retry_count("7a0c"),
        Some(RetryCount {
            attempts: 3,
            failures: 2
        })
    );

    // delayRetry delays each failure, as the client measures it.
    let target = "/retry/?uuid=slow&succeedAfter=1&responseCode=500&delayRetry=250ms";
    let start = Instant::now();
    let (response, _) = send1(&mut client, get(target)).await?;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(start.elapsed() >= Duration::from_millis(250));
    assert!(start.elapsed() < Duration::from_secs(5));
    let (response, _) = send1(&mut client, get(target)).await?;
    assert_eq!(response.status(), StatusCode::OK);
    echo.stop().await?;
    Ok(())
}

/// Writes one HTTP/1.1 request on a fresh connection and reads until the server closes:
/// `Ok(bytes)` after a FIN, the error after a reset.
async fn raw_http1(addr: SocketAddr, target: &str) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET {target} HTTP/1.1\r\nhost: api.shop\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut got = Vec::new();
    match tokio::time::timeout(PATIENCE, stream.read_to_end(&mut got)).await {
        Ok(result) => result.map(|_| got),
        Err(_) => Err(std::io::Error::new(
            ErrorKind::TimedOut,
            "no close within patience",
        )),
    }
}

#[tokio::test]
async fn retry_without_response_code_resets_the_http1_connection() -> Result<()> {
    let echo = Running::start(Settings::default()).await?;
    let target = "/retry/?uuid=reset&succeedAfter=2";
    for attempt in 1..=2 {
        match raw_http1(echo.addr, target).await {
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => bail!("attempt {attempt}: expected a reset, got {e}"),
            Ok(bytes) => bail!(
                "attempt {attempt}: expected a reset, got {:?}",
                String::from_utf8_lossy(&bytes)
            ),
        }
    }
    let answer = raw_http1(echo.addr, target).await?;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert_eq!(
        echo.echo.retry_count("reset"),
        Some(RetryCount {
            attempts: 3,
            failures: 2
        })
    );
    echo.stop().await?;
    Ok(())
}

#[tokio::test]
async fn retry_without_response_code_resets_only_the_h2_stream() -> Result<()> {
    let echo = Running::start(Settings::default()).await?;
    let mut client = h2(echo.addr).await?;
    let req = Request::get("http://api.shop/retry/?uuid=h2&succeedAfter=1").body(Empty::new())?;
    let failed = tokio::time::timeout(PATIENCE, client.send_request(req)).await?;
    let error = failed.err().context("expected the stream to be reset")?;
    assert!(
        format!("{error:?}").contains("INTERNAL_ERROR"),
        "expected RST_STREAM(INTERNAL_ERROR): {error:?}"
    );
    // The connection lives on: the next request on it is answered.
    let (response, _) = send2(
        &mut client,
        Request::get("http://api.shop/retry/?uuid=h2&succeedAfter=1"),
    )
    .await?;
    assert_eq!(response.status(), StatusCode::OK);
    echo.stop().await?;
    Ok(())
}

/// Waits, bounded, until the retry simulator has recorded `uuid`: the request is in the
/// server's hands.
async fn held(echo: &Echo, uuid: &str) -> Result<()> {
    let deadline = Instant::now() + PATIENCE;
    while echo.retry_count(uuid).is_none() {
        if Instant::now() > deadline {
            bail!("the echo never received the request with uuid {uuid}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish_then_returns() -> Result<()> {
    let echo = Running::start(Settings::default()).await?;
    // Idle connections of both protocols do not hold the drain up.
    let mut idle = h1(echo.addr).await?;
    send1(&mut idle, get("/")).await?;
    let mut idle2 = h2(echo.addr).await?;
    send2(&mut idle2, Request::get("http://api.shop/")).await?;
    let mut busy = h1(echo.addr).await?;
    // Through the retry simulator (never failing), so the test can see the server hold it.
    let in_flight = tokio::spawn(async move {
        send1(
            &mut busy,
            get("/retry/?uuid=busy&succeedAfter=0&delay=500ms"),
        )
        .await
    });
    held(&echo.echo, "busy").await?;
    let addr = echo.addr;
    let took = echo.stop().await?;
    let (response, _) = in_flight.await??;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        took < Duration::from_secs(2),
        "serve returned after {took:?}"
    );
    // Nothing listens any more.
    assert!(TcpStream::connect(addr).await.is_err());
    Ok(())
}

#[tokio::test]
async fn shutdown_cuts_requests_longer_than_the_drain() -> Result<()> {
    let echo = Running::start(Settings {
        drain_timeout: Duration::from_millis(200),
        ..Settings::default()
    })
    .await?;
    let mut client = h1(echo.addr).await?;
    let in_flight = tokio::spawn(async move {
        send1(
            &mut client,
            get("/retry/?uuid=long&succeedAfter=0&delay=50s"),
        )
        .await
    });
    held(&echo.echo, "long").await?;
    let took = echo.stop().await?;
    assert!(
        took < Duration::from_secs(3),
        "serve returned after {took:?}"
    );
    let outcome = tokio::time::timeout(PATIENCE, in_flight).await??;
    assert!(
        outcome.is_err(),
        "the cut request was answered: {outcome:?}"
    );
    Ok(())
}

#[tokio::test]
async fn serve_std_takes_a_std_listener() -> Result<()> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = Echo::new(EchoIdentity {
        namespace: "ns".into(),
        pod: "p".into(),
        service: None,
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn({
        let echo = echo.clone();
        async move {
            echo.serve_std(listener, async move {
                let _ = stopped.await;
            })
            .await
        }
    });
    let mut client = h1(addr).await?;
    let (_, body) = send1(&mut client, get("/")).await?;
    let json = json(&body)?;
    assert_eq!(json["pod"], "p");
    assert_eq!(json["service"], "");
    let _ = stop.send(());
    tokio::time::timeout(PATIENCE, task).await???;
    Ok(())
}

#[tokio::test]
async fn too_many_headers_are_refused_by_hyper_not_echoed() -> Result<()> {
    let echo = Running::start(Settings::default()).await?;
    let mut request = String::from("GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n");
    for i in 0..200 {
        request.push_str(&format!("x-h{i}: v\r\n"));
    }
    request.push_str("\r\n");
    let mut stream = TcpStream::connect(echo.addr).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut got)).await?;
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 431"), "{got}");
    echo.stop().await?;
    Ok(())
}
