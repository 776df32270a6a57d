//! Documents into the folder's objects: each document parsed with the control plane's reader
//! (`weft_control_plane_config::yaml`), typed as k8s-openapi's kinds, checked with the control
//! plane's checks plus what the lab needs, then Deployments expanded into pods, addresses
//! assigned and EndpointSlices derived.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    path::Path,
};

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{Namespace, Pod, PodSpec, Service, ServiceAccount},
        discovery::v1::EndpointSlice,
    },
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta},
};
use serde_yaml::Value;
use weft_control_plane_config::{
    model::{self, is_dns_label, Problem},
    yaml,
};
use weft_pod::{annotations, ids, settings, ProxySettings};

use super::{
    addresses::{self, Addresses, Claim, POD_POOL, SERVICE_POOL},
    names, slices, Doc, DocError, Folder, Injection, Key, LabPod, LabService, Origin, Slice,
    MAX_DOCUMENTS,
};

/// The label the ReplicaSet controller puts on a Deployment's pods.
const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// Namespaces every cluster has, which a folder need not define.
const BUILT_IN_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// Workload kinds that make pods in a cluster, which the lab does not run.
const NOT_RUN: [(&str, &str); 6] = [
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "DaemonSet"),
    ("apps/v1", "ReplicaSet"),
    ("batch/v1", "Job"),
    ("batch/v1", "CronJob"),
    ("v1", "ReplicationController"),
];

/// Attempts at a free generated name before a replica is refused.
const NAME_ATTEMPTS: u32 = 16;

/// The folder made of `files`' texts; see [`super::build`].
pub(crate) fn build<'a>(
    files: impl IntoIterator<Item = (&'a Path, &'a str)>,
    previous: &Addresses,
) -> Folder {
    let mut b = Builder::default();
    'files: for (file, text) in files {
        for (index, doc) in yaml::documents(text).enumerate() {
            let at = At {
                origin: Origin {
                    file: file.to_path_buf(),
                    document: index,
                },
                prefix: String::new(),
                seq: 0,
            };
            if b.count(&at).is_break() {
                break 'files;
            }
            match doc {
                Ok(value) => b.document(at, value, true),
                Err(reason) => b.refuse(&at, "", reason),
            }
        }
    }
    b.finish(previous)
}

/// Where a document (or an item of a `List`) is, and its place in folder order.
#[derive(Debug, Clone)]
struct At {
    origin: Origin,
    /// `items[3].` for an item of a `List`, else empty.
    prefix: String,
    seq: usize,
}

impl At {
    /// `field` as the folder's user finds it: under the item's prefix.
    fn field(&self, field: &str) -> String {
        match (self.prefix.is_empty(), field.is_empty()) {
            (true, _) => field.to_string(),
            (false, true) => self.prefix.trim_end_matches('.').to_string(),
            (false, false) => format!("{}{field}", self.prefix),
        }
    }
}

/// A pod before its address: a Pod document, or a Deployment's replica.
#[derive(Debug)]
struct Draft {
    at: At,
    /// For a replica: its index, and the Deployment.
    replica: Option<(usize, String)>,
    object: Pod,
    /// `status.podIP` (or the first of `status.podIPs`).
    requested: Option<IpAddr>,
    injection: Injection,
    /// A meshed pod's proxy settings from its annotations and its namespace's.
    settings: ProxySettings,
}

#[derive(Debug, Default)]
struct Builder {
    folder: Folder,
    documents: usize,
    /// Pods as read, in folder order.
    pods: Vec<Draft>,
    services: BTreeMap<Key, (At, Option<IpAddr>)>,
    /// Where each object was first defined: (kind, namespace, name) -> origin.
    defined: HashMap<(String, String, String), Origin>,
}

impl Builder {
    /// Counts one document (or item) and gives it its place; `Break` past [`MAX_DOCUMENTS`].
    fn count(&mut self, at: &At) -> std::ops::ControlFlow<()> {
        self.documents += 1;
        if self.documents > MAX_DOCUMENTS {
            if self.documents == MAX_DOCUMENTS + 1 {
                self.refuse(
                    at,
                    "",
                    format!(
                        "more than {MAX_DOCUMENTS} documents in the folder; the rest is not read"
                    ),
                );
            }
            return std::ops::ControlFlow::Break(());
        }
        std::ops::ControlFlow::Continue(())
    }

