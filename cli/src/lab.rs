//! `weftctl lab`: a folder of Kubernetes YAML run as a live mesh on this machine.
//!
//! - `lab up DIR`: (see [`up`]) the pods of the folder as network namespaces on the reference CNI
//!   bridge with `weft-cni` chained, the control plane in local mode on the folder, a proxy in
//!   each meshed pod and the echo app on each container port; edits apply live.
//! - `lab exec [-n NS] POD -- CMD...`: runs a command inside a pod's network namespace, as
//!   `kubectl exec` does (`curl` from a pod is the usual use).
//! - `lab status`: every running lab's pods, addresses, identities and readiness.
//! - `lab down`: stops a running lab (`up` removes everything it made, as on Ctrl-C).
//!
//! Running labs are found through `weft_lab::registry` (`/run/weft-lab/<name>.json`).

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::Command,
    sync::{atomic::AtomicBool, atomic::Ordering, Arc},
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context};
use tokio_util::sync::CancellationToken;
use weft_echo::{Echo, EchoIdentity};
use weft_lab::{
    folder::{self, Addresses, DocError, Folder, Key, LabPod},
    netns::Netns,
    registry::{LabEntry, PodEntry, Registry},
    Cluster, ClusterOptions, Pod, PodSpec,
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
    if !nix_is_root() {
        bail!("weftctl lab {what} needs root (network namespaces); run it with sudo");
    }
    Ok(())
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
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
    let err = Command::new("ip")
        .args(["netns", "exec", &entry.netns])
        .args(&args.command)
        .exec();
    Err(err).with_context(|| format!("run `ip netns exec {} ...`", entry.netns))
}

