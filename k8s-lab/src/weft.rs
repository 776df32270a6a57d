//! Weft on the cluster: the image, Weft installed by its Helm chart (`helm/weft`), and test
//! pods, plain or with a `weft-proxy` sidecar written into their spec as the injector writes it
//! (for the cases that test the mesh apart from the injector).
//!
//! The image `weft.local/weft:dev` holds the Weft binaries of this build (debug info stripped)
//! and `weft-lab-app`, the lab's test app and client.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::{json, Value};
use weft_lab::process;

use crate::{
    cluster::Cluster,
    error::{Error, Result},
    helm::{self, Helm},
    image::ImageBuilder,
};

/// The image of the lab's test app and client, `weft-lab-app`; Weft's own containers run the
/// product images ([`PRODUCT_IMAGES`]) of the same build.
pub const APP_IMAGE: &str = "weft.local/weft-lab-app:dev";
/// The control plane's namespace, ServiceAccount and Service.
pub const WEFT_NAMESPACE: &str = "weft";
pub const CONTROL_PLANE: &str = "weft-control-plane";
/// Where a proxy reaches the control plane: its Service's DNS name.
pub const CONTROL_PLANE_ADDR: &str = "weft-control-plane.weft.svc.cluster.local:8443";
/// Builds [`APP_IMAGE`] from `bin_dir/weft-lab-app` (a stripped copy in `work`) and imports it
/// into the cluster.
pub fn import_app_image(cluster: &Cluster, bin_dir: &Path, work: &Path) -> Result<()> {
    std::fs::create_dir_all(work).map_err(Error::io(format!("create {}", work.display())))?;
    let app = stripped(APP_IMAGE, bin_dir, "weft-lab-app", work)?;
    let image = ImageBuilder::new(APP_IMAGE)
        .binary("/usr/local/bin/weft-lab-app", app)
        .dir("/tmp", 0o1777);
    cluster.import_image(&image)
}

/// Jaeger's image, for traces in the cluster: the binary `scripts/jaeger-build.sh` built (static,
/// no libraries), as user 65534.
pub const JAEGER_IMAGE: &str = "weft.local/jaeger:v1.75.0";

/// Builds [`JAEGER_IMAGE`] and imports it into the cluster.
pub fn import_jaeger_image(cluster: &Cluster) -> Result<()> {
    let bin = weft_lab::jaeger::locate().map_err(|e| Error::Image {
        image: JAEGER_IMAGE.into(),
        reason: e.to_string(),
    })?;
    let image = ImageBuilder::new(JAEGER_IMAGE)
        .binary("/usr/local/bin/jaeger", bin)
        .dir("/tmp", 0o1777)
        .entrypoint(["/usr/local/bin/jaeger"])
        .user(65534, 65534);
    cluster.import_image(&image)
}

/// A copy of `bin_dir/name` without debug info, in `work`: debug builds carry hundreds of MiB
/// of it that a container never reads.
fn stripped(image: &str, bin_dir: &Path, name: &str, work: &Path) -> Result<PathBuf> {
    let src = bin_dir.join(name);
    if !src.is_file() {
        return Err(Error::Image {
            image: image.into(),
            reason: format!(
                "{} is missing; `cargo build --workspace --bins` builds it",
                src.display()
            ),
        });
    }
    let out = work.join(name);
    process::run(
        Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&out)
            .arg(&src),
    )?;
    Ok(out)
}

/// The registry host Weft's images are named under (no registry is reachable here: they are
/// imported, never pulled).
pub const REGISTRY: &str = "weft.local";

/// One of the images `make images` builds and the chart runs: `<REGISTRY>/<repository>:<tag>`.
#[derive(Debug, Clone, Copy)]
pub struct ProductImage {
    pub repository: &'static str,
    /// Its program, at `/usr/local/bin/<binary>`, the entrypoint.
    pub binary: &'static str,
    /// Programs it carries for another to use, also in `/usr/local/bin` (the CNI installer's
    /// plugin, which it copies onto the node).
    pub carries: &'static [&'static str],
    /// The user it runs as unless the pod says otherwise.
    pub uid: u32,
    /// With Debian's iptables (nft and legacy) and its extensions, for `weft-init`.
    pub iptables: bool,
}

