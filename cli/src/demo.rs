//! `weftctl demo`: a live mesh on this machine, as a `weftctl lab` run of a folder the project
//! ships (`examples/demo/mesh.yaml`, built in) or of any folder given: pods are network
//! namespaces on the reference CNI bridge inside one dedicated "node" namespace, with
//! `weft-cni` chained after `bridge`, the control plane in local mode on the folder, a
//! `weft-proxy` as UID 2121 in each meshed pod and the echo app on each container port (see
//! `weft_lab::run`). Each pod whose `demo.weft.dev/calls` annotation names Services sends them
//! a steady trickle of requests; in the built-in folder `web` calls `api` (pods `api-v1` and
//! `api-v2`) and both API pods call `backend`. A table of requests, success rate, latency and
//! mTLS share per workload, read from each proxy's `/metrics`, refreshes in the terminal until
//! Ctrl-C; edits to the folder apply live (the demo runs a copy of the built-in one and says
//! where). While it runs it is the lab named `demo`: `weftctl lab exec --lab demo web -- curl
//! -s http://api/`. Ctrl-C removes every pod, namespace, veth, bridge, rule and file.
//!
//! Beside the table, a real Prometheus (Debian's) scrapes every proxy and the control plane
//! with Weft's rules, and a real Jaeger (when `make jaeger-tools` has built it) takes every
//! proxy's spans, both in the node namespace and forwarded to this machine's loopback
//! (`127.0.0.1:9090` and `127.0.0.1:16686`, another port when one is taken; see
//! `weft_lab::observe`); the intro says where, and where the Grafana dashboards are.
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
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use weft_lab::{
    folder::{Folder, Key},
    netns::Netns,
    observe::{self, Observability},
    registry::{PodEntry, Registry},
    run::{Event, LabRun},
    Metrics,
};

use crate::stat::window::{Counters, Direction};

/// The folder `weftctl demo` runs unless given another.
const DEMO_FOLDER: &str = include_str!("../../examples/demo/mesh.yaml");
/// The pod annotation naming the Services a pod calls: `api`, `backend.other:8080`, ...
const CALLS: &str = "demo.weft.dev/calls";
/// The demo's lab name, for `weftctl lab exec --lab demo`.
const LAB: &str = "demo";
/// The proxy's admin port inside a meshed pod.
const ADMIN_PORT: u16 = 15190;
/// How often the table refreshes (and the folder is checked for edits).
const REFRESH: Duration = Duration::from_secs(2);

#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// A folder of Kubernetes YAML to run instead of the built-in one (a `weftctl lab` folder;
    /// pods call the Services their `demo.weft.dev/calls` annotation names).
    dir: Option<PathBuf>,
    /// Run for `--seconds`, print the table once, check that every call was answered, and that
    /// every meshed pod behind a called Service served its share over mTLS, and exit (non-zero
    /// if not). CI runs this.
    #[arg(long)]
    once: bool,
    /// With `--once`: how long the traffic runs.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(2..=600))]
    seconds: u64,
    /// Requests per second on each call (each pod to each Service it names).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=200))]
    rps: u32,
}

/// One pod calling one Service: what its `demo.weft.dev/calls` names, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Call {
    from: Key,
    /// The Service, `namespace/name`.
    service: Key,
    /// Its cluster IP and port.
    dst: SocketAddr,
    /// `name.namespace.svc.cluster.local`, the `Host` sent.
    host: String,
}

/// What one call has sent, as the client saw it.
#[derive(Debug, Default)]
struct ClientCounts {
    ok: AtomicU64,
    failed: AtomicU64,
}

