//! [`Cluster`]: one real single-node Kubernetes inside one network namespace.
//!
//! The node namespace holds everything: loopback, the pod bridge [`BRIDGE`] with the node's
//! address [`NODE_IP`] (what the API server advertises and the kubelet reports), a route for
//! the Service range [`SERVICE_CIDR`] onto the bridge (kube-proxy's rules turn those addresses
//! into pods'), and no route anywhere else. etcd listens on the namespace's loopback, the API
//! server on 6443 with TLS, the controller manager and scheduler on loopback. containerd and the
//! kubelet share a private mount namespace ([`node::MountNs`]); containerd runs the reference
//! CNI plugins (`loopback`, then `bridge` with host-local IPAM from [`POD_CIDR`]) for each pod
//! sandbox, so pods are real containers in their own network namespaces on the bridge.
//!
//! Teardown (drop, also on panic) stops the components in reverse order, kills whatever is
//! left in the cluster's cgroup subtree and mount namespace (containers, shims), deletes the
//! node namespace, removes the cgroups, puts back the kernel settings the kubelet changed and
//! deletes the state folder. A cluster whose process died without teardown is swept by the
//! next start ([`sweep_stale`]).

use std::{
    fs,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use weft_lab::{netns::Netns, process::Daemon};

use crate::{
    addons,
    bins::{self, K8sBins},
    error::{Error, Result},
    image::{self, ImageBuilder},
    kubectl::Kubectl,
    node::{Cgroups, KernelSettings, MountNs},
    pki::{ApiAddresses, Pki},
};

/// The node's name, as the API server knows it.
pub const NODE_NAME: &str = "weft-node";
/// The pod bridge in the node namespace.
pub const BRIDGE: &str = "weft0";
/// The node's address: on the bridge, the pods' gateway.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// Pod addresses (host-local IPAM on the bridge).
pub const POD_CIDR: &str = "198.18.0.0/24";
/// Service cluster IPs.
pub const SERVICE_CIDR: &str = "198.19.0.0/24";
/// The `kubernetes` Service's address (the first of the range).
pub const API_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
/// The `kube-dns` Service's address, what pods get as their resolver.
pub const DNS_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 10);
/// The API server's port.
pub const API_PORT: u16 = 6443;
/// The image the sandbox of every pod runs.
pub const PAUSE_IMAGE: &str = "weft.local/pause:v1";
/// CoreDNS's image.
pub const COREDNS_IMAGE: &str = "weft.local/coredns:v1.13.1";
/// The node's CNI configuration file, in [`Cluster::cni_conf_dir`].
pub const CNI_CONFLIST: &str = "10-weft-k8s.conflist";
/// Where clusters keep their state: one folder each, named by the owning process.
pub const STATE_PARENT: &str = "/var/tmp";
/// The prefix of every name a cluster makes (folder, namespace, cgroup).
pub const PREFIX: &str = "weft-k8s";

/// How long a component may take to become ready.
const START_PATIENCE: Duration = Duration::from_secs(90);
/// How many log lines an error shows.
const TAIL_LINES: usize = 40;

/// Choices for [`Cluster::start`].
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Start CoreDNS and wait for it (default on; tests that need no DNS start faster without).
    pub skip_dns: bool,
    /// Print each step and its duration on stderr.
    pub verbose: bool,
    /// These Kubernetes binaries instead of [`K8sBins::locate`]'s.
    pub bins: Option<K8sBins>,
}

/// How long each start step took, for BENCHMARKS.md.
#[derive(Debug, Clone, Default)]
pub struct StartTimes {
    pub steps: Vec<(String, Duration)>,
    pub total: Duration,
}

/// A running component.
#[derive(Debug)]
struct Component {
    name: &'static str,
    daemon: Daemon,
}

/// One running single-node cluster. Dropping it tears everything down.
#[derive(Debug)]
pub struct Cluster {
    name: String,
    dir: PathBuf,
    bins: K8sBins,
    kubectl: Kubectl,
    /// In start order; stopped in reverse.
    components: Vec<Component>,
    mount_ns: Option<MountNs>,
    cgroups: Option<Cgroups>,
    node: Option<Netns>,
    kernel: Option<KernelSettings>,
    times: StartTimes,
    pki: Pki,
    containerd_socket: PathBuf,
    keep_dir: bool,
}

