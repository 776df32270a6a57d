//! `weftctl lab`: a folder of Kubernetes YAML run as a live mesh on this machine.
//!
//! - `lab up DIR`: (see [`up`]) the pods of the folder as network namespaces on the reference CNI
//!   bridge with `weft-cni` chained, the control plane in local mode on the folder, a proxy in
//!   each meshed pod and the echo app on each container port; edits apply live.
//! - `lab exec [-n NS] POD -- CMD...`: runs a command inside a pod's network namespace, as
//!   `kubectl exec` does (`curl` from a pod is the usual use), with Service names resolving as
//!   cluster DNS resolves them (`curl http://api/` from the Service's namespace,
//!   `api.shop.svc.cluster.local` from anywhere).
//! - `lab status`: every running lab's pods, addresses, identities and readiness.
//! - `lab down`: stops a running lab (`up` removes everything it made, as on Ctrl-C).
//!
//! Running labs are found through `weft_lab::registry` (`/run/weft-lab/<name>.json`).

use std::{
    net::{Ipv4Addr, SocketAddr},
    os::unix::process::CommandExt,
    path::PathBuf,
    process::Command,
    sync::{atomic::AtomicBool, atomic::Ordering, Arc},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use weft_lab::{
    folder::DocError,
    netns::Netns,
    registry::{LabEntry, Registry},
    run::{Event, LabRun},
};

use crate::demo::{sleep_unless, watch_signals};

/// The proxy's admin port inside a meshed pod, where `/ready` answers.
const ADMIN_PORT: u16 = 15190;
/// How long `lab down` waits for the lab to have removed everything.
const DOWN_PATIENCE: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Subcommand)]
pub(crate) enum LabCommand {
    /// Run the Kubernetes YAML in DIR as a live mesh until Ctrl-C (or `weftctl lab down`).
    Up(UpArgs),
    /// Run a command inside a pod's network namespace (as `kubectl exec`).
    Exec(ExecArgs),
    /// List the running labs' pods: address, identity, readiness.
    Status(LabName),
    /// Stop a running lab; it removes every namespace, process, rule and file it made.
    Down(LabName),
}

#[derive(Debug, clap::Args)]
pub(crate) struct UpArgs {
    /// The folder of Kubernetes YAML (`*.yaml`, `*.yml`; several documents per file).
    dir: PathBuf,
    /// The lab's name, for `exec`, `status` and `down` when several labs run.
    #[arg(long, default_value = "lab", value_parser = lab_name)]
    name: String,
    /// Start every pod, print the status, and remove everything again (for scripts and CI).
    #[arg(long)]
    once: bool,
    /// How often the folder is checked for edits.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    poll: Duration,
}

