//! The handler on its own: no sockets, and paused time for every delay, so a 30-second delay
//! is checked exactly and at once.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use http_body::Frame;
use serde_json::Value;
use tokio::time::Instant;

use super::*;
use crate::retry::RetryCounters;

fn shared() -> Shared {
    shared_with(Settings::default())
}

fn shared_with(settings: Settings) -> Shared {
    Shared {
        identity: EchoIdentity {
            namespace: "shop".into(),
            pod: "api-0".into(),
            service: Some("api".into()),
        },
        retries: Mutex::new(RetryCounters::new(settings.retry_capacity)),
        settings,
    }
}

fn get(target: &str) -> Request<Full<Bytes>> {
    Request::get(target)
        .header("host", "api.shop")
        .body(Full::new(Bytes::new()))
        .expect("a valid request")
}

async fn call(shared: &Shared, req: Request<Full<Bytes>>) -> Response<Full<Bytes>> {
    match answer(shared, 8080, &CancellationToken::new(), req).await {
        Answer::Respond(response) => response,
        Answer::Reset => panic!("expected a response, got a reset"),
    }
}

async fn body_json(response: Response<Full<Bytes>>) -> Value {
    let bytes = response
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_else(|never| match never {});
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {bytes:?}"))
}

#[tokio::test]
async fn the_echo_describes_the_request_as_echo_basic_does() {
    let shared = shared();
    let req = Request::post("/a/b?x=1&y=%20")
        .header("host", "api.shop:80")
        .header("accept", "*/*")
        .header("x-multi", "one")
        .header("x-multi", "two")
        .header("user-agent", "test")
        .body(Full::new(Bytes::from_static(b"ignored")))
        .expect("request");
    let response = call(&shared, req).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    let json = body_json(response).await;
    assert_eq!(
        json,
        serde_json::json!({
            "path": "/a/b?x=1&y=%20",
            "host": "api.shop:80",
            "method": "POST",
            "proto": "HTTP/1.1",
            "headers": {
                "Accept": ["*/*"],
                "User-Agent": ["test"],
                "X-Multi": ["one", "two"],
            },
            "httpPort": "8080",
            "namespace": "shop",
            "ingress": "",
            "service": "api",
            "pod": "api-0",
        })
    );
}

#[tokio::test]
async fn the_json_is_indented_as_go_indents_it() {
    let response = call(&shared(), get("/")).await;
    let bytes = response
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_else(|never| match never {});
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.starts_with("{\n \"path\": \"/\",\n \"host\""),
        "{text}"
    );
    // Field order is echo-basic's.
    let order = [
        "\"path\"",
        "\"host\"",
        "\"method\"",
        "\"proto\"",
        "\"headers\"",
        "\"httpPort\"",
        "\"namespace\"",
        "\"ingress\"",
        "\"service\"",
        "\"pod\"",
    ];
    let positions: Vec<usize> = order.iter().filter_map(|f| text.find(f)).collect();
    assert_eq!(positions.len(), order.len(), "{text}");
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
}

#[tokio::test]
async fn an_unset_service_is_empty_and_absolute_targets_are_kept_whole() {
    let mut shared = shared();
    shared.identity.service = None;
    let req = Request::get("http://other.host:81/p?q")
        .header("host", "ignored")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let json = body_json(call(&shared, req).await).await;
    assert_eq!(json["service"], "");
    assert_eq!(json["path"], "http://other.host:81/p?q");
    assert_eq!(json["host"], "other.host:81");
}

