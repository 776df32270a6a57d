//! The config model: the Kubernetes kinds the control plane reads, as k8s-openapi's types (the
//! same ones kube-rs watches, so both sources share one definition), and the checks every
//! object passes before it can reach the index.
//!
//! Why here and not in `weft-api`: proxies never see Kubernetes objects, only the wire protocol
//! built from them, so keeping k8s-openapi out of `weft-api` keeps it out of the proxy's build.
//!
//! A [`Snapshot`] is always whole and valid: sources build a new one and publish it, or keep
//! the last one; nothing half-applied is ever published.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use k8s_openapi::api::{core::v1::Pod, core::v1::Service, discovery::v1::EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::{
    fault::{check_http_fault, HttpFault},
    gateway::{check_http_route, check_reference_grant, HttpRoute, ReferenceGrant},
    smi::{read_split, TrafficSplit},
};

/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// An object's namespace and name.
pub type Key = (String, String);

/// One key whose object differs between two maps: `(key, before, after)`, `None` where the
/// object is absent.
pub type Change<'a, T> = (&'a Key, Option<&'a Arc<T>>, Option<&'a Arc<T>>);

/// The keys whose objects differ between `before` and `after` (added, removed or changed), in
/// key order. Objects shared by pointer (what both sources reuse for what did not change) are
/// not compared: a diff costs a walk of both maps plus a comparison per object that was
/// replaced.
pub fn changed<'a, T: PartialEq>(
    before: &'a BTreeMap<Key, Arc<T>>,
    after: &'a BTreeMap<Key, Arc<T>>,
) -> impl Iterator<Item = Change<'a, T>> + 'a {
    use std::cmp::Ordering;
    let mut a = before.iter().peekable();
    let mut b = after.iter().peekable();
    std::iter::from_fn(move || loop {
        let order = match (a.peek(), b.peek()) {
            (None, None) => return None,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((ka, _)), Some((kb, _))) => ka.cmp(kb),
        };
        match order {
            Ordering::Less => return a.next().map(|(k, v)| (k, Some(v), None)),
            Ordering::Greater => return b.next().map(|(k, v)| (k, None, Some(v))),
            Ordering::Equal => {
                let ((k, va), (_, vb)) = (a.next()?, b.next()?);
                if !(Arc::ptr_eq(va, vb) || va == vb) {
                    return Some((k, Some(va), Some(vb)));
                }
            }
        }
    })
}

/// The cluster's state as far as discovery needs it, by namespace and name. Objects are shared
/// (`Arc`), so a source can build the next snapshot from its stores without copying them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Snapshot {
    pub services: BTreeMap<Key, Arc<Service>>,
    pub endpoint_slices: BTreeMap<Key, Arc<EndpointSlice>>,
    pub pods: BTreeMap<Key, Arc<Pod>>,
    /// Gateway API routes (any parent: [`crate::routes`] keeps those attached to Services).
    pub http_routes: BTreeMap<Key, Arc<HttpRoute>>,
    pub reference_grants: BTreeMap<Key, Arc<ReferenceGrant>>,
    /// SMI splits.
    pub traffic_splits: BTreeMap<Key, Arc<TrafficSplit>>,
    /// Weft's faults.
    pub http_faults: BTreeMap<Key, Arc<HttpFault>>,
}

/// What is wrong with one object: the field at fault (`spec.ports[0].port`; empty for the
/// object as a whole) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "field {}: {}", self.field, self.reason)
        }
    }
}

pub(crate) fn problem(field: &str, reason: impl Into<String>) -> Problem {
    Problem {
        field: field.to_string(),
        reason: reason.into(),
    }
}

impl Snapshot {
    /// Whether `other` holds the same objects: [`changed`] on every kind, so objects shared
    /// by pointer cost nothing (`==` would compare every object field by field).
    pub fn same(&self, other: &Snapshot) -> bool {
        changed(&self.services, &other.services).next().is_none()
            && changed(&self.endpoint_slices, &other.endpoint_slices)
                .next()
                .is_none()
            && changed(&self.pods, &other.pods).next().is_none()
            && changed(&self.http_routes, &other.http_routes)
                .next()
                .is_none()
            && changed(&self.reference_grants, &other.reference_grants)
                .next()
                .is_none()
            && changed(&self.traffic_splits, &other.traffic_splits)
                .next()
                .is_none()
            && changed(&self.http_faults, &other.http_faults)
                .next()
                .is_none()
    }

    /// Checks `svc` and adds it; a second object of the same name is refused.
    pub fn add_service(&mut self, svc: Arc<Service>) -> Result<(), Problem> {
        check_service(&svc)?;
        insert(&mut self.services, key(&svc.metadata)?, svc, "Service")
    }

    /// Checks `slice` and adds it.
    pub fn add_endpoint_slice(&mut self, slice: Arc<EndpointSlice>) -> Result<(), Problem> {
        check_slice(&slice)?;
        insert(
            &mut self.endpoint_slices,
            key(&slice.metadata)?,
            slice,
            "EndpointSlice",
        )
    }

    /// Checks `pod` and adds it.
    pub fn add_pod(&mut self, pod: Arc<Pod>) -> Result<(), Problem> {
        check_pod(&pod)?;
        insert(&mut self.pods, key(&pod.metadata)?, pod, "Pod")
    }

