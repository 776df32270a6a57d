//! Behaviour through the public API, on simulated time: every `Instant` is a fixed base plus a
//! `Duration`, every rng is seeded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::{pick, Load, Outcome, Pending, Pick, Settings};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn endpoints(weights: &[u32]) -> Vec<Arc<Load>> {
    weights
        .iter()
        .map(|&w| Arc::new(Load::new(w, &Settings::default())))
        .collect()
}

fn shares(counts: &[usize]) -> Vec<f64> {
    let total: usize = counts.iter().sum();
    counts.iter().map(|&c| c as f64 / total as f64).collect()
}

/// One request at a time: pick at `*t`, finish successfully `latency(index)` later, and carry
/// on from there. Returns the picks per endpoint.
fn sequential(
    eps: &[Arc<Load>],
    rng: &mut StdRng,
    t: &mut Instant,
    requests: usize,
    latency: impl Fn(usize) -> Duration,
) -> Vec<usize> {
    let mut counts = vec![0; eps.len()];
    for _ in 0..requests {
        let Pick { index, panic } = pick(eps, *t, rng).expect("endpoints");
        assert!(!panic, "no endpoint is ejected");
        counts[index] += 1;
        let pending = eps[index].start(*t);
        *t += latency(index);
        pending.finish(*t, Outcome::Success, rng);
    }
    counts
}

/// A request arrives every `every` and lasts `latency(index)`, so many are in flight at once.
/// Returns the picks per endpoint, counting only those after the first `warm_up`.
fn concurrent(
    eps: &[Arc<Load>],
    rng: &mut StdRng,
    start: Instant,
    requests: usize,
    warm_up: usize,
    every: Duration,
    latency: impl Fn(usize) -> Duration,
) -> Vec<usize> {
    let mut counts = vec![0; eps.len()];
    let mut in_flight: Vec<(Instant, Pending)> = Vec::new();
    for i in 0..requests {
        let now = start + every * i as u32;
        let mut still = Vec::with_capacity(in_flight.len());
        for (end, pending) in in_flight.drain(..) {
            if end <= now {
                pending.finish(end, Outcome::Success, rng);
            } else {
                still.push((end, pending));
            }
        }
        in_flight = still;
        let Pick { index, panic } = pick(eps, now, rng).expect("endpoints");
        assert!(!panic);
        if i >= warm_up {
            counts[index] += 1;
        }
        in_flight.push((now + latency(index), eps[index].start(now)));
    }
    counts
}

/// Fails `n` requests of 1 ms each from `*t`, advancing `*t`.
fn fail(load: &Arc<Load>, t: &mut Instant, n: u32, rng: &mut StdRng) {
    for _ in 0..n {
        let pending = load.start(*t);
        *t += ms(1);
        pending.finish(*t, Outcome::Failure, rng);
    }
}

fn succeed(load: &Arc<Load>, t: &mut Instant, latency: Duration, rng: &mut StdRng) {
    let pending = load.start(*t);
    *t += latency;
    pending.finish(*t, Outcome::Success, rng);
}

/// Asserts `load` is ejected for between `base` and `base` + 25 % from `now`.
fn assert_ejected_for(load: &Load, now: Instant, base: Duration) {
    let left = load.state(now).ejected_for.expect("ejected");
    assert!(
        left >= base && left <= base + base / 4,
        "ejected for {left:?}, expected {base:?} + up to 25 %"
    );
}

/// Moves `*t` to the end of `load`'s ejection.
fn wait_out(load: &Load, t: &mut Instant) {
    *t += load.state(*t).ejected_for.expect("ejected");
    assert!(load.state(*t).half_open);
}

#[test]
fn types_can_cross_tasks() {
    fn send_sync<T: Send + Sync>() {}
    fn send_static<T: Send + 'static>() {}
    send_sync::<Load>();
    send_static::<Pending>();
}

#[test]
fn empty_slice_picks_nothing() {
    let none: Vec<Arc<Load>> = Vec::new();
    assert_eq!(pick(&none, Instant::now(), &mut rng(1)), None);
}

#[test]
fn single_endpoint_is_picked() {
    let eps = endpoints(&[1]);
    let mut t = Instant::now();
    let counts = sequential(&eps, &mut rng(1), &mut t, 10, |_| ms(5));
    assert_eq!(counts, [10]);
}

