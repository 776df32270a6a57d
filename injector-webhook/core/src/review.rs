//! An `admission.k8s.io/v1` AdmissionReview in, its answer out: pure, so that the webhook
//! server only moves bytes and looks the namespace up. The review types are kube-rs's
//! (`kube-core`'s `admission` module), which the Kubernetes API server's own tests exercise
//! through kube-rs users; Weft does not hand-roll them.

use std::collections::BTreeMap;

use base64::{prelude::BASE64_STANDARD, Engine as _};
use k8s_openapi::api::core::v1::Pod;
use kube_core::{
    admission::{AdmissionRequest, AdmissionResponse, AdmissionReview},
    DynamicObject,
};
use thiserror::Error;

use crate::{decide, inject, Context, Decision};

/// The largest review read: the API server sends at most 3 MiB objects (etcd's limit is
/// 1.5 MiB; an old object rides along on updates).
pub const MAX_REVIEW_BYTES: usize = 4 << 20;

/// A review that cannot be answered: the server says 400 with this text.
#[derive(Debug, Error)]
pub enum ReviewError {
    #[error("the review is {0} bytes; at most {MAX_REVIEW_BYTES} are read")]
    TooLarge(usize),
    #[error("not an admission.k8s.io/v1 AdmissionReview: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("the AdmissionReview has no request")]
    NoRequest,
}

/// What the injector knows of a pod's namespace (its labels and annotations), from the API
/// server or, for `weftctl inject`, from the command line.
#[derive(Debug, Clone, Default)]
pub struct Namespace {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// The settings the review is answered with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub inject: inject::Config,
    /// Weft's own namespace (never injected).
    pub weft_namespace: String,
}

/// The parsed request: its namespace is needed before it can be answered.
#[derive(Debug)]
pub struct Request {
    request: AdmissionRequest<DynamicObject>,
}

impl Request {
    /// Reads a review's bytes.
    pub fn parse(body: &[u8]) -> Result<Self, ReviewError> {
        if body.len() > MAX_REVIEW_BYTES {
            return Err(ReviewError::TooLarge(body.len()));
        }
        let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body)?;
        let request = review.try_into().map_err(|_| ReviewError::NoRequest)?;
        Ok(Self { request })
    }

    /// The namespace whose labels decide, when the object is a pod.
    pub fn namespace(&self) -> Option<&str> {
        self.request.namespace.as_deref()
    }

    /// The answer, as JSON for the API server. `namespace` is the request's namespace, as the
    /// API server has it.
    pub fn answer(&self, namespace: &Namespace, settings: &Settings) -> Answer {
        let req = &self.request;
        let allow = AdmissionResponse::from(req);
        let is_pod = req.kind.group.is_empty() && req.kind.kind == "Pod";
        let Some(object) = req.object.as_ref().filter(|_| is_pod) else {
            // Not a pod (or nothing to look at): allowed as it is.
            return Answer::new(allow, Outcome::NotAPod);
        };
        let pod: Pod = match serde_json::to_value(object).and_then(serde_json::from_value) {
            Ok(pod) => pod,
            Err(e) => {
                let why = format!("weft: the pod cannot be read: {e}");
                return Answer::new(allow.deny(why), Outcome::Refused);
            }
        };
        let ns = req
            .namespace
            .as_deref()
            .or(pod.metadata.namespace.as_deref())
            .unwrap_or("default");
        let cx = Context {
            namespace: ns,
            namespace_labels: &namespace.labels,
            weft_namespace: &settings.weft_namespace,
            native_sidecars: settings.inject.native_sidecars,
        };
        match decide(&pod, &cx) {
            Decision::Skip(skip) => {
                let mut allow = allow;
                allow.warnings = skip.warning().map(|w| vec![w]);
                Answer::new(allow, Outcome::Skipped(skip))
            }
            Decision::Inject => match inject::patch(&pod, &namespace.annotations, &settings.inject)
            {
                Ok(patch) => match allow.clone().with_patch(patch) {
                    Ok(patched) => Answer::new(patched, Outcome::Injected),
                    Err(e) => Answer::new(
                        allow.deny(format!("weft: the patch cannot be written: {e}")),
                        Outcome::Refused,
                    ),
                },
                Err(e) => Answer::new(
                    allow.deny(format!("weft: the pod cannot be meshed: {e}")),
                    Outcome::Refused,
                ),
            },
        }
    }
}