/// The product images: one program each with the libraries it links, no shell, no package
/// manager; UID 2121 but for `weft-init`, which runs as root to install iptables rules (the
/// injector gives it `NET_ADMIN` and `NET_RAW` only), and the CNI installer, root to write into
/// the node's CNI folders (the chart gives it no capability at all).
pub const PRODUCT_IMAGES: [ProductImage; 6] = [
    ProductImage {
        repository: "weft-proxy",
        binary: "weft-proxy",
        uid: 2121,
        carries: &[],
        iptables: false,
    },
    ProductImage {
        repository: "weft-control-plane",
        binary: "weft-control-plane",
        uid: 2121,
        carries: &[],
        iptables: false,
    },
    ProductImage {
        repository: "weft-injector",
        binary: "weft-injector",
        uid: 2121,
        carries: &[],
        iptables: false,
    },
    ProductImage {
        repository: "weft-init",
        binary: "weft-init",
        uid: 0,
        carries: &[],
        iptables: true,
    },
    // The chart's CNI DaemonSet: the installer and the plugin it installs.
    ProductImage {
        repository: "weft-cni",
        binary: "weft-cni-install",
        carries: &["weft-cni"],
        uid: 0,
        iptables: false,
    },
    // `helm test`'s `weftctl check`.
    ProductImage {
        repository: "weftctl",
        binary: "weftctl",
        uid: 2121,
        carries: &[],
        iptables: false,
    },
];

/// The reference of the product image `repository` at the tier's tag.
fn product_image(repository: &str) -> String {
    format!("{REGISTRY}/{repository}:{TIER_TAG}")
}

impl ProductImage {
    /// Its full reference at `tag`.
    pub fn reference(&self, tag: &str) -> String {
        format!("{REGISTRY}/{}:{tag}", self.repository)
    }

    /// The image at `tag` from the binaries in `bin_dir` (stripped copies in `work`).
    pub fn build(&self, bin_dir: &Path, work: &Path, tag: &str) -> Result<ImageBuilder> {
        let reference = self.reference(tag);
        let dir = work.join(self.repository);
        std::fs::create_dir_all(&dir).map_err(Error::io(format!("create {}", dir.display())))?;
        let binary = stripped(&reference, bin_dir, self.binary, &dir)?;
        let path = format!("/usr/local/bin/{}", self.binary);
        let mut image = ImageBuilder::new(reference)
            .binary(&path, binary)
            .entrypoint([path.as_str()])
            .user(self.uid, self.uid);
        for name in self.carries {
            let carried = stripped(&self.reference(tag), bin_dir, name, &dir)?;
            image = image.binary(&format!("/usr/local/bin/{name}"), carried);
        }
        if self.iptables {
            with_iptables(image)
        } else {
            Ok(image)
        }
    }
}

/// Builds every [`PRODUCT_IMAGES`] at `tag` from `bin_dir` and imports it into the cluster.
pub fn import_product_images(
    cluster: &Cluster,
    bin_dir: &Path,
    work: &Path,
    tag: &str,
) -> Result<()> {
    for image in PRODUCT_IMAGES {
        cluster.import_image(&image.build(bin_dir, work, tag)?)?;
    }
    Ok(())
}

/// Where Debian's iptables keeps the extensions its binaries `dlopen` (which `ldd` cannot see).
const XTABLES_DIR: &str = "/usr/lib/x86_64-linux-gnu/xtables";

/// Debian's iptables (nft and legacy) for `weft-init`: both multi-call binaries with their
/// libraries, the command names as symlinks (plain `iptables` is the nft one, as on Debian),
/// and every extension module.
fn with_iptables(mut image: ImageBuilder) -> Result<ImageBuilder> {
    for multi in ["xtables-nft-multi", "xtables-legacy-multi"] {
        image = image.binary(
            &format!("/usr/sbin/{multi}"),
            Path::new("/usr/sbin").join(multi),
        );
    }
    for family in ["iptables", "ip6tables"] {
        for suffix in ["", "-save", "-restore"] {
            image = image.symlink(&format!("/usr/sbin/{family}{suffix}"), "xtables-nft-multi");
            let nft = format!("/usr/sbin/{family}-nft{suffix}");
            let legacy = format!("/usr/sbin/{family}-legacy{suffix}");
            image = image
                .symlink(&nft, "xtables-nft-multi")
                .symlink(&legacy, "xtables-legacy-multi");
        }
    }
    let entries = std::fs::read_dir(XTABLES_DIR).map_err(Error::io(format!(
        "list {XTABLES_DIR} (Debian package iptables)"
    )))?;
    for entry in entries {
        let entry = entry.map_err(Error::io(format!("list {XTABLES_DIR}")))?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "so") {
            let name = entry.file_name();
            let dst = format!("{XTABLES_DIR}/{}", name.to_string_lossy());
            image = image.binary(&dst, path);
        }
    }
    Ok(image)
}

