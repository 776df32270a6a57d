//! A routed request's policy (issue 16): the faults it meets (the Service's `HTTPFault`s,
//! then its rule's), the rule's timeouts and its retries within the rule's budget.
//!
//! Only requests that need it come here (`routes::call` checks [`needs_policy`]); the rest
//! take the plain routed path, so a route without a policy costs nothing more. Here:
//!
//! 1. Each fault is drawn (delay and abort on their own); the delays add up and are waited
//!    first, then the first abort answers (HTTP status, or gRPC status as trailers-only), with
//!    `weft-fault` saying so. An aborted request never reaches a backend and is not retried.
//! 2. The rest runs under `timeouts.request` (delays included): on expiry the try in flight
//!    is dropped (its HTTP/2 stream reset, its HTTP/1 connection closed) and the client gets
//!    504, or `DEADLINE_EXCEEDED` for gRPC.
//! 3. Each try runs under `timeouts.backendRequest`; a try that failed to connect, was reset
//!    before its response, timed out, or answered a status the policy lists is tried again,
//!    on another endpoint of the same backend where there is one, after the backoff, while
//!    attempts remain, the body can be replayed (empty, or of known length within 64 KiB) and
//!    the rule's budget allows. Each try is counted in the endpoint's request series as it
//!    was answered; the client's answer is the last try's.