fn status(registry: &Registry, name: Option<&str>) -> anyhow::Result<()> {
    let labs = registry.list()?;
    let labs: Vec<&LabEntry> = labs
        .iter()
        .filter(|l| name.is_none_or(|n| l.name == n))
        .collect();
    if labs.is_empty() {
        println!("no lab is running; start one with `weftctl lab up DIR`");
        return Ok(());
    }
    for lab in labs {
        if !lab.is_running() {
            println!(
                "lab {}: stale (its process {} is gone; its entry {} can be removed)",
                lab.name,
                lab.pid,
                registry_file(lab)
            );
            continue;
        }
        println!(
            "lab {} (folder {}, process {}, node namespace {})",
            lab.name,
            lab.folder.display(),
            lab.pid,
            lab.node
        );
        println!(
            "{:<16} {:<28} {:<15} {:<8} IDENTITY",
            "NAMESPACE", "NAME", "IP", "READY"
        );
        for pod in &lab.pods {
            let ready = readiness(pod.identity.is_some(), &pod.netns, &pod.ports);
            println!(
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
    if !nix_is_root() {
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
    println!(
        "weftctl lab down: asked lab {} (process {}) to stop ...",
        lab.name, lab.pid
    );
    let start = Instant::now();
    while start.elapsed() < DOWN_PATIENCE {
        if !lab.is_running() {
            println!("weftctl lab down: lab {} removed", lab.name);
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

/// A pod of a running lab: the lab's pod (its namespace, veth, proxy) and its echo apps.
struct Running {
    pod: Pod,
    /// Stops the pod's echo servers.
    echo: CancellationToken,
    ports: Vec<u16>,
}

impl Drop for Running {
    fn drop(&mut self) {
        // The echo servers first: they hold listeners inside the pod's namespace.
        self.echo.cancel();
    }
}

/// `weftctl lab up DIR`.
fn up(registry: &Registry, args: &UpArgs) -> anyhow::Result<()> {
    if let Some(why) = weft_lab::prereq::missing() {
        bail!(
            "weftctl lab up cannot run here: {why}.\n\
             It needs root (network namespaces, iptables) and the Debian packages iptables, \
             iproute2, util-linux and containernetworking-plugins: run it with sudo \
             (`make deps` installs the packages)."
        );
    }
    if let Ok(running) = registry.find(Some(&args.name)) {
        bail!(
            "a lab named {} already runs (process {}); stop it with `weftctl lab down --lab {}` \
             or pick another --name",
            running.name,
            running.pid,
            running.name
        );
    }
    let dir = args
        .dir
        .canonicalize()
        .with_context(|| format!("the folder {}", args.dir.display()))?;
    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(stop.clone())?;

    let mut folder = folder::read(&dir, &Addresses::default())?;
    report(&folder);
    let cluster = Cluster::with_options(ClusterOptions {
        external_config: true,
        ..ClusterOptions::default()
    })
    .context("start the lab's node namespace")?;
    cluster.write_config(&folder::render_for_control_plane(&folder)?)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("echo")
        .enable_all()
        .build()
        .context("start the echo apps' runtime")?;
    let started = Instant::now();
    let mut pods: BTreeMap<Key, Running> = BTreeMap::new();
    for lab_pod in folder.pods.values() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let running = start_pod(&cluster, &runtime, &folder, lab_pod)?;
        pods.insert(lab_pod.key(), running);
    }
    let mut entry = LabEntry {
        name: args.name.clone(),
        pid: std::process::id(),
        folder: dir.clone(),
        node: cluster.node().name().to_string(),
        dir: cluster.dir().to_path_buf(),
        pods: Vec::new(),
    };
    let saved = save(registry, &mut entry, &folder, &pods);
    println!(
        "weftctl lab up: {} pods up in {:.1?} (lab {}, folder {})",
        pods.len(),
        started.elapsed(),
        args.name,
        dir.display()
    );
    let result = saved.and_then(|()| {
        print_pods(&entry);
        if args.once {
            return Ok(());
        }
        println!(
            "Edits to {} apply live. `weftctl lab exec POD -- CMD`, `weftctl lab status`; \
             Ctrl-C or `weftctl lab down` removes everything.",
            dir.display()
        );
        watch(
            registry,
            &cluster,
            &runtime,
            &stop,
            args,
            &dir,
            &mut folder,
            &mut pods,
            &mut entry,
        )
    });
    println!("weftctl lab up: removing lab {} ...", args.name);
    pods.clear();
    drop(cluster);
    runtime.shutdown_timeout(Duration::from_secs(2));
    registry.remove(&args.name);
    result
}

/// Polls the folder; applies each edit: pods removed, rebuilt or added, then the control plane's
/// YAML. While the folder refuses a document, the refusals are printed and the last good set
/// keeps running; the first whole read after that is applied. (At start there is no good set
/// yet: the lab runs what the folder's usable documents describe.)
#[allow(clippy::too_many_arguments)]
fn watch(
    registry: &Registry,
    cluster: &Cluster,
    runtime: &tokio::runtime::Runtime,
    stop: &AtomicBool,
    args: &UpArgs,
    dir: &Path,
    folder: &mut Folder,
    pods: &mut BTreeMap<Key, Running>,
    entry: &mut LabEntry,
) -> anyhow::Result<()> {
    let mut seen = fingerprint(dir);
    while !stop.load(Ordering::Relaxed) {
        sleep_unless(stop, args.poll);
        let now = fingerprint(dir);
        if now == seen {
            continue;
        }
        seen = now;
        let next = match folder::read(dir, &folder.addresses()) {
            Ok(next) => next,
            Err(e) => {
                eprintln!("weftctl lab up: {e}; keeping the lab as it is");
                continue;
            }
        };
        report(&next);
        if !next.is_whole() {
            // The last good set keeps running: applying the usable rest would drop (or
            // unmesh) the pods of a Deployment or Namespace whose document just broke.
            eprintln!(
                "weftctl lab up: {} document(s) refused; the lab keeps running the last good \
                 set until the folder reads whole again",
                next.refused.len()
            );
            continue;
        }
        let change = folder::diff(folder, &next);
        if change.is_empty() {
            continue;
        }
        let restart: Vec<Key> = change
            .pods_changed
            .iter()
            .filter(|c| c.needs_restart())
            .map(|c| c.key.clone())
            .collect();
        for key in change.pods_removed.iter().chain(&restart) {
            pods.remove(key);
        }
        // The control plane learns of new and changed pods before their proxies ask.
        cluster.write_config(&folder::render_for_control_plane(&next)?)?;
        for key in change.pods_added.iter().chain(&restart) {
            if let Some(lab_pod) = next.pods.get(key) {
                match start_pod(cluster, runtime, &next, lab_pod) {
                    Ok(running) => {
                        pods.insert(key.clone(), running);
                    }
                    Err(e) => eprintln!("weftctl lab up: pod {}/{}: {e:#}", key.0, key.1),
                }
            }
        }
        *folder = next;
        save(registry, entry, folder, pods)?;
        println!(
            "weftctl lab up: applied an edit: {} added, {} removed, {} rebuilt, {} pods running",
            change.pods_added.len(),
            change.pods_removed.len(),
            restart.len(),
            pods.len()
        );
    }
    Ok(())
}

/// Every YAML file's name, size and modification time: what changes when the folder is edited.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| {
                    e.path()
                        .extension()
                        .is_some_and(|x| x == "yaml" || x == "yml")
                })
                .filter_map(|e| {
                    let meta = e.metadata().ok()?;
                    Some((e.path(), meta.len(), meta.modified().ok()))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Starts one pod: its network namespace on the bridge (at its address), its proxy when meshed
/// (ready before this returns), and an echo app on each of its ports.
fn start_pod(
    cluster: &Cluster,
    runtime: &tokio::runtime::Runtime,
    folder: &Folder,
    lab_pod: &LabPod,
) -> anyhow::Result<Running> {
    let (namespace, name) = (lab_pod.namespace(), lab_pod.name());
    let mut spec = PodSpec::new(namespace, name)
        .service_account(lab_pod.service_account())
        .ip(lab_pod.ip)
        .without_app();
    for (k, v) in lab_pod.labels() {
        spec = spec.label(k, v);
    }
    for (k, v) in lab_pod.annotations() {
        if k.starts_with("weft.dev/") {
            spec = spec.annotation(k, v);
        }
    }
    if lab_pod.is_meshed() {
        spec = spec.meshed();
    }
    let pod = cluster
        .pod(spec)
        .with_context(|| format!("start pod {namespace}/{name}"))?;
    let service = folder
        .services
        .values()
        .filter(|s| s.namespace() == namespace)
        .find(|s| {
            s.selector().is_some_and(|sel| {
                !sel.is_empty() && sel.iter().all(|(k, v)| lab_pod.labels().get(k) == Some(v))
            })
        })
        .map(|s| s.name().to_string());
    let echo = Echo::new(EchoIdentity {
        namespace: namespace.to_string(),
        pod: name.to_string(),
        service,
    });
    let token = CancellationToken::new();
    let mut ports = Vec::new();
    for port in &lab_pod.ports {
        let listener = pod
            .netns()
            .listen(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port.port)))
            .with_context(|| format!("the echo app of {namespace}/{name} on port {}", port.port))?;
        let (echo, stop) = (echo.clone(), token.clone());
        runtime.spawn(async move {
            if let Err(e) = echo.serve_std(listener, stop.cancelled_owned()).await {
                eprintln!("weftctl lab up: an echo app stopped: {e}");
            }
        });
        ports.push(port.port);
    }
    Ok(Running {
        pod,
        echo: token,
        ports,
    })
}

/// Writes the lab's registry entry from the running pods.
fn save(
    registry: &Registry,
    entry: &mut LabEntry,
    folder: &Folder,
    pods: &BTreeMap<Key, Running>,
) -> anyhow::Result<()> {
    entry.pods = pods
        .iter()
        .map(|(key, running)| PodEntry {
            namespace: key.0.clone(),
            name: key.1.clone(),
            netns: running.pod.netns().name().to_string(),
            ip: running.pod.ip().to_string(),
            identity: folder
                .pods
                .get(key)
                .filter(|p| p.is_meshed())
                .map(LabPod::spiffe_id),
            ports: running.ports.clone(),
        })
        .collect();
    registry.save(entry)?;
    Ok(())
}

/// Prints what the folder refused and where the lab did otherwise than it says.
fn report(folder: &Folder) {
    let line = |what: &str, e: &DocError| {
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
    for e in &folder.refused {
        line("refused", e);
    }
    for e in &folder.notes {
        line("note", e);
    }
}

fn print_pods(entry: &LabEntry) {
    println!(
        "{:<16} {:<28} {:<15} {:<12} IDENTITY",
        "NAMESPACE", "NAME", "IP", "PORTS"
    );
    for pod in &entry.pods {
        let ports: Vec<String> = pod.ports.iter().map(u16::to_string).collect();
        println!(
            "{:<16} {:<28} {:<15} {:<12} {}",
            pod.namespace,
            pod.name,
            pod.ip,
            ports.join(","),
            pod.identity.as_deref().unwrap_or("- (not meshed)")
        );
    }
}
