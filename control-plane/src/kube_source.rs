//! The Kubernetes config source: kube-rs reflectors on Services, EndpointSlices and Pods, and
//! on the route kinds: HTTPRoutes (`gateway.networking.k8s.io/v1`), ReferenceGrants
//! (`v1beta1`), TrafficSplits (`split.smi-spec.io/v1alpha4`) and Weft's HTTPFaults
//! (`weft.dev/v1alpha1`).
//!
//! Seven `kube::runtime` watchers over all namespaces (list, then watch from the list's
//! resourceVersion, bookmarks on, relist on 410 Gone), each with kube-runtime's default
//! backoff (0.8 s doubling to 30 s, jittered), each feeding a reflector store. Nothing is
//! published until all seven have finished their first list; then one [`Snapshot`] built from
//! the stores, and after that a new one whenever something changed.
//!
//! # Route kinds whose CRD is not installed
//! The route kinds are CustomResourceDefinitions a cluster may not have. A list answered 404
//! (the API server does not serve the kind) counts as an empty, synced list, logged once at
//! info: the mesh runs without routes rather than never publishing. The watcher keeps
//! retrying with its backoff, so routes appear once the CRD is installed. (A CRD removed
//! while watched leaves the store as it was until the watch can list again.)
//!
//! # Memory
//! Objects are stripped before they reach a store: `metadata.managedFields` and the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation (a second copy of the whole
//! object) everywhere, and a Pod keeps only what discovery reads: its name, namespace, labels,
//! annotations, uid and resourceVersion, `spec.serviceAccountName`, each container's name and
//! ports, and `status.podIP(s)` and `status.phase`. A Pod's status changes far more often
//! than anything discovery reads, so two versions that differ only in their resourceVersion
//! count as the same: such a change publishes nothing.
//!
//! # Coalescing
//! A change starts a `settle` timer; changes that arrive before it fires join it; when it
//! fires, the snapshot is rebuilt once from the stores. So a burst costs one rebuild, a
//! change waits at most `settle`, and rebuilds are at least `settle` apart. A rebuilt
//! snapshot equal to the one in force is not sent. The first snapshot is always sent, even if
//! the cluster is empty: it is how a reader learns that the source is in sync.
//!
//! # Refused objects: per object, not per change
//! Every object goes through [`Snapshot::add_service`] and its siblings, whose checks are
//! stricter than the API server's. An object that fails them is refused alone: the version
//! last accepted for that namespace/name stays in force (or, if it never had one, the object
//! is left out), and everything else flows on. Each refusal is logged at warn, with the field
//! and reason, and counted in `weft_config_refused_documents_total{source="kubernetes"}` once
//! per kind, namespace/name and resourceVersion (a relist does not repeat it). The refused
//! HTTPRoutes of each rebuild, with why, go to [`KubeSource::refused_routes`] before the
//! snapshot: the status writer ([`crate::route_status`]) reports them as not accepted.
//!
//! An HTTPRoute's `status` is kept in the store and the snapshot (the status writer merges into
//! it), so a status write comes back as a change and costs one rebuild that changes no answer.
//!
//! The local folder source refuses a whole folder instead, and that difference is deliberate.
//! A folder edit is one change by one author, who can fix it and who may have meant its
//! documents to land together; taking part of it would publish a state nobody wrote. A
//! cluster has many independent writers (controllers, operators, every team's deploys): one
//! team's odd object must not freeze discovery for everyone else, and there is no "whole
//! change" to refuse, only a stream of objects that each stand alone.
//!
//! # Errors
//! A watch that fails (API server down, a decode error, 410 Gone) is retried by kube-runtime
//! with backoff; the last published snapshot stays in force meanwhile. A failure is logged at
//! warn when it first happens (or its message changes) and the recovery at info, so an outage
//! costs a few lines, not one per retry.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    sync::Arc,
    time::Duration,
};

