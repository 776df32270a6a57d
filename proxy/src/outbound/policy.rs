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

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{header, request::Parts, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::Full;
use tokio::time::Sleep;
use tracing::debug;
use weft_proxy_http::{
    answer::Retried,
    balance::Balanced,
    body::{RequestBody, ResponseBody, Streamed},
    error::{ProxyError, TimeoutScope},
    replay::{ReplayBody, DEFAULT_REPLAY_CAP},
    split::Split,
    stage::{Cx, StageResult},
};
use weft_proxy_metrics::{FaultKind, RetryReason, RetrySkipped};
use weft_proxy_route::{Abort, Backend, Fault, Retry, Rule, Share};

use super::routes::{RouteCx, Router};

pub(crate) use weft_proxy_http::answer::FAULT_HEADER;

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

/// How a try is sent: [`Balanced::dispatch_to_other`], as a function pointer so that
/// [`Exchange`] can name the try's future (an `impl Future`) as its type parameter.
type SendFn<F> =
    fn(&Balanced, Request<RequestBody>, Cx, Option<SocketAddr>, &mut Option<SocketAddr>) -> F;

/// Answers a request that needs a policy. `parts` have had the rule's request filters and the
/// backend's header filters applied.
///
/// The faults are drawn, the first try sent (or the delay armed) here; the future then
/// waits, tries and retries.
pub(crate) fn exchange<'a>(
    router: Arc<Router>,
    rcx: &'a RouteCx,
    target: Target<'a>,
    parts: Parts,
    body: RequestBody,
    cx: Cx,
) -> impl Future<Output = StageResult> + Send + 'a {
    let send: SendFn<_> = Balanced::dispatch_to_other;
    let (mut policy, phase, body) = Policy::start(router, rcx, target, &parts, body, cx, send);
    // The first try's future made in the exchange's own literal (a direct call, not through
    // `send`), and the request's head moved once, so that little is copied on the way.
    let p = policy.as_mut().project();
    Exchange {
        sent: match phase {
            Phase::Try => match balanced(p.router, *p.to) {
                Ok(balanced) => Some(balanced.dispatch_to_other(
                    Request::from_parts(parts, body),
                    cx,
                    None,
                    p.chosen,
                )),
                Err(e) => {
                    *p.answer = Some(Err(e));
                    None
                }
            },
            Phase::Wait => {
                if p.abort.is_none() {
                    *p.pending = Some(Request::from_parts(parts, body));
                }
                None
            }
            Phase::Answer | Phase::Done => {
                *p.answer = p.abort.take().map(Ok);
                None
            }
        },
        phase,
        policy,
    }
}

pin_project_lite::pin_project! {
    /// A request's exchange under its policy: the try in flight, inline, and the rest boxed.
    ///
    /// Written by hand rather than as an `async fn`, and split so: the try's future (the
    /// endpoint stage's, about 2 KiB) is the bulk, and the per-request future is copied whole
    /// as it moves (hyper moves it into a task per HTTP/2 stream). Inline, the try takes the
    /// place the plain route's try takes, so the per-request future is no larger than a plain
    /// route's and only requests with a policy pay for the box (about 600 bytes, the timer
    /// among them). The try is an `Option` beside a one-byte phase, not a variant of an enum
    /// of phases with the waiting request in it: building that enum around the try's future
    /// cost two more copies of 2 KiB per request. History: an `async fn` in a box was 5,776
    /// bytes (arguments kept beside their moved copies, the unrouted and routed tries side by
    /// side); by hand, all in a box, 2,680, copied into the box per request.
    struct Exchange<'a, F> {
        // The try in flight, none while waiting or once answered.
        #[pin]
        sent: Option<F>,
        phase: Phase,
        policy: Pin<Box<Policy<'a, F>>>,
    }
}

/// Where an exchange is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// A try in flight (or, with none, the policy's `answer`).
    Try,
    /// Waiting for the clock (a fault's delay, a retry's backoff), then sending the policy's
    /// `pending` request or answering its `abort`.
    Wait,
    /// Answering the policy's `answer` without a try.
    Answer,
    Done,
}

