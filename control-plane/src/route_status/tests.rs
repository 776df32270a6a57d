use k8s_openapi::api::core::v1::Service;
use serde_json::json;
use weft_control_plane_config::model::Problem;

use super::*;

const NS: &str = "shop";
const T0: &str = "2026-01-01T00:00:00Z";
const OTHER: &str = "example.com/gateway-controller";

fn now() -> Time {
    Time("2026-02-03T04:05:06Z".parse().expect("a timestamp"))
}

fn now_text() -> Value {
    json!("2026-02-03T04:05:06Z")
}

fn service(name: &str) -> Arc<Service> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": NS},
            "spec": {"clusterIP": "198.19.0.10", "ports": [{"name": "http", "port": 80}]},
        }))
        .expect("a Service"),
    )
}

/// The route `api` on Service `api` port 80 sending to `backend`, at `generation`, with
/// `status` as the API server holds it.
fn route(backend: &str, generation: i64, status: Option<Value>) -> HttpRoute {
    let mut route = json!({
        "metadata": {"name": "api", "namespace": NS, "generation": generation, "resourceVersion": "7"},
        "spec": {
            "parentRefs": [
                {"group": "", "kind": "Service", "name": "api", "port": 80},
                {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"},
            ],
            "rules": [{"backendRefs": [{"name": backend, "port": 80}]}],
        },
    });
    if let Some(status) = status {
        route["status"] = status;
    }
    serde_json::from_value(route).expect("an HTTPRoute")
}

fn snapshot(route: &HttpRoute) -> Snapshot {
    let mut s = Snapshot::default();
    for name in ["api", "api-v1"] {
        s.add_service(service(name)).expect("a Service");
    }
    s.add_http_route(Arc::new(route.clone()))
        .expect("an HTTPRoute");
    s
}

fn status_of(route: &HttpRoute) -> RouteStatus {
    let s = snapshot(route);
    routes::route_status(&s, &(NS.into(), "api".into()), route)
}

/// Our entry as the writer makes it: `(type, status, reason, lastTransitionTime)` per condition.
fn ours(generation: i64, conditions: &[(&str, &str, &str, Value)]) -> Value {
    json!({
        "parentRef": {"group": "", "kind": "Service", "name": "api", "port": 80},
        "controllerName": CONTROLLER_NAME,
        "conditions": conditions.iter().map(|(t, s, r, at)| json!({
            "type": t, "status": s, "reason": r, "lastTransitionTime": at,
            "observedGeneration": generation,
        })).collect::<Vec<_>>(),
    })
}

/// The entries without messages, to compare the rest exactly.
fn without_messages(entries: &[Value]) -> Vec<Value> {
    entries
        .iter()
        .map(|e| {
            let mut e = e.clone();
            for c in e["conditions"].as_array_mut().into_iter().flatten() {
                c.as_object_mut().map(|c| c.remove("message"));
            }
            e
        })
        .collect()
}

fn other_entry() -> Value {
    json!({
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"},
        "controllerName": OTHER,
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                        "message": "", "lastTransitionTime": T0, "observedGeneration": 1}],
        "aFieldWeftDoesNotKnow": {"kept": [1, 2, 3]},
    })
}

#[test]
fn a_new_route_gets_both_conditions_for_its_service_parent_only() {
    let r = route("api-v1", 3, None);
    let plan = plan(&r, &status_of(&r), None, &now()).expect("a plan");
    assert_eq!(plan.route, (NS.to_string(), "api".to_string()));
    assert_eq!(plan.resource_version.as_deref(), Some("7"));
    let want = ours(
        3,
        &[
            ("Accepted", "True", "Accepted", now_text()),
            ("ResolvedRefs", "True", "ResolvedRefs", now_text()),
        ],
    );
    assert_eq!(without_messages(&plan.parents), [want]);
    assert_eq!(plan.parents, plan.ours);
    let message = plan.ours[0]["conditions"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("producer route of Service shop/api"),
        "{message}"
    );
}

#[test]
fn a_missing_backend_is_resolved_refs_false_backend_not_found() {
    let r = route("api-v9", 1, None);
    let plan = plan(&r, &status_of(&r), None, &now()).expect("a plan");
    let resolved = &plan.ours[0]["conditions"][1];
    assert_eq!(resolved["type"], "ResolvedRefs");
    assert_eq!(resolved["status"], "False");
    assert_eq!(resolved["reason"], "BackendNotFound");
    let message = resolved["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("spec.rules[0].backendRefs[0]") && message.contains("shop/api-v9"),
        "{message}"
    );
    assert_eq!(plan.ours[0]["conditions"][0]["status"], "True");
}

#[test]
fn other_controllers_entries_are_kept_whole_and_first() {
    let stale_ours = json!({
        "parentRef": {"group": "", "kind": "Service", "name": "gone", "port": 80},
        "controllerName": CONTROLLER_NAME,
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                        "message": "", "lastTransitionTime": T0}],
    });
    let r = route(
        "api-v1",
        1,
        Some(json!({"parents": [stale_ours, other_entry()]})),
    );
    let plan = plan(&r, &status_of(&r), None, &now()).expect("a plan");
    assert_eq!(plan.parents.len(), 2, "{:#?}", plan.parents);
    assert_eq!(
        plan.parents[0],
        other_entry(),
        "every field of it, as it was"
    );
    assert_eq!(plan.parents[1], plan.ours[0]);
    assert_eq!(
        plan.ours[0]["parentRef"]["name"], "api",
        "our entry for a parent the route no longer names is gone"
    );
}

