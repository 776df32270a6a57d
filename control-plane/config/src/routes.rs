//! From a [`Snapshot`] to the route table one client sees for one Service port, and every
//! route's status conditions. Pure: no I/O, no clock.
//!
//! # Which routes apply (GAMMA, GEP-1294 and GEP-1426)
//! - A route attaches to a Service through a `parentRef` of `group: ""`, `kind: Service`
//!   (the CRD defaults an absent group to `gateway.networking.k8s.io` and an absent kind to
//!   `Gateway`: those parents belong to a Gateway's controller and are ignored here). A
//!   parentRef's `port` (or `sectionName`, a port's name) attaches it to that port only;
//!   without either, to every port of the Service. A headless Service has no cluster IP for
//!   a route to catch, and takes no routes.
//! - A route in the Service's own namespace is a *producer* route: it applies to every
//!   client. A route in another namespace is a *consumer* route: it applies only to clients
//!   of its own namespace, and there, for that Service port, the consumer routes replace the
//!   producer routes entirely. Routes of one kind merge.
//! - Precedence across every route that applies, per the HTTPRoute specification: an `Exact`
//!   path first, then a `RegularExpression` path (longer pattern first; regex precedence is
//!   implementation-specific, and this is Linkerd's order), then the longest `PathPrefix` (in
//!   characters), then a match with a method, then more header matches, then more query
//!   matches; ties go to the oldest route (`creationTimestamp`; a route without one, as in a
//!   local folder, counts as oldest), then `namespace/name` alphabetically, then rule order,
//!   then match order. The table carries the matches in that order.
//! - A rule with no match matches every request (`PathPrefix /`). A rule with no backendRefs
//!   and no redirect sends to the parent Service itself, at the port asked (what a mesh user
//!   of Linkerd expects of a route that only adds filters).
//!
//! # Backends (`backendRefs`, `RequestMirror`)
//! A backend is a core Service port (`port` is a Service port, not a target port). It is
//! invalid, and its share of requests is answered 500, when it is not a Service
//! (`InvalidKind`), is in another namespace without permission (`RefNotPermitted`), or does
//! not exist or lack that port (`BackendNotFound`). A backend in another namespace is
//! permitted when a ReferenceGrant in its namespace lets HTTPRoutes of the route's namespace
//! reference Services (all, or that one by name), or when it is in the parent Service's own
//! namespace: a consumer route sending its clients to the producer's own Services exposes
//! nothing the clients could not call anyway (the Gateway API's `MeshConsumerRoute`
//! conformance test is exactly that, with no grant). An invalid mirror backend is dropped
//! (the filter is not configured), as the specification says.
//!
//! # TrafficSplit
//! A TrafficSplit is a producer route on its root Service, every port: one rule, no match,
//! the weighted backends (the Service port of the same number on each backend, else of the
//! same name), which also split opaque TCP per connection (`tcp_split`). When HTTPRoutes and
//! a TrafficSplit attach to the same Service port, the HTTPRoutes win (GAMMA is the standard;
//! SMI the older format) and the split is shadowed there, for HTTP and TCP alike; between two
//! splits of one Service the older (then by name) wins. [`split_statuses`] says which.
//!
//! # Cost
//! [`RouteIndex::new`] builds every table once per snapshot; [`RouteIndex::answer`] is two
//! map lookups and an `Arc` clone.

use std::{
    borrow::Cow,
    cmp::Reverse,
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    net::IpAddr,
    sync::Arc,
};

use k8s_openapi::{
    api::core::v1::{Service, ServicePort},
    apimachinery::pkg::apis::meta::v1::Time,
};
use prost::Message;
use weft_api::route as pb;

use crate::{
    fault::{AbortStatus, FaultClient, HttpFault},
    gateway::{
        self, BackendObjectReference, HttpHeaderFilter, HttpPathModifier, HttpRoute,
        HttpRouteFilter, HttpRouteMatch, ParentReference,
    },
    index::{cluster_ips, Target, TargetError},
    model::{changed, Key, Snapshot},
    smi,
};

/// The status a request gets when its backend could not be resolved.
pub const INVALID_BACKEND_STATUS: u16 = 500;

/// What a proxy watches: a Service port, for a client of a namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteTarget {
    /// The Service port (a cluster IP and port, or by name).
    pub service: Target,
    /// The namespace of the client asking, when it is known (authenticated): it selects
    /// consumer routes. `None`: producer routes only.
    pub client_namespace: Option<String>,
    /// The client's service account, when known: with its namespace, it selects the
    /// Service-wide faults whose `from` names it.
    pub client_service_account: Option<String>,
}

impl RouteTarget {
    /// A Service port named by its parts (`WatchRequest.service`).
    pub fn service(
        r: &pb::ServiceRef,
        client_namespace: Option<String>,
    ) -> Result<Self, TargetError> {
        let service = Target::service(&weft_api::destination::ServiceRef {
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            port: r.port,
        })?;
        Ok(Self {
            service,
            client_namespace,
            client_service_account: None,
        })
    }

    /// `ip:port` or `name.namespace.svc.<cluster_domain>:port` (`WatchRequest.target`).
    pub fn parse(
        s: &str,
        cluster_domain: &str,
        client_namespace: Option<String>,
    ) -> Result<Self, TargetError> {
        Ok(Self {
            service: Target::parse(s, cluster_domain)?,
            client_namespace,
            client_service_account: None,
        })
    }

    /// The same target for a client running as `service_account` (of its namespace).
    pub fn with_service_account(self, service_account: Option<String>) -> Self {
        Self {
            client_service_account: service_account,
            ..self
        }
    }
}