/// What was done with a review, for metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Injected,
    Skipped(decide::Skip),
    NotAPod,
    /// Denied: the pod asks for something that cannot be honoured.
    Refused,
}

/// The review's answer.
#[derive(Debug)]
pub struct Answer {
    pub response: AdmissionResponse,
    pub outcome: Outcome,
}

impl Answer {
    fn new(response: AdmissionResponse, outcome: Outcome) -> Self {
        Self { response, outcome }
    }

    /// The AdmissionReview the API server reads. The patch goes as base64, as the API server
    /// requires of a `[]byte` in JSON: kube-core writes its bytes as an array of numbers
    /// (kube-rs issue 1781), so it is replaced here.
    pub fn to_json(&self) -> Vec<u8> {
        let review = self.response.clone().into_review();
        // Plain data: serializing it cannot fail.
        let mut json = serde_json::to_value(&review).unwrap_or_default();
        if let Some(patch) = &self.response.patch {
            json["response"]["patch"] = serde_json::Value::String(BASE64_STANDARD.encode(patch));
        }
        serde_json::to_vec(&json).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn settings() -> Settings {
        Settings {
            inject: inject::Config::new(
                "weft.local/weft-proxy:0.1.0",
                "weft.local/weft-init:0.1.0",
                "weft-control-plane.weft.svc.cluster.local:8443",
                "pem",
            ),
            weft_namespace: "weft".into(),
        }
    }

    fn review(kind: &str, object: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": kind},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "shop",
                "operation": "CREATE",
                "userInfo": {"username": "admin"},
                "object": object,
                "dryRun": false
            }
        }))
        .expect("json")
    }

    fn enabled() -> Namespace {
        Namespace {
            labels: BTreeMap::from([("weft.dev/inject".into(), "enabled".into())]),
            ..Default::default()
        }
    }

    fn pod() -> serde_json::Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "shop"},
            "spec": {"containers": [{"name": "app", "image": "app"}]}
        })
    }

    #[test]
    fn a_pod_in_an_enabled_namespace_is_patched_with_the_requests_uid() {
        let req = Request::parse(&review("Pod", pod())).expect("parses");
        assert_eq!(req.namespace(), Some("shop"));
        let answer = req.answer(&enabled(), &settings());
        assert_eq!(answer.outcome, Outcome::Injected);
        let out: serde_json::Value = serde_json::from_slice(&answer.to_json()).expect("json");
        assert_eq!(
            out["response"]["uid"],
            "705ab4f5-6393-11e8-b7cc-42010a800002"
        );
        assert_eq!(out["response"]["allowed"], true);
        assert_eq!(out["response"]["patchType"], "JSONPatch");
        let patch = out["response"]["patch"]
            .as_str()
            .expect("base64 of the patch");
        let patch = BASE64_STANDARD.decode(patch).expect("base64");
        let patch: json_patch::Patch = serde_json::from_slice(&patch).expect("a JSON Patch");
        assert!(!patch.0.is_empty());
    }

    #[test]
    fn skips_and_other_kinds_are_allowed_unchanged() {
        let req = Request::parse(&review("Pod", pod())).expect("parses");
        let answer = req.answer(&Namespace::default(), &settings());
        assert!(matches!(answer.outcome, Outcome::Skipped(_)));
        assert!(answer.response.allowed && answer.response.patch.is_none());
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        let req = Request::parse(&review("ConfigMap", cm)).expect("parses");
        let answer = req.answer(&enabled(), &settings());
        assert_eq!(answer.outcome, Outcome::NotAPod);
        assert!(answer.response.allowed && answer.response.patch.is_none());
    }

    #[test]
    fn a_bad_annotation_is_denied_by_name_and_a_malformed_review_is_an_error() {
        let mut bad = pod();
        bad["metadata"]["annotations"] = json!({"weft.dev/opaque-ports": "http"});
        let req = Request::parse(&review("Pod", bad)).expect("parses");
        let answer = req.answer(&enabled(), &settings());
        assert_eq!(answer.outcome, Outcome::Refused);
        assert!(!answer.response.allowed);
        assert!(answer
            .response
            .result
            .message
            .contains("weft.dev/opaque-ports"));
        for body in [&b"{"[..], b"{\"kind\": \"AdmissionReview\"}", b"[]"] {
            assert!(
                Request::parse(body).is_err(),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        let huge = vec![b' '; MAX_REVIEW_BYTES + 1];
        assert!(matches!(
            Request::parse(&huge),
            Err(ReviewError::TooLarge(_))
        ));
    }
}
