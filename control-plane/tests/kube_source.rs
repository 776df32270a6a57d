//! The Kubernetes config source against a fake API server that speaks LIST and WATCH as a real
//! one does (`weft_testkit::kube`): initial sync, events, coalescing, bookmarks, 410 Gone,
//! refused objects, an API server that goes away, and shutdown.
//!
//! Every wait is bounded. The source's retries follow kube-runtime's default backoff (0.8 s
//! doubling, jittered), so waits that span a retry get [`PATIENCE`], not a second.

use std::{sync::Arc, time::Duration};

use serde_json::{json, Value};
use tokio::{sync::watch, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use weft_control_plane::{kube_source::KubeSource, metrics::Metrics, source::ConfigSource};
use weft_control_plane_config::model::Snapshot;
use weft_testkit::kube::{FakeKube, Kind, Outcome};

/// Bound on any single wait.
const PATIENCE: Duration = Duration::from_secs(20);
/// The source's coalescing delay in tests.
const SETTLE: Duration = Duration::from_millis(20);

const NS: &str = "shop";
const REFUSED: &str = "weft_config_refused_documents_total{source=\"kubernetes\"}";
const APPLIED: &str = "weft_config_snapshots_total{result=\"applied\",source=\"kubernetes\"}";

fn service(name: &str, cluster_ip: &str) -> Value {
    json!({
        "metadata": {
            "name": name, "namespace": NS,
            "managedFields": [{"manager": "kubectl", "operation": "Apply", "apiVersion": "v1"}],
        },
        "spec": {"clusterIP": cluster_ip, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    })
}

fn slice(name: &str, service: Option<&str>, ips: &[&str]) -> Value {
    let labels = match service {
        Some(s) => json!({"kubernetes.io/service-name": s}),
        None => json!({}),
    };
    let endpoints: Vec<Value> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}}))
        .collect();
    json!({
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": endpoints,
    })
}

fn pod(name: &str, ip: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": NS, "labels": {"app": "api"}},
        "spec": {
            "serviceAccountName": "api",
            "nodeName": "node-1",
            "containers": [{"name": "app", "image": "app:1"}],
        },
        "status": {
            "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    })
}

fn key(name: &str) -> (String, String) {
    (NS.to_string(), name.to_string())
}

/// The source under test, running on its own task.
struct Running {
    rx: watch::Receiver<Arc<Snapshot>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    fn start(fake: &FakeKube) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("weft_control_plane=debug,kube_runtime=debug")
            .with_test_writer()
            .try_init();
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let url = fake.url().parse().expect("the fake's URL");
        let client = kube::Client::try_from(kube::Config::new(url)).expect("a kube client");
        let source = Box::new(KubeSource::new(client, metrics.clone(), SETTLE));
        assert_eq!(source.name(), "kubernetes");
        let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(source.run(tx, shutdown.clone()));
        Self {
            rx,
            metrics,
            shutdown,
            task,
        }
    }

    /// The latest snapshot once `cond` holds for it.
    async fn until(&mut self, what: &str, cond: impl Fn(&Snapshot) -> bool) -> Arc<Snapshot> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let current = self.rx.borrow_and_update().clone();
            if cond(&current) {
                return current;
            }
            match tokio::time::timeout_at(deadline, self.rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => panic!("the source stopped before {what}"),
                Err(_) => {
                    panic!("not true after {PATIENCE:?}: {what}; last snapshot: {current:#?}")
                }
            }
        }
    }

    fn metric(&self, series: &str) -> f64 {
        let text = self.metrics.encode();
        let metrics =
            weft_testkit::Metrics::parse(&text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
        metrics
            .series(series)
            .unwrap_or_else(|| panic!("series {series} in:\n{text}"))
    }

    fn publications(&self) -> f64 {
        self.metric(APPLIED)
    }

    /// Cancels the source; it must return within a second.
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(1), self.task)
            .await
            .expect("run returned promptly after shutdown")
            .expect("run did not panic");
    }
}

