use std::{
    collections::{HashMap, VecDeque},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
};

use tokio::net::TcpListener;

use super::*;

const V4: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 15141);
const V6: SocketAddr = SocketAddr::new(std::net::IpAddr::V6(Ipv6Addr::LOCALHOST), 15141);

fn token() -> Token {
    Token::random().expect("random bytes")
}

fn text(m: &Metrics) -> String {
    String::from_utf8(m.encode().expect("encode")).expect("utf-8")
}

fn sample(text: &str, series: &str) -> Option<String> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')
            .map(str::to_string)
    })
}

#[test]
fn tokens_are_random_hex() {
    let (a, b) = (token(), token());
    assert_ne!(a, b);
    assert_eq!(a.as_bytes().len(), 32);
    assert!(a
        .as_bytes()
        .iter()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert_eq!(
        Token::from_bytes([0x01, 0xab, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10]).as_bytes(),
        b"01abff00000000000000000000000010"
    );
    assert_eq!(format!("{a:?}"), "Token(..)");
}

#[test]
fn only_the_two_loopback_addresses_on_the_check_port_are_recognised() {
    let check = CheckAddr::new(15141, token());
    assert!(check.is_check(V4));
    assert!(check.is_check(V6));
    for other in [
        "127.0.0.2:15141",
        "198.18.0.10:15141",
        "[::ffff:127.0.0.1]:15141",
        "127.0.0.1:15140",
        "[::1]:8080",
    ] {
        assert!(!check.is_check(other.parse().expect("addr")), "{other}");
    }
    assert_eq!(check.targets(false), [V4]);
    assert_eq!(check.targets(true), [V4, V6]);
}

/// A listener on 127.0.0.1:0 that treats every connection with `serve`.
async fn listener<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = l.accept().await {
            tokio::spawn(serve(stream));
        }
    });
    addr
}

#[tokio::test]
async fn probes_tell_the_outbound_listener_from_anything_else() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    let ours = Arc::new(CheckAddr::new(15141, token()));
    let probe = ours.probe(15140, TIMEOUT);

    // The stand-in for the outbound listener answers with the code the listener runs.
    let answering = ours.clone();
    let outbound = listener(move |s| {
        let check = answering.clone();
        async move { check.answer(s).await.expect("answer") }
    })
    .await;
    probe
        .probe(outbound)
        .await
        .expect("our own listener is verified");

    let refused = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let err = probe.probe(refused).await.expect_err("nothing listens");
    assert_eq!(err.result(), RedirectResult::Refused);
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "connecting to {refused} was refused, so outbound traffic is not being redirected"
        )),
        "{msg}"
    );
    assert!(
        msg.contains("weft-init or weft-cni") && msg.contains("nat table"),
        "{msg}"
    );

    // Another proxy process (another token), and a listener speaking some other protocol.
    let theirs = Arc::new(CheckAddr::new(15141, token()));
    let other_proxy = listener(move |s| {
        let check = theirs.clone();
        async move { check.answer(s).await.expect("answer") }
    })
    .await;
    let http = listener(|mut s| async move {
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
    })
    .await;
    for addr in [other_proxy, http] {
        let err = probe.probe(addr).await.expect_err("not our token");
        assert_eq!(err.result(), RedirectResult::WrongAnswer, "{addr}: {err}");
        assert!(err.to_string().contains("not this proxy's token"), "{err}");
        assert!(err.to_string().contains("outbound port 15140"), "{err}");
    }

    let closes = listener(|s| async move { drop(s) }).await;
    let err = probe.probe(closes).await.expect_err("closed");
    assert_eq!(err.result(), RedirectResult::WrongAnswer);
    assert!(
        err.to_string()
            .contains("closed the connection without answering"),
        "{err}"
    );

    let silent = listener(|s| async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(s);
    })
    .await;
    let start = Instant::now();
    let err = probe.probe(silent).await.expect_err("silent");
    assert_eq!(err.result(), RedirectResult::Timeout);
    assert!(
        err.to_string().contains("sent no answer within 300ms"),
        "{err}"
    );
    let took = start.elapsed();
    assert!(took >= TIMEOUT && took < TIMEOUT * 5, "{took:?}");
}

#[test]
fn a_transition_is_logged_once() {
    let failed = |result| State::Failed {
        result,
        error: "e".into(),
    };
    let refused = failed(RedirectResult::Refused);
    let timeout = failed(RedirectResult::Timeout);
    for (before, after, want) in [
        (&State::Pending, &State::Verified, Some(Transition::Passed)),
        (&State::Verified, &State::Verified, None),
        (&State::Pending, &refused, Some(Transition::Failed)),
        (&State::Verified, &refused, Some(Transition::Failed)),
        (&refused, &refused, None),
        (&refused, &timeout, Some(Transition::Failed)),
        (&timeout, &State::Verified, Some(Transition::Recovered)),
    ] {
        assert_eq!(transition(before, after), want, "{before:?} -> {after:?}");
    }
}

/// Scripted outcomes per address (the last one repeats), with every call's time recorded.
#[derive(Debug, Default)]
struct Scripted {
    script: Mutex<HashMap<SocketAddr, VecDeque<bool>>>,
    calls: Mutex<Vec<(Duration, SocketAddr)>>,
    delay: Duration,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    start: Option<Instant>,
}

