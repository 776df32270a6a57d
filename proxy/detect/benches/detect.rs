//! Protocol detection runs once per accepted connection.
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use weft_proxy_detect::{detect, H2_PREFACE};

fn bench(c: &mut Criterion) {
    let http1 =
        b"GET /api/v1/users/12345?expand=true HTTP/1.1\r\nHost: users.default.svc:8080\r\n\r\n";
    let mut tls = vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01];
    tls.resize(512, 0);
    let mut group = c.benchmark_group("detect");
    group.bench_function("http1", |b| b.iter(|| detect(black_box(http1))));
    group.bench_function("http2", |b| b.iter(|| detect(black_box(H2_PREFACE))));
    group.bench_function("tls", |b| b.iter(|| detect(black_box(&tls))));
    group.bench_function("opaque_resp", |b| {
        b.iter(|| detect(black_box(b"*1\r\n$4\r\nPING\r\n")))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
