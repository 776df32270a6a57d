//! Routes on a logical Service: the stage in front of its split that matches each request
//! against the HTTPRoutes (and TrafficSplits) in force for it, as the control plane merged and
//! ordered them (`weft_proxy_route` evaluates; `weft_proxy_discovery::routes` receives).
//!
//! A [`Router`] is a compiled table plus one balancer per backend Service it names, indexed by
//! the table's `ServiceId`, so a request costs the match, one random number, and no lookup by
//! name. Backend Services are watched by name and shared between the routes that use them
//! ([`Backends`]); a backend that is the logical Service itself reuses its own balancer.
//!
//! Per request (HTTP): no router, or a table with no routes: the Service's own split, as
//! before. Otherwise the first match's rule: its request filters (a redirect or an error answers
//! here), a backend by weight, that backend's header filters, mirrors (fire and forget, bounded
//! in flight, counted), the request to the backend's balancer, and the response header filters
//! on the way back. No match while routes exist: 404. Opaque TCP uses the TrafficSplit's
//! weights per connection, when there is one.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex, Weak},
};

use bytes::Bytes;
use futures_util::{future::Either, FutureExt};
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::Full;
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, info, warn};
use weft_proxy_discovery::{DiscoveryTarget, Resolved, Routes, ServiceName};
use weft_proxy_http::{
    balance::Balanced,
    body::{RequestBody, ResponseBody, Streamed},
    error::ProxyError,
    replay::{ReplayBody, DEFAULT_REPLAY_CAP},
    split::Split,
    stage::{Cx, Stage, StageResult},
};
use weft_proxy_metrics::{Direction, Metrics, MirrorResult, RequestSeries, RouteLabel};
use weft_proxy_route::{spec::ServiceRef, Answer, RetryBudget, Route, Share};

use super::{
    concrete,
    endpoint::Endpoints,
    logical::LogicalService,
    policy::{self, Target},
};

/// The most mirrored requests in flight per logical Service; past it a copy is dropped.
pub(crate) const MAX_MIRRORS_IN_FLIGHT: usize = 64;

/// The routes in force on one logical Service.
#[derive(Debug)]
pub(crate) struct Router {
    pub(crate) routes: Arc<Routes>,
    /// One per entry of `routes.table.services()`, in that order.
    backends: Vec<Backend>,
    /// Each rule's `route` label, by rule index.
    labels: Vec<RouteLabel>,
    /// Each rule's retry budget, by rule index (used by rules with a retry policy).
    budgets: Vec<RetryBudget>,
    /// The budgets' clock's origin.
    origin: std::time::Instant,
}

/// A backend Service's balancer, and (unless it is the logical Service's own) the watch that
/// keeps its endpoints current.
#[derive(Debug, Clone)]
struct Backend {
    balanced: Arc<Balanced>,
    _watch: Option<Arc<BackendWatch>>,
}

/// A backend Service watched by name; dropping the last holder stops the watch.
#[derive(Debug)]
struct BackendWatch {
    balanced: Arc<Balanced>,
    rx: watch::Receiver<Resolved>,
    _stop: DropGuard,
}

/// Backend Services by name, shared by every route that names them while any holds them.
#[derive(Debug, Default)]
pub(crate) struct Backends {
    watched: Mutex<HashMap<ServiceName, Weak<BackendWatch>>>,
}

/// What a route's request stage needs besides the router.
#[derive(Debug)]
pub(crate) struct RouteCx {
    /// Counts the requests the routes answer themselves (404, 500, redirects).
    pub(crate) series: Arc<RequestSeries>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) mirrors: Arc<Semaphore>,
}

impl RouteCx {
    pub(crate) fn new(metrics: &Arc<Metrics>) -> Self {
        Self {
            series: metrics.plaintext(Direction::Outbound),
            metrics: metrics.clone(),
            mirrors: Arc::new(Semaphore::new(MAX_MIRRORS_IN_FLIGHT)),
        }
    }
}

