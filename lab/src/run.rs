//! [`LabRun`]: a folder of Kubernetes YAML running as a live mesh, what `weftctl lab up` drives.
//!
//! It reads the folder ([`crate::folder`]), starts a [`Cluster`] whose control plane reads the
//! YAML [`folder::render_for_control_plane`] makes, starts each pod at its address with its
//! proxy when meshed and a [`weft_echo::Echo`] on each port (one tokio runtime of two threads
//! serves every pod's echo app, through listeners made inside the pods' namespaces), and
//! registers itself ([`crate::registry`]). [`LabRun::poll`] applies the folder's edits: pods
//! removed, rebuilt and added, the control plane's YAML rewritten before new proxies ask.
//! While the folder refuses a document, the last good set keeps running.
//!
//! Dropping it (also on panic) stops the echo apps, every pod (proxy, CNI `DEL`, namespace),
//! the control plane and the node, and removes its registry entry.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, SystemTime},
};

use tokio_util::sync::CancellationToken;
use weft_echo::{Echo, EchoIdentity};

use crate::{
    error::{Error, Result},
    folder::{self, Addresses, DocError, Folder, Key, LabPod},
    registry::{LabEntry, PodEntry, Registry},
    services, Cluster, ClusterOptions, Pod, PodSpec,
};

/// What a run reports as it goes, for its caller to print.
#[derive(Debug)]
pub enum Event {
    /// A document the lab cannot use: file, document, field, reason.
    Refused(DocError),
    /// Where the lab did otherwise than a document says.
    Note(DocError),
    /// The folder refuses documents: its edits wait, the last good set runs on.
    Held { refused: usize },
    /// An edit was applied.
    Applied {
        added: usize,
        removed: usize,
        rebuilt: usize,
        running: usize,
    },
    /// A pod of an edit could not be started (the others were).
    PodFailed { pod: Key, error: String },
    /// The folder could not be read at all (moved, unreadable): the lab runs on as it is.
    Unreadable(String),
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

type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

/// One running lab. Dropping it removes everything it made.
pub struct LabRun {
    registry: Registry,
    dir: PathBuf,
    folder: Folder,
    entry: LabEntry,
    seen: Fingerprint,
    // Dropped in `Drop::drop`, in this order.
    pods: BTreeMap<Key, Running>,
    cluster: Option<Cluster>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for LabRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabRun")
            .field("entry", &self.entry)
            .finish_non_exhaustive()
    }
}

impl LabRun {
    /// Reads `dir` and starts everything it describes, registered as `name` in `registry`.
    /// Stops starting pods (and returns what runs) once `stop` is set.
    pub fn start(
        registry: Registry,
        name: &str,
        dir: &Path,
        stop: &AtomicBool,
        events: &mut dyn FnMut(Event),
    ) -> Result<LabRun> {
        LabRun::start_with(registry, name, dir, stop, events, Vec::new())
    }

    /// [`LabRun::start`], with `proxy_env` given to every meshed pod's proxy (under the
    /// settings of the pod's own annotations): the demo's `WEFT_TRACE_COLLECTOR`.
    pub fn start_with(
        registry: Registry,
        name: &str,
        dir: &Path,
        stop: &AtomicBool,
        events: &mut dyn FnMut(Event),
        proxy_env: Vec<(String, String)>,
    ) -> Result<LabRun> {
        let dir = dir
            .canonicalize()
            .map_err(Error::io(format!("the folder {}", dir.display())))?;
        let seen = fingerprint(&dir);
        let folder = folder::read(&dir, &Addresses::default())?;
        report(&folder, events);
        let cluster = Cluster::with_options(ClusterOptions {
            external_config: true,
            proxy_env,
            ..ClusterOptions::default()
        })?;
        cluster.write_config(&folder::render_for_control_plane(&folder)?)?;
        services::prepare(cluster.node())?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("echo")
            .enable_all()
            .build()
            .map_err(Error::io("start the echo apps' runtime"))?;
        let entry = LabEntry {
            name: name.to_string(),
            pid: std::process::id(),
            folder: dir.clone(),
            node: cluster.node().name().to_string(),
            dir: cluster.dir().to_path_buf(),
            pods: Vec::new(),
        };
        let mut run = LabRun {
            registry,
            dir,
            folder,
            entry,
            seen,
            pods: BTreeMap::new(),
            cluster: Some(cluster),
            runtime: Some(runtime),
        };
        // From here on, an error drops `run`, which removes what was made.
        let pods: Vec<LabPod> = run.folder.pods.values().cloned().collect();
        for lab_pod in &pods {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let running = run.start_pod(lab_pod)?;
            run.pods.insert(lab_pod.key(), running);
        }
        services::apply(run.cluster().node(), &run.folder)?;
        run.write_hosts()?;
        run.save()?;
        Ok(run)
    }

    /// The lab's registry entry: its pods with their namespaces, addresses and identities.
    pub fn entry(&self) -> &LabEntry {
        &self.entry
    }

    /// The folder in force (the last good set).
    pub fn folder(&self) -> &Folder {
        &self.folder
    }

    /// The cluster underneath.
    pub fn cluster(&self) -> &Cluster {
        self.cluster
            .as_ref()
            .unwrap_or_else(|| unreachable!("a running lab has its cluster"))
    }

