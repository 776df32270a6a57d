//! Whether a pod is injected: a pure function of the pod, its namespace and the injector's
//! settings. A pod that is not injected is allowed as it is; the reason may become a warning.

use std::{collections::BTreeMap, fmt};

use k8s_openapi::api::core::v1::Pod;
use weft_pod::{annotations as a, ids};

/// Kubernetes' own namespaces: never injected, whatever their labels say.
pub const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// The namespace label that turns injection on for the namespace's new pods.
pub const NAMESPACE_LABEL: &str = a::INJECT;

/// What the injector does with a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Add the proxy (and the init container, unless the CNI plugin redirects).
    Inject,
    /// Leave it as it is.
    Skip(Skip),
}

/// Why a pod is left as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// It runs in one of Kubernetes' own namespaces.
    SystemNamespace(String),
    /// It runs in Weft's own namespace.
    WeftNamespace(String),
    /// It shares the node's network namespace: redirecting its traffic would redirect the
    /// node's.
    HostNetwork,
    /// Its `weft.dev/inject` annotation is `disabled`.
    Disabled,
    /// Neither its namespace's label nor its own annotation asks for injection.
    NotEnabled,
    /// Its `weft.dev/inject` annotation (or its namespace's label) is neither `enabled` nor
    /// `disabled`.
    Unrecognized { on: &'static str, value: String },
    /// It was injected already (its `weft.dev/injected` annotation or a container named as
    /// Weft's).
    AlreadyInjected,
    /// A Job's pod on a cluster without native sidecars: a classic sidecar proxy would keep it
    /// from ever completing.
    JobWithoutNativeSidecars,
}

impl Skip {
    /// A warning for the user who created the pod, when the skip is likely not what they
    /// meant (an opt-in that cannot be honoured); `None` for the ordinary cases.
    pub fn warning(&self) -> Option<String> {
        match self {
            Skip::HostNetwork
            | Skip::Unrecognized { .. }
            | Skip::JobWithoutNativeSidecars
            | Skip::SystemNamespace(_)
            | Skip::WeftNamespace(_) => Some(format!("weft: pod not injected: {self}")),
            Skip::Disabled | Skip::NotEnabled | Skip::AlreadyInjected => None,
        }
    }
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skip::SystemNamespace(ns) => write!(f, "{ns} is a Kubernetes system namespace"),
            Skip::WeftNamespace(ns) => write!(f, "{ns} is Weft's own namespace"),
            Skip::HostNetwork => f.write_str("it uses the host's network (hostNetwork: true)"),
            Skip::Disabled => write!(f, "its {} annotation is {}", a::INJECT, a::DISABLED),
            Skip::NotEnabled => write!(
                f,
                "neither its namespace's {} label nor its own annotation is {}",
                a::INJECT,
                a::ENABLED
            ),
            Skip::Unrecognized { on, value } => write!(
                f,
                "{on} {} is {value:?}: expected {} or {}",
                a::INJECT,
                a::ENABLED,
                a::DISABLED
            ),
            Skip::AlreadyInjected => f.write_str("it is injected already"),
            Skip::JobWithoutNativeSidecars => f.write_str(
                "it belongs to a Job and the cluster has no native sidecars (Kubernetes 1.29): \
                 a sidecar proxy would keep it from completing",
            ),
        }
    }
}

/// What the decision needs to know beyond the pod.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// The pod's namespace (the review's, when the pod does not name one).
    pub namespace: &'a str,
    /// The namespace's labels.
    pub namespace_labels: &'a BTreeMap<String, String>,
    /// Weft's own namespace.
    pub weft_namespace: &'a str,
    /// Whether the pod's node runs sidecars natively (`restartPolicy: Always` init containers,
    /// Kubernetes 1.29 and later).
    pub native_sidecars: bool,
}

/// Whether `pod` is injected.
pub fn decide(pod: &Pod, cx: &Context<'_>) -> Decision {
    let skip = Decision::Skip;
    let ns = cx.namespace;
    if SYSTEM_NAMESPACES.contains(&ns) {
        return skip(Skip::SystemNamespace(ns.to_string()));
    }
    if ns == cx.weft_namespace {
        return skip(Skip::WeftNamespace(ns.to_string()));
    }
    if injected(pod) {
        return skip(Skip::AlreadyInjected);
    }
    let annotation = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|m| m.get(a::INJECT))
        .map(|v| v.trim());
    let label = cx.namespace_labels.get(NAMESPACE_LABEL).map(|v| v.trim());
    let wanted = match (annotation, label) {
        (Some(a::DISABLED), _) => return skip(Skip::Disabled),
        (Some(a::ENABLED), _) => true,
        (Some(other), _) => {
            return skip(Skip::Unrecognized {
                on: "the pod's annotation",
                value: other.to_string(),
            })
        }
        (None, Some(a::ENABLED)) => true,
        (None, Some(a::DISABLED) | None) => false,
        (None, Some(other)) => {
            return skip(Skip::Unrecognized {
                on: "the namespace's label",
                value: other.to_string(),
            })
        }
    };
    if !wanted {
        return skip(Skip::NotEnabled);
    }
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.host_network).unwrap_or(false) {
        return skip(Skip::HostNetwork);
    }
    if !cx.native_sidecars && owned_by_job(pod) {
        return skip(Skip::JobWithoutNativeSidecars);
    }
    Decision::Inject
}

