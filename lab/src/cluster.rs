//! A one-node cluster: the node's namespace with the bridge, pods attached through CNI, the
//! control plane reading the pods' YAML, and a proxy in every meshed pod.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    thread,
    time::Duration,
};

use serde_json::json;

use weft_metrics_text::Metrics;

use crate::{
    app::{self, App, EchoReply},
    bins::Binaries,
    capture::Capture,
    cni::{self, Attachment, NetworkList, Runtime, CNI_VERSION},
    control_plane::ControlPlane,
    error::{Error, Result},
    http::{self, HttpReply},
    netns::{self, Netns},
    pki::{self, Pki},
    prereq::REFERENCE_PLUGIN_DIR,
    process::Daemon,
    redirect::{self, Redirect, ADMIN_PORT, PROXY_UID},
    spec::{PodDoc, PodSpec, Service, ServiceDoc, ServiceSpec},
    wait,
};

/// The pods' subnet, on the node's bridge.
pub const POD_SUBNET: &str = "198.18.0.0/24";
/// The pod subnet's broadcast address.
const POD_BROADCAST: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 255);
/// The bridge's address: the pods' gateway, where the control plane listens.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// Service cluster IPs come from 198.19.0.0/24, starting here.
pub(crate) const FIRST_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 10);
/// The bridge in the node's namespace.
pub const BRIDGE: &str = "weft-br0";
/// The network list's name.
pub const NETWORK: &str = "weft-lab";

/// How long a proxy may take to answer `/ready`, and the control plane to apply new YAML.
const READY_PATIENCE: Duration = Duration::from_secs(15);
const CONFIG_PATIENCE: Duration = Duration::from_secs(10);

/// How a cluster is built.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Who installs meshed pods' redirection rules.
    pub redirect: Redirect,
    /// Who writes the control plane's config folder: the cluster, from its pods and Services
    /// (`false`), or its user, with [`Cluster::write_config`] (`true`: `weftctl lab up`, which
    /// hands the control plane the user's own YAML).
    pub external_config: bool,
    /// `WEFT_*` settings for every meshed pod's proxy, under each pod's own
    /// ([`PodSpec::proxy_env`]): e.g. `WEFT_TRACE_COLLECTOR` for the demo's Jaeger.
    pub proxy_env: Vec<(String, String)>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            redirect: Redirect::WeftCni,
            external_config: false,
            proxy_env: Vec::new(),
        }
    }
}

/// A one-node cluster. Cheap to clone (a handle); torn down when the last handle and the last
/// [`Pod`] are gone: the control plane is killed, then the node's namespace (with the bridge)
/// and the temp dir are deleted.
#[derive(Debug, Clone)]
pub struct Cluster {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    prefix: String,
    bins: Binaries,
    pki: Pki,
    redirect: Redirect,
    external_config: bool,
    proxy_env: Vec<(String, String)>,
    runtime: Runtime,
    network: NetworkList,
    config_dir: PathBuf,
    cni_log: PathBuf,
    // Dropped in this order, after `Drop::drop` stopped the control plane.
    node: Netns,
    dir: tempfile::TempDir,
}

#[derive(Debug, Default)]
struct State {
    control_plane: Option<ControlPlane>,
    pods: BTreeMap<(String, String), PodDoc>,
    services: BTreeMap<(String, String), ServiceDoc>,
    written: String,
    next_service_ip: u32,
}

impl Cluster {
    /// A cluster with the default options (`weft-cni` redirects meshed pods).
    pub fn start() -> Result<Cluster> {
        Cluster::with_options(ClusterOptions::default())
    }

