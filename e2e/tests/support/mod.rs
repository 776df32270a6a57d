//! What every e2e test shares: the skip rule, a cluster built the way the tier builds it, and
//! bounded waits on a proxy's metrics.

#![allow(dead_code)]

use std::time::Duration;

pub(crate) mod lab_run;
pub(crate) mod weftctl;

use weft_lab::{prereq, wait, Cluster, ClusterOptions, Metrics, Pod, Redirect};

/// How long a metric may take to reach its value (requests are counted when their response
/// body is dropped, a moment after the client has read it).
pub(crate) const PATIENCE: Duration = Duration::from_secs(5);

/// A cluster for `test`, or `None` (after a loud `SKIPPED:` line) when the machine cannot run
/// the tier. Meshed pods are redirected by `weft-cni`.
pub(crate) fn cluster(test: &str) -> Option<Cluster> {
    cluster_with(test, Redirect::WeftCni)
}

/// [`cluster`] with the redirection chosen.
pub(crate) fn cluster_with(test: &str, redirect: Redirect) -> Option<Cluster> {
    if !prereq::should_run(test) {
        return None;
    }
    Some(
        Cluster::with_options(ClusterOptions {
            redirect,
            ..ClusterOptions::default()
        })
        .unwrap_or_else(|e| panic!("{test}: building the cluster: {e}")),
    )
}

/// The proxy's metrics, or a failure naming the pod.
pub(crate) fn metrics(pod: &Pod) -> Metrics {
    pod.metrics()
        .unwrap_or_else(|e| panic!("{}'s metrics: {e}", pod.name()))
}

/// Waits until `read(metrics)` is `want`; fails with the page if it overshoots or never gets
/// there.
pub(crate) fn wait_for(
    pod: &Pod,
    what: &str,
    want: f64,
    read: impl Fn(&Metrics) -> f64,
) -> Metrics {
    let mut last = None;
    let got = wait::until(what, PATIENCE, || {
        let m = metrics(pod);
        let value = read(&m);
        assert!(
            value <= want,
            "{} {what}: {value}, past the expected {want}\n{}",
            pod.name(),
            m.text
        );
        let done = value == want;
        last = Some(m.clone());
        done.then_some(m)
    });
    got.unwrap_or_else(|e| {
        panic!(
            "{} {what}: {e}; last page:\n{}",
            pod.name(),
            last.map(|m| m.text).unwrap_or_default()
        )
    })
}

/// Waits until `read(metrics)` is `want` (a gauge: it may move either way meanwhile).
pub(crate) fn wait_value(
    pod: &Pod,
    what: &str,
    want: f64,
    read: impl Fn(&Metrics) -> f64,
) -> Metrics {
    let mut last = String::new();
    wait::until(what, PATIENCE, || {
        let m = metrics(pod);
        let done = read(&m) == want;
        last.clone_from(&m.text);
        done.then_some(m)
    })
    .unwrap_or_else(|e| panic!("{} {what}: {e}; last page:\n{last}", pod.name()))
}

/// `weft_tcp_connections_opened_total{direction}`.
pub(crate) fn opened(m: &Metrics, direction: &str) -> f64 {
    m.value(
        "weft_tcp_connections_opened_total",
        &[("direction", direction)],
    )
}