/// Retries `cond` until it holds or [`PATIENCE`] runs out.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let held = weft_testkit::wait::eventually(what, PATIENCE, || {
        let now = cond();
        async move { now.then_some(()) }
    })
    .await;
    if let Err(e) = held {
        panic!("{e}");
    }
}

/// A Service, a slice and two pods, with LIST pages of one item so the pages are read with
/// `continue`.
async fn cluster() -> FakeKube {
    let fake = FakeKube::start();
    fake.with(|c| {
        c.set_max_page(1);
        c.apply(Kind::Service, service("api", "198.19.0.10"));
        c.apply(
            Kind::EndpointSlice,
            slice("api-1", Some("api"), &["198.18.0.11", "198.18.0.12"]),
        );
        c.apply(Kind::Pod, pod("api-0", "198.18.0.11"));
        c.apply(Kind::Pod, pod("api-1", "198.18.0.12"));
    });
    fake
}

fn has_all(s: &Snapshot) -> bool {
    s.services.len() == 1 && s.endpoint_slices.len() == 1 && s.pods.len() == 2
}

#[tokio::test]
async fn initial_lists_publish_one_whole_snapshot_and_nothing_before() {
    let fake = cluster().await;
    fake.hold_lists(Kind::Pod);
    let mut source = Running::start(&fake);

    // Services and slices listed and watching; pods still listing: nothing published.
    eventually("Services and EndpointSlices watched", || {
        !fake.watches(Kind::Service).is_empty() && !fake.watches(Kind::EndpointSlice).is_empty()
    })
    .await;
    assert!(
        !source.rx.has_changed().expect("source running"),
        "published before the Pod list completed"
    );
    assert_eq!(source.publications(), 0.0);

    fake.release_lists();
    let snapshot = source.until("all three listed", has_all).await;
    assert_eq!(source.publications(), 1.0);
    let svc = &snapshot.services[&key("api")];
    let spec = svc.spec.as_ref().expect("spec");
    assert_eq!(spec.cluster_ip.as_deref(), Some("198.19.0.10"));
    assert_eq!(svc.metadata.managed_fields, None, "managedFields stripped");
    assert!(snapshot.endpoint_slices.contains_key(&key("api-1")));
    let p = &snapshot.pods[&key("api-0")];
    let status = p.status.as_ref().expect("status");
    assert_eq!(status.pod_ip.as_deref(), Some("198.18.0.11"));
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(status.conditions, None, "status.conditions stripped");
    let pod_spec = p.spec.as_ref().expect("spec");
    assert_eq!(pod_spec.service_account_name.as_deref(), Some("api"));
    assert_eq!(pod_spec.node_name, None, "spec.nodeName stripped");
    assert_eq!(pod_spec.containers[0].name, "app");
    assert_eq!(pod_spec.containers[0].image, None, "image stripped");
    assert!(p.metadata.uid.is_some() && p.metadata.resource_version.is_some());
    assert_eq!(
        p.metadata.creation_timestamp, None,
        "creationTimestamp stripped"
    );

    // What kube-rs asked: pages of 500 over all namespaces (our server pages by one, so the
    // second pod came with `continue`), then a watch from the list's resourceVersion.
    let lists = fake.lists(Kind::Pod);
    assert_eq!(lists.len(), 2, "{lists:?}");
    assert_eq!(lists[0].param("limit"), Some("500"));
    assert_eq!(lists[0].param("continue"), None);
    assert_eq!(lists[0].param("resourceVersion"), None, "a quorum read");
    assert!(lists[1].param("continue").is_some(), "{lists:?}");
    eventually("Pods watched", || !fake.watches(Kind::Pod).is_empty()).await;
    let watch = &fake.watches(Kind::Pod)[0];
    assert_eq!(watch.param("resourceVersion"), Some("4"), "{watch:?}");
    assert_eq!(watch.param("allowWatchBookmarks"), Some("true"));
    assert_eq!(watch.param("timeoutSeconds"), Some("290"));
    fake.assert_no_problems();
    source.stop().await;
}

