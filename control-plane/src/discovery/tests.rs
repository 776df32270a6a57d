use std::time::Duration;

use weft_control_plane_config::yaml::load_text;

use super::*;
use crate::hub::Subscriber;

fn snapshot(yaml: &str) -> Arc<Snapshot> {
    Arc::new(load_text(std::path::Path::new("c.yaml"), yaml).expect("valid"))
}

fn service(endpoints: &[&str]) -> String {
    let eps: Vec<String> = endpoints
        .iter()
        .map(|a| format!("  - addresses: [{a}]\n"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: api, namespace: shop}}\n\
         spec: {{clusterIP: 198.19.0.10, ports: [{{port: 80}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: api-1, namespace: shop, labels: {{kubernetes.io/service-name: api}}}}\n\
         addressType: IPv4\nports: [{{port: 8080}}]\nendpoints:\n{}",
        eps.concat()
    )
}

fn hub(yaml: &str) -> (Arc<Hub<Endpoints>>, crate::metrics::Metrics) {
    let metrics = crate::metrics::Metrics::new().expect("metrics");
    let hub = Hub::new(
        Endpoints::new("cluster.local"),
        snapshot(yaml),
        metrics.discovery.clone(),
    );
    (hub, metrics)
}

fn subscriber(hub: &Arc<Hub<Endpoints>>, target: &str) -> Subscriber<Endpoints> {
    let rx = hub
        .subscribe(Target::parse(target, "cluster.local").expect("target"))
        .expect("subscribed");
    Subscriber::new(hub.clone(), rx, CancellationToken::new())
}

async fn next(s: &mut Subscriber<Endpoints>) -> Option<pb::Update> {
    tokio::time::timeout(Duration::from_millis(200), s.next())
        .await
        .ok()
        .flatten()
}

#[tokio::test]
async fn the_first_update_is_whole_then_changes_come_as_deltas_once() {
    let (hub, metrics) = hub(&service(&["198.18.0.11", "198.18.0.12"]));
    let mut a = subscriber(&hub, "198.19.0.10:80");
    let mut b = subscriber(&hub, "api.shop.svc.cluster.local:80");
    for s in [&mut a, &mut b] {
        let first = next(s).await.expect("first update");
        let Some(pb::update::Kind::Snapshot(snap)) = first.kind else {
            panic!("{first:?}")
        };
        assert_eq!(snap.endpoints.len(), 2);
    }
    // An unchanged snapshot sends nothing.
    hub.apply(snapshot(&service(&["198.18.0.11", "198.18.0.12"])));
    assert_eq!(next(&mut a).await, None);

    hub.apply(snapshot(&service(&["198.18.0.11"])));
    for s in [&mut a, &mut b] {
        let update = next(s).await.expect("a change");
        let Some(pb::update::Kind::Delta(delta)) = &update.kind else {
            panic!("{update:?}")
        };
        assert_eq!(delta.removed, ["198.18.0.12:8080"]);
        assert!(delta.upserts.is_empty());
        assert_eq!(next(s).await, None, "once");
    }
    let text = metrics.encode();
    assert!(
        text.contains("weft_discovery_updates_pushed_total{kind=\"delta\"} 2"),
        "{text}"
    );
    assert!(text.contains("weft_discovery_subscribers 2"), "{text}");
    assert!(
        text.contains("weft_discovery_push_latency_seconds_count 4"),
        "{text}"
    );
    drop((a, b));
    assert!(metrics.encode().contains("weft_discovery_subscribers 0"));
}

#[tokio::test]
async fn a_burst_of_changes_reaches_a_slow_reader_as_one_update() {
    let (hub, _metrics) = hub(&service(&["198.18.0.11"]));
    let mut a = subscriber(&hub, "198.19.0.10:80");
    next(&mut a).await.expect("first");
    for n in 12..30 {
        hub.apply(snapshot(&service(&[
            "198.18.0.11",
            &format!("198.18.0.{n}"),
        ])));
    }
    let update = next(&mut a).await.expect("the latest");
    let Some(pb::update::Kind::Delta(delta)) = &update.kind else {
        panic!("{update:?}")
    };
    assert_eq!(delta.upserts.len(), 1);
    assert_eq!(delta.upserts[0].address, "198.18.0.29:8080");
    assert_eq!(next(&mut a).await, None);

    // A change and its reversal, both unseen, send nothing.
    hub.apply(snapshot(&service(&["198.18.0.11"])));
    hub.apply(snapshot(&service(&["198.18.0.11", "198.18.0.29"])));
    assert_eq!(next(&mut a).await, None);
}

#[tokio::test]
async fn a_service_appearing_later_reaches_its_early_subscribers() {
    let (hub, _metrics) = hub("");
    let mut a = subscriber(&hub, "198.19.0.10:80");
    let first = next(&mut a).await.expect("first");
    assert!(matches!(first.kind, Some(pb::update::Kind::NotAService(_))));
    hub.apply(snapshot(&service(&["198.18.0.11"])));
    let update = next(&mut a).await.expect("now a service");
    assert!(matches!(update.kind, Some(pb::update::Kind::Snapshot(_))));
    assert!(update.version > first.version);
}

#[tokio::test]
async fn targets_nobody_watches_are_forgotten() {
    let (hub, metrics) = hub(&service(&["198.18.0.11"]));
    let a = subscriber(&hub, "198.19.0.10:80");
    let b = subscriber(&hub, "198.19.0.99:80");
    assert!(metrics.encode().contains("weft_discovery_destinations 2"));
    drop(b);
    hub.apply(snapshot(&service(&["198.18.0.12"])));
    assert!(metrics.encode().contains("weft_discovery_destinations 1"));
    drop(a);
}

#[tokio::test]
async fn shutdown_ends_every_stream() {
    let (hub, _metrics) = hub(&service(&["198.18.0.11"]));
    let mut a = subscriber(&hub, "198.19.0.10:80");
    next(&mut a).await.expect("first");
    a.cancel();
    assert_eq!(a.next().await, None);
}
