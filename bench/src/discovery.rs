//! `weft-bench discovery`: many simulated proxies against one real `weft-control-plane`, to
//! show how the time to serve them all, the push latency of a change and the control plane's
//! memory grow with the number of subscribers. Figures, not a timed test.
//!
//! For each subscriber count a fresh control plane (the release binary) loads a folder of
//! `--services` Services ([`cluster`]); then the proxies ([`client`]) connect and watch, and the
//! folder is rewritten to change one Service, then every Service, a bounded number of times.
//! Every wait is bounded; any failure is an error naming what failed. See `bench/README.md`.

mod client;
mod cluster;
mod metrics;
mod report;

use std::{collections::HashSet, net::SocketAddr, path::Path, process::Command, time::Duration};

use anyhow::{bail, Context};
use tokio::{sync::mpsc, time::Instant};

use crate::procs::{self, Proc};
use client::{Dialer, Event, Fleet, Got, Proxy};
use cluster::Cluster;
use weft_testkit::Histogram;

/// The server's caps (`control-plane/src/grpc.rs`): streams per HTTP/2 connection and
/// connections in all.
const MAX_STREAMS_PER_CONNECTION: usize = 4096;
const MAX_CONNECTIONS: usize = 10_000;

/// What one run measures.
#[derive(Clone, Debug)]
pub struct Plan {
    pub smoke: bool,
    /// Subscriber counts, one fresh control plane each.
    pub subscribers: Vec<usize>,
    pub services: usize,
    pub endpoints: usize,
    /// Destinations each simulated proxy watches on its one connection.
    pub per_proxy: usize,
    /// Changes of one Service per subscriber count.
    pub one_reps: usize,
    /// Changes of every Service per subscriber count.
    pub all_reps: usize,
    /// The control plane's `--config-poll-interval`.
    pub poll: Duration,
    /// Most connections dialling at once.
    pub dial_concurrency: usize,
    /// Bound on every proxy connected and every stream's first update.
    pub establish_patience: Duration,
    /// Bound on one change reaching every subscriber of what changed.
    pub change_patience: Duration,
}

impl Plan {
    pub fn new(
        smoke: bool,
        subscribers: Option<Vec<usize>>,
        services: Option<usize>,
        endpoints: usize,
        per_proxy: usize,
    ) -> anyhow::Result<Plan> {
        let plan = Plan {
            smoke,
            subscribers: subscribers.unwrap_or_else(|| {
                if smoke {
                    vec![20]
                } else {
                    vec![100, 1_000, 10_000]
                }
            }),
            services: services.unwrap_or(if smoke { 50 } else { 1_000 }),
            endpoints,
            per_proxy,
            one_reps: if smoke { 3 } else { 30 },
            all_reps: if smoke { 2 } else { 10 },
            poll: Duration::from_millis(100),
            dial_concurrency: 128,
            establish_patience: Duration::from_secs(if smoke { 10 } else { 120 }),
            change_patience: Duration::from_secs(if smoke { 5 } else { 30 }),
        };
        anyhow::ensure!(
            !plan.subscribers.is_empty() && !plan.subscribers.contains(&0),
            "--subscribers: expected counts above 0, comma-separated"
        );
        anyhow::ensure!(
            (1..=MAX_STREAMS_PER_CONNECTION).contains(&plan.per_proxy),
            "--watches-per-proxy {}: expected 1 to {MAX_STREAMS_PER_CONNECTION} (the control \
             plane allows {MAX_STREAMS_PER_CONNECTION} streams per connection)",
            plan.per_proxy
        );
        anyhow::ensure!(
            plan.per_proxy <= plan.services,
            "--watches-per-proxy {} is more than the {} Services: a proxy watches each \
             destination once",
            plan.per_proxy,
            plan.services
        );
        for &n in &plan.subscribers {
            anyhow::ensure!(
                plan.proxies(n) <= MAX_CONNECTIONS,
                "{n} subscribers at {} per proxy need {} connections; the control plane \
                 accepts {MAX_CONNECTIONS}: raise --watches-per-proxy",
                plan.per_proxy,
                plan.proxies(n)
            );
        }
        Cluster::new(plan.services, plan.endpoints)?;
        Ok(plan)
    }

    fn proxies(&self, subscribers: usize) -> usize {
        subscribers.div_ceil(self.per_proxy)
    }

