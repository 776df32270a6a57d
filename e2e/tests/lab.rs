//! The lab's building blocks for `weftctl lab up`: a pod at the address it asks for, and a
//! control plane fed the user's own YAML (an external config) rather than the lab's.

mod support;

use std::net::Ipv4Addr;

use weft_lab::{Cluster, ClusterOptions, PodSpec, HTTP_PORT};

#[test]
fn a_pod_gets_the_address_it_asks_for_and_the_control_plane_reads_external_yaml() {
    if !weft_lab::prereq::should_run("lab external config") {
        return;
    }
    let c = Cluster::with_options(ClusterOptions {
        external_config: true,
        ..ClusterOptions::default()
    })
    .expect("a cluster");
    let asked = Ipv4Addr::new(198, 18, 0, 77);
    // The config first: a meshed pod's proxy needs the control plane, and with an external
    // config nothing else writes the folder.
    let yaml = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: b
  namespace: shop
  annotations: {{weft.dev/injected: "0.1.0"}}
spec:
  serviceAccountName: api
  containers: [{{name: weft-proxy, ports: [{{name: weft-inbound, containerPort: 15143}}]}}]
status: {{podIP: {asked}}}
---
apiVersion: v1
kind: Service
metadata: {{name: api, namespace: shop}}
spec:
  clusterIP: 198.19.0.50
  ports: [{{name: http, port: 80, targetPort: {HTTP_PORT}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: api-x1
  namespace: shop
  labels: {{kubernetes.io/service-name: api}}
addressType: IPv4
endpoints:
  - addresses: [{asked}]
    conditions: {{ready: true}}
    targetRef: {{kind: Pod, name: b, namespace: shop}}
ports: [{{name: http, port: {HTTP_PORT}}}]
"#
    );
    c.write_config(&yaml)
        .expect("the control plane applies the YAML");
    let b = c
        .pod(
            PodSpec::new("shop", "b")
                .service_account("api")
                .meshed()
                .ip(asked),
        )
        .expect("pod b");
    assert_eq!(b.ip(), asked, "host-local gave the address asked for");
    let a = c
        .pod(PodSpec::new("shop", "a").service_account("web").meshed())
        .expect("pod a");
    // The lab wrote no config of its own for these pods: the Service is the external YAML's.
    assert!(
        !std::fs::read_to_string(c.config_dir().join("cluster.yaml"))
            .expect("the config")
            .contains("name: a\n")
    );
    let r = a
        .get((Ipv4Addr::new(198, 19, 0, 50), 80).into(), "/external")
        .expect("through the Service of the external YAML");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.field("pod"), Some("b"), "{r:?}");
    let api = weft_lab::spiffe_id("shop", "api");
    let labels = [("server_id", api.as_str()), ("tls", "true")];
    support::wait_for(&a, "one mTLS request to b", 1.0, |m| {
        m.sum("weft_requests_total", &labels)
    });
}
