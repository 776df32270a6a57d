//! The workload a pod belongs to, as users name it: the Deployment behind a ReplicaSet's pods,
//! else the pod's controller (StatefulSet, DaemonSet, Job, ...), else the pod itself. The
//! injector gives it to the proxy (`WEFT_WORKLOAD`), which exports it in `weft_proxy_info`, so
//! that rules, dashboards and `weftctl stat` group a workload's pods without guessing from
//! their names.
//!
//! Read from the pod alone, with no API call: a ReplicaSet made by a Deployment is named
//! `<deployment>-<pod-template-hash>`, and its pods carry that hash as a label, so the
//! Deployment's name is exact. A Job made by a CronJob stays a Job (its CronJob would need the
//! API).

use k8s_openapi::api::core::v1::Pod;

/// A pod's workload: its kind (lowercase, `deployment`, `statefulset`, `pod`, ...) and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub kind: String,
    pub name: String,
}

impl Workload {
    /// `kind/name`, the form of `WEFT_WORKLOAD`.
    pub fn to_env(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }
}

/// The workload of `pod`, if it can be named (a pod with neither a controller nor a name nor a
/// `generateName` cannot).
pub fn of(pod: &Pod) -> Option<Workload> {
    let meta = &pod.metadata;
    let controller = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    if let Some(owner) = controller {
        if owner.kind == "ReplicaSet" {
            let hash = meta
                .labels
                .as_ref()
                .and_then(|l| l.get("pod-template-hash"));
            if let Some(deployment) = hash
                .and_then(|h| owner.name.strip_suffix(h.as_str()))
                .and_then(|n| n.strip_suffix('-'))
                .filter(|n| !n.is_empty())
            {
                return Some(Workload {
                    kind: "deployment".into(),
                    name: deployment.into(),
                });
            }
        }
        return Some(Workload {
            kind: owner.kind.to_ascii_lowercase(),
            name: owner.name.clone(),
        });
    }
    let name = meta.name.clone().filter(|n| !n.is_empty()).or_else(|| {
        let g = meta.generate_name.as_deref()?.trim_end_matches('-');
        (!g.is_empty()).then(|| g.to_string())
    })?;
    Some(Workload {
        kind: "pod".into(),
        name,
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    use super::*;

    fn pod(owner: Option<(&str, &str)>, hash: Option<&str>, name: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: name.map(str::to_string),
                generate_name: Some("gen-".into()),
                labels: hash.map(|h| [("pod-template-hash".to_string(), h.to_string())].into()),
                owner_references: owner.map(|(kind, name)| {
                    vec![OwnerReference {
                        kind: kind.into(),
                        name: name.into(),
                        controller: Some(true),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn w(kind: &str, name: &str) -> Option<Workload> {
        Some(Workload {
            kind: kind.into(),
            name: name.into(),
        })
    }

    #[test]
    fn each_controller_names_its_workload() {
        let deployment = pod(
            Some(("ReplicaSet", "api-7d9f8c5b4")),
            Some("7d9f8c5b4"),
            None,
        );
        assert_eq!(of(&deployment), w("deployment", "api"));
        assert_eq!(
            of(&deployment).map(|w| w.to_env()).as_deref(),
            Some("deployment/api")
        );
        // A ReplicaSet of its own (no matching hash): the ReplicaSet.
        let rs = pod(Some(("ReplicaSet", "frontend")), None, None);
        assert_eq!(of(&rs), w("replicaset", "frontend"));
        let odd = pod(Some(("ReplicaSet", "api-x")), Some("y"), None);
        assert_eq!(of(&odd), w("replicaset", "api-x"));
        let sts = pod(Some(("StatefulSet", "db")), None, Some("db-0"));
        assert_eq!(of(&sts), w("statefulset", "db"));
        let ds = pod(Some(("DaemonSet", "agent")), None, None);
        assert_eq!(of(&ds), w("daemonset", "agent"));
        let job = pod(Some(("Job", "report-29180160")), None, None);
        assert_eq!(of(&job), w("job", "report-29180160"));
    }

    #[test]
    fn a_bare_pod_is_its_own_workload() {
        assert_eq!(of(&pod(None, None, Some("client"))), w("pod", "client"));
        assert_eq!(of(&pod(None, None, None)), w("pod", "gen"));
        let mut nameless = pod(None, None, None);
        nameless.metadata.generate_name = None;
        assert_eq!(of(&nameless), None);
        // A non-controller owner does not count.
        let mut owned = pod(Some(("ReplicaSet", "api-1")), Some("1"), Some("solo"));
        if let Some(o) = owned.metadata.owner_references.as_mut() {
            o[0].controller = None;
        }
        assert_eq!(of(&owned), w("pod", "solo"));
    }
}