    /// Subscriber `i` is proxy `i / per_proxy`'s watch of Service `i % services`: a proxy's
    /// watches are consecutive Services (all distinct), and the Services are dealt round robin.
    fn fleet(&self, subscribers: usize) -> Vec<Proxy> {
        (0..self.proxies(subscribers))
            .map(|p| Proxy {
                index: p,
                watches: (p * self.per_proxy..((p + 1) * self.per_proxy).min(subscribers))
                    .map(|i| (i, Cluster::target(self.service_of(i))))
                    .collect(),
            })
            .collect()
    }

    fn service_of(&self, sub: usize) -> usize {
        sub % self.services
    }
}

/// Resident memory of the control plane, KiB.
pub use crate::procs::Memory;

/// One kind of change, repeated.
#[derive(Clone, Debug, Default)]
pub struct Series {
    pub reps: usize,
    /// Subscribers told per change.
    pub told: usize,
    /// From the rename to each subscriber's update, every subscriber of every repetition.
    pub latencies: Vec<Duration>,
    /// Per repetition: from the rename to the last subscriber's update.
    pub lasts: Vec<Duration>,
    /// The control plane's own push-latency histogram over the series.
    pub server: Histogram,
    /// CPU time over the series: the control plane's and this client's.
    pub cp_cpu: Duration,
    pub client_cpu: Duration,
}

/// One subscriber count's figures.
#[derive(Clone, Debug, Default)]
pub struct Level {
    pub subscribers: usize,
    pub proxies: usize,
    /// The control plane with its Services loaded and no one connected.
    pub baseline: Memory,
    /// Its peak RSS (`VmHWM`) then: what loading the folder took.
    pub baseline_peak_kib: u64,
    /// From the first dial to the last proxy's connection up.
    pub connected: Duration,
    /// From the first dial to the last stream's first update.
    pub first_updates: Duration,
    /// CPU time while the proxies came up: the control plane's and this client's.
    pub cp_cpu_establish: Duration,
    pub client_cpu_establish: Duration,
    /// Once every stream had its first update.
    pub established: Memory,
    /// At the end, after every change: what the control plane kept.
    pub end: Memory,
    /// The control plane's peak RSS (`VmHWM`) at the end.
    pub peak_kib: u64,
    pub one: Series,
    pub all: Series,
}

/// Runs `plan`, prints the report and, unless smoke, writes it into `out` and `bench/runs/`.
pub fn main(plan: Plan, out: &Path) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let machine = crate::report::Machine::host();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the client's runtime")?;
    let load_before = load_average();
    let levels = rt.block_on(run(&plan))?;
    let load = (load_before, load_average());
    let text = report::render(&plan, &machine, &levels, started.elapsed(), load);
    println!("{text}");
    if !plan.smoke {
        report::SECTION.write(out, &machine, &text)?;
        eprintln!(
            "weft-bench discovery: wrote {} and bench/runs/",
            out.display()
        );
    }
    Ok(())
}

