//! One request's route choice: `RouteTable::route` on the request's method, URI and headers,
//! then `pick` of a backend by weight. Four tables: none (the Service is balanced as without
//! routes), one rule with a prefix match, 100 rules where only the last matches, and a rule
//! chosen by a header regex.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, Method, Request, Uri};
use weft_proxy_route::spec::{self, HeaderMatch, PathMatch, ValueMatch};
use weft_proxy_route::{Route, RouteTable};

fn backend(name: &str, weight: u32) -> spec::Backend {
    spec::Backend {
        weight,
        target: spec::Target::Service(spec::ServiceRef {
            namespace: "shop".into(),
            name: name.into(),
            port: 80,
        }),
        filters: vec![],
    }
}

fn rule(i: usize) -> spec::Rule {
    spec::Rule {
        name: format!("httproute/shop/api/rule/{i}"),
        filters: vec![],
        backends: vec![backend("api-v1", 90), backend("api-v2", 10)],
        ..Default::default()
    }
}

fn prefix(rule: u32, path: &str) -> spec::Match {
    spec::Match {
        rule,
        path: Some(PathMatch::Prefix(path.into())),
        ..Default::default()
    }
}

fn compile(matches: Vec<spec::Match>, rules: Vec<spec::Rule>) -> RouteTable {
    RouteTable::compile(&spec::RouteTable {
        matches,
        rules,
        tcp_split: vec![],
        ..Default::default()
    })
    .expect("the bench tables compile")
}

/// A typical request: a path of three segments, a query, and the headers a client sends.
fn request() -> (Method, Uri, HeaderMap) {
    let (parts, ()) = Request::get("/api/v1/orders?page=2")
        .header("host", "api.shop.svc.cluster.local")
        .header("user-agent", "curl/8.5.0")
        .header("accept", "*/*")
        .header("x-canary", "true")
        .body(())
        .expect("a request")
        .into_parts();
    (parts.method, parts.uri, parts.headers)
}

fn bench(c: &mut Criterion) {
    let tables = [
        ("no_route", RouteTable::empty()),
        (
            "one_rule_prefix",
            compile(vec![prefix(0, "/api")], vec![rule(0)]),
        ),
        ("100_rules_last_matches", {
            let mut matches: Vec<spec::Match> = (0..99)
                .map(|i| prefix(i, &format!("/service-{i}/v1")))
                .collect();
            matches.push(prefix(99, "/api"));
            compile(matches, (0..100).map(rule).collect())
        }),
        (
            "header_regex",
            compile(
                vec![spec::Match {
                    headers: vec![HeaderMatch {
                        name: "x-canary".into(),
                        value: ValueMatch::Regex("1|true|yes".into()),
                    }],
                    ..prefix(0, "/")
                }],
                vec![rule(0)],
            ),
        ),
    ];
    let (method, uri, headers) = request();
    let mut group = c.benchmark_group("route_and_pick");
    for (name, table) in &tables {
        let mut r = 0_u32;
        group.bench_function(*name, |b| {
            b.iter(|| {
                r = r.wrapping_add(0x9e37_79b9);
                match table.route(black_box(&method), black_box(&uri), black_box(&headers)) {
                    Route::Matched(routed) => routed.pick(r).map(|b| b.id().index()).ok(),
                    Route::Unrouted | Route::NotFound => None,
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
