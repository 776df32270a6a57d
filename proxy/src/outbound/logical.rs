//! The logical layer of outbound: what an original destination is, as the client named it.
//!
//! A connection to `dst` asks [`Destinations`]. The first connection to a destination starts
//! its discovery watch and waits (up to `WEFT_DISCOVERY_TIMEOUT`) for the control plane's
//! answer; later ones read the answer held. A Service becomes a [`LogicalService`]: its
//! backends (today the Service itself, one concrete backend balanced over its endpoints) behind
//! a [`Split`], living as long as the destination is used, its endpoint list following every
//! discovery update. Anything else is forwarded as it is.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, Weak,
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwapOption;
use futures_util::future::Either;
use http::Request;
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, info, warn};
use weft_proxy_discovery::Resolved;
use weft_proxy_discovery::{Discovery, EndpointSet, RouteState, Routes};
use weft_proxy_http::{
    balance::Balanced,
    body::RequestBody,
    split::Split,
    stage::{Cx, Stage, StageResult},
};
use weft_proxy_metrics::Direction;

use super::{
    concrete,
    endpoint::Endpoints,
    routes::{self, Backends, RouteCx, Router},
};
use crate::config::DiscoveryConfig;

/// What one connection's destination is.
#[derive(Debug, Clone)]
pub(crate) enum Logical {
    /// Forward to the original destination as it is.
    Passthrough,
    /// A Service: its requests and connections go to its backends.
    Service(Arc<LogicalService>),
}

/// A Service as a client addresses it, and the backends its traffic is split over.
#[derive(Debug)]
pub(crate) struct LogicalService {
    /// `namespace/name:port`.
    pub(crate) name: Arc<str>,
    /// Without routes: the Service is its own single backend.
    pub(crate) split: Split,
    /// The Service itself as its own backend, whose endpoints discovery keeps current.
    own: Arc<Balanced>,
    /// The routes in force (HTTPRoutes, a TrafficSplit); `None`: none attached, or not known.
    pub(crate) router: ArcSwapOption<Router>,
    rcx: RouteCx,
    /// The route service's answer for this Service, when a control plane serves routes.
    routes_rx: Option<watch::Receiver<RouteState>>,
    /// The routes the router was built from; held while a router is built.
    routes_applied: tokio::sync::Mutex<Option<Arc<Routes>>>,
    /// Set once the first connections waited for the routes (see `Destinations::resolve`).
    routes_settled: tokio::sync::OnceCell<()>,
    /// Stops the route follower when the Service is dropped.
    _routes_follower: DropGuard,
}

impl LogicalService {
    /// The Service as its own backend.
    pub(crate) fn own(&self) -> &Arc<Balanced> {
        &self.own
    }
}

impl Stage for LogicalService {
    fn call(
        &self,
        req: Request<RequestBody>,
        cx: Cx,
    ) -> impl std::future::Future<Output = StageResult> + Send + '_ {
        // One atomic load when no routes are attached.
        match self.router.load_full() {
            Some(router) if router.routes_http() => {
                Either::Left(routes::call(router, &self.rcx, &self.split, req, cx))
            }
            _ => Either::Right(self.split.call(req, cx)),
        }
    }
}

/// Destinations and what they are.
#[derive(Debug)]
pub(crate) struct Destinations {
    discovery: Arc<Discovery>,
    config: DiscoveryConfig,
    balance: weft_proxy_balance::Settings,
    endpoints: Arc<Endpoints>,
    /// Backend Services of routes, watched by name.
    backends: Backends,
    started: Instant,
    watched: Mutex<HashMap<SocketAddr, Arc<Watched>>>,
}

/// One destination.
#[derive(Debug)]
struct Watched {
    dst: SocketAddr,
    rx: watch::Receiver<Resolved>,
    /// What was last applied, and what it became.
    applied: Mutex<Applied>,
    /// Seconds since the cache started, when a connection last used this destination.
    last_used: AtomicU64,
    /// Stops the destination's follower when it is dropped.
    _stop: tokio_util::sync::DropGuard,
}

#[derive(Debug)]
struct Applied {
    resolved: Resolved,
    logical: Option<Logical>,
}