    fn refuse(&mut self, at: &At, field: &str, reason: impl Into<String>) {
        self.folder.refused.push(DocError {
            file: at.origin.file.clone(),
            document: at.origin.document,
            field: at.field(field),
            reason: reason.into(),
        });
    }

    fn note(&mut self, at: &At, field: &str, reason: impl Into<String>) {
        self.folder.notes.push(DocError {
            file: at.origin.file.clone(),
            document: at.origin.document,
            field: at.field(field),
            reason: reason.into(),
        });
    }

    /// One document: its kind decides what becomes of it. `lists`: whether a `v1 List` may be
    /// here (not inside another).
    fn document(&mut self, mut at: At, value: Value, lists: bool) {
        if value.is_null() {
            return; // an empty document (a trailing `---`)
        }
        at.seq = self.documents;
        let text = |field: &str| value.get(field).and_then(Value::as_str).map(str::to_string);
        let Some(api_version) = text("apiVersion") else {
            return self.refuse(&at, "apiVersion", "missing");
        };
        let Some(kind) = text("kind") else {
            return self.refuse(&at, "kind", "missing");
        };
        let result = match (api_version.as_str(), kind.as_str()) {
            ("v1", "List") if lists => return self.list(&at, value),
            ("v1", "List") => Err(problem("", "a List inside a List")),
            ("v1", "Namespace") => self.namespace(&at, value),
            ("v1", "ServiceAccount") => self.service_account(&at, value),
            ("v1", "Pod") => self.pod(&at, value),
            ("apps/v1", "Deployment") => self.deployment(&at, value),
            ("v1", "Service") => self.service(&at, value),
            ("discovery.k8s.io/v1", "EndpointSlice") => self.slice(&at, value),
            pair if NOT_RUN.contains(&pair) => {
                return self.note(
                    &at,
                    "kind",
                    format!(
                        "{kind} is not run by the lab (only Pods and Deployments make pods); \
                         left out"
                    ),
                );
            }
            _ => self.pass(&at, &api_version, &kind, value),
        };
        if let Err(p) = result {
            self.refuse(&at, &p.field, p.reason);
        }
    }

    /// A `v1 List`: each item a document of its own (named `items[i]`).
    fn list(&mut self, at: &At, value: Value) {
        let items = match value.get("items") {
            None | Some(Value::Null) => return,
            Some(Value::Sequence(items)) => items.clone(),
            Some(_) => return self.refuse(at, "items", "not a list"),
        };
        for (i, item) in items.into_iter().enumerate() {
            let item_at = At {
                origin: at.origin.clone(),
                prefix: format!("{}items[{i}].", at.prefix),
                seq: 0,
            };
            if self.count(&item_at).is_break() {
                return;
            }
            self.document(item_at, item, false);
        }
    }

    /// Records the first definition of `kind namespace/name`; a second one is refused, naming
    /// the first.
    fn define(&mut self, at: &At, kind: &str, key: &Key) -> Result<(), Problem> {
        self.define_as(at, kind.to_string(), kind, key)
    }

    /// [`Builder::define`] for an object told apart by `id` (its kind and API group), shown as
    /// `kind`.
    fn define_as(&mut self, at: &At, id: String, kind: &str, key: &Key) -> Result<(), Problem> {
        let id = (id, key.0.clone(), key.1.clone());
        if let Some(first) = self.defined.get(&id) {
            let name = match key.0.as_str() {
                "" => key.1.clone(),
                ns => format!("{ns}/{}", key.1),
            };
            return Err(problem(
                "metadata.name",
                format!(
                    "{kind} {name} is defined twice; the first is in {} document {}",
                    first.file.display(),
                    first.document
                ),
            ));
        }
        self.defined.insert(id, at.origin.clone());
        Ok(())
    }

