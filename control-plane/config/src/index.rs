//! From a [`Snapshot`] to what a proxy is told about one destination. Pure: no I/O, no clock.
//!
//! A destination ([`Target`]) is a Service's cluster IP and port (what a redirected
//! connection's original destination is), the Service's DNS name and port, or a pod's IP and
//! port (a client calling a pod directly, a headless Service). The answer ([`Answer`]) is the
//! ready endpoints of that Service port, each with the identity its proxy must present, or
//! "not a Service" (the proxy forwards as it is).
//!
//! What Kubernetes users expect, as Linkerd's destination service and Istio's EDS give it:
//! - the Service port's `targetPort` is resolved through the EndpointSlice ports by port name
//!   (as kube-proxy does), so a named target port may differ per pod;
//! - an endpoint is used when `conditions.ready` is not false, at its first address (the API
//!   says the addresses of one endpoint are fungible);
//! - an endpoint's pod comes from its `targetRef`, else from its address; the pod is meshed
//!   when it runs a container named `weft-proxy` (or carries `weft.dev/injected`) and is not
//!   annotated `weft.dev/inject: disabled` (`weft_pod::decide`, the CNI's decision too: a pod
//!   it gives no rules is reached in plaintext), reached on that container's `weft-inbound` port
//!   (default 15143), and must present
//!   `spiffe://<trust-domain>/ns/<pod namespace>/sa/<service account or default>`;
//! - a Service with no ready endpoints is still a Service: the answer is an empty set, and the
//!   proxy answers 503 rather than sending the traffic around the mesh.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
    net::{IpAddr, SocketAddr},
    str::FromStr,
    sync::Arc,
};

use k8s_openapi::api::{
    core::v1::{Pod, Service, ServicePort},
    discovery::v1::{Endpoint, EndpointSlice},
};
use weft_api::destination as pb;
use weft_pod::ids;

use crate::model::{changed, Key, Snapshot, SERVICE_NAME_LABEL};

/// Longest target string accepted.
pub const MAX_TARGET_LEN: usize = 320;

/// A destination a proxy asks about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// An IP and port: a Service's cluster IP, or a pod's IP.
    Addr(SocketAddr),
    /// `name.namespace.svc.<cluster-domain>:port`.
    Name {
        namespace: String,
        name: String,
        port: u16,
    },
}

/// Why a target string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("target {target:?}: {reason}")]
pub struct TargetError {
    target: String,
    reason: &'static str,
}

impl Target {
    /// Parses `ip:port`, `[v6]:port` or `name.namespace.svc.<cluster_domain>:port`.
    pub fn parse(s: &str, cluster_domain: &str) -> Result<Self, TargetError> {
        let err = |reason| TargetError {
            target: s.chars().take(64).collect(),
            reason,
        };
        if s.len() > MAX_TARGET_LEN {
            return Err(err("longer than 320 bytes"));
        }
        if let Ok(addr) = SocketAddr::from_str(s) {
            if addr.port() == 0 {
                return Err(err("port 0"));
            }
            return Ok(Target::Addr(SocketAddr::new(
                addr.ip().to_canonical(),
                addr.port(),
            )));
        }
        let (host, port) = s.rsplit_once(':').ok_or_else(|| err("no :port"))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| err("the port is not 1-65535"))?;
        let host = host.strip_suffix('.').unwrap_or(host);
        let rest = host
            .strip_suffix(cluster_domain)
            .and_then(|r| r.strip_suffix(".svc."))
            .ok_or_else(|| err("expected ip:port or name.namespace.svc.<cluster-domain>:port"))?;
        let (name, namespace) = rest
            .split_once('.')
            .ok_or_else(|| err("expected name.namespace.svc.<cluster-domain>:port"))?;
        if !crate::model::is_dns_label(name) || !crate::model::is_dns_label(namespace) {
            return Err(err("the name or namespace is not a DNS label"));
        }
        Ok(Target::Name {
            namespace: namespace.to_string(),
            name: name.to_string(),
            port,
        })
    }
}

impl Target {
    /// A Service port named by its parts (`WatchRequest.service`), for a proxy that does not
    /// know the cluster's DNS domain.
    pub fn service(r: &pb::ServiceRef) -> Result<Self, TargetError> {
        let err = |reason| TargetError {
            target: format!("{}.{}.svc:{}", r.name, r.namespace, r.port)
                .chars()
                .take(64)
                .collect(),
            reason,
        };
        let port = u16::try_from(r.port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| err("the port is not 1-65535"))?;
        if !crate::model::is_dns_label(&r.name) || !crate::model::is_dns_label(&r.namespace) {
            return Err(err("the name or namespace is not a DNS label"));
        }
        Ok(Target::Name {
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            port,
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Addr(a) => write!(f, "{a}"),
            Target::Name {
                namespace,
                name,
                port,
            } => write!(f, "{name}.{namespace}.svc:{port}"),
        }
    }
}

/// What a proxy is told about one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Forward as it is.
    NotAService,
    /// Balance over these endpoints.
    Endpoints {
        /// The Service port (absent for a pod's own address).
        service: Option<pb::ServiceRef>,
        /// By address.
        endpoints: BTreeMap<String, pb::Endpoint>,
    },
}