/// A pod of the lab's test app (`weft-lab-app serve`, or a command of the caller's), meshed
/// or not; as a bare Pod, a Deployment or a Job. Written as JSON, which `kubectl apply` takes
/// as it takes YAML.
#[derive(Debug, Clone)]
pub struct AppPod {
    pub namespace: String,
    pub name: String,
    pub service_account: String,
    pub labels: Vec<(String, String)>,
    /// With a `weft-proxy` sidecar (a native sidecar: an init container that keeps running).
    pub meshed: bool,
    /// The proxy's token: a projected service-account token for `identity.weft.dev` (`None`),
    /// or the `token` key of this Secret (for tests of tokens the control plane must refuse).
    pub token_secret: Option<String>,
    /// The app container's command; `weft-lab-app serve <pod name>` when `None`.
    pub command: Option<Vec<String>>,
    /// Redirection by a `weft-init` init container (the init-container mode) rather than by
    /// `weft-cni`.
    pub init_container: bool,
}

impl AppPod {
    /// A pod `name` in `namespace` running as `service_account`.
    pub fn new(namespace: &str, name: &str, service_account: &str) -> AppPod {
        AppPod {
            namespace: namespace.into(),
            name: name.into(),
            service_account: service_account.into(),
            labels: Vec::new(),
            meshed: false,
            token_secret: None,
            command: None,
            init_container: false,
        }
    }

    /// With `weft-init` as the first init container (the pod's namespace must be one that
    /// `weft-cni` skips, or both install the same rules).
    pub fn init_container(mut self) -> AppPod {
        self.init_container = true;
        self
    }

    /// With label `key=value`.
    pub fn label(mut self, key: &str, value: &str) -> AppPod {
        self.labels.push((key.into(), value.into()));
        self
    }

    /// With the proxy.
    pub fn meshed(mut self) -> AppPod {
        self.meshed = true;
        self
    }

    /// The proxy's token from Secret `name` instead of a projected one.
    pub fn token_secret(mut self, name: &str) -> AppPod {
        self.token_secret = Some(name.into());
        self
    }

    /// The app container runs `argv` instead of serving.
    pub fn command(mut self, argv: &[&str]) -> AppPod {
        self.command = Some(argv.iter().map(|a| a.to_string()).collect());
        self
    }

