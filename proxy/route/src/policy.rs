//! What happens to a routed request besides where it goes: faults (Weft's `HTTPFault`),
//! timeouts (GEP-1742) and retries (GEP-1731), and the retry budget every route has.
//!
//! Pure like the rest of the crate: a fault is drawn from random numbers the caller passes, the
//! budget is told the time in milliseconds. The proxy does the waiting, the sending and the
//! counting (`proxy/src/outbound/policy.rs`).

use std::{sync::Mutex, time::Duration};

use http::StatusCode;

use crate::{error::Reason, filter::Answer, spec};

/// The most retries a rule may ask for (a request is tried at most 1 + this many times).
pub const MAX_ATTEMPTS: u32 = 10;

/// The most response statuses a retry policy may list.
pub const MAX_RETRY_CODES: usize = 16;

/// The longest injected delay or retry backoff: a request is not held longer than this by
/// either (a timeout may be longer).
pub const MAX_WAIT: Duration = Duration::from_secs(3600);

/// The budget's share of a route's requests that may be retried, in percent.
pub const BUDGET_RATIO_PERCENT: u64 = 20;
/// Retries a route may make per second whatever its traffic.
pub const BUDGET_MIN_PER_SECOND: u64 = 10;
/// The window the budget counts over, in seconds.
pub const BUDGET_WINDOW_SECONDS: u64 = 10;

/// A compiled `HTTPFault`: a share of requests delayed, a share aborted, each drawn on its own.
/// A fault with neither (the control plane could not resolve it) answers 500: a filter that
/// cannot be honoured is never skipped.
#[derive(Debug)]
pub struct Fault {
    name: Box<str>,
    delay: Option<(u32, Duration)>,
    abort: Option<(u32, Abort)>,
    unresolved: Box<str>,
}

/// How an aborted request is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abort {
    /// An HTTP status, 200 to 599.
    Http(StatusCode),
    /// A gRPC status code, 1 to 16: HTTP 200 with `grpc-status` as trailers-only.
    Grpc(u8),
}

/// What one request's draw of a fault says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Injection {
    /// Wait this long first.
    pub delay: Option<Duration>,
    /// Then answer this, never calling a backend.
    pub abort: Option<Abort>,
}

/// A rule's retry policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    attempts: u32,
    /// Bit `s - 400` set: status `s` is retried.
    codes: [u64; 4],
    backoff: Duration,
}

impl Fault {
    pub(crate) fn compile(spec: &spec::FaultSpec) -> Result<Fault, (String, Reason)> {
        let share = |field: &str, per_million: u32| {
            if per_million > 1_000_000 {
                Err((
                    format!("{field}.percent"),
                    Reason::InvalidShare { per_million },
                ))
            } else {
                Ok(per_million)
            }
        };
        let delay = match &spec.delay {
            None => None,
            Some(d) => {
                let share = share("delay", d.per_million)?;
                if d.fixed_delay.is_zero() || d.fixed_delay > MAX_WAIT {
                    return Err((
                        "delay.fixedDelay".into(),
                        Reason::InvalidWait {
                            wait: d.fixed_delay,
                            max: MAX_WAIT,
                        },
                    ));
                }
                Some((share, d.fixed_delay))
            }
        };
        let abort = match &spec.abort {
            None => None,
            Some(a) => {
                let share = share("abort", a.per_million)?;
                let abort = match a.status {
                    spec::AbortStatus::Http(status) => Abort::Http(
                        StatusCode::from_u16(status)
                            .ok()
                            .filter(|_| (200..=599).contains(&status))
                            .ok_or((
                                "abort.httpStatus".to_string(),
                                Reason::InvalidStatus {
                                    status,
                                    expected: "200 to 599",
                                },
                            ))?,
                    ),
                    spec::AbortStatus::Grpc(code) => Abort::Grpc(
                        u8::try_from(code)
                            .ok()
                            .filter(|c| (1..=16).contains(c))
                            .ok_or((
                                "abort.grpcStatus".to_string(),
                                Reason::InvalidGrpcStatus { code },
                            ))?,
                    ),
                };
                Some((share, abort))
            }
        };
        Ok(Fault {
            name: spec.name.as_str().into(),
            delay,
            abort,
            unresolved: format!(
                "the route's HTTPFault {:?} could not be resolved (it has neither delay nor \
                 abort); the request is refused rather than sent without it",
                spec.name
            )
            .into(),
        })
    }

    /// The `HTTPFault`'s `namespace/name`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the control plane sent it with neither delay nor abort: it could not resolve
    /// the `HTTPFault`, and a request that meets it is answered [`Fault::unresolved`].
    pub fn is_unresolved(&self) -> bool {
        self.delay.is_none() && self.abort.is_none()
    }

    /// The answer for a request that meets an unresolved fault: 500.
    pub fn unresolved(&self) -> Answer<'_> {
        Answer::Error {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            reason: &self.unresolved,
        }
    }

    /// One request's draw: `r_delay` and `r_abort` are independent uniform random numbers, so
    /// delay and abort are drawn on their own, as Istio does.
    pub fn draw(&self, r_delay: u32, r_abort: u32) -> Injection {
        Injection {
            delay: self
                .delay
                .filter(|(share, _)| hit(*share, r_delay))
                .map(|(_, d)| d),
            abort: self
                .abort
                .filter(|(share, _)| hit(*share, r_abort))
                .map(|(_, a)| a),
        }
    }
}

