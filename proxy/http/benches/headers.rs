//! Hop-by-hop handling runs twice per proxied request (request and response).
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use http::{HeaderMap, HeaderValue};
use weft_proxy_http::headers::strip_hop_by_hop;

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_static(v));
    }
    h
}

fn bench(c: &mut Criterion) {
    let typical = headers(&[
        ("host", "users.default.svc.cluster.local:8080"),
        ("user-agent", "curl/8.5.0"),
        ("accept", "*/*"),
        ("content-type", "application/json"),
        ("content-length", "512"),
    ]);
    let with_connection = headers(&[
        ("host", "users:8080"),
        ("connection", "keep-alive, x-hop"),
        ("keep-alive", "timeout=5"),
        ("x-hop", "1"),
    ]);
    let mut group = c.benchmark_group("strip_hop_by_hop");
    group.bench_function("typical", |b| {
        b.iter_batched_ref(
            || typical.clone(),
            |h| strip_hop_by_hop(black_box(h), false),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("connection_header", |b| {
        b.iter_batched_ref(
            || with_connection.clone(),
            |h| strip_hop_by_hop(black_box(h), false),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
