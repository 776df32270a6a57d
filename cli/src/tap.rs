//! `weftctl tap` and `weftctl top`: the requests proxies serve, live, from their `GET /tap`
//! (see docs/proxy-config.md, "Tap").
//!
//! Where the proxies are:
//! - `--proxy ADDR`: one proxy's admin address; the default without a target is
//!   `127.0.0.1:15190`, the proxy of the pod the command runs in
//!   (`weftctl lab exec POD -- weftctl tap`).
//! - a TARGET (`deploy/NAME`, `pod/NAME` or a bare pod name, `ns/NAME` for a whole namespace)
//!   in a running `weftctl lab` or `weftctl demo` (`--lab` when several run): each of its meshed
//!   pods' proxies, reached on the pod's own loopback from inside its network namespace (root),
//!   as a tap must be;
//! - a TARGET on a cluster (`--kubeconfig`, or no lab running): each meshed pod of it (a
//!   Deployment's by its selector) through a port-forward to its port 15190, which the kubelet
//!   opens on the pod's loopback (RBAC: `pods/portforward`).
//!
//! Each proxy is one HTTP/1.1 request whose response streams JSON lines; a proxy that refuses
//! (not loopback, `WEFT_TAP=off`, too many taps, a bad filter) is reported with its answer, and
//! the others go on.

use std::{
    collections::HashMap,
    io::IsTerminal,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kube::{api::ListParams, Api};
use serde_json::Value;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::mpsc,
};
use weft_lab::{
    netns::Netns,
    registry::{LabEntry, PodEntry, Registry},
};

/// The proxy's admin port.
const ADMIN_PORT: u16 = 15190;
/// How long connecting to a proxy and its answer's head may take.
const CONNECT_PATIENCE: Duration = Duration::from_secs(5);
/// Proxies tapped at once at most.
const MAX_PROXIES: usize = 64;
/// The most events one proxy's stream is asked for (the proxy's own bound).
const MAX_LIMIT: u64 = 100_000;

