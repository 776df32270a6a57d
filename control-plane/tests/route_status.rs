//! The HTTPRoute status writer against the fake API server (`weft_testkit::kube`), which
//! serves the `status` subresource as a real one does: merge PATCH of `status` only, with
//! `metadata.resourceVersion` as a precondition (409 when stale), and GET.
//!
//! Every wait is bounded; the writer's backoff after a failure starts at 1 s.

use std::{sync::Arc, time::Duration};

use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use weft_control_plane::{
    kube_source::KubeSource,
    metrics::Metrics,
    route_status::{StatusWriter, CONTROLLER_NAME},
    source::ConfigSource,
};
use weft_control_plane_config::model::Snapshot;
use weft_testkit::kube::{FakeKube, Kind};

const PATIENCE: Duration = Duration::from_secs(20);
const SETTLE: Duration = Duration::from_millis(20);
const NS: &str = "shop";
const OTHER: &str = "example.com/gateway-controller";
const LONG_AGO: &str = "2020-01-01T00:00:00Z";

fn service(name: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": NS},
        "spec": {"clusterIP": "198.19.0.10", "ports": [{"name": "http", "port": 80}]},
    })
}

fn parent_ref() -> Value {
    json!({"group": "", "kind": "Service", "name": "api", "port": 80})
}

/// HTTPRoute `name` on Service `api` port 80, sending to `backend`, at `generation`.
fn route(name: &str, backend: &str, path: &str, generation: i64, status: Option<Value>) -> Value {
    let mut r = json!({
        "metadata": {"name": name, "namespace": NS, "generation": generation},
        "spec": {
            "parentRefs": [parent_ref()],
            "rules": [{"matches": [{"path": {"type": "RegularExpression", "value": path}}],
                       "backendRefs": [{"name": backend, "port": 80}]}],
        },
    });
    if let Some(status) = status {
        r["status"] = status;
    }
    r
}

fn other_entry() -> Value {
    json!({
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"},
        "controllerName": OTHER,
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                        "message": "", "lastTransitionTime": LONG_AGO}],
        "unknownToWeft": {"kept": true},
    })
}

/// Our entry as it was written long ago: both conditions true since [`LONG_AGO`].
fn old_entry_of_ours() -> Value {
    let c = |t: &str| {
        json!({"type": t, "status": "True", "reason": t, "message": "an older message",
               "lastTransitionTime": LONG_AGO, "observedGeneration": 1})
    };
    json!({"parentRef": parent_ref(), "controllerName": CONTROLLER_NAME,
           "conditions": [c("Accepted"), c("ResolvedRefs")]})
}

/// The source and the writer, on tasks of their own.
struct Running {
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    fn start(fake: &FakeKube) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("weft_control_plane=debug")
            .with_test_writer()
            .try_init();
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let url = fake.url().parse().expect("the fake's URL");
        let client = kube::Client::try_from(kube::Config::new(url)).expect("a kube client");
        let source = KubeSource::new(client.clone(), metrics.clone(), SETTLE);
        let refused = source.refused_routes();
        let writer = StatusWriter::new(client, metrics.clone(), SETTLE);
        let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
        let shutdown = CancellationToken::new();
        let tasks = vec![
            tokio::spawn(Box::new(source).run(tx, shutdown.clone())),
            tokio::spawn(writer.run(rx, refused, shutdown.clone())),
        ];
        Self {
            metrics,
            shutdown,
            tasks,
        }
    }

    fn writes(&self, result: &str) -> f64 {
        let text = self.metrics.encode();
        let series = format!("weft_route_status_writes_total{{result=\"{result}\"}}");
        text.lines()
            .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Waits (bounded) for the writes counter `result` to reach `n`: the writer counts a write
    /// once the API server's answer is back, a moment after the fake has stored the patch.
    async fn writes_reach(&self, result: &str, n: f64) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.writes(result) < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "writes{{result={result}}} = {} after {PATIENCE:?}, wanted {n}",
                self.writes(result)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("stopped promptly")
                .expect("no panic");
        }
    }
}

