//! Feeds the injector AdmissionReviews, the namespace asking for injection: half the inputs as
//! raw bytes (the parser), half as a pod built from the bytes (annotations Weft reads with any
//! values, containers named as the app's or as Weft's, host network, missing or present maps
//! and arrays) in a well-formed review, so that the decision and the patch are reached. None
//! panics; an answer always carries the request's uid; a patch applies to the pod it came with
//! and leaves a pod the injector would not inject again.
#![no_main]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use libfuzzer_sys::{
    arbitrary::{Result, Unstructured},
    fuzz_target,
};
use serde_json::{json, Value};
use weft_injector_core::{
    decide, inject,
    review::{Namespace, Outcome, Request, Settings},
    Context, Decision,
};

/// A pod from `u`: the parts the injector reads, each present or not.
fn pod(u: &mut Unstructured<'_>) -> Result<Value> {
    const KEYS: [&str; 10] = [
        "weft.dev/inject",
        "weft.dev/injected",
        "weft.dev/opaque-ports",
        "weft.dev/proxy-log-level",
        "weft.dev/skip-inbound-ports",
        "weft.dev/skip-outbound-ports",
        "weft.dev/skip-outbound-cidrs",
        "weft.dev/proxy-cpu-limit",
        "weft.dev/proxy-memory-limit",
        "kubectl.kubernetes.io/default-container",
    ];
    const NAMES: [&str; 4] = ["app", "weft-proxy", "weft-init", "side/car"];
    let mut annotations = serde_json::Map::new();
    for _ in 0..u.int_in_range(0..=5)? {
        let key = if u.arbitrary()? {
            u.choose(&KEYS)?.to_string()
        } else {
            u.arbitrary::<String>()?
        };
        annotations.insert(key, Value::String(u.arbitrary()?));
    }
    let containers = |u: &mut Unstructured<'_>, at_least: u32| -> Result<Value> {
        let n = u.int_in_range(at_least..=3)?;
        let list = (0..n)
            .map(|_| {
                let name = if u.arbitrary()? {
                    u.choose(&NAMES)?.to_string()
                } else {
                    u.arbitrary::<String>()?
                };
                Ok(json!({"name": name, "image": "x"}))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Value::Array(list))
    };
    let mut spec = serde_json::Map::new();
    spec.insert("containers".into(), containers(u, 0)?);
    if u.arbitrary()? {
        spec.insert("initContainers".into(), containers(u, 0)?);
    }
    if u.arbitrary()? {
        spec.insert("volumes".into(), json!([{"name": "data", "emptyDir": {}}]));
    }
    if u.arbitrary()? {
        spec.insert("hostNetwork".into(), Value::Bool(u.arbitrary()?));
    }
    let mut metadata = json!({"name": "p"});
    if u.arbitrary()? {
        metadata["annotations"] = Value::Object(annotations);
    }
    Ok(json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}))
}

fn review(object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {},
            "object": object
        }
    }))
    .expect("JSON")
}

fuzz_target!(|data: &[u8]| {
    let built;
    let body = match data.split_first() {
        Some((mode, rest)) if mode & 1 == 1 => {
            let Ok(object) = pod(&mut Unstructured::new(rest)) else {
                return;
            };
            built = review(object);
            &built[..]
        }
        _ => data,
    };
    let Ok(req) = Request::parse(body) else {
        return;
    };
    let labels = BTreeMap::from([("weft.dev/inject".to_string(), "enabled".to_string())]);
    let namespace = Namespace {
        labels: labels.clone(),
        ..Default::default()
    };
    let settings = Settings {
        inject: inject::Config::new(
            "weft.local/weft-proxy:0.1.0",
            "weft.local/weft-init:0.1.0",
            "weft-control-plane.weft.svc.cluster.local:8443",
            "pem",
        ),
        weft_namespace: "weft".into(),
    };
    let answer = req.answer(&namespace, &settings);
    let out: serde_json::Value = serde_json::from_slice(&answer.to_json()).expect("JSON out");
    assert!(out["response"]["uid"].is_string());
    if answer.outcome != Outcome::Injected {
        return;
    }
    let input: serde_json::Value = serde_json::from_slice(body).expect("parsed once already");
    let mut pod = input["request"]["object"].clone();
    let patch: json_patch::Patch =
        serde_json::from_slice(answer.response.patch.as_deref().expect("a patch")).expect("patch");
    json_patch::patch(&mut pod, &patch.0).expect("the patch applies to its pod");
    let pod: Pod = serde_json::from_value(pod).expect("still a pod");
    let cx = Context {
        namespace: req.namespace().unwrap_or("default"),
        namespace_labels: &labels,
        weft_namespace: "weft",
        native_sidecars: true,
    };
    assert!(
        !matches!(decide(&pod, &cx), Decision::Inject),
        "an injected pod is injected again"
    );
});
