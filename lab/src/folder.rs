//! A folder of Kubernetes YAML read into what the lab must build (`weftctl lab up DIR`), and
//! the YAML the control plane reads for it. Pure: no namespace, process or socket; the only I/O
//! is reading the folder ([`read`]) and writing one file ([`write_for_control_plane`]).
//!
//! What a folder may hold (every `*.yaml` and `*.yml` file directly in it, several documents
//! per file, files in name order as `kubectl apply -f DIR` takes them):
//! - `v1 Namespace` (its labels: `weft.dev/inject=enabled` meshes its pods), `v1
//!   ServiceAccount`, `v1 Pod`, `apps/v1 Deployment` (one pod per replica, named as the
//!   ReplicaSet controller names them), `v1 Service`, `discovery.k8s.io/v1 EndpointSlice`, and a
//!   `v1 List` of any of them;
//! - any other kind (HTTPRoute, TrafficSplit, HTTPFault, AuthorizationPolicy, ...), passed to
//!   the control plane untouched. Workload kinds the lab does not run (StatefulSet, DaemonSet,
//!   Job, ...) are named in a note and left out.
//!
//! A document the lab cannot use is refused ([`Folder::refused`]) with its file, document index,
//! field and reason, the control plane's own [`DocError`]; the rest of the folder still loads.
//! Whether to run that rest or keep the last set is the caller's choice. What the lab did
//! differently from what a document says (an address outside its ranges, a namespace nobody
//! defined) is in [`Folder::notes`], in the same form.
//!
//! Addresses ([`addresses`]): a pod's `status.podIP` and a Service's `spec.clusterIP` are
//! honoured when they lie in the lab's pools ([`POD_POOL`], [`SERVICE_POOL`]), chosen from
//! there otherwise; an address a pod or Service had before (the [`Addresses`] given to
//! [`read`]) is kept while it exists, so an edit never moves a running pod.
//!
//! Meshing: a pod is meshed as the injector will decide ([`Injection`]): its
//! `weft.dev/inject` annotation if it has one, else its namespace's `weft.dev/inject` label; a
//! pod already injected (`weft.dev/injected`, a `weft-proxy` container) stays meshed. Its
//! identity is its namespace and service account (`default` when none).
//!
//! EndpointSlices are made from each Service's selector when the folder has none for that
//! Service, as the EndpointSlice controller makes them ([`slices`]).
//!
//! # Layout
//! - this file: the model ([`Folder`], [`LabPod`], [`LabService`], ...), [`read`] and [`build`].
//! - `parse`: documents into objects, each checked, Deployments expanded.
//! - [`names`]: the names the ReplicaSet and EndpointSlice controllers would generate,
//!   deterministic here.
//! - [`addresses`]: pod and Service addresses, stable across edits.
//! - [`slices`]: EndpointSlices from selectors, and the ports each pod's app listens on.
//! - [`render`]: the control plane's YAML, written atomically.
//! - [`diff`](mod@diff): what changed between two reads.

use std::{
    collections::BTreeMap,
    fs,
    io::Read as _,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Namespace, Pod, Service, ServiceAccount, ServicePort},
    discovery::v1::EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub use weft_control_plane_config::{model::Key, yaml::DocError};

pub use addresses::{Addresses, Pool, POD_POOL, SERVICE_POOL};
pub use diff::{diff, Diff, PodChange, PodField};
pub use render::{
    hosts_file, render_for_control_plane, write_for_control_plane, WriteError, CONTROL_PLANE_FILE,
};

pub mod addresses;
pub mod diff;
pub mod names;
mod parse;
pub mod render;
pub mod slices;

/// Most YAML files read from one folder.
pub const MAX_FILES: usize = 256;
/// Largest YAML file read (the control plane's local mode reads no larger).
pub const MAX_FILE_BYTES: u64 = 8 << 20;
/// Most documents read from one folder, over all its files (the items of a `List` count).
pub const MAX_DOCUMENTS: usize = 4096;
/// The port a pod's app listens on when neither its containers nor a Service name one.
pub const DEFAULT_APP_PORT: u16 = crate::app::HTTP_PORT;