impl Cluster {
    /// Builds and starts a cluster: PKI, node namespace, etcd, the API server, containerd with
    /// the locally built images, the controller manager, the scheduler, the kubelet, kube-proxy
    /// and (unless skipped) CoreDNS; returns once the node is Ready (and DNS answers).
    pub fn start(options: &ClusterOptions) -> Result<Cluster> {
        if let Some(why) = bins::missing_system() {
            return Err(Error::Missing(why));
        }
        let bins = match &options.bins {
            Some(bins) => bins.clone(),
            None => K8sBins::locate()?,
        };
        sweep_stale();

        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{PREFIX}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = Path::new(STATE_PARENT).join(&name);
        let prepared = prepare(&dir, &name, &bins);
        let (pki, kubectl) = match prepared {
            Ok(made) => made,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
        };

        let mut cluster = Cluster {
            containerd_socket: dir.join("containerd.sock"),
            name,
            dir,
            bins,
            kubectl,
            components: Vec::new(),
            mount_ns: None,
            cgroups: None,
            node: None,
            kernel: None,
            times: StartTimes::default(),
            pki,
            keep_dir: false,
        };
        // From here on, an early return drops `cluster`, which tears down what exists.
        let start = Instant::now();
        cluster.step(options, "node namespace", Cluster::make_node)?;
        cluster.step(options, "etcd", Cluster::start_etcd)?;
        cluster.step(options, "kube-apiserver", Cluster::start_apiserver)?;
        cluster.step(options, "CRDs", Cluster::apply_crds)?;
        cluster.step(options, "containerd and images", Cluster::start_containerd)?;
        cluster.step(
            options,
            "controllers and scheduler",
            Cluster::start_controllers,
        )?;
        cluster.step(
            options,
            "kubelet and kube-proxy",
            Cluster::start_node_agents,
        )?;
        cluster.step(options, "node Ready", Cluster::wait_node_ready)?;
        if !options.skip_dns {
            // Scheduled while the controllers finish starting.
            cluster
                .kubectl
                .apply(&addons::coredns(COREDNS_IMAGE, DNS_SERVICE_IP))?;
        }
        // Pods can be created once their namespace's `default` ServiceAccount exists: the
        // ServiceAccount controller makes it a moment after the start.
        cluster.step(options, "default ServiceAccount", |c| {
            c.wait_for(
                "kube-controller-manager",
                "the default ServiceAccount",
                |c| {
                    c.kubectl
                        .run(&["-n", "default", "get", "serviceaccount", "default"])
                        .ok()
                        .map(|_| ())
                },
            )
        })?;
        if !options.skip_dns {
            cluster.step(options, "CoreDNS Ready", Cluster::wait_dns)?;
        }
        cluster.times.total = start.elapsed();
        Ok(cluster)
    }

    fn step(
        &mut self,
        options: &ClusterOptions,
        what: &str,
        f: impl FnOnce(&mut Cluster) -> Result<()>,
    ) -> Result<()> {
        let start = Instant::now();
        if options.verbose {
            eprintln!("cluster: {what} ...");
        }
        f(self)?;
        let took = start.elapsed();
        if options.verbose {
            eprintln!("cluster: {what}: done in {took:.1?}");
        }
        self.times.steps.push((what.to_string(), took));
        Ok(())
    }

    /// The cluster's name (its node namespace, state folder and cgroup are named after it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cluster's state folder (logs in `logs/`, kubeconfigs, PKI).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The node's CNI binary folder: the reference plugins (links to Debian's), and whatever an
    /// installer such as Weft's CNI DaemonSet adds.
    pub fn cni_bin_dir(&self) -> PathBuf {
        self.dir.join("cni/bin")
    }

