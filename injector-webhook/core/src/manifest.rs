//! `weftctl inject` and `uninject`: the injector's code over manifests, offline. A manifest is
//! one object (a Pod, or a workload with a pod template) or a `List` of them; each pod (or pod
//! template) is decided and patched exactly as the webhook would, with the namespace asking for
//! injection (the user asked, by running the command). Objects of other kinds pass unchanged.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;
use thiserror::Error;

use crate::{decide, inject, Context, Decision, Skip};

/// Where each kind keeps its pod template.
fn template_path(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "Pod" => &[],
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "Job"
        | "ReplicationController" => &["spec", "template"],
        "CronJob" => &["spec", "jobTemplate", "spec", "template"],
        _ => return None,
    })
}

/// A manifest the command cannot treat.
#[derive(Debug, Error)]
pub enum ManifestError {
    #[error("{kind} {name}: its pod template is not a pod: {reason}")]
    Template {
        kind: String,
        name: String,
        reason: String,
    },
    #[error("{kind} {name}: {reason}")]
    Refused {
        kind: String,
        name: String,
        reason: String,
    },
}

/// What happened to each object, for the command's report on stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// `Kind/name`.
    pub object: String,
    /// `None` when injected (or uninjected); why not otherwise.
    pub skipped: Option<String>,
}

/// Injects every pod or pod template in `doc` (an object or a `List`). Objects in
/// `weft_namespace` or Kubernetes' own namespaces are left alone, as the webhook leaves them.
pub fn inject(
    doc: &mut Value,
    config: &inject::Config,
    weft_namespace: &str,
    reports: &mut Vec<Report>,
) -> Result<(), ManifestError> {
    each_template(doc, reports, &mut |object, template| {
        inject_template(object, template, config, weft_namespace)
    })
}

/// Takes what [`inject`] added out of every pod or pod template in `doc`.
pub fn uninject(doc: &mut Value, reports: &mut Vec<Report>) -> Result<(), ManifestError> {
    each_template(doc, reports, &mut |_, template| {
        Ok(uninject_template(template))
    })
}

/// The object a pod template belongs to.
struct Object<'a> {
    kind: &'a str,
    name: &'a str,
    /// Its namespace; `default` when the manifest names none.
    namespace: &'a str,
}

type Treat<'a> = dyn FnMut(&Object<'_>, &mut Value) -> Result<Option<String>, ManifestError> + 'a;

fn each_template(
    doc: &mut Value,
    reports: &mut Vec<Report>,
    treat: &mut Treat<'_>,
) -> Result<(), ManifestError> {
    let kind = doc["kind"].as_str().unwrap_or_default().to_string();
    if kind == "List" || kind.ends_with("List") {
        if let Some(items) = doc.get_mut("items").and_then(Value::as_array_mut) {
            for item in items {
                each_template(item, reports, treat)?;
            }
        }
        return Ok(());
    }
    let name = doc["metadata"]["name"]
        .as_str()
        .unwrap_or("(unnamed)")
        .to_string();
    let namespace = doc["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    let Some(path) = template_path(&kind) else {
        return Ok(());
    };
    let mut template = &mut *doc;
    for key in path {
        match template.get_mut(*key) {
            Some(next) => template = next,
            None => {
                return Err(ManifestError::Template {
                    kind,
                    name,
                    reason: format!("no {}", path.join(".")),
                })
            }
        }
    }
    let object = Object {
        kind: &kind,
        name: &name,
        namespace: &namespace,
    };
    let skipped = treat(&object, template)?;
    reports.push(Report {
        object: format!("{kind}/{name}"),
        skipped,
    });
    Ok(())
}

fn inject_template(
    object: &Object<'_>,
    template: &mut Value,
    config: &inject::Config,
    weft_namespace: &str,
) -> Result<Option<String>, ManifestError> {
    let (kind, name) = (object.kind, object.name);
    let pod: Pod =
        serde_json::from_value(template.clone()).map_err(|e| ManifestError::Template {
            kind: kind.into(),
            name: name.into(),
            reason: e.to_string(),
        })?;
    let labels = BTreeMap::from([(
        crate::decide::NAMESPACE_LABEL.to_string(),
        weft_pod::annotations::ENABLED.to_string(),
    )]);
    // Offline, the namespace's labels are not known: the user's command is the opt-in.
    let cx = Context {
        namespace: object.namespace,
        namespace_labels: &labels,
        weft_namespace,
        native_sidecars: config.native_sidecars,
    };
    // A Job's template carries no owner yet: decide as its pods will be.
    let decision = match (decide(&pod, &cx), kind) {
        (Decision::Inject, "Job" | "CronJob") if !config.native_sidecars => {
            Decision::Skip(Skip::JobWithoutNativeSidecars)
        }
        (d, _) => d,
    };
    if let Decision::Skip(skip) = decision {
        return Ok(Some(skip.to_string()));
    }
    let patch =
        inject::patch(&pod, &BTreeMap::new(), config).map_err(|e| ManifestError::Refused {
            kind: kind.into(),
            name: name.into(),
            reason: e.to_string(),
        })?;
    // A template may lack what a pod has (its metadata): the patch adds what is missing.
    if template.get("metadata").is_none() {
        template["metadata"] = Value::Object(Default::default());
    }
    json_patch::patch(template, &patch.0).map_err(|e| ManifestError::Refused {
        kind: kind.into(),
        name: name.into(),
        reason: format!("the patch does not apply: {e}"),
    })?;
    Ok(None)
}