#[test]
fn equal_endpoints_share_evenly() {
    let eps = endpoints(&[1, 1, 1]);
    let mut t = Instant::now();
    let counts = sequential(&eps, &mut rng(7), &mut t, 3_000, |_| ms(10));
    for share in shares(&counts) {
        assert!((share - 1.0 / 3.0).abs() < 0.03, "{counts:?}");
    }
}

#[test]
fn equal_endpoints_share_evenly_under_load() {
    let eps = endpoints(&[1, 1, 1]);
    let counts = concurrent(&eps, &mut rng(7), Instant::now(), 3_000, 0, ms(1), |_| {
        ms(10)
    });
    for share in shares(&counts) {
        assert!((share - 1.0 / 3.0).abs() < 0.03, "{counts:?}");
    }
}

#[test]
fn slow_endpoint_gets_little_traffic() {
    let eps = endpoints(&[1, 1, 1]);
    let latency = |i: usize| if i == 2 { ms(100) } else { ms(5) };
    let mut rng = rng(3);
    let mut t = Instant::now();
    sequential(&eps, &mut rng, &mut t, 100, latency);
    let counts = sequential(&eps, &mut rng, &mut t, 3_000, latency);
    assert!(shares(&counts)[2] < 0.10, "{counts:?}");

    let counts = concurrent(&eps, &mut rng, t, 3_000, 300, ms(1), latency);
    assert!(shares(&counts)[2] < 0.10, "{counts:?}");
}

#[test]
fn slow_endpoint_is_retried_once_its_estimate_decays() {
    // With the fast endpoints kept busy at 5 ms, the slow one's 100 ms decays below theirs after
    // about ln(100 / 5) × 10 s = 30 s; it then gets one request, measures slow again and is
    // avoided again. Without decay on read it would never be tried again at this load.
    let eps = endpoints(&[1, 1, 1]);
    let mut rng = rng(5);
    let start = Instant::now();
    let mut t = start;
    let mut retried_at = Vec::new();
    for _ in 0..16_000 {
        let Pick { index, .. } = pick(&eps, t, &mut rng).expect("endpoints");
        let latency = if index == 2 { ms(100) } else { ms(5) };
        if index == 2 {
            retried_at.push(t - start);
        }
        succeed(&eps[index], &mut t, latency, &mut rng);
    }
    let later: Vec<_> = retried_at.iter().filter(|d| **d > secs(1)).collect();
    assert!(!later.is_empty(), "never retried: {retried_at:?}");
    assert!(
        later.iter().all(|d| **d > secs(25)),
        "retried too soon: {retried_at:?}"
    );
    assert!(
        later.len() <= 4,
        "not avoided after the retry: {retried_at:?}"
    );
}

#[test]
fn a_new_endpoint_is_measured_at_once_but_not_flooded() {
    let mut eps = endpoints(&[1, 1, 1]);
    let mut rng = rng(73);
    let mut t = Instant::now();
    sequential(&eps, &mut rng, &mut t, 30, |_| ms(10));
    eps.push(Arc::new(Load::new(1, &Settings::default())));

    // Requests held in flight: the new endpoint wins the first pair it is drawn into, then
    // costs the default 30 ms × 2 while its first response is awaited.
    let mut held = Vec::new();
    let mut to_new = 0;
    for _ in 0..12 {
        let Pick { index, .. } = pick(&eps, t, &mut rng).expect("endpoints");
        to_new += usize::from(index == 3);
        held.push(eps[index].start(t));
    }
    assert_eq!(to_new, 1);
    t += ms(10);
    for pending in held {
        pending.finish(t, Outcome::Success, &mut rng);
    }

    // Once measured at the same latency as the others, it takes its share.
    let counts = sequential(&eps, &mut rng, &mut t, 4_000, |_| ms(10));
    assert!((shares(&counts)[3] - 0.25).abs() < 0.03, "{counts:?}");
}

