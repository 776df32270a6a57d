//! `weft-bench`: Weft against a direct connection and against HAProxy, on loopback.
//!
//! `weft-bench run` starts the upstream (`weft-bench server`), a chain per set-up, and drives the
//! same load through each, interleaved (A B C D A B C D ...) so drift hits every set-up alike.
//! It prints one report and, unless `--smoke`, writes it into `BENCHMARKS.md` and
//! `bench/runs/`. `weft-bench discovery` plays many proxies against one control plane
//! ([`discovery`]). See `bench/README.md`.

// A binary: `pub` marks what the modules share with each other, nothing more.
#![allow(unreachable_pub)]

mod conns;
mod discovery;
mod load;
mod procs;
mod report;
mod server;
mod setups;
mod tcp;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use load::{Pace, Protocol};
use procs::Proc;
use setups::{Certs, Chain, Cluster, Mode, SETUPS, TCP_SETUPS};

#[derive(Parser, Debug)]
#[command(about = "Weft's benchmark harness")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// The upstream: HTTP/1.1 + h2c with a fixed body, gRPC echo, TCP echo.
    Server {
        #[arg(long, default_value = "127.0.0.1:0")]
        http: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:0")]
        tcp: SocketAddr,
        /// Response body size in bytes.
        #[arg(long, default_value_t = 1024)]
        body_size: usize,
    },
    /// Run the benchmark.
    Run {
        /// A quick pass (well under a minute) that proves the harness works; writes nothing.
        #[arg(long)]
        smoke: bool,
        /// Repetitions of each run per set-up (the report gives median, min and max).
        #[arg(long)]
        reps: Option<usize>,
        /// Response body size in bytes.
        #[arg(long, default_value_t = 1024)]
        body_size: usize,
        /// Only these set-ups (comma-separated; `direct` is always run, the others pair with
        /// it). A run of some set-ups leaves `BENCHMARKS.md` as it is and saves its report as
        /// `bench/runs/<date>-<commit>-partial.md`.
        #[arg(long, value_delimiter = ',')]
        setups: Option<Vec<String>>,
        /// Only this traffic (comma-separated: http1, http2, grpc, tcp). Like `--setups`, a run
        /// of some traffic is partial: it leaves `BENCHMARKS.md` as it is.
        #[arg(long, value_delimiter = ',')]
        traffic: Option<Vec<String>>,
        /// The report file to update (between its bench markers).
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
    },
    /// Many simulated proxies watching destinations on one control plane: time until all have
    /// their first update, push latency of a change, the control plane's memory.
    Discovery {
        /// Subscriber (Watch stream) counts, comma-separated; a fresh control plane each.
        /// Default 100,1000,10000 (smoke: 20).
        #[arg(long, value_delimiter = ',')]
        subscribers: Option<Vec<usize>>,
        /// Services in the cluster. Default 1000 (smoke: 50).
        #[arg(long)]
        services: Option<usize>,
        /// Ready, meshed endpoints per Service.
        #[arg(long, default_value_t = 3)]
        endpoints: usize,
        /// Destinations each simulated proxy watches, all on its one HTTP/2 connection.
        #[arg(long, default_value_t = 10)]
        watches_per_proxy: usize,
        /// Tiny sizes (under 20 s) to prove the harness works; writes nothing.
        #[arg(long)]
        smoke: bool,
        /// The report file to update (between its discovery markers).
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
    },
    /// What an idle proxied connection costs one proxy, and how many one proxy holds within
    /// its descriptor limit.
    Conns {
        /// Idle connections held at once through one proxy. Default 8000 (smoke: 200).
        #[arg(long)]
        count: Option<usize>,
        /// The descriptor limit of the proxy that is filled up.
        #[arg(long, default_value_t = 1024)]
        fd_limit: u64,
        /// New mesh connections (full mTLS handshakes) made. Default 2000 (smoke: 100).
        #[arg(long)]
        handshakes: Option<usize>,
        /// A small pass that proves the harness works; writes nothing.
        #[arg(long)]
        smoke: bool,
        /// The report file to update (between its conns markers).
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
    },
}