impl Backends {
    /// The backend `service` (watched by name through `discovery`), started if new.
    fn get(
        &self,
        service: &ServiceRef,
        discovery: &Arc<weft_proxy_discovery::Discovery>,
        endpoints: &Arc<Endpoints>,
        balance: &weft_proxy_balance::Settings,
    ) -> Option<Arc<BackendWatch>> {
        let name = ServiceName {
            namespace: service.namespace.clone(),
            name: service.name.clone(),
            port: service.port,
        };
        let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = watched.get(&name).and_then(Weak::upgrade) {
            return Some(w);
        }
        watched.retain(|_, w| w.strong_count() > 0);
        let rx = discovery.resolve(DiscoveryTarget::Service(name.clone()))?;
        let label: Arc<str> = name.to_string().into();
        let balanced = Arc::new(Balanced::new(
            label,
            endpoints.metrics.clone(),
            endpoints.metrics.plaintext(Direction::Outbound),
        ));
        let stop = CancellationToken::new();
        tokio::spawn(follow_backend(
            balanced.clone(),
            rx.clone(),
            endpoints.clone(),
            *balance,
            stop.clone(),
        ));
        let w = Arc::new(BackendWatch {
            balanced,
            rx,
            _stop: stop.drop_guard(),
        });
        watched.insert(name, Arc::downgrade(&w));
        Some(w)
    }
}

/// Keeps a backend's endpoints as discovery says, until stopped.
async fn follow_backend(
    balanced: Arc<Balanced>,
    mut rx: watch::Receiver<Resolved>,
    endpoints: Arc<Endpoints>,
    balance: weft_proxy_balance::Settings,
    stop: CancellationToken,
) {
    loop {
        if let Resolved::Service(set) = &*rx.borrow_and_update() {
            concrete::update(&balanced, set, &endpoints, &balance);
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = stop.cancelled() => return,
        }
    }
}

/// Builds the router for `routes` on `service`: each backend Service's balancer (the Service's
/// own, or one watched by name), waiting at most `patience` for new backends' first answers so
/// that a new split does not answer 503 while its backends are being learnt. `None` when the
/// table holds no routes.
pub(crate) async fn router(
    service: &LogicalService,
    routes: Arc<Routes>,
    backends: &Backends,
    discovery: &Arc<weft_proxy_discovery::Discovery>,
    endpoints: &Arc<Endpoints>,
    balance: &weft_proxy_balance::Settings,
    patience: std::time::Duration,
) -> Option<Router> {
    if routes.table.is_empty()
        && routes.table.tcp_split().is_none()
        && routes.table.faults().is_empty()
    {
        return None;
    }
    let mut list = Vec::with_capacity(routes.table.services().len());
    let mut waits = Vec::new();
    for svc in routes.table.services() {
        let own = format!("{}/{}:{}", svc.namespace, svc.name, svc.port);
        if *service.name == *own {
            list.push(Backend {
                balanced: service.own().clone(),
                _watch: None,
            });
            continue;
        }
        match backends.get(svc, discovery, endpoints, balance) {
            Some(w) => {
                waits.push(w.clone());
                list.push(Backend {
                    balanced: w.balanced.clone(),
                    _watch: Some(w),
                });
            }
            None => {
                // The discovery table is full: this backend's share answers 503.
                warn!(service = %service.name, backend = %own, "too many watched destinations; the backend has no endpoints");
                list.push(Backend {
                    balanced: Arc::new(Balanced::new(
                        own.into(),
                        endpoints.metrics.clone(),
                        endpoints.metrics.plaintext(Direction::Outbound),
                    )),
                    _watch: None,
                });
            }
        }
    }
    let first_answers = async {
        for w in &waits {
            let mut rx = w.rx.clone();
            let _ = rx.wait_for(|r| !matches!(r, Resolved::Pending)).await;
        }
    };
    if tokio::time::timeout(patience, first_answers).await.is_err() {
        info!(service = %service.name, "some backends of the routes have no answer yet; their share answers 503 until they do");
    }
    // Applied here too, so the router never goes live ahead of its backends' endpoints (the
    // followers may not have run yet); an endpoint that stays keeps its slot either way.
    for w in &waits {
        if let Resolved::Service(set) = &*w.rx.borrow() {
            concrete::update(&w.balanced, set, endpoints, balance);
        }
    }
    let labels = routes
        .table
        .rules()
        .iter()
        .map(|rule| endpoints.metrics.route_label(rule.name()))
        .collect();
    let budgets = routes
        .table
        .rules()
        .iter()
        .map(|_| RetryBudget::default())
        .collect();
    Some(Router {
        routes,
        backends: list,
        labels,
        budgets,
        origin: std::time::Instant::now(),
    })
}