impl fmt::Display for RouteTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.service)?;
        match (&self.client_namespace, &self.client_service_account) {
            (Some(ns), Some(sa)) => write!(f, " for {ns}/{sa}"),
            (Some(ns), None) => write!(f, " for namespace {ns}"),
            (None, _) => f.write_str(" for an unauthenticated client"),
        }
    }
}

/// What a proxy is told about one target: the whole table (shared: built once per snapshot).
pub type RouteAnswer = Arc<pb::RouteTable>;

/// A snapshot's route tables, built once; each answer is a few map lookups.
#[derive(Debug, Default)]
pub struct RouteIndex {
    by_cluster_ip: HashMap<IpAddr, Key>,
    /// Service key -> its ports (numbers), to tell a Service port from a stray one.
    ports: HashMap<Key, Vec<u16>>,
    /// (Service, port) -> its tables, for Service ports some route attaches to.
    tables: HashMap<(Key, u16), PortTables>,
    /// Service -> the HTTPFaults whose targetRef names it, in order (oldest, then by name),
    /// each with the clients it is for (empty: every client).
    faults: HashMap<Key, Vec<(Vec<FaultClient>, pb::Fault)>>,
    routes: usize,
}

#[derive(Debug, Default)]
struct PortTables {
    /// Producer routes (or a TrafficSplit); `None` when only consumer routes attach.
    producer: Option<RouteAnswer>,
    /// Consumer routes by the namespace they apply to.
    consumers: HashMap<String, RouteAnswer>,
}

/// Whether `old` and `new` differ in anything a route table reads: Services, HTTPRoutes,
/// ReferenceGrants, TrafficSplits or HTTPFaults (not endpoints, not pods).
pub fn inputs_differ(old: &Snapshot, new: &Snapshot) -> bool {
    changed(&old.services, &new.services).next().is_some()
        || changed(&old.http_routes, &new.http_routes).next().is_some()
        || changed(&old.reference_grants, &new.reference_grants)
            .next()
            .is_some()
        || changed(&old.traffic_splits, &new.traffic_splits)
            .next()
            .is_some()
        || changed(&old.http_faults, &new.http_faults).next().is_some()
}

impl RouteIndex {
    /// Builds every table of `snapshot`.
    pub fn new(snapshot: &Snapshot) -> Self {
        let mut by_cluster_ip = HashMap::new();
        let mut ports = HashMap::new();
        for (key, svc) in &snapshot.services {
            for ip in cluster_ips(svc) {
                by_cluster_ip.insert(ip, key.clone());
            }
            ports.insert(key.clone(), service_ports(svc).map(|(n, _)| n).collect());
        }
        let attached = Attachments::of(snapshot);
        let mut tables: HashMap<(Key, u16), PortTables> = HashMap::new();
        for ((service, port), set) in &attached.by_port {
            let Some((svc_port, port_name)) = snapshot
                .services
                .get(service)
                .and_then(|svc| service_ports(svc).find(|(n, _)| n == port))
            else {
                continue;
            };
            let at = PortOf {
                service,
                port: svc_port,
                port_name,
            };
            let entry = tables.entry((service.clone(), *port)).or_default();
            if !set.producers.is_empty() {
                entry.producer = Some(Arc::new(http_table(snapshot, &at, &set.producers)));
            } else if let Some(split) = set.splits.first() {
                entry.producer = Some(Arc::new(split_table(snapshot, &at, split)));
            }
            for (namespace, routes) in &set.consumers {
                entry.consumers.insert(
                    namespace.clone(),
                    Arc::new(http_table(snapshot, &at, routes)),
                );
            }
        }
        // Per Service: (age, key) to order by, the clients, the fault.
        type FaultRank<'a> = (Option<&'a Time>, &'a Key, Vec<FaultClient>, pb::Fault);
        let mut faults: HashMap<Key, Vec<FaultRank<'_>>> = HashMap::new();
        for (key, fault) in &snapshot.http_faults {
            let Some(target) = &fault.spec.target_ref else {
                continue;
            };
            faults
                .entry((key.0.clone(), target.name.clone()))
                .or_default()
                .push((
                    fault.metadata.creation_timestamp.as_ref(),
                    key,
                    fault.spec.from.clone(),
                    wire_fault(key, fault),
                ));
        }
        let faults = faults
            .into_iter()
            .map(|(service, mut list)| {
                list.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
                let list = list.into_iter().map(|(_, _, from, f)| (from, f)).collect();
                (service, list)
            })
            .collect();
        Self {
            by_cluster_ip,
            ports,
            tables,
            faults,
            routes: snapshot.http_routes.len() + snapshot.traffic_splits.len(),
        }
    }

    /// How many routes (HTTPRoutes and TrafficSplits) the snapshot holds.
    pub fn routes(&self) -> usize {
        self.routes
    }

    /// The table `target` gets.
    pub fn answer(&self, target: &RouteTarget) -> RouteAnswer {
        let (key, port) = match &target.service {
            Target::Addr(addr) => match self.by_cluster_ip.get(&addr.ip()) {
                Some(key) => (key.clone(), addr.port()),
                // Not a cluster IP (a pod's own address): never routed.
                None => return Arc::default(),
            },
            Target::Name {
                namespace,
                name,
                port,
            } => ((namespace.clone(), name.clone()), *port),
        };
        if !self.ports.get(&key).is_some_and(|p| p.contains(&port)) {
            return Arc::default();
        }
        let tables = self.tables.get(&(key.clone(), port));
        let consumer = target
            .client_namespace
            .as_ref()
            .and_then(|ns| tables?.consumers.get(ns));
        let table = match consumer.or_else(|| tables?.producer.as_ref()) {
            Some(table) => table.clone(),
            None => Arc::new(pb::RouteTable {
                service: Some(service_ref(&key, port)),
                ..Default::default()
            }),
        };
        // The Service's own faults, for this client.
        let faults: Vec<&pb::Fault> = self
            .faults
            .get(&key)
            .into_iter()
            .flatten()
            .filter(|(from, _)| {
                from.is_empty()
                    || target.client_namespace.as_deref().is_some_and(|ns| {
                        from.iter()
                            .any(|c| c.selects(ns, target.client_service_account.as_deref()))
                    })
            })
            .map(|(_, f)| f)
            .collect();
        if faults.is_empty() {
            return table;
        }
        let mut table = RouteAnswer::unwrap_or_clone(table);
        table.faults.extend(faults.into_iter().cloned());
        Arc::new(bounded(table))
    }
}