    /// Creates the node namespace and the cluster's temp dir, PKI and network list.
    pub fn with_options(options: ClusterOptions) -> Result<Cluster> {
        let bins = Binaries::locate()?;
        let mut plugin_dirs = Vec::new();
        let prefix = netns::unique_prefix();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{prefix}-"))
            .tempdir()
            .map_err(Error::io("create the cluster's temp dir"))?;
        // The proxies (UID 2121) read their token and the anchors below it.
        pki::set_mode(dir.path(), 0o755)?;
        let cni_log = dir.path().join("weft-cni.log");
        let mut plugins = vec![bridge_entry(&dir.path().join("ipam"))];
        if options.redirect == Redirect::WeftCni {
            // Only weft-cni in a private plugin directory, ahead of the reference plugins.
            let bin_dir = dir.path().join("cni-bin");
            std::fs::create_dir(&bin_dir).map_err(Error::io("create the CNI plugin dir"))?;
            symlink(bins.cni()?, bin_dir.join("weft-cni"))
                .map_err(Error::io("link weft-cni into the CNI plugin dir"))?;
            plugin_dirs.push(bin_dir);
            plugins.push(redirect::weft_cni_entry(&cni_log));
        }
        plugin_dirs.push(PathBuf::from(REFERENCE_PLUGIN_DIR));
        let network = NetworkList {
            name: NETWORK.into(),
            cni_version: CNI_VERSION.into(),
            plugins,
        };
        let config_dir = dir.path().join("config");
        std::fs::create_dir(&config_dir).map_err(Error::io("create the config dir"))?;
        pki::write(&config_dir.join("cluster.yaml"), "", 0o644)?;
        // The list as a runtime would keep it in /etc/cni/net.d, for whoever debugs a failure.
        pki::write(
            &dir.path().join("weft-lab.conflist"),
            &serde_json::to_string_pretty(&network.to_json()).unwrap_or_default(),
            0o644,
        )?;
        let pki = Pki::create(dir.path())?;
        let node = Netns::create(&format!("{prefix}-node"))?;
        let runtime = Runtime {
            plugin_dirs,
            exec_in: node.name().into(),
        };
        Ok(Cluster {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                prefix,
                bins,
                pki,
                redirect: options.redirect,
                external_config: options.external_config,
                proxy_env: options.proxy_env,
                runtime,
                network,
                config_dir,
                cni_log,
                node,
                dir,
            }),
        })
    }

    /// The node's namespace (the bridge, the pods' host-side veths, the control plane).
    pub fn node(&self) -> &Netns {
        &self.shared.node
    }

    /// The cluster's temp dir: logs, PKI, config folder, IPAM state, captures.
    pub fn dir(&self) -> &Path {
        self.shared.dir.path()
    }

    /// The Weft binaries the lab runs.
    pub fn binaries(&self) -> &Binaries {
        &self.shared.bins
    }

    /// Who redirects meshed pods.
    pub fn redirect(&self) -> Redirect {
        self.shared.redirect
    }

    /// Creates a pod: its namespace, attached through CNI (loopback, then the network list),
    /// written into the config, its app started, and, when meshed, its proxy started and
    /// ready.
    pub fn pod(&self, spec: PodSpec) -> Result<Pod> {
        spec.validate()?;
        let s = &self.shared;
        let key = (spec.namespace.clone(), spec.name.clone());
        if lock(&s.state).pods.contains_key(&key) {
            return Err(Error::Invalid {
                what: "pod",
                value: format!("{}/{}", spec.namespace, spec.name),
                reason: "already exists in this cluster",
            });
        }
        let ns = Netns::create(&format!("{}-{}-{}", s.prefix, spec.namespace, spec.name))?;
        let container_id = pki::random_hex(32)?;
        let mut plugin_args = Vec::new();
        if s.redirect == Redirect::WeftCni {
            plugin_args.push((
                "weft-cni".to_string(),
                redirect::weft_cni_args(&spec.annotations),
            ));
        }
        let attachment = Attachment {
            container_id: container_id.clone(),
            netns: ns.path(),
            ifname: "eth0".into(),
            cni_args: [
                ("IgnoreUnknown".to_string(), "1".to_string()),
                ("K8S_POD_NAMESPACE".into(), spec.namespace.clone()),
                ("K8S_POD_NAME".into(), spec.name.clone()),
                ("K8S_POD_INFRA_CONTAINER_ID".into(), container_id),
            ]
            .into_iter()
            // host-local takes a requested address from CNI_ARGS `IP`.
            .chain(spec.ip.map(|ip| ("IP".to_string(), ip.to_string())))
            .collect(),
            plugin_args,
        };
        let mut pod = Pod {
            cluster: self.clone(),
            spec,
            ip: Ipv4Addr::UNSPECIFIED,
            attachment,
            loopback: false,
            attached: None,
            registered: false,
            app: None,
            proxy: None,
            netns: Some(ns),
        };
        // From here on, an error drops `pod`, which undoes what was done.
        let lo = Attachment {
            ifname: "lo".into(),
            ..pod.attachment.clone()
        };
        s.runtime.add(&cni::loopback_list(), &lo)?;
        pod.loopback = true;
        // A failed ADD leaves `attached` empty: DEL then runs without a prevResult, which the
        // spec requires plugins to cope with.
        let result = s.runtime.add(&s.network, &pod.attachment)?;
        pod.attached = Some(result.clone());
        pod.ip = cni::result_ipv4(&result)
            .map(|(ip, _)| ip)
            .ok_or_else(|| Error::CniProtocol {
                plugin: "bridge".into(),
                command: "ADD".into(),
                problem: "the result has no IPv4 address".into(),
                output: result.to_string(),
                stderr: String::new(),
            })?;
        let meshed = pod.spec.is_meshed();
        if meshed && s.redirect == Redirect::WeftInit {
            redirect::run_weft_init(pod.netns(), s.bins.init()?, &pod.spec.annotations)?;
        }
        {
            let mut state = lock(&s.state);
            state.pods.insert(
                key,
                PodDoc {
                    spec: pod.spec.clone(),
                    ip: pod.ip,
                },
            );
        }
        pod.registered = true;
        self.ensure_control_plane()?;
        self.sync()?;
        if pod.spec.app {
            pod.app = Some(App::start(pod.netns(), &pod.spec.name)?);
        }
        if meshed {
            pod.start_proxy()?;
        }
        Ok(pod)
    }

    /// Adds a Service with the next free cluster IP from 198.19.0.0/24; its endpoints are the
    /// pods its selector picks, now and as pods come and go.
    pub fn service(&self, spec: ServiceSpec) -> Result<Service> {
        spec.validate()?;
        let service = {
            let mut state = lock(&self.shared.state);
            let key = (spec.namespace.clone(), spec.name.clone());
            if state.services.contains_key(&key) {
                return Err(Error::Invalid {
                    what: "service",
                    value: format!("{}/{}", spec.namespace, spec.name),
                    reason: "already exists in this cluster",
                });
            }
            let n = state.next_service_ip;
            if n > 240 {
                return Err(Error::Exhausted {
                    pool: "198.19.0.0/24",
                });
            }
            state.next_service_ip += 1;
            let service = Service {
                namespace: spec.namespace,
                name: spec.name,
                cluster_ip: Ipv4Addr::from(u32::from(FIRST_SERVICE_IP) + n),
                ports: spec.ports,
            };
            state.services.insert(
                key,
                ServiceDoc {
                    service: service.clone(),
                    selector: spec.selector,
                },
            );
            service
        };
        self.sync()?;
        Ok(service)
    }

    /// Starts `tcpdump` on the bridge (in the node's namespace), writing `<dir>/<name>.pcap`.
    pub fn capture(&self, name: &str) -> Result<Capture> {
        Capture::start(self.node(), BRIDGE, POD_BROADCAST, self.dir(), name)
    }

    /// The control plane's `/metrics`.
    pub fn control_plane_metrics(&self) -> Result<Metrics> {
        let state = lock(&self.shared.state);
        let cp = state.control_plane.as_ref().ok_or(Error::Invalid {
            what: "control plane",
            value: String::new(),
            reason: "not started: the cluster has no pod yet",
        })?;
        cp.metrics(self.node())
    }

    /// The control plane's log so far.
    pub fn control_plane_log(&self) -> String {
        lock(&self.shared.state)
            .control_plane
            .as_ref()
            .map(ControlPlane::log)
            .unwrap_or_default()
    }

    /// What `weft-cni` logged so far.
    pub fn weft_cni_log(&self) -> String {
        std::fs::read_to_string(&self.shared.cni_log).unwrap_or_default()
    }

    /// The YAML the control plane reads.
    pub fn config_yaml(&self) -> String {
        lock(&self.shared.state).written.clone()
    }

    /// Starts the control plane once the bridge (and so its address) exists.
    fn ensure_control_plane(&self) -> Result<()> {
        let s = &self.shared;
        let mut state = lock(&s.state);
        if state.control_plane.is_none() {
            let log = s.dir.path().join("control-plane.log");
            state.control_plane = Some(ControlPlane::start(
                &s.node,
                &s.bins,
                &s.pki,
                &s.config_dir,
                GATEWAY,
                &log,
            )?);
        }
        Ok(())
    }

    /// Writes the config folder from the current pods and Services and, when it changed and
    /// the control plane runs, waits until the control plane has applied it. With an external
    /// config, the user writes the folder ([`Cluster::write_config`]) and this does nothing.
    fn sync(&self) -> Result<()> {
        let s = &self.shared;
        if s.external_config {
            return Ok(());
        }
        let yaml = {
            let state = lock(&s.state);
            crate::spec::render(state.pods.values(), state.services.values())
        };
        self.apply_config("cluster.yaml", yaml)
    }

    /// The folder the control plane reads (in local mode, reloaded on change).
    pub fn config_dir(&self) -> &Path {
        &self.shared.config_dir
    }

    /// Writes `yaml` as the control plane's config (the folder's one file, replaced whole)
    /// and, when the control plane runs, waits until it has applied the change; otherwise the
    /// control plane reads it when the first pod starts it. For a cluster with
    /// [`ClusterOptions::external_config`].
    pub fn write_config(&self, yaml: &str) -> Result<()> {
        self.apply_config("cluster.yaml", yaml.to_string())
    }

    fn apply_config(&self, file: &str, yaml: String) -> Result<()> {
        let s = &self.shared;
        let mut state = lock(&s.state);
        if yaml == state.written {
            return Ok(());
        }
        let before = match &state.control_plane {
            Some(cp) => Some(cp.applied(&s.node)?),
            None => None,
        };
        pki::write(&s.config_dir.join(file), &yaml, 0o644)?;
        state.written = yaml;
        let (Some(before), Some(cp)) = (before, state.control_plane.as_ref()) else {
            return Ok(());
        };
        wait::until(
            "the control plane to apply the new YAML",
            CONFIG_PATIENCE,
            || cp.applied(&s.node).ok().filter(|n| *n > before),
        )
        .map(|_| ())
        .map_err(|e| match e {
            Error::Timeout { what, after } => Error::Timeout {
                what: format!("{what}; its log:\n{}", cp.log()),
                after,
            },
            other => other,
        })
    }

    /// Forgets a pod and rewrites the config, not waiting for the control plane.
    fn remove(&self, namespace: &str, name: &str) {
        let s = &self.shared;
        let mut state = lock(&s.state);
        state
            .pods
            .remove(&(namespace.to_string(), name.to_string()));
        if s.external_config {
            return;
        }
        let yaml = crate::spec::render(state.pods.values(), state.services.values());
        if yaml != state.written {
            match pki::write(&s.config_dir.join("cluster.yaml"), &yaml, 0o644) {
                Ok(()) => state.written = yaml,
                Err(e) => eprintln!("cleanup: {e}"),
            }
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let cp = lock(&self.state).control_plane.take();
        if thread::panicking() {
            if let Some(cp) = &cp {
                print_log("weft-control-plane", &cp.log());
            }
            let cni = std::fs::read_to_string(&self.cni_log).unwrap_or_default();
            if !cni.is_empty() {
                print_log("weft-cni", &cni);
            }
        }
        drop(cp);
        // Then `node` (the bridge goes with it) and `dir`.
    }
}

