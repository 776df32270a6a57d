//! Failure accrual: consecutive failures eject an endpoint, a single probe brings it back.

use std::time::{Duration, Instant};

use rand::Rng;

use crate::Settings;

/// How long a probe slot that `pick` reserved waits for the `start` that should follow it.
/// `pick` and `start` run back to back, so this only matters if a caller drops a pick on the
/// floor; without it the endpoint would stay half-open with no probe forever.
const RESERVATION_LAPSE: Duration = Duration::from_secs(1);

/// Whether `pick` may choose an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Availability {
    /// The circuit is closed.
    Ready,
    /// Half-open with the probe slot free: choosing it must reserve the slot.
    Probe,
    /// Ejected, or half-open with its probe taken.
    Ejected,
}

/// One endpoint's circuit breaker.
#[derive(Debug)]
pub(crate) struct Circuit {
    state: State,
    consecutive_failures: u32,
    ejections: u64,
    /// The next ejection's length before jitter: `min_ejection`, doubled by each ejection that
    /// follows a failed probe, back to `min_ejection` when a probe succeeds.
    next_backoff: Duration,
}

#[derive(Debug)]
enum State {
    Closed,
    /// Ejected until `until`, half-open from then on.
    Open {
        until: Instant,
        probe: Probe,
    },
}

#[derive(Clone, Copy, Debug)]
enum Probe {
    Free,
    /// `pick` chose this endpoint; the next `start` is the probe.
    Reserved {
        at: Instant,
    },
    /// The probe request is in flight; only its outcome (or cancellation) changes the state.
    InFlight,
}

impl Circuit {
    pub(crate) fn new(settings: &Settings) -> Self {
        Self {
            state: State::Closed,
            consecutive_failures: 0,
            ejections: 0,
            next_backoff: settings.min_ejection,
        }
    }

    pub(crate) fn availability(&self, now: Instant) -> Availability {
        match self.state {
            State::Closed => Availability::Ready,
            State::Open { until, .. } if now < until => Availability::Ejected,
            State::Open { probe, .. } => match probe {
                Probe::Free => Availability::Probe,
                Probe::Reserved { at }
                    if now.saturating_duration_since(at) >= RESERVATION_LAPSE =>
                {
                    Availability::Probe
                }
                Probe::Reserved { .. } | Probe::InFlight => Availability::Ejected,
            },
        }
    }

    /// Takes the probe slot for a request `pick` chose; false if it is no longer free.
    pub(crate) fn reserve(&mut self, now: Instant) -> bool {
        match self.availability(now) {
            Availability::Ready => true,
            Availability::Ejected => false,
            Availability::Probe => {
                if let State::Open { probe, .. } = &mut self.state {
                    *probe = Probe::Reserved { at: now };
                }
                true
            }
        }
    }

    /// A request starts; true if it is the probe. A reserved slot becomes this request's, and so
    /// does a free one (a caller that starts without `pick` still probes one request at a time).
    /// A request started while ejected (panic mode) or while another probe is in flight is an
    /// ordinary request whose outcome does not move the circuit.
    pub(crate) fn start(&mut self, now: Instant) -> bool {
        match &mut self.state {
            State::Open { until, probe } if now >= *until => match probe {
                Probe::Free | Probe::Reserved { .. } => {
                    *probe = Probe::InFlight;
                    true
                }
                Probe::InFlight => false,
            },
            _ => false,
        }
    }

    /// A success; true if it was the probe that closed the circuit.
    pub(crate) fn success(&mut self, probe: bool, settings: &Settings) -> bool {
        self.consecutive_failures = 0;
        if probe && self.probing() {
            self.state = State::Closed;
            self.next_backoff = settings.min_ejection;
            return true;
        }
        false
    }

    pub(crate) fn failure<R: Rng + ?Sized>(
        &mut self,
        now: Instant,
        probe: bool,
        settings: &Settings,
        rng: &mut R,
    ) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let eject = match self.state {
            State::Closed => {
                settings.failure_threshold > 0
                    && self.consecutive_failures >= settings.failure_threshold
            }
            State::Open { .. } => probe && self.probing(),
        };
        if eject {
            self.eject(now, settings, rng);
        }
    }

    /// A request was dropped without an outcome: a probe gives its slot back.
    pub(crate) fn cancel(&mut self, probe: bool) {
        if probe {
            if let State::Open {
                probe: slot @ Probe::InFlight,
                ..
            } = &mut self.state
            {
                *slot = Probe::Free;
            }
        }
    }

    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    pub(crate) fn ejections(&self) -> u64 {
        self.ejections
    }

    /// The ejection time left, `None` once closed or half-open.
    pub(crate) fn ejected_for(&self, now: Instant) -> Option<Duration> {
        match self.state {
            State::Open { until, .. } if now < until => Some(until - now),
            _ => None,
        }
    }

    pub(crate) fn half_open(&self, now: Instant) -> bool {
        matches!(self.state, State::Open { until, .. } if now >= until)
    }

    fn probing(&self) -> bool {
        matches!(
            self.state,
            State::Open {
                probe: Probe::InFlight,
                ..
            }
        )
    }

    /// Ejects for the next backoff plus up to 25 % jitter, so endpoints that failed together
    /// (one bad deploy, one network blip) are not all probed in the same instant.
    fn eject<R: Rng + ?Sized>(&mut self, now: Instant, settings: &Settings, rng: &mut R) {
        let base = self.next_backoff;
        let jitter = (base / 4).mul_f64(rng.random::<f64>());
        self.state = State::Open {
            until: later(now, base.saturating_add(jitter)),
            probe: Probe::Free,
        };
        self.ejections = self.ejections.saturating_add(1);
        self.next_backoff = base.saturating_mul(2).min(settings.max_ejection());
    }
}

/// `now + d`, shortened if `Instant` cannot reach that far (an absurd setting must not panic).
fn later(now: Instant, mut d: Duration) -> Instant {
    loop {
        if let Some(t) = now.checked_add(d) {
            return t;
        }
        d /= 2;
    }
}