/// One Service port a table is built for.
struct PortOf<'a> {
    service: &'a Key,
    port: u16,
    port_name: &'a str,
}

/// Which routes attach to which Service port.
#[derive(Default)]
struct Attachments<'a> {
    by_port: BTreeMap<(Key, u16), PortSet<'a>>,
}

#[derive(Default)]
struct PortSet<'a> {
    /// Producer routes, oldest first.
    producers: Vec<Ranked<'a>>,
    /// Consumer routes by namespace, oldest first.
    consumers: BTreeMap<String, Vec<Ranked<'a>>>,
    /// TrafficSplits on the Service, oldest first: the first is in force when no producer
    /// route attaches.
    splits: Vec<(&'a Key, &'a smi::TrafficSplit)>,
}

/// A route with what ranks it among routes: age, then namespace/name.
#[derive(Clone, Copy)]
struct Ranked<'a> {
    key: &'a Key,
    route: &'a HttpRoute,
}

impl<'a> Ranked<'a> {
    fn order(&self) -> (Option<&'a Time>, &'a Key) {
        (self.route.metadata.creation_timestamp.as_ref(), self.key)
    }
}

impl<'a> Attachments<'a> {
    fn of(snapshot: &'a Snapshot) -> Self {
        let mut by_port: BTreeMap<(Key, u16), PortSet<'a>> = BTreeMap::new();
        for (key, route) in &snapshot.http_routes {
            // A route attaches once per port, however many of its parentRefs name it.
            let mut ports: BTreeSet<(Key, u16)> = BTreeSet::new();
            for parent in route.spec.parent_refs.iter().filter(|p| p.is_service()) {
                let service = parent_key(parent, &key.0);
                if let Ok(attached) = parent_ports(snapshot, &service, parent) {
                    ports.extend(attached.into_iter().map(|p| (service.clone(), p)));
                }
            }
            for (service, port) in ports {
                let consumer = service.0 != key.0;
                let set = by_port.entry((service, port)).or_default();
                let ranked = Ranked { key, route };
                if consumer {
                    set.consumers.entry(key.0.clone()).or_default().push(ranked);
                } else {
                    set.producers.push(ranked);
                }
            }
        }
        for (key, ts) in &snapshot.traffic_splits {
            let Some(root) = split_root(snapshot, key, ts) else {
                continue;
            };
            for (port, _) in service_ports(root.1) {
                by_port
                    .entry((root.0.clone(), port))
                    .or_default()
                    .splits
                    .push((key, ts));
            }
        }
        for set in by_port.values_mut() {
            set.producers.sort_by_key(Ranked::order);
            for routes in set.consumers.values_mut() {
                routes.sort_by_key(Ranked::order);
            }
            set.splits
                .sort_by_key(|(key, ts)| (ts.metadata.creation_timestamp.as_ref(), *key));
        }
        Self { by_port }
    }
}

/// The root Service of a split, if it exists and takes routes.
fn split_root<'a>(
    snapshot: &'a Snapshot,
    key: &Key,
    ts: &smi::TrafficSplit,
) -> Option<(Key, &'a Service)> {
    let split = smi::read_split(ts, &key.0).ok()?;
    let root = (key.0.clone(), split.root);
    let svc = snapshot.services.get(&root)?;
    (!is_headless(svc)).then_some((root, svc))
}

/// The Service a parentRef names.
fn parent_key(parent: &ParentReference, route_namespace: &str) -> Key {
    (
        parent
            .namespace
            .clone()
            .unwrap_or_else(|| route_namespace.to_string()),
        parent.name.clone(),
    )
}

/// Why a Service parentRef is not accepted: the `Accepted` condition's reason and message.
type NotAccepted = (&'static str, String);

/// The ports of `service` a Service parentRef attaches to, or why it attaches to none.
fn parent_ports(
    snapshot: &Snapshot,
    service: &Key,
    parent: &ParentReference,
) -> Result<Vec<u16>, NotAccepted> {
    let name = format!("{}/{}", service.0, service.1);
    let Some(svc) = snapshot.services.get(service) else {
        return Err((NO_MATCHING_PARENT, format!("Service {name} not found")));
    };
    if is_headless(svc) {
        return Err((
            UNSUPPORTED_VALUE,
            format!("Service {name} is headless (clusterIP None): a route needs a cluster IP to attach to"),
        ));
    }
    let ports: Vec<u16> = service_ports(svc)
        .filter(|(n, _)| parent.port.is_none_or(|p| i32::from(*n) == p))
        .filter(|(_, pn)| parent.section_name.as_deref().is_none_or(|s| s == *pn))
        .map(|(n, _)| n)
        .collect();
    if ports.is_empty() {
        let wanted = match (parent.port, &parent.section_name) {
            (Some(p), Some(s)) => format!("a port {p} named {s:?}"),
            (Some(p), None) => format!("port {p}"),
            (None, Some(s)) => format!("a port named {s:?}"),
            (None, None) => "any port".to_string(),
        };
        return Err((
            NO_MATCHING_PARENT,
            format!("Service {name} has no {wanted}"),
        ));
    }
    Ok(ports)
}

/// A Service's ports: number and name (empty when unnamed).
fn service_ports(svc: &Service) -> impl Iterator<Item = (u16, &str)> + '_ {
    svc.spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .filter_map(|p: &ServicePort| {
            let n = u16::try_from(p.port).ok().filter(|n| *n != 0)?;
            Some((n, p.name.as_deref().unwrap_or("")))
        })
}