    /// The node's CNI configuration folder, which containerd watches: [`CNI_CONFLIST`] (the
    /// bridge plugin with host-local IPAM) and whatever an installer chains into it.
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.dir.join("cni/net.d")
    }

    /// Where a CNI plugin chained into this node may log (the cluster's log folder).
    pub fn cni_log(&self, plugin: &str) -> PathBuf {
        self.log(plugin)
    }

    /// `kubectl` as the cluster admin.
    pub fn kubectl(&self) -> &Kubectl {
        &self.kubectl
    }

    /// The node's network namespace.
    pub fn node(&self) -> &Netns {
        self.node
            .as_ref()
            .unwrap_or_else(|| unreachable!("a started cluster has its node namespace"))
    }

    /// The Kubernetes binaries it runs.
    pub fn bins(&self) -> &K8sBins {
        &self.bins
    }

    /// The cluster's PKI (its CA for clients that check the API server).
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// How long the start took, step by step.
    pub fn start_times(&self) -> &StartTimes {
        &self.times
    }

    /// The API server's address inside the node namespace.
    pub fn api_addr(&self) -> SocketAddr {
        SocketAddr::new(NODE_IP.into(), API_PORT)
    }

    /// Writes a kubeconfig for `user` (in `group`) with a client certificate from the
    /// cluster's CA, for components that run as that user.
    pub fn kubeconfig_for(&self, file: &str, user: &str, group: Option<&str>) -> Result<PathBuf> {
        let pair = self.pki.client(file, user, group)?;
        let path = self.dir.join(format!("{file}.kubeconfig"));
        write_kubeconfig(&path, &self.pki, &pair)?;
        Ok(path)
    }

    /// Builds `image` and imports it into the node's containerd, for pods to run with
    /// `imagePullPolicy: Never`.
    pub fn import_image(&self, image: &ImageBuilder) -> Result<()> {
        let archive = self
            .dir
            .join("images")
            .join(format!("{}.tar", image_file_name(image.reference())));
        image.write_archive(&archive)?;
        image::import(&bins::which("ctr")?, &self.containerd_socket, &archive)?;
        // The archive is in containerd's content store now.
        let _ = fs::remove_file(&archive);
        Ok(())
    }

    /// Every component's name and its log file.
    pub fn logs(&self) -> Vec<(&'static str, PathBuf)> {
        self.components
            .iter()
            .map(|c| (c.name, c.daemon.log_path().to_path_buf()))
            .collect()
    }

    /// Resident memory of each component now (from `/proc/<pid>/status`), in KiB.
    pub fn memory(&self) -> Vec<(&'static str, u64)> {
        self.components
            .iter()
            .filter_map(|c| {
                let status =
                    fs::read_to_string(format!("/proc/{}/status", c.daemon.pid()?)).ok()?;
                let kib = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()?;
                Some((c.name, kib))
            })
            .collect()
    }

    /// Keep the state folder (logs) after teardown, for a person to read.
    pub fn keep_state_dir(&mut self) {
        self.keep_dir = true;
    }

    /// An error if a component has exited, naming it with its log's end.
    pub fn check_running(&mut self) -> Result<()> {
        for c in &mut self.components {
            if let Err(e) = c.daemon.check_running() {
                return Err(component_error(c.name, &e.to_string(), c.daemon.log_path()));
            }
        }
        Ok(())
    }

    /// Stops `name` (SIGTERM, then SIGKILL after `grace`) and starts it again with the same
    /// command line: for fault tests (an API server restart, a kubelet restart).
    pub fn restart(&mut self, name: &str, grace: Duration) -> Result<()> {
        self.stop(name, grace)?;
        self.start_again(name)
    }

    /// Stops `name`, leaving it down until [`Cluster::start_again`].
    pub fn stop(&mut self, name: &str, grace: Duration) -> Result<()> {
        let c = self.component_mut(name)?;
        c.daemon.terminate(grace);
        Ok(())
    }

    /// Starts a stopped component again with its first command line.
    pub fn start_again(&mut self, name: &str) -> Result<()> {
        let (cmd, log) = {
            let c = self.component_mut(name)?;
            (
                c.daemon.command_line().to_vec(),
                c.daemon.log_path().to_path_buf(),
            )
        };
        let daemon = Daemon::spawn(name.to_string(), &mut command_from(&cmd), &log)?;
        self.component_mut(name)?.daemon = daemon;
        Ok(())
    }

    /// Waits (bounded) until the API server answers `/readyz` and the node is Ready again: after
    /// a restart of a component.
    pub fn wait_ready(&mut self) -> Result<()> {
        self.wait_api()?;
        self.wait_node_ready()
    }

    fn wait_api(&mut self) -> Result<()> {
        self.wait_for("kube-apiserver", "the API server's /readyz", |c| {
            c.kubectl.run(&["get", "--raw", "/readyz"]).ok().map(|_| ())
        })
    }

    fn component_mut(&mut self, name: &str) -> Result<&mut Component> {
        self.components
            .iter_mut()
            .find(|c| c.name == name)
            .ok_or_else(|| Error::Missing(format!("no component named {name}")))
    }

    // ----- start steps -----

    fn make_node(&mut self) -> Result<()> {
        let node = Netns::create(&self.name)?;
        node.ip(&["link", "add", BRIDGE, "type", "bridge"])?;
        node.ip(&["addr", "add", &format!("{NODE_IP}/24"), "dev", BRIDGE])?;
        node.ip(&["link", "set", BRIDGE, "up"])?;
        // Connections from the node itself to a Service address need a route before kube-proxy's
        // OUTPUT rules can rewrite them; onto the bridge, never out.
        node.ip(&["route", "add", SERVICE_CIDR, "dev", BRIDGE])?;
        for (key, value) in [
            ("net.ipv4.ip_forward", "1"),
            // Pod-to-Service-to-pod on one bridge: the reply must pass kube-proxy's conntrack.
            ("net.bridge.bridge-nf-call-iptables", "1"),
            ("net.bridge.bridge-nf-call-ip6tables", "1"),
        ] {
            node.run("sysctl", &["-q", "-w", &format!("{key}={value}")])?;
        }
        self.node = Some(node);
        self.cgroups = Some(Cgroups::create(&self.name)?);
        self.mount_ns = Some(MountNs::create(&self.log("mount-ns"), &self.dir)?);
        Ok(())
    }

    fn start_etcd(&mut self) -> Result<()> {
        let data = self.dir.join("etcd");
        let mut cmd = self.node().command(self.bins.get("etcd"));
        cmd.arg("--name=weft-node")
            .arg(format!("--data-dir={}", data.display()))
            .args([
                "--listen-client-urls=http://127.0.0.1:2379",
                "--advertise-client-urls=http://127.0.0.1:2379",
                "--listen-peer-urls=http://127.0.0.1:2380",
                "--initial-advertise-peer-urls=http://127.0.0.1:2380",
                "--initial-cluster=weft-node=http://127.0.0.1:2380",
                "--listen-metrics-urls=http://127.0.0.1:2381",
                "--log-level=warn",
                // A test cluster: no fsync per write (tmp data, torn down anyway).
                "--unsafe-no-fsync",
                "--quota-backend-bytes=1073741824",
            ]);
        self.spawn("etcd", &mut cmd)?;
        self.wait_for("etcd", "etcd to answer /health", |c| {
            etcd_healthy(c.node()).then_some(())
        })
    }

    fn start_apiserver(&mut self) -> Result<()> {
        let pki = &self.pki;
        let mut cmd = self.node().command(self.bins.get("kube-apiserver"));
        cmd.args([
            "--etcd-servers=http://127.0.0.1:2379",
            "--bind-address=0.0.0.0",
            &format!("--advertise-address={NODE_IP}"),
            &format!("--secure-port={API_PORT}"),
            &format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction,MutatingAdmissionWebhook,ValidatingAdmissionWebhook",
            "--allow-privileged=true",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--kubelet-preferred-address-types=InternalIP",
            "--profiling=false",
            "--v=1",
        ])
        .arg(flag("--tls-cert-file", &pki.apiserver.cert))
        .arg(flag("--tls-private-key-file", &pki.apiserver.key))
        .arg(flag("--client-ca-file", &pki.ca.cert))
        .arg(flag("--kubelet-certificate-authority", &pki.ca.cert))
        .arg(flag(
            "--kubelet-client-certificate",
            &pki.apiserver_kubelet_client.cert,
        ))
        .arg(flag(
            "--kubelet-client-key",
            &pki.apiserver_kubelet_client.key,
        ))
        .arg(flag("--service-account-key-file", &pki.sa_pub))
        .arg(flag("--service-account-signing-key-file", &pki.sa_key));
        self.spawn("kube-apiserver", &mut cmd)?;
        self.wait_api()
    }

    /// The CRDs users apply: Gateway API's standard channel, SMI TrafficSplit and Weft's own,
    /// gathered by `scripts/k8s-crds.sh` (pinned versions) and applied server-side (the
    /// HTTPRoute CRD is too big for client-side apply's annotation); waits until Established.
    fn apply_crds(&mut self) -> Result<()> {
        let out = self.dir.join("crds");
        let script = bins::repo_root().join("scripts/k8s-crds.sh");
        weft_lab::process::run(Command::new(&script).arg(&out))?;
        for sub in ["gateway-api", "smi", "weft"] {
            let dir = out.join(sub);
            self.kubectl.run(&[
                "apply",
                "--server-side",
                "--force-conflicts",
                "-f",
                &dir.to_string_lossy(),
            ])?;
        }
        self.kubectl.run(&[
            "wait",
            "--for=condition=Established",
            "crd",
            "--all",
            "--timeout=60s",
        ])?;
        Ok(())
    }

    fn start_containerd(&mut self) -> Result<()> {
        // The CNI binaries containerd may run: the reference plugins from Debian, linked.
        let cni_bin = self.cni_bin_dir();
        for plugin in ["bridge", "host-local", "loopback", "portmap"] {
            let src = Path::new(weft_lab::prereq::REFERENCE_PLUGIN_DIR).join(plugin);
            std::os::unix::fs::symlink(&src, cni_bin.join(plugin))
                .map_err(Error::io(format!("link {}", src.display())))?;
        }
        let plugins = vec![serde_json::json!({
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "isDefaultGateway": true,
                "hairpinMode": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP.to_string()}]],
                    "dataDir": self.dir.join("cni/ipam"),
                },
        })];
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "weft-k8s",
            "plugins": plugins,
        });
        write(
            &self.cni_conf_dir().join(CNI_CONFLIST),
            &serde_json::to_string_pretty(&conflist).unwrap_or_default(),
        )?;
        let config = containerd_config(&self.dir, &self.containerd_socket);
        let config_path = self.dir.join("containerd.toml");
        write(&config_path, &config)?;

        let node_path = self.node().path();
        let mut cmd = self.mount_ns()?.command(&node_path, "containerd");
        cmd.arg("--config").arg(&config_path);
        self.spawn("containerd", &mut cmd)?;
        let socket = self.containerd_socket.clone();
        self.wait_for("containerd", "containerd's socket", |_| {
            ctr_works(&socket).then_some(())
        })?;

        self.import_builtin_images()
    }

    fn import_builtin_images(&mut self) -> Result<()> {
        self.import_image(
            &ImageBuilder::new(PAUSE_IMAGE)
                .binary("/pause", self.bins.get("pause"))
                .entrypoint(["/pause"]),
        )?;
        self.import_image(
            &ImageBuilder::new(COREDNS_IMAGE)
                .binary("/coredns", self.bins.get("coredns"))
                .entrypoint(["/coredns"]),
        )
    }

    fn start_controllers(&mut self) -> Result<()> {
        let cm =
            self.kubeconfig_for("controller-manager", "system:kube-controller-manager", None)?;
        let mut cmd = self
            .node()
            .command(self.bins.get("kube-controller-manager"));
        cmd.args([
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller",
            &format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            "--cluster-name=weft",
            "--v=1",
        ])
        .arg(flag("--kubeconfig", &cm))
        .arg(flag("--authentication-kubeconfig", &cm))
        .arg(flag("--authorization-kubeconfig", &cm))
        .arg(flag("--root-ca-file", &self.pki.ca.cert))
        .arg(flag(
            "--service-account-private-key-file",
            &self.pki.sa_key,
        ))
        .arg(flag("--cluster-signing-cert-file", &self.pki.ca.cert))
        .arg(flag("--cluster-signing-key-file", &self.pki.ca.key));
        self.spawn("kube-controller-manager", &mut cmd)?;

        let sched = self.kubeconfig_for("scheduler", "system:kube-scheduler", None)?;
        let mut cmd = self.node().command(self.bins.get("kube-scheduler"));
        cmd.args(["--bind-address=127.0.0.1", "--leader-elect=false", "--v=1"])
            .arg(flag("--kubeconfig", &sched))
            .arg(flag("--authentication-kubeconfig", &sched))
            .arg(flag("--authorization-kubeconfig", &sched));
        self.spawn("kube-scheduler", &mut cmd)?;
        Ok(())
    }

    fn start_node_agents(&mut self) -> Result<()> {
        let kubelet_kc = self.kubeconfig_for(
            "kubelet",
            &format!("system:node:{NODE_NAME}"),
            Some("system:nodes"),
        )?;
        let root = self.dir.join("kubelet");
        let config = kubelet_config(self, &root)?;
        let config_path = self.dir.join("kubelet.yaml");
        write(&config_path, &config)?;
        self.kernel = Some(KernelSettings::save());
        let node_path = self.node().path();
        let mut cmd = self
            .mount_ns()?
            .command(&node_path, self.bins.get("kubelet"));
        cmd.arg(flag("--config", &config_path))
            .arg(flag("--kubeconfig", &kubelet_kc))
            .arg(flag("--root-dir", &root))
            .arg(flag("--cert-dir", &root.join("pki")))
            .arg(format!("--hostname-override={NODE_NAME}"))
            .arg(format!("--node-ip={NODE_IP}"))
            .arg("--v=1");
        self.spawn("kubelet", &mut cmd)?;

        let proxy_kc = self.kubeconfig_for("kube-proxy", "system:kube-proxy", None)?;
        let mut cmd = self.node().command(self.bins.get("kube-proxy"));
        cmd.args([
            "--proxy-mode=iptables",
            &format!("--hostname-override={NODE_NAME}"),
            &format!("--cluster-cidr={POD_CIDR}"),
            "--conntrack-max-per-core=0",
            "--conntrack-tcp-timeout-close-wait=0s",
            "--iptables-localhost-nodeports=false",
            "--metrics-bind-address=127.0.0.1:10249",
            "--healthz-bind-address=127.0.0.1:10256",
            "--v=1",
        ])
        .arg(flag("--kubeconfig", &proxy_kc));
        self.spawn("kube-proxy", &mut cmd)?;
        Ok(())
    }

    fn wait_node_ready(&mut self) -> Result<()> {
        self.wait_for("kubelet", "the node to be Ready", |c| {
            let ready = c
                .kubectl
                .run(&[
                    "get",
                    "node",
                    NODE_NAME,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ])
                .ok()?;
            (ready.trim() == "True").then_some(())
        })
    }

    fn wait_dns(&mut self) -> Result<()> {
        self.wait_for("coredns", "CoreDNS to be Ready", |c| {
            let ready = c
                .kubectl
                .run(&[
                    "-n",
                    "kube-system",
                    "get",
                    "pods",
                    "-l",
                    "k8s-app=kube-dns",
                    "-o",
                    "jsonpath={.items[*].status.conditions[?(@.type==\"Ready\")].status}",
                ])
                .ok()?;
            (ready.trim() == "True").then_some(())
        })
    }

    // ----- helpers -----

    fn mount_ns(&self) -> Result<&MountNs> {
        self.mount_ns
            .as_ref()
            .ok_or_else(|| Error::Missing("the node's mount namespace".into()))
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{name}.log"))
    }

    fn spawn(&mut self, name: &'static str, cmd: &mut Command) -> Result<()> {
        let daemon = Daemon::spawn(name, cmd, &self.log(name))?;
        self.components.push(Component { name, daemon });
        Ok(())
    }

    /// Polls `check` (every 250 ms, bounded by [`START_PATIENCE`]) until it answers; fails early,
    /// naming the component and showing its log, if any component exits meanwhile.
    fn wait_for(
        &mut self,
        component: &str,
        what: &str,
        mut check: impl FnMut(&Cluster) -> Option<()>,
    ) -> Result<()> {
        let start = Instant::now();
        let step = Duration::from_millis(250);
        for _ in 0..=(START_PATIENCE.as_millis() / step.as_millis()) {
            self.check_running()?;
            if check(self).is_some() {
                return Ok(());
            }
            if start.elapsed() > START_PATIENCE {
                break;
            }
            thread::sleep(step);
        }
        let log = self
            .components
            .iter()
            .find(|c| c.name == component)
            .map(|c| c.daemon.log_path().to_path_buf())
            .unwrap_or_else(|| self.log(component));
        Err(component_error(
            component,
            &format!("timed out after {START_PATIENCE:?} waiting for {what}"),
            &log,
        ))
    }

    fn teardown(&mut self) {
        // The node agents first, so nothing restarts containers while they go.
        for name in ["kube-proxy", "kubelet"] {
            if let Ok(c) = self.component_mut(name) {
                c.daemon.terminate(Duration::from_secs(5));
            }
        }
        // The containers (in the cluster's cgroups), then containerd and its shims (in the
        // node's mount namespace), which takes every mount they made with them.
        if let Some(mut cgroups) = self.cgroups.take() {
            cgroups.remove();
            if let Ok(c) = self.component_mut("containerd") {
                c.daemon.terminate(Duration::from_secs(5));
            }
            if let Some(mut ns) = self.mount_ns.take() {
                ns.kill_all();
            }
            // Kill again and remove the folders now that no shim can start another process.
            cgroups.remove();
        }
        self.mount_ns = None;
        while let Some(mut c) = self.components.pop() {
            c.daemon.terminate(Duration::from_secs(5));
        }
        self.node = None;
        self.kernel = None;
        if !self.keep_dir {
            if let Err(e) = fs::remove_dir_all(&self.dir) {
                eprintln!("cleanup: remove {}: {e}", self.dir.display());
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if thread::panicking() {
            // A failing test shows what the components said.
            for c in &self.components {
                eprintln!(
                    "--- {} (last {TAIL_LINES} lines of {}) ---\n{}",
                    c.name,
                    c.daemon.log_path().display(),
                    tail(c.daemon.log_path(), TAIL_LINES)
                );
            }
        }
        self.teardown();
    }
}

/// The state folder, the PKI and the admin's `kubectl`: what a cluster needs before anything
/// runs.
fn prepare(dir: &Path, name: &str, bins: &K8sBins) -> Result<(Pki, Kubectl)> {
    fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
    for sub in [
        "logs",
        "cni/bin",
        "cni/net.d",
        "cni/ipam",
        "kubelet",
        "images",
    ] {
        fs::create_dir_all(dir.join(sub))
            .map_err(Error::io(format!("create {}", dir.join(sub).display())))?;
    }
    let pki = Pki::create(
        &dir.join("pki"),
        NODE_NAME,
        ApiAddresses {
            advertise: NODE_IP.into(),
            service: API_SERVICE_IP.into(),
        },
    )?;
    let admin = pki.client("admin", "weft-admin", Some("system:masters"))?;
    let admin_kubeconfig = dir.join("admin.kubeconfig");
    write_kubeconfig(&admin_kubeconfig, &pki, &admin)?;
    let kubectl = Kubectl::new(&bins.get("kubectl"), &admin_kubeconfig, name);
    Ok((pki, kubectl))
}

/// Removes what clusters of processes that no longer exist left behind (a test killed with
/// SIGKILL never runs its teardown): their node namespace, processes still running from their
/// state folder, their cgroups and the folder. Only names with [`PREFIX`] and a dead owner PID
/// are touched.
pub fn sweep_stale() {
    let Ok(entries) = fs::read_dir(STATE_PARENT) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(owner) = name
            .strip_prefix(&format!("{PREFIX}-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{owner}")).exists() {
            continue;
        }
        eprintln!("cluster: removing the leftovers of {name} (its process {owner} is gone)");
        let dir = entry.path();
        let dir_text = dir.to_string_lossy().into_owned();
        // Its processes: every command line that names its state folder (containerd, the
        // kubelet, etcd, the API server ... and the shims, through containerd's socket path).
        for pid in pids_mentioning(&dir_text) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let Ok(mut cgroups) = Cgroups::create(&name) {
            cgroups.remove();
        }
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let _ = fs::remove_dir_all(&dir);
    }
}