/// The clients of one plan of calls; replaced whole when an edit changes the plan.
struct Traffic {
    calls: Vec<(Call, Arc<ClientCounts>)>,
    stop: Arc<AtomicBool>,
    handles: Vec<thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(calls: Vec<Call>, entry_pods: &[PodEntry], interval: Duration) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        let mut counted = Vec::new();
        for call in calls {
            let counts = Arc::new(ClientCounts::default());
            let netns = entry_pods
                .iter()
                .find(|p| p.namespace == call.from.0 && p.name == call.from.1)
                .map(|p| p.netns.clone());
            if let Some(netns) = netns {
                handles.push(spawn_client(
                    netns,
                    call.clone(),
                    interval,
                    stop.clone(),
                    counts.clone(),
                ));
            }
            counted.push((call, counts));
        }
        Traffic {
            calls: counted,
            stop,
            handles,
        }
    }

    /// Stops the clients and waits for them (each notices within one request's timeout).
    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for handle in self.handles.drain(..) {
            // One that panicked has nothing more to count: its counts stand as they are.
            let _ = handle.join();
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One workload's figures over the last refresh window.
#[derive(Debug, Default, Clone, PartialEq)]
struct Row {
    inbound_rps: f64,
    outbound_rps: f64,
    success: Option<f64>,
    /// Of the requests it sent (as its caller sees them: an injected abort fails here only).
    outbound_success: Option<f64>,
    p50: Option<f64>,
    p99: Option<f64>,
    mtls_share: Option<f64>,
}

/// One route rule's backend over the last window, from every caller's proxy.
#[derive(Debug, Clone, PartialEq)]
struct RouteRow {
    rule: String,
    backend: String,
    rps: f64,
    /// Of the rule's requests in the window; `None` when the rule had none.
    share: Option<f64>,
}

pub(crate) fn run(args: DemoArgs) -> anyhow::Result<()> {
    if let Some(why) = weft_lab::prereq::missing() {
        bail!(
            "the live mesh of network namespaces cannot run here: {why}.\n\
             As root, install what is missing: apt-get install iptables iproute2 util-linux tcpdump containernetworking-plugins\n\
             (`make deps` does it). Without root, `make demo` runs the loopback demo instead: scripts/try-proxy.sh"
        );
    }
    let registry = Registry::system();
    crate::lab::sweep(&registry);
    if let Ok(running) = registry.find(Some(LAB)) {
        bail!(
            "a demo already runs (process {}); stop it with `weftctl lab down --lab {LAB}`",
            running.pid
        );
    }
    // The built-in folder runs from a copy the user may edit; removed at the end.
    let copy;
    let dir: &Path = match &args.dir {
        Some(dir) => dir,
        None => {
            copy = tempfile::Builder::new()
                .prefix("weft-demo-")
                .tempdir()
                .context("make a folder for the demo's YAML")?;
            std::fs::write(copy.path().join("mesh.yaml"), DEMO_FOLDER)
                .context("write the demo's YAML")?;
            copy.path()
        }
    };
    // Ctrl-C must end in the lab's cleanup, with `--once` too: the default action would kill
    // the process and leave the namespaces behind.
    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(stop.clone())?;
    say!("weftctl demo: starting the mesh of {} ...", dir.display());
    // Every proxy traces to the Jaeger started below, when it is built.
    let tracing = observe::tracing_env();
    let mut run = LabRun::start_with(
        registry,
        LAB,
        dir,
        &stop,
        &mut crate::lab::print_event,
        tracing.clone().unwrap_or_default(),
    )
    .with_context(|| format!("start the demo's lab on {}", dir.display()))?;
    let interval = Duration::from_secs(1) / args.rps;
    let calls = plan(run.folder()).map_err(|e| anyhow::anyhow!("{e}"))?;
    // After the pods: Jaeger takes OTLP on the bridge's gateway, there from the first pod on.
    let observe = Observability::start(&run, tracing.is_ok())
        .context("start the demo's Prometheus and Jaeger")?;
    print_intro(&run, &calls, args.rps, args.dir.is_none());
    // The service a trace is found under: the first caller's (spans name their proxy's
    // service account).
    let traced = calls
        .first()
        .and_then(|c| run.folder().pods.get(&c.from))
        .map_or_else(|| "web".to_string(), |p| p.service_account().to_string());
    print_observability(&observe, tracing.as_ref().err(), &traced);
    say!("Ctrl-C stops the demo and removes every namespace, veth, bridge and rule.\n");
    let footer = footer(&observe, &traced);
    let mut traffic = Traffic::start(calls, &run.entry().pods, interval);

    let started = Instant::now();
    let deadline = args
        .once
        .then(|| started + Duration::from_secs(args.seconds));
    let mut last = snapshots(&run.entry().pods);
    let mut last_at = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let until = deadline.map_or(REFRESH, |d| {
            d.saturating_duration_since(Instant::now()).min(REFRESH)
        });
        sleep_unless(&stop, until);
        if !args.once {
            let mut applied = false;
            run.poll(&mut |event| {
                applied |= matches!(event, Event::Applied { .. });
                crate::lab::print_event(event);
            })?;
            if applied {
                if let Err(e) = observe.update(&run) {
                    eprintln!("weftctl demo: Prometheus's targets not updated: {e}");
                }
                match plan(run.folder()) {
                    Ok(calls) => {
                        traffic.stop();
                        traffic = Traffic::start(calls, &run.entry().pods, interval);
                    }
                    Err(e) => eprintln!("weftctl demo: {e}; the traffic goes on as it was"),
                }
            }
        }
        let pods = &run.entry().pods;
        let now = snapshots(pods);
        let window = last_at.elapsed().as_secs_f64();
        let rows: BTreeMap<String, Row> = pods
            .iter()
            .map(|p| {
                let row = row(last.get(&p.name), now.get(&p.name), window);
                (p.name.clone(), row)
            })
            .collect();
        if !args.once && !stop.load(Ordering::Relaxed) {
            let routes = route_rows(&last, &now, window);
            draw(pods, &rows, &routes, started.elapsed(), &footer);
        }
        last = now;
        last_at = Instant::now();
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    // Set by a signal rather than by the deadline.
    let interrupted = stop.swap(true, Ordering::Relaxed);
    traffic.stop();
    if args.once && interrupted {
        say!(
            "\nweftctl demo: interrupted; removing pods, namespaces, the bridge and the rules ..."
        );
        drop(observe);
        drop(run);
        bail!("interrupted before the checks ran");
    }
    if args.once {
        let pods = run.entry().pods.clone();
        let (totals, routes) = totals(&pods);
        draw_totals(&pods, &totals, &routes, started.elapsed());
        let mut failures = check_once(run.folder(), &pods, &totals, &routes, &traffic.calls);
        failures.extend(observe.check(&run));
        say!("weftctl demo: tearing down (pods, namespaces, bridge, rules) ...");
        drop(observe);
        drop(run);
        if !failures.is_empty() {
            bail!("the demo mesh did not work:\n  {}", failures.join("\n  "));
        }
        say!(
            "weftctl demo: ok: every call was answered, and every meshed pod behind a called \
             Service served its share over mutual TLS; Prometheus scraped the mesh and Jaeger \
             holds its traces (where they ran)"
        );
        return Ok(());
    }
    say!("\nweftctl demo: stopping; removing pods, namespaces, the bridge and the rules ...");
    drop(observe);
    drop(run);
    say!("weftctl demo: done, nothing left behind");
    Ok(())
}

/// The calls the folder's pods ask for with [`CALLS`]: each item `name`, `name.namespace`,
/// optionally `:port` (a port of the Service; its first port when none is given).
fn plan(folder: &Folder) -> Result<Vec<Call>, String> {
    let mut calls = Vec::new();
    for pod in folder.pods.values() {
        let Some(value) = pod.annotations().get(CALLS) else {
            continue;
        };
        let at = || {
            format!(
                "pod {}/{} ({} document {}), annotation {CALLS}",
                pod.namespace(),
                pod.name(),
                pod.origin.file.display(),
                pod.origin.document
            )
        };
        for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (name, port) = match item.rsplit_once(':') {
                Some((name, port)) => {
                    let port: u16 = port
                        .parse()
                        .map_err(|_| format!("{}: {item:?}: {port:?} is not a port", at()))?;
                    (name, Some(port))
                }
                None => (item, None),
            };
            let (name, namespace) = name.split_once('.').unwrap_or((name, pod.namespace()));
            let key = (namespace.to_string(), name.to_string());
            let service = folder
                .services
                .get(&key)
                .ok_or_else(|| format!("{}: no Service {namespace}/{name} in the folder", at()))?;
            let ports: Vec<u16> = service
                .ports()
                .iter()
                .filter_map(|p| u16::try_from(p.port).ok())
                .collect();
            let port = match port {
                Some(p) if ports.contains(&p) => p,
                Some(p) => {
                    return Err(format!(
                        "{}: Service {namespace}/{name} has no port {p} (its ports: {ports:?})",
                        at()
                    ))
                }
                None => *ports
                    .first()
                    .ok_or_else(|| format!("{}: Service {namespace}/{name} has no ports", at()))?,
            };
            let dst = service
                .addr(port)
                .ok_or_else(|| format!("{}: Service {namespace}/{name} has no cluster IP", at()))?;
            calls.push(Call {
                from: pod.key(),
                service: key,
                dst,
                host: service.host(),
            });
        }
    }
    Ok(calls)
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

/// A client inside the pod namespace `netns` sending `GET /` on `call` every `interval` until
/// `stop`.
fn spawn_client(
    netns: String,
    call: Call,
    interval: Duration,
    stop: Arc<AtomicBool>,
    counts: Arc<ClientCounts>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let Ok(ns) = Netns::attach(&netns) else {
            counts.failed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            match weft_lab::http::get(&ns, call.dst, &call.host, "/") {
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

/// The live table's last lines: where Prometheus, Jaeger and the dashboards are.
fn footer(observe: &Observability, traced: &str) -> String {
    let mut parts = Vec::new();
    if let Some(url) = observe.prometheus_url() {
        parts.push(format!("Prometheus {url}"));
    }
    if let Some(url) = observe.jaeger_url() {
        parts.push(format!("Jaeger {url}/api/traces?service={traced}"));
    }
    parts.push("dashboards helm/weft/dashboards/".to_string());
    format!("\nSee the mesh: {}\n", parts.join("  |  "))
}

/// Where Prometheus, Jaeger and the dashboards are, and what did not start.
fn print_observability(observe: &Observability, tracing: Option<&String>, traced: &str) {
    say!("See the mesh (from this machine's browser):");
    match observe.prometheus_url() {
        Some(url) => {
            say!(
                "  Prometheus  {url}  (every proxy and the control plane, each second, with Weft's \
                 rules: try workload:weft_requests:rate5m or route_backend:weft_requests:rate5m)"
            );
            say!(
                "              weftctl stat --prometheus {url}   # the golden metrics, in a table"
            );
        }
        None => say!("  Prometheus  not running"),
    }
    match observe.jaeger_url() {
        Some(url) => say!(
            "  Jaeger      {url}/api/traces?service={traced}  (the traces' JSON, {:.0} % of \
             requests sampled; a trace's services are the pods' service accounts)",
            observe::SAMPLING * 100.0
        ),
        None => say!("  Jaeger      not running"),
    }
    say!(
        "  Dashboards  helm/weft/dashboards/*.json: import them into a Grafana 12.4+ whose \
         Prometheus data source is the address above (docs/observability.md)"
    );
    if let Some(why) = tracing {
        say!("  (no tracing: Jaeger is not built: `make jaeger-tools`; {why})");
    }
    for note in observe.notes() {
        say!("  ({note})");
    }
}

fn print_intro(run: &LabRun, calls: &[Call], rps: u32, built_in: bool) {
    let entry = run.entry();
    say!();
    say!("A Weft mesh is running in network namespaces on this machine (lab {LAB}):");
    say!(
        "  node namespace {} (bridge {}, pods from {}, no route out)",
        entry.node,
        weft_lab::BRIDGE,
        weft_lab::POD_SUBNET
    );
    for p in &entry.pods {
        say!(
            "  pod {:<22} {:<14} {}",
            format!("{}/{}", p.namespace, p.name),
            p.ip,
            p.identity.as_deref().unwrap_or("- (not meshed)")
        );
    }
    for s in run.folder().services.values() {
        let ip = s
            .cluster_ip
            .map_or_else(|| "None".to_string(), |ip| ip.to_string());
        let backends: Vec<&str> = run
            .folder()
            .pods
            .values()
            .filter(|p| s.selects(p))
            .map(|p| p.name())
            .collect();
        say!(
            "  Service {:<18} {:<14} -> {}",
            format!("{}/{}", s.namespace(), s.name()),
            ip,
            backends.join(", ")
        );
    }
    for doc in &run.folder().passed {
        let field = |k: &str| doc.object.get(k);
        let kind = field("kind").and_then(|k| k.as_str()).unwrap_or("");
        let meta = |k: &str| {
            field("metadata")
                .and_then(|m| m.get(k))
                .and_then(|v| v.as_str())
                .unwrap_or("default")
                .to_string()
        };
        say!(
            "  {kind} {}/{} ({} document {}: edit it live)",
            meta("namespace"),
            meta("name"),
            doc.origin.file.display(),
            doc.origin.document
        );
    }
    let traffic: Vec<String> = calls
        .iter()
        .map(|c| format!("{} -> {}", c.from.1, c.service.1))
        .collect();
    say!(
        "Traffic: {}, {rps} requests/s each, through the proxies with mTLS where both ends are meshed.",
        traffic.join(", ")
    );
    say!("Where to look (in another terminal, as root):");
    if let Some(first) = calls.first() {
        say!(
            "  weftctl lab exec --lab {LAB} -n {} {} -- curl -s http://{}.{}/",
            first.from.0,
            first.from.1,
            first.service.1,
            first.service.0
        );
    }
    if let Some(p) = entry.pods.iter().find(|p| p.identity.is_some()) {
        say!(
            "  weftctl lab exec --lab {LAB} -n {} {} -- curl -s 127.0.0.1:{ADMIN_PORT}/metrics | grep weft_requests_total",
            p.namespace, p.name
        );
        say!(
            "  ip netns exec {} iptables -t nat -S        # the rules weft-cni installed",
            p.netns
        );
    }
    if let Some(first) = calls.first() {
        say!(
            "  weftctl stat po -n {}                      # success, RPS, latency, mTLS per pod",
            first.from.0
        );
        say!(
            "  weftctl stat-outbound po/{} -n {}     # its routes and backends, timeouts, retries",
            first.from.1,
            first.from.0
        );
        say!(
            "  weftctl tap po/{} -n {}               # its requests, live, with who served them",
            first.from.1,
            first.from.0
        );
        say!(
            "  weftctl top ns/{}                          # the busiest paths",
            first.from.0
        );
    }
    say!(
        "  ip netns exec {} tcpdump -ni {} -A tcp     # only TLS between meshed pods",
        entry.node,
        weft_lab::BRIDGE
    );
    say!(
        "  the control plane's YAML and the logs: {}",
        entry.dir.display()
    );
    if built_in {
        say!(
            "Edit {}/mesh.yaml while it runs (change the HTTPRoute's weights, add a pod, unmesh one): the mesh and the ROUTES table follow.\n\
             Fault switch: in the same file set HTTPFault backend-faults' abort percent to 20: api-v1's and api-v2's OUT OK drops to about 80 %; back to 0, it heals.",
            entry.folder.display()
        );
    }
}

/// Each meshed pod's proxy counters, by pod name.
fn snapshots(pods: &[PodEntry]) -> BTreeMap<String, Counters> {
    pods.iter()
        .filter(|p| p.identity.is_some())
        .filter_map(|p| {
            let ns = Netns::attach(&p.netns).ok()?;
            let admin = SocketAddr::from((Ipv4Addr::LOCALHOST, ADMIN_PORT));
            let reply = weft_lab::http::get(&ns, admin, "localhost", "/metrics").ok()?;
            let metrics = Metrics::parse(&reply.body).ok()?;
            Some((p.name.clone(), Counters::read(&metrics)))
        })
        .collect()
}

/// The figures of the window between two reads of a proxy (`weftctl stat`'s computation).
fn row(before: Option<&Counters>, after: Option<&Counters>, seconds: f64) -> Row {
    let (Some(before), Some(after)) = (before, after) else {
        return Row::default();
    };
    let seconds = seconds.max(0.001);
    let window = after.since(before);
    let inbound = window.figures(|d, _, _| d == Direction::Inbound);
    let outbound = window.figures(|d, _, _| d == Direction::Outbound);
    Row {
        inbound_rps: inbound.requests / seconds,
        outbound_rps: outbound.requests / seconds,
        outbound_success: outbound.success(),
        success: inbound.success(),
        p50: inbound.quantile(0.5),
        p99: inbound.quantile(0.99),
        mtls_share: inbound.tls_share(),
    }
}

/// Each route rule's backends over the window between two sets of reads, summed over the
/// callers: requests per second and each backend's share of its rule. A rule or backend seen
/// once stays listed (at 0) while its counters exist, so a weight set to 0 shows as 0 %.
fn route_rows(
    before: &BTreeMap<String, Counters>,
    after: &BTreeMap<String, Counters>,
    seconds: f64,
) -> Vec<RouteRow> {
    let seconds = seconds.max(0.001);
    let none = Counters::default();
    let mut moved: BTreeMap<(String, String), f64> = BTreeMap::new();
    for (pod, now) in after {
        let window = now.since(before.get(pod).unwrap_or(&none));
        for (s, n) in &window.requests {
            if s.direction == Direction::Outbound && !s.route.is_empty() {
                *moved
                    .entry((s.route.clone(), s.dst_service.clone()))
                    .or_default() += n;
            }
        }
    }
    let mut by_rule: BTreeMap<&str, f64> = BTreeMap::new();
    for ((rule, _), n) in &moved {
        *by_rule.entry(rule).or_default() += n;
    }
    moved
        .iter()
        .map(|((rule, backend), n)| {
            let total = by_rule.get(rule.as_str()).copied().unwrap_or(0.0);
            RouteRow {
                rule: rule.clone(),
                backend: backend.clone(),
                rps: n / seconds,
                share: (total > 0.0).then(|| n / total),
            }
        })
        .collect()
}

/// The routes table under the workloads: each rule's backends, their rates and shares.
fn route_table(rows: &[RouteRow], unit: &str) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "\n{:<40} {:<28} {:>11} {:>7}\n",
        "ROUTE RULE", "BACKEND", unit, "SHARE"
    );
    let mut last_rule = "";
    for r in rows {
        let rule = if r.rule == last_rule { "" } else { &r.rule };
        last_rule = &r.rule;
        out.push_str(&format!(
            "{:<40} {:<28} {:>11} {:>7}\n",
            rule,
            r.backend,
            format!("{:.1}", r.rps + 0.0),
            percent(r.share),
        ));
    }
    out
}

/// Every workload's and route's figures since the start.
fn totals(pods: &[PodEntry]) -> (BTreeMap<String, Row>, Vec<RouteRow>) {
    let zero = Counters::default();
    let now = snapshots(pods);
    let routes = route_rows(&BTreeMap::new(), &now, 1.0);
    let rows = now
        .into_iter()
        .map(|(name, s)| {
            let r = row(Some(&zero), Some(&s), 1.0);
            (name, r)
        })
        .collect();
    (rows, routes)
}

fn draw(
    pods: &[PodEntry],
    rows: &BTreeMap<String, Row>,
    routes: &[RouteRow],
    elapsed: Duration,
    footer: &str,
) {
    let mut out = String::new();
    // Clear the screen and go home: a live table, not a scrolling log.
    out.push_str("\x1b[2J\x1b[H");
    out.push_str(&format!(
        "Weft demo, {}s: per workload over the last {}s, from each proxy's /metrics (inbound = requests it served)\n\n",
        elapsed.as_secs(),
        REFRESH.as_secs()
    ));
    out.push_str(&table(pods, rows, "req/s"));
    out.push_str(&route_table(routes, "req/s"));
    out.push_str(footer);
    out.push_str("\nCtrl-C stops the demo and removes everything.\n");
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
}

fn draw_totals(
    pods: &[PodEntry],
    rows: &BTreeMap<String, Row>,
    routes: &[RouteRow],
    elapsed: Duration,
) {
    say!(
        "Weft demo after {}s: per workload since start, from each proxy's /metrics\n",
        elapsed.as_secs()
    );
    say_raw!("{}", table(pods, rows, "requests"));
    say_raw!("{}", route_table(routes, "requests"));
}

fn table(pods: &[PodEntry], rows: &BTreeMap<String, Row>, unit: &str) -> String {
    let mut out = format!(
        "{:<16} {:<40} {:>11} {:>11} {:>8} {:>8} {:>8} {:>6} {:>8}\n",
        "WORKLOAD",
        "IDENTITY",
        format!("IN {unit}"),
        format!("OUT {unit}"),
        "SUCCESS",
        "P50",
        "P99",
        "MTLS",
        "OUT OK"
    );
    for p in pods {
        let r = rows.get(&p.name).cloned().unwrap_or_default();
        out.push_str(&format!(
            "{:<16} {:<40} {:>11} {:>11} {:>8} {:>8} {:>8} {:>6} {:>8}\n",
            p.name,
            p.identity.as_deref().unwrap_or("- (not meshed)"),
            // `+ 0.0` turns a -0.0 (a counter that has not moved) into 0.0.
            format!("{:.1}", r.inbound_rps + 0.0),
            format!("{:.1}", r.outbound_rps + 0.0),
            percent(r.success),
            latency(r.p50),
            latency(r.p99),
            percent(r.mtls_share),
            percent(r.outbound_success),
        ));
    }
    out
}

fn percent(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{:.1}%", v * 100.0))
}

/// A latency in seconds, as `weftctl stat` prints it.
fn latency(v: Option<f64>) -> String {
    crate::stat::table::millis(v.map(|s| s * 1000.0))
}

/// What `--once` requires: every call got answers and no failures, and every meshed pod behind
/// a called Service served requests, all successful, over mTLS when all its callers are meshed.
fn check_once(
    folder: &Folder,
    pods: &[PodEntry],
    totals: &BTreeMap<String, Row>,
    routes: &[RouteRow],
    calls: &[(Call, Arc<ClientCounts>)],
) -> Vec<String> {
    let mut failures = Vec::new();
    let routed_kinds = ["HTTPRoute", "TrafficSplit"];
    let has_routes = folder.passed.iter().any(|d| {
        d.object
            .get("kind")
            .and_then(|k| k.as_str())
            .is_some_and(|k| routed_kinds.contains(&k))
    });
    if has_routes && routes.iter().all(|r| r.rps <= 0.0) {
        failures.push(
            "the folder has routes, but no proxy counted a request with a route label".into(),
        );
    }
    if calls.is_empty() {
        failures.push(format!("no pod calls a Service (annotation {CALLS})"));
    }
    for (call, counts) in calls {
        let ok = counts.ok.load(Ordering::Relaxed);
        let failed = counts.failed.load(Ordering::Relaxed);
        if ok == 0 || failed > 0 {
            failures.push(format!(
                "{} -> {}/{} ({}): {ok} answered, {failed} failed",
                call.from.1, call.service.0, call.service.1, call.dst
            ));
        }
    }
    let meshed = |key: &Key| folder.pods.get(key).is_some_and(|p| p.is_meshed());
    for p in pods.iter().filter(|p| p.identity.is_some()) {
        let Some(lab_pod) = folder.pods.get(&(p.namespace.clone(), p.name.clone())) else {
            continue;
        };
        let callers: Vec<&Call> = calls
            .iter()
            .map(|(c, _)| c)
            .filter(|c| {
                folder
                    .services
                    .get(&c.service)
                    .is_some_and(|s| s.selects(lab_pod))
            })
            .collect();
        if callers.is_empty() {
            continue;
        }
        let r = totals.get(&p.name).cloned().unwrap_or_default();
        if r.inbound_rps < 1.0 {
            failures.push(format!("{} served no requests through its proxy", p.name));
        }
        if r.success != Some(1.0) {
            failures.push(format!("{}: success rate {}", p.name, percent(r.success)));
        }
        if callers.iter().all(|c| meshed(&c.from)) && r.mtls_share != Some(1.0) {
            failures.push(format!(
                "{}: only {} of its requests came over mTLS",
                p.name,
                percent(r.mtls_share)
            ));
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A proxy's page: inbound 200s (over mTLS, all within 5ms) and 503s, outbound 200s and
    /// 503s, as the proxy prints them.
    fn counters(in_ok: u32, in_failed: u32, out_ok: u32, out_failed: u32) -> Counters {
        let line = |direction: &str, status: u16, tls: bool, n: u32| {
            let l = format!(
                "client_id=\"\",direction=\"{direction}\",dst_endpoint=\"\",dst_service=\"\",route=\"\",server_id=\"\",status_code=\"{status}\",tls=\"{tls}\""
            );
            format!(
                "weft_requests_total{{{l}}} {n}\n\
                 weft_request_duration_seconds_bucket{{{l},le=\"0.005\"}} {n}\n\
                 weft_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} {n}\n"
            )
        };
        let page = [
            line("inbound", 200, true, in_ok),
            line("inbound", 503, true, in_failed),
            line("outbound", 200, false, out_ok),
            line("outbound", 503, false, out_failed),
        ]
        .concat();
        Counters::read(&Metrics::parse(&page).expect("the page parses"))
    }

    #[test]
    fn a_window_is_the_difference_of_two_reads() {
        let before = counters(10, 0, 4, 0);
        let after = counters(29, 1, 7, 1);
        let r = row(Some(&before), Some(&after), 2.0);
        assert_eq!(r.inbound_rps, 10.0);
        assert_eq!(r.outbound_rps, 2.0);
        assert_eq!(r.outbound_success, Some(0.75));
        assert_eq!(r.success, Some(0.95));
        // Interpolated inside the (0, 5ms] bucket, as histogram_quantile does.
        assert_eq!(r.p50, Some(0.0025));
        assert_eq!(r.mtls_share, Some(1.0));
        assert_eq!(row(None, Some(&after), 2.0), Row::default());
    }

    #[test]
    fn routes_are_summed_over_callers_with_each_backends_share() {
        let rule = "httproute/demo/api-canary/rule/1";
        let snap = |v1: u32, v2: u32| {
            let line = |backend: &str, n: u32| {
                format!(
                    "weft_requests_total{{direction=\"outbound\",route=\"{rule}\",dst_service=\"{backend}\",status_code=\"200\",tls=\"true\"}} {n}\n"
                )
            };
            let page = line("demo/api-v1:80", v1) + &line("demo/api-v2:80", v2);
            Counters::read(&Metrics::parse(&page).expect("the page parses"))
        };
        let before: BTreeMap<String, Counters> =
            [("web".to_string(), snap(100, 10))].into_iter().collect();
        // A second caller appears in the window: all its requests count.
        let after: BTreeMap<String, Counters> = [
            ("web".to_string(), snap(118, 12)),
            ("web-2".to_string(), snap(9, 1)),
        ]
        .into_iter()
        .collect();
        let rows = route_rows(&before, &after, 2.0);
        assert_eq!(
            rows,
            [
                RouteRow {
                    rule: rule.into(),
                    backend: "demo/api-v1:80".into(),
                    rps: 13.5,
                    share: Some(0.9),
                },
                RouteRow {
                    rule: rule.into(),
                    backend: "demo/api-v2:80".into(),
                    rps: 1.5,
                    share: Some(0.1),
                },
            ]
        );
        // A quiet window: listed at 0, no share.
        let quiet = route_rows(&after, &after, 2.0);
        assert!(
            quiet.iter().all(|r| r.rps == 0.0 && r.share.is_none()),
            "{quiet:?}"
        );
        let text = route_table(&rows, "req/s");
        assert!(text.contains("ROUTE RULE"), "{text}");
        assert!(
            text.contains(rule) && text.contains("90.0%") && text.contains("10.0%"),
            "{text}"
        );
        // The rule is named once, on its first backend's line.
        assert_eq!(text.matches(rule).count(), 1, "{text}");
        assert_eq!(route_table(&[], "req/s"), "");
    }

    #[test]
    fn figures_read_well() {
        assert_eq!(latency(Some(0.005)), "5.0ms");
        assert_eq!(latency(Some(0.0025)), "2.5ms");
        assert_eq!(latency(Some(0.25)), "250ms");
        assert_eq!(latency(Some(2.0)), "2.00s");
        assert_eq!(latency(None), "-");
        assert_eq!(percent(Some(1.0)), "100.0%");
        assert_eq!(percent(None), "-");
    }
}

#[cfg(test)]
mod plan_tests {
    use std::path::Path;

    use weft_lab::folder::{self, Addresses};

    use super::*;

    #[test]
    fn the_built_in_folder_plans_web_to_api_and_both_apis_to_backend() {
        let folder = folder::build(
            [(Path::new("mesh.yaml"), DEMO_FOLDER)],
            &Addresses::default(),
        );
        assert!(folder.is_whole(), "{:#?}", folder.refused);
        let calls: Vec<(String, String)> = plan(&folder)
            .expect("a plan")
            .into_iter()
            .map(|c| (c.from.1, c.service.1))
            .collect();
        let want = [("api-v1", "backend"), ("api-v2", "backend"), ("web", "api")];
        assert_eq!(
            calls,
            want.map(|(a, b)| (a.to_string(), b.to_string())).to_vec()
        );
    }

    #[test]
    fn a_call_names_a_service_and_port_the_folder_has() {
        let with = |calls: &str| {
            let text = DEMO_FOLDER.replace(
                "demo.weft.dev/calls: api}",
                &format!("demo.weft.dev/calls: \"{calls}\"}}"),
            );
            folder::build(
                [(Path::new("mesh.yaml"), text.as_str())],
                &Addresses::default(),
            )
        };
        let ok = plan(&with("backend.demo:80, api")).expect("a plan");
        assert!(ok
            .iter()
            .any(|c| c.service.1 == "backend" && c.dst.port() == 80 && c.from.1 == "web"));
        for (calls, says) in [
            ("nothing", "no Service demo/nothing"),
            ("api:81", "has no port 81"),
            ("api:http", "\"http\" is not a port"),
            ("api.elsewhere", "no Service elsewhere/api"),
        ] {
            let e = plan(&with(calls)).expect_err(calls);
            assert!(
                e.contains(says) && e.contains("pod demo/web (mesh.yaml document 4)"),
                "{e}"
            );
        }
    }
}