/// The `bridge` entry: pods on [`POD_SUBNET`] with the bridge as their gateway and default
/// route, no masquerading (the node has no way out anyway), host-local IPAM in `ipam_dir`.
fn bridge_entry(ipam_dir: &Path) -> serde_json::Value {
    json!({
        "type": "bridge",
        "bridge": BRIDGE,
        "isGateway": true,
        // A pod may reach itself through a Service (kube-proxy's rules in `services`).
        "hairpinMode": true,
        "ipMasq": false,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": POD_SUBNET, "gateway": GATEWAY.to_string()}]],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": ipam_dir,
        },
    })
}

/// A pod of a [`Cluster`]. Dropping it stops its app and proxy, runs CNI `DEL` and deletes
/// its namespace.
#[derive(Debug)]
pub struct Pod {
    cluster: Cluster,
    spec: PodSpec,
    ip: Ipv4Addr,
    attachment: Attachment,
    loopback: bool,
    /// The CNI `ADD` result, once attached.
    attached: Option<serde_json::Value>,
    registered: bool,
    app: Option<App>,
    proxy: Option<Daemon>,
    netns: Option<Netns>,
}

impl Pod {
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn namespace(&self) -> &str {
        &self.spec.namespace
    }

    pub fn spec(&self) -> &PodSpec {
        &self.spec
    }

