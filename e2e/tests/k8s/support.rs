//! What the k8s-tier cases share: the cluster with Weft installed, and bounded waits and
//! lookups through the cluster's own `kubectl`.

use std::{
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use weft_k8s_lab::{cluster::tail, weft, weft::AppPod, Cluster, Helm, Kubectl};
use weft_lab::Metrics;

/// How long a pod may take to be Ready (image already imported; proxies need a certificate).
pub(crate) const POD_PATIENCE: Duration = Duration::from_secs(90);

/// The cluster with Weft installed by its chart.
pub(crate) struct Env<'a> {
    cluster: &'a mut Cluster,
    /// The trust anchors' PEM, for the ConfigMap each hand-meshed namespace needs.
    pub(crate) anchors: String,
    /// Helm on this cluster, its files in the cluster's directory.
    helm: Helm,
    pki: weft_lab::pki::Pki,
    _pki_dir: tempfile::TempDir,
}

impl<'a> Env<'a> {
    /// Imports the Weft image and installs the chart, waiting until the control plane and the
    /// injector are Ready.
    pub(crate) fn new(cluster: &'a mut Cluster, weft_dir: &Path) -> weft_k8s_lab::Result<Env<'a>> {
        let started = Instant::now();
        weft::import_app_image(cluster, weft_dir, &cluster.dir().join("app-image"))?;
        weft::import_product_images(
            cluster,
            weft_dir,
            &cluster.dir().join("product-images"),
            weft::TIER_TAG,
        )?;
        println!(
            "k8s tier: Weft's images imported in {:.1?}",
            started.elapsed()
        );
        let pki_dir = tempfile::tempdir().map_err(|e| weft_k8s_lab::Error::Io {
            what: "make a temp dir for the issuer".into(),
            source: e,
        })?;
        let pki = weft_lab::pki::Pki::create(pki_dir.path())?;
        let anchors =
            std::fs::read_to_string(pki.anchors()).map_err(|e| weft_k8s_lab::Error::Io {
                what: "read the anchors".into(),
                source: e,
            })?;
        let helm = Helm::locate(&cluster.dir().join("helm"))?.on(cluster.kubectl());
        let env = Env {
            cluster,
            anchors,
            helm,
            pki,
            _pki_dir: pki_dir,
        };
        if let Err(e) = env.helm_install(&[]) {
            return Err(weft_k8s_lab::Error::Component {
                component: "Weft's chart".into(),
                reason: e.to_string(),
                log: format!("kubectl -n {} (pods, events, logs)", weft::WEFT_NAMESPACE),
                tail: env.weft_diagnostics(),
            });
        }
        env.wait_ready(weft::WEFT_NAMESPACE, weft::CONTROL_PLANE_PODS)?;
        env.wait_ready(weft::WEFT_NAMESPACE, weft::INJECTOR_PODS)?;
        env.wait_ready(weft::WEFT_NAMESPACE, weft::CNI_PODS)?;
        println!(
            "k8s tier: Weft installed by its chart, Ready {:.1?} after the image import began",
            started.elapsed()
        );
        Ok(env)
    }

    /// `helm upgrade --install` of the chart with the tier's values and `sets` on top (values
    /// set before and not here go back to the tier's), waiting until it is Ready.
    pub(crate) fn helm_install(&self, sets: &[&str]) -> weft_k8s_lab::Result<String> {
        // The init-container mode's namespace is the CNI plugin's to leave alone, every time
        // (an upgrade without it would take it back).
        let exclude = format!(
            "cni.excludeNamespaces={{{}}}",
            crate::cases::INIT_MODE_NAMESPACE
        );
        let sets: Vec<&str> = std::iter::once(exclude.as_str())
            .chain(sets.iter().copied())
            .collect();
        weft::helm_install(&self.helm, self.cluster, &self.pki.issuer_dir(), &sets)
    }

    /// What Weft's pods say: their states, the namespace's events, and the end of every
    /// container's log (the previous run's too, for a container that crashed).
    pub(crate) fn weft_diagnostics(&self) -> String {
        let ns = weft::WEFT_NAMESPACE;
        let run = |args: &[&str]| self.kubectl().run(args).unwrap_or_else(|e| e.to_string());
        let mut out = run(&["-n", ns, "get", "pods", "-o", "wide"]);
        out += &run(&["-n", ns, "get", "events", "--sort-by=.lastTimestamp"]);
        for previous in ["--previous=false", "--previous=true"] {
            out += &run(&[
                "-n",
                ns,
                "logs",
                "-l",
                "app.kubernetes.io/name=weft",
                "--all-containers",
                "--prefix",
                "--tail=20",
                previous,
            ]);
        }
        out
    }

    /// `weftctl ARGS --kubeconfig <admin>` of this build, in the node's namespace (where the API
    /// server is): whether it exited 0, and its stdout and stderr.
    pub(crate) fn weftctl(&self, args: &[&str]) -> (bool, String, String) {
        let weftctl = weft::build_dir().expect("the build dir").join("weftctl");
        let out = Command::new("timeout")
            .args(["120", "ip", "netns", "exec", self.kubectl().netns()])
            .arg(&weftctl)
            .args(args)
            .arg("--kubeconfig")
            .arg(self.kubectl().kubeconfig())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", weftctl.display()));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// [`Env::weftctl`] started in the background, its output piped; at most 120 s.
    pub(crate) fn weftctl_spawn(&self, args: &[&str]) -> std::process::Child {
        let weftctl = weft::build_dir().expect("the build dir").join("weftctl");
        Command::new("timeout")
            .args(["120", "ip", "netns", "exec", self.kubectl().netns()])
            .arg(&weftctl)
            .args(args)
            .arg("--kubeconfig")
            .arg(self.kubectl().kubeconfig())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run {}: {e}", weftctl.display()))
    }

    /// Helm on the cluster.
    pub(crate) fn helm(&self) -> &Helm {
        &self.helm
    }

    pub(crate) fn cluster(&self) -> &Cluster {
        self.cluster
    }

    pub(crate) fn cluster_mut(&mut self) -> &mut Cluster {
        self.cluster
    }

    pub(crate) fn kubectl(&self) -> &Kubectl {
        self.cluster.kubectl()
    }

    /// `kubectl apply` that must succeed.
    pub(crate) fn apply(&self, yaml: &str) {
        if let Err(e) = self.kubectl().apply(yaml) {
            panic!("apply failed: {e}\n{yaml}");
        }
    }

    /// A namespace for a case, with the trust-anchor ConfigMap meshed pods mount.
    pub(crate) fn namespace(&self, name: &str) {
        self.apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n---\n{}",
            weft::anchors_configmap(name, &self.anchors)
        ));
    }