    /// The ServiceAccount and the Pod.
    pub fn yaml(&self) -> String {
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": self.metadata(&self.name),
            "spec": self.spec("Always"),
        });
        self.with_service_account(&pod)
    }

    /// The ServiceAccount and a Deployment of `replicas` such pods (named by the
    /// ReplicaSet; each app answers with its own pod name).
    pub fn deployment_yaml(&self, replicas: u32) -> String {
        let deployment = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"weft-lab-deployment": self.name}},
                "template": {
                    "metadata": {
                        "labels": self.labels_json(Some(&self.name)),
                    },
                    "spec": self.spec("Always"),
                },
            },
        });
        self.with_service_account(&deployment)
    }

    /// The ServiceAccount and a Job of one such pod, not retried: it is complete when its app
    /// container exits 0 (a native sidecar does not keep it running).
    pub fn job_yaml(&self) -> String {
        let job = json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "metadata": {"labels": self.labels_json(None)},
                    "spec": self.spec("Never"),
                },
            },
        });
        self.with_service_account(&job)
    }

    fn with_service_account(&self, object: &Value) -> String {
        let sa = json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": self.service_account, "namespace": self.namespace},
        });
        format!("{sa}\n---\n{object}\n")
    }

    fn metadata(&self, name: &str) -> Value {
        json!({
            "name": name,
            "namespace": self.namespace,
            "labels": self.labels_json(None),
        })
    }

    fn labels_json(&self, deployment: Option<&str>) -> Value {
        let mut labels = serde_json::Map::new();
        labels.insert("weft-lab".into(), "app".into());
        if let Some(d) = deployment {
            labels.insert("weft-lab-deployment".into(), d.into());
        }
        for (k, v) in &self.labels {
            labels.insert(k.clone(), v.clone().into());
        }
        Value::Object(labels)
    }

    fn spec(&self, restart: &str) -> Value {
        let command = self.command.clone().unwrap_or_else(|| {
            // `$(POD_NAME)` is expanded by the kubelet from the env below.
            ["/usr/local/bin/weft-lab-app", "serve", "$(POD_NAME)"]
                .map(String::from)
                .to_vec()
        });
        let serving = self.command.is_none();
        let mut app = json!({
            "name": "app",
            "image": APP_IMAGE,
            "imagePullPolicy": "Never",
            "command": command,
            "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        });
        if serving {
            app["ports"] = json!([
                {"name": "http", "containerPort": 8080},
                {"name": "echo", "containerPort": 9000},
            ]);
            app["readinessProbe"] = json!({"tcpSocket": {"port": 8080}, "periodSeconds": 2});
        }
        let mut spec = json!({
            "serviceAccountName": self.service_account,
            "terminationGracePeriodSeconds": 2,
            "restartPolicy": restart,
            "containers": [app],
        });
        if self.meshed {
            spec["initContainers"] = if self.init_container {
                json!([init_container(), proxy_sidecar()])
            } else {
                json!([proxy_sidecar()])
            };
            let token = match &self.token_secret {
                None => {
                    json!({"name": "weft-token", "projected": {"sources": [{"serviceAccountToken": {
                    "audience": "identity.weft.dev", "expirationSeconds": 3600, "path": "token"}}]}})
                }
                Some(secret) => json!({"name": "weft-token", "secret": {"secretName": secret}}),
            };
            spec["volumes"] = json!([
                token,
                {"name": "weft-anchors", "configMap": {"name": "weft-trust-anchors"}},
            ]);
        }
        spec
    }
}

/// `weft-init` from its product image (its entrypoint), as the injector writes it when the CNI
/// plugin is not in use: runs first, as root with only `NET_ADMIN` and `NET_RAW`, installs the
/// pod's redirect rules and exits.
fn init_container() -> Value {
    json!({
        "name": "weft-init",
        "image": product_image("weft-init"),
        "imagePullPolicy": "Never",
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": false,
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]},
        },
    })
}

/// The `weft-proxy` native sidecar from its product image (its entrypoint), much as the
/// injector writes it: UID 2121, the identity from a projected token for audience
/// `identity.weft.dev`, the anchors from the ConfigMap copied into the namespace, started (and
/// ready) before the app.
fn proxy_sidecar() -> Value {
    let field = |path: &str| json!({"fieldRef": {"fieldPath": path}});
    json!({
        "name": "weft-proxy",
        "image": product_image("weft-proxy"),
        "imagePullPolicy": "Never",
        "restartPolicy": "Always",
        "securityContext": {
            "runAsUser": 2121,
            "runAsGroup": 2121,
            "runAsNonRoot": true,
            "allowPrivilegeEscalation": false,
        },
        "env": [
            {"name": "WEFT_CONTROL_PLANE", "value": CONTROL_PLANE_ADDR},
            {"name": "WEFT_TRUST_ANCHORS", "value": "/var/run/weft/anchors/anchors.pem"},
            {"name": "WEFT_IDENTITY_TOKEN_FILE", "value": "/var/run/weft/token/token"},
            {"name": "WEFT_NAMESPACE", "valueFrom": field("metadata.namespace")},
            {"name": "WEFT_SERVICE_ACCOUNT", "valueFrom": field("spec.serviceAccountName")},
            {"name": "WEFT_LOG", "value": "info"},
        ],
        "ports": [
            {"name": "weft-inbound", "containerPort": 15143},
            {"name": "weft-admin", "containerPort": 15190},
        ],
        "startupProbe": {"httpGet": {"path": "/ready", "port": 15190}, "periodSeconds": 1, "failureThreshold": 120},
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 15190}, "periodSeconds": 2},
        "volumeMounts": [
            {"name": "weft-token", "mountPath": "/var/run/weft/token", "readOnly": true},
            {"name": "weft-anchors", "mountPath": "/var/run/weft/anchors", "readOnly": true},
        ],
    })
}

/// The injector's name: its Deployment, Service, ServiceAccount and webhook configuration.
pub const INJECTOR: &str = "weft-injector";

/// The tag of the product images the k8s tier builds from the binaries under test.
pub const TIER_TAG: &str = "dev";

/// The chart's release name in the cluster.
pub const RELEASE: &str = "weft";