/// What is left on the machine of the cluster named `name` (for tests of teardown): its state
/// folder, node namespace, cgroup folders, mounts under its folder, and processes whose
/// command line names its folder. Empty after a clean teardown.
pub fn leftovers(name: &str) -> Vec<String> {
    let dir = Path::new(STATE_PARENT).join(name);
    let dir_text = dir.to_string_lossy().into_owned();
    let mut left = Vec::new();
    if dir.exists() {
        left.push(format!("state folder {dir_text}"));
    }
    if Path::new(weft_lab::netns::NETNS_DIR).join(name).exists() {
        left.push(format!("network namespace {name}"));
    }
    if let Ok(cgroups) = fs::read_dir("/sys/fs/cgroup") {
        for hierarchy in cgroups.flatten() {
            let path = hierarchy.path().join(name);
            if path.exists() {
                left.push(format!("cgroup {}", path.display()));
            }
        }
    }
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    left.extend(
        mounts
            .lines()
            .filter(|l| l.contains(&dir_text))
            .map(|l| format!("mount {l}")),
    );
    left.extend(
        pids_mentioning(&dir_text)
            .into_iter()
            .map(|pid| format!("process {pid}")),
    );
    left
}

/// Processes whose command line names `text` (the components, the shims through containerd's
/// socket path) or whose environment does (the mount namespace's holder, [`crate::node::OWNER_ENV`]).
fn pids_mentioning(text: &str) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let owner = format!("{}={text}", crate::node::OWNER_ENV);
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmd| String::from_utf8_lossy(&cmd).contains(text))
                || fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == owner.as_bytes()))
        })
        .collect()
}