/// Which proxies, and which of their requests.
#[derive(Debug, clap::Args)]
pub(crate) struct Source {
    /// What to tap in a running lab or demo: deploy/NAME, pod/NAME (or just NAME), ns/NAME.
    /// Omitted: the proxy at --proxy.
    target: Option<String>,
    /// The target's namespace.
    #[arg(short = 'n', long = "namespace", default_value = "default")]
    namespace: String,
    /// Which lab, when several run (`weftctl lab up --name`; the demo's is `demo`).
    #[arg(long = "lab")]
    lab: Option<String>,
    /// One proxy's admin address, tapped directly (default without a target: 127.0.0.1:15190,
    /// the proxy of the pod this runs in).
    #[arg(long, conflicts_with = "target")]
    proxy: Option<SocketAddr>,
    /// Tap the target on this cluster (default when no lab runs: $KUBECONFIG, ~/.kube/config
    /// or the in-cluster config).
    #[arg(long, conflicts_with_all = ["proxy", "lab"])]
    kubeconfig: Option<PathBuf>,
    /// Only requests of this direction at each proxy: inbound or outbound.
    #[arg(long, value_parser = ["inbound", "outbound"])]
    direction: Option<String>,
    /// Only requests with this method.
    #[arg(long)]
    method: Option<String>,
    /// Only requests to this authority (host:port as the client sent it).
    #[arg(long)]
    authority: Option<String>,
    /// Only requests whose path starts with this.
    #[arg(long)]
    path: Option<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct TapArgs {
    #[command(flatten)]
    source: Source,
    /// Stop after this many requests (over all the proxies), at most 100000.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    max: u64,
    /// Stop after this long (default: at --max, or Ctrl-C).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Request headers in each event: none, redacted (sensitive values hidden) or all.
    #[arg(long, default_value = "none", value_parser = ["none", "redacted", "all"])]
    headers: String,
    /// text: one line per request; json: the proxies' JSON lines, with `pod` added.
    #[arg(short = 'o', long, default_value = "text", value_parser = ["text", "json"])]
    output: String,
}

#[derive(Debug, clap::Args)]
pub(crate) struct TopArgs {
    #[command(flatten)]
    source: Source,
    /// Stop after this long and print the table once (default: a live table until Ctrl-C).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Rows shown, busiest first.
    #[arg(long, default_value_t = 20)]
    rows: usize,
    /// table, or json (the rows, at the end).
    #[arg(short = 'o', long, default_value = "table", value_parser = ["table", "json"])]
    output: String,
}

/// One proxy to tap: a name for it and how to reach its admin port.
struct Proxy {
    name: String,
    via: Via,
}

enum Via {
    /// This address, from here.
    Direct(SocketAddr),
    /// The loopback of this network namespace (a lab's pod).
    Netns(String),
    /// A port-forward to this pod.
    Cluster(Box<Api<Pod>>, String),
}

/// A connection to a proxy's admin port, however it was made.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What the proxies' streams deliver.
enum Item {
    Event(String, Value),
    /// A proxy's reader fell behind and missed this many.
    Dropped(String, u64),
    Failed(String, anyhow::Error),
    Ended,
}

pub(crate) fn tap(args: TapArgs) -> anyhow::Result<()> {
    let query = query(&args.source, args.max, &args.headers);
    let json = args.output == "json";
    let mut seen = 0;
    run(&args.source, &query, args.duration, |item| match item {
        Item::Event(pod, mut event) => {
            if json {
                event["pod"] = Value::String(pod);
                say!("{event}");
            } else {
                say!("{}", line(&pod, &event));
            }
            seen += 1;
            seen < args.max
        }
        Item::Dropped(pod, n) => {
            eprintln!("weftctl tap: {pod}: {n} requests missed (this reader fell behind)");
            true
        }
        Item::Failed(..) | Item::Ended => true,
    })
}

pub(crate) fn top(args: TopArgs) -> anyhow::Result<()> {
    let query = query(&args.source, MAX_LIMIT, "none");
    let live = args.duration.is_none() && args.output == "table" && std::io::stdout().is_terminal();
    let mut table = Top::default();
    let mut drawn = Instant::now();
    run(&args.source, &query, args.duration, |item| {
        if let Item::Event(_, event) = item {
            table.add(&event);
            if live && drawn.elapsed() >= Duration::from_secs(1) {
                drawn = Instant::now();
                say_raw!("\x1b[2J\x1b[H{}", table.render(args.rows));
            }
        }
        true
    })?;
    if args.output == "json" {
        say!("{}", serde_json::to_string_pretty(&table.rows(args.rows))?);
    } else {
        say_raw!("{}", table.render(args.rows));
    }
    Ok(())
}

/// The `/tap` query for `source`'s filters.
fn query(source: &Source, limit: u64, headers: &str) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in [
        ("direction", &source.direction),
        ("method", &source.method),
        ("authority", &source.authority),
        ("path", &source.path),
    ] {
        if let Some(v) = v {
            q.append_pair(k, v);
        }
    }
    q.append_pair("limit", &limit.min(MAX_LIMIT).to_string());
    q.append_pair("headers", headers);
    q.finish()
}

/// The proxies `source` names: one address; a lab's pods (when one runs, or `--lab`); or a
/// cluster's.
async fn proxies(source: &Source) -> anyhow::Result<Vec<Proxy>> {
    let Some(target) = &source.target else {
        let addr = source
            .proxy
            .unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, ADMIN_PORT)));
        return Ok(vec![Proxy {
            name: addr.to_string(),
            via: Via::Direct(addr),
        }]);
    };
    let registry = Registry::system();
    let lab_runs = source.lab.is_some() || registry.list().is_ok_and(|l| !l.is_empty());
    if source.kubeconfig.is_some() || !lab_runs {
        return cluster_proxies(source, target).await;
    }
    if !nix::unistd::Uid::effective().is_root() {
        bail!("tapping a lab's pods needs root (their network namespaces); run it with sudo");
    }
    let lab = registry.find(source.lab.as_deref())?;
    let pods = select(&lab, target, &source.namespace)?;
    Ok(pods
        .into_iter()
        .map(|p| Proxy {
            name: format!("{}/{}", p.namespace, p.name),
            via: Via::Netns(p.netns.clone()),
        })
        .collect())
}