impl Answer {
    /// The whole answer as an update.
    pub fn whole(&self, version: u64) -> pb::Update {
        let kind = match self {
            Answer::NotAService => pb::update::Kind::NotAService(pb::NotAService {}),
            Answer::Endpoints { service, endpoints } => pb::update::Kind::Snapshot(pb::Snapshot {
                service: service.clone(),
                endpoints: endpoints.values().cloned().collect(),
            }),
        };
        pb::Update {
            version,
            kind: Some(kind),
        }
    }

    /// The update that takes a proxy holding `old` to `self`: a delta when both are endpoint
    /// sets of the same Service, else the whole answer. `None` when nothing changed.
    pub fn since(&self, old: &Answer, version: u64) -> Option<pb::Update> {
        if self == old {
            return None;
        }
        let (
            Answer::Endpoints {
                service,
                endpoints: new,
            },
            Answer::Endpoints {
                service: old_service,
                endpoints: old,
            },
        ) = (self, old)
        else {
            return Some(self.whole(version));
        };
        if service != old_service {
            return Some(self.whole(version));
        }
        let upserts = new
            .iter()
            .filter(|(addr, ep)| old.get(*addr) != Some(ep))
            .map(|(_, ep)| ep.clone())
            .collect();
        let removed = old
            .keys()
            .filter(|addr| !new.contains_key(*addr))
            .cloned()
            .collect();
        Some(pb::Update {
            version,
            kind: Some(pb::update::Kind::Delta(pb::Delta { upserts, removed })),
        })
    }
}

/// What changed between two snapshots, as endpoint answers see it: the Services whose answer
/// may differ and the addresses of pods that changed. A target neither names is answered the
/// same by both snapshots ([`Lookup::touched`]), so a change costs what it touches, not what
/// is watched.
#[derive(Debug, Default)]
pub struct Changes {
    services: HashSet<Key>,
    pod_ips: HashSet<IpAddr>,
}

impl Changes {
    /// What differs from `old` to `new`; `None` when no endpoint answer can (only routes
    /// changed, say).
    pub fn between(old: &Snapshot, new: &Snapshot) -> Option<Self> {
        let mut changes = Changes::default();
        for (key, ..) in changed(&old.services, &new.services) {
            changes.services.insert(key.clone());
        }
        for (key, before, after) in changed(&old.endpoint_slices, &new.endpoint_slices) {
            for slice in [before, after].into_iter().flatten() {
                if let Some(service) = service_of(slice) {
                    changes.services.insert((key.0.clone(), service.clone()));
                }
            }
        }
        let mut pods = HashSet::new();
        for (key, before, after) in changed(&old.pods, &new.pods) {
            pods.insert(key);
            for pod in [before, after].into_iter().flatten() {
                changes.pod_ips.extend(pod_ips(pod));
            }
        }
        if !pods.is_empty() {
            // An endpoint reads its pod by its targetRef, or else by its address: a Service
            // whose slices name a changed pod either way may answer differently.
            for snapshot in [old, new] {
                for (key, slice) in &snapshot.endpoint_slices {
                    let Some(service) = service_of(slice) else {
                        continue;
                    };
                    let names_a_changed_pod = slice.endpoints.iter().any(|ep| {
                        pod_ref(ep, &key.0).is_some_and(|pod| pods.contains(&pod))
                            || endpoint_ip(ep).is_some_and(|ip| changes.pod_ips.contains(&ip))
                    });
                    if names_a_changed_pod {
                        changes.services.insert((key.0.clone(), service.clone()));
                    }
                }
            }
        }
        (!changes.services.is_empty() || !changes.pod_ips.is_empty()).then_some(changes)
    }

    /// How many Services may answer differently.
    pub fn services(&self) -> usize {
        self.services.len()
    }
}