pin_project_lite::pin_project! {
    /// An exchange's policy: what it knows and its timer.
    struct Policy<'a, F> {
        router: Arc<Router>,
        rcx: &'a RouteCx,
        cx: Cx,
        to: To<'a>,
        // Answer as gRPC does (trailers-only) when the exchange answers itself.
        grpc: bool,
        // `timeouts.request` and `timeouts.backendRequest`, for the errors that name them.
        request_limit: Option<Duration>,
        per_try: Option<Duration>,
        // The `weft-fault` header of a delay, added to the answer.
        delayed_by: Option<HeaderValue>,
        // The answer of an injected abort, given once the delays are over.
        abort: Option<Response<ResponseBody>>,
        // A request waiting for the clock.
        pending: Option<Request<RequestBody>>,
        // An answer given without a try.
        answer: Option<StageResult>,
        // How to try again, when the rule retries and the body can be sent again.
        retries: Option<Retries>,
        // The endpoint the try in flight went to (another is chosen for a retry).
        chosen: Option<SocketAddr>,
        send: SendFn<F>,
        #[pin]
        clock: Clock,
    }
}

/// Where an exchange's tries go.
#[derive(Clone, Copy)]
enum To<'a> {
    /// The Service itself, balanced as without routes (no rule: no timeouts, no retries).
    Unrouted(&'a Arc<Balanced>),
    /// A rule's backend (`rule` indexes the table's rules, `share` the rule's shares).
    Rule { rule: usize, share: usize },
}

/// What a retry needs: the request's head and body again.
struct Retries {
    head: Head,
    again: Again,
    attempt: u32,
}

/// What the exchange does next, decided while the state is borrowed.
enum Step {
    /// Send a try (not the first: [`exchange`] sends that one).
    Send(Request<RequestBody>),
    /// Give the policy's `answer`.
    Answer,
    Answered(StageResult),
    Abort(Response<ResponseBody>),
    Expired,
}

impl<'a, F> Policy<'a, F> {
    fn start(
        router: Arc<Router>,
        rcx: &'a RouteCx,
        target: Target<'a>,
        parts: &Parts,
        body: RequestBody,
        cx: Cx,
        send: SendFn<F>,
    ) -> (Pin<Box<Self>>, Phase, RequestBody) {
        let table = &router.routes.table;
        let rule = match target {
            Target::Rule { rule, .. } => table.rules().get(rule),
            Target::Unrouted(_) => None,
        };
        // timeouts.request: the whole exchange from the request's arrival, faults' delays and
        // every try included.
        let request_limit = rule.and_then(|r| r.timeouts().request);
        let per_try = rule.and_then(|r| r.timeouts().backend_request);
        let faulty = !table.faults().is_empty() || rule.is_some_and(|r| r.fault().is_some());
        // gRPC is HTTP/2 only: an HTTP/1 request skips the header lookup.
        let grpc = (request_limit.is_some() || faulty)
            && parts.version == http::Version::HTTP_2
            && is_grpc(&parts.headers);

        // Faults: the Service's, then the rule's; delays add up, the first abort answers.
        let mut delay = Duration::ZERO;
        let mut delayed_by = None;
        let mut abort = None;
        if faulty {
            for fault in table.faults().iter().chain(rule.and_then(Rule::fault)) {
                let drawn = fault.draw(rand::random(), rand::random());
                if let Some(d) = drawn.delay {
                    rcx.metrics.fault_injected(FaultKind::Delay, cx.route);
                    delay += d;
                    if delayed_by.is_none() {
                        delayed_by = HeaderValue::from_str(&format!("delay {}", fault.name())).ok();
                    }
                }
                if let (Some(a), None) = (drawn.abort, &abort) {
                    rcx.metrics.fault_injected(FaultKind::Abort, cx.route);
                    debug!(dst = %cx.dst, fault = fault.name(), "request aborted by a fault");
                    abort = Some(abort_answer(fault, a, grpc));
                }
            }
        }

        // The retries' head and body; the budget counts every request of a retrying rule.
        let (first, retries) = match rule.filter(|r| r.retry().is_some()) {
            Some(rule) if abort.is_none() => {
                router.budget(rule.index()).deposit(router.ms_at(cx.start));
                let (first, again) = replayable(body);
                let retries = again.map(|again| Retries {
                    head: copy_head(parts),
                    again,
                    attempt: 0,
                });
                (first, retries)
            }
            _ => (body, None),
        };
        let to = match target {
            Target::Unrouted(split) => To::Unrouted(split.pick()),
            Target::Rule { rule, share } => To::Rule { rule, share },
        };
        let request_deadline = request_limit.map(|limit| cx.start + limit);
        // How the exchange begins: waiting for a fault's delay (armed), answering an abort at
        // once (counted), or sending the first try ([`exchange`] sends it; its deadline armed).
        let (clock, phase) = if !delay.is_zero() {
            let until = (Instant::now() + delay, Limit::Wait);
            (Clock::new(request_deadline, Some(until)), Phase::Wait)
        } else if let Some(rsp) = &abort {
            record(rcx, cx, rsp.status());
            (Clock::new(None, None), Phase::Answer)
        } else {
            // The first try starts as the request arrived: no clock read.
            let try_deadline = per_try.map(|limit| (cx.start + limit, Limit::Try));
            (Clock::new(request_deadline, try_deadline), Phase::Try)
        };
        let policy = Box::pin(Policy {
            router,
            rcx,
            cx,
            to,
            grpc,
            request_limit,
            per_try,
            delayed_by,
            abort,
            pending: None,
            answer: None,
            retries,
            chosen: None,
            send,
            clock,
        });
        (policy, phase, first)
    }
}

