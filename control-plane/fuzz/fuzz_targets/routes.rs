//! Route documents after a fixed set of Services, as a folder holding both reads: never a
//! panic; the route index, the conditions and the split statuses of any snapshot that reads
//! are well formed, and the index answers the same when built twice.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use weft_control_plane_config::{
    index::Target,
    routes::{route_statuses, split_statuses, RouteIndex, RouteTarget},
    yaml::load_text,
};

/// Services the routes may attach to and send to, in two namespaces.
const SERVICES: &str = "\
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec: {clusterIP: 198.19.0.10, ports: [{name: http, port: 80}, {name: grpc, port: 9090}]}
---
apiVersion: v1
kind: Service
metadata: {name: v1, namespace: shop}
spec: {clusterIP: 198.19.0.11, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: other}
spec: {clusterIP: 198.19.1.10, ports: [{port: 80}]}
---
";

fuzz_target!(|data: &[u8]| {
    let Ok(routes) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(snapshot) = load_text(Path::new("routes.yaml"), &format!("{SERVICES}{routes}")) else {
        return;
    };
    let (a, b) = (RouteIndex::new(&snapshot), RouteIndex::new(&snapshot));
    let statuses = route_statuses(&snapshot);
    assert_eq!(statuses.len(), snapshot.http_routes.len());
    for status in &statuses {
        for parent in &status.parents {
            assert_eq!(parent.conditions.len(), 2, "{status:?}");
        }
    }
    assert_eq!(
        split_statuses(&snapshot).len(),
        snapshot.traffic_splits.len()
    );
    let clients = [None, Some("shop"), Some("other"), Some("client")];
    for (ns, name, port) in [
        ("shop", "api", 80),
        ("shop", "api", 9090),
        ("other", "api", 80),
    ] {
        for client in clients {
            let target = RouteTarget {
                service: Target::Name {
                    namespace: ns.into(),
                    name: name.into(),
                    port,
                },
                client_namespace: client.map(str::to_string),
                client_service_account: client.map(|_| "default".to_string()),
            };
            let table = a.answer(&target);
            weft_control_plane_fuzz::check_table(&table);
            assert_eq!(
                table,
                b.answer(&target),
                "the same snapshot, another answer"
            );
        }
    }
});