    /// Checks `route` and adds it.
    pub fn add_http_route(&mut self, route: Arc<HttpRoute>) -> Result<(), Problem> {
        let key = key(&route.metadata)?;
        check_http_route(&route)?;
        insert(&mut self.http_routes, key, route, "HTTPRoute")
    }

    /// Checks `grant` and adds it.
    pub fn add_reference_grant(&mut self, grant: Arc<ReferenceGrant>) -> Result<(), Problem> {
        let key = key(&grant.metadata)?;
        check_reference_grant(&grant)?;
        insert(&mut self.reference_grants, key, grant, "ReferenceGrant")
    }

    /// Checks `fault` and adds it.
    pub fn add_http_fault(&mut self, fault: Arc<HttpFault>) -> Result<(), Problem> {
        let key = key(&fault.metadata)?;
        check_http_fault(&fault)?;
        insert(&mut self.http_faults, key, fault, "HTTPFault")
    }

    /// Checks `split` and adds it.
    pub fn add_traffic_split(&mut self, split: Arc<TrafficSplit>) -> Result<(), Problem> {
        let key = key(&split.metadata)?;
        read_split(&split, &key.0)?;
        insert(&mut self.traffic_splits, key, split, "TrafficSplit")
    }
}

pub fn key(meta: &ObjectMeta) -> Result<Key, Problem> {
    let name = meta
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| problem("metadata.name", "missing"))?;
    let namespace = meta
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    // Names may be DNS subdomains (dots allowed); namespaces must be DNS labels.
    if !is_dns_subdomain(&name) {
        return Err(problem(
            "metadata.name",
            format!("{name:?} is not a valid Kubernetes name"),
        ));
    }
    if !is_dns_label(&namespace) {
        return Err(problem(
            "metadata.namespace",
            format!("{namespace:?} is not a valid Kubernetes name"),
        ));
    }
    Ok((namespace, name))
}

fn insert<T>(map: &mut BTreeMap<Key, T>, key: Key, value: T, kind: &str) -> Result<(), Problem> {
    if map.contains_key(&key) {
        return Err(problem(
            "metadata.name",
            format!("{kind} {}/{} is defined twice", key.0, key.1),
        ));
    }
    map.insert(key, value);
    Ok(())
}

pub fn check_service(svc: &Service) -> Result<(), Problem> {
    let Some(spec) = &svc.spec else {
        return Err(problem("spec", "missing"));
    };
    if let Some(ip) = &spec.cluster_ip {
        if ip != "None" && !ip.is_empty() && ip.parse::<IpAddr>().is_err() {
            return Err(problem(
                "spec.clusterIP",
                format!("{ip:?} is not an IP address or None"),
            ));
        }
    }
    for (i, port) in spec.ports.iter().flatten().enumerate() {
        if !(1..=65535).contains(&port.port) {
            return Err(problem(
                &format!("spec.ports[{i}].port"),
                format!("{} is not a port", port.port),
            ));
        }
    }
    Ok(())
}

pub fn check_slice(slice: &EndpointSlice) -> Result<(), Problem> {
    let labels = slice.metadata.labels.as_ref();
    if labels.and_then(|l| l.get(SERVICE_NAME_LABEL)).is_none() {
        return Err(problem(
            "metadata.labels",
            format!("missing {SERVICE_NAME_LABEL}: which Service is this slice for?"),
        ));
    }
    let want_v6 = match slice.address_type.as_str() {
        "IPv4" => false,
        "IPv6" => true,
        other => {
            return Err(problem(
                "addressType",
                format!("{other:?}: expected IPv4 or IPv6"),
            ));
        }
    };
    for (i, endpoint) in slice.endpoints.iter().enumerate() {
        for (j, addr) in endpoint.addresses.iter().enumerate() {
            match addr.parse::<IpAddr>() {
                Ok(ip) if ip.is_ipv6() == want_v6 => {}
                _ => {
                    return Err(problem(
                        &format!("endpoints[{i}].addresses[{j}]"),
                        format!("{addr:?} is not an {} address", slice.address_type),
                    ))
                }
            }
        }
    }
    for (i, port) in slice.ports.iter().flatten().enumerate() {
        if let Some(p) = port.port {
            if !(1..=65535).contains(&p) {
                return Err(problem(
                    &format!("ports[{i}].port"),
                    format!("{p} is not a port"),
                ));
            }
        }
    }
    Ok(())
}

pub fn check_pod(pod: &Pod) -> Result<(), Problem> {
    if let Some(sa) = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_ref())
    {
        if !is_dns_subdomain(sa) {
            return Err(problem(
                "spec.serviceAccountName",
                format!("{sa:?} is not a valid name"),
            ));
        }
    }
    for (i, ip) in pod
        .status
        .iter()
        .flat_map(|s| s.pod_ips.iter().flatten())
        .enumerate()
    {
        if ip.ip.parse::<IpAddr>().is_err() {
            return Err(problem(
                &format!("status.podIPs[{i}].ip"),
                format!("{:?} is not an IP address", ip.ip),
            ));
        }
    }
    Ok(())
}

/// RFC 1123 label: lowercase alphanumerics and '-', 1–63, alphanumeric at both ends.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain: labels joined by '.', at most 253.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}