impl Router {
    /// The balancer of the table's Service number `index` (`ServiceId::index`).
    pub(crate) fn backend(&self, index: usize) -> &Arc<Balanced> {
        &self.backends[index].balanced
    }

    /// The retry budget of rule `index`.
    pub(crate) fn budget(&self, index: usize) -> &RetryBudget {
        &self.budgets[index]
    }

    /// `at` in milliseconds on the budgets' clock.
    pub(crate) fn ms_at(&self, at: std::time::Instant) -> u64 {
        // Not `as_millis`: its `u128` arithmetic costs more than the budget itself.
        let since = at.saturating_duration_since(self.origin);
        since
            .as_secs()
            .saturating_mul(1000)
            .saturating_add(u64::from(since.subsec_millis()))
    }

    /// The balancer of opaque TCP's pick, when a TrafficSplit is in force: `Err` with why the
    /// connection is closed when its share cannot be served.
    pub(crate) fn tcp_pick(&self) -> Option<Result<&Arc<Balanced>, String>> {
        let split = self.routes.table.tcp_split()?;
        Some(match split.pick(rand::random()) {
            Ok(backend) => Ok(&self.backends[backend.id().index()].balanced),
            Err(Answer::Error { reason, .. }) => Err(reason.to_string()),
            Err(Answer::Redirect { .. }) => Err("a TCP split cannot redirect".into()),
        })
    }

    /// The routes in force, for `/config`: their names and version, each rule with its
    /// backends and weights (an invalid backend with the status its share gets), and the
    /// TrafficSplit's opaque TCP weights when there is one.
    pub(crate) fn view(&self) -> serde_json::Value {
        use serde_json::json;
        let split = |split: &weft_proxy_route::Split| -> Vec<serde_json::Value> {
            split
                .shares()
                .iter()
                .map(|share| match share {
                    Share::Backend(b) => json!({
                        "service": format!("{}/{}:{}", b.service().namespace, b.service().name, b.service().port),
                        "weight": b.weight(),
                    }),
                    Share::Invalid(i) => json!({
                        "invalid": i.reason(),
                        "status": i.status().as_u16(),
                        "weight": i.weight(),
                    }),
                })
                .collect()
        };
        let table = &self.routes.table;
        json!({
            "version": self.routes.version,
            "names": self.routes.names,
            "rules": table
                .rules()
                .iter()
                .map(|rule| json!({
                    "name": rule.name(),
                    "filters": rule.filters().len(),
                    "backends": split(rule.split()),
                }))
                .collect::<Vec<_>>(),
            "tcp_split": table.tcp_split().map(split),
        })
    }

    /// Whether HTTP requests go through the routes: the table holds HTTP routes (a
    /// TrafficSplit alone still routes HTTP by its one rule) or Service-wide faults.
    pub(crate) fn routes_http(&self) -> bool {
        !self.routes.table.is_empty() || !self.routes.table.faults().is_empty()
    }
}

/// What a routed request still needs once its backend answered: the response filters, and
/// the mirrors whose copy carries the body (sent once the primary has read it). Boxed, and
/// made only when the rule has them, so a plain split costs nothing here.
struct After {
    router: Arc<Router>,
    rule: usize,
    /// The chosen backend's position among the rule's shares.
    share: usize,
    /// Copies to send once the primary is answered: the head, and where.
    mirrors: Vec<(Request<RequestBody>, Arc<Balanced>)>,
    replay: Option<ReplayBody<Streamed>>,
    metrics: Arc<Metrics>,
    permits: Arc<Semaphore>,
    cx: Cx,
}

