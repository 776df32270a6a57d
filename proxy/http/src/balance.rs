//! A Service's endpoints as one backend: each request (HTTP) or connection (TCP) picks an
//! endpoint with power of two choices over peak-EWMA latency (`weft-proxy-balance`), and its
//! outcome feeds the endpoint's latency estimate and circuit breaker.
//!
//! The endpoint list is swapped whole when discovery changes it ([`Balanced::set`]); an
//! endpoint that stays keeps its [`Load`] (latency, in-flight count, ejection), so a config
//! update does not reset what the balancer learnt. Readers take the list with one atomic load.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use arc_swap::ArcSwap;
use futures_util::future::Either;
use http::Request;
use tracing::debug;
use weft_proxy_balance::{pick, Load, LoadState, Outcome, Pending};
use weft_proxy_metrics::{Metrics, RequestSeries};

use crate::{
    body::RequestBody,
    error::ProxyError,
    forward::{send, Chosen, Forward},
    stage::{Cx, Stage, StageResult},
};

/// One endpoint of a balanced Service.
#[derive(Debug)]
pub struct Slot {
    /// The app's address (its port is what the far proxy delivers to).
    pub addr: SocketAddr,
    pub load: Arc<Load>,
    /// The endpoint's stage: its pools, and its series (labelled with the Service and the
    /// endpoint).
    pub forward: Forward,
}

#[derive(Debug, Clone)]
struct SlotRef(Arc<Slot>);

impl AsRef<Load> for SlotRef {
    fn as_ref(&self) -> &Load {
        &self.0.load
    }
}

/// A Service port's endpoints: the concrete stage, which picks an endpoint per request.
#[derive(Debug)]
pub struct Balanced {
    service: Arc<str>,
    slots: ArcSwap<Vec<SlotRef>>,
    /// Counts requests answered 503 for want of endpoints.
    metrics: Arc<Metrics>,
    /// Where those requests are counted.
    unrouted: Arc<RequestSeries>,
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
    /// An empty set for `service` (`namespace/name:port`). Requests that find no endpoint are
    /// counted in `unrouted`.
    pub fn new(service: Arc<str>, metrics: Arc<Metrics>, unrouted: Arc<RequestSeries>) -> Self {
        Self {
            service,
            slots: ArcSwap::from_pointee(Vec::new()),
            metrics,
            unrouted,
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
        self.pick_avoiding(None)
    }

    /// Picks an endpoint other than `avoid` where the Service has another (a retry goes
    /// elsewhere when it can): up to three draws, then whatever the last one gave.
    pub fn pick_avoiding(&self, avoid: Option<SocketAddr>) -> Option<Picked> {
        let slots = self.slots.load();
        let now = Instant::now();
        let mut rng = rand::rng();
        let mut chosen = pick(&slots, now, &mut rng)?;
        if let Some(avoid) = avoid.filter(|_| slots.len() > 1) {
            for _ in 0..3 {
                if slots.get(chosen.index).is_some_and(|s| s.0.addr != avoid) {
                    break;
                }
                chosen = pick(&slots, now, &mut rng)?;
            }
        }
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

impl Chosen for Picked {
    fn forward(&self) -> &Forward {
        &self.slot.forward
    }

    fn finish(self, success: bool) {
        Picked::finish(self, success)
    }
}

impl Balanced {
    /// [`Stage::call`], as a future that does not borrow the balancer (the pick owns what it
    /// needs), for a caller whose balancer may be replaced while the request runs (routes).
    pub fn dispatch(
        &self,
        req: Request<RequestBody>,
        cx: Cx,
    ) -> impl std::future::Future<Output = StageResult> + Send + 'static {
        self.dispatch_to_other(req, cx, None, &mut None)
    }

    /// [`Balanced::dispatch`] to an endpoint other than `avoid` where there is one (a retry);
    /// the endpoint chosen goes to `chosen`. The future is returned alone, so that the caller
    /// can pin it where it lands (it is the endpoint stage's, about 2 KiB).
    pub fn dispatch_to_other(
        &self,
        req: Request<RequestBody>,
        cx: Cx,
        avoid: Option<SocketAddr>,
        chosen: &mut Option<SocketAddr>,
    ) -> impl std::future::Future<Output = StageResult> + Send + 'static {
        // Not an `async fn`: the endpoint stage holds the pick and reports its outcome, so this
        // stage's future is the endpoint stage's, with no second copy of the request.
        let picked = self.pick_avoiding(avoid);
        *chosen = picked.as_ref().map(|p| p.slot.addr);
        match picked {
            Some(picked) => Either::Left(send(picked, req, cx)),
            None => {
                self.metrics.no_endpoints("http");
                let e = ProxyError::NoEndpoints {
                    service: self.service.clone(),
                };
                self.unrouted
                    .routed(cx.route)
                    .record(e.status(), cx.start.elapsed());
                debug!(error = %e, dst = %cx.dst, "request refused");
                Either::Right(std::future::ready(Err(e)))
            }
        }
    }
}

impl Stage for Balanced {
    fn call(
        &self,
        req: Request<RequestBody>,
        cx: Cx,
    ) -> impl std::future::Future<Output = StageResult> + Send + '_ {
        self.dispatch(req, cx)
    }
}
