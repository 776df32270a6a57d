//! The k8s tier: Weft on a real single-node Kubernetes (weft-k8s-lab), built from the pinned
//! upstream Go modules (`make k8s`).
//!
//! One cluster serves every case (a start takes 10-20 s); each case works in namespaces of its
//! own. The runner is ours (`harness = false`) so that the cluster is started once and torn
//! down at the end whatever happened: a failing case is reported with the end of every
//! component's log and the others still run. `cargo test --test k8s -- NAME` runs the cases
//! whose name contains NAME.
//!
//! Skips (loudly) when not root, when containerd and friends are missing, or when `make k8s`
//! has not been run; with `WEFT_REQUIRE_K8S_TESTS=1` (CI) a skip is a failure.

mod cases;
mod support;

use std::{
    panic::{self, AssertUnwindSafe},
    process::ExitCode,
    time::Instant,
};

use weft_k8s_lab::{bins, Cluster, ClusterOptions};

fn main() -> ExitCode {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let selected: Vec<&(&str, cases::Case)> = cases::ALL
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();
    if selected.is_empty() {
        println!("k8s tier: no case matches {filters:?}");
        return ExitCode::SUCCESS;
    }
    if !bins::run_or_skip("the k8s tier", bins::why_not()) {
        return ExitCode::SUCCESS;
    }
    let weft = match weft_k8s_lab::weft::build_dir() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("k8s tier: {e}");
            return ExitCode::from(1);
        }
    };
    let options = ClusterOptions {
        verbose: true,
        ..ClusterOptions::default()
    };
    let start = Instant::now();
    let mut cluster = match Cluster::start(&options) {
        Ok(cluster) => cluster,
        Err(e) => {
            eprintln!("k8s tier: the cluster did not start: {e}");
            return ExitCode::from(1);
        }
    };
    println!(
        "k8s tier: cluster {} up in {:.1?}",
        cluster.name(),
        start.elapsed()
    );
    let mut env = match support::Env::new(&mut cluster, &weft) {
        Ok(env) => env,
        Err(e) => {
            eprintln!("k8s tier: installing Weft failed: {e}");
            support::print_logs(&cluster);
            return ExitCode::from(1);
        }
    };

    let mut failed = Vec::new();
    for (name, case) in selected {
        let started = Instant::now();
        println!("test k8s::{name} ...");
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| case(&mut env)));
        match outcome {
            Ok(()) => println!("test k8s::{name} ... ok ({:.1?})", started.elapsed()),
            Err(_) => {
                println!("test k8s::{name} ... FAILED ({:.1?})", started.elapsed());
                failed.push(*name);
            }
        }
    }
    if !failed.is_empty() {
        support::print_logs(env.cluster());
    }
    drop(env);
    let name = cluster.name().to_string();
    drop(cluster);
    let left = weft_k8s_lab::cluster::leftovers(&name);
    if !left.is_empty() {
        println!("k8s tier: the teardown left behind: {left:#?}");
        failed.push("teardown");
    }
    if failed.is_empty() {
        println!("k8s tier: all passed in {:.1?}", start.elapsed());
        ExitCode::SUCCESS
    } else {
        println!("k8s tier: FAILED: {}", failed.join(", "));
        ExitCode::from(101)
    }
}
