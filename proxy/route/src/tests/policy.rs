//! Faults, timeouts, retry policies and the retry budget: what compiles, what a draw gives,
//! and the budget's arithmetic on a clock the test drives.

use std::time::Duration;

use http::StatusCode;

use super::*;
use crate::spec::{AbortStatus, FaultAbort, FaultDelay, FaultSpec, Filter, Retry, Timeouts};
use crate::{Abort, Answer, CompileError, Injection, RetryBudget};

fn fault(delay: Option<(u32, u64)>, abort: Option<(u32, AbortStatus)>) -> FaultSpec {
    FaultSpec {
        name: "shop/flaky".into(),
        delay: delay.map(|(per_million, ms)| FaultDelay {
            per_million,
            fixed_delay: Duration::from_millis(ms),
        }),
        abort: abort.map(|(per_million, status)| FaultAbort {
            per_million,
            status,
        }),
    }
}

fn with_fault(f: FaultSpec) -> Result<RouteTable, CompileError> {
    RouteTable::compile(&spec::RouteTable {
        matches: vec![prefix(0, "/")],
        rules: vec![rule_with("api", vec![Filter::Fault(f)])],
        ..Default::default()
    })
}

fn with_rule(r: spec::Rule) -> Result<RouteTable, CompileError> {
    RouteTable::compile(&spec::RouteTable {
        matches: vec![prefix(0, "/")],
        rules: vec![r],
        ..Default::default()
    })
}

#[test]
fn a_fault_is_drawn_by_its_shares_each_on_its_own() {
    let table = with_fault(fault(
        Some((500_000, 200)),
        Some((250_000, AbortStatus::Http(503))),
    ))
    .expect("compiles");
    let f = table.rules()[0].fault().expect("the rule's fault");
    assert_eq!(f.name(), "shop/flaky");
    assert!(!f.is_unresolved());
    let delay = Some(Duration::from_millis(200));
    let abort = Some(Abort::Http(StatusCode::SERVICE_UNAVAILABLE));
    // The low end of each random number hits, the high end misses; the two are independent.
    assert_eq!(f.draw(0, 0), Injection { delay, abort });
    assert_eq!(f.draw(0, u32::MAX), Injection { delay, abort: None });
    assert_eq!(f.draw(u32::MAX, 0), Injection { delay: None, abort });
    // The boundaries: half of 2^32 is the first miss of a 50 % share.
    assert_eq!(f.draw((1 << 31) - 1, u32::MAX).delay, delay);
    assert_eq!(f.draw(1 << 31, u32::MAX).delay, None);
    // Over every 2^20th number, the shares are exact to the resolution.
    let (mut delayed, mut aborted) = (0, 0);
    for i in 0..4096u32 {
        let d = f.draw(i << 20, i << 20);
        delayed += usize::from(d.delay.is_some());
        aborted += usize::from(d.abort.is_some());
    }
    assert_eq!((delayed, aborted), (2048, 1024));
}

#[test]
fn shares_of_nothing_and_of_everything() {
    let never = with_fault(fault(Some((0, 5)), Some((0, AbortStatus::Grpc(14))))).expect("0 %");
    let always = with_fault(fault(
        Some((1_000_000, 5)),
        Some((1_000_000, AbortStatus::Grpc(14))),
    ))
    .expect("100 %");
    for r in [0, 1, 1 << 31, u32::MAX - 1, u32::MAX] {
        assert_eq!(
            never.rules()[0].fault().expect("fault").draw(r, r),
            Injection::default()
        );
        let all = always.rules()[0].fault().expect("fault").draw(r, r);
        assert_eq!(all.delay, Some(Duration::from_millis(5)));
        assert_eq!(all.abort, Some(Abort::Grpc(14)));
    }
}