#[tokio::test]
async fn events_reach_the_snapshot_and_bursts_are_coalesced() {
    let fake = cluster().await;
    let mut source = Running::start(&fake);
    source.until("synced", has_all).await;

    fake.apply(Kind::Pod, pod("api-2", "198.18.0.13"));
    source
        .until("ADDED pod", |s| s.pods.contains_key(&key("api-2")))
        .await;
    let mut changed = service("api", "198.19.0.10");
    changed["spec"]["ports"][0]["port"] = json!(8000);
    fake.apply(Kind::Service, changed);
    source
        .until("MODIFIED service", |s| {
            s.services[&key("api")]
                .spec
                .as_ref()
                .expect("spec")
                .ports
                .as_ref()
                .expect("ports")[0]
                .port
                == 8000
        })
        .await;
    fake.delete(Kind::EndpointSlice, NS, "api-1");
    source
        .until("DELETED slice", |s| s.endpoint_slices.is_empty())
        .await;

    // 50 changes at once: 30 pods added, 10 of them relabelled, 10 deleted.
    let before = source.publications();
    fake.with(|c| {
        for i in 0..30 {
            c.apply(
                Kind::Pod,
                pod(&format!("burst-{i}"), &format!("198.18.1.{i}")),
            );
        }
        for i in 0..10 {
            let mut p = pod(&format!("burst-{i}"), &format!("198.18.1.{i}"));
            p["metadata"]["labels"]["version"] = json!("v2");
            c.apply(Kind::Pod, p);
        }
        for i in 20..30 {
            c.delete(Kind::Pod, NS, &format!("burst-{i}"));
        }
    });
    let final_state = |s: &Snapshot| {
        (0..30).all(|i| {
            let p = s.pods.get(&key(&format!("burst-{i}")));
            match i {
                0..10 => p.is_some_and(|p| {
                    p.metadata.labels.as_ref().expect("labels").get("version")
                        == Some(&"v2".to_string())
                }),
                10..20 => p.is_some_and(|p| {
                    !p.metadata
                        .labels
                        .as_ref()
                        .expect("labels")
                        .contains_key("version")
                }),
                _ => p.is_none(),
            }
        }) && s.pods.len() == 3 + 20
    };
    source.until("the burst's final state", final_state).await;
    let publications = source.publications() - before;
    assert!(
        (1.0..=5.0).contains(&publications),
        "50 changes in one burst took {publications} publications"
    );
    fake.assert_no_problems();
    source.stop().await;
}

#[tokio::test]
async fn a_cut_watch_resumes_from_the_last_bookmark() {
    let fake = cluster().await;
    let mut source = Running::start(&fake);
    source.until("synced", has_all).await;
    eventually("three watches open", || {
        Kind::ALL.iter().all(|k| fake.open_watches(*k) == 1)
    })
    .await;
    let listed = fake.lists(Kind::Service)[0].clone();
    assert_eq!(listed.outcome, Outcome::List);

    // Pod changes move the cluster's resourceVersion on; the Service watch sees none of them.
    fake.apply(Kind::Pod, pod("api-2", "198.18.0.13"));
    fake.apply(Kind::Pod, pod("api-3", "198.18.0.14"));
    source.until("pods added", |s| s.pods.len() == 4).await;

    // Without a bookmark, a cut Service watch resumes from where it started: the list's.
    fake.cut_watches();
    eventually("Service watch resumed", || {
        fake.watches(Kind::Service).len() == 2
    })
    .await;
    let resumed = fake.watches(Kind::Service)[1].clone();
    assert_eq!(resumed.param("resourceVersion"), Some("4"), "{resumed:?}");
    eventually("three watches open again", || {
        Kind::ALL.iter().all(|k| fake.open_watches(*k) == 1)
    })
    .await;

    // With one, it resumes from the bookmark's.
    fake.apply(Kind::Pod, pod("api-4", "198.18.0.15"));
    source.until("pod added", |s| s.pods.len() == 5).await;
    let bookmark = fake.with(|c| {
        let rv = c.bookmark();
        c.cut_watches();
        rv
    });
    assert_eq!(bookmark, 7);
    eventually("Service watch resumed again", || {
        fake.watches(Kind::Service).len() == 3
    })
    .await;
    let resumed = fake.watches(Kind::Service)[2].clone();
    assert_eq!(
        resumed.param("resourceVersion"),
        Some(bookmark.to_string().as_str()),
        "{resumed:?}"
    );
    assert_eq!(resumed.outcome, Outcome::Watch);
    // No relist was needed.
    assert_eq!(fake.lists(Kind::Service).len(), 1);
    fake.assert_no_problems();
    source.stop().await;
}