use std::{future::Future, pin::pin, pin::Pin, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{header, request::Parts, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::Full;
use tracing::debug;
use weft_proxy_http::{
    body::{RequestBody, ResponseBody},
    error::{ProxyError, TimeoutScope},
    replay::{ReplayBody, DEFAULT_REPLAY_CAP},
    split::Split,
    stage::{Cx, Stage, StageResult},
};
use weft_proxy_metrics::{FaultKind, RetryReason, RetrySkipped};
use weft_proxy_route::{Abort, Fault, Retry, Rule, Share};

use super::routes::{RouteCx, Router};

/// The response header that says the proxy injected a fault: `abort <namespace>/<name>` or
/// `delay <namespace>/<name>`.
pub(crate) const FAULT_HEADER: &str = "weft-fault";

/// Whether a request of `rule` (or, unrouted, of the Service) needs this stage.
pub(crate) fn needs_policy(router: &Router, rule: Option<&Rule>) -> bool {
    !router.routes.table.faults().is_empty() || rule.is_some_and(Rule::has_policy)
}

/// What a request is sent to once its faults let it through.
pub(crate) enum Target<'a> {
    /// The Service itself, balanced as without routes (no route is attached).
    Unrouted(&'a Split),
    /// A rule's backend, already chosen (`rule` indexes the table's rules, `share` the
    /// backend among the rule's shares).
    Rule { rule: usize, share: usize },
}

/// Answers a request that needs a policy. `parts` have had the rule's request filters and the
/// backend's header filters applied.
///
/// Written as one `async fn` with every future polled where it was made (pinned, raced with the
/// deadline by `select!`, never wrapped in `tokio::time::timeout`), because moving a try's
/// future (the endpoint stage's, about 2 KiB) into a wrapper is a copy per move: the first
/// version of this stage (a `timeout` around an inner block, each try a separate `async fn`)
/// cost 6,400 instructions per request more than the plain route, mostly `memcpy`.
pub(crate) async fn exchange(
    router: Arc<Router>,
    rcx: &RouteCx,
    target: Target<'_>,
    parts: Parts,
    body: RequestBody,
    cx: Cx,
) -> StageResult {
    let rule = match target {
        Target::Rule { rule, .. } => router.routes.table.rules().get(rule),
        Target::Unrouted(_) => None,
    };
    // timeouts.request: the whole exchange, faults' delays and every try included.
    let request_limit = rule.and_then(|r| r.timeouts().request);
    let faulty =
        !router.routes.table.faults().is_empty() || rule.is_some_and(|r| r.fault().is_some());
    // gRPC is HTTP/2 only: an HTTP/1 request skips the header lookup.
    let grpc = (request_limit.is_some() || faulty)
        && parts.version == http::Version::HTTP_2
        && is_grpc(&parts.headers);
    let mut deadline = pin!(Deadline::new(request_limit));
    let expired = |rcx: &RouteCx| {
        timed_out(
            rcx,
            cx,
            TimeoutScope::Request,
            request_limit.unwrap_or_default(),
            grpc,
        )
    };

    // Faults: the Service's, then the rule's; delays add up, the first abort answers.
    let faults = router
        .routes
        .table
        .faults()
        .iter()
        .chain(rule.and_then(Rule::fault));
    let mut delay = Duration::ZERO;
    let mut delayed_by: Option<&Fault> = None;
    let mut aborted: Option<(&Fault, Abort)> = None;
    for fault in faults {
        let drawn = fault.draw(rand::random(), rand::random());
        if let Some(d) = drawn.delay {
            rcx.metrics.fault_injected(FaultKind::Delay, cx.route);
            delay += d;
            delayed_by.get_or_insert(fault);
        }
        if let (Some(a), None) = (drawn.abort, &aborted) {
            rcx.metrics.fault_injected(FaultKind::Abort, cx.route);
            aborted = Some((fault, a));
        }
    }
    if !delay.is_zero() {
        let wait = pin!(tokio::time::sleep(delay));
        if deadline.as_mut().race(wait).await.is_none() {
            return expired(rcx);
        }
    }
    if let Some((fault, abort)) = aborted {
        let rsp = abort_answer(fault, abort, grpc);
        rcx.series
            .routed(cx.route)
            .record(rsp.status(), cx.start.elapsed());
        debug!(dst = %cx.dst, fault = fault.name(), "request aborted by a fault");
        return Ok(rsp);
    }
    let delayed = |mut rsp: Response<ResponseBody>| {
        if let Some(fault) = delayed_by {
            if let Ok(v) = HeaderValue::from_str(&format!("delay {}", fault.name())) {
                rsp.headers_mut().insert(FAULT_HEADER, v);
            }
        }
        rsp
    };

    let (rule, backend) = match target {
        Target::Unrouted(split) => {
            let sent = pin!(split.call(Request::from_parts(parts, body), cx));
            return match deadline.as_mut().race(sent).await {
                Some(result) => result.map(delayed),
                None => expired(rcx),
            };
        }
        Target::Rule { rule: index, share } => {
            let Some(rule) = router.routes.table.rules().get(index) else {
                return Err(ProxyError::Route {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    reason: "the route table changed its rules".into(),
                });
            };
            let Some(Share::Backend(backend)) = rule.split().shares().get(share) else {
                return Err(ProxyError::Route {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    reason: "the route table changed its backends".into(),
                });
            };
            (rule, backend)
        }
    };
    let balanced = router.backend(backend.id().index());
    let per_try = rule.timeouts().backend_request;
    let retry = rule.retry();

    // What a retry sends: the head again, and the body replayed (or none).
    let (first, replay) = match retry {
        Some(_) => {
            router.budget(rule.index()).deposit(router.now_ms());
            replayable(body)
        }
        None => (body, None),
    };
    let head = replay.is_some().then(|| copy_head(&parts));
    let mut next = Some(Request::from_parts(parts, first));
    let mut avoid = None;
    let mut attempt = 0;
    let result = loop {
        let Some(req) = next.take() else {
            // Only reached when the request could not be rebuilt: a caller's bug.
            break Err(ProxyError::Route {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                reason: "a retry lost its request".into(),
            });
        };
        let mut chosen = None;
        let sent = pin!(balanced.dispatch_to_other(req, cx, avoid, &mut chosen));
        let result = match per_try {
            None => match deadline.as_mut().race(sent).await {
                Some(result) => result,
                None => return expired(rcx),
            },
            Some(limit) => {
                let try_limit = pin!(tokio::time::sleep(limit));
                let raced = pin!(first_of(sent, try_limit));
                match deadline.as_mut().race(raced).await {
                    Some(Some(result)) => result,
                    Some(None) => Err(ProxyError::Timeout {
                        scope: TimeoutScope::BackendRequest,
                        after: limit,
                    }),
                    None => return expired(rcx),
                }
            }
        };
        let Some(retry) = retry else {
            break result;
        };
        let Some(reason) = retry_reason(retry, &result) else {
            break result;
        };
        if attempt >= retry.attempts() {
            break result;
        }
        let again = match (&head, &replay) {
            (Some(head), Some(replay)) => replay.again().map(|b| copy_request(head, b)),
            _ => None,
        };
        let Some(again) = again else {
            rcx.metrics.retry_skipped(cx.route, RetrySkipped::Body);
            break result;
        };
        if !router.budget(rule.index()).withdraw(router.now_ms()) {
            rcx.metrics.retry_budget_exhausted(cx.route);
            break result;
        }
        rcx.metrics.retry(cx.route, reason);
        debug!(dst = %cx.dst, attempt = attempt + 1, ?reason, "retrying");
        // The failed try is dropped here: its stream reset, its body released.
        drop(result);
        let wait = retry.backoff(rand::random());
        if !wait.is_zero() {
            let backoff = pin!(tokio::time::sleep(wait));
            if deadline.as_mut().race(backoff).await.is_none() {
                return expired(rcx);
            }
        }
        attempt += 1;
        avoid = chosen;
        next = Some(again);
    };
    let mut result = finish(rcx, cx, result);
    if let Ok(rsp) = &mut result {
        rule.filter_response(rsp.headers_mut());
        backend.filter_response(rsp.headers_mut());
    }
    result.map(delayed)
}

pin_project_lite::pin_project! {
    /// The request's deadline (`timeouts.request`): a timer when there is one, kept inline
    /// (pinned with the exchange, no allocation).
    struct Deadline {
        #[pin]
        sleep: Option<tokio::time::Sleep>,
    }
}

impl Deadline {
    fn new(limit: Option<Duration>) -> Self {
        Self {
            sleep: limit.map(tokio::time::sleep),
        }
    }

    /// Polls `fut` (in place) until it ends, or `None` once the deadline passed.
    async fn race<F: Future>(self: Pin<&mut Self>, fut: Pin<&mut F>) -> Option<F::Output> {
        match self.project().sleep.as_pin_mut() {
            None => Some(fut.await),
            Some(sleep) => first_of(fut, sleep).await,
        }
    }
}

/// `fut`'s output, or `None` if `timer` ends first; both polled where they are.
async fn first_of<F: Future, T: Future>(fut: Pin<&mut F>, timer: Pin<&mut T>) -> Option<F::Output> {
    tokio::select! {
        biased;
        out = fut => Some(out),
        _ = timer => None,
    }
}

/// Why `result` would be tried again under `retry`; `None` when it stands.
fn retry_reason(retry: &Retry, result: &StageResult) -> Option<RetryReason> {
    match result {
        Ok(rsp) => retry
            .retries_status(rsp.status())
            .then_some(RetryReason::Status),
        Err(ProxyError::Connect(_) | ProxyError::Mesh(_)) => Some(RetryReason::Connect),
        Err(ProxyError::Upstream { .. }) => Some(RetryReason::Reset),
        Err(ProxyError::Timeout {
            scope: TimeoutScope::BackendRequest,
            ..
        }) => Some(RetryReason::Timeout),
        Err(_) => None,
    }
}

/// The last try's result for the client: a try that hit `backendRequest` was counted by no
/// stage (the endpoint never answered), so it is counted here.
fn finish(rcx: &RouteCx, cx: Cx, result: StageResult) -> StageResult {
    if let Err(e @ ProxyError::Timeout { .. }) = &result {
        rcx.series
            .routed(cx.route)
            .record(e.status(), cx.start.elapsed());
        debug!(error = %e, dst = %cx.dst, "request timed out");
    }
    result
}

/// The answer to a request whose `timeouts.request` ran out: counted, then 504 (gRPC:
/// `DEADLINE_EXCEEDED` as trailers-only).
fn timed_out(
    rcx: &RouteCx,
    cx: Cx,
    scope: TimeoutScope,
    after: Duration,
    grpc: bool,
) -> StageResult {
    let e = ProxyError::Timeout { scope, after };
    debug!(error = %e, dst = %cx.dst, "request timed out");
    if grpc {
        let rsp = grpc_answer(4, &e.to_string(), Some(&e.to_string()), None);
        rcx.series
            .routed(cx.route)
            .record(rsp.status(), cx.start.elapsed());
        return Ok(rsp);
    }
    rcx.series
        .routed(cx.route)
        .record(e.status(), cx.start.elapsed());
    Err(e)
}

/// How to send a request's body again.
enum Again {
    /// It had none.
    Empty,
    /// A copy of the body as it is kept (see [`ReplayBody`]), cloned for each retry.
    Replay(ReplayBody<hyper::body::Incoming>),
}

impl Again {
    /// A body for the next try, if the body can still be replayed.
    fn again(&self) -> Option<RequestBody> {
        match self {
            Again::Empty => Some(RequestBody::Empty),
            Again::Replay(r) => r.try_clone().map(RequestBody::Replay),
        }
    }
}

/// The first try's body and, when it can be sent again (none, or of known length within
/// [`DEFAULT_REPLAY_CAP`]), how to send it again. A body of unknown length or larger is never
/// retried: it could not be held whole.
fn replayable(body: RequestBody) -> (RequestBody, Option<Again>) {
    if body.is_end_stream() {
        return (RequestBody::Empty, Some(Again::Empty));
    }
    let known_small = body
        .size_hint()
        .exact()
        .is_some_and(|n| n <= DEFAULT_REPLAY_CAP as u64);
    match body {
        RequestBody::Incoming(incoming) if known_small => {
            match ReplayBody::new(incoming, DEFAULT_REPLAY_CAP) {
                Ok(replay) => {
                    let again = replay.try_clone().map(Again::Replay);
                    (RequestBody::Replay(replay), again)
                }
                Err(incoming) => (RequestBody::Incoming(incoming), None),
            }
        }
        RequestBody::Replay(replay) if known_small => {
            let again = replay.try_clone().map(Again::Replay);
            (RequestBody::Replay(replay), again)
        }
        other => (other, None),
    }
}

/// A request's head with no body, kept for retries.
fn copy_head(parts: &Parts) -> Request<()> {
    let mut req = Request::new(());
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req
}

fn copy_request(head: &Request<()>, body: RequestBody) -> Request<RequestBody> {
    let mut req = Request::new(body);
    *req.method_mut() = head.method().clone();
    *req.uri_mut() = head.uri().clone();
    *req.version_mut() = head.version();
    *req.headers_mut() = head.headers().clone();
    req
}

/// Whether a request is gRPC (its answers are made as gRPC statuses).
fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// An aborted request's answer.
fn abort_answer(fault: &Fault, abort: Abort, grpc: bool) -> Response<ResponseBody> {
    let said = format!("abort {}", fault.name());
    match abort {
        Abort::Grpc(code) => grpc_answer(
            code,
            &format!("fault injected by HTTPFault {}", fault.name()),
            None,
            Some(&said),
        ),
        Abort::Http(status) => {
            // A gRPC client reads an HTTP error as UNKNOWN/UNAVAILABLE; it gets the status
            // the fault names all the same, as Istio does.
            let _ = grpc;
            let body = format!("fault injected by HTTPFault {}\n", fault.name());
            let mut rsp = Response::new(ResponseBody::unrecorded(Full::new(Bytes::from(body))));
            *rsp.status_mut() = status;
            let h = rsp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            if let Ok(v) = HeaderValue::from_str(&said) {
                h.insert(FAULT_HEADER, v);
            }
            rsp
        }
    }
}

/// A gRPC error as trailers-only: HTTP 200, `grpc-status` and `grpc-message` in the head,
/// no body.
fn grpc_answer(
    code: u8,
    message: &str,
    error: Option<&str>,
    fault: Option<&str>,
) -> Response<ResponseBody> {
    let mut rsp = Response::new(ResponseBody::unrecorded(Full::new(Bytes::new())));
    let h = rsp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(u16::from(code)));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(message)) {
        h.insert("grpc-message", v);
    }
    if let Some(v) = error.and_then(|e| HeaderValue::from_str(e).ok()) {
        h.insert(weft_proxy_http::ERROR_HEADER, v);
    }
    if let Some(v) = fault.and_then(|f| HeaderValue::from_str(f).ok()) {
        h.insert(FAULT_HEADER, v);
    }
    rsp
}