#[test]
fn requests_in_flight_raise_cost() {
    let eps = endpoints(&[1, 1, 1]);
    let mut rng = rng(11);
    let mut t = Instant::now();
    sequential(&eps, &mut rng, &mut t, 30, |_| ms(10));
    let busy: Vec<Pending> = (0..20).map(|_| eps[0].start(t)).collect();
    assert_eq!(eps[0].state(t).pending, 20);
    let counts = sequential(&eps, &mut rng, &mut t, 300, |_| ms(10));
    assert_eq!(counts[0], 0, "{counts:?}");

    drop(busy);
    assert_eq!(eps[0].state(t).pending, 0);
    let counts = sequential(&eps, &mut rng, &mut t, 300, |_| ms(10));
    assert!(shares(&counts)[0] > 0.25, "{counts:?}");
}

#[test]
fn weight_three_gets_three_times_the_traffic_idle() {
    // Idle, the weight-3 endpoint wins every pair it is drawn into: half the pairs of four.
    let eps = endpoints(&[3, 1, 1, 1]);
    let mut t = Instant::now();
    let counts = sequential(&eps, &mut rng(13), &mut t, 6_000, |_| ms(10));
    for light in 1..4 {
        let ratio = counts[0] as f64 / counts[light] as f64;
        assert!((2.5..3.5).contains(&ratio), "{counts:?}");
    }
}

#[test]
fn weight_three_gets_three_times_the_traffic_under_load() {
    // About 40 requests in flight: in-flight counts settle where (p₀ + 1) / 3 ≈ p₁ + 1.
    let eps = endpoints(&[3, 1]);
    let counts = concurrent(
        &eps,
        &mut rng(17),
        Instant::now(),
        6_000,
        500,
        ms(1),
        |_| ms(40),
    );
    let ratio = counts[0] as f64 / counts[1] as f64;
    assert!((2.5..4.0).contains(&ratio), "{counts:?} ratio {ratio}");
}

#[test]
fn weight_zero_is_taken_as_one() {
    let load = Load::new(0, &Settings::default());
    assert_eq!(load.weight(), 1);
    assert_eq!(load.state(Instant::now()).weight, 1);
}

#[test]
fn new_endpoint_reports_the_default_rtt_until_its_first_sample() {
    let eps = endpoints(&[1]);
    let mut t = Instant::now();
    assert_eq!(eps[0].state(t).rtt, ms(30));
    // Time alone does not decay a guess nobody has acted on.
    t += secs(60);
    assert_eq!(eps[0].state(t).rtt, ms(30));
    // The first sample replaces it, even a smaller one.
    succeed(&eps[0], &mut t, ms(4), &mut rng(1));
    assert_eq!(eps[0].state(t).rtt, ms(4));
}

#[test]
fn a_cancelled_first_request_does_not_leave_the_default_for_good() {
    let eps = endpoints(&[1]);
    let mut t = Instant::now();
    drop(eps[0].start(t));
    // The default decays from the first request like a measurement would.
    t += secs(10);
    let rtt = eps[0].state(t).rtt;
    assert!(rtt > ms(11) && rtt < ms(12), "{rtt:?}");
}

#[test]
fn a_spike_raises_the_estimate_at_once_then_decays() {
    let eps = endpoints(&[1]);
    let load = &eps[0];
    let mut rng = rng(1);
    let mut t = Instant::now();
    for _ in 0..50 {
        succeed(load, &mut t, ms(10), &mut rng);
        t += ms(90);
    }
    let before = load.state(t).rtt;
    assert!(before <= ms(10), "{before:?}");
    succeed(load, &mut t, ms(200), &mut rng);
    assert_eq!(load.state(t).rtt, ms(200));

    let mut last = ms(200);
    for _ in 0..300 {
        t += ms(90);
        succeed(load, &mut t, ms(10), &mut rng);
        let now = load.state(t).rtt;
        assert!(now < last, "{now:?} after {last:?}");
        last = now;
    }
    // 30 s later, three time constants: about 5 % of the spike is left.
    assert!(last > ms(10) && last < ms(20), "{last:?}");
}

