//! What every e2e test shares: the skip rule and a cluster built the way the tier builds it.

#![allow(dead_code)]

use weft_e2e::{prereq, Cluster, ClusterOptions, Redirect};

/// A cluster for `test`, or `None` (after a loud `SKIPPED:` line) when the machine cannot run
/// the tier. Meshed pods are redirected by `weft-cni`.
pub fn cluster(test: &str) -> Option<Cluster> {
    cluster_with(test, Redirect::WeftCni)
}

/// [`cluster`] with the redirection chosen.
pub fn cluster_with(test: &str, redirect: Redirect) -> Option<Cluster> {
    if !prereq::should_run(test) {
        return None;
    }
    Some(
        Cluster::with_options(ClusterOptions { redirect })
            .unwrap_or_else(|e| panic!("{test}: building the cluster: {e}")),
    )
}