/// The meshed, running pods of `target` on the cluster.
async fn cluster_proxies(source: &Source, target: &str) -> anyhow::Result<Vec<Proxy>> {
    let client = crate::kubeconfig::client(source.kubeconfig.as_deref(), CONNECT_PATIENCE).await?;
    let (kind, name) = target.split_once('/').unwrap_or(("pod", target));
    let namespace = match kind {
        "ns" | "namespace" => name,
        _ => source.namespace.as_str(),
    };
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pods: Vec<Pod> = match kind {
        "deploy" | "deployment" | "deployments" => {
            let d: Deployment = Api::namespaced(client, namespace)
                .get(name)
                .await
                .with_context(|| format!("deployment {name} in namespace {namespace}"))?;
            let selector = d
                .spec
                .map(|s| s.selector)
                .and_then(|s| label_selector(&s))
                .with_context(|| format!("deployment {name} has no selector weftctl can read"))?;
            api.list(&ListParams::default().labels(&selector))
                .await
                .with_context(|| format!("the pods of deployment {name}"))?
                .items
        }
        "po" | "pod" | "pods" => vec![api
            .get(name)
            .await
            .with_context(|| format!("pod {name} in namespace {namespace}"))?],
        "ns" | "namespace" => {
            api.list(&ListParams::default())
                .await
                .with_context(|| format!("the pods of namespace {namespace}"))?
                .items
        }
        other => bail!(
            "unknown kind {other:?} in {target:?}: deploy/NAME, pod/NAME (or NAME), or ns/NAME"
        ),
    };
    let found = pods.len();
    let meshed: Vec<String> = pods
        .into_iter()
        .filter(|p| is_meshed(p) && is_running(p))
        .filter_map(|p| p.metadata.name)
        .collect();
    if meshed.is_empty() {
        bail!("{target} in namespace {namespace}: {found} pods, none running with the proxy");
    }
    if meshed.len() > MAX_PROXIES {
        bail!(
            "{target} has {} meshed pods; at most {MAX_PROXIES} are tapped at once: name fewer",
            meshed.len()
        );
    }
    Ok(meshed
        .into_iter()
        .map(|pod| Proxy {
            name: format!("{namespace}/{pod}"),
            via: Via::Cluster(Box::new(api.clone()), pod),
        })
        .collect())
}

/// A label selector in the API's query syntax (`a=b,c in (d,e),!f`).
fn label_selector(
    s: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
) -> Option<String> {
    let mut parts: Vec<String> = s
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in s.match_expressions.iter().flatten() {
        let values = e.values.as_deref().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            _ => return None,
        });
    }
    (!parts.is_empty()).then(|| parts.join(","))
}

/// Whether the injector gave `pod` the proxy (a native sidecar, or a container on clusters
/// before 1.29).
fn is_meshed(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|s| {
        s.init_containers
            .iter()
            .flatten()
            .chain(&s.containers)
            .any(|c| c.name == "weft-proxy")
    })
}

fn is_running(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// The meshed pods of `lab` that `target` names in `namespace`.
fn select<'a>(
    lab: &'a LabEntry,
    target: &str,
    namespace: &str,
) -> anyhow::Result<Vec<&'a PodEntry>> {
    let (kind, name) = target.split_once('/').unwrap_or(("pod", target));
    let (namespace, matches) = match kind {
        // The lab records each pod's workload as its proxy's WEFT_WORKLOAD says it.
        "deploy" | "deployment" | "deployments" => {
            (namespace, Pods::Workload(format!("deployment/{name}")))
        }
        "po" | "pod" | "pods" => (namespace, Pods::Named(name.to_owned())),
        "ns" | "namespace" => (name, Pods::All),
        other => bail!(
            "unknown kind {other:?} in {target:?}: deploy/NAME, pod/NAME (or NAME), or ns/NAME"
        ),
    };
    let found: Vec<&PodEntry> = lab
        .pods
        .iter()
        .filter(|p| p.namespace == namespace && matches.take(p))
        .collect();
    if found.is_empty() {
        let known: Vec<String> = lab
            .pods
            .iter()
            .map(|p| format!("{}/{}", p.namespace, p.name))
            .collect();
        bail!(
            "lab {} has no pod for {target} in namespace {namespace}; its pods: {}",
            lab.name,
            known.join(", ")
        );
    }
    let meshed: Vec<&PodEntry> = found
        .iter()
        .copied()
        .filter(|p| p.identity.is_some())
        .collect();
    if meshed.is_empty() {
        bail!("{target} in namespace {namespace} is not meshed: no proxy to tap");
    }
    if meshed.len() > MAX_PROXIES {
        bail!(
            "{target} has {} meshed pods; at most {MAX_PROXIES} are tapped at once: name fewer",
            meshed.len()
        );
    }
    Ok(meshed)
}