#[test]
fn a_failure_never_lowers_the_estimate() {
    let eps = endpoints(&[1, 1]);
    let (failing, twin) = (&eps[0], &eps[1]);
    let mut rng = rng(1);
    let start = Instant::now();
    for load in [failing, twin] {
        let mut t = start;
        succeed(load, &mut t, ms(50), &mut rng);
    }
    let mut t = start + ms(50);
    for _ in 0..100 {
        let pending = failing.start(t);
        t += ms(1);
        let at_end = failing.state(t).rtt;
        pending.finish(t, Outcome::Failure, &mut rng);
        let after = failing.state(t).rtt;
        assert!(
            after >= at_end,
            "lowered by a failure: {after:?} < {at_end:?}"
        );
        assert!(after >= twin.state(t).rtt);
        // A fast failure restarts the decay from the last measurement, so failing between
        // successes never looks faster than idling.
        assert_eq!(after, ms(50));
        t += ms(200);
        // (The endpoint is ejected along the way; that does not matter to the estimate.)
    }

    // A slow failure (a timeout) raises it.
    let pending = failing.start(t);
    t += secs(2);
    pending.finish(t, Outcome::Failure, &mut rng);
    assert_eq!(failing.state(t).rtt, secs(2));
}

#[test]
fn a_fast_failing_endpoint_does_not_attract_traffic() {
    // Endpoint 0 fails every other request in 1 ms (never enough in a row to be ejected); the
    // others succeed in 20 ms. Its failures must not make it look fast.
    let settings = Settings::default();
    let eps = endpoints(&[1, 1, 1]);
    let mut rng = rng(19);
    let mut t = Instant::now();
    let mut counts = [0_usize; 3];
    let mut flip = false;
    for _ in 0..3_000 {
        let Pick { index, panic } = pick(&eps, t, &mut rng).expect("endpoints");
        assert!(!panic);
        counts[index] += 1;
        let pending = eps[index].start(t);
        if index == 0 {
            flip = !flip;
            let (latency, outcome) = if flip {
                (ms(1), Outcome::Failure)
            } else {
                (ms(20), Outcome::Success)
            };
            t += latency;
            pending.finish(t, outcome, &mut rng);
        } else {
            t += ms(20);
            pending.finish(t, Outcome::Success, &mut rng);
        }
    }
    assert!(eps[0].state(t).consecutive_failures < settings.failure_threshold);
    assert!(shares(&counts)[0] < 0.34, "{counts:?}");
}

#[test]
fn ejects_after_exactly_the_threshold() {
    let eps = endpoints(&[1]);
    let load = &eps[0];
    let mut rng = rng(1);
    let mut t = Instant::now();
    fail(load, &mut t, 4, &mut rng);
    let state = load.state(t);
    assert_eq!(state.consecutive_failures, 4);
    assert_eq!(state.ejected_for, None);
    assert_eq!(state.ejections, 0);

    fail(load, &mut t, 1, &mut rng);
    assert_ejected_for(load, t, secs(1));
    assert_eq!(load.state(t).ejections, 1);
}

#[test]
fn a_success_resets_the_failure_count() {
    let eps = endpoints(&[1]);
    let load = &eps[0];
    let mut rng = rng(1);
    let mut t = Instant::now();
    fail(load, &mut t, 4, &mut rng);
    succeed(load, &mut t, ms(5), &mut rng);
    assert_eq!(load.state(t).consecutive_failures, 0);
    fail(load, &mut t, 4, &mut rng);
    let state = load.state(t);
    assert_eq!(state.consecutive_failures, 4);
    assert_eq!(state.ejected_for, None);
}

#[test]
fn threshold_zero_never_ejects() {
    let settings = Settings {
        failure_threshold: 0,
        ..Settings::default()
    };
    let load = Arc::new(Load::new(1, &settings));
    let mut t = Instant::now();
    fail(&load, &mut t, 100, &mut rng(1));
    assert_eq!(load.state(t).ejected_for, None);
    assert_eq!(load.state(t).consecutive_failures, 100);
}

#[test]
fn an_ejected_endpoint_is_not_picked() {
    let eps = endpoints(&[1, 1, 1]);
    let mut rng = rng(23);
    let mut t = Instant::now();
    fail(&eps[2], &mut t, 5, &mut rng);
    let until = t + eps[2].state(t).ejected_for.expect("ejected");
    let mut counts = [0_usize; 3];
    while t + ms(2) < until {
        let Pick { index, panic } = pick(&eps, t, &mut rng).expect("endpoints");
        assert!(!panic);
        counts[index] += 1;
        succeed(&eps[index], &mut t, ms(2), &mut rng);
    }
    assert_eq!(counts[2], 0, "{counts:?}");
    assert!(counts[0] > 200 && counts[1] > 200, "{counts:?}");
}