/// What one run of the harness measures.
#[derive(Clone, Debug)]
pub struct Plan {
    pub smoke: bool,
    pub reps: usize,
    pub warmup: Duration,
    pub rate_duration: Duration,
    pub max_duration: Duration,
    pub scenarios: Vec<(Protocol, Pace, u32)>,
    pub pingpongs: usize,
    pub bulk_bytes: u64,
    pub body_size: usize,
    /// The set-ups run, in [`SETUPS`] order.
    pub setups: Vec<&'static str>,
    /// Whether the opaque TCP runs are in the plan.
    pub tcp: bool,
    /// Whether some set-ups or traffic were left out on request (`--setups`, `--traffic`).
    pub partial: bool,
}

impl Plan {
    fn new(
        smoke: bool,
        reps: Option<usize>,
        body_size: usize,
        only: Option<&[String]>,
    ) -> anyhow::Result<Plan> {
        use Pace::*;
        use Protocol::*;
        if let Some(unknown) = only
            .into_iter()
            .flatten()
            .find(|s| !SETUPS.contains(&s.as_str()))
        {
            bail!(
                "no set-up {unknown:?}; the set-ups are {}",
                SETUPS.join(", ")
            );
        }
        let setups: Vec<&'static str> = SETUPS
            .into_iter()
            .filter(|s| match only {
                Some(only) => *s == "direct" || only.iter().any(|o| o == s),
                // The smoke run proves the route path (`weft-route`) and the policy path
                // (`weft-policy`); `weft-service` differs from them only by the route, and would
                // add seconds to every CI run.
                None => !(smoke && *s == "weft-service"),
            })
            .collect();
        let partial = only.is_some() && setups.len() < SETUPS.len();
        if smoke {
            return Ok(Plan {
                smoke,
                reps: reps.unwrap_or(1),
                warmup: Duration::from_millis(200),
                rate_duration: Duration::from_millis(1000),
                max_duration: Duration::from_millis(1000),
                scenarios: vec![
                    (Http1, Rate(200), 4),
                    (Http2, Rate(200), 4),
                    (Grpc, Rate(200), 4),
                    (Http1, Max, 4),
                ],
                pingpongs: 200,
                bulk_bytes: 8 << 20,
                body_size,
                setups,
                tcp: true,
                partial,
            });
        }
        Ok(Plan {
            smoke,
            reps: reps.unwrap_or(3),
            // About 9 minutes in all, so a fresh machine (which first builds oha) stays well
            // under 20.
            warmup: Duration::from_secs(1),
            rate_duration: Duration::from_secs(4),
            max_duration: Duration::from_secs(3),
            scenarios: vec![
                (Http1, Rate(1000), 4),
                (Http1, Rate(1000), 16),
                (Http1, Rate(5000), 16),
                (Http1, Max, 16),
                (Http2, Rate(1000), 4),
                (Http2, Rate(1000), 16),
                (Http2, Rate(5000), 16),
                (Http2, Max, 16),
                (Grpc, Rate(1000), 4),
                (Grpc, Rate(1000), 16),
                (Grpc, Max, 16),
            ],
            pingpongs: 5000,
            bulk_bytes: 512 << 20,
            body_size,
            setups,
            tcp: true,
            partial,
        })
    }

    /// Keeps only the scenarios of `traffic` (`http1`, `http2`, `grpc`, `tcp`).
    fn only_traffic(&mut self, traffic: &[String]) -> anyhow::Result<()> {
        const KINDS: [(&str, Option<Protocol>); 4] = [
            ("http1", Some(Protocol::Http1)),
            ("http2", Some(Protocol::Http2)),
            ("grpc", Some(Protocol::Grpc)),
            ("tcp", None),
        ];
        let mut wanted = Vec::new();
        for t in traffic {
            let Some(&(_, kind)) = KINDS.iter().find(|(name, _)| name == t) else {
                bail!(
                    "no traffic {t:?}; the kinds are {}",
                    KINDS.map(|(name, _)| name).join(", ")
                );
            };
            wanted.push(kind);
        }
        self.scenarios
            .retain(|(protocol, _, _)| wanted.contains(&Some(*protocol)));
        self.tcp = wanted.contains(&None);
        self.partial |= KINDS.iter().any(|(_, kind)| !wanted.contains(kind));
        Ok(())
    }
}