    fn namespace(&mut self, at: &At, value: Value) -> Result<(), Problem> {
        let ns: Namespace = yaml::typed(value)?;
        let name = ns
            .metadata
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| problem("metadata.name", "missing"))?;
        if !is_dns_label(&name) {
            return Err(problem(
                "metadata.name",
                format!("{name:?} is not a valid namespace name (a DNS label)"),
            ));
        }
        self.define(at, "Namespace", &(String::new(), name.clone()))?;
        self.folder.namespaces.insert(
            name,
            Doc {
                origin: at.origin.clone(),
                object: ns,
            },
        );
        Ok(())
    }

    fn service_account(&mut self, at: &At, value: Value) -> Result<(), Problem> {
        let mut sa: ServiceAccount = yaml::typed(value)?;
        let key = keyed(&mut sa.metadata)?;
        self.define(at, "ServiceAccount", &key)?;
        self.folder.service_accounts.insert(
            key,
            Doc {
                origin: at.origin.clone(),
                object: sa,
            },
        );
        Ok(())
    }

    fn pod(&mut self, at: &At, value: Value) -> Result<(), Problem> {
        let mut pod: Pod = yaml::typed(value)?;
        let key = keyed(&mut pod.metadata)?;
        model::check_pod(&pod)?;
        let spec = pod
            .spec
            .as_ref()
            .ok_or_else(|| problem("spec", "missing"))?;
        check_spec(spec, "spec.")?;
        let status = pod.status.as_ref();
        let (field, ip) = match status.and_then(|s| s.pod_ip.as_deref()) {
            Some(ip) => ("status.podIP", Some(ip)),
            None => (
                "status.podIPs[0].ip",
                status
                    .and_then(|s| s.pod_ips.as_ref())
                    .and_then(|ips| ips.first())
                    .map(|p| p.ip.as_str()),
            ),
        };
        let requested = match ip.filter(|ip| !ip.is_empty()) {
            None => None,
            Some(ip) => Some(
                ip.parse::<IpAddr>()
                    .map_err(|_| problem(field, format!("{ip:?} is not an IP address")))?,
            ),
        };
        self.define(at, "Pod", &key)?;
        self.pods.push(Draft {
            at: at.clone(),
            replica: None,
            object: pod,
            requested,
            injection: Injection::NotRequested, // decided in `finish`, all Namespaces read
            settings: ProxySettings::default(),
        });
        Ok(())
    }

    fn deployment(&mut self, at: &At, value: Value) -> Result<(), Problem> {
        let mut deploy: Deployment = yaml::typed(value)?;
        let key = keyed(&mut deploy.metadata)?;
        let spec = deploy
            .spec
            .as_ref()
            .ok_or_else(|| problem("spec", "missing"))?;
        let replicas = spec.replicas.unwrap_or(1);
        if replicas < 0 {
            return Err(problem(
                "spec.replicas",
                format!("{replicas} is not a number of replicas: expected 0 or more"),
            ));
        }
        if replicas as usize > POD_POOL.size() {
            return Err(problem(
                "spec.replicas",
                format!(
                    "{replicas} is more pods than the lab has addresses ({} in {})",
                    POD_POOL.size(),
                    POD_POOL.subnet
                ),
            ));
        }
        let template_meta = spec.template.metadata.clone().unwrap_or_default();
        let labels = template_meta.labels.clone().unwrap_or_default();
        if selector_is_empty(&spec.selector) {
            return Err(problem(
                "spec.selector",
                "empty: a Deployment must select its pods",
            ));
        }
        if !slices::selector_matches(&spec.selector, &labels).map_err(|p| Problem {
            field: format!("spec.selector.{}", p.field),
            reason: p.reason,
        })? {
            return Err(problem(
                "spec.selector",
                "does not match spec.template.metadata.labels: the Deployment would not own \
                 its own pods",
            ));
        }
        let pod_spec = spec
            .template
            .spec
            .as_ref()
            .ok_or_else(|| problem("spec.template.spec", "missing"))?;
        check_spec(pod_spec, "spec.template.spec.")?;
        let template = Pod {
            metadata: template_meta,
            spec: Some(pod_spec.clone()),
            status: None,
        };
        model::check_pod(&template).map_err(|p| Problem {
            field: format!("spec.template.{}", p.field),
            reason: p.reason,
        })?;
        self.define(at, "Deployment", &key)?;
        let hash = names::template_hash(&key.0, &key.1);
        let base = format!("{}-", names::replica_set(&key.0, &key.1));
        for replica in 0..replicas as usize {
            let mut object = template.clone();
            let meta = &mut object.metadata;
            meta.name = Some(base.clone()); // named in `finish`, once every Pod's name is known
            meta.namespace = Some(key.0.clone());
            meta.generate_name = None;
            meta.labels
                .get_or_insert_with(BTreeMap::new)
                .insert(TEMPLATE_HASH_LABEL.into(), hash.clone());
            self.pods.push(Draft {
                at: at.clone(),
                replica: Some((replica, key.1.clone())),
                object,
                requested: None,
                injection: Injection::NotRequested, // decided in `finish`
                settings: ProxySettings::default(),
            });
        }
        self.folder.deployments.insert(
            key,
            Doc {
                origin: at.origin.clone(),
                object: deploy,
            },
        );
        Ok(())
    }

    fn service(&mut self, at: &At, value: Value) -> Result<(), Problem> {
        let mut svc: Service = yaml::typed(value)?;
        let key = keyed(&mut svc.metadata)?;
        model::check_service(&svc)?;
        let spec = svc
            .spec
            .as_ref()
            .ok_or_else(|| problem("spec", "missing"))?;
        let one = spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty());
        let first = spec
            .cluster_ips
            .as_ref()
            .and_then(|ips| ips.first())
            .map(String::as_str);
        if let (Some(one), Some(first)) = (one, first) {
            if one != first {
                return Err(problem(
                    "spec.clusterIPs[0]",
                    format!("{first:?} differs from spec.clusterIP {one:?}; they must be equal"),
                ));
            }
        }
        let external = spec.type_.as_deref() == Some("ExternalName");
        let field = if one.is_some() {
            "spec.clusterIP"
        } else {
            "spec.clusterIPs[0]"
        };
        let requested = match one.or(first) {
            _ if external => None,
            Some("None") | None => None,
            Some(ip) => Some(
                ip.parse::<IpAddr>()
                    .map_err(|_| problem(field, format!("{ip:?} is not an IP address or None")))?,
            ),
        };
        let headless = !external && one.or(first) == Some("None");
        self.define(at, "Service", &key)?;
        if !headless && !external {
            self.services.insert(key.clone(), (at.clone(), requested));
        }
        self.folder.services.insert(
            key,
            LabService {
                origin: at.origin.clone(),
                cluster_ip: None,
                object: svc,
            },
        );
        Ok(())
    }

    fn slice(&mut self, at: &At, value: Value) -> Result<(), Problem> {
        let mut slice: EndpointSlice = yaml::typed(value)?;
        let key = keyed(&mut slice.metadata)?;
        model::check_slice(&slice)?;
        self.define(at, "EndpointSlice", &key)?;
        self.folder.endpoint_slices.insert(
            key,
            Slice {
                origin: Some(at.origin.clone()),
                object: slice,
            },
        );
        Ok(())
    }

    /// A kind the lab does not build: kept as read for the control plane, once per name.
    fn pass(
        &mut self,
        at: &At,
        api_version: &str,
        kind: &str,
        value: Value,
    ) -> Result<(), Problem> {
        let meta = value.get("metadata");
        let name = meta
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| problem("metadata.name", "missing"))?;
        let namespace = match meta.and_then(|m| m.get("namespace")) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(ns)) => ns.clone(),
            Some(_) => return Err(problem("metadata.namespace", "not a string")),
        };
        let group = api_version.split_once('/').map_or("", |(g, _)| g);
        self.define_as(
            at,
            format!("{kind}.{group}"),
            kind,
            &(namespace, name.to_string()),
        )?;
        self.folder.passed.push(Doc {
            origin: at.origin.clone(),
            object: value,
        });
        Ok(())
    }

    /// Whether a pod with this metadata and spec, in `namespace`, is meshed, and its proxy's
    /// settings (`weft_pod::settings`) when it is; a meshed pod whose app would listen on one of
    /// the proxy's ports, or whose `weft.dev/` annotations (or its namespace's) cannot be used,
    /// is refused. `prefix` places the template of a Deployment.
    fn injection(
        &mut self,
        at: &At,
        namespace: &str,
        meta: &ObjectMeta,
        spec: &PodSpec,
        prefix: &str,
    ) -> Result<(Injection, ProxySettings), Problem> {
        static NONE: BTreeMap<String, String> = BTreeMap::new();
        let annotations = meta.annotations.as_ref().unwrap_or(&NONE);
        let asked = annotations.get(annotations::INJECT).map(|v| v.trim());
        let containers = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .map(|c| c.name.as_str());
        let injected = weft_pod::decide(annotations, containers).is_meshed();
        let label = self
            .folder
            .namespaces
            .get(namespace)
            .and_then(|ns| ns.object.metadata.labels.as_ref())
            .and_then(|l| l.get(annotations::INJECT))
            .map(String::as_str);
        let injection = match asked {
            Some(annotations::DISABLED) => Injection::Disabled,
            Some(annotations::ENABLED) => Injection::PodAnnotation,
            _ if injected => Injection::AlreadyInjected,
            _ if label == Some(annotations::ENABLED) => Injection::NamespaceLabel,
            _ => Injection::NotRequested,
        };
        if let Some(other) =
            asked.filter(|v| ![annotations::ENABLED, annotations::DISABLED].contains(v))
        {
            self.note(
                at,
                &format!("{prefix}metadata.annotations"),
                format!(
                    "{} is {other:?}: expected enabled or disabled; ignored, so the pod is {}",
                    annotations::INJECT,
                    if injection.is_meshed() {
                        "meshed"
                    } else {
                        "not meshed"
                    }
                ),
            );
        }
        if injection.is_meshed() {
            for (i, c) in spec.containers.iter().enumerate() {
                if c.name == ids::PROXY_CONTAINER {
                    continue;
                }
                for (j, p) in c.ports.iter().flatten().enumerate() {
                    if let Some(what) = proxy_port(p.container_port) {
                        return Err(problem(
                            &format!("{prefix}spec.containers[{i}].ports[{j}].containerPort"),
                            format!(
                                "{} is the proxy's {what} port in this meshed pod; the app \
                                 cannot listen there",
                                p.container_port
                            ),
                        ));
                    }
                }
            }
        }
        if !injection.is_meshed() {
            return Ok((injection, ProxySettings::default()));
        }
        let namespace_annotations = self
            .folder
            .namespaces
            .get(namespace)
            .and_then(|ns| ns.object.metadata.annotations.as_ref())
            .unwrap_or(&NONE);
        let settings =
            weft_pod::proxy_settings(annotations, namespace_annotations).map_err(|e| {
                let field = match e.on {
                    settings::On::Pod => format!("{prefix}metadata.annotations[{}]", e.annotation),
                    settings::On::Namespace => format!("metadata.namespace ({namespace})"),
                };
                problem(&field, e.to_string())
            })?;
        for (key, set) in [
            (
                annotations::PROXY_CPU_LIMIT,
                settings.cpu_limit_millis.is_some(),
            ),
            (
                annotations::PROXY_MEMORY_LIMIT,
                settings.memory_limit_bytes.is_some(),
            ),
        ] {
            if set {
                self.note(
                    at,
                    &format!("{prefix}metadata.annotations[{key}]"),
                    "checked, not enforced: the lab's proxies run without resource limits (the \
                     injector makes it the proxy container's limit)"
                        .to_string(),
                );
            }
        }
        Ok((injection, settings))
    }

    /// Names the replicas, notes what the folder leaves undefined, assigns addresses and
    /// derives EndpointSlices.
    fn finish(mut self, previous: &Addresses) -> Folder {
        self.decide_injection();
        let drafts = self.name_replicas();
        self.note_undefined(&drafts);
        // Pods' addresses, in folder order.
        let claims: Vec<Claim> = drafts
            .iter()
            .map(|d| {
                let key = pod_key(&d.object);
                Claim {
                    what: format!("pod {}/{}", key.0, key.1),
                    key,
                    origin: d.at.origin.clone(),
                    field: d.at.field(if d.replica.is_some() {
                        "spec.replicas"
                    } else {
                        "status.podIP"
                    }),
                    requested: d.requested,
                }
            })
            .collect();
        let assigned = addresses::assign(&claims, &previous.pods, &POD_POOL);
        self.folder.notes.extend(assigned.notes);
        self.folder
            .refused
            .extend(assigned.refused.into_iter().map(|(_, e)| e));
        for draft in drafts {
            let key = pod_key(&draft.object);
            let Some(ip) = assigned.addresses.get(&key).copied() else {
                continue;
            };
            self.folder.pods.insert(
                key,
                LabPod {
                    origin: draft.at.origin,
                    deployment: draft.replica.map(|(_, d)| d),
                    ip,
                    injection: draft.injection,
                    settings: draft.settings,
                    ports: Vec::new(),
                    object: draft.object,
                },
            );
        }
        // Services' cluster IPs, in folder order.
        let mut services: Vec<(Key, At, Option<IpAddr>)> = std::mem::take(&mut self.services)
            .into_iter()
            .map(|(k, (at, ip))| (k, at, ip))
            .collect();
        services.sort_by_key(|(_, at, _)| at.seq);
        let claims: Vec<Claim> = services
            .iter()
            .map(|(key, at, requested)| Claim {
                key: key.clone(),
                what: format!("Service {}/{}", key.0, key.1),
                origin: at.origin.clone(),
                field: at.field("spec.clusterIP"),
                requested: *requested,
            })
            .collect();
        let assigned = addresses::assign(&claims, &previous.services, &SERVICE_POOL);
        self.folder.notes.extend(assigned.notes);
        for (key, error) in assigned.refused {
            self.folder.services.remove(&key);
            self.folder.refused.push(error);
        }
        for (key, ip) in assigned.addresses {
            if let Some(svc) = self.folder.services.get_mut(&key) {
                svc.cluster_ip = Some(ip);
            }
        }
        slices::ports_and_slices(&mut self.folder);
        self.folder
    }

    /// Decides whether each pod is meshed, now that every Namespace is read: once per document
    /// (a Deployment's replicas share their template). A refused Deployment goes with its pods.
    fn decide_injection(&mut self) {
        let drafts = std::mem::take(&mut self.pods);
        let mut decided: HashMap<usize, Option<(Injection, ProxySettings)>> = HashMap::new();
        for mut draft in drafts {
            let decision = decided
                .entry(draft.at.seq)
                .or_insert_with(|| self.decide(&draft))
                .clone();
            if let Some((injection, settings)) = decision {
                draft.injection = injection;
                draft.settings = settings;
                self.pods.push(draft);
            }
        }
    }

    /// One document's pod (or template): its [`Injection`] and proxy settings, or `None` when
    /// refused.
    fn decide(&mut self, draft: &Draft) -> Option<(Injection, ProxySettings)> {
        let prefix = if draft.replica.is_some() {
            "spec.template."
        } else {
            ""
        };
        let namespace = draft.object.metadata.namespace.clone().unwrap_or_default();
        let spec = draft.object.spec.clone().unwrap_or_default();
        match self.injection(&draft.at, &namespace, &draft.object.metadata, &spec, prefix) {
            Ok(decision) => Some(decision),
            Err(p) => {
                self.refuse(&draft.at, &p.field, p.reason);
                if let Some((_, deployment)) = &draft.replica {
                    self.folder
                        .deployments
                        .remove(&(namespace, deployment.clone()));
                }
                None
            }
        }
    }

    /// Every pod in folder order, replicas named: `<deployment>-<hash>-<5 chars>`, never the
    /// name of a Pod document or of an earlier replica.
    fn name_replicas(&mut self) -> Vec<Draft> {
        let mut drafts = std::mem::take(&mut self.pods);
        drafts.sort_by_key(|d| (d.at.seq, d.replica.as_ref().map(|(i, _)| *i)));
        let mut taken: BTreeSet<Key> = drafts
            .iter()
            .filter(|d| d.replica.is_none())
            .map(|d| pod_key(&d.object))
            .collect();
        let mut named = Vec::with_capacity(drafts.len());
        for mut draft in drafts {
            let Some((replica, deployment)) = draft.replica.clone() else {
                named.push(draft);
                continue;
            };
            let namespace = draft.object.metadata.namespace.clone().unwrap_or_default();
            let base = draft.object.metadata.name.clone().unwrap_or_default();
            let replica_text = replica.to_string();
            let name = (0..NAME_ATTEMPTS)
                .map(|attempt| {
                    names::generate(&base, &[&namespace, &deployment, &replica_text], attempt)
                })
                .find(|n| !taken.contains(&(namespace.clone(), n.clone())));
            match name {
                Some(name) if model::is_dns_subdomain(&name) => {
                    taken.insert((namespace, name.clone()));
                    draft.object.metadata.name = Some(name);
                    named.push(draft);
                }
                Some(name) => self.refuse(
                    &draft.at,
                    "metadata.name",
                    format!("replica {replica} would be named {name:?}, not a valid pod name"),
                ),
                None => self.refuse(
                    &draft.at,
                    "metadata.name",
                    format!("no free name for replica {replica} after {NAME_ATTEMPTS} tries"),
                ),
            }
        }
        named
    }

    /// Notes namespaces and service accounts the folder uses but does not define (Kubernetes
    /// would refuse the objects; the lab takes them as existing), each once, where first used.
    fn note_undefined(&mut self, drafts: &[Draft]) {
        // (origin, item prefix, namespace) of each object using a namespace, in folder order.
        let mut uses: Vec<(Origin, String, String)> = Vec::new();
        for d in drafts {
            let ns = d.object.metadata.namespace.clone().unwrap_or_default();
            uses.push((d.at.origin.clone(), d.at.prefix.clone(), ns));
        }
        for (key, svc) in &self.folder.services {
            uses.push((svc.origin.clone(), String::new(), key.0.clone()));
        }
        for (key, sa) in &self.folder.service_accounts {
            uses.push((sa.origin.clone(), String::new(), key.0.clone()));
        }
        uses.sort();
        let mut noted = BTreeSet::new();
        for (origin, prefix, ns) in uses {
            let at = At {
                origin,
                prefix,
                seq: 0,
            };
            let field = "metadata.namespace";
            if BUILT_IN_NAMESPACES.contains(&ns.as_str())
                || self.folder.namespaces.contains_key(&ns)
                || !noted.insert(ns.clone())
            {
                continue;
            }
            self.note(
                &at,
                field,
                format!(
                    "namespace {ns} is not defined in the folder; the lab takes it as existing, \
                     without labels (kubectl apply would refuse the object)"
                ),
            );
        }
        let mut noted = BTreeSet::new();
        for d in drafts
            .iter()
            .filter(|d| d.replica.as_ref().is_none_or(|(i, _)| *i == 0))
        {
            let ns = d.object.metadata.namespace.clone().unwrap_or_default();
            let Some(sa) = d
                .object
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone())
                .filter(|s| !s.is_empty() && s != "default")
            else {
                continue;
            };
            let key = (ns, sa);
            if self.folder.service_accounts.contains_key(&key) || !noted.insert(key.clone()) {
                continue;
            }
            let field = if d.replica.is_some() {
                "spec.template.spec.serviceAccountName"
            } else {
                "spec.serviceAccountName"
            };
            self.note(
                &d.at,
                field,
                format!(
                    "service account {}/{} is not defined in the folder; the lab gives the pod \
                     its identity anyway (kubectl apply would refuse the pod)",
                    key.0, key.1
                ),
            );
        }
    }
}

