//! `weftctl stat` and `weftctl stat-outbound`, as `linkerd viz stat` and `linkerd viz
//! stat-outbound`: the golden metrics (success rate, requests per second, latency p50/p95/p99,
//! mTLS share) of namespaces, workloads, pods, Services or route rules over a window; and a
//! caller's view of each route it uses and each backend, with timeouts and retries.
//!
//! # Layout
//! - [`window`]: one proxy's counters read from its `/metrics` and the window between two
//!   reads; success, mTLS share, quantiles. Pure; `weftctl demo`'s table uses it too.
//! - [`resource`]: `RESOURCE` (`deploy/api`, `po`, `svc/api`, `route/api-canary`, ...).
//! - [`view`]: the rows of both commands and their JSON; [`table`]: their tables. Pure.
//! - Sources: [`scrape`] (each proxy read twice, a window apart: a running lab's pods through
//!   its node namespace), [`cluster`] (the same through the API server's pod proxy), [`prom`]
//!   (PromQL over the window).
//!
//! Which source: `--prometheus URL`, `--lab NAME` or `--kubeconfig FILE` when given (one of
//! them); otherwise the running lab when there is exactly one, otherwise the kubeconfig
//! (`$KUBECONFIG`, `~/.kube/config`, in-cluster).

pub(crate) mod cluster;
pub(crate) mod prom;
pub(crate) mod resource;
pub(crate) mod scrape;
pub(crate) mod table;
pub(crate) mod view;
pub(crate) mod window;

#[cfg(test)]
mod tests;

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context};
use weft_lab::registry::Registry;

use self::{
    resource::{Kind, Resource, KINDS},
    view::Observed,
};

/// How long one read of a proxy, or one Prometheus query, may take.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The window with Prometheus, as `linkerd viz stat`'s.
const PROMETHEUS_WINDOW: Duration = Duration::from_secs(60);
/// The window read straight from the proxies: the command waits it out.
const DIRECT_WINDOW: Duration = Duration::from_secs(10);

/// Shown under both commands' help.
const SOURCES_HELP: &str = "\
Sources: --prometheus URL (PromQL over the window), --lab NAME (a running `weftctl lab` or \
`demo`: each proxy read twice through the lab's node namespace; root), --kubeconfig FILE (each \
proxy read twice through the API server's pod proxy). With none: the running lab if exactly \
one runs, else $KUBECONFIG, ~/.kube/config or the in-cluster config.

Examples:
  sudo weftctl stat po -n demo                      # while `weftctl demo` runs
  weftctl stat deploy -n shop --prometheus http://127.0.0.1:9090 --window 5m
  sudo weftctl stat-outbound po/web -n demo -o wide  # routes, backends, timeouts, retries

Columns, sources and the JSON: docs/stat.md";

#[derive(Debug, clap::Args)]
#[command(after_help = SOURCES_HELP)]
pub(crate) struct StatArgs {
    /// What to show: KIND or KIND/NAME. Kinds: ns, workload (every workload of any kind, the
    /// default), deploy, sts, ds, job, po, svc, route (httproute, trafficsplit). Namespaces,
    /// workloads and pods are measured by the requests their pods served (inbound); Services
    /// and routes by the requests the mesh's clients sent them (outbound: a route is applied by
    /// the caller's proxy, and a Service split by a route shows its traffic under each backend
    /// Service).
    #[arg(value_parser = parse_resource)]
    resource: Option<Resource>,
    /// Only this namespace (of the pods; of the Service or route for those kinds). Default:
    /// every namespace.
    #[arg(short = 'n', long, value_parser = parse_namespace)]
    namespace: Option<String>,
    /// Every namespace (the default; for kubectl's and linkerd's habit).
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    all_namespaces: bool,
    /// The outbound view, as `weftctl stat-outbound`.
    #[arg(long)]
    outbound: bool,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, clap::Args)]
#[command(after_help = SOURCES_HELP)]
pub(crate) struct OutboundArgs {
    /// Whose calls: a workload, pod or namespace (KIND or KIND/NAME, as for `weftctl stat`;
    /// default: every workload).
    #[arg(value_parser = parse_resource)]
    resource: Option<Resource>,
    /// Only callers in this namespace. Default: every namespace.
    #[arg(short = 'n', long, value_parser = parse_namespace)]
    namespace: Option<String>,
    /// Every namespace (the default).
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    all_namespaces: bool,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, clap::Args)]
pub(crate) struct CommonArgs {
    /// The window the figures cover: default 1m with Prometheus (as linkerd viz), 10s when
    /// reading the proxies directly (the command waits that long between its two reads).
    #[arg(long, value_parser = window)]
    window: Option<Duration>,
    /// `table`, `wide` (the counts behind the rates too) or `json`.
    #[arg(short = 'o', long, default_value = "table", value_parser = ["table", "wide", "json"])]
    output: String,
    /// Read the window from this Prometheus (`http://host:port[/prefix]`), which scrapes the
    /// proxies with `namespace` and `pod` target labels (docs/observability.md).
    #[arg(long, value_name = "URL", value_parser = prom::Prometheus::parse)]
    prometheus: Option<prom::Prometheus>,
    /// Read the proxies of this running `weftctl lab` (or `demo`) directly (needs root).
    #[arg(long, value_name = "NAME")]
    lab: Option<String>,
    /// Read the proxies through this cluster's API server (pod proxy), with this kubeconfig.
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The most meshed pods read directly; past it the rest are left out and the output says
    /// so.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=5000))]
    max_pods: u32,
}

fn parse_resource(s: &str) -> Result<Resource, String> {
    Resource::parse(s).map_err(|e| e.to_string())
}