/// Whether the pod was injected: by its annotation, or by a container with one of the names
/// the injector adds (a pod injected by another tool or by hand).
pub fn injected(pod: &Pod) -> bool {
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|m| m.contains_key(a::INJECTED));
    let named = pod.spec.as_ref().is_some_and(|spec| {
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .any(|c| c.name == ids::PROXY_CONTAINER || c.name == ids::INIT_CONTAINER)
    });
    annotated || named
}

/// Whether a Job controls the pod.
fn owned_by_job(pod: &Pod) -> bool {
    pod.metadata.owner_references.iter().flatten().any(|o| {
        o.kind == "Job" && o.api_version.starts_with("batch/") && o.controller == Some(true)
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::core::v1::{Container, PodSpec},
        apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
    };

    use super::*;

    fn pod(annotations: &[(&str, &str)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-1".into()),
                annotations: (!annotations.is_empty()).then(|| {
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect()
                }),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn labels(enabled: Option<&str>) -> BTreeMap<String, String> {
        enabled
            .map(|v| (NAMESPACE_LABEL.to_string(), v.to_string()))
            .into_iter()
            .collect()
    }

    fn decide_in(pod: &Pod, ns: &str, label: Option<&str>, native: bool) -> Decision {
        let labels = labels(label);
        decide(
            pod,
            &Context {
                namespace: ns,
                namespace_labels: &labels,
                weft_namespace: "weft",
                native_sidecars: native,
            },
        )
    }

    #[test]
    fn the_namespace_label_and_the_pod_annotation_decide() {
        let plain = pod(&[]);
        assert_eq!(
            decide_in(&plain, "shop", Some("enabled"), true),
            Decision::Inject
        );
        assert_eq!(
            decide_in(&plain, "shop", None, true),
            Decision::Skip(Skip::NotEnabled)
        );
        let opted_in = pod(&[("weft.dev/inject", "enabled")]);
        assert_eq!(decide_in(&opted_in, "shop", None, true), Decision::Inject);
        let opted_out = pod(&[("weft.dev/inject", "disabled")]);
        assert_eq!(
            decide_in(&opted_out, "shop", Some("enabled"), true),
            Decision::Skip(Skip::Disabled)
        );
        let odd = pod(&[("weft.dev/inject", "yes")]);
        let d = decide_in(&odd, "shop", Some("enabled"), true);
        let Decision::Skip(skip) = d else {
            panic!("{d:?}")
        };
        assert!(skip.warning().is_some_and(|w| w.contains("\"yes\"")));
    }

    #[test]
    fn system_and_weft_namespaces_host_network_and_injected_pods_are_skipped() {
        let opted_in = pod(&[("weft.dev/inject", "enabled")]);
        for ns in SYSTEM_NAMESPACES {
            assert_eq!(
                decide_in(&opted_in, ns, Some("enabled"), true),
                Decision::Skip(Skip::SystemNamespace(ns.into()))
            );
        }
        assert_eq!(
            decide_in(&opted_in, "weft", Some("enabled"), true),
            Decision::Skip(Skip::WeftNamespace("weft".into()))
        );
        let mut host = opted_in.clone();
        host.spec.as_mut().expect("spec").host_network = Some(true);
        assert_eq!(
            decide_in(&host, "shop", None, true),
            Decision::Skip(Skip::HostNetwork)
        );
        let done = pod(&[("weft.dev/injected", "0.1.0")]);
        assert_eq!(
            decide_in(&done, "shop", Some("enabled"), true),
            Decision::Skip(Skip::AlreadyInjected)
        );
        let mut by_hand = pod(&[]);
        by_hand
            .spec
            .as_mut()
            .expect("spec")
            .containers
            .push(Container {
                name: "weft-proxy".into(),
                ..Default::default()
            });
        assert_eq!(
            decide_in(&by_hand, "shop", Some("enabled"), true),
            Decision::Skip(Skip::AlreadyInjected)
        );
    }

    #[test]
    fn a_jobs_pod_needs_native_sidecars() {
        let mut job = pod(&[]);
        job.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "batch/v1".into(),
            kind: "Job".into(),
            name: "migrate".into(),
            uid: "1".into(),
            controller: Some(true),
            ..Default::default()
        }]);
        assert_eq!(
            decide_in(&job, "shop", Some("enabled"), true),
            Decision::Inject
        );
        let d = decide_in(&job, "shop", Some("enabled"), false);
        assert_eq!(d, Decision::Skip(Skip::JobWithoutNativeSidecars));
        if let Decision::Skip(skip) = d {
            assert!(skip.warning().is_some());
        }
    }
}
