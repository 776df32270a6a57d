//! One request's balancing cost: `pick`, then `start` and `finish` on the chosen endpoint.
//! Time is simulated (a base `Instant` plus a counter) so the clock is not what is measured.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use rand::rngs::StdRng;
use rand::SeedableRng;
use weft_proxy_balance::{pick, Load, Outcome, Settings};

fn bench(c: &mut Criterion) {
    // Ejections long enough to outlast the run, which advances the simulated clock 1 µs a pick.
    let settings = Settings {
        failure_threshold: 1,
        min_ejection: Duration::from_secs(3_600),
        max_ejection: Duration::from_secs(3_600),
        ..Settings::default()
    };
    let mut group = c.benchmark_group("pick_start_finish");
    for (n, ejected) in [(3_usize, 0_usize), (100, 0), (100, 10), (100, 90)] {
        let endpoints: Vec<Arc<Load>> = (0..n)
            .map(|i| Arc::new(Load::new(1 + (i % 3) as u32, &settings)))
            .collect();
        let mut rng = StdRng::seed_from_u64(1);
        let base = Instant::now();
        for endpoint in &endpoints[n - ejected..] {
            endpoint
                .start(base)
                .finish(base, Outcome::Failure, &mut rng);
        }
        let mut tick = 0_u64;
        group.bench_function(format!("{n}_endpoints_{ejected}_ejected"), |b| {
            b.iter(|| {
                tick += 1;
                let now = base + Duration::from_micros(tick);
                let chosen = pick(black_box(&endpoints), now, &mut rng).expect("endpoints");
                let pending = endpoints[chosen.index].start(now);
                let latency = Duration::from_micros(500 + 100 * (chosen.index as u64 % 7));
                pending.finish(now + latency, Outcome::Success, &mut rng);
                chosen
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