use futures_util::{
    stream::{self, BoxStream},
    StreamExt,
};
use k8s_openapi::{
    api::{
        core::v1::{Container, Pod, PodSpec, PodStatus, Service},
        discovery::v1::EndpointSlice,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    runtime::{
        reflector::{self, store::Writer, Store},
        watcher, WatchStreamExt,
    },
    Api, Client, Resource,
};
use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use weft_control_plane_config::{
    fault::HttpFault,
    gateway::{HttpRoute, ReferenceGrant},
    model::{self, Key, Problem, Snapshot},
    smi::TrafficSplit,
};

use crate::{
    metrics::Metrics,
    source::{ConfigSource, SourceFuture},
};

/// The source's name in logs and metrics.
pub const NAME: &str = "kubernetes";

/// The annotation `kubectl apply` keeps a full copy of the object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Services, EndpointSlices and Pods from the Kubernetes API, as a [`ConfigSource`].
pub struct KubeSource {
    client: Client,
    metrics: Arc<Metrics>,
    settle: Duration,
    refused_routes: watch::Sender<Arc<Vec<RefusedRoute>>>,
}

/// An HTTPRoute whose current version the checks refuse: what the status writer reports
/// (`Accepted=False`, [`weft_control_plane_config::routes::refused_route_status`]), since the
/// snapshot holds only its last good version, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct RefusedRoute {
    pub key: Key,
    /// The refused version, as the API server holds it (its status included).
    pub route: Arc<HttpRoute>,
    pub problem: Problem,
}

impl fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeSource")
            .field("settle", &self.settle)
            .finish_non_exhaustive()
    }
}

impl KubeSource {
    /// Watches through `client` (in-cluster config, a kubeconfig, or a test server) and
    /// publishes at most one snapshot per `settle`.
    pub fn new(client: Client, metrics: Arc<Metrics>, settle: Duration) -> Self {
        metrics.config_source(NAME);
        Self {
            client,
            metrics,
            settle,
            refused_routes: watch::channel(Arc::default()).0,
        }
    }

    /// The HTTPRoutes whose current version is refused, updated with each rebuild (before the
    /// snapshot it belongs to is sent): for the status writer.
    pub fn refused_routes(&self) -> watch::Receiver<Arc<Vec<RefusedRoute>>> {
        self.refused_routes.subscribe()
    }

    async fn serve(self, out: watch::Sender<Arc<Snapshot>>, shutdown: CancellationToken) {
        let (services, service_writer) = reflector::store();
        let (slices, slice_writer) = reflector::store();
        let (pods, pod_writer) = reflector::store();
        let (routes, route_writer) = reflector::store();
        let (grants, grant_writer) = reflector::store();
        let (splits, split_writer) = reflector::store();
        let (faults, fault_writer) = reflector::store();
        let mut signals = stream::select_all([
            signals(
                Api::<Service>::all(self.client.clone()),
                strip_service,
                service_writer,
                Kind::Service,
            ),
            signals(
                Api::<EndpointSlice>::all(self.client.clone()),
                strip_slice,
                slice_writer,
                Kind::EndpointSlice,
            ),
            signals(
                Api::<Pod>::all(self.client.clone()),
                strip_pod,
                pod_writer,
                Kind::Pod,
            ),
            signals(
                Api::<HttpRoute>::all(self.client.clone()),
                |r: &mut HttpRoute| strip_meta(&mut r.metadata),
                route_writer,
                Kind::HttpRoute,
            ),
            signals(
                Api::<ReferenceGrant>::all(self.client.clone()),
                |g: &mut ReferenceGrant| strip_meta(&mut g.metadata),
                grant_writer,
                Kind::ReferenceGrant,
            ),
            signals(
                Api::<TrafficSplit>::all(self.client.clone()),
                |t: &mut TrafficSplit| strip_meta(&mut t.metadata),
                split_writer,
                Kind::TrafficSplit,
            ),
            signals(
                Api::<HttpFault>::all(self.client.clone()),
                |f: &mut HttpFault| strip_meta(&mut f.metadata),
                fault_writer,
                Kind::HttpFault,
            ),
        ]);
        let mut cluster = Cluster {
            services: Tracked::new(Kind::Service, services),
            slices: Tracked::new(Kind::EndpointSlice, slices),
            pods: Tracked::new(Kind::Pod, pods),
            routes: Tracked::new(Kind::HttpRoute, routes),
            grants: Tracked::new(Kind::ReferenceGrant, grants),
            splits: Tracked::new(Kind::TrafficSplit, splits),
            faults: Tracked::new(Kind::HttpFault, faults),
            watches: Default::default(),
            published: false,
            metrics: self.metrics,
            refused_routes: self.refused_routes,
        };
        // When the next rebuild is due; `None` while nothing changed since the last one.
        let mut due: Option<Instant> = None;
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    due = None;
                    cluster.publish(&out);
                }
                signal = signals.next() => {
                    let Some((kind, signal)) = signal else {
                        // The watchers retry forever; they end only if kube-runtime changes.
                        tracing::error!("the Kubernetes watches ended; no more config changes");
                        return;
                    };
                    if !cluster.seen(kind, signal) {
                        continue;
                    }
                    if !cluster.published {
                        if cluster.watches.iter().all(|w| w.synced) {
                            cluster.publish(&out);
                        }
                    } else if due.is_none() {
                        due = Some(Instant::now() + self.settle);
                    }
                }
            }
        }
    }
}