/// Removes the injector's containers, volume and annotations; `Some` why not when there were
/// none.
fn uninject_template(template: &mut Value) -> Option<String> {
    let ours = |c: &Value| {
        matches!(
            c["name"].as_str(),
            Some(weft_pod::ids::PROXY_CONTAINER | weft_pod::ids::INIT_CONTAINER)
        )
    };
    let mut removed = false;
    let spec = &mut template["spec"];
    for list in ["initContainers", "containers"] {
        if let Some(items) = spec.get_mut(list).and_then(Value::as_array_mut) {
            let before = items.len();
            items.retain(|c| !ours(c));
            removed |= items.len() != before;
        }
    }
    if spec["initContainers"].as_array().is_some_and(Vec::is_empty) {
        if let Some(map) = spec.as_object_mut() {
            map.remove("initContainers");
        }
    }
    if let Some(volumes) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        volumes.retain(|v| v["name"].as_str() != Some(inject::TOKEN_VOLUME));
        if volumes.is_empty() {
            if let Some(map) = spec.as_object_mut() {
                map.remove("volumes");
            }
        }
    }
    if let Some(annotations) = template["metadata"]
        .get_mut("annotations")
        .and_then(Value::as_object_mut)
    {
        removed |= annotations
            .remove(weft_pod::annotations::INJECTED)
            .is_some();
        annotations.remove(inject::DEFAULT_CONTAINER);
        if annotations.is_empty() {
            if let Some(meta) = template["metadata"].as_object_mut() {
                meta.remove("annotations");
            }
        }
    }
    (!removed).then(|| "it was not injected".to_string())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn config() -> inject::Config {
        inject::Config::new(
            "weft.local/weft-proxy:0.1.0",
            "weft.local/weft-init:0.1.0",
            "weft-control-plane.weft.svc.cluster.local:8443",
            "pem",
        )
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "web:1"}]}
                }
            }
        })
    }

    #[test]
    fn a_deployments_template_is_injected_once_and_uninjected_back() {
        let original = deployment();
        let mut doc = original.clone();
        let mut reports = Vec::new();
        inject(&mut doc, &config(), "weft", &mut reports).expect("injects");
        assert_eq!(reports[0].skipped, None);
        let template = &doc["spec"]["template"];
        assert_eq!(template["spec"]["initContainers"][1]["name"], "weft-proxy");
        assert_eq!(
            template["metadata"]["annotations"]["weft.dev/injected"],
            "0.1.0"
        );
        assert_eq!(template["metadata"]["labels"]["app"], "web");

        // `weftctl inject | weftctl inject` changes nothing the second time.
        let once = doc.clone();
        let mut again = Vec::new();
        inject(&mut doc, &config(), "weft", &mut again).expect("injects");
        assert_eq!(doc, once);
        assert!(again[0].skipped.is_some());

        let mut out = Vec::new();
        uninject(&mut doc, &mut out).expect("uninjects");
        assert_eq!(doc, original);
    }

    #[test]
    fn lists_cronjobs_and_other_kinds() {
        let mut list = json!({
            "apiVersion": "v1", "kind": "List",
            "items": [
                deployment(),
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}},
                {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
                 "spec": {"schedule": "0 0 * * *", "jobTemplate": {"spec": {"template": {
                    "spec": {"restartPolicy": "Never",
                             "containers": [{"name": "job", "image": "job:1"}]}}}}}}
            ]
        });
        let mut reports = Vec::new();
        inject(&mut list, &config(), "weft", &mut reports).expect("injects");
        assert_eq!(reports.len(), 2, "the ConfigMap is not a workload");
        assert_eq!(list["items"][1]["data"], json!({}));
        let cron = &list["items"][2]["spec"]["jobTemplate"]["spec"]["template"];
        assert_eq!(cron["spec"]["initContainers"][1]["restartPolicy"], "Always");

        let classic = inject::Config {
            native_sidecars: false,
            ..config()
        };
        let mut job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
            "spec": {"template": {"spec": {"containers": [{"name": "j", "image": "j"}]}}}});
        let before = job.clone();
        let mut reports = Vec::new();
        inject(&mut job, &classic, "weft", &mut reports).expect("skips");
        assert_eq!(job, before);
        assert!(reports[0]
            .skipped
            .as_deref()
            .is_some_and(|s| s.contains("Job")));
    }

    #[test]
    fn a_template_that_is_not_a_pod_is_an_error_naming_the_object() {
        let mut bad = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"}, "spec": {"template": {"spec": {"containers": "no"}}}});
        let err = inject(&mut bad, &config(), "weft", &mut Vec::new()).expect_err("refused");
        assert!(err.to_string().contains("Deployment web"), "{err}");
        let mut missing = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"}, "spec": {}});
        let err = inject(&mut missing, &config(), "weft", &mut Vec::new()).expect_err("refused");
        assert!(err.to_string().contains("spec.template"), "{err}");
    }
}