impl After {
    // Boxed by its maker, so that the request's future carries a pointer only.
    #[allow(clippy::boxed_local)]
    fn finish(self: Box<Self>, result: StageResult) -> StageResult {
        for (mut req, balanced) in self.mirrors {
            match self.replay.as_ref().and_then(ReplayBody::try_clone) {
                Some(copy) => {
                    *req.body_mut() = RequestBody::Replay(copy);
                    mirror_now(&self.metrics, &self.permits, balanced, req, self.cx);
                }
                None => self.metrics.mirror(MirrorResult::Skipped),
            }
        }
        let mut rsp = result?;
        let rule = &self.router.routes.table.rules()[self.rule];
        rule.filter_response(rsp.headers_mut());
        if let Some(Share::Backend(backend)) = rule.split().shares().get(self.share) {
            backend.filter_response(rsp.headers_mut());
        }
        Ok(rsp)
    }
}

/// The HTTP stage of a routed Service: see the module docs. Not an `async fn`: what it decides
/// is done before the request is sent, and the future it returns is the backend's own (with
/// a boxed [`After`] only when the rule changes responses or mirrors a body, or the policy
/// stage's, the backend's with a boxed policy), so a routed request's future is no larger
/// than an unrouted one's.
pub(crate) fn call<'a>(
    router: Arc<Router>,
    rcx: &'a RouteCx,
    fallback: &'a Split,
    req: Request<RequestBody>,
    cx: Cx,
) -> impl Future<Output = StageResult> + Send + 'a {
    let ready = |result| Either::Right(Either::Left(std::future::ready(result)));
    let (mut parts, body) = req.into_parts();
    let routed = match router.routes.table.route_parts(&parts) {
        Route::Unrouted if !router.routes.table.faults().is_empty() => {
            // No route, but the Service's faults apply.
            let target = Target::Unrouted(fallback);
            return Either::Right(Either::Right(Either::Right(Either::Right(
                policy::exchange(router.clone(), rcx, target, parts, body, cx),
            ))));
        }
        Route::Unrouted => {
            return Either::Left(fallback.call(Request::from_parts(parts, body), cx))
        }
        Route::NotFound => {
            let reason = format!(
                "no route of {} matches {} {}",
                router.routes.names.join(", "),
                parts.method,
                parts.uri.path()
            );
            return ready(Err(answered(rcx, cx, StatusCode::NOT_FOUND, reason)));
        }
        Route::Matched(routed) => routed,
    };
    let rule = routed.rule();
    let cx = Cx {
        route: router.labels.get(rule.index()).copied().unwrap_or_default(),
        ..cx
    };
    if let Err(answer) = routed.filter_request(&mut parts, cx.dst.0.port()) {
        return ready(answer_with(rcx, cx, answer, rule.name()));
    }
    let backend = match routed.pick(rand::random()) {
        Ok(backend) => backend,
        Err(answer) => return ready(answer_with(rcx, cx, answer, rule.name())),
    };
    backend.filter_request(&mut parts.headers);
    let share_of = |backend| {
        rule.split()
            .shares()
            .iter()
            .position(|s| matches!(s, Share::Backend(b) if std::ptr::eq(b, backend)))
            .unwrap_or(usize::MAX)
    };
    if policy::needs_policy(&router, Some(rule)) {
        // Faults, timeouts or retries: the policy stage sends it. Mirrors of a request with a
        // body would take turns with its retries for the body, so only bodyless ones go.
        for mirror in routed.mirrors() {
            if !mirror.sample(rand::random()) {
                continue;
            }
            if body.is_end_stream() {
                let balanced = router.backends[mirror.id().index()].balanced.clone();
                mirror_now(&rcx.metrics, &rcx.mirrors, balanced, copy_head(&parts), cx);
            } else {
                rcx.metrics.mirror(MirrorResult::Skipped);
            }
        }
        let target = Target::Rule {
            rule: rule.index(),
            share: share_of(backend),
        };
        return Either::Right(Either::Right(Either::Right(Either::Right(
            policy::exchange(router.clone(), rcx, target, parts, body, cx),
        ))));
    }
    let mut body = body;
    let mut later = Vec::new();
    for mirror in routed.mirrors() {
        if !mirror.sample(rand::random()) {
            continue;
        }
        let balanced = router.backends[mirror.id().index()].balanced.clone();
        if body.is_end_stream() {
            let copy = copy_head(&parts);
            mirror_now(&rcx.metrics, &rcx.mirrors, balanced, copy, cx);
            continue;
        }
        // The body goes to the mirror once the primary has read it (the copies take turns).
        if let RequestBody::Streamed(streamed) = body {
            body = match ReplayBody::new(streamed, DEFAULT_REPLAY_CAP) {
                Ok(replay) => RequestBody::Replay(replay),
                Err(streamed) => RequestBody::Streamed(streamed),
            };
        }
        if matches!(body, RequestBody::Replay(_)) {
            later.push((copy_head(&parts), balanced));
        } else {
            rcx.metrics.mirror(MirrorResult::Skipped);
        }
    }
    let after = (rule.has_response_filters()
        || backend.has_response_filters()
        || !later.is_empty())
    .then(|| {
        let share = share_of(backend);
        let replay = match &body {
            RequestBody::Replay(r) if !later.is_empty() => r.try_clone(),
            _ => None,
        };
        Box::new(After {
            router: router.clone(),
            rule: rule.index(),
            share,
            mirrors: later,
            replay,
            metrics: rcx.metrics.clone(),
            permits: rcx.mirrors.clone(),
            cx,
        })
    });
    let sent = router.backends[backend.id().index()]
        .balanced
        .dispatch(Request::from_parts(parts, body), cx);
    match after {
        None => Either::Right(Either::Right(Either::Left(sent))),
        // `map`, not an `async` block: awaiting a captured future would keep it twice.
        Some(after) => Either::Right(Either::Right(Either::Right(Either::Left(
            sent.map(move |result| after.finish(result)),
        )))),
    }
}