#[tokio::test]
async fn gone_relists_and_catches_up_without_repeating_itself() {
    let fake = cluster().await;
    let mut source = Running::start(&fake);
    source.until("synced", has_all).await;
    eventually("three watches open", || {
        Kind::ALL.iter().all(|k| fake.open_watches(*k) == 1)
    })
    .await;
    let before = source.publications();

    // While no watch is open: a pod deleted, one added, and the history compacted past them.
    fake.with(|c| {
        c.cut_watches();
        c.delete(Kind::Pod, NS, "api-0");
        c.apply(Kind::Pod, pod("api-2", "198.18.0.13"));
        c.compact();
    });
    source
        .until("relisted pods", |s| {
            !s.pods.contains_key(&key("api-0")) && s.pods.contains_key(&key("api-2"))
        })
        .await;
    for kind in Kind::ALL {
        eventually(&format!("{kind:?}: 410, relist, watch again"), || {
            let requests: Vec<_> = fake
                .requests()
                .into_iter()
                .filter(|r| r.kind == Some(kind))
                .collect();
            let gone = requests.iter().position(|r| r.outcome == Outcome::Gone);
            gone.is_some_and(|g| {
                let after = &requests[g + 1..];
                let relist = after.iter().position(|r| r.outcome == Outcome::List);
                relist.is_some_and(|l| after[l + 1..].iter().any(|r| r.outcome == Outcome::Watch))
            })
        })
        .await;
    }
    // The Services and slices relisted unchanged: that published nothing. One more change
    // flushes any rebuild still pending, so a spurious publication would be counted by now.
    fake.apply(Kind::Pod, pod("api-3", "198.18.0.14"));
    source
        .until("pod added", |s| s.pods.contains_key(&key("api-3")))
        .await;
    assert_eq!(source.publications() - before, 2.0);
    fake.assert_no_problems();
    source.stop().await;
}