/// What the lab must build from one folder, and what it could not use.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Folder {
    /// The Namespaces the folder defines, by name. A namespace used but not defined is taken as
    /// existing, without labels (a note says so).
    pub namespaces: BTreeMap<String, Doc<Namespace>>,
    pub service_accounts: BTreeMap<Key, Doc<ServiceAccount>>,
    pub deployments: BTreeMap<Key, Doc<Deployment>>,
    /// Every pod: the folder's Pods and each Deployment's replicas.
    pub pods: BTreeMap<Key, LabPod>,
    pub services: BTreeMap<Key, LabService>,
    /// The folder's EndpointSlices and those made from Services' selectors.
    pub endpoint_slices: BTreeMap<Key, Slice>,
    /// Every other kind, untouched, in folder order.
    pub passed: Vec<Doc<serde_yaml::Value>>,
    /// Documents (or parts of them) not used, with why.
    pub refused: Vec<DocError>,
    /// Where the lab did something other than the document says, with why.
    pub notes: Vec<DocError>,
}

/// Where an object was read: its file, and its document's position there (from 0).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    pub file: PathBuf,
    pub document: usize,
}

/// An object as read, with where it was read.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc<T> {
    pub origin: Origin,
    pub object: T,
}

/// A pod the lab runs: a network namespace with an app on each of [`LabPod::ports`] and, when
/// meshed, a proxy.
#[derive(Debug, Clone, PartialEq)]
pub struct LabPod {
    /// The Pod's document, or its Deployment's.
    pub origin: Origin,
    /// The Deployment it is a replica of.
    pub deployment: Option<String>,
    pub ip: Ipv4Addr,
    pub injection: Injection,
    /// When meshed: its proxy's settings from its `weft.dev/` annotations and its namespace's,
    /// as the injector applies them (`weft_pod::settings`).
    pub settings: weft_pod::ProxySettings,
    /// The ports its app listens on: its containers' TCP ports (the proxy's excluded), then the
    /// numeric target ports of the Services that select it; [`DEFAULT_APP_PORT`] if none.
    pub ports: Vec<AppPort>,
    /// The Pod as read (for a replica: made from its Deployment's template), with its
    /// namespace filled in.
    pub object: Pod,
}

/// Whether a pod is meshed, and why: as the injector will decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Injection {
    /// Annotation `weft.dev/inject: enabled`.
    PodAnnotation,
    /// Its namespace is labelled `weft.dev/inject=enabled`.
    NamespaceLabel,
    /// It was injected already: `weft.dev/injected`, or a `weft-proxy` container.
    AlreadyInjected,
    /// Annotation `weft.dev/inject: disabled`, which wins over everything.
    Disabled,
    /// Nothing asks for it.
    NotRequested,
}

/// One port a pod's app listens on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AppPort {
    pub port: u16,
    /// The container port's name, if it has one.
    pub name: Option<String>,
}

/// A Service with its cluster IP.
#[derive(Debug, Clone, PartialEq)]
pub struct LabService {
    pub origin: Origin,
    /// `None` for a headless (`clusterIP: None`) or `ExternalName` Service.
    pub cluster_ip: Option<Ipv4Addr>,
    /// The Service as read, with its namespace filled in (its cluster IP as read too:
    /// [`LabService::cluster_ip`] is the one in force).
    pub object: Service,
}

/// An EndpointSlice: the folder's own, or made from its Service's selector.
#[derive(Debug, Clone, PartialEq)]
pub struct Slice {
    /// The document it was read from; `None` when the lab made it.
    pub origin: Option<Origin>,
    pub object: EndpointSlice,
}

/// The folder could not be read at all (a file it cannot use is a refusal instead).
#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    #[error("cannot read the folder {}: {source}; is it a directory you may read?", dir.display())]
    Dir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the folder {} holds more than {max} YAML files; the lab reads at most {max}: \
         move the rest to another folder",
        dir.display()
    )]
    TooManyFiles { dir: PathBuf, max: usize },
}

impl Folder {
    /// The addresses in force, to give the next [`read`] so it keeps them.
    pub fn addresses(&self) -> Addresses {
        Addresses {
            pods: self.pods.iter().map(|(k, p)| (k.clone(), p.ip)).collect(),
            services: self
                .services
                .iter()
                .filter_map(|(k, s)| Some((k.clone(), s.cluster_ip?)))
                .collect(),
        }
    }

    /// Whether every document was used.
    pub fn is_whole(&self) -> bool {
        self.refused.is_empty()
    }