#[test]
fn last_transition_time_is_kept_while_the_status_holds() {
    // As held: Accepted true since T0, ResolvedRefs false since T0, for generation 1.
    let held = ours(
        1,
        &[
            ("Accepted", "True", "Accepted", json!(T0)),
            ("ResolvedRefs", "False", "BackendNotFound", json!(T0)),
        ],
    );
    let r = route("api-v1", 2, Some(json!({"parents": [other_entry(), held]})));
    let plan = plan(&r, &status_of(&r), None, &now()).expect("a plan");
    let want = ours(
        2,
        &[
            // Same status: its time stays; observedGeneration follows the route.
            ("Accepted", "True", "Accepted", json!(T0)),
            // False to True: a transition, now.
            ("ResolvedRefs", "True", "ResolvedRefs", now_text()),
        ],
    );
    assert_eq!(without_messages(&plan.ours), [want]);
    assert_eq!(plan.parents[0], other_entry());
}

#[test]
fn a_route_that_already_says_it_is_not_written() {
    let r = route("api-v1", 1, None);
    let first = plan(&r, &status_of(&r), None, &now()).expect("a plan");
    let written = route("api-v1", 1, Some(json!({"parents": first.parents})));
    let later = Time("2026-03-01T00:00:00Z".parse().expect("a timestamp"));
    assert_eq!(plan(&written, &status_of(&written), None, &later), None);
}

#[test]
fn a_view_older_than_the_last_write_is_judged_by_what_was_written() {
    let r = route("api-v1", 1, None);
    let first = plan(&r, &status_of(&r), None, &now()).expect("a plan");
    let last = Written {
        from: Some("7".into()),
        result: Some("8".into()),
        ours: first.ours.clone(),
    };
    // The watch still shows version 7, without our write: nothing to do.
    let later = Time("2026-03-01T00:00:00Z".parse().expect("a timestamp"));
    assert_eq!(plan(&r, &status_of(&r), Some(&last), &later), None);
    // Version 8 is our write as the API server normalised it: nothing to do either.
    let mut normalised = route(
        "api-v1",
        1,
        Some(
            json!({"parents": [{"controllerName": CONTROLLER_NAME, "parentRef": {"name": "api"}}]}),
        ),
    );
    normalised.metadata.resource_version = Some("8".into());
    let status = status_of(&r);
    assert_eq!(plan(&normalised, &status, Some(&last), &later), None);
    // A newer version that lost our entries (someone cleared the status): written again.
    normalised.metadata.resource_version = Some("9".into());
    let again = plan(&normalised, &status, Some(&last), &later).expect("written again");
    assert_eq!(again.resource_version.as_deref(), Some("9"));
}

#[test]
fn a_refused_route_is_not_accepted_with_the_field_and_reason() {
    let good = route("api-v1", 1, None);
    let s = snapshot(&good);
    let mut bad = route("api-v1", 2, None);
    bad.metadata.resource_version = Some("9".into());
    let refused = [RefusedRoute {
        key: (NS.into(), "api".into()),
        route: Arc::new(bad),
        problem: Problem {
            field: "spec.rules[0].matches[0].path.value".into(),
            reason: "not a regular expression Weft can compile".into(),
        },
    }];
    let mut written = HashMap::from([(
        (NS.to_string(), "gone".to_string()),
        Written {
            from: None,
            result: None,
            ours: Vec::new(),
        },
    )]);
    let plans = plans(&s, &refused, &mut written, &now());
    assert!(written.is_empty(), "routes that are gone are forgotten");
    assert_eq!(plans.len(), 1, "{plans:#?}");
    let plan = &plans[0];
    assert_eq!(
        plan.resource_version.as_deref(),
        Some("9"),
        "the refused version's"
    );
    let conditions = plan.ours[0]["conditions"].as_array().expect("conditions");
    assert_eq!(conditions.len(), 1, "{conditions:#?}");
    let accepted = &conditions[0];
    assert_eq!(accepted["type"], "Accepted");
    assert_eq!(accepted["status"], "False");
    assert_eq!(accepted["reason"], "UnsupportedValue");
    assert_eq!(accepted["observedGeneration"], 2);
    let message = accepted["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("spec.rules[0].matches[0].path.value")
            && message.contains("not a regular expression")
            && message.contains("last accepted version stays in force"),
        "{message}"
    );
}

#[test]
fn a_route_with_no_service_parent_and_no_entry_of_ours_is_left_alone() {
    let mut r = route("api-v1", 1, Some(json!({"parents": [other_entry()]})));
    r.spec.parent_refs.retain(|p| !p.is_service());
    assert_eq!(plan(&r, &status_of(&r), None, &now()), None);
}

#[test]
fn our_entries_fit_beside_the_others_and_messages_are_bounded() {
    let others: Vec<Value> = (0..MAX_PARENTS).map(|_| other_entry()).collect();
    let r = route("api-v1", 1, Some(json!({"parents": others})));
    assert_eq!(
        plan(&r, &status_of(&r), None, &now()),
        None,
        "no room left: nothing of ours to write"
    );
    let long = "é".repeat(MAX_MESSAGE);
    let cut = bounded(&long);
    assert!(cut.len() <= MAX_MESSAGE && long.starts_with(cut) && !cut.is_empty());
}