fn is_headless(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .is_some_and(|ip| ip == "None")
}

fn service_ref(key: &Key, port: u16) -> pb::ServiceRef {
    pb::ServiceRef {
        namespace: key.0.clone(),
        name: key.1.clone(),
        port: u32::from(port),
    }
}

/// Where a backend reference is resolved from.
#[derive(Clone, Copy)]
struct RefFrom<'a> {
    /// The route's namespace.
    route_namespace: &'a str,
    /// The namespace of the parent Service the route is applied for.
    parent_namespace: &'a str,
}

/// Why a backend reference is invalid: the `ResolvedRefs` reason and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Unresolved {
    reason: &'static str,
    message: String,
}

impl Unresolved {
    fn invalid(&self) -> pb::Invalid {
        pb::Invalid {
            status: u32::from(INVALID_BACKEND_STATUS),
            reason: format!("{}: {}", self.reason, self.message),
        }
    }
}

/// Resolves a backend reference to a Service port.
fn resolve(
    snapshot: &Snapshot,
    from: RefFrom<'_>,
    r: &BackendObjectReference,
) -> Result<pb::ServiceRef, Unresolved> {
    if !r.is_service() {
        let group = r
            .group
            .as_deref()
            .filter(|g| !g.is_empty())
            .unwrap_or("core");
        return Err(Unresolved {
            reason: INVALID_KIND,
            message: format!(
                "{group}/{} is not a kind Weft sends traffic to (a core Service)",
                r.kind.as_deref().unwrap_or("Service")
            ),
        });
    }
    let namespace = r.namespace.as_deref().unwrap_or(from.route_namespace);
    let name = format!("{namespace}/{}", r.name);
    if namespace != from.route_namespace
        && namespace != from.parent_namespace
        && !granted(snapshot, from.route_namespace, namespace, &r.name)
    {
        return Err(Unresolved {
            reason: REF_NOT_PERMITTED,
            message: format!(
                "Service {name} is in another namespace, and no ReferenceGrant in {namespace} \
                 lets HTTPRoutes of {} reference it",
                from.route_namespace
            ),
        });
    }
    let key = (namespace.to_string(), r.name.clone());
    let Some(svc) = snapshot.services.get(&key) else {
        return Err(Unresolved {
            reason: BACKEND_NOT_FOUND,
            message: format!("Service {name} not found"),
        });
    };
    let port = r.port.and_then(|p| u16::try_from(p).ok()).unwrap_or(0);
    if !service_ports(svc).any(|(n, _)| n == port) {
        return Err(Unresolved {
            reason: BACKEND_NOT_FOUND,
            message: format!("Service {name} has no port {port}"),
        });
    }
    Ok(service_ref(&key, port))
}

/// Whether a ReferenceGrant in `to_namespace` lets HTTPRoutes of `from_namespace` reference
/// the Service `name`.
fn granted(snapshot: &Snapshot, from_namespace: &str, to_namespace: &str, name: &str) -> bool {
    let start = (to_namespace.to_string(), String::new());
    snapshot
        .reference_grants
        .range(start..)
        .take_while(|((ns, _), _)| ns == to_namespace)
        .any(|(_, grant)| {
            let from = grant.spec.from.iter().any(|f| {
                f.group == gateway::GROUP && f.kind == "HTTPRoute" && f.namespace == from_namespace
            });
            let to = grant.spec.to.iter().any(|t| {
                t.group.is_empty()
                    && t.kind == "Service"
                    && t.name.as_deref().is_none_or(|n| n == name)
            });
            from && to
        })
}

/// The table of the HTTPRoutes `routes` (oldest first) for one Service port.
fn http_table(snapshot: &Snapshot, at: &PortOf<'_>, routes: &[Ranked<'_>]) -> pb::RouteTable {
    let mut table = pb::RouteTable {
        service: Some(service_ref(at.service, at.port)),
        ..Default::default()
    };
    let mut ranked: Vec<(MatchRank, pb::Match)> = Vec::new();
    for (route_rank, r) in routes.iter().enumerate() {
        let (namespace, name) = r.key;
        table.routes.push(format!("httproute/{namespace}/{name}"));
        let from = RefFrom {
            route_namespace: namespace,
            parent_namespace: &at.service.0,
        };
        for (i, rule) in gateway::rules(r.route).iter().enumerate() {
            let index = u32::try_from(table.rules.len()).unwrap_or(u32::MAX);
            let redirects = rule.filters.iter().any(|f| f.request_redirect.is_some());
            let backends = if rule.backend_refs.is_empty() && !redirects {
                // No backendRefs: the parent Service itself, as it would be without the route.
                vec![pb::Backend {
                    weight: 1,
                    target: Some(pb::backend::Target::Service(service_ref(
                        at.service, at.port,
                    ))),
                    filters: Vec::new(),
                }]
            } else {
                rule.backend_refs
                    .iter()
                    .map(|b| pb::Backend {
                        // Checked: 0..=1,000,000.
                        weight: b.weight.map_or(1, |w| u32::try_from(w).unwrap_or(0)),
                        target: Some(match resolve(snapshot, from, &b.object()) {
                            Ok(service) => pb::backend::Target::Service(service),
                            Err(e) => pb::backend::Target::Invalid(e.invalid()),
                        }),
                        filters: filters(snapshot, from, &b.filters),
                    })
                    .collect()
            };
            let (request, backend_request, retry) = gateway::timeouts_and_retry(rule);
            let millis = |d: Option<std::time::Duration>| {
                d.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            };
            table.rules.push(pb::Rule {
                name: format!("httproute/{namespace}/{name}/rule/{i}"),
                filters: filters(snapshot, from, &rule.filters),
                backends,
                timeouts: (request.is_some() || backend_request.is_some()).then(|| pb::Timeouts {
                    request_ms: millis(request),
                    backend_request_ms: millis(backend_request),
                }),
                retry: retry.map(|(attempts, codes, backoff)| pb::Retry {
                    attempts,
                    codes,
                    backoff_ms: millis(Some(backoff)),
                }),
            });
            let matches: Cow<'_, [HttpRouteMatch]> = match rule.matches.as_deref() {
                Some(m) if !m.is_empty() => Cow::Borrowed(m),
                _ => Cow::Owned(vec![HttpRouteMatch::default()]),
            };
            for (j, m) in matches.iter().enumerate() {
                let m = to_match(m, index);
                ranked.push((MatchRank::of(&m, route_rank, i, j), m));
            }
        }
    }
    ranked.sort_by(|a, b| a.0.cmp(&b.0));
    table.matches = ranked.into_iter().map(|(_, m)| m).collect();
    bounded(table)
}

