//! What a test asks for (pods and Services) and the Kubernetes YAML the control plane reads
//! for them: Pods with their IP and service account (and, when meshed, the `weft-proxy`
//! container and the `weft.dev/injected` annotation), Services with a cluster IP, and one
//! EndpointSlice per Service listing the ready pods its selector picks.

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddr},
};

use crate::{
    error::{Error, Result},
    redirect::{INBOUND_PORT, INJECTED},
};

/// The version the lab writes in `weft.dev/injected`.
pub const INJECTED_VERSION: &str = "0.1.0";

/// A pod to create.
#[derive(Debug, Clone)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    pub service_account: String,
    pub labels: Vec<(String, String)>,
    pub annotations: Vec<(String, String)>,
    /// Extra `WEFT_*` settings for the pod's proxy (e.g. `WEFT_INBOUND_MTLS=strict`).
    pub proxy_env: Vec<(String, String)>,
    /// Whether to run the test app (HTTP and echo) in the pod.
    pub app: bool,
    /// The address to give the pod (host-local's `IP` argument), instead of the next free one;
    /// it must lie in the pod subnet and be free.
    pub ip: Option<Ipv4Addr>,
}

impl PodSpec {
    /// An unmeshed pod `namespace/name` with service account `default` and the test app.
    pub fn new(namespace: &str, name: &str) -> PodSpec {
        PodSpec {
            namespace: namespace.into(),
            name: name.into(),
            service_account: "default".into(),
            labels: Vec::new(),
            annotations: Vec::new(),
            proxy_env: Vec::new(),
            app: true,
            ip: None,
        }
    }

    /// Asks for this address (in the pod subnet, free) instead of the next free one.
    pub fn ip(mut self, ip: Ipv4Addr) -> PodSpec {
        self.ip = Some(ip);
        self
    }

    /// Marks the pod meshed: `weft.dev/injected`, so it gets redirection rules and a proxy.
    pub fn meshed(self) -> PodSpec {
        self.annotation(INJECTED, INJECTED_VERSION)
    }

    pub fn service_account(mut self, sa: &str) -> PodSpec {
        self.service_account = sa.into();
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> PodSpec {
        self.labels.push((key.into(), value.into()));
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> PodSpec {
        self.annotations.retain(|(k, _)| k != key);
        self.annotations.push((key.into(), value.into()));
        self
    }

    /// A `WEFT_*` setting for the pod's proxy, over the lab's own.
    pub fn proxy_env(mut self, key: &str, value: &str) -> PodSpec {
        self.proxy_env.push((key.into(), value.into()));
        self
    }

    /// No test app in this pod.
    pub fn without_app(mut self) -> PodSpec {
        self.app = false;
        self
    }

    /// Whether the pod is meshed (has `weft.dev/injected`).
    pub fn is_meshed(&self) -> bool {
        self.annotations.iter().any(|(k, _)| k == INJECTED)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        dns_label("namespace", &self.namespace)?;
        dns_label("pod name", &self.name)?;
        dns_label("service account", &self.service_account)
    }
}

/// One port of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub name: String,
    /// The port on the cluster IP.
    pub port: u16,
    /// The port on the pods.
    pub target_port: u16,
}

/// A Service to create; its cluster IP comes from `198.19.0.0/24`.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    pub namespace: String,
    pub name: String,
    pub selector: Vec<(String, String)>,
    pub ports: Vec<ServicePort>,
}

impl ServiceSpec {
    pub fn new(namespace: &str, name: &str) -> ServiceSpec {
        ServiceSpec {
            namespace: namespace.into(),
            name: name.into(),
            selector: Vec::new(),
            ports: Vec::new(),
        }
    }

    /// Pods whose labels include every selector entry are its endpoints.
    pub fn selector(mut self, key: &str, value: &str) -> ServiceSpec {
        self.selector.push((key.into(), value.into()));
        self
    }

    pub fn port(mut self, name: &str, port: u16, target_port: u16) -> ServiceSpec {
        self.ports.push(ServicePort {
            name: name.into(),
            port,
            target_port,
        });
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        dns_label("namespace", &self.namespace)?;
        dns_label("service name", &self.name)?;
        if self.ports.is_empty() || self.selector.is_empty() {
            return Err(Error::Invalid {
                what: "service",
                value: self.name.clone(),
                reason: "needs at least one port and one selector entry",
            });
        }
        Ok(())
    }
}

/// A Service that exists in the cluster's config.
#[derive(Debug, Clone)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    /// The virtual IP: only the mesh's config knows it, no interface holds it.
    pub cluster_ip: Ipv4Addr,
    pub ports: Vec<ServicePort>,
}