impl ConfigSource for KubeSource {
    fn name(&self) -> &'static str {
        NAME
    }

    fn ready_at_start(&self) -> bool {
        false
    }

    fn run(
        self: Box<Self>,
        out: watch::Sender<Arc<Snapshot>>,
        shutdown: CancellationToken,
    ) -> SourceFuture {
        Box::pin(self.serve(out, shutdown))
    }
}

/// The kinds watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Service = 0,
    EndpointSlice = 1,
    Pod = 2,
    HttpRoute = 3,
    ReferenceGrant = 4,
    TrafficSplit = 5,
    HttpFault = 6,
}

/// How many kinds are watched.
const KINDS: usize = 7;

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Pod => "Pod",
            Kind::HttpRoute => "HTTPRoute",
            Kind::ReferenceGrant => "ReferenceGrant",
            Kind::TrafficSplit => "TrafficSplit",
            Kind::HttpFault => "HTTPFault",
        }
    }

    /// A kind defined by a CRD the cluster may not have.
    fn optional(self) -> bool {
        matches!(
            self,
            Kind::HttpRoute | Kind::ReferenceGrant | Kind::TrafficSplit | Kind::HttpFault
        )
    }
}

/// What a watcher event means for the source (the objects themselves are in the stores).
#[derive(Debug)]
enum Signal {
    /// An object was applied or deleted in the store.
    Changed,
    /// A (re)list is in progress; the store changes only when it is done.
    Listing,
    /// A (re)list is done: the store now holds exactly what it listed.
    Synced,
    /// The watch failed; the watcher retries after a backoff.
    Failed(watcher::Error),
}

/// Whether `error` says the API server does not serve the kind at all (404 on its list).
fn not_served(error: &watcher::Error) -> bool {
    list_status(error) == Some(404)
}

/// The HTTP status of a failed list or watch start, if the API server answered one.
fn list_status(error: &watcher::Error) -> Option<u16> {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status)) => Some(status.code),
        _ => None,
    }
}

/// One kind's watcher, stripped, backed off and reflected into `writer`, as signals.
fn signals<K>(
    api: Api<K>,
    strip: fn(&mut K),
    writer: Writer<K>,
    kind: Kind,
) -> BoxStream<'static, (Kind, Signal)>
where
    K: Resource + Clone + serde::de::DeserializeOwned + fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    watcher(api, watcher::Config::default())
        .modify(strip)
        .default_backoff()
        .reflect(writer)
        .map(move |event| {
            let signal = match event {
                Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => Signal::Changed,
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => Signal::Listing,
                Ok(watcher::Event::InitDone) => Signal::Synced,
                Err(e) => Signal::Failed(e),
            };
            (kind, signal)
        })
        .boxed()
}

/// One watch's health, for logging.
#[derive(Debug, Default)]
struct WatchState {
    /// Its first list is done.
    synced: bool,
    /// The message of the failure it is in, if it is failing.
    failing: Option<String>,
    /// The kind is not served (its CRD is not installed); logged once.
    not_served: bool,
    /// An optional kind the control plane may not list (403): empty until it may.
    forbidden: bool,
}

impl WatchState {
    /// Logs a failure: at warn when it starts or changes, else at debug (the watcher retries
    /// with backoff, so a long outage would otherwise log every retry).
    fn failed(&mut self, kind: Kind, error: &watcher::Error) {
        if let watcher::Error::WatchError(status) = error {
            if status.code == 410 {
                // Routine: the watch fell out of the API server's history window.
                info!(kind = kind.as_str(), message = %status.message, "watch expired (410 Gone); relisting");
                return;
            }
        }
        let message = causes(error);
        if self.failing.as_ref() != Some(&message) {
            warn!(
                kind = kind.as_str(),
                error = %message,
                "watching the Kubernetes API failed; retrying with backoff, the last published config stays in force"
            );
        } else {
            debug!(kind = kind.as_str(), error = %message, "watch still failing");
        }
        self.failing = Some(message);
    }
}

