//! `weftctl demo`: a live mesh on this machine. Pods are network namespaces on the reference
//! CNI bridge inside one dedicated "node" namespace (built with `weft-lab`), with `weft-cni`
//! chained after `bridge`, the control plane in local mode, a `weft-proxy` as UID 2121 in each
//! pod, and a steady trickle of traffic: `web` calls the Service `api` (pods `api-v1` and
//! `api-v2`), and both API pods call the Service `backend`. A table of requests, success rate
//! and latency per workload, read from each proxy's `/metrics`, refreshes in the terminal until
//! Ctrl-C; then every pod, namespace, veth, bridge and rule is removed (the lab's guards).
//!
//! Safety: all traffic stays inside the node namespace, which has no route out; addresses come
//! from 198.18.0.0/15; clients run inside pod namespaces only.
//!
//! Needs root and the Debian packages iptables, iproute2, util-linux (setpriv), tcpdump and
//! containernetworking-plugins; without them it says exactly what is missing. `make demo` runs
//! the loopback demo (`scripts/try-proxy.sh`, explicit mode, no root) instead when not root.

use std::{
    collections::BTreeMap,
    io::Write,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use weft_lab::{Cluster, Metrics, Pod, PodSpec, Service, ServiceSpec, HTTP_PORT};

/// The namespace (Kubernetes namespace, not network namespace) of the demo's workloads.
const NAMESPACE: &str = "demo";
/// The Services' port.
const PORT: u16 = 80;
/// How often the table refreshes.
const REFRESH: Duration = Duration::from_secs(2);
/// A latency bucket bound that means "slower than every finite bucket".
const INF: f64 = f64::INFINITY;

#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Run for `--seconds`, print the table once, check that traffic crossed the mesh with mTLS
    /// and spread over both API versions, and exit (non-zero if not). CI runs this.
    #[arg(long)]
    once: bool,
    /// With `--once`: how long the traffic runs.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(2..=600))]
    seconds: u64,
    /// Requests per second from each client (web, and each API pod to the backend).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=200))]
    rps: u32,
}

/// What one client has sent, as the client saw it.
#[derive(Debug, Default)]
struct ClientCounts {
    ok: AtomicU64,
    failed: AtomicU64,
}

/// One workload's figures over the last refresh window.
#[derive(Debug, Default, Clone, PartialEq)]
struct Row {
    inbound_rps: f64,
    outbound_rps: f64,
    success: Option<f64>,
    p50: Option<f64>,
    p99: Option<f64>,
    mtls_share: Option<f64>,
}

/// A proxy's counters at one moment, summed over the labels the table does not show.
#[derive(Debug, Default, Clone)]
struct Snapshot {
    inbound: f64,
    inbound_ok: f64,
    inbound_tls: f64,
    outbound: f64,
    /// Inbound latency histogram: upper bound -> cumulative count.
    buckets: BTreeMap<Bound, f64>,
}

/// A histogram bound, ordered (the `le` label as a number).
#[derive(Debug, Clone, Copy)]
struct Bound(f64);

