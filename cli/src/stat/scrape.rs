//! `weftctl stat` straight from the proxies: every meshed pod's `:15190/metrics` read twice,
//! `--window` apart, the window being the difference ([`Counters::since`]).
//!
//! Two ways in: on a machine running `weftctl lab` or `weftctl demo`, through a socket made in
//! the lab's node namespace to each pod's IP (as Prometheus would scrape it); on a cluster,
//! through the API server's proxy subresource of each pod
//! (`/api/v1/namespaces/NS/pods/NAME:15190/proxy/metrics`), with the user's kubeconfig. Every
//! read is bounded by a timeout; a pod that cannot be read is reported with why, and the rows
//! it belongs to are marked partial.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::Context;
use weft_lab::{netns::Netns, registry::LabEntry, Metrics};

use super::{
    view::{Failed, Observed, PodInfo, ProxyWindow, Workload},
    window::Counters,
};

/// The proxy's admin port.
pub(crate) const ADMIN_PORT: u16 = 15190;

/// One proxy's page, read at one moment.
#[derive(Debug, Clone)]
pub(crate) struct Read {
    pub(crate) counters: Counters,
    /// From `weft_proxy_info`, when the proxy exports it.
    pub(crate) workload: Option<Workload>,
}

impl Read {
    /// A page's text, parsed.
    pub(crate) fn parse(text: &str) -> Result<Read, String> {
        let m = Metrics::parse(text).map_err(|e| format!("its /metrics does not parse: {e}"))?;
        Ok(Read {
            counters: Counters::read(&m),
            workload: workload_of(&m),
        })
    }
}

/// The workload `weft_proxy_info` names.
pub(crate) fn workload_of(m: &Metrics) -> Option<Workload> {
    m.matching("weft_proxy_info", &[]).next().map(|s| Workload {
        kind: s.label("workload_kind").to_string(),
        name: s.label("workload").to_string(),
    })
}

/// A meshed pod to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) namespace: String,
    pub(crate) pod: String,
    /// What the source says its workload is, when it knows (a proxy's own
    /// `weft_proxy_info` wins).
    pub(crate) workload: Option<Workload>,
}

/// Reads every target twice, `window` apart, with `read` (one pod's page, or why not), and
/// makes the window of each pod read both times.
pub(crate) fn observe_twice(
    targets: &[Target],
    window: Duration,
    read: &mut dyn FnMut(&Target) -> Result<String, String>,
) -> Observed {
    let mut failed: BTreeMap<usize, String> = BTreeMap::new();
    let mut first: BTreeMap<usize, Read> = BTreeMap::new();
    let started = Instant::now();
    for (i, t) in targets.iter().enumerate() {
        match read(t).and_then(|text| Read::parse(&text)) {
            Ok(r) => {
                first.insert(i, r);
            }
            Err(e) => {
                failed.insert(i, e);
            }
        }
    }
    std::thread::sleep(window.saturating_sub(started.elapsed()));
    let seconds = started.elapsed().as_secs_f64();
    let mut proxies = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let Some(before) = first.get(&i) else {
            continue;
        };
        match read(t).and_then(|text| Read::parse(&text)) {
            Ok(after) => proxies.push(ProxyWindow {
                namespace: t.namespace.clone(),
                pod: t.pod.clone(),
                workload: after
                    .workload
                    .clone()
                    .or_else(|| t.workload.clone())
                    .unwrap_or_else(|| Workload::pod(&t.pod)),
                counters: after.counters.since(&before.counters),
            }),
            Err(e) => {
                failed.insert(i, format!("second read: {e}"));
            }
        }
    }
    Observed {
        source: String::new(),
        pods: None,
        proxies,
        failed: failed
            .into_iter()
            .filter_map(|(i, error)| {
                let t = targets.get(i)?;
                Some(Failed {
                    namespace: t.namespace.clone(),
                    pod: t.pod.clone(),
                    workload: t.workload.clone(),
                    error,
                })
            })
            .collect(),
        seconds,
        skipped: 0,
    }
}

/// A lab's pods and the targets to read (its meshed pods, at most `max`).
pub(crate) fn lab_targets(
    lab: &LabEntry,
    namespace: Option<&str>,
    max: usize,
) -> (Vec<PodInfo>, Vec<Target>, usize) {
    let pods: Vec<PodInfo> = lab
        .pods
        .iter()
        .filter(|p| namespace.is_none_or(|n| n == p.namespace))
        .map(|p| PodInfo {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            workload: p
                .workload
                .as_deref()
                .map_or_else(|| Workload::pod(&p.name), Workload::parse),
            meshed: p.identity.is_some(),
        })
        .collect();
    let (targets, skipped) = meshed_targets(&pods, max);
    (pods, targets, skipped)
}

/// The first `max` meshed pods of `pods` as targets to read, and how many more were left out.
pub(crate) fn meshed_targets(pods: &[PodInfo], max: usize) -> (Vec<Target>, usize) {
    let meshed: Vec<Target> = pods
        .iter()
        .filter(|p| p.meshed)
        .map(|p| Target {
            namespace: p.namespace.clone(),
            pod: p.name.clone(),
            workload: Some(p.workload.clone()),
        })
        .collect();
    let skipped = meshed.len().saturating_sub(max);
    (meshed.into_iter().take(max).collect(), skipped)
}

/// Reads one lab pod's page through a socket made in the lab's node namespace.
pub(crate) fn read_lab_pod(
    node: &Netns,
    lab: &LabEntry,
    t: &Target,
    timeout: Duration,
) -> Result<String, String> {
    let pod = lab
        .pod(&t.namespace, &t.pod)
        .ok_or_else(|| "the lab no longer runs this pod".to_string())?;
    let ip: IpAddr = pod
        .ip
        .parse()
        .map_err(|_| format!("the lab's entry gives it the address {:?}", pod.ip))?;
    let addr = SocketAddr::new(ip, ADMIN_PORT);
    let mut conn = node
        .connect(addr, timeout)
        .map_err(|e| format!("{e} (is its proxy up? `weftctl lab status`)"))?;
    let reply =
        weft_lab::http::request(&mut conn, addr, &pod.ip, "/metrics").map_err(|e| e.to_string())?;
    if reply.status != 200 {
        return Err(format!(
            "GET http://{addr}/metrics answered {}: {}",
            reply.status,
            reply.body.chars().take(200).collect::<String>()
        ));
    }
    Ok(reply.body)
}

/// Reads a running lab's meshed pods over `window`, having `announce`d how many.
pub(crate) fn observe_lab(
    lab: &LabEntry,
    namespace: Option<&str>,
    window: Duration,
    max: usize,
    timeout: Duration,
    announce: &dyn Fn(usize),
) -> anyhow::Result<Observed> {
    if !nix::unistd::Uid::effective().is_root() {
        anyhow::bail!(
            "reading lab {}'s proxies needs root (its network namespaces); run weftctl stat with sudo, or give --prometheus",
            lab.name
        );
    }
    let node = Netns::attach(&lab.node)
        .with_context(|| format!("enter lab {}'s node namespace", lab.name))?;
    let (pods, targets, skipped) = lab_targets(lab, namespace, max);
    announce(targets.len());
    let mut obs = observe_twice(&targets, window, &mut |t| {
        read_lab_pod(&node, lab, t, timeout)
    });
    obs.source = format!("lab {}", lab.name);
    obs.pods = Some(pods);
    obs.skipped = skipped;
    Ok(obs)
}
