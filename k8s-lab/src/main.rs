//! `weft-k8s-lab`: `make cluster` runs `weft-k8s-lab up`, a real single-node Kubernetes that
//! stays up until Ctrl-C and then removes everything it made.

use std::{process::ExitCode, time::Instant};

use signal_hook::{
    consts::{SIGINT, SIGTERM},
    iterator::Signals,
};
use weft_k8s_lab::{Cluster, ClusterOptions};

const USAGE: &str = "usage: weft-k8s-lab up [--once] [--no-dns]
  up        start a single-node cluster in its own network namespace and keep it running
            until Ctrl-C (or SIGTERM), then remove everything it made
  --once    start it, print what `up` prints, and tear it down again (a start-up check)
  --no-dns  do not start CoreDNS";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, flags)) = args.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(64);
    };
    if command != "up" {
        eprintln!("weft-k8s-lab: unknown command {command:?}\n{USAGE}");
        return ExitCode::from(64);
    }
    let mut once = false;
    let mut options = ClusterOptions {
        verbose: true,
        ..ClusterOptions::default()
    };
    for flag in flags {
        match flag.as_str() {
            "--once" => once = true,
            "--no-dns" => options.skip_dns = true,
            other => {
                eprintln!("weft-k8s-lab: unknown flag {other:?}\n{USAGE}");
                return ExitCode::from(64);
            }
        }
    }
    match up(&options, once) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft-k8s-lab: {e}");
            ExitCode::from(1)
        }
    }
}

fn up(options: &ClusterOptions, once: bool) -> anyhow::Result<()> {
    // Handlers from the start (a shell that started us in the background may have SIGINT
    // ignored): a signal during the start-up is taken once the start ends, then the cluster
    // is removed. Started programs get default dispositions back on exec.
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    let start = Instant::now();
    let cluster = Cluster::start(options)?;
    let took = start.elapsed();
    let kubectl = cluster.kubectl();
    println!(
        "\nThe cluster is up ({took:.1?}); node namespace {}.",
        cluster.name()
    );
    println!("  state, logs and PKI: {}", cluster.dir().display());
    println!("  kubeconfig (admin):  {}", kubectl.kubeconfig().display());
    println!(
        "  its kubectl, run from this machine (the API server is only inside the node namespace):"
    );
    println!("    {} get pods -A", kubectl.command_line());
    println!("\nStart-up, step by step:");
    for (step, took) in &cluster.start_times().steps {
        println!("  {step:<28} {took:>8.1?}");
    }
    println!("\nResident memory now:");
    for (component, kib) in cluster.memory() {
        println!("  {component:<28} {:>6.1} MiB", kib as f64 / 1024.0);
    }
    if once {
        println!("\n--once: tearing down");
        return Ok(());
    }
    println!("\nCtrl-C removes the cluster.");
    if let Some(signal) = signals.forever().next() {
        let name = if signal == SIGINT {
            "SIGINT"
        } else {
            "SIGTERM"
        };
        println!("\n{name}: removing the cluster");
    }
    drop(cluster);
    Ok(())
}