/// One measured HTTP run.
#[derive(Clone, Debug)]
pub struct HttpSample {
    pub outcome: load::Outcome,
    /// CPU time the set-up's proxies used during the run, user and kernel apart (none for
    /// `direct`).
    pub cpu: Option<procs::CpuTimes>,
    pub duration: Duration,
}

/// One measured opaque TCP round.
#[derive(Clone, Debug)]
pub struct TcpSample {
    pub rtt_p50_us: f64,
    pub rtt_p99_us: f64,
    pub bulk_mib_s: f64,
    /// CPU the set-up's proxies used per GiB of the bulk echo (each way), in seconds: what a
    /// byte costs them, apart from how the shared cores happened to be divided (none for
    /// `direct`).
    pub bulk_cpu_s_per_gib: Option<f64>,
}

/// Memory of one set-up's proxies: the largest process's idle RSS and peak RSS, KiB.
#[derive(Clone, Debug, Default)]
pub struct Memory {
    pub idle_kib: u64,
    /// Private (anonymous) memory at idle: heap and stacks, without the binary's and libraries'
    /// code pages, which are shared and reclaimable.
    pub idle_anon_kib: u64,
    pub peak_kib: u64,
}

/// Everything a run found.
#[derive(Debug, Default)]
pub struct Results {
    pub http: BTreeMap<(Protocol, Pace, u32, &'static str), Vec<HttpSample>>,
    pub tcp: BTreeMap<&'static str, Vec<TcpSample>>,
    /// Keyed by set-up and the traffic its chain carried.
    pub memory: BTreeMap<(&'static str, &'static str), Memory>,
}

/// Exit status for bad usage (`EX_USAGE` of sysexits.h), as every Weft binary.
const EXIT_USAGE: u8 = 64;

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let usage = e.use_stderr();
            // `--help` and `--version` print to stdout and succeed; anything else is bad usage.
            let _ = e.print();
            return if usage {
                std::process::ExitCode::from(EXIT_USAGE)
            } else {
                std::process::ExitCode::SUCCESS
            };
        }
    };
    match run_command(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_command(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Server {
            http,
            tcp,
            body_size,
        } => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?
            .block_on(server::run(http, tcp, body_size)),
        Cmd::Run {
            smoke,
            reps,
            body_size,
            setups,
            traffic,
            out,
        } => {
            let mut plan = Plan::new(smoke, reps, body_size, setups.as_deref())?;
            if let Some(traffic) = traffic {
                plan.only_traffic(&traffic)?;
            }
            let started = Instant::now();
            let machine = report::Machine::read(&find_oha()?);
            let results = run(&plan)?;
            let text = report::render(&plan, &machine, &results, started.elapsed());
            println!("{text}");
            if plan.partial && !plan.smoke {
                let file = report::write_partial(&machine, &text)?;
                eprintln!("weft-bench: wrote {}", file.display());
            } else if !plan.smoke {
                report::write(&out, &machine, &text)?;
                eprintln!("weft-bench: wrote {} and bench/runs/", out.display());
            }
            Ok(())
        }
        Cmd::Discovery {
            subscribers,
            services,
            endpoints,
            watches_per_proxy,
            smoke,
            out,
        } => {
            let plan =
                discovery::Plan::new(smoke, subscribers, services, endpoints, watches_per_proxy)?;
            discovery::main(plan, &out)
        }
        Cmd::Conns {
            count,
            fd_limit,
            handshakes,
            smoke,
            out,
        } => {
            let handshakes = handshakes.unwrap_or(if smoke { 100 } else { 2000 });
            anyhow::ensure!(handshakes > 0, "--handshakes: expected at least 1");
            let count = count.unwrap_or(if smoke { 200 } else { 8000 });
            anyhow::ensure!(count > 0, "--count: expected at least 1");
            anyhow::ensure!(
                (64..=1 << 20).contains(&fd_limit),
                "--fd-limit {fd_limit}: expected 64 to 1048576"
            );
            conns::main(
                conns::Plan {
                    smoke,
                    count,
                    fd_limit,
                    handshakes,
                },
                &out,
            )
        }
    }
}

