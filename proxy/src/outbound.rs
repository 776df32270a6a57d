//! Outbound routing with discovery: what an original destination is, and where its traffic
//! goes.
//!
//! A connection to `dst` asks the [`Router`]. The first connection to a destination starts its
//! discovery watch and waits (up to `WEFT_DISCOVERY_TIMEOUT`) for the control plane's answer;
//! later ones read the answer held. A Service gets a [`Balanced`] backend that lives as long as
//! the destination is used: each discovery update swaps its endpoint list, keeping the load
//! state of endpoints that stay. Anything else is forwarded as it is.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, Weak,
    },
    time::{Duration, Instant},
};

use tokio::sync::watch;
use tracing::{debug, info, warn};
use weft_proxy_balance::Load;
use weft_proxy_discovery::{Discovery, EndpointSet, Resolved};
use weft_proxy_http::{
    balanced::{Balanced, Slot, Upstream},
    client::{MeshConnect, UpstreamVersion},
    Upstreams,
};
use weft_proxy_identity::MeshTls;
use weft_proxy_metrics::{Destination, Metrics};

use crate::config::DiscoveryConfig;

/// What to do with one connection.
#[derive(Debug, Clone)]
pub(crate) enum Resolution {
    /// Forward to the original destination as it is.
    Passthrough,
    /// Balance over a Service's endpoints.
    Balanced(Arc<Balanced>),
}

/// Destinations and their backends.
#[derive(Debug)]
pub(crate) struct Router {
    discovery: Arc<Discovery>,
    config: DiscoveryConfig,
    balance: weft_proxy_balance::Settings,
    upstreams: Arc<Upstreams>,
    tls: Arc<MeshTls>,
    own_id: Arc<str>,
    metrics: Arc<Metrics>,
    started: Instant,
    routes: Mutex<HashMap<SocketAddr, Arc<Route>>>,
}

/// One destination.
#[derive(Debug)]
struct Route {
    dst: SocketAddr,
    rx: watch::Receiver<Resolved>,
    /// What was last applied, and the backend built from it.
    applied: Mutex<Applied>,
    /// Seconds since the router started, when a connection last used this route.
    last_used: AtomicU64,
    /// Stops the route's follower when the route is dropped.
    _stop: tokio_util::sync::DropGuard,
}

#[derive(Debug)]
struct Applied {
    resolved: Resolved,
    resolution: Option<Resolution>,
}