impl PartialEq for Bound {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Bound {}

impl PartialOrd for Bound {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Bound {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

pub(crate) fn run(args: DemoArgs) -> anyhow::Result<()> {
    if let Some(why) = weft_lab::prereq::missing() {
        bail!(
            "the live mesh of network namespaces cannot run here: {why}.\n\
             As root, install what is missing: apt-get install iptables iproute2 util-linux tcpdump containernetworking-plugins\n\
             (`make deps` does it). Without root, `make demo` runs the loopback demo instead: scripts/try-proxy.sh"
        );
    }
    // Ctrl-C must end in the guards' cleanup, with `--once` too: the default action would kill
    // the process and leave the namespaces behind.
    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(stop.clone())?;
    println!("weftctl demo: starting a node namespace, the control plane and four pods ...");
    let cluster = Cluster::start().context("start the node namespace and the control plane")?;
    let api = cluster.service(
        ServiceSpec::new(NAMESPACE, "api")
            .selector("app", "api")
            .port("http", PORT, HTTP_PORT),
    )?;
    let backend = cluster.service(
        ServiceSpec::new(NAMESPACE, "backend")
            .selector("app", "backend")
            .port("http", PORT, HTTP_PORT),
    )?;
    let pod = |name: &str, sa: &str, app: &str| {
        cluster
            .pod(
                PodSpec::new(NAMESPACE, name)
                    .service_account(sa)
                    .label("app", app)
                    .meshed(),
            )
            .with_context(|| format!("start pod {name}"))
    };
    let pods: Vec<Arc<Pod>> = vec![
        Arc::new(pod("web", "web", "web")?),
        Arc::new(pod("api-v1", "api", "api")?),
        Arc::new(pod("api-v2", "api", "api")?),
        Arc::new(pod("backend", "backend", "backend")?),
    ];
    print_intro(&cluster, &pods, &api, &backend, args.rps);

    let interval = Duration::from_secs(1) / args.rps;
    let routes = [
        (0, api.addr(PORT)),
        (1, backend.addr(PORT)),
        (2, backend.addr(PORT)),
    ];
    let clients: Vec<_> = routes
        .iter()
        .map(|&(from, dst)| {
            let counts = Arc::new(ClientCounts::default());
            let handle = spawn_client(
                pods[from].clone(),
                dst,
                interval,
                stop.clone(),
                counts.clone(),
            );
            (pods[from].name().to_owned(), dst, counts, handle)
        })
        .collect();

    let started = Instant::now();
    let deadline = args
        .once
        .then(|| started + Duration::from_secs(args.seconds));
    let mut last = snapshots(&pods);
    let mut last_at = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let until = deadline.map_or(REFRESH, |d| {
            d.saturating_duration_since(Instant::now()).min(REFRESH)
        });
        sleep_unless(&stop, until);
        let now = snapshots(&pods);
        let window = last_at.elapsed().as_secs_f64();
        let rows: BTreeMap<String, Row> = pods
            .iter()
            .map(|p| {
                let name = p.name().to_owned();
                let row = row(last.get(&name), now.get(&name), window);
                (name, row)
            })
            .collect();
        if !args.once && !stop.load(Ordering::Relaxed) {
            draw(&pods, &rows, started.elapsed());
        }
        last = now;
        last_at = Instant::now();
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    // Set by a signal rather than by the deadline.
    let interrupted = stop.swap(true, Ordering::Relaxed);
    // The clients notice `stop` within one request timeout, so joining them is bounded. One
    // that panicked has nothing more to count: its counts stand as they are.
    let clients: Vec<_> = clients
        .into_iter()
        .map(|(from, dst, counts, handle)| {
            let _ = handle.join();
            (from, dst, counts)
        })
        .collect();
    if args.once && interrupted {
        println!(
            "\nweftctl demo: interrupted; removing pods, namespaces, the bridge and the rules ..."
        );
        drop(pods);
        drop(cluster);
        bail!("interrupted before the checks ran");
    }
    if args.once {
        let totals = totals(&pods);
        draw_totals(&pods, &totals, started.elapsed());
        let failures = check_once(&pods, &totals, &clients);
        println!("weftctl demo: tearing down (pods, namespaces, bridge, rules) ...");
        drop(pods);
        drop(cluster);
        if !failures.is_empty() {
            bail!("the demo mesh did not work:\n  {}", failures.join("\n  "));
        }
        println!("weftctl demo: ok: traffic crossed the mesh with mutual TLS and spread over api-v1 and api-v2");
        return Ok(());
    }
    println!("\nweftctl demo: stopping; removing pods, namespaces, the bridge and the rules ...");
    drop(pods);
    drop(cluster);
    println!("weftctl demo: done, nothing left behind");
    Ok(())
}

/// Sets `stop` on SIGINT or SIGTERM, from a small thread of its own.
pub(crate) fn watch_signals(stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("start the signal watcher")?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            runtime.block_on(async {
                use tokio::signal::unix::{signal, SignalKind};
                let (Ok(mut int), Ok(mut term)) = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) else {
                    return;
                };
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                stop.store(true, Ordering::Relaxed);
            });
        })
        .context("start the signal watcher")?;
    Ok(())
}

pub(crate) fn sleep_unless(stop: &AtomicBool, total: Duration) {
    let until = Instant::now() + total;
    while !stop.load(Ordering::Relaxed) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// A client inside `pod` sending `GET /` to `dst` every `interval` until `stop`.
fn spawn_client(
    pod: Arc<Pod>,
    dst: SocketAddr,
    interval: Duration,
    stop: Arc<AtomicBool>,
    counts: Arc<ClientCounts>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            match pod.get(dst, "/") {
                Ok(r) if r.status == 200 => counts.ok.fetch_add(1, Ordering::Relaxed),
                _ => counts.failed.fetch_add(1, Ordering::Relaxed),
            };
            next += interval;
            let now = Instant::now();
            if next > now {
                sleep_unless(&stop, next - now);
            } else {
                next = now;
            }
        }
    })
}