impl Destinations {
    pub(crate) fn new(
        discovery: Arc<Discovery>,
        config: DiscoveryConfig,
        balance: weft_proxy_balance::Settings,
        endpoints: Endpoints,
    ) -> Arc<Self> {
        let this = Arc::new(Self {
            discovery,
            config,
            balance,
            endpoints: Arc::new(endpoints),
            backends: Backends::default(),
            started: Instant::now(),
            watched: Mutex::new(HashMap::new()),
        });
        tokio::spawn(reap(Arc::downgrade(&this)));
        this
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Arc<Watched>>> {
        self.watched.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// What `dst` is. Waits only for a destination's first answer, and at most the discovery
    /// timeout.
    pub(crate) async fn resolve(self: &Arc<Self>, dst: SocketAddr) -> Logical {
        let dst = SocketAddr::new(dst.ip().to_canonical(), dst.port());
        let watched = {
            let mut all = self.lock();
            match all.get(&dst) {
                Some(w) => w.clone(),
                None => {
                    let Some(rx) = self.discovery.resolve(dst) else {
                        debug!(%dst, "destination table full; forwarding as it is");
                        return Logical::Passthrough;
                    };
                    let stop = tokio_util::sync::CancellationToken::new();
                    let stopped = stop.clone();
                    let watched = Arc::new(Watched {
                        dst,
                        rx,
                        _stop: stop.drop_guard(),
                        applied: Mutex::new(Applied {
                            resolved: Resolved::Pending,
                            logical: None,
                        }),
                        last_used: AtomicU64::new(self.now_secs()),
                    });
                    all.insert(dst, watched.clone());
                    tokio::spawn(follow(
                        Arc::downgrade(self),
                        Arc::downgrade(&watched),
                        stopped,
                    ));
                    watched
                }
            }
        };
        watched.last_used.store(self.now_secs(), Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + self.config.timeout;
        if matches!(*watched.rx.borrow(), Resolved::Pending) {
            let mut rx = watched.rx.clone();
            let answered =
                tokio::time::timeout_at(deadline, rx.wait_for(|r| !matches!(r, Resolved::Pending)))
                    .await;
            if answered.is_err() {
                warn!(%dst, timeout = ?self.config.timeout, "no answer from the control plane in time; forwarding this connection as it is");
                return Logical::Passthrough;
            }
        }
        let logical = self.sync(&watched);
        if let Logical::Service(service) = &logical {
            // The Service's first connections wait (within the same bound) for its routes, so
            // that a canary split holds from the first request; once settled (answered or
            // timed out) no connection waits here again: the follower applies what comes.
            if let Some(rx) = &service.routes_rx {
                service
                    .routes_settled
                    .get_or_init(|| async {
                        let mut rx = rx.clone();
                        let timed_out = tokio::time::timeout_at(
                            deadline,
                            rx.wait_for(|r| !matches!(r, RouteState::Pending)),
                        )
                        .await
                        .is_err();
                        if timed_out {
                            debug!(%dst, "no route answer in time; the Service is balanced as it is until one comes");
                        }
                        self.apply_routes(service).await;
                    })
                    .await;
            }
        }
        logical
    }

    /// Builds `service`'s router from its latest route answer, unless built from it already.
    async fn apply_routes(&self, service: &LogicalService) {
        let Some(rx) = &service.routes_rx else {
            return;
        };
        let mut applied = service.routes_applied.lock().await;
        let RouteState::Known(latest) = rx.borrow().clone() else {
            return;
        };
        if applied.as_ref().is_some_and(|a| Arc::ptr_eq(a, &latest)) {
            return;
        }
        let router = routes::router(
            service,
            latest.clone(),
            &self.backends,
            &self.discovery,
            &self.endpoints,
            &self.balance,
            self.config.timeout,
        )
        .await;
        info!(service = %service.name, version = latest.version, routes = ?latest.names, "routes");
        service.router.store(router.map(Arc::new));
        *applied = Some(latest);
    }

    /// Applies the destination's latest answer if it is not applied yet; returns what the
    /// destination is.
    fn sync(self: &Arc<Self>, watched: &Watched) -> Logical {
        let latest = watched.rx.borrow().clone();
        let mut applied = watched.applied.lock().unwrap_or_else(|p| p.into_inner());
        if let (true, Some(l)) = (applied.resolved == latest, &applied.logical) {
            return l.clone();
        }
        let logical = match &latest {
            Resolved::Pending | Resolved::NotAService => Logical::Passthrough,
            Resolved::Service(set) => {
                let name = service_label(set);
                let service = match &applied.logical {
                    Some(Logical::Service(s)) if *s.name == *name => s.clone(),
                    // A pod's own address is never routed: no route watch for it.
                    _ => self.service(name.into(), set.service.is_some().then_some(watched.dst)),
                };
                concrete::update(&service.own, set, &self.endpoints, &self.balance);
                info!(dst = %watched.dst, service = %service.name, endpoints = set.endpoints.len(), version = set.version, "destination endpoints");
                Logical::Service(service)
            }
        };
        applied.resolved = latest;
        applied.logical = Some(logical.clone());
        logical
    }

    /// A Service that is its own single backend, its routes (at `routed`) followed.
    fn service(
        self: &Arc<Self>,
        name: Arc<str>,
        routed: Option<SocketAddr>,
    ) -> Arc<LogicalService> {
        let metrics = &self.endpoints.metrics;
        let own = Arc::new(Balanced::new(
            name.clone(),
            metrics.clone(),
            metrics.plaintext(Direction::Outbound),
        ));
        let stop = CancellationToken::new();
        let service = Arc::new(LogicalService {
            name,
            split: Split::single(own.clone()),
            own,
            router: ArcSwapOption::empty(),
            rcx: RouteCx::new(metrics),
            routes_rx: routed.and_then(|dst| self.discovery.routes(dst)),
            routes_applied: tokio::sync::Mutex::new(None),
            routes_settled: tokio::sync::OnceCell::new(),
            _routes_follower: stop.clone().drop_guard(),
        });
        if service.routes_rx.is_some() {
            tokio::spawn(follow_routes(
                Arc::downgrade(self),
                Arc::downgrade(&service),
                stop,
            ));
        }
        service
    }

    /// Every destination and what the proxy does with it, for `/config`.
    pub(crate) fn view(&self) -> serde_json::Value {
        use serde_json::json;
        let watched: Vec<Arc<Watched>> = {
            let mut all: Vec<_> = self.lock().values().cloned().collect();
            all.sort_by_key(|w| w.dst);
            all
        };
        let now = self.now_secs();
        let destinations: Vec<serde_json::Value> = watched
            .iter()
            .map(|watched| {
                let resolved = watched.rx.borrow().clone();
                let idle = now.saturating_sub(watched.last_used.load(Ordering::Relaxed));
                let applied = watched.applied.lock().unwrap_or_else(|p| p.into_inner());
                let (balancer, routes) = match &applied.logical {
                    Some(Logical::Service(s)) => (
                        Some(s.own.clone()),
                        s.router.load_full().map(|r| r.view()),
                    ),
                    _ => (None, None),
                };
                drop(applied);
                let mut v = json!({
                    "destination": watched.dst.to_string(),
                    "idle_seconds": idle,
                });
                match resolved {
                    Resolved::Pending => v["kind"] = json!("pending"),
                    Resolved::NotAService => v["kind"] = json!("not_a_service"),
                    Resolved::Service(set) => {
                        v["kind"] = json!("service");
                        v["version"] = json!(set.version);
                        v["service"] = json!(set.service.as_ref().map(|s| s.to_string()));
                        v["routes"] = json!(routes);
                        let loads: HashMap<SocketAddr, _> = balancer
                            .map(|b| b.state().into_iter().collect())
                            .unwrap_or_default();
                        v["endpoints"] = set
                            .endpoints
                            .values()
                            .map(|ep| {
                                let load = loads.get(&ep.addr);
                                json!({
                                    "address": ep.addr.to_string(),
                                    "weight": ep.weight,
                                    "identity": ep.mesh.as_ref().map(|m| m.identity.to_string()),
                                    "proxy_port": ep.mesh.as_ref().map(|m| m.inbound_port),
                                    "pod": ep.pod,
                                    "zone": ep.zone,
                                    "rtt_ms": load.map(|l| l.rtt.as_secs_f64() * 1000.0),
                                    "in_flight": load.map(|l| l.pending),
                                    "consecutive_failures": load.map(|l| l.consecutive_failures),
                                    "ejected_for_ms": load.and_then(|l| l.ejected_for).map(|d| d.as_millis() as u64),
                                    "ejections": load.map(|l| l.ejections),
                                })
                            })
                            .collect();
                    }
                }
                v
            })
            .collect();
        json!({
            "control_plane": self.discovery.control_plane(),
            "destinations": destinations,
        })
    }
}

/// `namespace/name:port`, or the address for a pod's own.
fn service_label(set: &EndpointSet) -> String {
    match &set.service {
        Some(s) => s.to_string(),
        None => set
            .endpoints
            .keys()
            .next()
            .map(|a| a.to_string())
            .unwrap_or_default(),
    }
}

/// Applies each answer as it arrives, so long-lived connections see endpoint changes, until
/// the destination is dropped.
async fn follow(
    destinations: Weak<Destinations>,
    watched: Weak<Watched>,
    stopped: tokio_util::sync::CancellationToken,
) {
    let Some(mut rx) = watched.upgrade().map(|w| w.rx.clone()) else {
        return;
    };
    loop {
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = stopped.cancelled() => return,
        }
        let (Some(destinations), Some(watched)) = (destinations.upgrade(), watched.upgrade())
        else {
            return;
        };
        destinations.sync(&watched);
    }
}

/// Rebuilds a Service's router on each route answer, until the Service is dropped.
async fn follow_routes(
    destinations: Weak<Destinations>,
    service: Weak<LogicalService>,
    stopped: CancellationToken,
) {
    let Some(mut rx) = service.upgrade().and_then(|s| s.routes_rx.clone()) else {
        return;
    };
    loop {
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = stopped.cancelled() => return,
        }
        let (Some(destinations), Some(service)) = (destinations.upgrade(), service.upgrade())
        else {
            return;
        };
        destinations.apply_routes(&service).await;
    }
}

/// Drops destinations idle past the idle timeout that no connection holds.
async fn reap(destinations: Weak<Destinations>) {
    let period = match destinations.upgrade() {
        Some(r) => {
            (r.config.idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(30))
        }
        None => return,
    };
    let mut tick = tokio::time::interval(period);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(destinations) = destinations.upgrade() else {
            return;
        };
        let now = destinations.now_secs();
        let idle = destinations.config.idle_timeout.as_secs();
        destinations.lock().retain(|dst, watched| {
            let unused = now.saturating_sub(watched.last_used.load(Ordering::Relaxed)) >= idle;
            let held = match &watched
                .applied
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .logical
            {
                Some(Logical::Service(s)) => Arc::strong_count(s) > 1,
                _ => false,
            };
            let keep = !unused || held;
            if !keep {
                debug!(%dst, "destination idle; no longer watched");
            }
            keep
        });
    }
}