async fn run(plan: &Plan) -> anyhow::Result<Vec<Level>> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .context("the folder of weft-bench")?
        .join("weft-control-plane");
    anyhow::ensure!(
        bin.exists(),
        "{} not built; run `cargo build --release --locked -p weft-control-plane -p weft-bench`",
        bin.display()
    );
    raise_fd_limit(plan)?;
    let work = std::env::temp_dir().join(format!("weft-bench-discovery-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let _cleanup = crate::RemoveOnDrop(work.clone());
    let anchors = crate::setups::write_issuer(&work.join("issuer"))?;
    let tokens = work.join("tokens");
    std::fs::write(&tokens, "bench-discovery-token-0123456789 bench proxy\n")?;
    let config = work.join("config");
    std::fs::create_dir_all(&config)?;
    let mut cluster = Cluster::new(plan.services, plan.endpoints)?;
    cluster.write(&config)?;

    let mut levels = Vec::new();
    for &n in &plan.subscribers {
        eprintln!(
            "weft-bench discovery: {n} subscribers ({} proxies), {} Services",
            plan.proxies(n),
            plan.services
        );
        let cp = ControlPlane::start(&bin, &work, &tokens, &config, plan)?;
        let (tx, events) = mpsc::unbounded_channel();
        let mut bench = Bench {
            plan,
            cp,
            cluster: &mut cluster,
            config: &config,
            subscribers: n,
            events,
        };
        let level = bench
            .level(&anchors, tx)
            .await
            .with_context(|| format!("{n} subscribers"))?;
        levels.push(level);
    }
    Ok(levels)
}

/// Raises the soft open-files limit to the hard one, and checks it covers the connections
/// (this process's, and the control plane's, which inherits the limit).
fn raise_fd_limit(plan: &Plan) -> anyhow::Result<()> {
    let most = plan
        .subscribers
        .iter()
        .map(|&n| plan.proxies(n))
        .max()
        .unwrap_or(0);
    let limit = rlimit::increase_nofile_limit(u64::MAX).context("raising RLIMIT_NOFILE")?;
    let need = most as u64 + 256;
    anyhow::ensure!(
        limit >= need,
        "{most} connections need about {need} open files per process; the limit is {limit} \
         (raise the hard limit: ulimit -Hn)"
    );
    Ok(())
}

/// The release control plane on loopback ports, killed by its PID when dropped.
#[derive(Debug)]
struct ControlPlane {
    proc: Proc,
    grpc: SocketAddr,
    admin: SocketAddr,
}

impl ControlPlane {
    fn start(
        bin: &Path,
        work: &Path,
        tokens: &Path,
        config: &Path,
        plan: &Plan,
    ) -> anyhow::Result<ControlPlane> {
        let (proc, addresses) = procs::start_control_plane(
            Command::new(bin)
                .env_clear()
                .env("WEFT_LOG", "warn")
                .arg("--issuer")
                .arg(work.join("issuer"))
                .arg("--tokens")
                .arg(tokens)
                .arg("--source")
                .arg(format!("local:{}", config.display()))
                .arg("--config-poll-interval")
                .arg(format!("{}ms", plan.poll.as_millis())),
            work,
            Duration::from_secs(60),
        )?;
        Ok(ControlPlane {
            proc,
            grpc: addresses.grpc,
            admin: addresses.admin,
        })
    }

    fn memory(&self) -> anyhow::Result<Memory> {
        crate::procs::memory_of(self.proc.pid())
    }

    fn cpu(&self) -> anyhow::Result<Duration> {
        self.proc.cpu()
    }

    async fn metric(&self, series: &str) -> anyhow::Result<f64> {
        metrics::scrape(self.admin)
            .await?
            .series(series)
            .with_context(|| format!("no {series} on /metrics"))
    }

    async fn push_latency(&self) -> anyhow::Result<Histogram> {
        metrics::scrape(self.admin)
            .await?
            .histogram(metrics::PUSH_LATENCY, &[])
            .with_context(|| format!("no histogram {} on /metrics", metrics::PUSH_LATENCY))
    }

    fn check_running(&mut self) -> anyhow::Result<()> {
        self.proc.check_running()
    }
}

/// One subscriber count against one control plane.
struct Bench<'a> {
    plan: &'a Plan,
    cp: ControlPlane,
    cluster: &'a mut Cluster,
    config: &'a Path,
    subscribers: usize,
    /// What the proxies report; the sender goes to the fleet.
    events: mpsc::UnboundedReceiver<Event>,
}

/// Which change a series makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    OneService,
    EveryService,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Change::OneService => "one-Service change",
            Change::EveryService => "every-Service change",
        })
    }
}