/// Which pods of a namespace a target names.
enum Pods {
    Named(String),
    /// Of this workload (`kind/name`).
    Workload(String),
    All,
}

impl Pods {
    fn take(&self, pod: &PodEntry) -> bool {
        match self {
            Pods::Named(name) => pod.name == *name,
            Pods::Workload(w) => pod.workload.as_ref() == Some(w),
            Pods::All => true,
        }
    }
}

/// Taps every proxy until `handle` says enough, `duration` passes, Ctrl-C, or every stream
/// ended. A proxy that cannot be tapped is reported; with none left, that is the error.
fn run(
    source: &Source,
    query: &str,
    duration: Option<Duration>,
    mut handle: impl FnMut(Item) -> bool,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tap's runtime")?;
    rt.block_on(async {
        let proxies = proxies(source).await?;
        let (tx, mut rx) = mpsc::channel(1024);
        let total = proxies.len();
        let mut open = total;
        for p in proxies {
            let tx = tx.clone();
            let path = format!("/tap?{query}");
            tokio::spawn(async move {
                let name = p.name.clone();
                let item = match stream(p, &path, &tx).await {
                    Ok(()) => Item::Ended,
                    Err(e) => Item::Failed(name, e),
                };
                let _ = tx.send(item).await;
            });
        }
        drop(tx);
        let deadline = duration.map(|d| tokio::time::Instant::now() + d);
        let mut failures = Vec::new();
        loop {
            let item = tokio::select! {
                item = rx.recv() => item,
                () = sleep_until(deadline) => return Ok(()),
                _ = tokio::signal::ctrl_c() => return Ok(()),
            };
            let Some(item) = item else { break };
            match &item {
                Item::Failed(name, e) => {
                    eprintln!("weftctl: {name}: {e:#}");
                    failures.push(name.clone());
                    open -= 1;
                }
                Item::Ended => open -= 1,
                _ => {}
            }
            if !handle(item) || open == 0 {
                break;
            }
        }
        if !failures.is_empty() && failures.len() == total {
            bail!("no proxy could be tapped ({})", failures.join(", "));
        }
        Ok(())
    })
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// One proxy's tap, its events sent to `tx` until its stream ends.
async fn stream(p: Proxy, path: &str, tx: &mpsc::Sender<Item>) -> anyhow::Result<()> {
    let io: Box<dyn Io> = match p.via {
        Via::Netns(ns) => {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, ADMIN_PORT));
            let ns = Netns::attach(&ns)?;
            let std = ns.connect(addr, CONNECT_PATIENCE)?;
            std.set_nonblocking(true)?;
            Box::new(tokio::net::TcpStream::from_std(std)?)
        }
        Via::Direct(addr) => Box::new(
            tokio::time::timeout(CONNECT_PATIENCE, tokio::net::TcpStream::connect(addr))
                .await
                .with_context(|| format!("connecting to {addr} timed out"))?
                .with_context(|| format!("connecting to the proxy's admin port {addr}"))?,
        ),
        Via::Cluster(api, pod) => {
            let mut forward =
                tokio::time::timeout(CONNECT_PATIENCE, api.portforward(&pod, &[ADMIN_PORT]))
                    .await
                    .context("the port-forward did not open in time")?
                    .context("a port-forward to the pod's port 15190 (RBAC: pods/portforward)")?;
            let port = forward
                .take_stream(ADMIN_PORT)
                .context("the port-forward gave no stream")?;
            // The forwarder's own task ends with the stream.
            tokio::spawn(async move {
                let _ = forward.join().await;
            });
            Box::new(port)
        }
    };
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())?;
    let rsp = tokio::time::timeout(CONNECT_PATIENCE, send.send_request(req))
        .await
        .context("the proxy did not answer the tap in time")??;
    let status = rsp.status();
    let mut body = rsp.into_body();
    if status != http::StatusCode::OK {
        let text = tokio::time::timeout(CONNECT_PATIENCE, body.collect())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_owned())
            .unwrap_or_default();
        bail!("the proxy refused the tap: {status}: {text}");
    }
    let mut pending: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let event: Value = serde_json::from_slice(&line).with_context(|| {
                format!(
                    "a tap line that is not JSON: {}",
                    String::from_utf8_lossy(&line)
                )
            })?;
            let item = match event.get("dropped").and_then(Value::as_u64) {
                Some(n) if event.get("path").is_none() => Item::Dropped(p.name.clone(), n),
                _ => Item::Event(p.name.clone(), event),
            };
            if tx.send(item).await.is_err() {
                return Ok(());
            }
        }
        if pending.len() > 1 << 20 {
            bail!("a tap line longer than 1 MiB");
        }
    }
    Ok(())
}