/// The balancer of `to`'s backend, or why the request cannot be sent.
fn balanced<'r>(router: &'r Router, to: To<'r>) -> Result<&'r Balanced, ProxyError> {
    match to {
        To::Unrouted(balanced) => Ok(balanced),
        To::Rule { rule, share } => rule_backend(router, rule, share)
            .map(|(_, backend)| &**router.backend(backend.id().index())),
    }
}

/// Rule `rule` and its backend `share`, as the request found them.
fn rule_backend(
    router: &Router,
    rule: usize,
    share: usize,
) -> Result<(&Rule, &Backend), ProxyError> {
    let Some(rule) = router.routes.table.rules().get(rule) else {
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
    Ok((rule, backend))
}

impl<F> Future for Exchange<'_, F>
where
    F: Future<Output = StageResult>,
{
    type Output = StageResult;

    fn poll(self: Pin<&mut Self>, task: &mut Context<'_>) -> Poll<StageResult> {
        let me = self.project();
        let mut sent = me.sent;
        let phase = me.phase;
        let mut p = me.policy.as_mut().project();
        let mut resend = None;
        loop {
            let step = match (resend.take(), *phase) {
                (Some(req), _) => Step::Send(req),
                (None, Phase::Answer) => Step::Answer,
                (None, Phase::Wait) => match p.clock.as_mut().poll_fired(task) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Limit::Request) => Step::Expired,
                    Poll::Ready(_) => match (p.abort.take(), p.pending.take()) {
                        (Some(rsp), _) => Step::Abort(rsp),
                        (None, Some(req)) => Step::Send(req),
                        (None, None) => Step::Answer,
                    },
                },
                // The try first: an answer that is ready wins over a limit that passed.
                (None, Phase::Try) => match sent.as_mut().as_pin_mut() {
                    None => Step::Answer,
                    Some(try_) => match try_.poll(task) {
                        Poll::Ready(result) => Step::Answered(result),
                        Poll::Pending => match p.clock.as_mut().poll_fired(task) {
                            Poll::Pending => return Poll::Pending,
                            Poll::Ready(Limit::Request) => Step::Expired,
                            Poll::Ready(_) => Step::Answered(Err(ProxyError::Timeout {
                                scope: TimeoutScope::BackendRequest,
                                after: p.per_try.unwrap_or_default(),
                            })),
                        },
                    },
                },
                (None, Phase::Done) => return Poll::Ready(Err(polled_after_done())),
            };
            match step {
                Step::Answer => {
                    *phase = Phase::Done;
                    let answer = p.answer.take();
                    return Poll::Ready(answer.unwrap_or_else(|| Err(polled_after_done())));
                }
                Step::Expired => {
                    // The try in flight is dropped: its stream reset, its body released.
                    sent.set(None);
                    *phase = Phase::Done;
                    let after = p.request_limit.unwrap_or_default();
                    return Poll::Ready(timed_out(p.rcx, *p.cx, after, *p.grpc));
                }
                Step::Abort(rsp) => {
                    *phase = Phase::Done;
                    record(p.rcx, *p.cx, rsp.status());
                    return Poll::Ready(Ok(rsp));
                }
                Step::Send(req) => {
                    let try_deadline = p.per_try.map(|limit| (Instant::now() + limit, Limit::Try));
                    p.clock.as_mut().arm(try_deadline);
                    let avoid = p.chosen.take();
                    *phase = Phase::Try;
                    match balanced(p.router, *p.to) {
                        Ok(balanced) => {
                            sent.set(Some((p.send)(balanced, req, *p.cx, avoid, p.chosen)));
                        }
                        Err(e) => *p.answer = Some(Err(e)),
                    }
                }
                Step::Answered(result) => {
                    let cx = *p.cx;
                    // The router is immutable: the rule and backend found at the start.
                    let (rule, backend) = match *p.to {
                        To::Rule { rule, share } => rule_backend(p.router, rule, share)
                            .map_or((None, None), |(r, b)| (Some(r), Some(b))),
                        To::Unrouted(_) => (None, None),
                    };
                    let again = rule.and_then(|rule| {
                        let policy = rule.retry()?;
                        try_again(p.router, p.rcx, cx, rule, policy, p.retries, &result)
                    });
                    // The try is over: dropped here (a failed one's stream reset, its body
                    // released).
                    sent.set(None);
                    match again {
                        Some((req, wait)) => {
                            drop(result);
                            if wait.is_zero() {
                                resend = Some(req);
                            } else {
                                *p.pending = Some(req);
                                *phase = Phase::Wait;
                                let until = (Instant::now() + wait, Limit::Wait);
                                p.clock.as_mut().arm(Some(until));
                            }
                        }
                        None => {
                            *phase = Phase::Done;
                            let mut result = finish(p.rcx, cx, result);
                            if let Ok(rsp) = &mut result {
                                if let (Some(rule), Some(backend)) = (rule, backend) {
                                    rule.filter_response(rsp.headers_mut());
                                    backend.filter_response(rsp.headers_mut());
                                }
                                if let Some(v) = p.delayed_by.take() {
                                    rsp.headers_mut().insert(FAULT_HEADER, v);
                                }
                                // For the edge's span and tap; only a retried request pays
                                // for the extension.
                                if let Some(r) = p.retries.as_ref().filter(|r| r.attempt > 0) {
                                    rsp.extensions_mut().insert(Retried(r.attempt));
                                }
                            }
                            return Poll::Ready(result);
                        }
                    }
                }
            }
        }
    }
}