#[test]
fn an_unresolved_fault_answers_500_before_any_filter() {
    let table = with_fault(FaultSpec {
        name: "shop/gone".into(),
        ..Default::default()
    })
    .expect("compiles");
    let f = table.rules()[0].fault().expect("fault");
    assert!(f.is_unresolved());
    let mut parts = request("GET", "/", &[]);
    let Route::Matched(routed) = table.route_parts(&parts) else {
        panic!("the rule matches")
    };
    match routed.filter_request(&mut parts, 80) {
        Err(Answer::Error { status, reason }) => {
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
            assert!(reason.contains("shop/gone"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // A resolved fault is not the filters' to answer.
    let table = with_fault(fault(None, Some((1_000_000, AbortStatus::Http(418))))).expect("ok");
    let Route::Matched(routed) = table.route_parts(&parts) else {
        panic!("the rule matches")
    };
    assert!(routed.filter_request(&mut parts, 80).is_ok());
    assert!(routed.rule().has_policy());
}

#[test]
fn bad_faults_are_refused_by_field() {
    let cases: Vec<(FaultSpec, &str, &str)> = vec![
        (
            fault(Some((1_000_001, 5)), None),
            "filters[0].extensionRef.delay.percent",
            "more than the whole",
        ),
        (
            fault(None, Some((2_000_000, AbortStatus::Http(503)))),
            "filters[0].extensionRef.abort.percent",
            "more than the whole",
        ),
        (
            fault(Some((10, 0)), None),
            "filters[0].extensionRef.delay.fixedDelay",
            "between 1 ms",
        ),
        (
            fault(Some((10, 3_600_001)), None),
            "filters[0].extensionRef.delay.fixedDelay",
            "between 1 ms",
        ),
        (
            fault(None, Some((10, AbortStatus::Http(199)))),
            "filters[0].extensionRef.abort.httpStatus",
            "200 to 599",
        ),
        (
            fault(None, Some((10, AbortStatus::Http(600)))),
            "filters[0].extensionRef.abort.httpStatus",
            "200 to 599",
        ),
        (
            fault(None, Some((10, AbortStatus::Grpc(0)))),
            "filters[0].extensionRef.abort.grpcStatus",
            "1 to 16",
        ),
        (
            fault(None, Some((10, AbortStatus::Grpc(17)))),
            "filters[0].extensionRef.abort.grpcStatus",
            "1 to 16",
        ),
    ];
    for (spec, field, reason) in cases {
        let e = with_fault(spec.clone()).expect_err("refused");
        assert_eq!(e.field, field, "{spec:?}: {e}");
        assert!(e.to_string().contains(reason), "{spec:?}: {e}");
    }
    // Two faults on one rule: which one would apply is not clear, so refused.
    let two = rule_with(
        "api",
        vec![
            Filter::Fault(fault(Some((1, 1)), None)),
            Filter::Fault(fault(Some((1, 1)), None)),
        ],
    );
    let e = with_rule(two).expect_err("refused");
    assert_eq!(e.field, "filters[1]", "{e}");
    // A Service-wide fault is checked the same way, named by its place in the table.
    let e = RouteTable::compile(&spec::RouteTable {
        faults: vec![fault(None, None), fault(Some((5, 0)), None)],
        ..Default::default()
    })
    .expect_err("refused");
    assert_eq!(e.site, crate::Site::Table);
    assert_eq!(e.field, "faults[1].delay.fixedDelay", "{e}");
}

#[test]
fn service_faults_apply_without_routes() {
    let table = RouteTable::compile(&spec::RouteTable {
        faults: vec![
            fault(Some((1_000_000, 50)), None),
            fault(None, Some((1_000_000, AbortStatus::Http(503)))),
        ],
        ..Default::default()
    })
    .expect("compiles");
    assert!(table.is_empty(), "no route is attached");
    assert!(matches!(
        table.route_parts(&request("GET", "/", &[])),
        Route::Unrouted
    ));
    let draws: Vec<Injection> = table.faults().iter().map(|f| f.draw(0, 0)).collect();
    assert_eq!(draws[0].delay, Some(Duration::from_millis(50)));
    assert_eq!(
        draws[1].abort,
        Some(Abort::Http(StatusCode::SERVICE_UNAVAILABLE))
    );
}

#[test]
fn timeouts_nest_and_retries_are_bounded() {
    let ms = Duration::from_millis;
    let timed = |request, backend_request| spec::Rule {
        timeouts: Timeouts {
            request,
            backend_request,
        },
        ..rule("api")
    };
    for ok in [
        timed(Some(ms(150)), Some(ms(100))),
        timed(Some(ms(100)), Some(ms(100))),
        timed(None, Some(ms(100))),
        timed(Some(ms(100)), None),
    ] {
        let t = with_rule(ok.clone()).expect("compiles");
        assert_eq!(*t.rules()[0].timeouts(), ok.timeouts);
        assert!(t.rules()[0].has_policy());
    }
    let e = with_rule(timed(Some(ms(100)), Some(ms(101)))).expect_err("refused");
    assert_eq!(e.field, "timeouts.backendRequest", "{e}");
    assert!(!with_rule(rule("api")).expect("plain").rules()[0].has_policy());

    let retried = |attempts, codes: &[u16], backoff| spec::Rule {
        retry: Some(Retry {
            attempts,
            codes: codes.to_vec(),
            backoff,
        }),
        ..rule("api")
    };
    let t = with_rule(retried(3, &[503, 429, 599, 400], ms(20))).expect("compiles");
    let r = t.rules()[0].retry().expect("a policy");
    assert_eq!(r.attempts(), 3);
    for (status, retried) in [
        (503, true),
        (429, true),
        (599, true),
        (400, true),
        (500, false),
        (502, false),
        (200, false),
        (304, false),
    ] {
        let s = StatusCode::from_u16(status).expect("status");
        assert_eq!(r.retries_status(s), retried, "{status}");
    }
    // Backoff with up to a quarter of jitter.
    assert_eq!(r.backoff(0), ms(20));
    assert!(r.backoff(u32::MAX) < ms(25) && r.backoff(u32::MAX) > ms(24));
    // Zero attempts is no policy at all.
    let t = with_rule(retried(0, &[503], ms(1))).expect("compiles");
    assert!(t.rules()[0].retry().is_none());
    for (bad, field) in [
        (retried(11, &[], ms(0)), "retry.attempts"),
        (retried(1, &[399], ms(0)), "retry.codes[0]"),
        (retried(1, &[503, 600], ms(0)), "retry.codes[1]"),
        (retried(1, &[500; 17], ms(0)), "retry.codes"),
        (retried(1, &[], Duration::from_secs(3601)), "retry.backoff"),
    ] {
        let e = with_rule(bad).expect_err("refused");
        assert_eq!(e.field, field, "{e}");
    }
}

#[test]
fn the_budget_allows_a_fifth_of_requests_plus_ten_a_second_over_ten_seconds() {
    let budget = RetryBudget::default();
    let withdrawals = |at: u64, n: usize| (0..n).filter(|_| budget.withdraw(at)).count();
    // No traffic: the floor, 10 a second over the window, is 100 retries.
    assert_eq!(withdrawals(0, 150), 100);
    // 1,000 requests in the window add 200 more.
    for _ in 0..1000 {
        budget.deposit(500);
    }
    assert_eq!(withdrawals(900, 500), 200);
    // Still inside the window (second 9): nothing left.
    assert!(!budget.withdraw(9_999));
    // Second 10: second 0's requests and retries have left the window (all of them were
    // counted in second 0), so the floor is back.
    assert_eq!(withdrawals(10_000, 150), 100);
}

#[test]
fn the_budget_window_slides_second_by_second() {
    let budget = RetryBudget::default();
    // 100 requests a second for 10 s: 1,000 in the window, 300 retries allowed in all.
    for second in 0..10u64 {
        for _ in 0..100 {
            budget.deposit(second * 1000);
        }
    }
    assert_eq!((0..400).filter(|_| budget.withdraw(9_500)).count(), 300);
    // Second 10: second 0's 100 requests leave the window and second 10's 100 come in; the
    // retries taken in second 9 still count.
    for _ in 0..100 {
        budget.deposit(10_000);
    }
    assert!(!budget.withdraw(10_000), "300 taken, 300 allowed");
    // Second 19: only seconds 10..=19 count: 100 requests and no retries: 120 allowed.
    assert_eq!((0..200).filter(|_| budget.withdraw(19_000)).count(), 120);
}