/// The table of a TrafficSplit for one port of its root Service.
fn split_table(
    snapshot: &Snapshot,
    at: &PortOf<'_>,
    (key, ts): &(&Key, &smi::TrafficSplit),
) -> pb::RouteTable {
    let (namespace, name) = key;
    let backends: Vec<pb::Backend> = match smi::read_split(ts, namespace) {
        Ok(split) => split
            .backends
            .iter()
            .map(|(backend, weight)| pb::Backend {
                weight: *weight,
                target: Some(split_backend(snapshot, namespace, backend, at)),
                filters: Vec::new(),
            })
            .collect(),
        // Checked when the snapshot was built.
        Err(_) => Vec::new(),
    };
    bounded(pb::RouteTable {
        service: Some(service_ref(at.service, at.port)),
        matches: vec![pb::Match {
            rule: 0,
            path: Some(prefix("/")),
            ..Default::default()
        }],
        rules: vec![pb::Rule {
            name: format!("trafficsplit/{namespace}/{name}/rule/0"),
            filters: Vec::new(),
            backends: backends.clone(),
            ..Default::default()
        }],
        tcp_split: backends,
        routes: vec![format!("trafficsplit/{namespace}/{name}")],
        ..Default::default()
    })
}

/// A split's backend Service at the port of the root's port number, else of its name.
fn split_backend(
    snapshot: &Snapshot,
    namespace: &str,
    backend: &str,
    at: &PortOf<'_>,
) -> pb::backend::Target {
    let key = (namespace.to_string(), backend.to_string());
    let unresolved = |message: String| {
        pb::backend::Target::Invalid(
            Unresolved {
                reason: BACKEND_NOT_FOUND,
                message,
            }
            .invalid(),
        )
    };
    let Some(svc) = snapshot.services.get(&key) else {
        return unresolved(format!("Service {namespace}/{backend} not found"));
    };
    let port = service_ports(svc).find(|(n, _)| *n == at.port).or_else(|| {
        service_ports(svc).find(|(_, pn)| !at.port_name.is_empty() && *pn == at.port_name)
    });
    match port {
        Some((n, _)) => pb::backend::Target::Service(service_ref(&key, n)),
        None => unresolved(format!(
            "Service {namespace}/{backend} has no port {} (or named {:?})",
            at.port, at.port_name
        )),
    }
}

/// A table too large to send replaced by one that says so: every request answered 500 with
/// the reason, rather than a stream that fails.
fn bounded(table: pb::RouteTable) -> pb::RouteTable {
    // Room for the Update around the table.
    const MAX: usize = weft_api::MAX_UPDATE_BYTES - 1024;
    let len = table.encoded_len();
    if len <= MAX {
        return table;
    }
    let reason = format!(
        "the route table of this Service port is {len} bytes, more than the {MAX} a proxy \
         accepts: split the routes"
    );
    pb::RouteTable {
        service: table.service,
        matches: vec![pb::Match {
            rule: 0,
            path: Some(prefix("/")),
            ..Default::default()
        }],
        rules: vec![pb::Rule {
            name: "too-large".into(),
            filters: Vec::new(),
            backends: vec![pb::Backend {
                weight: 1,
                target: Some(pb::backend::Target::Invalid(pb::Invalid {
                    status: u32::from(INVALID_BACKEND_STATUS),
                    reason,
                })),
                filters: Vec::new(),
            }],
            ..Default::default()
        }],
        tcp_split: Vec::new(),
        routes: table.routes,
        ..Default::default()
    }
}

fn prefix(p: &str) -> pb::PathMatch {
    pb::PathMatch {
        kind: Some(pb::path_match::Kind::Prefix(p.to_string())),
    }
}

