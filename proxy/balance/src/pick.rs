//! Power of two choices over the endpoints' costs.

use std::time::Instant;

use rand::Rng;

use crate::circuit::Availability;
use crate::load::{Candidate, Load};

/// Random draws spent looking for an available endpoint before scanning for one. Rejection
/// keeps the common case (few or no ejections) at one or two locks per candidate whatever the
/// number of endpoints; the scan bounds the rare case where most are ejected.
const DRAWS: usize = 8;

/// Whole picks retried when a chosen half-open endpoint's probe slot was taken by a concurrent
/// pick between reading it and reserving it.
const RETRIES: usize = 3;

/// The endpoint [`pick`] chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pick {
    /// Its index in the slice given to `pick`.
    pub index: usize,
    /// Every endpoint was ejected, so this one was chosen among all of them anyway (Envoy's
    /// panic mode): failing every request would be worse than trying endpoints that may have
    /// recovered. The caller may count or log it.
    pub panic: bool,
}

/// Chooses an endpoint for one request, or `None` if `endpoints` is empty.
///
/// Two distinct endpoints are drawn uniformly from the available ones (not ejected, or
/// half-open with the probe slot free) and the one with the lower cost wins:
/// `rtt estimate × (requests in flight + 1) ÷ weight`. One available endpoint wins alone. If none
/// is available, two are drawn from all of them and [`Pick::panic`] is set. An endpoint that
/// has never had a request costs nothing, so a new endpoint is measured at once rather than
/// starved behind a conservative `default_rtt`; so does a half-open one waiting for its probe,
/// which is then sent at once rather than starved behind the estimate that got it ejected.
///
/// The weight divides the cost rather than also skewing the draw: weighting both counts it
/// twice (an idle weight-3 endpoint among three weight-1 ones would take 80 % of requests, not
/// 50 %), and an exact weighted draw would need a scan or a table per pick. Under load the
/// in-flight term settles each endpoint's share in proportion to its weight.
///
/// If the winner is half-open, its probe slot is reserved here, for the winner only; the
/// caller's next [`Load::start`] on it becomes the probe. So call `start` right after `pick`.
///
/// No allocation; with nothing ejected it locks two endpoints once each.
pub fn pick<T: AsRef<Load>, R: Rng + ?Sized>(
    endpoints: &[T],
    now: Instant,
    rng: &mut R,
) -> Option<Pick> {
    if endpoints.is_empty() {
        return None;
    }
    for _ in 0..RETRIES {
        let Some(a) = draw(endpoints, now, rng, None) else {
            break;
        };
        let (best, other) = match draw(endpoints, now, rng, Some(a.0)) {
            // Ties go to the first draw, which is uniform.
            Some(b) if b.1.cost < a.1.cost => (b, Some(a)),
            Some(b) => (a, Some(b)),
            None => (a, None),
        };
        for (index, candidate) in std::iter::once(best).chain(other) {
            if claim(endpoints, index, candidate, now) {
                return Some(Pick {
                    index,
                    panic: false,
                });
            }
        }
    }
    Some(panic(endpoints, now, rng))
}

/// Draws one available endpoint other than `except`, uniformly.
fn draw<T: AsRef<Load>, R: Rng + ?Sized>(
    endpoints: &[T],
    now: Instant,
    rng: &mut R,
    except: Option<usize>,
) -> Option<(usize, Candidate)> {
    let span = endpoints.len() - usize::from(except.is_some());
    if span == 0 {
        return None;
    }
    for _ in 0..DRAWS.min(span) {
        let index = skip(rng.random_range(0..span), except);
        let candidate = endpoints[index].as_ref().candidate(now);
        if candidate.availability != Availability::Ejected {
            return Some((index, candidate));
        }
    }
    // Most draws hit ejected endpoints: one reservoir pass over the rest, still uniform.
    let mut chosen = None;
    let mut seen = 0_usize;
    for (index, endpoint) in endpoints.iter().enumerate() {
        if Some(index) == except {
            continue;
        }
        let candidate = endpoint.as_ref().candidate(now);
        if candidate.availability != Availability::Ejected {
            seen += 1;
            if rng.random_range(0..seen) == 0 {
                chosen = Some((index, candidate));
            }
        }
    }
    chosen
}

/// Makes the chosen endpoint's choice stick: a half-open one must still have its probe slot
/// free, and takes it.
fn claim<T: AsRef<Load>>(
    endpoints: &[T],
    index: usize,
    candidate: Candidate,
    now: Instant,
) -> bool {
    match candidate.availability {
        Availability::Ready => true,
        Availability::Probe => endpoints[index].as_ref().reserve(now),
        Availability::Ejected => false,
    }
}

/// Every endpoint is ejected: the lower cost of two drawn from all of them.
fn panic<T: AsRef<Load>, R: Rng + ?Sized>(endpoints: &[T], now: Instant, rng: &mut R) -> Pick {
    let n = endpoints.len();
    let mut index = rng.random_range(0..n);
    if n > 1 {
        let other = skip(rng.random_range(0..n - 1), Some(index));
        let cost = |i: usize| endpoints[i].as_ref().candidate(now).cost;
        if cost(other) < cost(index) {
            index = other;
        }
    }
    Pick { index, panic: true }
}

/// Maps a draw from `0..n-1` onto `0..n` without `except`.
fn skip(index: usize, except: Option<usize>) -> usize {
    match except {
        Some(x) if index >= x => index + 1,
        _ => index,
    }
}