fn component_error(name: &str, reason: &str, log: &Path) -> Error {
    Error::Component {
        component: name.to_string(),
        reason: reason.to_string(),
        log: log.display().to_string(),
        tail: tail(log, TAIL_LINES),
    }
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn flag(name: &str, path: &Path) -> String {
    format!("{name}={}", path.display())
}

fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).map_err(Error::io(format!("write {}", path.display())))
}

fn image_file_name(reference: &str) -> String {
    reference
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// A command from the argv a [`Daemon`] was started with.
fn command_from(argv: &[String]) -> Command {
    let mut cmd = Command::new(argv.first().map_or("false", String::as_str));
    cmd.args(argv.iter().skip(1));
    cmd
}

fn etcd_healthy(node: &Netns) -> bool {
    use std::io::{Read, Write};
    let Ok(mut conn) = node.connect(
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 2379),
        Duration::from_secs(2),
    ) else {
        return false;
    };
    if conn
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = conn.take(64 << 10).read_to_string(&mut answer);
    answer.contains("\"health\":\"true\"")
}

fn ctr_works(socket: &Path) -> bool {
    socket.exists()
        && Command::new("ctr")
            .arg("--address")
            .arg(socket)
            .args(["--namespace", "k8s.io", "version"])
            .output()
            .is_ok_and(|o| o.status.success())
}