fn print_intro(cluster: &Cluster, pods: &[Arc<Pod>], api: &Service, backend: &Service, rps: u32) {
    println!();
    println!("A Weft mesh is running in network namespaces on this machine:");
    println!(
        "  node namespace {} (bridge {}, pods from {}, no route out)",
        cluster.node().name(),
        weft_lab::BRIDGE,
        weft_lab::POD_SUBNET
    );
    for p in pods {
        println!(
            "  pod {:<8} {:<14} netns {:<28} {}",
            p.name(),
            p.ip().to_string(),
            p.netns().name(),
            p.spiffe_id()
        );
    }
    println!(
        "  Service api     {} -> api-v1, api-v2     Service backend {} -> backend",
        api.addr(PORT),
        backend.addr(PORT)
    );
    println!("Traffic: web -> api, and api-v1, api-v2 -> backend, {rps} requests/s each, all through the proxies with mTLS.");
    println!("Where to look (in another terminal, as root):");
    let first = &pods[0];
    println!(
        "  ip netns exec {} curl -s 127.0.0.1:15190/metrics | grep weft_requests_total",
        first.netns().name()
    );
    println!(
        "  ip netns exec {} iptables -t nat -S        # the rules weft-cni installed",
        first.netns().name()
    );
    println!(
        "  ip netns exec {} tcpdump -ni {} -A tcp     # only TLS between pods",
        cluster.node().name(),
        weft_lab::BRIDGE
    );
    println!(
        "  the control plane's YAML and the logs: {}",
        cluster.dir().display()
    );
    println!("Ctrl-C stops the demo and removes every namespace, veth, bridge and rule.\n");
}

fn snapshots(pods: &[Arc<Pod>]) -> BTreeMap<String, Snapshot> {
    pods.iter()
        .filter_map(|p| Some((p.name().to_owned(), snapshot(&p.metrics().ok()?))))
        .collect()
}

fn snapshot(m: &Metrics) -> Snapshot {
    let inbound = [("direction", "inbound")];
    let mut s = Snapshot {
        inbound: m.sum("weft_requests_total", &inbound),
        inbound_ok: m
            .matching("weft_requests_total", &inbound)
            .filter(|s| s.label("status_code").starts_with('2'))
            .map(|s| s.value)
            .sum(),
        inbound_tls: m.sum(
            "weft_requests_total",
            &[("direction", "inbound"), ("tls", "true")],
        ),
        outbound: m.sum("weft_requests_total", &[("direction", "outbound")]),
        buckets: BTreeMap::new(),
    };
    for b in m.matching("weft_request_duration_seconds_bucket", &inbound) {
        let bound = match b.label("le") {
            "+Inf" => INF,
            le => match le.parse() {
                Ok(v) => v,
                Err(_) => continue,
            },
        };
        *s.buckets.entry(Bound(bound)).or_default() += b.value;
    }
    s
}

/// The figures of the window between two snapshots.
fn row(before: Option<&Snapshot>, after: Option<&Snapshot>, seconds: f64) -> Row {
    let (Some(before), Some(after)) = (before, after) else {
        return Row::default();
    };
    let seconds = seconds.max(0.001);
    let inbound = after.inbound - before.inbound;
    let buckets: Vec<(f64, f64)> = after
        .buckets
        .iter()
        .map(|(b, c)| (b.0, c - before.buckets.get(b).copied().unwrap_or(0.0)))
        .collect();
    Row {
        inbound_rps: inbound / seconds,
        outbound_rps: (after.outbound - before.outbound) / seconds,
        success: (inbound > 0.0).then(|| (after.inbound_ok - before.inbound_ok) / inbound),
        p50: quantile(&buckets, 0.5),
        p99: quantile(&buckets, 0.99),
        mtls_share: (inbound > 0.0).then(|| (after.inbound_tls - before.inbound_tls) / inbound),
    }
}

/// The upper bound of the bucket holding quantile `q` of cumulative `buckets` (sorted by bound):
/// "at most this long". `None` without observations.
fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    buckets
        .iter()
        .find(|(_, count)| *count >= q * total)
        .map(|(bound, _)| *bound)
}

fn totals(pods: &[Arc<Pod>]) -> BTreeMap<String, Row> {
    let zero = Snapshot::default();
    snapshots(pods)
        .into_iter()
        .map(|(name, s)| {
            let r = row(Some(&zero), Some(&s), 1.0);
            (name, r)
        })
        .collect()
}

fn draw(pods: &[Arc<Pod>], rows: &BTreeMap<String, Row>, elapsed: Duration) {
    let mut out = String::new();
    // Clear the screen and go home: a live table, not a scrolling log.
    out.push_str("\x1b[2J\x1b[H");
    out.push_str(&format!(
        "Weft demo, {}s: per workload over the last {}s, from each proxy's /metrics (inbound = requests it served)\n\n",
        elapsed.as_secs(),
        REFRESH.as_secs()
    ));
    out.push_str(&table(pods, rows, "req/s"));
    out.push_str("\nCtrl-C stops the demo and removes everything.\n");
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
}

fn draw_totals(pods: &[Arc<Pod>], rows: &BTreeMap<String, Row>, elapsed: Duration) {
    println!(
        "Weft demo after {}s: per workload since start, from each proxy's /metrics\n",
        elapsed.as_secs()
    );
    print!("{}", table(pods, rows, "requests"));
}