impl Service {
    /// `cluster_ip:port`.
    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.cluster_ip, port))
    }

    /// `<name>.<namespace>.svc.cluster.local`.
    pub fn host(&self) -> String {
        format!("{}.{}.svc.cluster.local", self.name, self.namespace)
    }

    /// How the proxies' metrics name it: `<namespace>/<name>:<port>`.
    pub fn metrics_name(&self, port: u16) -> String {
        format!("{}/{}:{port}", self.namespace, self.name)
    }
}

/// A pod as the config sees it.
#[derive(Debug, Clone)]
pub(crate) struct PodDoc {
    pub(crate) spec: PodSpec,
    pub(crate) ip: Ipv4Addr,
}

/// A Service as the config sees it.
#[derive(Debug, Clone)]
pub(crate) struct ServiceDoc {
    pub(crate) service: Service,
    pub(crate) selector: Vec<(String, String)>,
}

/// The cluster's whole config folder file: every pod, Service and EndpointSlice.
pub(crate) fn render<'a>(
    pods: impl IntoIterator<Item = &'a PodDoc>,
    services: impl IntoIterator<Item = &'a ServiceDoc>,
) -> String {
    let pods: Vec<&PodDoc> = pods.into_iter().collect();
    let mut y = String::from("# Written by weft-lab: the pods and Services of one lab cluster.\n");
    for pod in &pods {
        render_pod(&mut y, pod);
    }
    for doc in services {
        let svc = &doc.service;
        render_service(&mut y, svc);
        let members: Vec<&PodDoc> = pods
            .iter()
            .copied()
            .filter(|p| {
                p.spec.namespace == svc.namespace
                    && doc.selector.iter().all(|sel| p.spec.labels.contains(sel))
            })
            .collect();
        render_slice(&mut y, svc, &members);
    }
    y
}

/// A YAML scalar: a JSON string is a valid double-quoted YAML scalar.
fn q(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

fn map(pairs: &[(String, String)]) -> String {
    let items: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}: {}", q(k), q(v)))
        .collect();
    format!("{{{}}}", items.join(", "))
}

fn render_pod(y: &mut String, pod: &PodDoc) {
    let s = &pod.spec;
    let _ = write!(
        y,
        "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {}\n  namespace: {}\n  labels: {}\n  annotations: {}\n\
         spec:\n  serviceAccountName: {}\n  containers:\n  - name: app\n    image: weft-lab-app\n",
        q(&s.name),
        q(&s.namespace),
        map(&s.labels),
        map(&s.annotations),
        q(&s.service_account),
    );
    if s.is_meshed() {
        let _ = write!(
            y,
            "  - name: weft-proxy\n    image: weft-proxy\n    ports:\n    - {{name: weft-inbound, containerPort: {INBOUND_PORT}}}\n"
        );
    }
    let _ = write!(
        y,
        "status:\n  phase: Running\n  podIP: {ip}\n  podIPs:\n  - {{ip: {ip}}}\n",
        ip = q(&pod.ip.to_string())
    );
}

fn render_service(y: &mut String, svc: &Service) {
    let _ = write!(
        y,
        "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {}\n  namespace: {}\nspec:\n  clusterIP: {}\n  ports:\n",
        q(&svc.name),
        q(&svc.namespace),
        q(&svc.cluster_ip.to_string()),
    );
    for p in &svc.ports {
        let _ = writeln!(
            y,
            "  - {{name: {}, port: {}, targetPort: {}, protocol: TCP}}",
            q(&p.name),
            p.port,
            p.target_port
        );
    }
}

fn render_slice(y: &mut String, svc: &Service, members: &[&PodDoc]) {
    let _ = write!(
        y,
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {}\n  namespace: {}\n  labels:\n    kubernetes.io/service-name: {}\naddressType: IPv4\nports:\n",
        q(&format!("{}-lab", svc.name)),
        q(&svc.namespace),
        q(&svc.name),
    );
    for p in &svc.ports {
        let _ = writeln!(
            y,
            "- {{name: {}, port: {}, protocol: TCP}}",
            q(&p.name),
            p.target_port
        );
    }
    if members.is_empty() {
        y.push_str("endpoints: []\n");
        return;
    }
    y.push_str("endpoints:\n");
    for pod in members {
        let _ = write!(
            y,
            "- addresses: [{}]\n  conditions: {{ready: true}}\n  targetRef: {{kind: Pod, name: {}, namespace: {}}}\n",
            q(&pod.ip.to_string()),
            q(&pod.spec.name),
            q(&pod.spec.namespace),
        );
    }
}

/// A Kubernetes DNS label: 1 to 63 of `a-z0-9-`, starting and ending alphanumeric.
fn dns_label(what: &'static str, value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid {
            what,
            value: value.into(),
            reason:
                "must be a DNS label: 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-'",
        })
    }
}