/// Whether a uniform `r` falls in a share of `per_million` millionths.
fn hit(per_million: u32, r: u32) -> bool {
    // (r × 10^6) / 2^32 is uniform over 0..10^6.
    (u64::from(r) * 1_000_000) >> 32 < u64::from(per_million)
}

/// Checks a rule's timeouts: `backendRequest` at most `request` when both bound.
pub(crate) fn check_timeouts(t: &spec::Timeouts) -> Result<(), (String, Reason)> {
    if let (Some(request), Some(backend)) = (t.request, t.backend_request) {
        if backend > request {
            return Err((
                "timeouts.backendRequest".into(),
                Reason::BackendTimeoutAboveRequest { backend, request },
            ));
        }
    }
    Ok(())
}

impl Retry {
    pub(crate) fn compile(spec: &spec::Retry) -> Result<Retry, (String, Reason)> {
        if spec.attempts > MAX_ATTEMPTS {
            return Err((
                "retry.attempts".into(),
                Reason::TooManyAttempts {
                    attempts: spec.attempts,
                    max: MAX_ATTEMPTS,
                },
            ));
        }
        if spec.codes.len() > MAX_RETRY_CODES {
            return Err((
                "retry.codes".into(),
                Reason::TooManyRetryCodes {
                    max: MAX_RETRY_CODES,
                },
            ));
        }
        let mut codes = [0u64; 4];
        for (i, &code) in spec.codes.iter().enumerate() {
            if !(400..=599).contains(&code) {
                return Err((
                    format!("retry.codes[{i}]"),
                    Reason::InvalidStatus {
                        status: code,
                        expected: "400 to 599",
                    },
                ));
            }
            let bit = usize::from(code - 400);
            codes[bit / 64] |= 1 << (bit % 64);
        }
        if spec.backoff > MAX_WAIT {
            return Err((
                "retry.backoff".into(),
                Reason::InvalidWait {
                    wait: spec.backoff,
                    max: MAX_WAIT,
                },
            ));
        }
        Ok(Retry {
            attempts: spec.attempts,
            codes,
            backoff: spec.backoff,
        })
    }

    /// Retries after the first try.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Whether a response with `status` is retried.
    pub fn retries_status(&self, status: StatusCode) -> bool {
        let s = status.as_u16();
        if !(400..=599).contains(&s) {
            return false;
        }
        let bit = usize::from(s - 400);
        self.codes[bit / 64] & (1 << (bit % 64)) != 0
    }

    /// The wait before a retry: the backoff plus up to 25 % of it, from a uniform `r`, so that
    /// clients that failed together do not retry together.
    pub fn backoff(&self, r: u32) -> Duration {
        let jitter = (self.backoff.as_nanos() / 4 * u128::from(r)) >> 32;
        self.backoff + Duration::from_nanos(u64::try_from(jitter).unwrap_or(u64::MAX))
    }
}

/// A route's retry budget: retries may be at most [`BUDGET_RATIO_PERCENT`] % of its requests
/// plus [`BUDGET_MIN_PER_SECOND`] per second, counted over the last
/// [`BUDGET_WINDOW_SECONDS`] seconds, so a failing backend never meets a retry storm. Each
/// request deposits, each retry withdraws; one short lock each. The caller passes the time in
/// milliseconds from any fixed origin.
#[derive(Debug, Default)]
pub struct RetryBudget {
    slots: Mutex<[BudgetSlot; BUDGET_WINDOW_SECONDS as usize]>,
}

/// The counts of one second (`second % window` is the slot's index).
#[derive(Clone, Copy, Debug, Default)]
struct BudgetSlot {
    second: u64,
    requests: u64,
    retries: u64,
}

impl RetryBudget {
    /// Counts a request (not a retry).
    pub fn deposit(&self, now_ms: u64) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        current(&mut slots[..], now_ms).requests += 1;
    }

    /// Takes a retry from the budget if it allows one; `false` when it is exhausted.
    pub fn withdraw(&self, now_ms: u64) -> bool {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let second = now_ms / 1000;
        let (requests, retries) = slots
            .iter()
            .filter(|s| s.second + BUDGET_WINDOW_SECONDS > second && s.second <= second)
            .fold((0, 0), |(q, t), s| (q + s.requests, t + s.retries));
        // retries + 1 <= requests × ratio + min per second × window, in hundredths.
        let allowed = (retries + 1) * 100
            <= requests * BUDGET_RATIO_PERCENT
                + BUDGET_MIN_PER_SECOND * BUDGET_WINDOW_SECONDS * 100;
        if allowed {
            current(&mut slots[..], now_ms).retries += 1;
        }
        allowed
    }
}

/// The slot of `now_ms`'s second, emptied first if it held an older second.
fn current(slots: &mut [BudgetSlot], now_ms: u64) -> &mut BudgetSlot {
    let second = now_ms / 1000;
    let slot = &mut slots[(second % BUDGET_WINDOW_SECONDS) as usize];
    if slot.second != second {
        *slot = BudgetSlot {
            second,
            requests: 0,
            retries: 0,
        };
    }
    slot
}