fn parse_namespace(s: &str) -> Result<String, String> {
    if resource::is_name(s) && !s.contains('.') && s.len() <= 63 {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a namespace name (lowercase letters, digits and '-')"
        ))
    }
}

fn window(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))?;
    if d < Duration::from_secs(1) || d > Duration::from_secs(24 * 3600) {
        return Err(format!("{s:?}: a window is 1s to 24h"));
    }
    Ok(d)
}

/// Where the figures come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    Prometheus(prom::Prometheus),
    Lab(String),
    Cluster(Option<PathBuf>),
}

/// The source the flags name, else a running lab if exactly one runs, else the kubeconfig.
/// `running_labs` is asked only when no flag names a source (an unreadable registry then is
/// an error, not "no lab").
pub(crate) fn choose(
    common: &CommonArgs,
    running_labs: impl FnOnce() -> anyhow::Result<Vec<String>>,
) -> anyhow::Result<Source> {
    let given = [
        common.prometheus.is_some(),
        common.lab.is_some(),
        common.kubeconfig.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    if given > 1 {
        bail!("give one source of metrics: --prometheus, --lab or --kubeconfig");
    }
    if let Some(p) = &common.prometheus {
        return Ok(Source::Prometheus(p.clone()));
    }
    if let Some(lab) = &common.lab {
        return Ok(Source::Lab(lab.clone()));
    }
    if let Some(path) = &common.kubeconfig {
        return Ok(Source::Cluster(Some(path.clone())));
    }
    match running_labs()?.as_slice() {
        [one] => Ok(Source::Lab(one.clone())),
        [] => Ok(Source::Cluster(None)),
        several => bail!(
            "several labs run ({}): name one with --lab, or give --prometheus or --kubeconfig",
            several.join(", ")
        ),
    }
}

pub(crate) fn stat(args: StatArgs) -> anyhow::Result<()> {
    // `-A` and `-n` conflict: every namespace is the default either way.
    let namespace = args.namespace.filter(|_| !args.all_namespaces);
    run(
        args.resource,
        namespace.as_deref(),
        args.outbound,
        &args.common,
    )
}

pub(crate) fn stat_outbound(args: OutboundArgs) -> anyhow::Result<()> {
    let namespace = args.namespace.filter(|_| !args.all_namespaces);
    run(args.resource, namespace.as_deref(), true, &args.common)
}

fn run(
    resource: Option<Resource>,
    namespace: Option<&str>,
    outbound: bool,
    common: &CommonArgs,
) -> anyhow::Result<()> {
    let resource = resource.unwrap_or(Resource {
        kind: Kind::Workload(None),
        name: None,
    });
    if outbound && !resource.is_served() {
        bail!(
            "stat-outbound shows a caller's routes and backends: give a workload, pod or \
             namespace (deploy/NAME, po/NAME, ns/NAME; kinds: {KINDS}), not {resource}"
        );
    }
    // `ns/NAME` means that namespace.
    let namespace = match (&resource.kind, &resource.name) {
        (Kind::Namespace, Some(name)) => Some(name.as_str()),
        _ => namespace,
    };
    // Services and routes are measured at their callers, which may live in any namespace.
    let pods_in = if resource.is_served() {
        namespace
    } else {
        None
    };
    let registry = Registry::system();
    let source = choose(common, || {
        Ok(registry
            .list()
            .context("look for running labs")?
            .into_iter()
            .filter(|l| l.is_running())
            .map(|l| l.name)
            .collect())
    })?;
    let obs = observe(&source, &registry, pods_in, common)?;
    let wide = common.output == "wide";
    if outbound {
        let report = view::outbound_rows(&obs, &resource, namespace);
        if common.output == "json" {
            say!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            say_raw!("{}", table::outbound_table(&report, wide));
        }
    } else {
        let report = view::stat_rows(&obs, &resource, namespace);
        if common.output == "json" {
            say!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            say_raw!("{}", table::stat_table(&report, wide));
        }
    }
    Ok(())
}

fn observe(
    source: &Source,
    registry: &Registry,
    namespace: Option<&str>,
    common: &CommonArgs,
) -> anyhow::Result<Observed> {
    let max = usize::try_from(common.max_pods).unwrap_or(usize::MAX);
    match source {
        Source::Prometheus(p) => prom::observe(
            p,
            common.window.unwrap_or(PROMETHEUS_WINDOW),
            namespace,
            READ_TIMEOUT * 3,
        ),
        Source::Lab(name) => {
            let lab = registry
                .find(Some(name))
                .with_context(|| format!("find lab {name}"))?;
            let window = common.window.unwrap_or(DIRECT_WINDOW);
            let what = format!("lab {}'s", lab.name);
            scrape::observe_lab(&lab, namespace, window, max, READ_TIMEOUT, &|n| {
                announce(common, n, &what, window)
            })
        }
        Source::Cluster(kubeconfig) => {
            let window = common.window.unwrap_or(DIRECT_WINDOW);
            cluster::observe(
                kubeconfig.as_deref(),
                namespace,
                window,
                max,
                READ_TIMEOUT,
                &|n| announce(common, n, "the cluster's (through the API server)", window),
            )
        }
    }
}

/// Says on stderr, for a person waiting (not for JSON's reader), what the command waits for.
fn announce(common: &CommonArgs, proxies: usize, whose: &str, window: Duration) {
    if common.output != "json" {
        eprintln!(
            "weftctl stat: reading {whose} {proxies} proxies twice, {} apart ...",
            humantime::format_duration(window)
        );
    }
}