fn table(pods: &[Arc<Pod>], rows: &BTreeMap<String, Row>, unit: &str) -> String {
    let mut out = format!(
        "{:<9} {:<40} {:>11} {:>11} {:>8} {:>8} {:>8} {:>6}\n",
        "WORKLOAD",
        "IDENTITY",
        format!("IN {unit}"),
        format!("OUT {unit}"),
        "SUCCESS",
        "P50",
        "P99",
        "MTLS"
    );
    for p in pods {
        let r = rows.get(p.name()).cloned().unwrap_or_default();
        out.push_str(&format!(
            "{:<9} {:<40} {:>11} {:>11} {:>8} {:>8} {:>8} {:>6}\n",
            p.name(),
            p.spiffe_id(),
            // `+ 0.0` turns a -0.0 (a counter that has not moved) into 0.0.
            format!("{:.1}", r.inbound_rps + 0.0),
            format!("{:.1}", r.outbound_rps + 0.0),
            percent(r.success),
            latency(r.p50),
            latency(r.p99),
            percent(r.mtls_share),
        ));
    }
    out
}

fn percent(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{:.1}%", v * 100.0))
}

fn latency(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v.is_infinite() => "slow".into(),
        Some(v) if v < 1.0 => format!("≤{}ms", trim(v * 1000.0)),
        Some(v) => format!("≤{}s", trim(v)),
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map(str::to_owned).unwrap_or(s)
}

/// What `--once` requires: every client got answers and no failures, each server pod served
/// requests over mTLS, all successful, and both API versions took a share.
fn check_once(
    pods: &[Arc<Pod>],
    totals: &BTreeMap<String, Row>,
    clients: &[(String, SocketAddr, Arc<ClientCounts>)],
) -> Vec<String> {
    let mut failures = Vec::new();
    for (from, dst, counts) in clients {
        let ok = counts.ok.load(Ordering::Relaxed);
        let failed = counts.failed.load(Ordering::Relaxed);
        if ok == 0 || failed > 0 {
            failures.push(format!("{from} -> {dst}: {ok} answered, {failed} failed"));
        }
    }
    for p in pods.iter().skip(1) {
        let r = totals.get(p.name()).cloned().unwrap_or_default();
        if r.inbound_rps < 1.0 {
            failures.push(format!("{} served no requests through its proxy", p.name()));
        }
        if r.success != Some(1.0) {
            failures.push(format!("{}: success rate {}", p.name(), percent(r.success)));
        }
        if r.mtls_share != Some(1.0) {
            failures.push(format!(
                "{}: only {} of its requests came over mTLS",
                p.name(),
                percent(r.mtls_share)
            ));
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_bucket_bounds() {
        let b = [(0.001, 10.0), (0.005, 90.0), (0.01, 99.0), (INF, 100.0)];
        assert_eq!(quantile(&b, 0.5), Some(0.005));
        assert_eq!(quantile(&b, 0.99), Some(0.01));
        assert_eq!(quantile(&b, 1.0), Some(INF));
        assert_eq!(quantile(&[(0.001, 0.0), (INF, 0.0)], 0.5), None);
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn a_window_is_the_difference_of_two_snapshots() {
        let before = Snapshot {
            inbound: 10.0,
            inbound_ok: 10.0,
            inbound_tls: 10.0,
            outbound: 4.0,
            buckets: [(Bound(0.005), 10.0), (Bound(INF), 10.0)]
                .into_iter()
                .collect(),
        };
        let after = Snapshot {
            inbound: 30.0,
            inbound_ok: 29.0,
            inbound_tls: 30.0,
            outbound: 8.0,
            buckets: [
                (Bound(0.005), 20.0),
                (Bound(0.01), 29.0),
                (Bound(INF), 30.0),
            ]
            .into_iter()
            .collect(),
        };
        let r = row(Some(&before), Some(&after), 2.0);
        assert_eq!(r.inbound_rps, 10.0);
        assert_eq!(r.outbound_rps, 2.0);
        assert_eq!(r.success, Some(0.95));
        assert_eq!(r.p50, Some(0.005));
        assert_eq!(r.mtls_share, Some(1.0));
        assert_eq!(row(None, Some(&after), 2.0), Row::default());
    }

    #[test]
    fn figures_read_well() {
        assert_eq!(latency(Some(0.005)), "≤5ms");
        assert_eq!(latency(Some(0.0025)), "≤2.5ms");
        assert_eq!(latency(Some(2.0)), "≤2s");
        assert_eq!(latency(Some(INF)), "slow");
        assert_eq!(percent(Some(1.0)), "100.0%");
        assert_eq!(percent(None), "-");
    }
}
