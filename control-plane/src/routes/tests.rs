use std::time::Duration;

use weft_control_plane_config::{index::Target, yaml::load_text};

use super::*;
use crate::hub::Subscriber;

fn snapshot(yaml: &str) -> Arc<Snapshot> {
    Arc::new(load_text(std::path::Path::new("c.yaml"), yaml).expect("valid"))
}

/// Service `shop/api` and its versions, and an HTTPRoute splitting it `v1`/`v2`.
fn config(v1: u32, v2: u32) -> String {
    let svc = |name: &str, ip: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\n\
             spec: {{clusterIP: {ip}, ports: [{{port: 80}}]}}\n---\n"
        )
    };
    format!(
        "{}{}{}apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {{name: api, namespace: shop}}\n\
         spec:\n  parentRefs: [{{group: '', kind: Service, name: api}}]\n\
         \x20 rules: [{{backendRefs: [{{name: api-v1, port: 80, weight: {v1}}}, {{name: api-v2, port: 80, weight: {v2}}}]}}]\n",
        svc("api", "198.19.0.10"),
        svc("api-v1", "198.19.0.11"),
        svc("api-v2", "198.19.0.12"),
    )
}

fn subscriber(hub: &Arc<Hub<Routes>>, client: Option<&str>) -> Subscriber<Routes> {
    let target = RouteTarget {
        service: Target::Addr("198.19.0.10:80".parse().expect("addr")),
        client_namespace: client.map(str::to_string),
        client_service_account: None,
    };
    let rx = hub.subscribe(target).expect("subscribed");
    Subscriber::new(hub.clone(), rx, CancellationToken::new())
}

async fn next(s: &mut Subscriber<Routes>) -> Option<pb::Update> {
    tokio::time::timeout(Duration::from_millis(200), s.next())
        .await
        .ok()
        .flatten()
}

fn weights(update: &pb::Update) -> Vec<u32> {
    let Some(pb::update::Kind::Table(table)) = &update.kind else {
        panic!("{update:?}")
    };
    table.rules[0].backends.iter().map(|b| b.weight).collect()
}

#[tokio::test]
async fn the_table_comes_whole_then_again_on_each_change_only() {
    let metrics = crate::metrics::Metrics::new().expect("metrics");
    let hub = Hub::new(Routes, snapshot(&config(90, 10)), metrics.routes.clone());
    let mut a = subscriber(&hub, None);
    let first = next(&mut a).await.expect("first");
    assert_eq!(weights(&first), [90, 10]);

    // A change to something else (a new Service) sends nothing.
    let other = format!(
        "{}---\napiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: shop}}\nspec: {{ports: [{{port: 80}}]}}\n",
        config(90, 10)
    );
    hub.apply(snapshot(&other));
    assert_eq!(next(&mut a).await, None);

    hub.apply(snapshot(&config(0, 100)));
    let update = next(&mut a).await.expect("a change");
    assert_eq!(weights(&update), [0, 100]);
    assert!(update.version > first.version);
    let text = metrics.encode();
    assert!(
        text.contains("weft_routes_updates_pushed_total{kind=\"table\"} 2"),
        "{text}"
    );
    assert!(text.contains("weft_routes_subscribers 1"), "{text}");
    // The destination service's series are its own.
    assert!(text.contains("weft_discovery_subscribers 0"), "{text}");
}