/// The request to send again and the backoff to wait before it, when `result` is tried again
/// under `policy`: attempts remain, the body can be sent again and the rule's budget allows.
/// Counts the retry, or why it was not made.
fn try_again(
    router: &Router,
    rcx: &RouteCx,
    cx: Cx,
    rule: &Rule,
    policy: &Retry,
    retries: &mut Option<Retries>,
    result: &StageResult,
) -> Option<(Request<RequestBody>, Duration)> {
    let reason = retry_reason(policy, result)?;
    let attempt = retries.as_ref().map_or(0, |r| r.attempt);
    if attempt >= policy.attempts() {
        return None;
    }
    let again = retries
        .as_mut()
        .and_then(|r| r.again.again().map(|body| (r, body)));
    let Some((retries, body)) = again else {
        rcx.metrics.retry_skipped(cx.route, RetrySkipped::Body);
        return None;
    };
    if !router
        .budget(rule.index())
        .withdraw(router.ms_at(Instant::now()))
    {
        rcx.metrics.retry_budget_exhausted(cx.route);
        return None;
    }
    rcx.metrics.retry(cx.route, reason);
    retries.attempt += 1;
    debug!(dst = %cx.dst, attempt = retries.attempt, ?reason, "retrying");
    Some((
        copy_request(&retries.head, body),
        policy.backoff(rand::random()),
    ))
}