/// The stores and what the source remembers about them.
struct Cluster {
    services: Tracked<Service>,
    slices: Tracked<EndpointSlice>,
    pods: Tracked<Pod>,
    routes: Tracked<HttpRoute>,
    grants: Tracked<ReferenceGrant>,
    splits: Tracked<TrafficSplit>,
    faults: Tracked<HttpFault>,
    watches: [WatchState; KINDS],
    /// A first snapshot was sent.
    published: bool,
    metrics: Arc<Metrics>,
    /// The HTTPRoutes refused in the last rebuild.
    refused_routes: watch::Sender<Arc<Vec<RefusedRoute>>>,
}

impl Cluster {
    /// Takes one signal; returns whether a store changed.
    fn seen(&mut self, kind: Kind, signal: Signal) -> bool {
        let watch = &mut self.watches[kind as usize];
        if let Signal::Failed(error) = signal {
            if kind.optional() && not_served(&error) {
                // No CRD: nothing of the kind exists. Synced, empty, until it is installed.
                if !watch.not_served {
                    info!(
                        kind = kind.as_str(),
                        "the API server does not serve this kind (its CRD is not installed); \
                         running without it, and watching for it"
                    );
                    watch.not_served = true;
                }
                let changed = !watch.synced;
                watch.synced = true;
                return changed;
            }
            if kind.optional() && list_status(&error) == Some(403) {
                // Not allowed to read it (the ClusterRole predates the kind): the rest of the
                // mesh must not wait for it. Empty, said once, and retried as any failure.
                if !watch.forbidden {
                    warn!(
                        kind = kind.as_str(),
                        error = %causes(&error),
                        "the control plane may not list this kind: running without it until \
                         its ClusterRole allows list and watch"
                    );
                    watch.forbidden = true;
                }
                let changed = !watch.synced;
                watch.synced = true;
                return changed;
            }
            watch.failed(kind, &error);
            return false;
        }
        if watch.not_served {
            info!(kind = kind.as_str(), "the API server serves this kind now");
            watch.not_served = false;
        }
        if watch.forbidden {
            info!(
                kind = kind.as_str(),
                "the control plane may list this kind now"
            );
            watch.forbidden = false;
        }
        if watch.failing.take().is_some() {
            info!(kind = kind.as_str(), "watching the Kubernetes API again");
        }
        match signal {
            Signal::Synced => {
                watch.synced = true;
                true
            }
            Signal::Changed => true,
            Signal::Listing | Signal::Failed(_) => false,
        }
    }

    /// Builds a snapshot from the stores and sends it unless it equals the one in force.
    fn publish(&mut self, out: &watch::Sender<Arc<Snapshot>>) {
        let mut next = Snapshot::default();
        let m = &self.metrics;
        self.services
            .fold(&mut next, Snapshot::add_service, |s| &mut s.services, m);
        self.slices.fold(
            &mut next,
            Snapshot::add_endpoint_slice,
            |s| &mut s.endpoint_slices,
            m,
        );
        self.pods
            .fold(&mut next, Snapshot::add_pod, |s| &mut s.pods, m);
        self.routes.fold(
            &mut next,
            Snapshot::add_http_route,
            |s| &mut s.http_routes,
            m,
        );
        self.grants.fold(
            &mut next,
            Snapshot::add_reference_grant,
            |s| &mut s.reference_grants,
            m,
        );
        self.splits.fold(
            &mut next,
            Snapshot::add_traffic_split,
            |s| &mut s.traffic_splits,
            m,
        );
        self.faults.fold(
            &mut next,
            Snapshot::add_http_fault,
            |s| &mut s.http_faults,
            m,
        );
        let refused: Vec<RefusedRoute> = self
            .routes
            .refusals
            .iter()
            .map(|(key, route, problem)| RefusedRoute {
                key: key.clone(),
                route: route.clone(),
                problem: problem.clone(),
            })
            .collect();
        self.refused_routes.send_if_modified(|current| {
            if **current == refused {
                return false;
            }
            *current = Arc::new(refused);
            true
        });
        let first = !self.published;
        let (services, slices, pods) = (
            next.services.len(),
            next.endpoint_slices.len(),
            next.pods.len(),
        );
        let (http_routes, traffic_splits) = (next.http_routes.len(), next.traffic_splits.len());
        let sent = out.send_if_modified(|current| {
            if !first && same_snapshot(current, &next) {
                return false;
            }
            *current = Arc::new(next);
            true
        });
        self.published = true;
        if !sent {
            return;
        }
        self.metrics.config_read(NAME, true);
        if first {
            info!(
                services,
                endpoint_slices = slices,
                pods,
                http_routes,
                traffic_splits,
                "in sync with the Kubernetes API; config in force"
            );
        } else {
            debug!(
                services,
                endpoint_slices = slices,
                pods,
                http_routes,
                traffic_splits,
                "Kubernetes config changed"
            );
        }
    }
}