#[tokio::test(start_paused = true)]
async fn delay_waits_that_long_before_answering() {
    let shared = shared();
    for (query, expected) in [
        ("delay=30s", Duration::from_secs(30)),
        ("delay=1.5s", Duration::from_millis(1500)),
        ("delay=250ms", Duration::from_millis(250)),
        ("delay=", Duration::ZERO),
        ("other=1s", Duration::ZERO),
    ] {
        let start = Instant::now();
        let response = call(&shared, get(&format!("/?{query}"))).await;
        assert_eq!(response.status(), StatusCode::OK, "{query}");
        assert_eq!(start.elapsed(), expected, "{query}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_malformed_or_too_long_delay_is_a_400_naming_it_and_no_wait() {
    let shared = shared();
    for query in [
        "delay=abc",
        "delay=10",
        "delay=61s",
        "delay=1h",
        "delay=%zz",
        "delayRetry=1s&delay=x",
    ] {
        let start = Instant::now();
        let response = call(&shared, get(&format!("/?{query}"))).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(start.elapsed(), Duration::ZERO, "{query}");
        let json = body_json(response).await;
        assert_eq!(json["parameter"], "delay", "{query}: {json}");
        let message = json["message"].as_str().unwrap_or_default();
        assert!(message.starts_with("delay: "), "{query}: {message}");
    }
}

#[tokio::test]
async fn echo_set_header_sets_response_headers_but_not_the_content_type() {
    let shared = shared();
    let req = Request::get("/")
        .header(SET_HEADER, "X-Foo: bar, X-Baz:qux")
        .header(SET_HEADER, "x-foo: again, Content-Type: text/plain")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = call(&shared, req).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-foo"], "bar,again");
    assert_eq!(response.headers()["x-baz"], "qux");
    assert_eq!(response.headers()["content-type"], "application/json");
    // The request header itself is echoed like any other.
    let json = body_json(response).await;
    assert_eq!(
        json["headers"]["X-Echo-Set-Header"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    let req = Request::get("/")
        .header(SET_HEADER, "Content-Length: 1")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = call(&shared, req).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body_json(response).await["parameter"], "X-Echo-Set-Header");
}

#[tokio::test]
async fn retry_fails_succeed_after_times_with_the_code_then_echoes() {
    let shared = shared();
    let target = "/retry/x?uuid=u1&succeedAfter=2&responseCode=503";
    for _ in 0..2 {
        let response = call(&shared, get(target)).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let response = call(&shared, get(target)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_json(response).await["path"], target);
    assert_eq!(
        shared.retry_count("u1"),
        Some(RetryCount {
            attempts: 3,
            failures: 2
        })
    );
    // Another uuid starts from zero.
    let other = "/retry/x?uuid=u2&succeedAfter=1&responseCode=500";
    assert_eq!(
        call(&shared, get(other)).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(call(&shared, get(other)).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn retry_without_response_code_resets() {
    let shared = shared();
    let target = "/retry/?uuid=r&succeedAfter=1";
    let first = answer(&shared, 80, &CancellationToken::new(), get(target)).await;
    assert!(matches!(first, Answer::Reset), "{first:?}");
    assert_eq!(call(&shared, get(target)).await.status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn delay_retry_delays_the_failures_only() {
    let shared = shared();
    let target = "/retry/?uuid=d&succeedAfter=1&responseCode=500&delayRetry=2s";
    let start = Instant::now();
    assert_eq!(
        call(&shared, get(target)).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    let start = Instant::now();
    assert_eq!(call(&shared, get(target)).await.status(), StatusCode::OK);
    assert_eq!(start.elapsed(), Duration::ZERO);
    // And `delay` delays the success, as the echo's own delay.
    let target = "/retry/?uuid=d2&succeedAfter=0&delay=3s&delayRetry=1s";
    let start = Instant::now();
    assert_eq!(call(&shared, get(target)).await.status(), StatusCode::OK);
    assert_eq!(start.elapsed(), Duration::from_secs(3));
}

#[tokio::test]
async fn bad_retry_parameters_are_400s_naming_them_and_cost_no_attempt() {
    let shared = shared();
    for (query, parameter) in [
        ("succeedAfter=1", "uuid"),
        ("uuid=&succeedAfter=1", "uuid"),
        ("uuid=b", "succeedAfter"),
        ("uuid=b&succeedAfter=-1", "succeedAfter"),
        ("uuid=b&succeedAfter=two", "succeedAfter"),
        ("uuid=b&succeedAfter=1&responseCode=abc", "responseCode"),
        ("uuid=b&succeedAfter=1&responseCode=100", "responseCode"),
        ("uuid=b&succeedAfter=1&responseCode=600", "responseCode"),
        ("uuid=b&succeedAfter=1&delayRetry=soon", "delayRetry"),
        ("uuid=b&succeedAfter=1&delayRetry=2m", "delayRetry"),
        ("uuid=b&succeedAfter=1&delay=2m", "delay"),
    ] {
        let response = call(&shared, get(&format!("/retry/?{query}"))).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        let json = body_json(response).await;
        assert_eq!(json["parameter"], parameter, "{query}: {json}");
    }
    assert_eq!(shared.retry_count("b"), None);
    let long = "u".repeat(MAX_UUID_LEN + 1);
    let response = call(&shared, get(&format!("/retry/?uuid={long}&succeedAfter=1"))).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn retry_count_reads_the_counts_of_a_uuid() {
    let shared = shared();
    let target = "/retry/?uuid=c&succeedAfter=1&responseCode=502";
    call(&shared, get(target)).await;
    call(&shared, get(target)).await;
    let json = body_json(call(&shared, get("/retry-count?uuid=c")).await).await;
    assert_eq!(
        json,
        serde_json::json!({"uuid": "c", "attempts": 2, "failures": 1})
    );
    let json = body_json(call(&shared, get("/retry-count?uuid=never")).await).await;
    assert_eq!(
        json,
        serde_json::json!({"uuid": "never", "attempts": 0, "failures": 0})
    );
    let response = call(&shared, get("/retry-count")).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_retry_simulator_forgets_the_oldest_uuid_past_its_capacity() {
    let shared = shared_with(Settings {
        retry_capacity: 2,
        ..Settings::default()
    });
    for uuid in ["a", "b", "c"] {
        call(
            &shared,
            get(&format!(
                "/retry/?uuid={uuid}&succeedAfter=1&responseCode=500"
            )),
        )
        .await;
    }
    assert_eq!(shared.retry_count("a"), None);
    assert!(shared.retry_count("b").is_some() && shared.retry_count("c").is_some());
    // "a" forgotten: it fails again, as a new uuid.
    let response = call(
        &shared,
        get("/retry/?uuid=a&succeedAfter=1&responseCode=500"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn health_and_status_answer_as_echo_basic() {
    let shared = shared();
    let response = call(&shared, get("/health")).await;
    assert_eq!(response.status(), StatusCode::OK);
    for (target, status) in [
        ("/status/200", 200),
        ("/status/404", 404),
        ("/status/503", 503),
        ("//status/418", 400),
        ("/status/20", 400),
        ("/status/2000", 400),
        ("/status/abc", 400),
        ("/status/100", 400),
        ("/status/200?x=1", 400),
    ] {
        assert_eq!(
            call(&shared, get(target)).await.status().as_u16(),
            status,
            "{target}"
        );
    }
    // Routing collapses repeated slashes; the echoed path does not.
    let json = body_json(call(&shared, get("//a//b")).await).await;
    assert_eq!(json["path"], "//a//b");
    assert_eq!(
        call(&shared, get("//health")).await.status(),
        StatusCode::OK
    );
}

/// A body that never ends, counting what it handed out.
struct Endless {
    produced: Arc<AtomicU64>,
}

impl Body for Endless {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.produced.fetch_add(1024, Ordering::Relaxed);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&[b'x'; 1024])))))
    }
}

#[tokio::test]
async fn an_endless_body_is_read_only_up_to_the_bound() {
    let shared = shared_with(Settings {
        max_body_bytes: 64 * 1024,
        ..Settings::default()
    });
    let produced = Arc::new(AtomicU64::new(0));
    let req = Request::post("/")
        .body(Endless {
            produced: produced.clone(),
        })
        .expect("request");
    let Answer::Respond(response) = answer(&shared, 80, &CancellationToken::new(), req).await
    else {
        panic!("expected a response");
    };
    assert_eq!(response.status(), StatusCode::OK);
    let read = produced.load(Ordering::Relaxed);
    assert!((64 * 1024..=65 * 1024).contains(&read), "read {read} bytes");
}

#[tokio::test(start_paused = true)]
async fn abort_cuts_a_delay_short_with_a_reset() {
    let shared = shared();
    let abort = CancellationToken::new();
    let start = Instant::now();
    let waiting = answer(&shared, 80, &abort, get("/?delay=50s"));
    let cut = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        abort.cancel();
    };
    let (answer, ()) = tokio::join!(waiting, cut);
    assert!(matches!(answer, Answer::Reset), "{answer:?}");
    assert_eq!(start.elapsed(), Duration::from_secs(1));
}