    /// The pod at `ip`.
    pub fn pod_at(&self, ip: Ipv4Addr) -> Option<&LabPod> {
        self.pods.values().find(|p| p.ip == ip)
    }
}

impl LabPod {
    pub fn namespace(&self) -> &str {
        meta_namespace(&self.object.metadata)
    }

    pub fn name(&self) -> &str {
        meta_name(&self.object.metadata)
    }

    pub fn key(&self) -> Key {
        (self.namespace().to_string(), self.name().to_string())
    }

    /// Its service account, `default` when it names none.
    pub fn service_account(&self) -> &str {
        self.object
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.as_deref())
            .filter(|s| !s.is_empty())
            .unwrap_or("default")
    }

    /// Its workload as the injector names it in `WEFT_WORKLOAD` (`weft-injector-core`'s
    /// `workload::of`): `deployment/<name>` for a Deployment's replica (its ReplicaSet is
    /// `<deployment>-<pod-template-hash>`), else `pod/<name>`, a bare pod being its own.
    pub fn workload(&self) -> String {
        match &self.deployment {
            Some(deployment) => format!("deployment/{deployment}"),
            None => format!("pod/{}", self.name()),
        }
    }

    /// The SPIFFE ID its proxy presents (in the lab's trust domain).
    pub fn spiffe_id(&self) -> String {
        crate::pki::spiffe_id(self.namespace(), self.service_account())
    }

    pub fn is_meshed(&self) -> bool {
        self.injection.is_meshed()
    }

    pub fn labels(&self) -> &BTreeMap<String, String> {
        static NONE: BTreeMap<String, String> = BTreeMap::new();
        self.object.metadata.labels.as_ref().unwrap_or(&NONE)
    }

    pub fn annotations(&self) -> &BTreeMap<String, String> {
        static NONE: BTreeMap<String, String> = BTreeMap::new();
        self.object.metadata.annotations.as_ref().unwrap_or(&NONE)
    }

    /// `ip:port`.
    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.ip, port))
    }
}

impl Injection {
    pub fn is_meshed(&self) -> bool {
        matches!(
            self,
            Injection::PodAnnotation | Injection::NamespaceLabel | Injection::AlreadyInjected
        )
    }
}

impl std::fmt::Display for Injection {
    /// Completes "meshed: ..." or "not meshed: ...".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use weft_pod::annotations::{INJECT, INJECTED};
        match self {
            Injection::PodAnnotation => write!(f, "annotation {INJECT}: enabled"),
            Injection::NamespaceLabel => write!(f, "namespace label {INJECT}=enabled"),
            Injection::AlreadyInjected => {
                write!(f, "already injected ({INJECTED} or a weft-proxy container)")
            }
            Injection::Disabled => write!(f, "annotation {INJECT}: disabled"),
            Injection::NotRequested => write!(
                f,
                "neither annotation {INJECT}: enabled nor namespace label {INJECT}=enabled"
            ),
        }
    }
}

impl LabService {
    pub fn namespace(&self) -> &str {
        meta_namespace(&self.object.metadata)
    }

    pub fn name(&self) -> &str {
        meta_name(&self.object.metadata)
    }

    pub fn key(&self) -> Key {
        (self.namespace().to_string(), self.name().to_string())
    }

    pub fn ports(&self) -> &[ServicePort] {
        self.object
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_deref())
            .unwrap_or_default()
    }

    /// Its selector; `None` when it has none (or an empty one): its endpoints are then the
    /// folder's business, as in Kubernetes.
    pub fn selector(&self) -> Option<&BTreeMap<String, String>> {
        self.object
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .filter(|s| !s.is_empty())
    }

    /// `cluster_ip:port`, when it has a cluster IP.
    pub fn addr(&self, port: u16) -> Option<SocketAddr> {
        self.cluster_ip.map(|ip| SocketAddr::from((ip, port)))
    }

    /// `<name>.<namespace>.svc.cluster.local`.
    pub fn host(&self) -> String {
        format!("{}.{}.svc.cluster.local", self.name(), self.namespace())
    }

    /// Whether its selector picks `pod` (a Service with no selector picks none).
    pub fn selects(&self, pod: &LabPod) -> bool {
        pod.namespace() == self.namespace()
            && self.selector().is_some_and(|sel| {
                !sel.is_empty() && sel.iter().all(|(k, v)| pod.labels().get(k) == Some(v))
            })
    }
}