/// One kind's store, with the version of each object last accepted and the refusals seen.
struct Tracked<K: Resource + 'static>
where
    K::DynamicType: Eq + std::hash::Hash,
{
    kind: Kind,
    store: Store<K>,
    /// The version in force of every object in the store that ever passed the checks.
    last_good: HashMap<Key, Arc<K>>,
    /// Objects whose current version is refused, with that version's resourceVersion.
    refused: HashMap<Key, Option<String>>,
    /// The refused versions of the last fold, with why.
    refusals: Vec<(Key, Arc<K>, Problem)>,
}

impl<K> Tracked<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    fn new(kind: Kind, store: Store<K>) -> Self {
        Self {
            kind,
            store,
            last_good: HashMap::new(),
            refused: HashMap::new(),
            refusals: Vec::new(),
        }
    }

    /// Adds every object of the store to `snapshot` through `add`; a refused one is replaced
    /// by its last good version, if any. Forgets objects no longer in the store.
    fn fold(
        &mut self,
        snapshot: &mut Snapshot,
        add: fn(&mut Snapshot, Arc<K>) -> Result<(), Problem>,
        slot: fn(&mut Snapshot) -> &mut BTreeMap<Key, Arc<K>>,
        metrics: &Metrics,
    ) {
        let mut last_good = HashMap::with_capacity(self.last_good.len());
        let mut refused = HashMap::new();
        self.refusals.clear();
        for object in self.store.state() {
            let meta = object.meta();
            let id = (
                meta.namespace.clone().unwrap_or_default(),
                meta.name.clone().unwrap_or_default(),
            );
            let problem = match add(snapshot, object.clone()) {
                Ok(()) => {
                    last_good.insert(id, object);
                    continue;
                }
                Err(problem) => problem,
            };
            let version = meta.resource_version.clone();
            let kept = self.last_good.remove(&id);
            if self.refused.get(&id) != Some(&version) {
                warn!(
                    kind = self.kind.as_str(),
                    namespace = %id.0,
                    name = %id.1,
                    resource_version = version.as_deref().unwrap_or(""),
                    field = %problem.field,
                    reason = %problem.reason,
                    "{} refused; {}",
                    self.kind.as_str(),
                    if kept.is_some() {
                        "its last good version stays in force"
                    } else {
                        "left out"
                    }
                );
                metrics.config_refused(NAME, 1);
            }
            if let Some(good) = kept {
                if let Ok(key) = model::key(good.meta()) {
                    slot(snapshot).insert(key, good.clone());
                }
                last_good.insert(id.clone(), good);
            }
            self.refusals.push((id.clone(), object.clone(), problem));
            refused.insert(id, version);
        }
        self.last_good = last_good;
        self.refused = refused;
    }
}

/// An error with its causes (`a: b: c`): kube's own messages stop at "client error
/// (SendRequest)", and the cause is what an operator needs.
pub(crate) fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = cause.source();
    }
    text
}

/// Whether two snapshots hold the same objects, resourceVersions aside.
fn same_snapshot(a: &Snapshot, b: &Snapshot) -> bool {
    same_objects(&a.services, &b.services)
        && same_objects(&a.endpoint_slices, &b.endpoint_slices)
        && same_objects(&a.pods, &b.pods)
        && same_objects(&a.http_routes, &b.http_routes)
        && same_objects(&a.reference_grants, &b.reference_grants)
        && same_objects(&a.traffic_splits, &b.traffic_splits)
        && same_objects(&a.http_faults, &b.http_faults)
}

fn same_objects<K: Resource + Clone + PartialEq>(
    a: &BTreeMap<Key, Arc<K>>,
    b: &BTreeMap<Key, Arc<K>>,
) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ka, va), (kb, vb))| ka == kb && same_object(va, vb))
}

