//! One endpoint's shared load: latency, requests in flight, circuit breaker.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::circuit::{Availability, Circuit};
use crate::ewma::{self, PeakEwma};
use crate::Settings;

/// One endpoint's load, shared by every task that sends it requests (`Arc<Load>`).
///
/// All of it sits behind one `Mutex`, held for a few arithmetic operations per call. An atomic
/// in-flight counter beside it would save nothing: `start` and `finish` take the lock anyway
/// (the probe slot, the estimate), and `pick` reads cost and availability together.
#[derive(Debug)]
pub struct Load {
    weight: u32,
    settings: Settings,
    inner: Mutex<Inner>,
}

/// How a request ended, as the caller judges it (a connect error, a reset, a 5xx: the caller
/// decides what counts against the endpoint).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The endpoint answered; its latency feeds the estimate.
    Success,
    /// The endpoint failed; it counts towards ejection and can only raise the estimate.
    Failure,
}

/// A request in flight to one endpoint, from [`Load::start`].
///
/// End it with [`Pending::finish`]. Dropping it instead (the request was cancelled) only takes
/// it out of the in-flight count and, if it was a half-open endpoint's probe, frees the probe
/// slot so that another request can probe.
#[derive(Debug)]
#[must_use = "dropping a Pending counts its request as cancelled"]
pub struct Pending {
    /// `None` once finished, so that `Drop` does nothing more.
    load: Option<Arc<Load>>,
    started: Instant,
    probe: bool,
}

/// A snapshot of one endpoint's load, for the admin page and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadState {
    /// The latency estimate at the time asked, decayed since its last update.
    pub rtt: Duration,
    /// Requests in flight.
    pub pending: u32,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// The ejection time left; `None` when not ejected (closed or half-open).
    pub ejected_for: Option<Duration>,
    /// Ejections since the endpoint was added.
    pub ejections: u64,
    /// The weight in use (at least 1).
    pub weight: u32,
    /// The ejection is over and the endpoint waits for (or has in flight) its one probe.
    pub half_open: bool,
}

/// What `pick` needs to know about one candidate, read under one lock.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Candidate {
    pub(crate) cost: f64,
    pub(crate) availability: Availability,
}

#[derive(Debug)]
struct Inner {
    rtt: PeakEwma,
    pending: u32,
    circuit: Circuit,
    /// No request has started yet.
    fresh: bool,
}

impl Load {
    /// A new endpoint with its latency estimate at `settings.default_rtt`.
    ///
    /// A `weight` of 0 is taken as 1: an endpoint that should get no traffic is one that
    /// discovery removes, and a zero here would only make its cost infinite, which still sends
    /// it traffic when it is the last one standing.
    pub fn new(weight: u32, settings: &Settings) -> Self {
        Self {
            weight: weight.max(1),
            settings: *settings,
            inner: Mutex::new(Inner {
                rtt: PeakEwma::new(settings.default_rtt),
                pending: 0,
                circuit: Circuit::new(settings),
                fresh: true,
            }),
        }
    }

    /// The weight in use (at least 1).
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// Counts a request in flight from `now`.
    ///
    /// If the endpoint is half-open and `pick` reserved its probe slot (or the slot is free),
    /// this request is the probe: its outcome alone decides whether the endpoint comes back.
    pub fn start(self: &Arc<Self>, now: Instant) -> Pending {
        let mut inner = self.lock();
        inner.pending = inner.pending.saturating_add(1);
        inner.fresh = false;
        inner.rtt.start(now);
        let probe = inner.circuit.start(now);
        drop(inner);
        Pending {
            load: Some(Arc::clone(self)),
            started: now,
            probe,
        }
    }

    /// The endpoint's state at `now`.
    pub fn state(&self, now: Instant) -> LoadState {
        let inner = self.lock();
        LoadState {
            rtt: ewma::duration(inner.rtt.get(now, self.settings.decay)),
            pending: inner.pending,
            consecutive_failures: inner.circuit.consecutive_failures(),
            ejected_for: inner.circuit.ejected_for(now),
            ejections: inner.circuit.ejections(),
            weight: self.weight,
            half_open: inner.circuit.half_open(now),
        }
    }

    /// Cost and availability at `now`: latency × (requests in flight + 1) ÷ weight.
    ///
    /// An endpoint that has never had a request costs nothing, so each new endpoint gets one at
    /// once and is measured. Otherwise `default_rtt`, which has to be conservative, would
    /// starve a new endpoint faster than that at light load until the other endpoints'
    /// estimates decayed past it (11 s for 30 ms against 10 ms at the default decay). With that
    /// one request in flight it costs `default_rtt` × 2 like any endpoint, so it is not flooded
    /// before its first response.
    ///
    /// A half-open endpoint waiting for its probe costs nothing too: the probe is how it gets
    /// measured again. Priced by its old estimate it would lose every draw to endpoints whose
    /// estimates are fresh (one failure slower than their successes put it behind by the
    /// decay's ten seconds or more), stay half-open without a probe, and take no traffic
    /// long after its backoff ended.
    pub(crate) fn candidate(&self, now: Instant) -> Candidate {
        let inner = self.lock();
        let availability = inner.circuit.availability(now);
        let rtt = if inner.fresh || availability == Availability::Probe {
            0.0
        } else {
            inner.rtt.get(now, self.settings.decay)
        };
        Candidate {
            cost: rtt * (f64::from(inner.pending) + 1.0) / f64::from(self.weight),
            availability,
        }
    }

    /// Reserves the probe slot of a half-open endpoint that `pick` chose.
    pub(crate) fn reserve(&self, now: Instant) -> bool {
        self.lock().circuit.reserve(now)
    }

    fn finish<R: Rng + ?Sized>(
        &self,
        pending: &Pending,
        now: Instant,
        outcome: Outcome,
        rng: &mut R,
    ) {
        let rtt = now.saturating_duration_since(pending.started);
        let settings = &self.settings;
        let mut inner = self.lock();
        inner.pending = inner.pending.saturating_sub(1);
        match outcome {
            Outcome::Success => {
                if inner.circuit.success(pending.probe, settings) {
                    // The endpoint is back: its estimate is what it measures now. The one it
                    // had was raised by the failures that ejected it and, blended slowly as
                    // every estimate is, would keep a recovered endpoint out of traffic for
                    // about the decay time.
                    inner.rtt.restart(now, rtt);
                } else {
                    inner.rtt.success(now, rtt, settings.decay);
                }
            }
            Outcome::Failure => {
                inner.rtt.failure(now, rtt);
                inner.circuit.failure(now, pending.probe, settings, rng);
            }
        }
    }

    fn cancel(&self, probe: bool) {
        let mut inner = self.lock();
        inner.pending = inner.pending.saturating_sub(1);
        inner.circuit.cancel(probe);
    }

    /// The state is consistent between calls (no call panics half way), so a poisoned lock is
    /// safe to keep using.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Pending {
    /// Ends the request at `now`: records its latency (`now` − start) and its outcome.
    ///
    /// `rng` draws the ejection jitter when this failure ejects the endpoint (the proxy passes
    /// `rand::rng()`; tests pass a seeded one). It is not touched otherwise.
    pub fn finish<R: Rng + ?Sized>(mut self, now: Instant, outcome: Outcome, rng: &mut R) {
        if let Some(load) = self.load.take() {
            load.finish(&self, now, outcome, rng);
        }
    }

    /// Whether this request is a half-open endpoint's probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// When the request started.
    pub fn started(&self) -> Instant {
        self.started
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(load) = self.load.take() {
            load.cancel(self.probe);
        }
    }
}