/// `grpc-message` is percent-encoded (outside printable ASCII, and `%` itself).
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use weft_proxy_route::{spec, RouteTable};
    use weft_proxy_transport::ConnectError;

    use super::*;

    fn retry(codes: &[u16]) -> Retry {
        let table = RouteTable::compile(&spec::RouteTable {
            matches: vec![spec::Match::default()],
            rules: vec![spec::Rule {
                name: "r".into(),
                retry: Some(spec::Retry {
                    attempts: 2,
                    codes: codes.to_vec(),
                    backoff: Duration::ZERO,
                }),
                ..Default::default()
            }],
            ..Default::default()
        })
        .expect("compiles");
        table.rules()[0].retry().expect("a policy").clone()
    }

    fn status(code: u16) -> StageResult {
        let mut rsp = Response::new(ResponseBody::unrecorded(Full::new(Bytes::new())));
        *rsp.status_mut() = StatusCode::from_u16(code).expect("status");
        Ok(rsp)
    }

    #[test]
    fn what_is_retried_and_why() {
        let r = retry(&[503]);
        assert_eq!(retry_reason(&r, &status(503)), Some(RetryReason::Status));
        assert_eq!(retry_reason(&r, &status(500)), None);
        assert_eq!(retry_reason(&r, &status(200)), None);
        let addr = ([127, 0, 0, 1], 1).into();
        let refused = Err(ProxyError::Connect(ConnectError::Refused { addr }));
        assert_eq!(retry_reason(&r, &refused), Some(RetryReason::Connect));
        let per_try = Err(ProxyError::Timeout {
            scope: TimeoutScope::BackendRequest,
            after: Duration::from_millis(100),
        });
        assert_eq!(retry_reason(&r, &per_try), Some(RetryReason::Timeout));
        // Neither the whole request's timeout, nor what the routes or the caller decided.
        for stands in [
            ProxyError::Timeout {
                scope: TimeoutScope::Request,
                after: Duration::from_millis(100),
            },
            ProxyError::NoEndpoints {
                service: "shop/api:80".into(),
            },
            ProxyError::Route {
                status: StatusCode::NOT_FOUND,
                reason: "no route".into(),
            },
        ] {
            assert_eq!(retry_reason(&r, &Err(stands)), None);
        }
    }

    #[test]
    fn a_grpc_answer_is_trailers_only_with_its_status() {
        let rsp = grpc_answer(4, "100% late\n", Some("timeout"), Some("abort shop/f"));
        assert_eq!(rsp.status(), StatusCode::OK);
        let h = rsp.headers();
        assert_eq!(h["content-type"], "application/grpc");
        assert_eq!(h["grpc-status"], "4");
        assert_eq!(h["grpc-message"], "100%25 late%0A");
        assert_eq!(h[weft_proxy_http::ERROR_HEADER], "timeout");
        assert_eq!(h[FAULT_HEADER], "abort shop/f");
        assert!(rsp.body().is_end_stream(), "no body: trailers-only");
    }

    #[test]
    fn an_http_abort_says_it_was_injected() {
        let table = RouteTable::compile(&spec::RouteTable {
            faults: vec![spec::FaultSpec {
                name: "shop/flaky".into(),
                abort: Some(spec::FaultAbort {
                    per_million: 1_000_000,
                    status: spec::AbortStatus::Http(503),
                }),
                ..Default::default()
            }],
            ..Default::default()
        })
        .expect("compiles");
        let fault = &table.faults()[0];
        let abort = fault.draw(0, 0).abort.expect("always");
        let rsp = abort_answer(fault, abort, false);
        assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(rsp.headers()[FAULT_HEADER], "abort shop/flaky");
        let grpc = abort_answer(fault, Abort::Grpc(14), true);
        assert_eq!(grpc.status(), StatusCode::OK);
        assert_eq!(grpc.headers()["grpc-status"], "14");
        assert_eq!(grpc.headers()[FAULT_HEADER], "abort shop/flaky");
    }

    #[test]
    fn only_small_known_bodies_are_replayable() {
        let (first, again) = replayable(RequestBody::Empty);
        assert!(first.is_end_stream());
        assert!(matches!(
            again.and_then(|a| a.again()),
            Some(RequestBody::Empty)
        ));
    }
}