/// One match of a rule, as the proxy gets it: defaults filled in, repeated names dropped
/// (only the first of equivalent names counts, as the specification says).
fn to_match(m: &HttpRouteMatch, rule: u32) -> pb::Match {
    let path = match &m.path {
        None => prefix("/"),
        Some(p) => {
            let value = p.value.clone().unwrap_or_else(|| "/".to_string());
            let kind = match p.type_.as_deref().unwrap_or("PathPrefix") {
                "Exact" => pb::path_match::Kind::Exact(value),
                "RegularExpression" => pb::path_match::Kind::Regex(value),
                _ => pb::path_match::Kind::Prefix(value),
            };
            pb::PathMatch { kind: Some(kind) }
        }
    };
    let values = |list: &[gateway::HttpHeaderMatch], fold: bool| {
        let mut seen = BTreeSet::new();
        list.iter()
            .filter_map(|h| {
                let name = if fold {
                    h.name.to_ascii_lowercase()
                } else {
                    h.name.clone()
                };
                if !seen.insert(name.clone()) {
                    return None;
                }
                let value = match h.type_.as_deref() {
                    Some("RegularExpression") => pb::value_match::Value::Regex(h.value.clone()),
                    _ => pb::value_match::Value::Exact(h.value.clone()),
                };
                Some(pb::ValueMatch {
                    name,
                    value: Some(value),
                })
            })
            .collect()
    };
    pb::Match {
        rule,
        path: Some(path),
        method: m.method.clone().unwrap_or_default(),
        headers: values(&m.headers, true),
        query_params: values(&m.query_params, false),
    }
}

/// How a match ranks: smaller first.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct MatchRank {
    /// 0 `Exact`, 1 `RegularExpression`, 2 `PathPrefix`.
    path_kind: u8,
    path_len: Reverse<usize>,
    method: Reverse<bool>,
    headers: Reverse<usize>,
    query: Reverse<usize>,
    /// The route's place among the routes (oldest, then namespace/name, first).
    route: usize,
    rule: usize,
    index: usize,
}

impl MatchRank {
    fn of(m: &pb::Match, route: usize, rule: usize, index: usize) -> Self {
        use pb::path_match::Kind;
        let (path_kind, path_len) = match m.path.as_ref().and_then(|p| p.kind.as_ref()) {
            Some(Kind::Exact(s)) => (0, s.len()),
            Some(Kind::Regex(s)) => (1, s.len()),
            Some(Kind::Prefix(s)) => (2, s.len()),
            None => (2, 0),
        };
        Self {
            path_kind,
            path_len: Reverse(path_len),
            method: Reverse(!m.method.is_empty()),
            headers: Reverse(m.headers.len()),
            query: Reverse(m.query_params.len()),
            route,
            rule,
            index,
        }
    }
}

/// A rule's or backend's filters, as the proxy gets them. A mirror whose backend does not
/// resolve is left out (its route's ResolvedRefs says why).
fn filters(snapshot: &Snapshot, from: RefFrom<'_>, list: &[HttpRouteFilter]) -> Vec<pb::Filter> {
    use pb::filter::Kind;
    list.iter()
        .filter_map(|f| {
            let kind = match f.type_.as_str() {
                "RequestHeaderModifier" => Kind::RequestHeaderModifier(header_modifier(
                    f.request_header_modifier.as_ref()?,
                )),
                "ResponseHeaderModifier" => Kind::ResponseHeaderModifier(header_modifier(
                    f.response_header_modifier.as_ref()?,
                )),
                "URLRewrite" => {
                    let r = f.url_rewrite.as_ref()?;
                    Kind::UrlRewrite(pb::UrlRewrite {
                        hostname: r.hostname.clone().unwrap_or_default(),
                        path: r.path.as_ref().map(path_modifier),
                    })
                }
                "RequestRedirect" => {
                    let r = f.request_redirect.as_ref()?;
                    Kind::RequestRedirect(pb::RequestRedirect {
                        scheme: r.scheme.clone().unwrap_or_default(),
                        hostname: r.hostname.clone().unwrap_or_default(),
                        path: r.path.as_ref().map(path_modifier),
                        port: r.port.and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
                        status_code: r
                            .status_code
                            .and_then(|c| u32::try_from(c).ok())
                            .unwrap_or(302),
                    })
                }
                "RequestMirror" => {
                    let m = f.request_mirror.as_ref()?;
                    let backend = resolve(snapshot, from, &m.backend_ref).ok()?;
                    let (numerator, denominator) = match (m.percent, &m.fraction) {
                        (Some(p), _) => (p, 100),
                        (None, Some(fr)) => (fr.numerator, fr.denominator.unwrap_or(100)),
                        (None, None) => (100, 100),
                    };
                    Kind::RequestMirror(pb::RequestMirror {
                        backend: Some(backend),
                        numerator: u32::try_from(numerator).unwrap_or(0),
                        denominator: u32::try_from(denominator).unwrap_or(1),
                    })
                }
                "ExtensionRef" => {
                    let e = f.extension_ref.as_ref()?;
                    let key = (from.route_namespace.to_string(), e.name.clone());
                    // Not found (or refused): sent with neither delay nor abort, which the
                    // proxy answers 500: a filter that cannot be honoured is never skipped.
                    Kind::Fault(match snapshot.http_faults.get(&key) {
                        Some(fault) => wire_fault(&key, fault),
                        None => pb::Fault {
                            namespace: key.0,
                            name: key.1,
                            ..Default::default()
                        },
                    })
                }
                // Checked: no other type reaches a snapshot.
                _ => return None,
            };
            Some(pb::Filter { kind: Some(kind) })
        })
        .collect()
}

/// An HTTPFault as a proxy takes it: shares in millionths, durations in milliseconds.
fn wire_fault(key: &Key, fault: &HttpFault) -> pb::Fault {
    // Checked when the snapshot took it: this reads, it cannot fail.
    let resolved = crate::fault::check_http_fault(fault).ok();
    let resolved = resolved.as_ref();
    pb::Fault {
        namespace: key.0.clone(),
        name: key.1.clone(),
        delay: resolved
            .and_then(|r| r.delay)
            .map(|(per_million, wait)| pb::FaultDelay {
                per_million,
                fixed_delay_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            }),
        abort: resolved
            .and_then(|r| r.abort)
            .map(|(per_million, status)| pb::FaultAbort {
                per_million,
                status: Some(match status {
                    AbortStatus::Http(s) => pb::fault_abort::Status::HttpStatus(u32::from(s)),
                    AbortStatus::Grpc(c) => pb::fault_abort::Status::GrpcStatus(c),
                }),
            }),
    }
}