/// The label selectors of the control plane's and the injector's pods, as the chart labels them.
pub const CONTROL_PLANE_PODS: &str =
    "app.kubernetes.io/name=weft,app.kubernetes.io/component=control-plane";
pub const INJECTOR_PODS: &str = "app.kubernetes.io/name=weft,app.kubernetes.io/component=injector";
/// The CNI DaemonSet's pods.
pub const CNI_PODS: &str = "app.kubernetes.io/name=weft,app.kubernetes.io/component=cni";

/// The chart's values for `cluster`, around the identity files: the product images of this
/// build at tag [`TIER_TAG`] (imported, never pulled), the chart's CNI DaemonSet installing
/// `weft-cni` into the node's CNI folders (so no `weft-init` in injected pods) with its log in
/// the cluster's, and the control plane's debug lines.
pub fn chart_values(cluster: &Cluster) -> String {
    // JSON strings are YAML strings: any path is quoted right.
    let quoted = |p: PathBuf| serde_json::Value::from(p.display().to_string()).to_string();
    format!(
        r#"image:
  registry: {REGISTRY}
  tag: {TIER_TAG}
  pullPolicy: Never
controlPlane:
  logLevel: info,weft=debug
cni:
  enabled: true
  binDir: {bin}
  confDir: {conf}
  logFile: {log}
  logLevel: debug
"#,
        bin = quoted(cluster.cni_bin_dir()),
        conf = quoted(cluster.cni_conf_dir()),
        log = quoted(cluster.cni_log("weft-cni")),
    )
}

/// `helm upgrade --install` of the chart into [`WEFT_NAMESPACE`] of `cluster` with
/// [`chart_values`] (written into its folder), the identity from `issuer_dir` (`issuer.crt`,
/// `issuer.key`, `anchors.pem`) and `sets` (`key=value`) on top; waits (Helm's watcher) until
/// every Deployment and DaemonSet is Ready.
pub fn helm_install(
    helm: &Helm,
    cluster: &Cluster,
    issuer_dir: &Path,
    sets: &[&str],
) -> Result<String> {
    let work = cluster.dir();
    std::fs::create_dir_all(work).map_err(Error::io(format!("create {}", work.display())))?;
    let values = work.join("weft-values.yaml");
    std::fs::write(&values, chart_values(cluster))
        .map_err(Error::io(format!("write {}", values.display())))?;
    let chart = helm::chart_dir();
    let file = |name: &str| issuer_dir.join(name).display().to_string();
    let files = [
        format!("identity.trustAnchorsPEM={}", file("anchors.pem")),
        format!("identity.issuer.crtPEM={}", file("issuer.crt")),
        format!("identity.issuer.keyPEM={}", file("issuer.key")),
    ];
    let (chart, values) = (chart.display().to_string(), values.display().to_string());
    let mut args = vec![
        "upgrade",
        "--install",
        RELEASE,
        &chart,
        "--namespace",
        WEFT_NAMESPACE,
        "--create-namespace",
        "--wait=watcher",
        "--timeout=150s",
        "-f",
        &values,
    ];
    for f in &files {
        args.extend(["--set-file", f.as_str()]);
    }
    for s in sets {
        args.extend(["--set", s]);
    }
    helm.run(&args)
}

/// The trust-anchor ConfigMap in namespace `ns` (a pod can only mount a ConfigMap of its own
/// namespace; the injector or the chart will do the same copy).
pub fn anchors_configmap(ns: &str, anchors_pem: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: weft-trust-anchors\n  namespace: {ns}\ndata:\n  anchors.pem: |\n{}",
        indent(anchors_pem, 4)
    )
}

/// A Service `name` in `ns` selecting `app=<app>`, port 80 to the app's 8080 and 9000 to 9000.
pub fn service_yaml(ns: &str, name: &str, app: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {ns}
spec:
  selector: {{app: {app}}}
  ports:
  - {{name: http, port: 80, targetPort: 8080}}
  - {{name: echo, port: 9000, targetPort: 9000}}
"#
    )
}

fn indent(text: &str, spaces: usize) -> String {
    let pad = " ".repeat(spaces);
    let mut out = String::new();
    for line in text.lines() {
        let _ = writeln!(out, "{pad}{line}");
    }
    out
}

/// Where the Weft binaries of the running build are: next to the test executable
/// (`target/<profile>`, or its parent when run from `deps/`).
pub fn build_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(Error::io("find the running executable"))?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    Ok(dir)
}