    /// [`Self::namespace`], labelled `weft.dev/inject=enabled`: the injector meshes its pods.
    pub(crate) fn injected_namespace(&self, name: &str) {
        self.namespace(name);
        self.apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels:\n    weft.dev/inject: enabled\n"
        ));
    }

    /// Applies `yaml` (pods for the injector) until the API server reaches the webhook
    /// (bounded): the injector's Service endpoints and kube-proxy's rules follow its readiness
    /// by a moment, and until then the API server cannot call it (and fails the pod, as
    /// `failurePolicy: Fail` says).
    pub(crate) fn apply_through_webhook(&self, yaml: &str) {
        wait(
            "the API server to reach the injector through its Service",
            Duration::from_secs(30),
            || self.kubectl().apply(yaml).ok(),
        );
    }

    /// A namespace with a meshed Deployment `api` of `replicas` test apps (ServiceAccount `api`,
    /// label `app=api`) behind the Service `api`, all Ready.
    pub(crate) fn meshed_api(&self, ns: &str, replicas: u32) {
        self.namespace(ns);
        self.apply(
            &AppPod::new(ns, "api", "api")
                .label("app", "api")
                .meshed()
                .deployment_yaml(replicas),
        );
        self.apply(&weft::service_yaml(ns, "api", "api"));
        self.ready(ns, "app=api");
    }

    /// [`Self::meshed_api`] and a meshed client Pod `client` (ServiceAccount `web`), all Ready:
    /// the client's PID (to send from its network namespace) and the Service's cluster IP:80.
    pub(crate) fn meshed_client_and_api(&self, ns: &str, replicas: u32) -> (String, String) {
        self.meshed_api(ns, replicas);
        self.apply(
            &AppPod::new(ns, "client", "web")
                .label("app", "web")
                .meshed()
                .yaml(),
        );
        self.ready(ns, "weft-lab=app");
        let ip = self.get(&["-n", ns, "service", "api"], "{.spec.clusterIP}");
        (self.pod_pid(ns, "client"), format!("{}:80", ip.trim()))
    }

    /// Runs `pod` as a Job and waits (bounded) for it to succeed or fail: `("1/", log)` when it
    /// succeeded, `("/1", log)` when it failed, with the log of its `container`.
    pub(crate) fn job(&self, pod: &AppPod, container: &str) -> (String, String) {
        self.apply(&pod.job_yaml());
        let ns = pod.namespace.as_str();
        let name = pod.name.as_str();
        let outcome = wait(&format!("the Job {name} to finish"), POD_PATIENCE, || {
            let status = self.get(
                &["-n", ns, "job", name],
                "{.status.succeeded}/{.status.failed}",
            );
            (status != "/").then_some(status)
        });
        let logs = self
            .kubectl()
            .run(&["-n", ns, "logs", &format!("job/{name}"), "-c", container])
            .unwrap_or_else(|e| e.to_string());
        (outcome, logs)
    }

    /// Waits until every pod matching `selector` in `ns` is Ready (at least one).
    pub(crate) fn wait_ready(&self, ns: &str, selector: &str) -> weft_k8s_lab::Result<()> {
        let what = format!("pods {selector} in {ns} to be Ready");
        wait_result(&what, POD_PATIENCE, || {
            let out = self
                .kubectl()
                .run(&[
                    "-n",
                    ns,
                    "get",
                    "pods",
                    "-l",
                    selector,
                    "-o",
                    "jsonpath={range .items[*]}{.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
                ])
                .ok()?;
            let lines: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
            (!lines.is_empty() && lines.iter().all(|l| *l == "True")).then_some(())
        })
        .map_err(|e| {
            let run = |args: &[&str]| self.kubectl().run(args).unwrap_or_else(|e| e.to_string());
            let describe = run(&["-n", ns, "describe", "pods", "-l", selector]);
            // No pod at all says nothing by itself: what the controllers and the scheduler did.
            let objects = run(&["-n", ns, "get", "deployments,replicasets,pods", "-o", "wide"]);
            let events = run(&["-n", ns, "get", "events", "--sort-by=.lastTimestamp"]);
            weft_k8s_lab::Error::Timeout {
                what: format!(
                    "{e}; the pods:\n{}\nthe namespace's workloads:\n{}\nits events:\n{}",
                    tail_text(&describe, 60),
                    tail_text(&objects, 20),
                    tail_text(&events, 30)
                ),
                after: POD_PATIENCE,
            }
        })
    }

    /// Like [`Env::wait_ready`], panicking with the pods' description.
    pub(crate) fn ready(&self, ns: &str, selector: &str) {
        if let Err(e) = self.wait_ready(ns, selector) {
            panic!("{e}");
        }
    }

    /// `kubectl exec -n ns pod -c container -- args`: (success, stdout, stderr).
    pub(crate) fn exec(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
        args: &[&str],
    ) -> (bool, String, String) {
        let mut all = vec!["-n", ns, "exec", pod, "-c", container, "--"];
        all.extend_from_slice(args);
        let out = self
            .kubectl()
            .outcome(&all, "")
            .unwrap_or_else(|e| panic!("kubectl exec: {e}"));
        (out.success, out.stdout, out.stderr)
    }

    /// The names of the pods of `ns` that `selector` (a label selector) picks.
    pub(crate) fn pod_names(&self, ns: &str, selector: &str) -> Vec<String> {
        self.get(
            &["-n", ns, "pods", "-l", selector],
            "{.items[*].metadata.name}",
        )
        .split_whitespace()
        .map(str::to_string)
        .collect()
    }

    /// A pod's proxy metrics, through the API server's pod proxy.
    pub(crate) fn proxy_metrics(&self, ns: &str, pod: &str) -> Metrics {
        self.metrics(&format!(
            "/api/v1/namespaces/{ns}/pods/{pod}:15190/proxy/metrics"
        ))
    }

    /// The requests `pod`'s proxy took in over mTLS from service account `from` of `ns`, as
    /// service account `to` (`weft_requests_total`, inbound, by both SPIFFE IDs).
    pub(crate) fn mtls_requests_in(&self, ns: &str, pod: &str, from: &str, to: &str) -> f64 {
        let (client, server) = (weft_lab::spiffe_id(ns, from), weft_lab::spiffe_id(ns, to));
        let inbound = [
            ("client_id", client.as_str()),
            ("direction", "inbound"),
            ("server_id", server.as_str()),
            ("tls", "true"),
        ];
        self.proxy_metrics(ns, pod)
            .sum("weft_requests_total", &inbound)
    }

    /// The control plane's metrics, through the API server's service proxy.
    pub(crate) fn control_plane_metrics(&self) -> Metrics {
        self.metrics(&format!(
            "/api/v1/namespaces/{}/services/{}:admin/proxy/metrics",
            weft::WEFT_NAMESPACE,
            weft::CONTROL_PLANE
        ))
    }

    fn metrics(&self, path: &str) -> Metrics {
        let text = self
            .kubectl()
            .run(&["get", "--raw", path])
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        Metrics::parse(&text).unwrap_or_else(|e| panic!("{path}: {e}\n{text}"))
    }

    /// A jsonpath of one object.
    pub(crate) fn get(&self, args: &[&str], jsonpath: &str) -> String {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        let path = format!("jsonpath={jsonpath}");
        all.extend_from_slice(&["-o", &path]);
        self.kubectl()
            .run(&all)
            .unwrap_or_else(|e| panic!("kubectl {}: {e}", all.join(" ")))
    }

    /// The PID of a pod's first container, from containerd (`ctr task ls`): a way into the
    /// pod's network namespace that needs no API server.
    pub(crate) fn pod_pid(&self, ns: &str, pod: &str) -> String {
        let id = self.get(
            &["-n", ns, "pod", pod],
            "{.status.containerStatuses[0].containerID}",
        );
        let id = id.trim().trim_start_matches("containerd://").to_string();
        let socket = self.cluster.dir().join("containerd.sock");
        let tasks = Command::new("ctr")
            .arg("--address")
            .arg(&socket)
            .args(["--namespace", "k8s.io", "task", "ls"])
            .output()
            .expect("ctr task ls");
        let tasks = String::from_utf8_lossy(&tasks.stdout).into_owned();
        tasks
            .lines()
            .find_map(|l| {
                let mut cols = l.split_whitespace();
                (cols.next()? == id).then(|| cols.next().map(str::to_string))?
            })
            .unwrap_or_else(|| panic!("no task {id} in:\n{tasks}"))
    }

    /// The `nat` table inside a pod's network namespace.
    pub(crate) fn pod_nat_rules(&self, ns: &str, pod: &str) -> String {
        let pid = self.pod_pid(ns, pod);
        let out = Command::new("nsenter")
            .args([
                "--target",
                &pid,
                "--net",
                "--",
                "iptables-save",
                "-t",
                "nat",
            ])
            .output()
            .expect("nsenter iptables-save");
        assert!(
            out.status.success(),
            "iptables-save in {pod}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// `GET path` from inside the network namespace of the process `pid` (a pod's), with this
/// build's `weft-lab-app`: works while the API server is down, unlike `kubectl exec`. The
/// pod's redirect rules send it through the pod's proxy like any app traffic. Returns the
/// answering pod's name.
pub(crate) fn get_in_netns_of(pid: &str, target: &str, path: &str) -> Result<String, String> {
    let app = weft::build_dir()
        .map_err(|e| e.to_string())?
        .join("weft-lab-app");
    let out = Command::new("timeout")
        .args(["10", "nsenter", "--target", pid, "--net", "--"])
        .arg(&app)
        .args(["get", target, path])
        .output()
        .map_err(|e| format!("run {}: {e}", app.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "GET {target}{path}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("pod="))
        .map(str::to_string)
        .ok_or_else(|| format!("no pod= in the answer: {stdout}"))
}

/// Polls `check` every 250 ms until it answers, for at most `patience`.
pub(crate) fn wait_result<T>(
    what: &str,
    patience: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T, String> {
    let start = Instant::now();
    let step = Duration::from_millis(250);
    for _ in 0..=(patience.as_millis() / step.as_millis()) {
        if let Some(v) = check() {
            return Ok(v);
        }
        if start.elapsed() > patience {
            break;
        }
        thread::sleep(step);
    }
    Err(format!("timed out after {patience:?} waiting for {what}"))
}

/// Like [`wait_result`], panicking on timeout.
pub(crate) fn wait<T>(what: &str, patience: Duration, check: impl FnMut() -> Option<T>) -> T {
    wait_result(what, patience, check).unwrap_or_else(|e| panic!("{e}"))
}

fn tail_text(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The end of every component's log, for a failed run.
pub(crate) fn print_logs(cluster: &Cluster) {
    // The plugin the chart's DaemonSet chains logs beside the components (the tier's values).
    let cni = ("weft-cni", cluster.cni_log("weft-cni"));
    for (name, log) in cluster.logs().into_iter().chain(Some(cni)) {
        eprintln!(
            "--- {name} (end of {}) ---\n{}",
            log.display(),
            tail(&log, 25)
        );
    }
}
