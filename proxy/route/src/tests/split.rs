//! Choosing a backend by weight, and the 500s of rules without a usable backend.

use http::StatusCode;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::{Answer, Share, Split};

fn split(backends: Vec<spec::Backend>) -> RouteTable {
    compile(
        vec![prefix(0, "/")],
        vec![spec::Rule {
            name: "split".into(),
            filters: vec![],
            backends,
            ..Default::default()
        }],
    )
}

fn the_split(table: &RouteTable) -> &Split {
    table.rules()[0].split()
}

/// The name of the backend `r` picks, or the status it answers.
fn pick(split: &Split, r: u32) -> String {
    match split.pick(r) {
        Ok(backend) => backend.service().name.clone(),
        Err(Answer::Error { status, .. }) => status.as_str().to_owned(),
        Err(answer) => panic!("a pick answered {answer:?}"),
    }
}

#[test]
fn picks_stay_within_one_percent_of_the_weights() {
    // Seeded: the same 100,000 draws every run.
    let mut rng = StdRng::seed_from_u64(0x5eed_0015);
    let cases: &[&[u32]] = &[
        &[90, 10],
        &[1, 2, 3, 4],
        &[5, 0, 5],
        &[0, 1],
        &[1_000_000, 1],
        &[1],
    ];
    for weights in cases {
        let names: Vec<String> = (0..weights.len()).map(|i| format!("b{i}")).collect();
        let table = split(
            names
                .iter()
                .zip(weights.iter())
                .map(|(name, &weight)| backend(name, weight))
                .collect(),
        );
        let split = the_split(&table);
        let total: u32 = weights.iter().sum();
        assert_eq!(split.total_weight(), total);
        let mut counts = vec![0_u32; weights.len()];
        const PICKS: u32 = 100_000;
        for _ in 0..PICKS {
            let name = pick(split, rng.random());
            let index = names
                .iter()
                .position(|n| *n == name)
                .expect("a known backend");
            counts[index] += 1;
        }
        for (i, (&count, &weight)) in counts.iter().zip(weights.iter()).enumerate() {
            let observed = f64::from(count) / f64::from(PICKS);
            let expected = f64::from(weight) / f64::from(total);
            assert!(
                (observed - expected).abs() < 0.01,
                "weights {weights:?}: backend {i} got {observed:.4} of the picks, expected {expected:.4}"
            );
            if weight == 0 {
                assert_eq!(
                    count, 0,
                    "weights {weights:?}: backend {i} of weight 0 was picked"
                );
            }
        }
    }
}

#[test]
fn each_share_is_an_exact_slice_of_the_draws() {
    // 1/2/3/4 of 10: the draw's position in 0..2^32 decides, with no bias past rounding.
    let table = split(vec![
        backend("a", 1),
        backend("b", 2),
        backend("c", 3),
        backend("d", 4),
    ]);
    let split = the_split(&table);
    let at = |tenths: f64| (tenths / 10.0 * f64::from(u32::MAX)) as u32;
    assert_eq!(pick(split, 0), "a");
    assert_eq!(pick(split, at(0.99)), "a");
    assert_eq!(pick(split, at(1.01)), "b");
    assert_eq!(pick(split, at(2.99)), "b");
    assert_eq!(pick(split, at(3.01)), "c");
    assert_eq!(pick(split, at(5.99)), "c");
    assert_eq!(pick(split, at(6.01)), "d");
    assert_eq!(pick(split, u32::MAX), "d");
}

#[test]
fn weight_zero_is_never_picked_even_at_the_edges() {
    let table = split(vec![
        backend("zero", 0),
        backend("one", 1),
        backend("zero2", 0),
    ]);
    let split = the_split(&table);
    for r in [0, 1, u32::MAX / 2, u32::MAX - 1, u32::MAX] {
        assert_eq!(pick(split, r), "one");
    }
    // Sweep 65,536 evenly spaced draws.
    for step in 0..=u16::MAX {
        let r = u32::from(step) << 16;
        assert_eq!(pick(split, r), "one", "draw {r}");
    }
}

#[test]
fn a_rule_without_a_usable_backend_answers_500() {
    for (what, backends) in [
        ("no backends", vec![]),
        ("all weights 0", vec![backend("a", 0), backend("b", 0)]),
        (
            "only invalid backends",
            vec![invalid(500, 1), invalid(500, 3)],
        ),
        (
            "invalid and weight 0",
            vec![invalid(500, 1), backend("a", 0)],
        ),
    ] {
        let table = split(backends);
        for r in [0, u32::MAX / 3, u32::MAX] {
            match table.rules()[0].pick(r) {
                Err(Answer::Error { status, reason }) => {
                    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{what}");
                    assert!(!reason.is_empty(), "{what}");
                }
                other => panic!("{what}: {other:?}"),
            }
        }
    }
}

#[test]
fn an_invalid_backend_answers_its_status_for_its_share_only() {
    let table = split(vec![backend("good", 1), invalid(503, 1)]);
    let split = the_split(&table);
    assert_eq!(pick(split, 0), "good");
    assert_eq!(pick(split, u32::MAX), "503");
    let mut rng = StdRng::seed_from_u64(7);
    let errors = (0..10_000)
        .filter(|_| pick(split, rng.random()) == "503")
        .count();
    assert!(
        (4_500..5_500).contains(&errors),
        "{errors} of 10,000 went to the invalid half"
    );
    match &split.shares()[1] {
        Share::Invalid(invalid) => {
            assert_eq!(invalid.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(invalid.weight(), 1);
            assert!(invalid.reason().contains("BackendNotFound"));
        }
        Share::Backend(b) => panic!("{b:?}"),
    }
}

#[test]
fn services_are_numbered_once_per_table() {
    let mut mirrored = rule("b");
    mirrored.filters = vec![spec::Filter::RequestMirror(spec::RequestMirror {
        backend: service("shadow"),
        fraction: spec::Fraction::ALL,
    })];
    let table = RouteTable::compile(&spec::RouteTable {
        matches: vec![prefix(0, "/a"), prefix(1, "/")],
        rules: vec![
            spec::Rule {
                name: "a".into(),
                filters: vec![],
                backends: vec![backend("a", 1), backend("b", 1)],
                ..Default::default()
            },
            mirrored,
        ],
        tcp_split: vec![backend("b", 9), backend("tcp", 1)],
        ..Default::default()
    })
    .expect("compiles");
    let names: Vec<&str> = table.services().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "shadow", "tcp"]);
    let b = table.rules()[1].pick(0).expect("b");
    assert_eq!(table.services()[b.id().index()], *b.service());
    let mirror = table.rules()[1].mirrors().next().expect("a mirror");
    assert_eq!(table.services()[mirror.id().index()].name, "shadow");
    let tcp = table.tcp_split().expect("a TCP split");
    assert_eq!(tcp.pick(0).expect("b").id(), b.id());
    assert_eq!(tcp.pick(u32::MAX).expect("tcp").service().name, "tcp");
    assert_eq!(b.service().to_string(), "ns/b:8080");
    assert!(compile(vec![], vec![]).tcp_split().is_none());
}
