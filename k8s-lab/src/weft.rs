//! Weft on the cluster, installed the way the Helm chart will install it (until the chart
//! exists, the tests need these objects written somewhere): the image, the control plane with
//! its ServiceAccount, least-privilege RBAC, issuer Secret and trust-anchor ConfigMap, and
//! pods with a `weft-proxy` sidecar written into their spec, as the injector will write it.
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
    image::ImageBuilder,
};

/// The image every Weft container and test app runs.
pub const WEFT_IMAGE: &str = "weft.local/weft:dev";
/// The control plane's namespace, ServiceAccount and Service.
pub const WEFT_NAMESPACE: &str = "weft";
pub const CONTROL_PLANE: &str = "weft-control-plane";
/// Where a proxy reaches the control plane: its Service's DNS name.
pub const CONTROL_PLANE_ADDR: &str = "weft-control-plane.weft.svc.cluster.local:8443";
/// The ClusterRole of the control plane: what `--source kubernetes` watches, TokenReview, and
/// the HTTPRoute status it writes (`patch`, and `get` to read it again after a conflict).
pub const CONTROL_PLANE_RULES: &str = r#"- apiGroups: [""]
  resources: ["services", "pods"]
  verbs: ["list", "watch"]
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["list", "watch"]
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes", "referencegrants"]
  verbs: ["list", "watch"]
- apiGroups: ["split.smi-spec.io"]
  resources: ["trafficsplits"]
  verbs: ["list", "watch"]
- apiGroups: ["weft.dev"]
  resources: ["httpfaults"]
  verbs: ["list", "watch"]
- apiGroups: ["authentication.k8s.io"]
  resources: ["tokenreviews"]
  verbs: ["create"]
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes/status"]
  verbs: ["get", "patch"]"#;

/// The binaries of this build that go into the image, by their name in `target/<profile>`.
const BINARIES: [&str; 5] = [
    "weft-proxy",
    "weft-control-plane",
    "weft-init",
    "weft-injector",
    "weft-lab-app",
];

/// Builds [`WEFT_IMAGE`] from the binaries in `bin_dir` (stripped copies in `work`) and
/// imports it into the cluster.
pub fn import_image(cluster: &Cluster, bin_dir: &Path, work: &Path) -> Result<()> {
    std::fs::create_dir_all(work).map_err(Error::io(format!("create {}", work.display())))?;
    let mut image = ImageBuilder::new(WEFT_IMAGE);
    for name in BINARIES {
        let src = bin_dir.join(name);
        if !src.is_file() {
            return Err(Error::Image {
                image: WEFT_IMAGE.into(),
                reason: format!(
                    "{} is missing; `cargo build --workspace --bins` builds it",
                    src.display()
                ),
            });
        }
        let stripped = work.join(name);
        // Debug builds carry hundreds of MiB of debug info that a container never reads.
        process::run(
            Command::new("strip")
                .arg("--strip-debug")
                .arg("-o")
                .arg(&stripped)
                .arg(&src),
        )?;
        image = image.binary(&format!("/usr/local/bin/{name}"), stripped);
    }
    image = with_iptables(image.dir("/tmp", 0o1777))?;
    cluster.import_image(&image)
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

/// The control plane's objects: namespace, ServiceAccount, ClusterRole and binding, the
/// issuer Secret and anchors ConfigMap (from `issuer_dir`: `issuer.crt`, `issuer.key`,
/// `anchors.pem`), a Deployment of one replica and its Service.
pub fn control_plane_yaml(issuer_dir: &Path) -> Result<String> {
    let read = |file: &str| -> Result<String> {
        let path = issuer_dir.join(file);
        std::fs::read_to_string(&path).map_err(Error::io(format!("read {}", path.display())))
    };
    let (crt, key, anchors) = (
        read("issuer.crt")?,
        read("issuer.key")?,
        read("anchors.pem")?,
    );
    Ok(format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: {WEFT_NAMESPACE}
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {CONTROL_PLANE}
  namespace: {WEFT_NAMESPACE}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {CONTROL_PLANE}
rules:
{CONTROL_PLANE_RULES}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {CONTROL_PLANE}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {CONTROL_PLANE}
subjects:
- kind: ServiceAccount
  name: {CONTROL_PLANE}
  namespace: {WEFT_NAMESPACE}
---
apiVersion: v1
kind: Secret
metadata:
  name: weft-issuer
  namespace: {WEFT_NAMESPACE}
stringData:
  issuer.crt: |
{crt}  issuer.key: |
{key}  anchors.pem: |
{anchors_indented}---
apiVersion: v1
kind: ConfigMap
metadata:
  name: weft-trust-anchors
  namespace: {WEFT_NAMESPACE}
data:
  anchors.pem: |
{anchors_indented}---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {CONTROL_PLANE}
  namespace: {WEFT_NAMESPACE}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: {CONTROL_PLANE}}}
  template:
    metadata:
      labels: {{app: {CONTROL_PLANE}}}
    spec:
      serviceAccountName: {CONTROL_PLANE}
      containers:
      - name: control-plane
        image: {WEFT_IMAGE}
        imagePullPolicy: Never
        command: ["/usr/local/bin/weft-control-plane"]
        args: ["--source", "kubernetes", "--issuer", "/var/run/weft/issuer", "--log", "info,weft=debug"]
        env:
        - name: POD_NAMESPACE
          valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}
        ports:
        - {{name: grpc, containerPort: 8443}}
        - {{name: admin, containerPort: 9990}}
        readinessProbe:
          httpGet: {{path: /ready, port: 9990}}
          periodSeconds: 2
        livenessProbe:
          httpGet: {{path: /live, port: 9990}}
          periodSeconds: 10
        volumeMounts:
        - {{name: issuer, mountPath: /var/run/weft/issuer, readOnly: true}}
      volumes:
      - name: issuer
        secret:
          secretName: weft-issuer