#[test]
fn half_open_allows_exactly_one_probe() {
    let eps = endpoints(&[1]);
    let load = &eps[0];
    let mut rng = rng(1);
    let mut t = Instant::now();
    fail(load, &mut t, 5, &mut rng);
    assert_eq!(
        pick(&eps, t, &mut rng),
        Some(Pick {
            index: 0,
            panic: true
        })
    );
    wait_out(load, &mut t);

    assert_eq!(
        pick(&eps, t, &mut rng),
        Some(Pick {
            index: 0,
            panic: false
        })
    );
    let probe = load.start(t);
    assert!(probe.is_probe());
    for _ in 0..10 {
        // The probe's slot is taken: the only endpoint is unavailable again.
        assert_eq!(
            pick(&eps, t, &mut rng),
            Some(Pick {
                index: 0,
                panic: true
            })
        );
        assert!(!load.start(t).is_probe());
    }
    drop(probe);
}

#[test]
fn half_open_endpoint_among_others_gets_one_probe() {
    // The two healthy endpoints are so busy that the half-open one wins every pair it is in,
    // yet it gets exactly one request while its probe is in flight.
    let eps = endpoints(&[1, 1, 1]);
    let mut rng = rng(29);
    let mut t = Instant::now();
    fail(&eps[2], &mut t, 5, &mut rng);
    wait_out(&eps[2], &mut t);
    let _busy: Vec<Pending> = (0..50)
        .flat_map(|_| [eps[0].start(t), eps[1].start(t)])
        .collect();
    let mut probes = Vec::new();
    for _ in 0..200 {
        let Pick { index, panic } = pick(&eps, t, &mut rng).expect("endpoints");
        assert!(!panic);
        let pending = eps[index].start(t);
        if index == 2 {
            assert!(pending.is_probe());
            probes.push(pending);
        }
        t += ms(1);
    }
    assert_eq!(probes.len(), 1);
}

#[test]
fn a_half_open_endpoint_slower_than_the_rest_is_probed_at_once() {
    // The failures that ejected it were slow (50 ms against the others' 1 ms): priced by that
    // estimate it would lose every draw for the decay's tens of seconds and never be probed.
    let eps = endpoints(&[1, 1, 1]);
    let mut rng = rng(37);
    let mut t = Instant::now();
    for load in &eps[..2] {
        succeed(load, &mut t, ms(1), &mut rng);
    }
    for _ in 0..5 {
        let pending = eps[2].start(t);
        t += ms(50);
        pending.finish(t, Outcome::Failure, &mut rng);
    }
    wait_out(&eps[2], &mut t);
    let mut probed = None;
    for i in 0..20 {
        let Pick { index, panic } = pick(&eps, t, &mut rng).expect("endpoints");
        assert!(!panic);
        let pending = eps[index].start(t);
        t += ms(1);
        if index == 2 {
            assert!(pending.is_probe());
            probed = Some(i);
            break;
        }
        pending.finish(t, Outcome::Success, &mut rng);
    }
    // It is drawn into two pairs in three; twenty picks all missing it is one in 3^20.
    assert!(probed.is_some(), "no probe in 20 picks");
}

#[test]
fn a_recovered_endpoint_is_priced_by_its_probe_not_by_its_failures() {
    // Slow failures (50 ms) raised its estimate; the probe answers in 1 ms. Blended in as an
    // ordinary sample, that would leave it near 50 ms, losing every draw for seconds.
    let eps = endpoints(&[1]);
    let load = &eps[0];
    let mut rng = rng(41);
    let mut t = Instant::now();
    for _ in 0..5 {
        let pending = load.start(t);
        t += ms(50);
        pending.finish(t, Outcome::Failure, &mut rng);
    }
    wait_out(load, &mut t);
    let probe = load.start(t);
    assert!(probe.is_probe());
    t += ms(1);
    probe.finish(t, Outcome::Success, &mut rng);
    assert_eq!(load.state(t).rtt, ms(1));
}