impl Scripted {
    fn new(delay: Duration, script: &[(SocketAddr, &[bool])]) -> Arc<Self> {
        Arc::new(Self {
            script: Mutex::new(
                script
                    .iter()
                    .map(|(a, s)| (*a, s.iter().copied().collect()))
                    .collect(),
            ),
            delay,
            start: Some(Instant::now()),
            ..Self::default()
        })
    }

    fn call_times(&self) -> Vec<Duration> {
        let calls = self.calls.lock().expect("calls");
        calls.iter().map(|(t, _)| *t).collect()
    }
}

impl Probe for Arc<Scripted> {
    async fn probe(&self, addr: SocketAddr) -> Result<(), ProbeError> {
        let start = self.start.expect("started");
        self.calls
            .lock()
            .expect("calls")
            .push((start.elapsed(), addr));
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let ok = {
            let mut script = self.script.lock().expect("script");
            let steps = script.get_mut(&addr).expect("a scripted address");
            if steps.len() > 1 {
                steps.pop_front()
            } else {
                steps.front().copied()
            }
        };
        if ok.expect("a step") {
            Ok(())
        } else {
            Err(ProbeError::Refused { addr })
        }
    }
}

fn scripted_checker(
    probe: Arc<Scripted>,
    interval: Duration,
    targets: &[SocketAddr],
) -> Checker<Arc<Scripted>> {
    let metrics = Arc::new(Metrics::new("t").expect("metrics"));
    metrics.enable_redirect_check().expect("enable");
    Checker {
        probe,
        interval,
        status: Arc::new(RedirectStatus::new(interval, targets)),
        metrics,
    }
}

#[tokio::test(start_paused = true)]
async fn checks_at_start_then_every_interval_one_probe_at_a_time() {
    let probe = Scripted::new(Duration::ZERO, &[(V4, &[true])]);
    let checker = scripted_checker(probe.clone(), Duration::from_secs(5), &[V4]);
    let stop = CancellationToken::new();
    let task = tokio::spawn(checker.run(stop.clone()));
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(
        probe.call_times(),
        [Duration::ZERO],
        "the first check is at start"
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        probe.call_times(),
        [0, 5, 10].map(Duration::from_secs),
        "then one per interval"
    );
    stop.cancel();
    task.await.expect("the checker stops when told");

    // Probes slower than the interval: never two at once, and the next check follows the slow
    // one instead of piling up.
    let probe = Scripted::new(Duration::from_secs(7), &[(V4, &[true]), (V6, &[true])]);
    let checker = scripted_checker(probe.clone(), Duration::from_secs(5), &[V4, V6]);
    let stop = CancellationToken::new();
    let task = tokio::spawn(checker.run(stop.clone()));
    tokio::time::sleep(Duration::from_secs(30)).await;
    stop.cancel();
    task.await.expect("the checker stops mid-probe");
    assert_eq!(
        probe.call_times(),
        [0, 7, 14, 21, 28].map(Duration::from_secs)
    );
    assert_eq!(probe.max_in_flight.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn readiness_and_metrics_follow_every_address() {
    let probe = Scripted::new(
        Duration::ZERO,
        &[(V4, &[true]), (V6, &[true, false, false, true])],
    );
    let checker = scripted_checker(probe, Duration::from_secs(5), &[V4, V6]);
    let status = checker.status.clone();
    let verified = |m: &Metrics| sample(&text(m), "weft_redirect_verified");

    let pending = status
        .not_ready()
        .expect("not ready before the first check");
    assert!(pending.contains("not verified yet"), "{pending}");
    assert_eq!(verified(&checker.metrics).as_deref(), Some("0"));
    assert_eq!(status.view()["addresses"][1]["result"], "pending");

    checker.check().await;
    assert_eq!(status.not_ready(), None);
    assert_eq!(verified(&checker.metrics).as_deref(), Some("1"));
    assert_eq!(status.view()["verified"], true);

    for _ in 0..2 {
        checker.check().await;
        let why = status.not_ready().expect("IPv6 is not redirected");
        assert!(
            why.starts_with(
                "traffic redirection not verified: connecting to [::1]:15141 was refused"
            ),
            "{why}"
        );
        assert!(!why.contains("127.0.0.1"), "IPv4 still passes: {why}");
        assert_eq!(verified(&checker.metrics).as_deref(), Some("0"));
        let view = status.view();
        assert_eq!(view["verified"], false);
        assert_eq!(view["addresses"][0]["result"], "verified");
        assert_eq!(view["addresses"][1]["result"], "refused");
        assert!(view["addresses"][1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("weft-cni")));
    }

    checker.check().await;
    assert_eq!(status.not_ready(), None);
    assert_eq!(verified(&checker.metrics).as_deref(), Some("1"));
    let page = text(&checker.metrics);
    for (series, want) in [
        (
            r#"weft_redirect_checks_total{family="ipv4",result="verified"}"#,
            "4",
        ),
        (
            r#"weft_redirect_checks_total{family="ipv6",result="verified"}"#,
            "2",
        ),
        (
            r#"weft_redirect_checks_total{family="ipv6",result="refused"}"#,
            "2",
        ),
        (
            r#"weft_redirect_checks_total{family="ipv4",result="refused"}"#,
            "0",
        ),
    ] {
        assert_eq!(
            sample(&page, series).as_deref(),
            Some(want),
            "{series}\n{page}"
        );
    }
}