/// The same object, resourceVersion aside: a version that changed only in fields stripped
/// before storing is no change for discovery.
fn same_object<K: Resource + Clone + PartialEq>(a: &Arc<K>, b: &Arc<K>) -> bool {
    if Arc::ptr_eq(a, b) {
        return true;
    }
    let (va, vb) = (&a.meta().resource_version, &b.meta().resource_version);
    if va.is_some() && va == vb {
        return true; // one resourceVersion is one content
    }
    let mut b = K::clone(b);
    b.meta_mut().resource_version.clone_from(va);
    **a == b
}

/// Drops what every kind's store can do without.
fn strip_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.remove(LAST_APPLIED);
    }
}

fn strip_service(svc: &mut Service) {
    strip_meta(&mut svc.metadata);
}

fn strip_slice(slice: &mut EndpointSlice) {
    strip_meta(&mut slice.metadata);
}

/// Keeps only what discovery reads of a Pod.
fn strip_pod(pod: &mut Pod) {
    let meta = std::mem::take(&mut pod.metadata);
    pod.metadata = ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        labels: meta.labels,
        annotations: meta.annotations,
        uid: meta.uid,
        resource_version: meta.resource_version,
        ..ObjectMeta::default()
    };
    strip_meta(&mut pod.metadata);
    // Names and ports of every container, init containers too: the proxy is a native sidecar
    // (an init container that keeps running) on Kubernetes 1.29+.
    let keep = |containers: Vec<Container>| -> Vec<Container> {
        containers
            .into_iter()
            .map(|c| Container {
                name: c.name,
                ports: c.ports,
                ..Container::default()
            })
            .collect()
    };
    pod.spec = pod.spec.take().map(|spec| PodSpec {
        service_account_name: spec.service_account_name,
        containers: keep(spec.containers),
        init_containers: spec.init_containers.map(keep),
        ..PodSpec::default()
    });
    pod.status = pod.status.take().map(|status| PodStatus {
        pod_ip: status.pod_ip,
        pod_ips: status.pod_ips,
        phase: status.phase,
        ..PodStatus::default()
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).expect("a Pod")
    }

    #[test]
    fn a_pod_keeps_only_what_discovery_reads() {
        let mut full = pod(serde_json::json!({
            "metadata": {
                "name": "api-0", "namespace": "shop", "uid": "u-1", "resourceVersion": "7",
                "labels": {"app": "api"},
                "annotations": {"weft.dev/injected": "true", LAST_APPLIED: "{...}"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-7d", "uid": "u-0"}],
                "managedFields": [{"manager": "kubelet", "operation": "Update"}],
            },
            "spec": {
                "serviceAccountName": "api", "nodeName": "node-1",
                "containers": [{"name": "app", "image": "app:1", "ports": [{"containerPort": 8080}]}],
                "initContainers": [{"name": "weft-proxy", "image": "weft:1", "restartPolicy": "Always",
                                    "env": [{"name": "A", "value": "b"}],
                                    "ports": [{"name": "weft-inbound", "containerPort": 15143}]}],
                "volumes": [{"name": "token", "emptyDir": {}}],
            },
            "status": {
                "phase": "Running", "podIP": "198.18.0.11", "podIPs": [{"ip": "198.18.0.11"}],
                "hostIP": "198.18.1.1", "conditions": [{"type": "Ready", "status": "True"}],
            },
        }));
        strip_pod(&mut full);
        let want = pod(serde_json::json!({
            "metadata": {
                "name": "api-0", "namespace": "shop", "uid": "u-1", "resourceVersion": "7",
                "labels": {"app": "api"}, "annotations": {"weft.dev/injected": "true"},
            },
            "spec": {
                "serviceAccountName": "api",
                "containers": [{"name": "app", "ports": [{"containerPort": 8080}]}],
                "initContainers": [{"name": "weft-proxy", "ports": [{"name": "weft-inbound", "containerPort": 15143}]}],
            },
            "status": {"phase": "Running", "podIP": "198.18.0.11", "podIPs": [{"ip": "198.18.0.11"}]},
        }));
        assert_eq!(full, want);
    }

    #[test]
    fn versions_differing_only_in_resource_version_are_the_same() {
        let a = Arc::new(pod(serde_json::json!({
            "metadata": {"name": "p", "namespace": "shop", "resourceVersion": "1"},
            "status": {"podIP": "198.18.0.11"},
        })));
        let mut b = (*a).clone();
        b.metadata.resource_version = Some("2".into());
        assert!(same_object(&a, &Arc::new(b.clone())));
        b.status = None;
        assert!(!same_object(&a, &Arc::new(b)));
    }
}