fn lab_name(name: &str) -> Result<String, String> {
    let ok = !name.is_empty()
        && name.len() <= 20
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(name.to_string())
    } else {
        Err("1 to 20 characters of a-z, 0-9 and '-'".into())
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct LabName {
    /// Which lab, when several run (`weftctl lab up --name`).
    #[arg(long = "lab")]
    lab: Option<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ExecArgs {
    #[command(flatten)]
    name: LabName,
    /// The pod's namespace.
    #[arg(short = 'n', long = "namespace", default_value = "default")]
    namespace: String,
    /// The pod (or NAMESPACE/POD).
    pod: String,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub(crate) fn run(command: LabCommand) -> anyhow::Result<()> {
    let registry = Registry::system();
    match command {
        LabCommand::Up(args) => up(&registry, &args),
        LabCommand::Exec(args) => exec(&registry, args),
        LabCommand::Status(name) => status(&registry, name.lab.as_deref()),
        LabCommand::Down(name) => down(&registry, name.lab.as_deref()),
    }
}

fn need_root(what: &str) -> anyhow::Result<()> {
    if !is_root() {
        bail!("weftctl lab {what} needs root (network namespaces); run it with sudo");
    }
    Ok(())
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

fn exec(registry: &Registry, args: ExecArgs) -> anyhow::Result<()> {
    need_root("exec")?;
    let lab = registry.find(args.name.lab.as_deref())?;
    let (namespace, pod) = match args.pod.split_once('/') {
        Some((ns, pod)) => (ns.to_string(), pod.to_string()),
        None => (args.namespace.clone(), args.pod.clone()),
    };
    let Some(entry) = lab.pod(&namespace, &pod) else {
        let known: Vec<String> = lab
            .pods
            .iter()
            .map(|p| format!("{}/{}", p.namespace, p.name))
            .collect();
        bail!(
            "lab {} has no pod {namespace}/{pod}; its pods: {}",
            lab.name,
            known.join(", ")
        );
    };
    // Checked before exec, for a clear error rather than ip's.
    Netns::attach(&entry.netns)?;
    let mut command = Command::new("ip");
    command.args(["netns", "exec", &entry.netns]);
    let hosts = lab.hosts_file(&namespace);
    if hosts.is_file() {
        // `ip netns exec` runs the command in a mount namespace of its own (mounts do not
        // propagate back), where the pod's hosts file covers /etc/hosts: Service names resolve
        // as cluster DNS would resolve them, and nothing is written under /etc.
        command
            .args(["sh", "-c", r#"mount --bind "$0" /etc/hosts && exec "$@""#])
            .arg(&hosts);
    }
    let err = command.args(&args.command).exec();
    Err(err).with_context(|| format!("run `ip netns exec {} ...`", entry.netns))
}

fn status(registry: &Registry, name: Option<&str>) -> anyhow::Result<()> {
    let labs = registry.list()?;
    let labs: Vec<&LabEntry> = labs
        .iter()
        .filter(|l| name.is_none_or(|n| l.name == n))
        .collect();
    if labs.is_empty() {
        say!("no lab is running; start one with `weftctl lab up DIR`");
        return Ok(());
    }
    for lab in labs {
        if !lab.is_running() {
            say!(
                "lab {}: stale (its process {} is gone; its entry {} can be removed)",
                lab.name,
                lab.pid,
                registry_file(lab)
            );
            continue;
        }
        say!(
            "lab {} (folder {}, process {}, node namespace {})",
            lab.name,
            lab.folder.display(),
            lab.pid,
            lab.node
        );
        say!(
            "{:<16} {:<28} {:<15} {:<8} IDENTITY",
            "NAMESPACE",
            "NAME",
            "IP",
            "READY"
        );
        for pod in &lab.pods {
            let ready = readiness(pod.identity.is_some(), &pod.netns, &pod.ports);
            say!(
                "{:<16} {:<28} {:<15} {:<8} {}",
                pod.namespace,
                pod.name,
                pod.ip,
                ready,
                pod.identity.as_deref().unwrap_or("- (not meshed)")
            );
        }
    }
    Ok(())
}

fn registry_file(lab: &LabEntry) -> String {
    format!("{}/{}.json", weft_lab::registry::REGISTRY_DIR, lab.name)
}

/// `yes` when a meshed pod's proxy answers `/ready` with 200 (an unmeshed pod: when its first
/// port accepts a connection); `no` otherwise; `?` without root.
fn readiness(meshed: bool, netns: &str, ports: &[u16]) -> &'static str {
    if !is_root() {
        return "?";
    }
    let Ok(ns) = Netns::attach(netns) else {
        return "gone";
    };
    let localhost = |port: u16| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let ok = if meshed {
        weft_lab::http::get(&ns, localhost(ADMIN_PORT), "localhost", "/ready")
            .is_ok_and(|r| r.status == 200)
    } else {
        ports
            .first()
            .is_some_and(|port| ns.connect(localhost(*port), Duration::from_secs(1)).is_ok())
    };
    if ok {
        "yes"
    } else {
        "no"
    }
}

fn down(registry: &Registry, name: Option<&str>) -> anyhow::Result<()> {
    need_root("down")?;
    let lab = registry.find(name)?;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(lab.pid).context("the lab's PID")?);
    // `find` checked that this PID is still a `weftctl lab up`.
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
        .with_context(|| format!("signal the lab's process {}", lab.pid))?;
    say!(
        "weftctl lab down: asked lab {} (process {}) to stop ...",
        lab.name,
        lab.pid
    );
    let start = Instant::now();
    while start.elapsed() < DOWN_PATIENCE {
        if !lab.is_running() {
            say!("weftctl lab down: lab {} removed", lab.name);
            return Ok(());
        }
        thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "lab {} (process {}) did not stop within {DOWN_PATIENCE:?}",
        lab.name,
        lab.pid
    )
}

/// `weftctl lab up`.
fn up(registry: &Registry, args: &UpArgs) -> anyhow::Result<()> {
    if let Some(why) = weft_lab::prereq::missing() {
        bail!(
            "weftctl lab up cannot run here: {why}.\n\
             It needs root (network namespaces, iptables) and the Debian packages iptables, \
             iproute2, util-linux and containernetworking-plugins: run it with sudo \
             (`make deps` installs the packages)."
        );
    }
    sweep(registry);
    if let Ok(running) = registry.find(Some(&args.name)) {
        bail!(
            "a lab named {} already runs (process {}); stop it with `weftctl lab down --lab {}` \
             or pick another --name",
            running.name,
            running.pid,
            running.name
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(stop.clone())?;
    let started = Instant::now();
    let mut run = LabRun::start(
        registry.clone(),
        &args.name,
        &args.dir,
        &stop,
        &mut print_event,
    )
    .with_context(|| format!("start the lab on {}", args.dir.display()))?;
    say!(
        "weftctl lab up: {} pods up in {:.1?} (lab {}, folder {})",
        run.entry().pods.len(),
        started.elapsed(),
        args.name,
        run.entry().folder.display()
    );
    print_pods(run.entry());
    let mut result = Ok(());
    if !args.once {
        say!(
            "Edits to {} apply live. `weftctl lab exec POD -- CMD`, `weftctl lab status`; \
             Ctrl-C or `weftctl lab down` removes everything.",
            run.entry().folder.display()
        );
        while !stop.load(Ordering::Relaxed) {
            sleep_unless(&stop, args.poll);
            if let Err(e) = run.poll(&mut print_event) {
                result = Err(e.into());
                break;
            }
        }
    }
    say!("weftctl lab up: removing lab {} ...", args.name);
    drop(run);
    result
}

/// Removes what labs killed outright left behind, saying so.
pub(crate) fn sweep(registry: &Registry) {
    match registry.sweep_stale() {
        Ok(swept) => {
            for name in swept {
                say!("weftctl: removed what the stopped lab {name} left behind");
            }
        }
        Err(e) => eprintln!("weftctl: could not check for stopped labs: {e}"),
    }
}

/// Prints what a run reports.
pub(crate) fn print_event(event: Event) {
    let doc = |what: &str, e: &DocError| {
        eprintln!(
            "weftctl lab up: {what}: {} document {}{}: {}",
            e.file.display(),
            e.document,
            if e.field.is_empty() {
                String::new()
            } else {
                format!(", field {}", e.field)
            },
            e.reason
        );
    };
    match event {
        Event::Refused(e) => doc("refused", &e),
        Event::Note(e) => doc("note", &e),
        Event::Held { refused } => eprintln!(
            "weftctl lab up: {refused} document(s) refused; the lab keeps running the last good \
             set until the folder reads whole again"
        ),
        Event::Applied {
            added,
            removed,
            rebuilt,
            running,
        } => say!(
            "weftctl lab up: applied an edit: {added} added, {removed} removed, {rebuilt} \
             rebuilt, {running} pods running"
        ),
        Event::Unreadable(why) => {
            eprintln!("weftctl lab up: {why}; the lab runs on as it is");
        }
        Event::PodFailed { pod, error } => {
            eprintln!("weftctl lab up: pod {}/{}: {error}", pod.0, pod.1);
        }
    }
}

fn print_pods(entry: &LabEntry) {
    say!(
        "{:<16} {:<28} {:<15} {:<12} IDENTITY",
        "NAMESPACE",
        "NAME",
        "IP",
        "PORTS"
    );
    for pod in &entry.pods {
        let ports: Vec<String> = pod.ports.iter().map(u16::to_string).collect();
        say!(
            "{:<16} {:<28} {:<15} {:<12} {}",
            pod.namespace,
            pod.name,
            pod.ip,
            ports.join(","),
            pod.identity.as_deref().unwrap_or("- (not meshed)")
        );
    }
}
