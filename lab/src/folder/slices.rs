//! Selectors, the ports each pod's app listens on, and the EndpointSlices made from Services'
//! selectors when the folder has none for a Service, as the EndpointSlice controller makes
//! them:
//! - one slice per set of resolved ports (a named `targetPort` may resolve to different numbers
//!   on different pods, or not at all: the pod is then listed without that port), at most
//!   [`MAX_ENDPOINTS_PER_SLICE`] endpoints each; a Service selecting no pod gets one empty slice;
//! - named `<service>-<5 chars>`, labelled `kubernetes.io/service-name` and
//!   `endpointslice.kubernetes.io/managed-by`, with the Service's own labels;
//! - each endpoint the pod's address, `ready`, `serving`, not `terminating`, with a `targetRef`
//!   to the pod.
//!
//! A Service without a selector (or with an empty one), and an `ExternalName` Service, get no
//! slice: their endpoints are the folder's business, as in Kubernetes.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::{
    api::{
        core::v1::{ObjectReference, Pod, ServicePort},
        discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice},
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};
use weft_control_plane_config::model::{Problem, SERVICE_NAME_LABEL};
use weft_pod::ids;

use super::{names, AppPort, DocError, Folder, Key, LabPod, LabService, Slice, DEFAULT_APP_PORT};

/// Attempts at a free generated name before a slice is given up.
const NAME_ATTEMPTS: u32 = 64;

/// The EndpointSlice controller's default `--max-endpoints-per-slice`.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// The label naming who manages a slice, and the controller's value.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

/// Whether `labels` has every entry of a Service's `selector`.
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Whether a Deployment's `selector` (`matchLabels` and `matchExpressions`) picks `labels`; a
/// malformed expression is a problem at `matchExpressions[i]...`.
pub fn selector_matches(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> Result<bool, Problem> {
    let mut matched = selector
        .match_labels
        .as_ref()
        .is_none_or(|want| selects(want, labels));
    for (i, e) in selector.match_expressions.iter().flatten().enumerate() {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        let (wants_values, ok) = match e.operator.as_str() {
            "In" => (true, value.is_some_and(|v| values.contains(v))),
            "NotIn" => (true, value.is_none_or(|v| !values.contains(v))),
            "Exists" => (false, value.is_some()),
            "DoesNotExist" => (false, value.is_none()),
            other => {
                return Err(Problem {
                    field: format!("matchExpressions[{i}].operator"),
                    reason: format!("{other:?}: expected In, NotIn, Exists or DoesNotExist"),
                })
            }
        };
        if wants_values == values.is_empty() {
            return Err(Problem {
                field: format!("matchExpressions[{i}].values"),
                reason: format!(
                    "{} with {}",
                    e.operator,
                    if wants_values { "no values" } else { "values" }
                ),
            });
        }
        matched &= ok;
    }
    Ok(matched)
}

/// Fills in each pod's app ports and adds the derived EndpointSlices.
pub(crate) fn ports_and_slices(folder: &mut Folder) {
    let ports: Vec<(Key, Vec<AppPort>)> = folder
        .pods
        .iter()
        .map(|(key, pod)| (key.clone(), app_ports(pod, folder.services.values())))
        .collect();
    for (key, ports) in ports {
        if let Some(pod) = folder.pods.get_mut(&key) {
            pod.ports = ports;
        }
    }
    let covered: BTreeSet<Key> = folder
        .endpoint_slices
        .iter()
        .filter_map(|((ns, _), s)| {
            let svc = s.object.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
            Some((ns.clone(), svc.clone()))
        })
        .collect();
    let mut made = Vec::new();
    for (key, svc) in &folder.services {
        if covered.contains(key) || is_external(svc) {
            continue;
        }
        let Some(selector) = svc.selector() else {
            continue;
        };
        let members = folder
            .pods
            .values()
            .filter(|p| p.namespace() == key.0 && selects(selector, p.labels()));
        made.extend(
            derive(svc, members)
                .into_iter()
                .map(|(seed, slice)| (svc.origin.clone(), seed, slice)),
        );
    }
    for (origin, seed, mut object) in made {
        let namespace = object.metadata.namespace.clone().unwrap_or_default();
        let base = object.metadata.generate_name.clone().unwrap_or_default();
        let name = (0..NAME_ATTEMPTS)
            .map(|attempt| names::generate(&base, &[&namespace, &seed], attempt))
            .find(|n| {
                !folder
                    .endpoint_slices
                    .contains_key(&(namespace.clone(), n.clone()))
            });
        let Some(name) = name else {
            // 27^5 names per Service: only a folder naming its slices to collide gets here.
            folder.notes.push(DocError {
                file: origin.file,
                document: origin.document,
                field: "metadata.name".into(),
                reason: format!(
                    "no free EndpointSlice name {base}<5 chars> in namespace {namespace} after \
                     {NAME_ATTEMPTS} tries; the Service has no endpoints"
                ),
            });
            continue;
        };
        object.metadata.name = Some(name.clone());
        folder.endpoint_slices.insert(
            (namespace, name),
            Slice {
                origin: None,
                object,
            },
        );
    }
}

/// The ports `pod`'s app listens on: its containers' TCP ports (not the proxy's container), then
/// the numeric target ports of the Services selecting it (a meshed pod never on the proxy's
/// ports); [`DEFAULT_APP_PORT`] if that leaves none.
fn app_ports<'a>(pod: &LabPod, services: impl Iterator<Item = &'a LabService>) -> Vec<AppPort> {
    fn add(ports: &mut Vec<AppPort>, port: AppPort) {
        if !ports.iter().any(|p| p.port == port.port) {
            ports.push(port);
        }
    }
    let mut ports: Vec<AppPort> = Vec::new();
    let spec = pod.object.spec.as_ref();
    for c in spec.map(|s| s.containers.as_slice()).unwrap_or_default() {
        if c.name == ids::PROXY_CONTAINER {
            continue;
        }
        for p in c.ports.iter().flatten() {
            if !is_tcp(p.protocol.as_deref()) {
                continue;
            }
            if let Ok(port) = u16::try_from(p.container_port) {
                add(
                    &mut ports,
                    AppPort {
                        port,
                        name: p.name.clone(),
                    },
                );
            }
        }
    }
    let mut targets = BTreeSet::new();
    for svc in services {
        let selected = svc.namespace() == pod.namespace()
            && !is_external(svc)
            && svc.selector().is_some_and(|s| selects(s, pod.labels()));
        if !selected {
            continue;
        }
        for sp in svc.ports().iter().filter(|p| is_tcp(p.protocol.as_deref())) {
            let target = match &sp.target_port {
                None => Some(sp.port),
                Some(IntOrString::Int(n)) => Some(*n),
                Some(IntOrString::String(_)) => None, // a container port's name: listed above
            };
            if let Some(port) = target
                .and_then(|n| u16::try_from(n).ok())
                .filter(|p| *p != 0)
            {
                targets.insert(port);
            }
        }
    }
    let proxy = [
        ids::OUTBOUND_PORT,
        ids::REDIRECT_CHECK_PORT,
        ids::INBOUND_PORT,
        ids::ADMIN_PORT,
    ];
    for port in targets {
        if !(pod.is_meshed() && proxy.contains(&port)) {
            add(&mut ports, AppPort { port, name: None });
        }
    }
    if ports.is_empty() {
        add(
            &mut ports,
            AppPort {
                port: DEFAULT_APP_PORT,
                name: None,
            },
        );
    }
    ports
}