---
apiVersion: v1
kind: Service
metadata:
  name: {CONTROL_PLANE}
  namespace: {WEFT_NAMESPACE}
spec:
  selector: {{app: {CONTROL_PLANE}}}
  ports:
  - {{name: grpc, port: 8443, targetPort: 8443}}
  - {{name: admin, port: 9990, targetPort: 9990}}
"#,
        crt = indent(&crt, 4),
        key = indent(&key, 4),
        anchors_indented = indent(&anchors, 4),
    ))
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
            "image": WEFT_IMAGE,
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

/// `weft-init`, as the injector will write it when the CNI plugin is not in use: runs first,
/// as root with only `NET_ADMIN` and `NET_RAW`, installs the pod's redirect rules and exits.
fn init_container() -> Value {
    json!({
        "name": "weft-init",
        "image": WEFT_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["/usr/local/bin/weft-init"],
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": false,
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]},
        },
    })
}

/// The `weft-proxy` native sidecar, as the injector will write it: UID 2121, the identity
/// from a projected token for audience `identity.weft.dev`, the anchors from the ConfigMap
/// copied into the namespace, started (and ready) before the app.
fn proxy_sidecar() -> Value {
    let field = |path: &str| json!({"fieldRef": {"fieldPath": path}});
    json!({
        "name": "weft-proxy",
        "image": WEFT_IMAGE,
        "imagePullPolicy": "Never",
        "restartPolicy": "Always",
        "command": ["/usr/local/bin/weft-proxy"],
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

/// The injector in [`WEFT_NAMESPACE`], serving `cert_pem`/`key_pem` (for
/// `weft-injector.weft.svc`), called for pods of namespaces labelled `weft.dev/inject=enabled`
/// only (the other cases' pods never meet it), with the image's binaries named as commands, the
/// CNI plugin redirecting (`--cni`), `failurePolicy: Fail`. `ca_bundle` is the
/// base64 of the PEM the API server checks the serving certificate against. The control plane
/// must be installed (its trust-anchor ConfigMap is mounted).
pub fn injector_yaml(cert_pem: &str, key_pem: &str, ca_bundle: &str) -> String {
    let cert = indent(cert_pem, 4);
    let key = indent(key_pem, 4);
    let ca_bundle = ca_bundle.trim();
    format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata:
  name: {INJECTOR}
  namespace: {WEFT_NAMESPACE}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {INJECTOR}
rules:
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {INJECTOR}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {INJECTOR}
subjects:
- kind: ServiceAccount
  name: {INJECTOR}
  namespace: {WEFT_NAMESPACE}
---
apiVersion: v1
kind: Secret
metadata:
  name: {INJECTOR}-tls
  namespace: {WEFT_NAMESPACE}
type: kubernetes.io/tls
stringData:
  tls.crt: |
{cert}  tls.key: |
{key}---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {INJECTOR}
  namespace: {WEFT_NAMESPACE}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: {INJECTOR}}}
  template:
    metadata:
      labels: {{app: {INJECTOR}}}
    spec:
      serviceAccountName: {INJECTOR}
      terminationGracePeriodSeconds: 5
      containers:
      - name: injector
        image: {WEFT_IMAGE}
        imagePullPolicy: Never
        command: ["/usr/local/bin/weft-injector"]
        args:
        - --tls-cert=/var/run/weft/tls/tls.crt
        - --tls-key=/var/run/weft/tls/tls.key
        - --trust-anchors=/var/run/weft/anchors/anchors.pem
        - --proxy-image={WEFT_IMAGE}
        - --init-image={WEFT_IMAGE}
        - --image-pull-policy=Never
        - --proxy-command=/usr/local/bin/weft-proxy
        - --init-command=/usr/local/bin/weft-init
        - --control-plane={CONTROL_PLANE_ADDR}
        - --cni
        env:
        - {{name: WEFT_NAMESPACE, valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}}}
        ports:
        - {{name: webhook, containerPort: 9443}}
        - {{name: admin, containerPort: 9990}}
        readinessProbe:
          httpGet: {{path: /ready, port: 9990}}
          periodSeconds: 1
        securityContext:
          runAsUser: 2121
          runAsNonRoot: true
          readOnlyRootFilesystem: true
          allowPrivilegeEscalation: false
          capabilities: {{drop: ["ALL"]}}
        volumeMounts:
        - {{name: tls, mountPath: /var/run/weft/tls, readOnly: true}}
        - {{name: anchors, mountPath: /var/run/weft/anchors, readOnly: true}}
      volumes:
      - {{name: tls, secret: {{secretName: {INJECTOR}-tls}}}}
      - {{name: anchors, configMap: {{name: weft-trust-anchors}}}}
---
apiVersion: v1
kind: Service
metadata:
  name: {INJECTOR}
  namespace: {WEFT_NAMESPACE}
spec:
  selector: {{app: {INJECTOR}}}
  ports:
  - {{name: webhook, port: 443, targetPort: 9443}}
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: {INJECTOR}
webhooks:
- name: inject.weft.dev
  admissionReviewVersions: ["v1"]
  sideEffects: None
  failurePolicy: Fail
  reinvocationPolicy: IfNeeded
  timeoutSeconds: 10
  clientConfig:
    service: {{name: {INJECTOR}, namespace: {WEFT_NAMESPACE}, path: /inject, port: 443}}
    caBundle: {ca_bundle}
  rules:
  - {{operations: ["CREATE"], apiGroups: [""], apiVersions: ["v1"], resources: ["pods"], scope: Namespaced}}
  namespaceSelector:
    matchLabels: {{weft.dev/inject: enabled}}
"#
    )
}

/// [`injector_yaml`] with a new self-signed serving certificate for the injector's Service
/// names, which is also the webhook's CA bundle.
pub fn injector_yaml_with_new_certificate() -> Result<String> {
    use base64::{prelude::BASE64_STANDARD, Engine as _};
    let names = [
        format!("{INJECTOR}.{WEFT_NAMESPACE}.svc"),
        format!("{INJECTOR}.{WEFT_NAMESPACE}.svc.cluster.local"),
    ];
    let cert = rcgen::generate_simple_self_signed(names.to_vec()).map_err(|source| Error::Pki {
        what: "the injector's serving certificate".into(),
        source,
    })?;
    let pem = cert.cert.pem();
    Ok(injector_yaml(
        &pem,
        &cert.signing_key.serialize_pem(),
        &BASE64_STANDARD.encode(pem.as_bytes()),
    ))
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