#[test]
fn a_successful_probe_closes_the_circuit_and_resets_the_backoff() {
    let eps = endpoints(&[1]);
    let load = &eps[0];
    let mut rng = rng(31);
    let mut t = Instant::now();
    fail(load, &mut t, 5, &mut rng);
    wait_out(load, &mut t);
    // A failed probe first, so that there is a doubled backoff to reset.
    fail(load, &mut t, 1, &mut rng);
    assert_ejected_for(load, t, secs(2));
    wait_out(load, &mut t);
    let probe = load.start(t);
    assert!(probe.is_probe());
    t += ms(5);
    probe.finish(t, Outcome::Success, &mut rng);

    let state = load.state(t);
    assert_eq!(state.ejected_for, None);
    assert!(!state.half_open);
    assert_eq!(state.consecutive_failures, 0);
    assert_eq!(state.ejections, 2);
    assert_eq!(
        sequential(&eps, &mut rng, &mut t, 10, |_| ms(5)),
        [10],
        "picked normally again"
    );
    // The next ejection starts from the minimum again.
    fail(load, &mut t, 5, &mut rng);
    assert_ejected_for(load, t, secs(1));
}

#[test]
fn a_failed_probe_doubles_the_backoff_up_to_the_maximum() {
    let eps = endpoints(&[1]);
    let load = &eps[0];
    let mut rng = rng(37);
    let mut t = Instant::now();
    fail(load, &mut t, 5, &mut rng);
    assert_ejected_for(load, t, secs(1));
    for (n, base) in [2, 4, 8, 16, 30, 30, 30].into_iter().enumerate() {
        wait_out(load, &mut t);
        assert_eq!(
            pick(&eps, t, &mut rng),
            Some(Pick {
                index: 0,
                panic: false
            })
        );
        let probe = load.start(t);
        assert!(probe.is_probe());
        t += ms(1);
        probe.finish(t, Outcome::Failure, &mut rng);
        assert_ejected_for(load, t, secs(base));
        assert_eq!(load.state(t).ejections, n as u64 + 2);
    }
}

#[test]
fn a_dropped_probe_frees_the_slot() {
    let eps = endpoints(&[1]);
    let load = &eps[0];
    let mut rng = rng(41);
    let mut t = Instant::now();
    fail(load, &mut t, 5, &mut rng);
    wait_out(load, &mut t);
    assert_eq!(
        pick(&eps, t, &mut rng),
        Some(Pick {
            index: 0,
            panic: false
        })
    );
    let probe = load.start(t);
    assert_eq!(load.state(t).pending, 1);
    drop(probe);
    let state = load.state(t);
    assert_eq!(state.pending, 0);
    assert!(state.half_open, "a cancelled probe decides nothing");
    assert_eq!(state.consecutive_failures, 5);

    assert_eq!(
        pick(&eps, t, &mut rng),
        Some(Pick {
            index: 0,
            panic: false
        })
    );
    assert!(load.start(t).is_probe());
}

#[test]
fn a_reservation_without_start_lapses() {
    let eps = endpoints(&[1]);
    let load = &eps[0];
    let mut rng = rng(43);
    let mut t = Instant::now();
    fail(load, &mut t, 5, &mut rng);
    wait_out(load, &mut t);
    assert_eq!(
        pick(&eps, t, &mut rng),
        Some(Pick {
            index: 0,
            panic: false
        })
    );
    // No start: the slot stays reserved for a while, then is offered again.
    t += ms(500);
    assert_eq!(
        pick(&eps, t, &mut rng),
        Some(Pick {
            index: 0,
            panic: true
        })
    );
    t += ms(500);
    assert_eq!(
        pick(&eps, t, &mut rng),
        Some(Pick {
            index: 0,
            panic: false
        })
    );
}

#[test]
fn requests_that_are_not_the_probe_do_not_move_the_circuit() {
    let eps = endpoints(&[1]);
    let load = &eps[0];
    let mut rng = rng(47);
    let mut t = Instant::now();
    // Started before the ejection, it ends during it.
    let straggler = load.start(t);
    fail(load, &mut t, 5, &mut rng);
    // Sent in panic mode while ejected.
    let panicked = load.start(t);
    t += ms(5);
    straggler.finish(t, Outcome::Success, &mut rng);
    panicked.finish(t, Outcome::Success, &mut rng);
    let state = load.state(t);
    assert!(
        state.ejected_for.is_some(),
        "only a probe closes the circuit"
    );
    assert_eq!(
        state.consecutive_failures, 0,
        "a success still resets the count"
    );

    // A failure while ejected does not eject again (nor double the backoff).
    fail(load, &mut t, 10, &mut rng);
    assert_eq!(load.state(t).ejections, 1);
}