/// The upstream (`weft-bench server`) on loopback ports, its TCP echo on `tcp_ip`: the process,
/// its HTTP and its TCP echo addresses.
pub fn start_upstream(
    exe: &Path,
    body_size: usize,
    tcp_ip: &str,
) -> anyhow::Result<(Proc, SocketAddr, SocketAddr)> {
    let (server, lines) = Proc::spawn_reading(
        "upstream",
        Command::new(exe)
            .args(["server", "--body-size", &body_size.to_string()])
            // Port 0: the server prints the addresses it got.
            .args(["--http", "127.0.0.1:0", "--tcp", &format!("{tcp_ip}:0")]),
        2,
    )?;
    let addr = |prefix: &str| -> anyhow::Result<SocketAddr> {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
            .context("upstream address")?
            .trim()
            .parse()
            .context("upstream address")
    };
    Ok((server, addr("http ")?, addr("tcp ")?))
}

fn run(plan: &Plan) -> anyhow::Result<Results> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("binary folder")?;
    let weft_bin = dir.join("weft-proxy");
    anyhow::ensure!(
        weft_bin.exists(),
        "{} not built; run `make bench`",
        weft_bin.display()
    );
    let oha = find_oha()?;
    let work = std::env::temp_dir().join(format!("weft-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let _cleanup = RemoveOnDrop(work.clone());
    let certs = Certs::create(&work)?;
    anyhow::ensure!(
        dir.join("weft-control-plane").exists(),
        "weft-control-plane not built; run `make bench`"
    );
    // A gRPC frame: uncompressed flag, big-endian length, a 64-byte message.
    let grpc_message = work.join("grpc-message.bin");
    let mut frame = vec![0u8, 0, 0, 0, 64];
    frame.extend([b'm'; 64]);
    std::fs::write(&grpc_message, frame)?;

    let (_server, http_up, tcp_up) = start_upstream(&exe, plan.body_size, "127.0.0.1")?;
    // The discovery set-ups' Services name the upstream: the control plane starts after it.
    let cluster = Cluster::new(http_up)?;
    let mesh = setups::MeshPki::start(dir, &work, &cluster)?;
    let runs = |setup: &str| plan.setups.contains(&setup);

    let mut results = Results::default();
    let mut chains: BTreeMap<(&'static str, Mode), Chain> = BTreeMap::new();
    for mode in [Mode::Http1, Mode::Http2, Mode::Tcp] {
        let upstream = if mode == Mode::Tcp { tcp_up } else { http_up };
        chains.insert(("direct", mode), Chain::direct(upstream));
        // One Weft chain carries HTTP/1 and HTTP/2 alike: the proxy detects the protocol.
        if mode != Mode::Http2 && runs("weft") {
            chains.insert(("weft", mode), Chain::weft(&weft_bin, &mesh, upstream)?);
        }
        if mode == Mode::Http1 {
            for (setup, service) in [
                ("weft-service", &cluster.plain),
                ("weft-route", &cluster.routed),
                ("weft-policy", &cluster.guarded),
            ] {
                if runs(setup) {
                    let chain = Chain::weft_discovered(&weft_bin, &mesh, upstream, service)
                        .with_context(|| format!("starting {setup}"))?;
                    chains.insert((setup, mode), chain);
                }
            }
        }
        for (setup, tls) in [("haproxy-mtls", true), ("haproxy-plain", false)] {
            if runs(setup) {
                chains.insert(
                    (setup, mode),
                    Chain::haproxy(&certs, &work, mode, tls, upstream)?,
                );
            }
        }
    }
    for ((setup, mode), chain) in &chains {
        let memory = results.memory.entry((setup, mode_name(*mode))).or_default();
        if let Some(kib) = chain.max_status_kib("VmRSS")? {
            memory.idle_kib = kib;
        }
        if let Some(kib) = chain.max_status_kib("RssAnon")? {
            memory.idle_anon_kib = kib;
        }
    }
    let chain_for = |setup: &'static str, protocol: Protocol| {
        let mode = match (setup, protocol) {
            (_, Protocol::Http1) | ("weft" | "weft-service" | "weft-route" | "weft-policy", _) => {
                Mode::Http1
            }
            _ => Mode::Http2,
        };
        (setup, mode)
    };

    for &(protocol, pace, conns) in &plan.scenarios {
        let duration = if pace == Pace::Max {
            plan.max_duration
        } else {
            plan.rate_duration
        };
        eprintln!("weft-bench: {} {:?} x{conns}", protocol.name(), pace);
        for &setup in &plan.setups {
            let chain = &chains[&chain_for(setup, protocol)];
            load::run(
                &oha,
                &grpc_message,
                chain.entry,
                protocol,
                pace,
                conns,
                plan.warmup,
            )
            .with_context(|| format!("warm-up of {setup}"))?;
        }
        for _ in 0..plan.reps {
            for &setup in &plan.setups {
                let key = chain_for(setup, protocol);
                let chain = chains.get_mut(&(key.0, key.1)).context("chain")?;
                let before = chain.cpu_times()?;
                let outcome = load::run(
                    &oha,
                    &grpc_message,
                    chain.entry,
                    protocol,
                    pace,
                    conns,
                    duration,
                )
                .with_context(|| format!("{setup}: {} {pace:?} x{conns}", protocol.name()))?;
                let cpu = (!chain.procs.is_empty())
                    .then(|| chain.cpu_times().map(|after| after - before))
                    .transpose()?;
                chain.check_running()?;
                results
                    .http
                    .entry((protocol, pace, conns, setup))
                    .or_default()
                    .push(HttpSample {
                        outcome,
                        cpu,
                        duration,
                    });
            }
        }
    }

    eprintln!("weft-bench: opaque TCP");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    for _ in 0..plan.reps * usize::from(plan.tcp) {
        for setup in TCP_SETUPS.into_iter().filter(|s| runs(s)) {
            let chain = &chains[&(setup, Mode::Tcp)];
            let entry = chain.entry;
            let pp = rt
                .block_on(tcp::ping_pong(entry, plan.pingpongs, 64))
                .with_context(|| format!("{setup} ping-pong"))?;
            let before = chain.cpu()?;
            let took = rt
                .block_on(tcp::bulk(entry, plan.bulk_bytes))
                .with_context(|| format!("{setup} bulk"))?;
            let gib = plan.bulk_bytes as f64 / f64::from(1u32 << 30);
            let bulk_cpu_s_per_gib = (!chain.procs.is_empty())
                .then(|| {
                    chain
                        .cpu()
                        .map(|after| (after - before).as_secs_f64() / gib)
                })
                .transpose()?;
            results.tcp.entry(setup).or_default().push(TcpSample {
                rtt_p50_us: pp.quantile(0.5).as_secs_f64() * 1e6,
                rtt_p99_us: pp.quantile(0.99).as_secs_f64() * 1e6,
                bulk_mib_s: plan.bulk_bytes as f64 / (1 << 20) as f64 / took.as_secs_f64(),
                bulk_cpu_s_per_gib,
            });
        }
    }
    for ((setup, mode), chain) in &chains {
        if let Some(kib) = chain.max_status_kib("VmHWM")? {
            results
                .memory
                .entry((setup, mode_name(*mode)))
                .or_default()
                .peak_kib = kib;
        }
    }
    Ok(results)
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Http1 => "http",
        Mode::Http2 => "h2",
        Mode::Tcp => "tcp",
    }
}

/// oha from PATH or cargo's bin folder.
fn find_oha() -> anyhow::Result<PathBuf> {
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .map(|c| c.join("bin/oha"));
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("oha"));
    for candidate in on_path.chain(cargo_bin) {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("oha not found; `make bench` installs it (cargo install --locked oha)")
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