/// The limit a [`Clock`] was armed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Limit {
    /// `timeouts.request`: the exchange is over.
    Request,
    /// `timeouts.backendRequest`: the try is over.
    Try,
    /// A wait (a fault's delay, a retry's backoff) is over.
    Wait,
}

pin_project_lite::pin_project! {
    /// The exchange's one timer, armed for whichever comes first of the request's deadline
    /// and the try's (or the end of a wait). One timer rather than one per limit: each is a
    /// registration in the runtime's timer wheel per try.
    struct Clock {
        #[pin]
        sleep: Option<Sleep>,
        // What the timer is armed for, until it fires.
        armed: Option<(Instant, Limit)>,
        // The request's deadline, when `timeouts.request` is set.
        request: Option<Instant>,
    }
}

impl Clock {
    fn new(request: Option<Instant>, other: Option<(Instant, Limit)>) -> Self {
        let armed = first(request, other);
        Self {
            sleep: armed.map(|(at, _)| tokio::time::sleep_until(at.into())),
            armed,
            request,
        }
    }

    /// Arms the timer for the request's deadline or `other`, whichever comes first.
    fn arm(self: Pin<&mut Self>, other: Option<(Instant, Limit)>) {
        let mut me = self.project();
        let armed = first(*me.request, other);
        if let Some((at, _)) = armed {
            let unchanged = me.armed.is_some_and(|(was, _)| was == at);
            match me.sleep.as_mut().as_pin_mut() {
                Some(_) if unchanged => {}
                Some(sleep) => sleep.reset(at.into()),
                None => me.sleep.set(Some(tokio::time::sleep_until(at.into()))),
            }
        }
        *me.armed = armed;
    }