impl Bench<'_> {
    async fn level(
        &mut self,
        anchors: &str,
        tx: mpsc::UnboundedSender<Event>,
    ) -> anyhow::Result<Level> {
        let n = self.subscribers;
        let mut level = Level {
            subscribers: n,
            proxies: self.plan.proxies(n),
            baseline: self.cp.memory()?,
            baseline_peak_kib: self.cp.proc.status_kib("VmHWM")?,
            ..Level::default()
        };
        let dialer = Dialer::new(self.cp.grpc, anchors)?;

        let (cp_cpu, client_cpu) = (self.cp.cpu()?, own_cpu()?);
        let start = Instant::now();
        let fleet = Fleet::start(&dialer, self.plan.fleet(n), self.plan.dial_concurrency, tx);
        let (connected, first) = self.first_updates(start, level.proxies).await?;
        level.connected = connected;
        level.first_updates = first;
        level.cp_cpu_establish = self.cp.cpu()? - cp_cpu;
        level.client_cpu_establish = own_cpu()? - client_cpu;
        let told = self.cp.metric("weft_discovery_subscribers").await?;
        anyhow::ensure!(
            told == n as f64,
            "the control plane counts {told} subscribers; the client opened {n}"
        );
        level.established = self.cp.memory()?;
        eprintln!(
            "weft-bench discovery:   all {n} first updates after {:?}; control plane RSS {} KiB",
            first, level.established.rss_kib
        );

        level.one = self.series(Change::OneService).await?;
        level.all = self.series(Change::EveryService).await?;
        level.end = self.cp.memory()?;
        level.peak_kib = self.cp.proc.status_kib("VmHWM")?;
        self.cp.check_running()?;
        drop(fleet);
        Ok(level)
    }

    /// Waits until all `proxies` are connected and every subscriber has its first update,
    /// checking each is the whole, meshed endpoint set of its Service.
    async fn first_updates(
        &mut self,
        start: Instant,
        proxies: usize,
    ) -> anyhow::Result<(Duration, Duration)> {
        let n = self.subscribers;
        let deadline = start + self.plan.establish_patience;
        let mut connected = HashSet::new();
        let mut last_connected = start;
        let mut got = vec![false; n];
        let (mut have, mut last) = (0, start);
        while have < n || connected.len() < proxies {
            let event = match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => event,
                Ok(None) => bail!("every proxy task ended"),
                Err(_) => bail!(
                    "after {:?}, {} of {proxies} proxies connected and {have} of {n} streams \
                     had their first update; the first without: {}",
                    self.plan.establish_patience,
                    connected.len(),
                    self.describe(got.iter().position(|g| !g).unwrap_or(0)),
                ),
            };
            match event {
                Event::Connected { proxy, at } => {
                    connected.insert(proxy);
                    last_connected = last_connected.max(at);
                }
                Event::Update { sub, at, got: what } => {
                    anyhow::ensure!(
                        !got[sub],
                        "{} had a second update before any change: {what:?}",
                        self.describe(sub)
                    );
                    let service = self.plan.service_of(sub);
                    let want = Got::Snapshot {
                        endpoints: self.cluster.ready(service),
                        identity: Some(cluster::identity(service)),
                    };
                    anyhow::ensure!(
                        what == want,
                        "{}: the first update was {what:?}, expected {want:?}",
                        self.describe(sub)
                    );
                    got[sub] = true;
                    have += 1;
                    last = last.max(at);
                }
                Event::Failed { sub, error } => bail!("{}: {error}", self.describe(sub)),
            }
        }
        Ok((last_connected - start, last - start))
    }

    /// Repeats `change`, each time timing every told subscriber's delta from the rename.
    async fn series(&mut self, change: Change) -> anyhow::Result<Series> {
        let reps = match change {
            Change::OneService => self.plan.one_reps,
            Change::EveryService => self.plan.all_reps,
        };
        let before = self.cp.push_latency().await?;
        let (cp_cpu, client_cpu) = (self.cp.cpu()?, own_cpu()?);
        let mut series = Series {
            reps,
            ..Series::default()
        };
        for rep in 0..reps {
            let latencies = self
                .change(change, rep)
                .await
                .with_context(|| format!("{change} {} of {reps}", rep + 1))?;
            series.told = latencies.len();
            series
                .lasts
                .push(latencies.iter().copied().max().unwrap_or_default());
            series.latencies.extend(latencies);
        }
        series.cp_cpu = self.cp.cpu()? - cp_cpu;
        series.client_cpu = own_cpu()? - client_cpu;
        self.settle(reps).await?;
        series.server = self.cp.push_latency().await?.since(&before);
        anyhow::ensure!(
            series.server.count == series.latencies.len() as f64,
            "{change}s: the control plane counted {} pushes, the subscribers received {}",
            series.server.count,
            series.latencies.len()
        );
        self.cp.check_running()?;
        Ok(series)
    }

    /// One change: the folder rewritten atomically, then every subscriber of a changed
    /// Service must get exactly one delta of one endpoint, and no one else anything.
    async fn change(&mut self, change: Change, rep: usize) -> anyhow::Result<Vec<Duration>> {
        self.settle(rep).await?;
        let n = self.subscribers;
        let services = self.plan.services;
        let told: Vec<usize> = match change {
            Change::OneService => {
                // Spread over the watched Services (every one when there are more
                // subscribers than Services).
                let s = (rep * 97) % services.min(n);
                self.cluster.flip(s);
                (s..n).step_by(services).collect()
            }
            Change::EveryService => {
                self.cluster.flip_all();
                (0..n).collect()
            }
        };
        self.cluster.publish(self.config)?;
        let renamed = Instant::now();
        let deadline = renamed + self.plan.change_patience;
        let mut pending: HashSet<usize> = told.iter().copied().collect();
        let mut latencies = Vec::with_capacity(told.len());
        while !pending.is_empty() {
            let event = match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => event,
                Ok(None) => bail!("every proxy task ended"),
                Err(_) => bail!(
                    "{} of {} subscribers of the changed Services had no update {:?} after \
                     the rename (did the control plane refuse the folder? its log is above); \
                     e.g. {}",
                    pending.len(),
                    told.len(),
                    self.plan.change_patience,
                    self.describe(pending.iter().copied().min().unwrap_or(0)),
                ),
            };
            match event {
                Event::Update { sub, at, got } => {
                    anyhow::ensure!(
                        pending.remove(&sub),
                        "{} got {got:?}, but its Service did not change or it was told already",
                        self.describe(sub)
                    );
                    let service = self.plan.service_of(sub);
                    let now_ready = self.cluster.ready(service) == self.plan.endpoints;
                    let want = Got::Delta {
                        upserts: usize::from(now_ready),
                        removed: usize::from(!now_ready),
                    };
                    anyhow::ensure!(
                        got == want,
                        "{}: got {got:?}, expected {want:?}",
                        self.describe(sub)
                    );
                    latencies.push(at.saturating_duration_since(renamed));
                }
                Event::Failed { sub, error } => bail!("{}: {error}", self.describe(sub)),
                Event::Connected { proxy, .. } => bail!("proxy {proxy} connected again"),
            }
        }
        Ok(latencies)
    }

    /// Waits two poll intervals and a spread part of a third (so renames fall at different
    /// points of the control plane's poll cycle), then checks nothing arrived unasked.
    async fn settle(&mut self, rep: usize) -> anyhow::Result<()> {
        let poll = self.plan.poll.as_millis() as u64;
        let spread = (rep as u64 * 37) % poll.max(1);
        tokio::time::sleep(Duration::from_millis(2 * poll + spread)).await;
        match self.events.try_recv() {
            Err(_) => Ok(()),
            Ok(Event::Update { sub, got, .. }) => {
                bail!("{} got {got:?} with no change made", self.describe(sub))
            }
            Ok(Event::Failed { sub, error }) => bail!("{}: {error}", self.describe(sub)),
            Ok(Event::Connected { proxy, .. }) => bail!("proxy {proxy} connected again"),
        }
    }

    fn describe(&self, sub: usize) -> String {
        format!(
            "subscriber {sub} (proxy {}, watching {})",
            sub / self.plan.per_proxy,
            Cluster::target(self.plan.service_of(sub))
        )
    }
}