    /// Applies the folder's edits since the last call, if any.
    pub fn poll(&mut self, events: &mut dyn FnMut(Event)) -> Result<()> {
        let now = fingerprint(&self.dir);
        if now == self.seen {
            return Ok(());
        }
        self.seen = now;
        let next = match folder::read(&self.dir, &self.folder.addresses()) {
            Ok(next) => next,
            Err(e) => {
                events(Event::Unreadable(e.to_string()));
                return Ok(());
            }
        };
        report(&next, events);
        if !next.is_whole() {
            // Applying the usable rest would drop (or unmesh) the pods of a Deployment or
            // Namespace whose document just broke.
            events(Event::Held {
                refused: next.refused.len(),
            });
            return Ok(());
        }
        let change = folder::diff(&self.folder, &next);
        if change.is_empty() {
            return Ok(());
        }
        let rebuild: Vec<Key> = change
            .pods_changed
            .iter()
            .filter(|c| c.needs_restart())
            .map(|c| c.key.clone())
            .collect();
        for key in change.pods_removed.iter().chain(&rebuild) {
            self.pods.remove(key);
        }
        // The control plane learns of new and changed pods before their proxies ask.
        self.cluster()
            .write_config(&folder::render_for_control_plane(&next)?)?;
        self.folder = next;
        for key in change.pods_added.iter().chain(&rebuild) {
            let Some(lab_pod) = self.folder.pods.get(key).cloned() else {
                continue;
            };
            match self.start_pod(&lab_pod) {
                Ok(running) => {
                    self.pods.insert(key.clone(), running);
                }
                Err(e) => events(Event::PodFailed {
                    pod: key.clone(),
                    error: e.to_string(),
                }),
            }
        }
        services::apply(self.cluster().node(), &self.folder)?;
        self.write_hosts()?;
        self.save()?;
        events(Event::Applied {
            added: change.pods_added.len(),
            removed: change.pods_removed.len(),
            rebuilt: rebuild.len(),
            running: self.pods.len(),
        });
        Ok(())
    }

    /// Starts one pod: its network namespace on the bridge (at its address), its proxy when
    /// meshed (ready before this returns), and an echo app on each of its ports.
    fn start_pod(&self, lab_pod: &LabPod) -> Result<Running> {
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
            spec = spec
                .meshed()
                .proxy_env("WEFT_WORKLOAD", &lab_pod.workload());
            for (k, v) in &lab_pod.settings.env {
                spec = spec.proxy_env(k, v);
            }
        }
        let pod = self.cluster().pod(spec)?;
        let service = self
            .folder
            .services
            .values()
            .find(|s| s.selects(lab_pod))
            .map(|s| s.name().to_string());
        let echo = Echo::new(EchoIdentity {
            namespace: namespace.to_string(),
            pod: name.to_string(),
            service,
        });
        let token = CancellationToken::new();
        let runtime = self
            .runtime
            .as_ref()
            .unwrap_or_else(|| unreachable!("a running lab has its runtime"));
        let mut ports = Vec::new();
        for port in &lab_pod.ports {
            let listener = pod
                .netns()
                .listen(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port.port)))?;
            let (echo, stop) = (echo.clone(), token.clone());
            let what = format!("{namespace}/{name}:{}", port.port);
            runtime.spawn(async move {
                if let Err(e) = echo.serve_std(listener, stop.cancelled_owned()).await {
                    eprintln!("weft-lab: the echo app of {what} stopped: {e}");
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

    /// Writes the `/etc/hosts` of each namespace's pods for `weftctl lab exec`, each file
    /// renamed into place.
    fn write_hosts(&self) -> Result<()> {
        let namespaces: std::collections::BTreeSet<&str> = self
            .folder
            .pods
            .values()
            .map(LabPod::namespace)
            .chain(self.folder.namespaces.keys().map(String::as_str))
            .collect();
        for namespace in namespaces {
            let path = self.entry.hosts_file(namespace);
            let what = format!("the hosts file {}", path.display());
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(Error::io(what.clone()))?;
            }
            let staged = path.with_extension("new");
            std::fs::write(&staged, folder::hosts_file(&self.folder, namespace))
                .map_err(Error::io(what.clone()))?;
            std::fs::rename(&staged, &path).map_err(Error::io(what))?;
        }
        Ok(())
    }

    /// Writes the lab's registry entry from the running pods.
    fn save(&mut self) -> Result<()> {
        self.entry.pods = self
            .pods
            .iter()
            .map(|(key, running)| PodEntry {
                namespace: key.0.clone(),
                name: key.1.clone(),
                netns: running.pod.netns().name().to_string(),
                ip: running.pod.ip().to_string(),
                identity: self
                    .folder
                    .pods
                    .get(key)
                    .filter(|p| p.is_meshed())
                    .map(LabPod::spiffe_id),
                ports: running.ports.clone(),
                workload: self.folder.pods.get(key).map(LabPod::workload),
            })
            .collect();
        self.registry.save(&self.entry)
    }
}

impl Drop for LabRun {
    fn drop(&mut self) {
        self.pods.clear();
        self.cluster = None;
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(2));
        }
        self.registry.remove(&self.entry.name);
    }
}

/// Every YAML file's name, size and modification time: what changes when the folder is edited.
fn fingerprint(dir: &Path) -> Fingerprint {
    let mut files: Fingerprint = std::fs::read_dir(dir)
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

fn report(folder: &Folder, events: &mut dyn FnMut(Event)) {
    for e in &folder.refused {
        events(Event::Refused(e.clone()));
    }
    for e in &folder.notes {
        events(Event::Note(e.clone()));
    }
}