fn header_modifier(h: &HttpHeaderFilter) -> pb::HeaderModifier {
    let headers = |list: &[gateway::HttpHeader]| {
        list.iter()
            .map(|h| pb::Header {
                name: h.name.clone(),
                value: h.value.clone(),
            })
            .collect()
    };
    pb::HeaderModifier {
        set: headers(&h.set),
        add: headers(&h.add),
        remove: h.remove.clone(),
    }
}

fn path_modifier(p: &HttpPathModifier) -> pb::PathModifier {
    use pb::path_modifier::Kind;
    let kind = match p.type_.as_str() {
        "ReplaceFullPath" => Kind::ReplaceFullPath(p.replace_full_path.clone().unwrap_or_default()),
        _ => Kind::ReplacePrefixMatch(p.replace_prefix_match.clone().unwrap_or_default()),
    };
    pb::PathModifier { kind: Some(kind) }
}

// The condition types and reasons of the Gateway API (`RouteConditionType`,
// `RouteConditionReason`).
pub const ACCEPTED: &str = "Accepted";
pub const RESOLVED_REFS: &str = "ResolvedRefs";
pub const NO_MATCHING_PARENT: &str = "NoMatchingParent";
pub const UNSUPPORTED_VALUE: &str = "UnsupportedValue";
pub const REF_NOT_PERMITTED: &str = "RefNotPermitted";
pub const INVALID_KIND: &str = "InvalidKind";
pub const BACKEND_NOT_FOUND: &str = "BackendNotFound";

/// Most backend problems one `ResolvedRefs` message lists.
const MAX_LISTED: usize = 8;

/// One status condition (`metav1.Condition` without the times the writer adds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    /// [`ACCEPTED`] or [`RESOLVED_REFS`].
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

/// A route's status for one of its parents (`RouteParentStatus` without the controller name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentStatus {
    /// The parentRef as written in the route.
    pub parent_ref: ParentReference,
    /// `Accepted`, then `ResolvedRefs`.
    pub conditions: Vec<Condition>,
}

/// An HTTPRoute's status: one entry per Service parent (the mesh's parents; others are
/// another controller's to report).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteStatus {
    pub route: Key,
    /// The route's `metadata.generation`, for each condition's `observedGeneration`.
    pub generation: Option<i64>,
    pub parents: Vec<ParentStatus>,
    /// Parents named as a Service in a group other than core (`kind: Service` without
    /// `group: ""` defaults to the Gateway API's group): not attached, and probably not
    /// what the author meant, so worth a warning.
    pub ignored_service_parents: Vec<ParentReference>,
}

/// The status of every HTTPRoute of `snapshot`, by key.
pub fn route_statuses(snapshot: &Snapshot) -> Vec<RouteStatus> {
    snapshot
        .http_routes
        .iter()
        .map(|(key, route)| route_status(snapshot, key, route))
        .collect()
}

/// The status of one HTTPRoute of `snapshot`.
pub fn route_status(snapshot: &Snapshot, key: &Key, route: &HttpRoute) -> RouteStatus {
    let mut parents = Vec::new();
    let mut ignored_service_parents = Vec::new();
    for parent in &route.spec.parent_refs {
        if !parent.is_service() {
            if parent.kind.as_deref() == Some("Service") {
                ignored_service_parents.push(parent.clone());
            }
            continue;
        }
        let service = parent_key(parent, &key.0);
        let accepted = match parent_ports(snapshot, &service, parent) {
            Ok(_) => {
                let message = if service.0 == key.0 {
                    format!(
                        "producer route of Service {}/{}, for every client",
                        service.0, service.1
                    )
                } else {
                    format!(
                        "consumer route of Service {}/{}, for clients in namespace {}",
                        service.0, service.1, key.0
                    )
                };
                Condition {
                    type_: ACCEPTED,
                    status: true,
                    reason: ACCEPTED,
                    message,
                }
            }
            Err((reason, message)) => Condition {
                type_: ACCEPTED,
                status: false,
                reason,
                message,
            },
        };
        let from = RefFrom {
            route_namespace: &key.0,
            parent_namespace: &service.0,
        };
        let problems = unresolved_refs(snapshot, from, route);
        let resolved = match problems.first() {
            None => Condition {
                type_: RESOLVED_REFS,
                status: true,
                reason: RESOLVED_REFS,
                message: "every backend resolved".into(),
            },
            Some((_, first)) => {
                let mut listed: Vec<String> = problems
                    .iter()
                    .take(MAX_LISTED)
                    .map(|(field, u)| format!("{field}: {}", u.message))
                    .collect();
                if problems.len() > MAX_LISTED {
                    listed.push(format!("and {} more", problems.len() - MAX_LISTED));
                }
                Condition {
                    type_: RESOLVED_REFS,
                    status: false,
                    reason: first.reason,
                    message: listed.join("; "),
                }
            }
        };
        parents.push(ParentStatus {
            parent_ref: parent.clone(),
            conditions: vec![accepted, resolved],
        });
    }
    RouteStatus {
        route: key.clone(),
        generation: route.metadata.generation,
        parents,
        ignored_service_parents,
    }
}