/// Our entry in route `name`'s status and the whole list, once `cond` holds for our entry.
async fn entry_when(
    fake: &FakeKube,
    name: &str,
    what: &str,
    cond: impl Fn(&Value) -> bool,
) -> (Value, Vec<Value>) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let object = fake
            .with(|c| c.get(Kind::HttpRoute, NS, name).cloned())
            .expect("the route exists");
        let parents = object["status"]["parents"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let ours = parents
            .iter()
            .find(|p| p["controllerName"] == CONTROLLER_NAME)
            .cloned();
        if let Some(ours) = ours.filter(|e| cond(e)) {
            return (ours, parents);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not true after {PATIENCE:?}: {what}; the route: {object:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Condition `i` of an entry: (type, status, reason, observedGeneration).
fn condition(entry: &Value, i: usize) -> (String, String, String, i64) {
    let c = &entry["conditions"][i];
    (
        c["type"].as_str().unwrap_or_default().into(),
        c["status"].as_str().unwrap_or_default().into(),
        c["reason"].as_str().unwrap_or_default().into(),
        c["observedGeneration"].as_i64().unwrap_or(-1),
    )
}

fn has(entry: &Value, i: usize, want: (&str, &str, &str, i64)) -> bool {
    let (t, s, r, g) = condition(entry, i);
    (t.as_str(), s.as_str(), r.as_str(), g) == want
}

fn patches_of(fake: &FakeKube, name: &str) -> Vec<Value> {
    let object = format!("{NS}/{name}");
    fake.status_patches()
        .into_iter()
        .filter(|(o, _)| *o == object)
        .map(|(_, p)| p)
        .collect()
}

#[tokio::test]
async fn statuses_are_written_once_kept_for_others_and_merged_again_after_a_conflict() {
    let fake = FakeKube::start();
    for name in ["api", "api-v1"] {
        fake.apply(Kind::Service, service(name));
    }
    fake.apply(
        Kind::HttpRoute,
        route(
            "split",
            "api-v1",
            "/.*",
            1,
            Some(json!({"parents": [other_entry(), old_entry_of_ours()]})),
        ),
    );
    fake.apply(Kind::HttpRoute, route("nowhere", "api-v9", "/.*", 4, None));
    fake.apply(Kind::HttpRoute, route("bad", "api-v1", "/([", 2, None));
    let running = Running::start(&fake);

    let (split, parents) = entry_when(&fake, "split", "split is written", |e| {
        e["conditions"][0]["message"] != "an older message"
    })
    .await;
    assert!(
        has(&split, 0, ("Accepted", "True", "Accepted", 1)),
        "{split:#}"
    );
    assert!(
        has(&split, 1, ("ResolvedRefs", "True", "ResolvedRefs", 1)),
        "{split:#}"
    );
    assert_eq!(split["parentRef"], parent_ref());
    for i in 0..2 {
        assert_eq!(
            split["conditions"][i]["lastTransitionTime"], LONG_AGO,
            "a condition that held keeps its time: {split:#}"
        );
    }
    assert_eq!(parents.len(), 2, "{parents:#?}");
    assert_eq!(
        parents[0],
        other_entry(),
        "another controller's entry, whole"
    );

    let (nowhere, _) = entry_when(&fake, "nowhere", "nowhere is written", |_| true).await;
    assert!(
        has(&nowhere, 0, ("Accepted", "True", "Accepted", 4)),
        "{nowhere:#}"
    );
    assert!(
        has(&nowhere, 1, ("ResolvedRefs", "False", "BackendNotFound", 4)),
        "{nowhere:#}"
    );
    assert!(
        nowhere["conditions"][1]["message"]
            .as_str()
            .is_some_and(|m| m.contains("shop/api-v9 not found")),
        "{nowhere:#}"
    );

    let (bad, _) = entry_when(&fake, "bad", "the refused route is written", |_| true).await;
    assert!(
        has(&bad, 0, ("Accepted", "False", "UnsupportedValue", 2)),
        "{bad:#}"
    );
    assert!(
        bad["conditions"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("spec.rules[0].matches[0].path")),
        "{bad:#}"
    );

    // Every patch named the version it was made from.
    let patches = fake.status_patches();
    assert!(
        patches
            .iter()
            .all(|(_, p)| p["metadata"]["resourceVersion"].is_string()),
        "{patches:#?}"
    );
    // One write per route: the writes coming back through the watch cause none.
    assert_eq!(patches.len(), 3, "{patches:#?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.status_patches().len(), 3, "no write without a change");

    // A spec change whose first patch meets a conflict (another writer got there first):
    // read again, merged again, written.
    fake.with(|c| c.fail_status_patches(&[409]));
    let mut changed = route("split", "api-v9", "/.*", 2, None);
    changed["status"] = fake
        .with(|c| c.get(Kind::HttpRoute, NS, "split").cloned())
        .expect("split")["status"]
        .clone();
    fake.apply(Kind::HttpRoute, changed);
    let (split, parents) = entry_when(&fake, "split", "split's new generation", |e| {
        condition(e, 0).3 == 2
    })
    .await;
    assert!(
        has(&split, 1, ("ResolvedRefs", "False", "BackendNotFound", 2)),
        "{split:#}"
    );
    assert_eq!(split["conditions"][0]["lastTransitionTime"], LONG_AGO);
    assert_ne!(
        split["conditions"][1]["lastTransitionTime"], LONG_AGO,
        "ResolvedRefs went false: a transition"
    );
    assert_eq!(parents[0], other_entry());
    assert_eq!(running.writes("conflict"), 1.0);
    let gets = fake
        .gets(Kind::HttpRoute)
        .into_iter()
        .filter(|r| r.path.ends_with("/split/status"))
        .count();
    assert_eq!(gets, 1, "the status is read once after the conflict");
    assert_eq!(
        patches_of(&fake, "split").len(),
        3,
        "first, conflict, again"
    );
    running.stop().await;
}

#[tokio::test]
async fn a_failing_api_server_costs_retries_with_backoff_then_the_status_lands() {
    let fake = FakeKube::start();
    fake.apply(Kind::Service, service("api"));
    fake.apply(Kind::Service, service("api-v1"));
    // Every patch fails until the test clears the failures.
    fake.with(|c| c.fail_status_patches(&[500; 100]));
    fake.apply(Kind::HttpRoute, route("split", "api-v1", "/.*", 1, None));
    let running = Running::start(&fake);

    let deadline = tokio::time::Instant::now() + PATIENCE;
    while patches_of(&fake, "split").is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no write tried");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Backoff 1 s, then 2 s (each plus up to half again): within 2.5 s of the first try,
    // at most two more.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let tries = patches_of(&fake, "split").len();
    assert!((1..=3).contains(&tries), "{tries} tries in 2.5 s");
    running.writes_reach("failed", tries as f64).await;
    assert_eq!(running.writes("failed"), tries as f64);

    fake.with(|c| c.clear_status_failures());
    let (split, _) = entry_when(&fake, "split", "the status lands", |_| true).await;
    assert!(
        has(&split, 1, ("ResolvedRefs", "True", "ResolvedRefs", 1)),
        "{split:#}"
    );
    running.writes_reach("written", 1.0).await;
    assert_eq!(running.writes("written"), 1.0);
    running.stop().await;
}