/// A snapshot prepared for lookups: built once per snapshot, then each subscribed target's
/// answer is a few map lookups.
#[derive(Debug, Default)]
pub struct Lookup {
    trust_domain: String,
    snapshot: Arc<Snapshot>,
    /// Cluster IP -> Service key.
    by_cluster_ip: HashMap<IpAddr, Key>,
    /// Service key -> its EndpointSlices' keys.
    slices: HashMap<Key, Vec<Key>>,
    /// Pod IP -> pod key.
    pod_by_ip: HashMap<IpAddr, Key>,
}

impl Lookup {
    /// Indexes `snapshot` for identities in `trust_domain`.
    pub fn new(snapshot: Arc<Snapshot>, trust_domain: &str) -> Self {
        let mut by_cluster_ip = HashMap::new();
        for (key, svc) in &snapshot.services {
            for ip in cluster_ips(svc) {
                by_cluster_ip.insert(ip, key.clone());
            }
        }
        let mut slices: HashMap<Key, Vec<Key>> = HashMap::new();
        for (key, slice) in &snapshot.endpoint_slices {
            if let Some(svc) = service_of(slice) {
                slices
                    .entry((key.0.clone(), svc.clone()))
                    .or_default()
                    .push(key.clone());
            }
        }
        let mut pod_by_ip = HashMap::new();
        for (key, pod) in &snapshot.pods {
            for ip in pod_ips(pod) {
                pod_by_ip.insert(ip, key.clone());
            }
        }
        Self {
            trust_domain: trust_domain.to_string(),
            snapshot,
            by_cluster_ip,
            slices,
            pod_by_ip,
        }
    }

    /// How many Services the snapshot holds.
    pub fn services(&self) -> usize {
        self.snapshot.services.len()
    }

    /// The answer for `target`.
    pub fn answer(&self, target: &Target) -> Answer {
        match target {
            Target::Addr(addr) => {
                if let Some(key) = self.by_cluster_ip.get(&addr.ip()) {
                    return self.service_answer(key, addr.port());
                }
                match self.pod_by_ip.get(&addr.ip()) {
                    Some(pod) => self.pod_answer(pod, *addr),
                    None => Answer::NotAService,
                }
            }
            Target::Name {
                namespace,
                name,
                port,
            } => self.service_answer(&(namespace.clone(), name.clone()), *port),
        }
    }

    /// Whether `target` may be answered differently here than by `old`, the index this one
    /// replaces, given the `changes` between their snapshots. False means the answers are
    /// equal (tested against answering both, on random snapshot pairs).
    pub fn touched(&self, old: &Lookup, changes: &Changes, target: &Target) -> bool {
        match target {
            Target::Name {
                namespace, name, ..
            } => changes
                .services
                .contains(&(namespace.clone(), name.clone())),
            Target::Addr(addr) => {
                let ip = addr.ip();
                changes.pod_ips.contains(&ip)
                    || [old, self].into_iter().any(|index| {
                        index
                            .by_cluster_ip
                            .get(&ip)
                            .is_some_and(|key| changes.services.contains(key))
                    })
            }
        }
    }