    /// The address CNI gave it.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// `ip:port`.
    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.ip, port))
    }

    /// Its SPIFFE ID (what its proxy presents, when meshed).
    pub fn spiffe_id(&self) -> String {
        pki::spiffe_id(&self.spec.namespace, &self.spec.service_account)
    }

    /// The pod's network namespace.
    pub fn netns(&self) -> &Netns {
        self.netns.as_ref().expect("a live pod has its namespace")
    }

    /// The CNI `ADD` result.
    pub fn cni_result(&self) -> Option<&serde_json::Value> {
        self.attached.as_ref()
    }

    /// The test app, if it runs here.
    pub fn app(&self) -> Option<&App> {
        self.app.as_ref()
    }

    /// Whether a proxy runs here.
    pub fn is_meshed(&self) -> bool {
        self.proxy.is_some()
    }

    /// `GET path` to `dst` from inside this pod, with `Host: <dst>`.
    pub fn get(&self, dst: SocketAddr, path: &str) -> Result<HttpReply> {
        http::get(self.netns(), dst, &dst.to_string(), path)
    }

    /// `GET path` to `dst` from inside this pod, with `Host: host`.
    pub fn get_host(&self, dst: SocketAddr, host: &str, path: &str) -> Result<HttpReply> {
        http::get(self.netns(), dst, host, path)
    }

    /// A line echo conversation with `dst` from inside this pod.
    pub fn echo(&self, dst: SocketAddr, lines: &[&str]) -> Result<EchoReply> {
        app::echo(self.netns(), dst, lines)
    }

    /// A request to the proxy's admin port, from inside the pod (loopback).
    pub fn admin(&self, path: &str) -> Result<HttpReply> {
        self.proxy_or_err()?;
        let admin = SocketAddr::from((Ipv4Addr::LOCALHOST, ADMIN_PORT));
        http::get(self.netns(), admin, "localhost", path)
    }

    /// The proxy's `/metrics`.
    pub fn metrics(&self) -> Result<Metrics> {
        let r = self.admin("/metrics")?;
        if r.status != 200 {
            return Err(Error::Protocol {
                what: format!("GET /metrics of {}'s proxy", self.spec.name),
                answer: format!("{} {}", r.status, r.body),
            });
        }
        Metrics::parse(&r.body).map_err(|e| Error::Protocol {
            what: format!("/metrics of {}'s proxy: {e}", self.spec.name),
            answer: r.body,
        })
    }

    /// The proxy's process ID, while it runs.
    pub fn proxy_pid(&self) -> Option<u32> {
        self.proxy.as_ref().and_then(Daemon::pid)
    }

    /// The proxy's log so far.
    pub fn proxy_log(&self) -> String {
        self.proxy.as_ref().map(Daemon::log).unwrap_or_default()
    }

    /// The proxy's JSON log lines so far.
    pub fn proxy_events(&self) -> Vec<serde_json::Value> {
        self.proxy_log()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// An error if the proxy has exited.
    pub fn check_proxy(&mut self) -> Result<()> {
        self.proxy_or_err()?;
        self.proxy.as_mut().map_or(Ok(()), Daemon::check_running)
    }

    /// Runs `program args` inside the pod's namespace (e.g. `iptables -t nat -S`).
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        self.netns().run(program, args)
    }

    fn proxy_or_err(&self) -> Result<()> {
        if self.proxy.is_none() {
            return Err(Error::Invalid {
                what: "pod",
                value: self.spec.name.clone(),
                reason: "is not meshed: no proxy runs in it",
            });
        }
        Ok(())
    }

    /// Starts `weft-proxy` in the pod as UID 2121 and waits until `/ready` answers 200.
    fn start_proxy(&mut self) -> Result<()> {
        let s = &self.cluster.shared;
        let grpc = SocketAddr::from((GATEWAY, crate::control_plane::GRPC_PORT));
        let token = s.pki.token(
            &self.spec.namespace,
            &self.spec.service_account,
            &format!("{}-{}", self.spec.namespace, self.spec.name),
        )?;
        let mut env: Vec<(String, String)> = vec![
            ("WEFT_CONTROL_PLANE".into(), grpc.to_string()),
            (
                "WEFT_TRUST_ANCHORS".into(),
                s.pki.anchors().display().to_string(),
            ),
            (
                "WEFT_IDENTITY_TOKEN_FILE".into(),
                token.display().to_string(),
            ),
            ("WEFT_NAMESPACE".into(), self.spec.namespace.clone()),
            (
                "WEFT_SERVICE_ACCOUNT".into(),
                self.spec.service_account.clone(),
            ),
            ("WEFT_LOG_FORMAT".into(), "json".into()),
            ("WEFT_LOG".into(), "info,weft_proxy=debug".into()),
            ("WEFT_REDIRECT_CHECK".into(), "1s".into()),
            // A bare pod is its own workload, as the injector names it; a Deployment's
            // replicas say theirs through `proxy_env` (the folder's `LabPod::workload`).
            ("WEFT_WORKLOAD".into(), format!("pod/{}", self.spec.name)),
        ];
        for (k, v) in s.proxy_env.iter().chain(&self.spec.proxy_env) {
            env.retain(|(key, _)| key != k);
            env.push((k.clone(), v.clone()));
        }
        let mut cmd = self.netns().command("setpriv");
        cmd.arg(format!("--reuid={PROXY_UID}"))
            .arg(format!("--regid={PROXY_UID}"))
            .arg("--clear-groups")
            // Killed with the process that started it, even when that one is killed outright
            // (set after the UID change, which would clear it).
            .arg("--pdeathsig=KILL")
            .arg(&s.bins.proxy)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env);
        let log = s.dir.path().join(format!(
            "proxy-{}-{}.log",
            self.spec.namespace, self.spec.name
        ));
        self.proxy = Some(Daemon::spawn(
            format!("weft-proxy of {}/{}", self.spec.namespace, self.spec.name),
            &mut cmd,
            &log,
        )?);
        let ready = wait::until(
            format!("{}'s proxy /ready", self.spec.name),
            READY_PATIENCE,
            || {
                if let Err(e) = self.check_proxy() {
                    return Some(Err(e));
                }
                match self.admin("/ready") {
                    Ok(r) if r.status == 200 => Some(Ok(())),
                    _ => None,
                }
            },
        );
        wait::ready_or_log(ready, || self.proxy_log())
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if thread::panicking() && self.proxy.is_some() {
            print_log(
                &format!("weft-proxy of {}", self.spec.name),
                &self.proxy_log(),
            );
        }
        if let Some(mut app) = self.app.take() {
            app.stop();
        }
        if let Some(mut proxy) = self.proxy.take() {
            proxy.kill();
        }
        if self.registered {
            self.cluster.remove(&self.spec.namespace, &self.spec.name);
        }
        let s = &self.cluster.shared;
        // DEL even after a failed ADD: plugins must tolerate it, and host-local frees the IP.
        if let Err(e) = s
            .runtime
            .del(&s.network, &self.attachment, self.attached.as_ref())
        {
            eprintln!("cleanup: CNI DEL of {}: {e}", self.spec.name);
        }
        if self.loopback {
            let lo = Attachment {
                ifname: "lo".into(),
                ..self.attachment.clone()
            };
            if let Err(e) = s.runtime.del(&cni::loopback_list(), &lo, None) {
                eprintln!("cleanup: CNI DEL of {}'s loopback: {e}", self.spec.name);
            }
        }
        drop(self.netns.take());
    }
}

fn print_log(what: &str, log: &str) {
    eprintln!("--- {what} log ---\n{log}--- end of {what} log ---");
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
