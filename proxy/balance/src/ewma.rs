//! Peak-EWMA latency, as Finagle and Linkerd (tower's `PeakEwma`) estimate it.

use std::time::{Duration, Instant};

/// The estimate as read never drops below this, so that an idle endpoint's cost stays
/// proportional to its requests in flight. It is below any network round trip.
const FLOOR_NS: f64 = 1_000.0;

/// One endpoint's latency estimate, in nanoseconds.
///
/// Successes move it: a sample above the estimate replaces it at once (the peak), a lower one
/// is blended in with a weight that grows with the time since the last update. Between
/// updates the estimate *as read* decays towards zero with the same time constant, as tower's
/// does: an endpoint that stopped getting traffic because it looked slow is tried again once
/// enough time has passed, and the new sample puts its estimate back where it belongs.
#[derive(Debug)]
pub(crate) struct PeakEwma {
    estimate_ns: f64,
    /// When the estimate last changed, from which it decays; `None` until the first request
    /// starts, so that an endpoint nobody has tried keeps its default.
    updated: Option<Instant>,
    /// Whether the estimate comes from a response rather than the default. The first
    /// measurement replaces the default whatever its size: the default is a guess.
    measured: bool,
}

impl PeakEwma {
    pub(crate) fn new(default_rtt: Duration) -> Self {
        Self {
            estimate_ns: nanos(default_rtt),
            updated: None,
            measured: false,
        }
    }

    /// The estimate at `now`, decayed since the last update.
    pub(crate) fn get(&self, now: Instant, decay: Duration) -> f64 {
        let decayed = match self.updated {
            None => self.estimate_ns,
            Some(at) => self.estimate_ns * retained(now.saturating_duration_since(at), decay),
        };
        decayed.max(FLOOR_NS)
    }

    /// A request starts: the default starts decaying from the first one, so that an endpoint
    /// whose first request was cancelled is not stuck at the default for good.
    pub(crate) fn start(&mut self, now: Instant) {
        self.updated.get_or_insert(now);
    }

    /// Records a successful response's latency.
    pub(crate) fn success(&mut self, now: Instant, rtt: Duration, decay: Duration) {
        let rtt = nanos(rtt);
        match self.updated {
            Some(at) if self.measured && rtt <= self.estimate_ns => {
                let w = retained(now.saturating_duration_since(at), decay);
                self.estimate_ns = self.estimate_ns * w + rtt * (1.0 - w);
            }
            // A peak, or the first measurement.
            _ => self.estimate_ns = rtt,
        }
        self.updated = Some(now);
        self.measured = true;
    }

    /// Starts over from one measured latency, forgetting the estimate before it.
    pub(crate) fn restart(&mut self, now: Instant, rtt: Duration) {
        self.estimate_ns = nanos(rtt);
        self.updated = Some(now);
        self.measured = true;
    }

    /// Records a failed response's latency. A failure can raise the estimate (a timeout is
    /// slow) but never lower it, so an endpoint that fails fast does not look fast. It counts
    /// as a sample no faster than the estimate: the decay restarts from the estimate's last
    /// value, so an endpoint that fails between successes does not gain the decay that an idle
    /// one gets, while one that only fails is still retried as its estimate decays (if the
    /// circuit breaker lets it).
    pub(crate) fn failure(&mut self, now: Instant, rtt: Duration) {
        let rtt = nanos(rtt);
        if rtt > self.estimate_ns {
            self.estimate_ns = rtt;
            self.measured = true;
        }
        self.updated = Some(now);
    }
}

/// The share of the old estimate that survives `elapsed`: `exp(-elapsed / decay)`.
fn retained(elapsed: Duration, decay: Duration) -> f64 {
    if elapsed.is_zero() {
        1.0
    } else if decay.is_zero() {
        0.0
    } else {
        (-elapsed.as_secs_f64() / decay.as_secs_f64()).exp()
    }
}

fn nanos(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

/// Nanoseconds back to a `Duration`, saturating (the estimate is finite and non-negative, but
/// a `Duration` cannot hold every `f64`).
pub(crate) fn duration(ns: f64) -> Duration {
    Duration::try_from_secs_f64(ns / 1e9).unwrap_or(Duration::MAX)
}