fn write_kubeconfig(path: &Path, pki: &Pki, user: &crate::pki::Pair) -> Result<()> {
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: weft
  cluster:
    server: https://{NODE_IP}:{API_PORT}
    certificate-authority: {ca}
users:
- name: user
  user:
    client-certificate: {cert}
    client-key: {key}
contexts:
- name: weft
  context:
    cluster: weft
    user: user
current-context: weft
",
        ca = pki.ca.cert.display(),
        cert = user.cert.display(),
        key = user.key.display(),
    );
    write(path, &text)
}

fn containerd_config(dir: &Path, socket: &Path) -> String {
    let dir = dir.display();
    let socket = socket.display();
    format!(
        r#"# containerd for one weft-k8s-lab node: every path its own; /run/containerd is a tmpfs of
# the node's mount namespace.
version = 2
root = "{dir}/containerd/root"
state = "/run/containerd/state"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{dir}/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  disable_apparmor = true
  # Lowering a process's oom_score_adj below containerd's own needs CAP_SYS_RESOURCE, which a
  # machine that is itself a container may not grant: runc then fails to start any container
  # ("failed to update /proc/self/oom_score_adj: Permission denied"). Clamp instead.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "/run/containerd/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{dir}/cni/bin"
    conf_dir = "{dir}/cni/net.d"
    max_conf_num = 1
"#
    )
}