impl Router {
    pub(crate) fn new(
        discovery: Arc<Discovery>,
        config: DiscoveryConfig,
        balance: weft_proxy_balance::Settings,
        upstreams: Arc<Upstreams>,
        tls: Arc<MeshTls>,
        own_id: Arc<str>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let router = Arc::new(Self {
            discovery,
            config,
            balance,
            upstreams,
            tls,
            own_id,
            metrics,
            started: Instant::now(),
            routes: Mutex::new(HashMap::new()),
        });
        tokio::spawn(reap(Arc::downgrade(&router)));
        router
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Arc<Route>>> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// What `dst` is. Waits only for a destination's first answer, and at most the discovery
    /// timeout.
    pub(crate) async fn resolve(self: &Arc<Self>, dst: SocketAddr) -> Resolution {
        let dst = SocketAddr::new(dst.ip().to_canonical(), dst.port());
        let route = {
            let mut routes = self.lock();
            match routes.get(&dst) {
                Some(r) => r.clone(),
                None => {
                    let Some(rx) = self.discovery.resolve(dst) else {
                        debug!(%dst, "destination table full; forwarding as it is");
                        return Resolution::Passthrough;
                    };
                    let stop = tokio_util::sync::CancellationToken::new();
                    let stopped = stop.clone();
                    let route = Arc::new(Route {
                        dst,
                        rx,
                        _stop: stop.drop_guard(),
                        applied: Mutex::new(Applied {
                            resolved: Resolved::Pending,
                            resolution: None,
                        }),
                        last_used: AtomicU64::new(self.now_secs()),
                    });
                    routes.insert(dst, route.clone());
                    tokio::spawn(follow(
                        Arc::downgrade(self),
                        Arc::downgrade(&route),
                        stopped,
                    ));
                    route
                }
            }
        };
        route.last_used.store(self.now_secs(), Ordering::Relaxed);
        if matches!(*route.rx.borrow(), Resolved::Pending) {
            let mut rx = route.rx.clone();
            let answered = tokio::time::timeout(
                self.config.timeout,
                rx.wait_for(|r| !matches!(r, Resolved::Pending)),
            )
            .await;
            if answered.is_err() {
                warn!(%dst, timeout = ?self.config.timeout, "no answer from the control plane in time; forwarding this connection as it is");
                return Resolution::Passthrough;
            }
        }
        self.sync(&route)
    }

    /// Applies the route's latest answer if it is not applied yet; returns the resolution.
    fn sync(&self, route: &Route) -> Resolution {
        let latest = route.rx.borrow().clone();
        let mut applied = route.applied.lock().unwrap_or_else(|p| p.into_inner());
        if let (true, Some(r)) = (applied.resolved == latest, &applied.resolution) {
            return r.clone();
        }
        let resolution = match &latest {
            Resolved::Pending | Resolved::NotAService => Resolution::Passthrough,
            Resolved::Service(set) => {
                let balancer = match &applied.resolution {
                    Some(Resolution::Balanced(b)) if **b.service() == *service_label(set) => {
                        b.clone()
                    }
                    _ => Arc::new(Balanced::new(service_label(set).into())),
                };
                self.set_endpoints(&balancer, set);
                info!(dst = %route.dst, service = %balancer.service(), endpoints = set.endpoints.len(), version = set.version, "destination endpoints");
                Resolution::Balanced(balancer)
            }
        };
        applied.resolved = latest;
        applied.resolution = Some(resolution.clone());
        resolution
    }

    /// The balancer's new endpoint list, reusing the slots (and load state) of endpoints that
    /// stay as they were.
    fn set_endpoints(&self, balancer: &Balanced, set: &EndpointSet) {
        let mut slots = Vec::with_capacity(set.endpoints.len());
        for ep in set.endpoints.values() {
            let same_peer = |slot: &Slot| match (&slot.upstream, &ep.mesh) {
                (Upstream::Mesh(e), Some(m)) => {
                    e.addr() == SocketAddr::new(ep.addr.ip(), m.inbound_port)
                        && e.mesh()
                            .is_some_and(|c| *c.server_id == *m.identity.to_string())
                }
                (Upstream::Plain { .. }, None) => true,
                _ => false,
            };
            if let Some(slot) = balancer
                .slot(ep.addr)
                .filter(|s| s.load.weight() == ep.weight.max(1) && same_peer(s))
            {
                slots.push(slot);
                continue;
            }
            let (upstream, tls, server_id) = match &ep.mesh {
                Some(m) => {
                    let server_id: Arc<str> = m.identity.to_string().into();
                    let tls = match self.tls.client_config(&m.identity) {
                        Ok(t) => t,
                        Err(e) => {
                            warn!(endpoint = %ep.addr, identity = %m.identity, error = %e, "no TLS config for the endpoint; leaving it out");
                            continue;
                        }
                    };
                    let connect = MeshConnect {
                        tls,
                        server_id: server_id.clone(),
                    };
                    let peer = SocketAddr::new(ep.addr.ip(), m.inbound_port);
                    (
                        Upstream::Mesh(self.upstreams.mesh(peer, connect)),
                        true,
                        server_id,
                    )
                }
                None => (
                    Upstream::Plain {
                        h1: self.upstreams.endpoint(ep.addr, UpstreamVersion::Http1),
                        h2: self.upstreams.endpoint(ep.addr, UpstreamVersion::Http2),
                    },
                    false,
                    Arc::from(""),
                ),
            };
            let series = self.metrics.endpoint(Destination {
                tls,
                client_id: if tls {
                    self.own_id.clone()
                } else {
                    Arc::from("")
                },
                server_id,
                service: balancer.service().clone(),
                endpoint: ep.addr.to_string().into(),
            });
            slots.push(Arc::new(Slot {
                addr: ep.addr,
                load: Arc::new(Load::new(ep.weight, &self.balance)),
                upstream,
                series,
            }));
        }
        balancer.set(slots);
    }

    /// Every destination and what the proxy does with it, for `/config`.
    pub(crate) fn view(&self) -> serde_json::Value {
        use serde_json::json;
        let routes: Vec<Arc<Route>> = {
            let mut all: Vec<_> = self.lock().values().cloned().collect();
            all.sort_by_key(|r| r.dst);
            all
        };
        let now = self.now_secs();
        let destinations: Vec<serde_json::Value> = routes
            .iter()
            .map(|route| {
                let resolved = route.rx.borrow().clone();
                let idle = now.saturating_sub(route.last_used.load(Ordering::Relaxed));
                let applied = route.applied.lock().unwrap_or_else(|p| p.into_inner());
                let balancer = match &applied.resolution {
                    Some(Resolution::Balanced(b)) => Some(b.clone()),
                    _ => None,
                };
                drop(applied);
                let mut v = json!({
                    "destination": route.dst.to_string(),
                    "idle_seconds": idle,
                });
                match resolved {
                    Resolved::Pending => v["kind"] = json!("pending"),
                    Resolved::NotAService => v["kind"] = json!("not_a_service"),
                    Resolved::Service(set) => {
                        v["kind"] = json!("service");
                        v["version"] = json!(set.version);
                        v["service"] = json!(set.service.as_ref().map(|s| s.to_string()));
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
/// the route is dropped.
async fn follow(
    router: Weak<Router>,
    route: Weak<Route>,
    stopped: tokio_util::sync::CancellationToken,
) {
    let Some(mut rx) = route.upgrade().map(|r| r.rx.clone()) else {
        return;
    };
    loop {
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = stopped.cancelled() => return,
        }
        let (Some(router), Some(route)) = (router.upgrade(), route.upgrade()) else {
            return;
        };
        router.sync(&route);
    }
}

/// Drops routes idle past the idle timeout whose backend no connection holds.
async fn reap(router: Weak<Router>) {
    let period = match router.upgrade() {
        Some(r) => {
            (r.config.idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(30))
        }
        None => return,
    };
    let mut tick = tokio::time::interval(period);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(router) = router.upgrade() else {
            return;
        };
        let now = router.now_secs();
        let idle = router.config.idle_timeout.as_secs();
        router.lock().retain(|dst, route| {
            let unused = now.saturating_sub(route.last_used.load(Ordering::Relaxed)) >= idle;
            let held = match &route
                .applied
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .resolution
            {
                Some(Resolution::Balanced(b)) => Arc::strong_count(b) > 1,
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