/// The object's key, with its namespace filled in (`default` when it names none).
fn keyed(meta: &mut ObjectMeta) -> Result<Key, Problem> {
    let key = model::key(meta)?;
    meta.namespace = Some(key.0.clone());
    Ok(key)
}

fn pod_key(pod: &Pod) -> Key {
    (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

/// What the lab needs of a pod's spec beyond the control plane's checks: a container at least
/// (as the API server requires), and ports that are ports.
fn check_spec(spec: &PodSpec, prefix: &str) -> Result<(), Problem> {
    if spec.containers.is_empty() {
        return Err(problem(
            &format!("{prefix}containers"),
            "empty: a pod needs at least one container",
        ));
    }
    for (i, c) in spec.containers.iter().enumerate() {
        for (j, p) in c.ports.iter().flatten().enumerate() {
            if !(1..=65535).contains(&p.container_port) {
                return Err(problem(
                    &format!("{prefix}containers[{i}].ports[{j}].containerPort"),
                    format!("{} is not a port", p.container_port),
                ));
            }
        }
    }
    Ok(())
}

/// Which of the proxy's ports `port` is, if any.
fn proxy_port(port: i32) -> Option<&'static str> {
    let port = u16::try_from(port).ok()?;
    [
        (ids::OUTBOUND_PORT, "outbound"),
        (ids::REDIRECT_CHECK_PORT, "redirect check"),
        (ids::INBOUND_PORT, "inbound"),
        (ids::ADMIN_PORT, "admin"),
    ]
    .into_iter()
    .find(|(p, _)| *p == port)
    .map(|(_, what)| what)
}

fn selector_is_empty(s: &LabelSelector) -> bool {
    s.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
        && s.match_expressions.as_ref().is_none_or(Vec::is_empty)
}

fn problem(field: &str, reason: impl Into<String>) -> Problem {
    Problem {
        field: field.to_string(),
        reason: reason.into(),
    }
}