fn kubelet_config(cluster: &Cluster, root: &Path) -> Result<String> {
    let cgroup_root = cluster
        .cgroups
        .as_ref()
        .map(Cgroups::root)
        .ok_or_else(|| Error::Missing("the cluster's cgroups".into()))?;
    let pki = &cluster.pki;
    Ok(format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {NODE_IP}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: {ca}
authorization:
  mode: Webhook
tlsCertFile: {cert}
tlsPrivateKeyFile: {key}
containerRuntimeEndpoint: unix://{socket}
cgroupDriver: cgroupfs
cgroupRoot: {cgroup_root}
cgroupsPerQOS: true
enforceNodeAllocatable: ["pods"]
clusterDNS: ["{DNS_SERVICE_IP}"]
clusterDomain: cluster.local
resolvConf: ""
failSwapOn: false
failCgroupV1: false
staticPodPath: ""
podLogsDir: {logs}
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
nodeStatusUpdateFrequency: 4s
syncFrequency: 10s
fileCheckFrequency: 10s
rotateCertificates: false
serverTLSBootstrap: false
protectKernelDefaults: false
"#,
        ca = pki.ca.cert.display(),
        cert = pki.kubelet_serving.cert.display(),
        key = pki.kubelet_serving.key.display(),
        socket = cluster.containerd_socket.display(),
        logs = root.join("pod-logs").display(),
    ))
}