/// The request's head (method, URI, version, headers) with no body, for a mirror.
fn copy_head(parts: &http::request::Parts) -> Request<RequestBody> {
    let mut req = Request::new(RequestBody::Empty);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req
}

/// Sends `req` to `balanced` in the background, its answer dropped, if fewer than
/// [`MAX_MIRRORS_IN_FLIGHT`] copies are in flight.
fn mirror_now(
    metrics: &Arc<Metrics>,
    permits: &Arc<Semaphore>,
    balanced: Arc<Balanced>,
    req: Request<RequestBody>,
    cx: Cx,
) {
    let Ok(permit) = permits.clone().try_acquire_owned() else {
        metrics.mirror(MirrorResult::Dropped);
        return;
    };
    let metrics = metrics.clone();
    tokio::spawn(async move {
        let result = match balanced.call(req, cx).await {
            Ok(rsp) => {
                // Read to the end so an HTTP/1 connection goes back to its pool.
                let _ = http_body_util::BodyExt::collect(rsp.into_body()).await;
                MirrorResult::Sent
            }
            Err(e) => {
                debug!(error = %e, "a mirrored request failed");
                MirrorResult::Failed
            }
        };
        metrics.mirror(result);
        drop(permit);
    });
}

/// A request the routes answer with an error: counted, and the error for the edge to answer.
fn answered(rcx: &RouteCx, cx: Cx, status: StatusCode, reason: String) -> ProxyError {
    let e = ProxyError::Route { status, reason };
    rcx.series
        .routed(cx.route)
        .record(status, cx.start.elapsed());
    debug!(error = %e, dst = %cx.dst, "request answered by its route");
    e
}

/// A filter's or a pick's own answer: a redirect, or an error.
fn answer_with(rcx: &RouteCx, cx: Cx, answer: Answer<'_>, rule: &str) -> StageResult {
    match answer {
        Answer::Redirect { status, location } => {
            rcx.series
                .routed(cx.route)
                .record(status, cx.start.elapsed());
            Ok(redirect(status, location))
        }
        Answer::Error { status, reason } => {
            Err(answered(rcx, cx, status, format!("{rule}: {reason}")))
        }
    }
}

fn redirect(status: StatusCode, location: HeaderValue) -> Response<ResponseBody> {
    let mut rsp = Response::new(ResponseBody::unrecorded(Full::new(Bytes::new())));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(header::LOCATION, location);
    rsp
}