/// The slices of one Service over its `members`, unnamed yet (`generateName: <service>-`), each
/// with the seed its name is drawn from (its place among the Service's slices).
fn derive<'a>(
    svc: &LabService,
    members: impl Iterator<Item = &'a LabPod>,
) -> Vec<(String, EndpointSlice)> {
    // Pods grouped by their resolved ports, groups in order of their first pod.
    let mut groups: Vec<(Vec<EndpointPort>, Vec<&LabPod>)> = Vec::new();
    for pod in members {
        let ports: Vec<EndpointPort> = svc
            .ports()
            .iter()
            .filter_map(|sp| {
                Some(EndpointPort {
                    name: sp.name.clone(),
                    port: Some(resolve(sp, &pod.object)?),
                    protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    app_protocol: sp.app_protocol.clone(),
                })
            })
            .collect();
        match groups.iter_mut().find(|(p, _)| *p == ports) {
            Some((_, pods)) => pods.push(pod),
            None => groups.push((ports, vec![pod])),
        }
    }
    if groups.is_empty() {
        groups.push((Vec::new(), Vec::new()));
    }
    let mut labels = svc.object.metadata.labels.clone().unwrap_or_default();
    labels.insert(SERVICE_NAME_LABEL.into(), svc.name().into());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    let mut slices = Vec::new();
    for (g, (ports, pods)) in groups.into_iter().enumerate() {
        let chunks: Vec<&[&LabPod]> = if pods.is_empty() {
            vec![&[]]
        } else {
            pods.chunks(MAX_ENDPOINTS_PER_SLICE).collect()
        };
        for (c, chunk) in chunks.into_iter().enumerate() {
            let mut object = EndpointSlice {
                address_type: "IPv4".into(),
                endpoints: chunk.iter().map(|p| endpoint(p)).collect(),
                ports: (!ports.is_empty()).then(|| ports.clone()),
                ..EndpointSlice::default()
            };
            object.metadata.generate_name = Some(format!("{}-", svc.name()));
            object.metadata.namespace = Some(svc.namespace().into());
            object.metadata.labels = Some(labels.clone());
            slices.push((format!("{}/{g}/{c}", svc.name()), object));
        }
    }
    slices
}

fn endpoint(pod: &LabPod) -> Endpoint {
    Endpoint {
        addresses: vec![pod.ip.to_string()],
        conditions: Some(EndpointConditions {
            ready: Some(true),
            serving: Some(true),
            terminating: Some(false),
        }),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            name: Some(pod.name().into()),
            namespace: Some(pod.namespace().into()),
            ..ObjectReference::default()
        }),
        ..Endpoint::default()
    }
}

/// The pod's port for a Service port, as the controller's `FindPort`: a number is itself, a
/// name is the container port of that name and protocol, none is the Service port.
fn resolve(sp: &ServicePort, pod: &Pod) -> Option<i32> {
    match &sp.target_port {
        None => Some(sp.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            let protocol = sp.protocol.as_deref().unwrap_or("TCP");
            pod.spec
                .iter()
                .flat_map(|s| s.containers.iter())
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name)
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

fn is_tcp(protocol: Option<&str>) -> bool {
    protocol.is_none_or(|p| p == "TCP")
}

fn is_external(svc: &LabService) -> bool {
    svc.object.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("ExternalName")
}