    /// The limit it was armed for, once that has passed (then it is disarmed).
    fn poll_fired(self: Pin<&mut Self>, task: &mut Context<'_>) -> Poll<Limit> {
        let me = self.project();
        let (Some((_, limit)), Some(sleep)) = (*me.armed, me.sleep.as_pin_mut()) else {
            return Poll::Pending;
        };
        match sleep.poll(task) {
            Poll::Ready(()) => {
                *me.armed = None;
                Poll::Ready(limit)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The request's deadline or `other`, whichever comes first (the request's on a tie: the
/// exchange is over either way).
fn first(request: Option<Instant>, other: Option<(Instant, Limit)>) -> Option<(Instant, Limit)> {
    match (request, other) {
        (Some(request), Some((at, limit))) if at < request => Some((at, limit)),
        (Some(request), _) => Some((request, Limit::Request)),
        (None, other) => other,
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
        record(rcx, cx, e.status());
        debug!(error = %e, dst = %cx.dst, "request timed out");
    }
    result
}

/// The answer to a request whose `timeouts.request` ran out: counted, then 504 (gRPC:
/// `DEADLINE_EXCEEDED` as trailers-only).
fn timed_out(rcx: &RouteCx, cx: Cx, after: Duration, grpc: bool) -> StageResult {
    let e = ProxyError::Timeout {
        scope: TimeoutScope::Request,
        after,
    };
    debug!(error = %e, dst = %cx.dst, "request timed out");
    if grpc {
        let rsp = grpc_answer(4, &e.to_string(), Some(&e.to_string()), None);
        record(rcx, cx, rsp.status());
        return Ok(rsp);
    }
    record(rcx, cx, e.status());
    Err(e)
}

/// Counts an answer the exchange gave itself in the request's series.
fn record(rcx: &RouteCx, cx: Cx, status: StatusCode) {
    rcx.series
        .routed(cx.route)
        .record(status, cx.start.elapsed());
}

/// The error of a future polled after it answered (a caller's bug, never a panic).
fn polled_after_done() -> ProxyError {
    ProxyError::Route {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        reason: "the policy stage was polled after it answered".into(),
    }
}

/// How to send a request's body again.
enum Again {
    /// It had none.
    Empty,
    /// A copy of the body as it is kept (see [`ReplayBody`]), cloned for each retry.
    Replay(ReplayBody<Streamed>),
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
        RequestBody::Streamed(streamed) if known_small => {
            match ReplayBody::new(streamed, DEFAULT_REPLAY_CAP) {
                Ok(replay) => {
                    let again = replay.try_clone().map(Again::Replay);
                    (RequestBody::Replay(replay), again)
                }
                Err(streamed) => (RequestBody::Streamed(streamed), None),
            }
        }
        RequestBody::Replay(replay) if known_small => {
            let again = replay.try_clone().map(Again::Replay);
            (RequestBody::Replay(replay), again)
        }
        other => (other, None),
    }
}

/// A request's head kept for retries: its headers as a list (one allocation; a `HeaderMap`
/// clone makes two, and most requests are never retried), made a map again for a retry.
struct Head {
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

fn copy_head(parts: &Parts) -> Head {
    Head {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        version: parts.version,
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect(),
    }
}

fn copy_request(head: &Head, body: RequestBody) -> Request<RequestBody> {
    let mut req = Request::new(body);
    *req.method_mut() = head.method.clone();
    *req.uri_mut() = head.uri.clone();
    *req.version_mut() = head.version;
    let headers = req.headers_mut();
    headers.reserve(head.headers.len());
    for (name, value) in &head.headers {
        headers.append(name.clone(), value.clone());
    }
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

    /// The policy stage's future holds the try's future (the endpoint stage's) inline and
    /// the rest in a box: it must stay no larger than a plain route's (the try and a box), or
    /// every routed request's future grows. History: an `async fn` was 5,776 bytes for a
    /// 2,048-byte try; by hand, all boxed, 2,680; the try inline, the rest boxed: 2,056.
    #[test]
    fn the_policy_future_is_the_try_and_a_box() {
        fn exchange_size<'a, F, Fut>(_: F) -> usize
        where
            F: FnOnce(Arc<Router>, &'a RouteCx, Target<'a>, Parts, RequestBody, Cx) -> Fut,
        {
            std::mem::size_of::<Fut>()
        }
        fn try_size<'a, F, Fut>(_: F) -> usize
        where
            F: FnOnce(
                &'a weft_proxy_http::balance::Balanced,
                Request<RequestBody>,
                Cx,
                Option<std::net::SocketAddr>,
                &'a mut Option<std::net::SocketAddr>,
            ) -> Fut,
        {
            std::mem::size_of::<Fut>()
        }
        let whole = exchange_size(exchange);
        let one_try = try_size(weft_proxy_http::balance::Balanced::dispatch_to_other);
        assert!(
            whole <= one_try + 16,
            "the policy future grew to {whole} bytes (a try's: {one_try})"
        );
    }

    #[test]
    fn a_retry_sends_the_same_head() {
        let req = Request::builder()
            .method("PUT")
            .uri("http://api.shop/orders?page=2")
            .version(http::Version::HTTP_2)
            .header("x-a", "1")
            .header("set-cookie", "a=1")
            .header("set-cookie", "b=2")
            .header("x-b", "")
            .body(())
            .expect("request");
        let (parts, ()) = req.into_parts();
        let again = copy_request(&copy_head(&parts), RequestBody::Empty);
        assert_eq!(again.method(), parts.method);
        assert_eq!(again.uri(), &parts.uri);
        assert_eq!(again.version(), parts.version);
        assert_eq!(again.headers(), &parts.headers);
        let cookies: Vec<_> = again.headers().get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"], "every value, in order");
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