#[test]
fn ejection_jitter_is_seeded_and_spreads_endpoints() {
    let ejected_for = |seed: u64| -> Vec<Duration> {
        let mut rng = rng(seed);
        let eps = endpoints(&[1; 20]);
        let start = Instant::now();
        eps.iter()
            .map(|load| {
                let mut t = start;
                fail(load, &mut t, 5, &mut rng);
                load.state(t).ejected_for.expect("ejected")
            })
            .collect()
    };
    let first = ejected_for(53);
    assert_eq!(first, ejected_for(53));
    assert_ne!(first, ejected_for(54));
    let mut distinct = first.clone();
    distinct.sort();
    distinct.dedup();
    assert!(distinct.len() > 15, "{first:?}");
    assert!(first.iter().all(|d| *d >= secs(1) && *d <= ms(1_250)));
}

#[test]
fn all_ejected_is_panic_mode_over_all_of_them() {
    let eps = endpoints(&[1, 1, 1]);
    let mut rng = rng(59);
    let mut t = Instant::now();
    for load in &eps {
        fail(load, &mut t, 5, &mut rng);
    }
    // Requests stay in flight, so the cost spreads them over every endpoint.
    let mut counts = [0_usize; 3];
    let mut in_flight = Vec::new();
    for _ in 0..300 {
        let Pick { index, panic } = pick(&eps, t, &mut rng).expect("endpoints");
        assert!(panic);
        counts[index] += 1;
        in_flight.push(eps[index].start(t));
    }
    assert!(counts.iter().all(|&c| c > 80), "{counts:?}");
}

#[test]
fn one_available_endpoint_takes_everything_without_panic() {
    let eps = endpoints(&[1, 1, 1, 1]);
    let mut rng = rng(61);
    let mut t = Instant::now();
    for load in &eps[1..] {
        fail(load, &mut t, 5, &mut rng);
    }
    let counts = sequential(&eps, &mut rng, &mut t, 100, |_| ms(1));
    assert_eq!(counts, [100, 0, 0, 0]);
}

#[test]
fn many_endpoints_mostly_ejected_still_find_the_rest() {
    // 95 of 100 ejected: rejection sampling gives up and scans, still uniformly.
    let eps = endpoints(&[1; 100]);
    let mut rng = rng(67);
    let start = Instant::now();
    for load in &eps[5..] {
        let mut t = start;
        fail(load, &mut t, 5, &mut rng);
    }
    // Within the shortest ejection (1 s).
    let mut t = start + ms(5);
    let counts = sequential(&eps, &mut rng, &mut t, 1_000, |_| {
        Duration::from_micros(900)
    });
    assert_eq!(counts[5..].iter().sum::<usize>(), 0);
    assert!(counts[..5].iter().all(|&c| c > 150), "{:?}", &counts[..5]);
}

#[test]
fn a_cancelled_request_only_leaves_the_in_flight_count() {
    let eps = endpoints(&[1]);
    let load = &eps[0];
    let mut rng = rng(71);
    let mut t = Instant::now();
    fail(load, &mut t, 2, &mut rng);
    // What time alone does to the state, read before the request.
    let expected = load.state(t + secs(5));
    let pending = load.start(t);
    assert_eq!(load.state(t).pending, 1);
    t += secs(5);
    drop(pending);
    assert_eq!(load.state(t), expected);
    assert_eq!(expected.pending, 0);
    assert_eq!(expected.consecutive_failures, 2);
}

#[test]
fn shared_across_threads() {
    let eps = endpoints(&[1, 2, 3, 1]);
    let start = Instant::now();
    std::thread::scope(|s| {
        for seed in 0..4 {
            let eps = &eps;
            s.spawn(move || {
                let mut rng = rng(seed);
                for i in 0..5_000_u32 {
                    let now = start + Duration::from_micros(u64::from(i));
                    let chosen = pick(eps, now, &mut rng).expect("endpoints");
                    let pending = eps[chosen.index].start(now);
                    let outcome = if i % 7 == 0 {
                        Outcome::Failure
                    } else {
                        Outcome::Success
                    };
                    pending.finish(now + ms(1), outcome, &mut rng);
                }
            });
        }
    });
    assert!(eps.iter().all(|e| e.state(start).pending == 0));
}