/// One request as a line: pod, direction, method, authority and path, status, latency, and
/// who served it.
fn line(pod: &str, e: &Value) -> String {
    let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("");
    let mut out = format!(
        "{pod} {dir} {method} {authority}{path} {status} {latency}ms",
        dir = if s("direction") == "inbound" {
            "in "
        } else {
            "out"
        },
        method = s("method"),
        authority = s("authority"),
        path = s("path"),
        status = e.get("status").and_then(Value::as_u64).unwrap_or(0),
        latency = e.get("latency_ms").and_then(Value::as_f64).unwrap_or(0.0),
    );
    if e.get("tls").and_then(Value::as_bool) == Some(true) {
        out.push_str(" tls=true");
    }
    for (key, label) in [
        ("src_identity", "src"),
        ("dst_identity", "dst"),
        ("route", "route"),
        ("backend", "backend"),
        ("endpoint", "endpoint"),
        ("error", "error"),
    ] {
        if !s(key).is_empty() {
            out.push_str(&format!(" {label}={}", s(key)));
        }
    }
    out
}

/// `weftctl top`'s table: requests by direction, method, authority and path.
#[derive(Debug, Default)]
struct Top {
    rows: HashMap<(String, String, String, String), Row>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
struct Row {
    direction: String,
    method: String,
    authority: String,
    path: String,
    count: u64,
    /// Responses that were not 5xx.
    success: u64,
    best_ms: f64,
    worst_ms: f64,
    last_ms: f64,
}

impl Top {
    fn add(&mut self, e: &Value) {
        let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let key = (s("direction"), s("method"), s("authority"), s("path"));
        let latency = e.get("latency_ms").and_then(Value::as_f64).unwrap_or(0.0);
        let status = e.get("status").and_then(Value::as_u64).unwrap_or(0);
        let row = self.rows.entry(key.clone()).or_insert_with(|| Row {
            direction: key.0,
            method: key.1,
            authority: key.2,
            path: key.3,
            best_ms: latency,
            worst_ms: latency,
            ..Row::default()
        });
        row.count += 1;
        if !(500..600).contains(&status) {
            row.success += 1;
        }
        row.best_ms = row.best_ms.min(latency);
        row.worst_ms = row.worst_ms.max(latency);
        row.last_ms = latency;
    }

    /// The busiest `n` rows, most requests first (then by path, for a stable order).
    fn rows(&self, n: usize) -> Vec<Row> {
        let mut rows: Vec<Row> = self.rows.values().cloned().collect();
        rows.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| (&a.authority, &a.path).cmp(&(&b.authority, &b.path)))
        });
        rows.truncate(n);
        rows
    }

    fn render(&self, n: usize) -> String {
        let mut out = format!(
            "{:<4} {:<7} {:<32} {:<32} {:>7} {:>8} {:>9} {:>9} {:>9}\n",
            "DIR", "METHOD", "AUTHORITY", "PATH", "COUNT", "SUCCESS", "BEST", "WORST", "LAST"
        );
        for r in self.rows(n) {
            out.push_str(&format!(
                "{:<4} {:<7} {:<32} {:<32} {:>7} {:>7.1}% {:>7.2}ms {:>7.2}ms {:>7.2}ms\n",
                if r.direction == "inbound" {
                    "in"
                } else {
                    "out"
                },
                r.method,
                r.authority,
                r.path,
                r.count,
                100.0 * r.success as f64 / r.count.max(1) as f64,
                r.best_ms,
                r.worst_ms,
                r.last_ms,
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests;