#[tokio::test]
async fn a_refused_object_keeps_its_last_good_version_and_blocks_nothing() {
    let fake = cluster().await;
    fake.apply(Kind::Service, service("broken", "not-an-ip"));
    fake.apply(Kind::EndpointSlice, slice("orphan", None, &["198.18.0.20"]));
    let mut source = Running::start(&fake);
    let snapshot = source.until("synced", has_all).await;
    assert!(!snapshot.services.contains_key(&key("broken")));
    assert!(!snapshot.endpoint_slices.contains_key(&key("orphan")));
    assert_eq!(source.metric(REFUSED), 2.0);

    // A bad change to a good Service: the good version stays; other changes still flow.
    fake.apply(Kind::Service, service("api", "not-an-ip"));
    fake.apply(Kind::Pod, pod("api-2", "198.18.0.13"));
    let snapshot = source
        .until("pod added", |s| s.pods.contains_key(&key("api-2")))
        .await;
    eventually("the bad Service counted", || source.metric(REFUSED) == 3.0).await;
    let ip = |s: &Snapshot| {
        s.services[&key("api")]
            .spec
            .as_ref()
            .expect("spec")
            .cluster_ip
            .clone()
    };
    assert_eq!(ip(&snapshot).as_deref(), Some("198.19.0.10"));

    // A relist brings the same bad versions again: not counted (or logged) twice.
    eventually("three watches open", || {
        Kind::ALL.iter().all(|k| fake.open_watches(*k) == 1)
    })
    .await;
    let lists = |k| fake.lists(k).len();
    let listed = Kind::ALL.map(lists);
    fake.expire_watches();
    for (kind, n) in Kind::ALL.into_iter().zip(listed) {
        eventually(&format!("{kind:?} relisted and watched"), || {
            lists(kind) > n && fake.open_watches(kind) == 1
        })
        .await;
    }
    fake.apply(Kind::Pod, pod("api-3", "198.18.0.14"));
    let snapshot = source
        .until("pod added", |s| s.pods.contains_key(&key("api-3")))
        .await;
    assert_eq!(source.metric(REFUSED), 3.0);
    assert_eq!(ip(&snapshot).as_deref(), Some("198.19.0.10"));

    // Fixed: the new version takes over.
    fake.apply(Kind::Service, service("api", "198.19.0.20"));
    source
        .until("fixed Service", |s| ip(s).as_deref() == Some("198.19.0.20"))
        .await;

    // Broken again, then deleted: the last good version does not outlive the object.
    fake.apply(Kind::Service, service("api", "not-an-ip"));
    fake.apply(Kind::Pod, pod("api-4", "198.18.0.15"));
    source
        .until("pod added", |s| s.pods.contains_key(&key("api-4")))
        .await;
    eventually("the bad Service counted", || source.metric(REFUSED) == 4.0).await;
    fake.delete(Kind::Service, NS, "api");
    source
        .until("Service deleted", |s| s.services.is_empty())
        .await;
    fake.assert_no_problems();
    source.stop().await;
}

#[tokio::test]
async fn an_api_server_outage_keeps_the_last_snapshot_and_catches_up() {
    let fake = cluster().await;
    let mut source = Running::start(&fake);
    let synced = source.until("synced", has_all).await;
    eventually("three watches open", || {
        Kind::ALL.iter().all(|k| fake.open_watches(*k) == 1)
    })
    .await;

    fake.set_down(true);
    eventually("the watchers retried against the down server", || {
        fake.refused_connections() >= 3
    })
    .await;
    // Changed while down: nobody can see it yet, and the snapshot in force stays.
    fake.apply(Kind::Pod, pod("api-2", "198.18.0.13"));
    assert!(!source.rx.has_changed().expect("source running"));
    assert!(Arc::ptr_eq(&source.rx.borrow(), &synced));

    fake.set_down(false);
    source
        .until("the change made while down", |s| {
            s.pods.contains_key(&key("api-2"))
        })
        .await;
    fake.apply(Kind::Pod, pod("api-3", "198.18.0.14"));
    source
        .until("a change after the outage", |s| {
            s.pods.contains_key(&key("api-3"))
        })
        .await;
    // Resumed from where they were: the history was still there, so no relist.
    assert_eq!(fake.lists(Kind::Pod).len(), 2, "two pages, once");
    fake.assert_no_problems();
    source.stop().await;
}

#[tokio::test]
async fn shutdown_ends_run_promptly() {
    // While still listing.
    let fake = cluster().await;
    fake.hold_lists(Kind::Pod);
    let source = Running::start(&fake);
    eventually("Services watched", || {
        !fake.watches(Kind::Service).is_empty()
    })
    .await;
    source.stop().await;

    // While watching.
    fake.release_lists();
    let mut source = Running::start(&fake);
    source.until("synced", has_all).await;
    source.stop().await;

    // While backing off from a down server.
    let mut source = Running::start(&fake);
    source.until("synced", has_all).await;
    let refused = fake.refused_connections();
    fake.set_down(true);
    eventually("a retry refused", || fake.refused_connections() > refused).await;
    source.stop().await;
}
