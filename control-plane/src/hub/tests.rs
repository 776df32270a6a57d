//! The hub's guarantees with a kind of answer other than endpoints: what a second service
//! (routes, policy) gets for free.

use std::{
    collections::{HashMap, HashSet},
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use futures_util::StreamExt;
use weft_control_plane_config::{model::changed, yaml::load_text};

use super::*;

/// A toy kind of answer: how many Services a namespace holds. Counts its lookups; a change
/// touches the namespaces whose Services changed.
#[derive(Debug, Default)]
struct ServiceCount {
    lookups: AtomicUsize,
}

impl Answers for ServiceCount {
    type Target = String;
    type Index = HashMap<String, usize>;
    type Answer = usize;
    /// (version, count, whole?)
    type Update = (u64, usize, bool);
    /// Namespaces whose Services changed.
    type Changes = HashSet<String>;

    const KINDS: &'static [&'static str] = &["whole", "change"];

    fn index(&self, snapshot: Arc<Snapshot>) -> Self::Index {
        let mut counts = HashMap::new();
        for (namespace, _) in snapshot.services.keys() {
            *counts.entry(namespace.clone()).or_default() += 1;
        }
        counts
    }

    fn answer(&self, index: &Self::Index, target: &String) -> usize {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        index.get(target).copied().unwrap_or(0)
    }

    fn whole(&self, answer: &usize, version: u64) -> Self::Update {
        (version, *answer, true)
    }

    fn since(&self, new: &usize, old: &usize, version: u64) -> Option<Self::Update> {
        (new != old).then_some((version, *new, false))
    }

    fn kind(update: &Self::Update) -> &'static str {
        if update.2 {
            "whole"
        } else {
            "change"
        }
    }

    fn changes(&self, old: &Snapshot, new: &Snapshot) -> Option<HashSet<String>> {
        let namespaces: HashSet<String> = changed(&old.services, &new.services)
            .map(|(key, ..)| key.0.clone())
            .collect();
        (!namespaces.is_empty()).then_some(namespaces)
    }

    fn touched(
        &self,
        changes: &HashSet<String>,
        _: &Self::Index,
        _: &Self::Index,
        target: &String,
    ) -> bool {
        changes.contains(target)
    }
}

/// Services named `names` in namespace `shop`, one in `bank`.
fn snapshot(names: &[&str]) -> Arc<Snapshot> {
    let mut yaml: String = names
        .iter()
        .map(|n| {
            format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {n}, namespace: shop}}\nspec: {{ports: [{{port: 80}}]}}\n---\n")
        })
        .collect();
    yaml.push_str("apiVersion: v1\nkind: Service\nmetadata: {name: vault, namespace: bank}\nspec: {ports: [{port: 80}]}\n");
    Arc::new(load_text(std::path::Path::new("c.yaml"), &yaml).expect("valid"))
}

fn hub(names: &[&str]) -> (Arc<Hub<ServiceCount>>, crate::metrics::Metrics) {
    let metrics = crate::metrics::Metrics::new().expect("metrics");
    let hub = Hub::new(
        ServiceCount::default(),
        snapshot(names),
        metrics.discovery.clone(),
    );
    (hub, metrics)
}

async fn next(stream: &mut UpdateStream<(u64, usize, bool)>) -> Option<(u64, usize, bool)> {
    tokio::time::timeout(Duration::from_millis(200), stream.next())
        .await
        .ok()
        .flatten()
        .map(|r| r.expect("ok"))
}