    fn service_answer(&self, key: &Key, port: u16) -> Answer {
        let Some(svc) = self.snapshot.services.get(key) else {
            return Answer::NotAService;
        };
        let Some(svc_port) = svc
            .spec
            .iter()
            .flat_map(|s| s.ports.iter().flatten())
            .find(|p| p.port == i32::from(port))
        else {
            // A Service's IP on a port it does not expose: nothing listens there.
            return Answer::NotAService;
        };
        let mut endpoints = BTreeMap::new();
        for slice_key in self.slices.get(key).into_iter().flatten() {
            let Some(slice) = self.snapshot.endpoint_slices.get(slice_key) else {
                continue;
            };
            let Some(target_port) = slice_port(slice, svc_port) else {
                continue;
            };
            for ep in &slice.endpoints {
                if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                    continue;
                }
                let Some(ip) = endpoint_ip(ep) else {
                    continue;
                };
                let addr = SocketAddr::new(ip, target_port);
                let pod = pod_ref(ep, &slice_key.0)
                    .filter(|k| self.snapshot.pods.contains_key(k))
                    .or_else(|| self.pod_by_ip.get(&ip).cloned());
                let mut endpoint = self.endpoint(addr, pod.as_ref());
                endpoint.zone = ep.zone.clone().unwrap_or_default();
                endpoints.insert(endpoint.address.clone(), endpoint);
            }
        }
        Answer::Endpoints {
            service: Some(pb::ServiceRef {
                namespace: key.0.clone(),
                name: key.1.clone(),
                port: u32::from(port),
            }),
            endpoints,
        }
    }

    /// A pod's own address: one endpoint, worth an answer only if the pod is meshed (else
    /// forwarding as it is does the same).
    fn pod_answer(&self, pod: &Key, addr: SocketAddr) -> Answer {
        let endpoint = self.endpoint(addr, Some(pod));
        if endpoint.mesh.is_none() {
            return Answer::NotAService;
        }
        Answer::Endpoints {
            service: None,
            endpoints: BTreeMap::from([(endpoint.address.clone(), endpoint)]),
        }
    }

    fn endpoint(&self, addr: SocketAddr, pod: Option<&Key>) -> pb::Endpoint {
        let pod_obj = pod.and_then(|k| self.snapshot.pods.get(k));
        pb::Endpoint {
            address: addr.to_string(),
            weight: 1,
            mesh: pod_obj.and_then(|p| self.mesh(p)),
            pod: pod.map(|(ns, n)| format!("{ns}/{n}")).unwrap_or_default(),
            zone: String::new(),
        }
    }

    fn mesh(&self, pod: &Pod) -> Option<pb::MeshEndpoint> {
        static NO_ANNOTATIONS: BTreeMap<String, String> = BTreeMap::new();
        let spec = pod.spec.as_ref();
        // The proxy is a native sidecar (an init container with `restartPolicy: Always`) on
        // Kubernetes 1.29+, a regular container before: look in both, as weft-cni does.
        let containers = || {
            let regular = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
            let init = spec
                .and_then(|s| s.init_containers.as_deref())
                .unwrap_or_default();
            regular.iter().chain(init)
        };
        let annotations = pod.metadata.annotations.as_ref().unwrap_or(&NO_ANNOTATIONS);
        if !weft_pod::decide(annotations, containers().map(|c| c.name.as_str())).is_meshed() {
            return None;
        }
        let inbound_port = containers()
            .find(|c| c.name == ids::PROXY_CONTAINER)
            .and_then(|c| c.ports.as_ref())
            .and_then(|ports| {
                ports
                    .iter()
                    .find(|p| p.name.as_deref() == Some(ids::INBOUND_PORT_NAME))
            })
            .and_then(|p| u16::try_from(p.container_port).ok())
            .unwrap_or(ids::INBOUND_PORT);
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let sa = spec
            .and_then(|s| s.service_account_name.as_deref())
            .filter(|s| !s.is_empty())
            .unwrap_or("default");
        Some(pb::MeshEndpoint {
            identity: format!("spiffe://{}/ns/{namespace}/sa/{sa}", self.trust_domain),
            inbound_port: u32::from(inbound_port),
        })
    }
}

/// The Service an EndpointSlice belongs to (its `kubernetes.io/service-name` label).
fn service_of(slice: &EndpointSlice) -> Option<&String> {
    slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)
}

/// The pod an endpoint's `targetRef` names (in the slice's namespace unless it says).
fn pod_ref(ep: &Endpoint, slice_namespace: &str) -> Option<Key> {
    let r = ep.target_ref.as_ref()?;
    if r.kind.as_deref() != Some("Pod") {
        return None;
    }
    let namespace = r.namespace.as_deref().unwrap_or(slice_namespace);
    Some((namespace.to_string(), r.name.clone()?))
}

/// An endpoint's address: its first, as kube-proxy takes it.
fn endpoint_ip(ep: &Endpoint) -> Option<IpAddr> {
    let ip = ep.addresses.first()?.parse::<IpAddr>().ok()?;
    Some(ip.to_canonical())
}

pub(crate) fn cluster_ips(svc: &Service) -> impl Iterator<Item = IpAddr> + '_ {
    let spec = svc.spec.as_ref();
    let one = spec.and_then(|s| s.cluster_ip.as_deref());
    let many = spec
        .and_then(|s| s.cluster_ips.as_ref())
        .into_iter()
        .flatten();
    one.into_iter()
        .chain(many.map(String::as_str))
        .filter_map(|ip| ip.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
}

fn pod_ips(pod: &Pod) -> impl Iterator<Item = IpAddr> + '_ {
    let status = pod.status.as_ref();
    let one = status.and_then(|s| s.pod_ip.as_deref());
    let many = status
        .and_then(|s| s.pod_ips.as_ref())
        .into_iter()
        .flatten()
        .map(|p| p.ip.as_str());
    one.into_iter()
        .chain(many)
        .filter_map(|ip| ip.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
}

/// The port of `slice` serving `svc_port`: matched by name, as kube-proxy does (an unnamed
/// Service port matches an unnamed slice port).
fn slice_port(slice: &EndpointSlice, svc_port: &ServicePort) -> Option<u16> {
    let want = svc_port.name.as_deref().unwrap_or("");
    slice
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref().unwrap_or("") == want)
        .and_then(|p| p.port)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
}

#[cfg(test)]
mod tests;
