//! `weft-k8s-lab`: `make cluster` runs `weft-k8s-lab up`, a real single-node Kubernetes that
//! stays up until Ctrl-C and then removes everything it made.

use std::{path::PathBuf, process::ExitCode, time::Instant};

use signal_hook::{
    consts::{SIGINT, SIGTERM},
    iterator::Signals,
};
use weft_k8s_lab::{weft, Cluster, ClusterOptions};

const USAGE: &str = "usage: weft-k8s-lab up [--once] [--no-dns]
       weft-k8s-lab images [--bin-dir DIR] [--out DIR] [--tag TAG]
  up        start a single-node cluster in its own network namespace and keep it running
            until Ctrl-C (or SIGTERM), then remove everything it made
  --once    start it, print what `up` prints, and tear it down again (a start-up check)
  --no-dns  do not start CoreDNS
  images    write Weft's images (weft-proxy, weft-control-plane, weft-injector, weft-init,
            weftctl) as OCI archives OUT/<name>-<TAG>.tar from the binaries in DIR (default:
            this program's directory; OUT: DIR/images; TAG: Weft's version)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, flags)) = args.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(64);
    };
    if command == "images" {
        return images(flags);
    }
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

/// `images`: the product images as archives, for `make images`.
fn images(flags: &[String]) -> ExitCode {
    let mut bin_dir = None;
    let mut out = None;
    let mut tag = env!("CARGO_PKG_VERSION").to_string();
    let mut flags = flags.iter();
    while let Some(flag) = flags.next() {
        let Some(value) = flags.next() else {
            eprintln!("weft-k8s-lab images: {flag} needs a value\n{USAGE}");
            return ExitCode::from(64);
        };
        match flag.as_str() {
            "--bin-dir" => bin_dir = Some(PathBuf::from(value)),
            "--out" => out = Some(PathBuf::from(value)),
            "--tag" => tag = value.clone(),
            other => {
                eprintln!("weft-k8s-lab images: unknown flag {other:?}\n{USAGE}");
                return ExitCode::from(64);
            }
        }
    }
    let result = (|| -> anyhow::Result<()> {
        let bin_dir = match bin_dir {
            Some(dir) => dir,
            None => weft::build_dir()?,
        };
        let out = out.unwrap_or_else(|| bin_dir.join("images"));
        std::fs::create_dir_all(&out)?;
        let work = tempfile::tempdir()?;
        for image in weft::PRODUCT_IMAGES {
            let archive = out.join(format!("{}-{tag}.tar", image.repository));
            let digest = image
                .build(&bin_dir, work.path(), &tag)?
                .write_archive(&archive)?;
            let size = std::fs::metadata(&archive)?.len();
            println!(
                "{}  {digest}  {:.1} MiB  {}",
                image.reference(&tag),
                size as f64 / (1024.0 * 1024.0),
                archive.display()
            );
        }
        println!(
            "\nLoad them where your nodes' runtime reads them: `ctr -n k8s.io images import FILE` \
             (containerd), `podman load -i FILE`, or push them with `skopeo copy oci-archive:FILE \
             docker://REGISTRY/NAME:{tag}`; then install with --set image.registry=REGISTRY."
        );
        Ok(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft-k8s-lab images: {e:#}");
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