/// An object's namespace, `default` when it names none (as read: parsing checked it).
fn meta_namespace(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

/// An object's name (as read: parsing checked it is there).
fn meta_name(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

/// Reads every `*.yaml` and `*.yml` file directly in `dir` (in name order), keeping the
/// addresses in `previous` for the pods and Services that still exist. A file that cannot be
/// read, is not UTF-8 or is larger than [`MAX_FILE_BYTES`] is refused as its document 0.
pub fn read(dir: &Path, previous: &Addresses) -> Result<Folder, FolderError> {
    let files = yaml_files(dir).map_err(|source| FolderError::Dir {
        dir: dir.to_path_buf(),
        source,
    })?;
    if files.len() > MAX_FILES {
        return Err(FolderError::TooManyFiles {
            dir: dir.to_path_buf(),
            max: MAX_FILES,
        });
    }
    let mut texts = Vec::with_capacity(files.len());
    let mut unreadable = Vec::new();
    for file in files {
        match read_text(&file) {
            Ok(text) => texts.push((file, text)),
            Err(reason) => unreadable.push(DocError {
                file,
                document: 0,
                field: String::new(),
                reason,
            }),
        }
    }
    let mut folder = build(
        texts.iter().map(|(f, t)| (f.as_path(), t.as_str())),
        previous,
    );
    unreadable.append(&mut folder.refused);
    folder.refused = unreadable;
    Ok(folder)
}

/// The folder made of these files' texts (in this order), keeping the addresses in
/// `previous`: [`read`] without the file system, for tests and for callers holding the texts.
pub fn build<'a>(
    files: impl IntoIterator<Item = (&'a Path, &'a str)>,
    previous: &Addresses,
) -> Folder {
    let mut folder = parse::build(files, previous);
    check_with_control_plane(&mut folder);
    folder
}

/// Reads the YAML the control plane will read ([`render_for_control_plane`]) with the control
/// plane's own reader, so that what it would refuse in the kinds the lab passes through
/// (HTTPRoutes, TrafficSplits, ReferenceGrants, HTTPFaults: their schema, their regexes, a
/// backend of another namespace without a ReferenceGrant) is refused here, naming the user's
/// file, document and field, and left out of what the control plane is given.
fn check_with_control_plane(folder: &mut Folder) {
    let Ok(text) = render_for_control_plane(folder) else {
        return;
    };
    let Err(errors) =
        weft_control_plane_config::yaml::load_text(Path::new(CONTROL_PLANE_FILE), &text)
    else {
        return;
    };
    // The rendered documents: the lab's own objects first, the passed-through ones last.
    let own = folder.namespaces.len()
        + folder.service_accounts.len()
        + folder.pods.len()
        + folder.services.len()
        + folder.endpoint_slices.len();
    let mut refused = std::collections::BTreeSet::new();
    for e in errors {
        match e
            .document
            .checked_sub(own)
            .and_then(|i| folder.passed.get(i).map(|d| (i, d)))
        {
            Some((i, doc)) => {
                refused.insert(i);
                folder.refused.push(DocError {
                    file: doc.origin.file.clone(),
                    document: doc.origin.document,
                    field: e.field,
                    reason: e.reason,
                });
            }
            // One of the lab's own documents: the folder's own checks let through what the
            // control plane refuses. Said, so that it is seen.
            None => folder.notes.push(DocError {
                file: PathBuf::from(CONTROL_PLANE_FILE),
                document: e.document,
                field: e.field,
                reason: format!(
                    "the control plane refuses what the lab made of the folder: {}",
                    e.reason
                ),
            }),
        }
    }
    let mut i = 0;
    folder.passed.retain(|_| {
        let keep = !refused.contains(&i);
        i += 1;
        keep
    });
}

/// The folder's `*.yaml` and `*.yml` files, in name order (as the control plane lists them).
fn yaml_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let yaml = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        );
        if yaml && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// A file's text, read no further than [`MAX_FILE_BYTES`]; or why not.
fn read_text(file: &Path) -> Result<String, String> {
    let f = fs::File::open(file).map_err(|e| format!("cannot read: {e}"))?;
    let mut raw = Vec::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut raw)
        .map_err(|e| format!("cannot read: {e}"))?;
    if raw.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
    }
    String::from_utf8(raw).map_err(|_| "not UTF-8 text".to_string())
}

#[cfg(test)]
mod tests;