/// The 1-minute load average: how busy the shared machine was.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn own_cpu() -> anyhow::Result<Duration> {
    procs::cpu_of(std::process::id()).context("this process's CPU time")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(subscribers: usize, services: usize, per_proxy: usize) -> Plan {
        Plan::new(false, Some(vec![subscribers]), Some(services), 3, per_proxy).expect("plan")
    }

    #[test]
    fn subscribers_fill_proxies_and_deal_services_round_robin() {
        let p = plan(25, 20, 10);
        let fleet = p.fleet(25);
        assert_eq!(fleet.len(), 3);
        assert_eq!(fleet[0].watches[0], (0, "198.19.0.1:80".to_string()));
        assert_eq!(fleet[1].watches.len(), 10);
        assert_eq!(fleet[2].watches.len(), 5);
        // Subscriber 20 wraps round to Service 0.
        assert_eq!(fleet[2].watches[0], (20, "198.19.0.1:80".to_string()));
        for proxy in &fleet {
            let targets: HashSet<&String> = proxy.watches.iter().map(|w| &w.1).collect();
            assert_eq!(targets.len(), proxy.watches.len(), "distinct per proxy");
        }
    }

    #[test]
    fn plans_past_the_servers_caps_are_refused() {
        assert!(Plan::new(false, Some(vec![20_000]), None, 3, 1).is_err());
        assert!(Plan::new(false, Some(vec![100]), Some(5), 3, 10).is_err());
        assert!(Plan::new(false, Some(vec![100]), None, 3, 5000).is_err());
        assert!(Plan::new(false, Some(vec![0]), None, 3, 10).is_err());
        let smoke = Plan::new(true, None, None, 3, 10).expect("smoke");
        assert_eq!(
            (smoke.subscribers.as_slice(), smoke.services),
            (&[20][..], 50)
        );
    }
}
