//! Choosing a route and a backend allocates nothing: the proxy does it for every request.
//!
//! Its own test binary, so the counting allocator sees this test's allocations only (and one
//! test, so no other test thread allocates meanwhile).

use std::alloc::System;

use http::{HeaderMap, Method, Request, Uri};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use weft_proxy_route::spec::{self, HeaderMatch, PathMatch, QueryMatch, ValueMatch};
use weft_proxy_route::{Route, RouteTable};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn table() -> RouteTable {
    let backend = |name: &str, weight| spec::Backend {
        weight,
        target: spec::Target::Service(spec::ServiceRef {
            namespace: "ns".into(),
            name: name.into(),
            port: 80,
        }),
        filters: vec![],
    };
    let mut matches: Vec<spec::Match> = (0..50)
        .map(|i| spec::Match {
            rule: 0,
            path: Some(PathMatch::Prefix(format!("/svc{i}"))),
            ..Default::default()
        })
        .collect();
    matches.push(spec::Match {
        rule: 1,
        method: Some("POST".into()),
        path: Some(PathMatch::Regex("/api/v[0-9]+/.*".into())),
        headers: vec![
            HeaderMatch {
                name: "x-canary".into(),
                value: ValueMatch::Regex("(1|true)".into()),
            },
            HeaderMatch {
                name: "X-Tenant".into(),
                value: ValueMatch::Exact("blue".into()),
            },
        ],
        query: vec![
            QueryMatch {
                name: "animal".into(),
                value: ValueMatch::Exact("whale shark".into()),
            },
            QueryMatch {
                name: "id".into(),
                value: ValueMatch::Regex("[0-9]+".into()),
            },
        ],
    });
    matches.push(spec::Match {
        rule: 2,
        path: Some(PathMatch::Exact("/exact".into())),
        ..Default::default()
    });
    RouteTable::compile(&spec::RouteTable {
        matches,
        rules: vec![
            spec::Rule {
                name: "prefixes".into(),
                filters: vec![],
                backends: vec![backend("a", 90), backend("b", 10)],
                ..Default::default()
            },
            spec::Rule {
                name: "canary".into(),
                filters: vec![],
                backends: vec![backend("c", 1), backend("zero", 0), backend("d", 3)],
                ..Default::default()
            },
            spec::Rule {
                name: "exact".into(),
                filters: vec![],
                backends: vec![backend("e", 1)],
                ..Default::default()
            },
        ],
        tcp_split: vec![],
        ..Default::default()
    })
    .expect("the table compiles")
}

#[test]
fn route_and_pick_allocate_nothing() {
    let table = table();
    let requests: Vec<(Method, Uri, HeaderMap)> = [
        ("GET", "/svc49/x", vec![]),
        (
            "POST",
            "/api/v2/orders?id=42&animal=whale%20shark",
            vec![("x-canary", "true"), ("x-tenant", "blue")],
        ),
        ("GET", "/exact", vec![]),
        ("GET", "/nothing/here?animal=x", vec![("x-canary", "1")]),
    ]
    .into_iter()
    .map(|(method, uri, headers)| {
        let mut builder = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        let (parts, ()) = builder.body(()).expect("a request").into_parts();
        (parts.method, parts.uri, parts.headers)
    })
    .collect();

    let names: Vec<&str> = requests
        .iter()
        .map(
            |(method, uri, headers)| match table.route(method, uri, headers) {
                Route::Matched(r) => r.rule().name(),
                Route::NotFound => "404",
                Route::Unrouted => "unrouted",
            },
        )
        .collect();
    assert_eq!(names, ["prefixes", "canary", "exact", "404"]);

    let route_all = || {
        let mut routed = 0;
        for (i, (method, uri, headers)) in requests.iter().enumerate() {
            if let Route::Matched(r) = table.route(method, uri, headers) {
                let backend = r.pick(u32::MAX / 7 * i as u32).expect("a backend");
                routed += backend.weight();
            }
        }
        routed
    };
    // The first search on a thread builds each regex's cache; that is per thread, not per request.
    let warm = route_all();
    assert!(warm > 0);

    let region = Region::new(GLOBAL);
    for _ in 0..100 {
        assert_eq!(route_all(), warm);
    }
    let stats = region.change();
    assert_eq!(
        (stats.allocations, stats.reallocations),
        (0, 0),
        "routing allocated: {stats:?}"
    );
}