#[tokio::test]
async fn each_touched_target_is_looked_up_once_per_snapshot_whoever_watches_it() {
    let (hub, metrics) = hub(&["api"]);
    let shutdown = CancellationToken::new();
    let mut shop: Vec<_> = (0..3)
        .map(|_| hub.watch("shop".into(), shutdown.clone()).expect("watch"))
        .collect();
    let mut bank = hub.watch("bank".into(), shutdown.clone()).expect("watch");
    assert_eq!(
        hub.kind().lookups.load(Ordering::Relaxed),
        2,
        "one per target"
    );
    for s in &mut shop {
        assert_eq!(next(s).await, Some((1, 1, true)));
    }
    assert_eq!(next(&mut bank).await, Some((1, 1, true)));

    hub.apply(snapshot(&["api", "web"]));
    assert_eq!(
        hub.kind().lookups.load(Ordering::Relaxed),
        3,
        "one for the touched target (shop), none for bank"
    );
    for s in &mut shop {
        assert_eq!(next(s).await, Some((2, 2, false)));
        assert_eq!(next(s).await, None, "once");
    }
    assert_eq!(
        next(&mut bank).await,
        None,
        "an unchanged answer sends nothing"
    );

    let text = metrics.encode();
    assert!(
        text.contains("weft_discovery_updates_pushed_total{kind=\"change\"} 3"),
        "{text}"
    );
    assert!(text.contains("weft_discovery_subscribers 4"), "{text}");
    assert!(text.contains("weft_discovery_destinations 2"), "{text}");

    // A target nobody watches any more is forgotten (and no longer looked up).
    drop(bank);
    hub.apply(snapshot(&["api"]));
    assert_eq!(hub.kind().lookups.load(Ordering::Relaxed), 4);
    let text = metrics.encode();
    assert!(text.contains("weft_discovery_destinations 1"), "{text}");
    assert!(text.contains("weft_discovery_subscribers 3"), "{text}");

    for s in &mut shop {
        assert_eq!(next(s).await, Some((3, 1, false)));
    }
    shutdown.cancel();
    for s in &mut shop {
        assert_eq!(next(s).await, None, "shutdown ends every stream");
    }
}

#[tokio::test]
async fn a_watch_before_the_source_is_in_sync_is_told_to_retry() {
    let (hub, _metrics) = hub(&[]);
    hub.set_synced(false);
    let e = hub
        .watch("shop".into(), CancellationToken::new())
        .err()
        .expect("refused");
    assert_eq!(e, WatchError::NotSynced);
    assert_eq!(tonic::Status::from(e).code(), tonic::Code::Unavailable);

    let (tx, rx) = watch::channel(snapshot(&["api"]));
    let shutdown = CancellationToken::new();
    let work = crate::config_thread::ConfigThread::start().expect("config thread");
    let follower = tokio::spawn(hub.clone().follow(rx, work, shutdown.clone()));
    tx.send_modify(|_| {});
    let mut stream;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(s) = hub.watch("shop".into(), shutdown.clone()) {
            stream = s;
            break;
        }
        assert!(
            Instant::now() < deadline,
            "in sync after the first snapshot"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(next(&mut stream).await, Some((2, 1, true)));
    shutdown.cancel();
    follower.await.expect("follower ends at shutdown");
}

#[test]
fn past_max_targets_new_targets_are_refused() {
    let (hub, _metrics) = hub(&[]);
    let mut held = Vec::with_capacity(MAX_TARGETS);
    for n in 0..MAX_TARGETS {
        held.push(hub.subscribe(n.to_string()).expect("room"));
    }
    let e = hub.subscribe("one more".into()).expect_err("full");
    assert_eq!(e, WatchError::Full);
    assert_eq!(
        tonic::Status::from(e).code(),
        tonic::Code::ResourceExhausted
    );
    // A target already watched still subscribes.
    assert!(hub.subscribe("0".into()).is_ok());
}

#[tokio::test]
async fn a_snapshot_that_changes_no_answer_is_not_indexed_nor_looked_up() {
    let (hub, _metrics) = hub(&["api"]);
    let shutdown = CancellationToken::new();
    let mut shop = hub.watch("shop".into(), shutdown.clone()).expect("watch");
    assert_eq!(next(&mut shop).await, Some((1, 1, true)));
    // The same Services, parsed again: new objects, equal content.
    hub.apply(snapshot(&["api"]));
    assert_eq!(hub.kind().lookups.load(Ordering::Relaxed), 1);
    assert_eq!(next(&mut shop).await, None);
    // The next real change is version 2: nothing was skipped over.
    hub.apply(snapshot(&["api", "web"]));
    assert_eq!(next(&mut shop).await, Some((2, 2, false)));
    assert_eq!(hub.kind().lookups.load(Ordering::Relaxed), 2);
}
