//! A Service's endpoints as one backend: each request (HTTP) or connection (TCP) picks an
//! endpoint with power of two choices over peak-EWMA latency (`weft-proxy-balance`), and its
//! outcome feeds the endpoint's latency estimate and circuit breaker.
//!
//! The endpoint list is swapped whole when discovery changes it ([`Balanced::set`]); an
//! endpoint that stays keeps its [`Load`] (latency, in-flight count, ejection), so a config
//! update does not reset what the balancer learnt. Readers take the list with one atomic load.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use arc_swap::ArcSwap;
use weft_proxy_balance::{pick, Load, LoadState, Outcome, Pending};
use weft_proxy_metrics::RequestSeries;

use crate::client::{Endpoint, UpstreamVersion};

/// Where one endpoint's traffic goes.
#[derive(Debug)]
pub enum Upstream {
    /// Its proxy, over the mesh hop: one HTTP/2 mTLS connection whatever the app protocol.
    Mesh(Arc<Endpoint>),
    /// The endpoint itself, in plaintext: a pool per HTTP version.
    Plain {
        h1: Arc<Endpoint>,
        h2: Arc<Endpoint>,
    },
}

/// One endpoint of a balanced Service.
#[derive(Debug)]
pub struct Slot {
    /// The app's address (its port is what the far proxy delivers to).
    pub addr: SocketAddr,
    pub load: Arc<Load>,
    pub upstream: Upstream,
    /// Requests to this endpoint, labelled with the Service and the endpoint.
    pub series: Arc<RequestSeries>,
}

impl Slot {
    /// The pool for a request of `version`.
    pub fn endpoint(&self, version: UpstreamVersion) -> &Arc<Endpoint> {
        match (&self.upstream, version) {
            (Upstream::Mesh(e), _) => e,
            (Upstream::Plain { h1, .. }, UpstreamVersion::Http1) => h1,
            (Upstream::Plain { h2, .. }, UpstreamVersion::Http2) => h2,
        }
    }
}

#[derive(Debug, Clone)]
struct SlotRef(Arc<Slot>);

impl AsRef<Load> for SlotRef {
    fn as_ref(&self) -> &Load {
        &self.0.load
    }
}

/// A Service port's endpoints.
#[derive(Debug)]
pub struct Balanced {
    service: Arc<str>,
    slots: ArcSwap<Vec<SlotRef>>,
}

/// The endpoint chosen for one request or connection; finish it with the outcome.
#[derive(Debug)]
pub struct Picked {
    pub slot: Arc<Slot>,
    pending: Pending,
    /// Every endpoint was ejected: chosen among all anyway.
    pub panic: bool,
}

impl Picked {
    /// Records the outcome: the latency from the pick to now, and success or failure.
    pub fn finish(self, success: bool) {
        let outcome = if success {
            Outcome::Success
        } else {
            Outcome::Failure
        };
        self.pending
            .finish(Instant::now(), outcome, &mut rand::rng());
    }
}

impl Balanced {
    /// An empty set for `service` (`namespace/name:port`).
    pub fn new(service: Arc<str>) -> Self {
        Self {
            service,
            slots: ArcSwap::from_pointee(Vec::new()),
        }
    }

    /// The Service this balances for.
    pub fn service(&self) -> &Arc<str> {
        &self.service
    }

    /// Replaces the endpoint list.
    pub fn set(&self, slots: Vec<Arc<Slot>>) {
        self.slots
            .store(Arc::new(slots.into_iter().map(SlotRef).collect()));
    }

    /// The current slot for `addr`, to carry its load over to a new list.
    pub fn slot(&self, addr: SocketAddr) -> Option<Arc<Slot>> {
        self.slots
            .load()
            .iter()
            .find(|s| s.0.addr == addr)
            .map(|s| s.0.clone())
    }

    /// Picks an endpoint, or `None` when the Service has none.
    pub fn pick(&self) -> Option<Picked> {
        let slots = self.slots.load();
        let now = Instant::now();
        let chosen = pick(&slots, now, &mut rand::rng())?;
        let slot = slots.get(chosen.index)?.0.clone();
        let pending = slot.load.start(now);
        Some(Picked {
            slot,
            pending,
            panic: chosen.panic,
        })
    }

    /// Each endpoint's address and load, for `/config`.
    pub fn state(&self) -> Vec<(SocketAddr, LoadState)> {
        let now = Instant::now();
        self.slots
            .load()
            .iter()
            .map(|s| (s.0.addr, s.0.load.state(now)))
            .collect()
    }
}