/// The status of a route refused by its checks (it never reaches a snapshot): `Accepted`
/// false with `UnsupportedValue` and why, for each of its Service parents.
pub fn refused_route_status(
    key: &Key,
    route: &HttpRoute,
    problem: &crate::model::Problem,
) -> RouteStatus {
    let parents = route
        .spec
        .parent_refs
        .iter()
        .filter(|p| p.is_service())
        .map(|p| ParentStatus {
            parent_ref: p.clone(),
            conditions: vec![Condition {
                type_: ACCEPTED,
                status: false,
                reason: UNSUPPORTED_VALUE,
                message: problem.to_string(),
            }],
        })
        .collect();
    RouteStatus {
        route: key.clone(),
        generation: route.metadata.generation,
        parents,
        ignored_service_parents: Vec::new(),
    }
}

/// Every backend reference of `route` that does not resolve from `from`, by field.
fn unresolved_refs(
    snapshot: &Snapshot,
    from: RefFrom<'_>,
    route: &HttpRoute,
) -> Vec<(String, Unresolved)> {
    let mut out = Vec::new();
    for (i, rule) in gateway::rules(route).iter().enumerate() {
        for (j, b) in rule.backend_refs.iter().enumerate() {
            if let Err(e) = resolve(snapshot, from, &b.object()) {
                out.push((format!("spec.rules[{i}].backendRefs[{j}]"), e));
            }
        }
        for (j, f) in rule.filters.iter().enumerate() {
            if let Some(m) = &f.request_mirror {
                if let Err(e) = resolve(snapshot, from, &m.backend_ref) {
                    out.push((
                        format!("spec.rules[{i}].filters[{j}].requestMirror.backendRef"),
                        e,
                    ));
                }
            }
        }
    }
    out
}

/// What a folder refuses outright about its HTTPRoutes once every document is read: backend
/// references that are not permitted (`RefNotPermitted`) or not Services (`InvalidKind`),
/// from any Service parent, as (route, field, reason). A missing backend is not refused (it
/// may be the Service a later edit adds); it gets its 500 and its condition.
pub fn reference_problems(snapshot: &Snapshot) -> Vec<(Key, String, String)> {
    let mut out = Vec::new();
    for (key, route) in &snapshot.http_routes {
        let mut seen = BTreeSet::new();
        for parent in route.spec.parent_refs.iter().filter(|p| p.is_service()) {
            let parent_namespace = parent.namespace.as_deref().unwrap_or(&key.0);
            let from = RefFrom {
                route_namespace: &key.0,
                parent_namespace,
            };
            for (field, u) in unresolved_refs(snapshot, from, route) {
                if u.reason != BACKEND_NOT_FOUND && seen.insert(field.clone()) {
                    out.push((key.clone(), field, format!("{}: {}", u.reason, u.message)));
                }
            }
        }
    }
    out
}

/// Whether a TrafficSplit is in force, and why not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitStatus {
    pub split: Key,
    /// In force on at least one port of its root Service.
    pub in_force: bool,
    /// Backend Services that do not exist (their share is answered 500).
    pub missing_backends: Vec<String>,
    /// What a log says: where it is in force or what shadows it, and backends missing.
    pub message: String,
}

/// The status of every TrafficSplit of `snapshot`, by key.
pub fn split_statuses(snapshot: &Snapshot) -> Vec<SplitStatus> {
    let attached = Attachments::of(snapshot);
    snapshot
        .traffic_splits
        .iter()
        .map(|(key, ts)| {
            let Some((root, svc)) = split_root(snapshot, key, ts) else {
                return SplitStatus {
                    split: key.clone(),
                    in_force: false,
                    missing_backends: missing_backends(snapshot, key, ts),
                    message: format!(
                        "its root Service {}/{} is not found, or is headless",
                        key.0, ts.spec.service
                    ),
                };
            };
            let mut in_force = Vec::new();
            let mut shadowed = BTreeSet::new();
            for (port, _) in service_ports(svc) {
                let Some(set) = attached.by_port.get(&(root.clone(), port)) else {
                    continue;
                };
                if let Some(r) = set.producers.first() {
                    shadowed.insert(format!("httproute/{}/{}", r.key.0, r.key.1));
                } else if set.splits.first().is_some_and(|(k, _)| *k == key) {
                    in_force.push(port.to_string());
                } else if let Some((k, _)) = set.splits.first() {
                    shadowed.insert(format!("trafficsplit/{}/{}", k.0, k.1));
                }
            }
            let mut message = if in_force.is_empty() {
                format!(
                    "shadowed on every port of Service {}/{} by {}",
                    root.0,
                    root.1,
                    shadowed.into_iter().collect::<Vec<_>>().join(", ")
                )
            } else {
                let mut m = format!("in force on Service {}/{} port(s) {}", root.0, root.1, in_force.join(", "));
                if !shadowed.is_empty() {
                    m.push_str(&format!(
                        "; shadowed on its other ports by {}",
                        shadowed.into_iter().collect::<Vec<_>>().join(", ")
                    ));
                }
                m
            };
            let missing_backends = missing_backends(snapshot, key, ts);
            if !missing_backends.is_empty() {
                message.push_str(&format!(
                    "; backend Service(s) not found, their share answered {INVALID_BACKEND_STATUS}: {}",
                    missing_backends.join(", ")
                ));
            }
            SplitStatus {
                split: key.clone(),
                in_force: !in_force.is_empty(),
                missing_backends,
                message,
            }
        })
        .collect()
}

/// The backends of a split that are no Service of its namespace.
fn missing_backends(snapshot: &Snapshot, key: &Key, ts: &smi::TrafficSplit) -> Vec<String> {
    let Ok(split) = smi::read_split(ts, &key.0) else {
        return Vec::new();
    };
    split
        .backends
        .into_iter()
        .map(|(b, _)| b)
        .filter(|b| !snapshot.services.contains_key(&(key.0.clone(), b.clone())))
        .collect()
}

#[cfg(test)]
mod tests;
