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
/// The ClusterRole of the control plane: what `--source kubernetes` watches, and TokenReview.
pub const CONTROL_PLANE_RULES: &str = r#"- apiGroups: [""]
  resources: ["services", "pods"]
  verbs: ["list", "watch"]
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["list", "watch"]
- apiGroups: ["authentication.k8s.io"]
  resources: ["tokenreviews"]
  verbs: ["create"]"#;

/// The binaries of this build that go into the image, by their name in `target/<profile>`.
const BINARIES: [&str; 4] = [
    "weft-proxy",
    "weft-control-plane",
    "weft-init",
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
            return Err(Error::NotBuilt(format!(
                "{} is missing; `cargo build --workspace` builds it",
                src.display()
            )));
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
    image = image.dir("/tmp", 0o1777);
    cluster.import_image(&image)
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

/// A pod of the lab's test app, meshed or not.
#[derive(Debug, Clone)]
pub struct AppPod {
    pub namespace: String,
    pub name: String,
    pub service_account: String,
    pub labels: Vec<(String, String)>,
    /// With a `weft-proxy` sidecar (a native sidecar: an init container that keeps running).
    pub meshed: bool,
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
        }
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

    /// The pod's manifest (and its ServiceAccount's).
    pub fn yaml(&self) -> String {
        let mut labels = String::new();
        for (k, v) in &self.labels {
            let _ = write!(labels, "\n    {k}: {v}");
        }
        let sidecar = if self.meshed {
            proxy_sidecar()
        } else {
            String::new()
        };
        let volumes = if self.meshed {
            proxy_volumes()
        } else {
            String::new()
        };
        format!(
            r#"apiVersion: v1
kind: ServiceAccount
metadata:
  name: {sa}
  namespace: {ns}
---
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {ns}
  labels:
    weft-lab: app{labels}
spec:
  serviceAccountName: {sa}
  terminationGracePeriodSeconds: 2
{sidecar}  containers:
  - name: app
    image: {WEFT_IMAGE}
    imagePullPolicy: Never
    command: ["/usr/local/bin/weft-lab-app", "serve", "{name}"]
    ports:
    - {{name: http, containerPort: 8080}}
    - {{name: echo, containerPort: 9000}}
    readinessProbe:
      tcpSocket: {{port: 8080}}
      periodSeconds: 2
{volumes}"#,
            sa = self.service_account,
            ns = self.namespace,
            name = self.name,
        )
    }
}

/// The `weft-proxy` native sidecar, as the injector will write it: UID 2121, the identity
/// from a projected token for audience `identity.weft.dev`, the anchors from the ConfigMap
/// copied into the namespace, started (and ready) before the app.
fn proxy_sidecar() -> String {
    format!(
        r#"  initContainers:
  - name: weft-proxy
    image: {WEFT_IMAGE}
    imagePullPolicy: Never
    restartPolicy: Always
    command: ["/usr/local/bin/weft-proxy"]
    securityContext:
      runAsUser: 2121
      runAsGroup: 2121
      runAsNonRoot: true
      allowPrivilegeEscalation: false
    env:
    - {{name: WEFT_CONTROL_PLANE, value: "{CONTROL_PLANE_ADDR}"}}
    - {{name: WEFT_TRUST_ANCHORS, value: /var/run/weft/anchors/anchors.pem}}
    - {{name: WEFT_IDENTITY_TOKEN_FILE, value: /var/run/weft/token/token}}
    - name: WEFT_NAMESPACE
      valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}
    - name: WEFT_SERVICE_ACCOUNT
      valueFrom: {{fieldRef: {{fieldPath: spec.serviceAccountName}}}}
    - {{name: WEFT_LOG, value: "info"}}
    ports:
    - {{name: weft-inbound, containerPort: 15143}}
    - {{name: weft-admin, containerPort: 15190}}
    startupProbe:
      httpGet: {{path: /ready, port: 15190}}
      periodSeconds: 1
      failureThreshold: 120
    readinessProbe:
      httpGet: {{path: /ready, port: 15190}}
      periodSeconds: 2
    volumeMounts:
    - {{name: weft-token, mountPath: /var/run/weft/token, readOnly: true}}
    - {{name: weft-anchors, mountPath: /var/run/weft/anchors, readOnly: true}}
"#
    )
}

fn proxy_volumes() -> String {
    r#"  volumes:
  - name: weft-token
    projected:
      sources:
      - serviceAccountToken:
          audience: identity.weft.dev
          expirationSeconds: 3600
          path: token
  - name: weft-anchors
    configMap:
      name: weft-trust-anchors
"#
    .to_string()
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
