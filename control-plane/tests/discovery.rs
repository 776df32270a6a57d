//! The destination service end to end: the real `weft-control-plane` binary reading a local
//! folder of Kubernetes YAML, and a client that watches destinations as a proxy does.

mod support;

use std::{path::Path, process::Command, time::Duration};

use hyper_util::rt::TokioIo;
use support::{client_config, cp_id, tls_connect, write_atomic, ControlPlane, Pki, Tokens};
use tonic::{Code, Streaming};
use weft_api::{
    client::H2Connection,
    destination::{self as pb, destination_client::DestinationClient},
};
use weft_testkit::assert_eventually;

fn service(endpoints: &[&str]) -> String {
    let eps: String = endpoints
        .iter()
        .map(|a| format!("  - addresses: [{a}]\n    targetRef: {{kind: Pod, name: api-{}, namespace: shop}}\n", a.replace('.', "-")))
        .collect();
    let pods: String = endpoints
        .iter()
        .map(|a| {
            format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: api-{}, namespace: shop}}\n\
                 spec:\n  serviceAccountName: api\n  containers:\n  - {{name: app, image: x}}\n  - {{name: weft-proxy, image: y}}\n\
                 status: {{podIP: {a}}}\n",
                a.replace('.', "-")
            )
        })
        .collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: api, namespace: shop}}\n\
         spec: {{clusterIP: 198.19.0.10, ports: [{{name: http, port: 80}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: api-1, namespace: shop, labels: {{kubernetes.io/service-name: api}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints:\n{eps}{pods}"
    )
}

async fn start(pki: &Pki, config: &Path) -> ControlPlane {
    let source = format!("local:{}", config.display());
    ControlPlane::start(
        pki,
        Tokens::File(&pki.tokens_path()),
        &["--source", &source, "--config-poll-interval", "50ms"],
    )
    .await
}

async fn client(cp: &ControlPlane, pki: &Pki) -> DestinationClient<H2Connection> {
    let tls = tls_connect(cp.grpc, client_config(&pki.bundle_pem(), &cp_id()))
        .await
        .expect("TLS to the control plane");
    let conn = H2Connection::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP/2");
    DestinationClient::with_origin(conn, "https://control-plane".parse().expect("origin"))
}

async fn watch(
    client: &mut DestinationClient<H2Connection>,
    target: &str,
) -> Result<Streaming<pb::Update>, tonic::Status> {
    watch_request(
        client,
        pb::WatchRequest {
            target: target.into(),
            proxy_id: "spiffe://cluster.local/ns/test/sa/test".into(),
            service: None,
        },
    )
    .await
}

/// A watch by Service name (`WatchRequest.service`), as a proxy that does not know the
/// cluster's DNS domain asks; `target` only names it for logs.
async fn watch_service(
    client: &mut DestinationClient<H2Connection>,
    namespace: &str,
    name: &str,
    port: u32,
) -> Result<Streaming<pb::Update>, tonic::Status> {
    watch_request(
        client,
        pb::WatchRequest {
            target: format!("{name}.{namespace}.svc:{port}"),
            proxy_id: "spiffe://cluster.local/ns/test/sa/test".into(),
            service: Some(pb::ServiceRef {
                namespace: namespace.into(),
                name: name.into(),
                port,
            }),
        },
    )
    .await
}

async fn watch_request(
    client: &mut DestinationClient<H2Connection>,
    req: pb::WatchRequest,
) -> Result<Streaming<pb::Update>, tonic::Status> {
    tokio::time::timeout(Duration::from_secs(5), client.watch(req))
        .await
        .expect("answered")
        .map(|r| r.into_inner())
}

async fn next(stream: &mut Streaming<pb::Update>, patience: Duration) -> Option<pb::Update> {
    tokio::time::timeout(patience, stream.message())
        .await
        .ok()
        .and_then(|r| r.expect("stream ok"))
}

fn addresses(eps: &[pb::Endpoint]) -> Vec<&str> {
    let mut v: Vec<&str> = eps.iter().map(|e| e.address.as_str()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_watch_gets_the_endpoints_then_each_yaml_change_once() {
    let pki = Pki::new(1);
    let config = pki.path("config");
    std::fs::create_dir(&config).expect("mkdir");
    write_atomic(
        &config.join("api.yaml"),
        &service(&["198.18.0.11", "198.18.0.12"]),
    );
    let cp = start(&pki, &config).await;
    let mut client = client(&cp, &pki).await;

    let mut by_ip = watch(&mut client, "198.19.0.10:80").await.expect("watch");
    let mut by_name = watch(&mut client, "api.shop.svc.cluster.local:80")
        .await
        .expect("watch");
    let mut by_ref = watch_service(&mut client, "shop", "api", 80)
        .await
        .expect("watch");
    for stream in [&mut by_ip, &mut by_name, &mut by_ref] {
        let first = next(stream, Duration::from_secs(5)).await.expect("first");
        let Some(pb::update::Kind::Snapshot(snap)) = first.kind else {
            panic!("{first:?}")
        };
        assert_eq!(
            addresses(&snap.endpoints),
            ["198.18.0.11:8080", "198.18.0.12:8080"]
        );
        let mesh = snap.endpoints[0].mesh.as_ref().expect("meshed pod");
        assert_eq!(mesh.identity, "spiffe://cluster.local/ns/shop/sa/api");
        assert_eq!(mesh.inbound_port, 15143);
        assert_eq!(snap.service.as_ref().map(|s| s.name.as_str()), Some("api"));
    }
    let mut unknown = watch(&mut client, "198.19.0.99:80").await.expect("watch");
    let first = next(&mut unknown, Duration::from_secs(5))
        .await
        .expect("first");
    assert!(matches!(first.kind, Some(pb::update::Kind::NotAService(_))));
    assert_eq!(cp.metric_now("weft_discovery_subscribers").await, 4.0);
    // The name and the ref are one target, the cluster IP another, the unknown IP a third.
    assert_eq!(cp.metric_now("weft_discovery_destinations").await, 3.0);

    // An endpoint removed from the YAML: one delta to each subscriber of the Service.
    write_atomic(&config.join("api.yaml"), &service(&["198.18.0.11"]));
    for stream in [&mut by_ip, &mut by_name, &mut by_ref] {
        let update = next(stream, Duration::from_secs(5))
            .await
            .expect("a change");
        let Some(pb::update::Kind::Delta(delta)) = update.kind else {
            panic!("{update:?}")
        };
        assert_eq!(delta.removed, ["198.18.0.12:8080"]);
        assert!(update.version > first.version);
    }

    // An invalid edit: refused, named in the log, counted, and nothing reaches a proxy.
    write_atomic(
        &config.join("api.yaml"),
        &service(&["198.18.0.11"]).replace("port: 8080", "port: 80800"),
    );
    assert_eventually!(
        cp.metric("weft_config_refused_documents_total{source=\"local\"}")
            .await
            == Some(1.0),
        "the bad edit is counted"
    );
    assert_eventually!(
        cp.logs()
            .contains("api.yaml document 1 field ports[0].port: 80800 is not a port"),
        "the log names file, document, field and reason"
    );
    assert_eq!(next(&mut by_ip, Duration::from_millis(300)).await, None);

    // Fixed: the next change flows.
    write_atomic(
        &config.join("api.yaml"),
        &service(&["198.18.0.11", "198.18.0.13"]),
    );
    let update = next(&mut by_ip, Duration::from_secs(5))
        .await
        .expect("a change");
    let Some(pb::update::Kind::Delta(delta)) = update.kind else {
        panic!("{update:?}")
    };
    assert_eq!(addresses(&delta.upserts), ["198.18.0.13:8080"]);
    assert!(delta.removed.is_empty());
    assert!(
        cp.metric_now("weft_discovery_push_latency_seconds_count")
            .await
            >= 7.0
    );

    drop((by_ip, by_name, by_ref, unknown));
    assert_eventually!(
        cp.metric("weft_discovery_subscribers").await == Some(0.0),
        "closed streams are counted out"
    );
}

#[tokio::test]
async fn a_large_answer_arrives_whole_through_small_first_buffers() {
    // 400 meshed endpoints: a first update of tens of KiB, far past the codec's first buffer
    // (weft_api::codec::INITIAL_BUFFER) on both sides, then a small delta on the grown ones.
    let ips: Vec<String> = (0..400)
        .map(|i| format!("198.18.{}.{}", i / 250, i % 250 + 1))
        .collect();
    let all: Vec<&str> = ips.iter().map(String::as_str).collect();
    let pki = Pki::new(1);
    let config = pki.path("config");
    std::fs::create_dir(&config).expect("mkdir");
    write_atomic(&config.join("api.yaml"), &service(&all));
    let cp = start(&pki, &config).await;
    let mut client = client(&cp, &pki).await;
    let mut stream = watch(&mut client, "198.19.0.10:80").await.expect("watch");
    let first = next(&mut stream, Duration::from_secs(5))
        .await
        .expect("first");
    assert!(
        prost::Message::encoded_len(&first) > 16 * weft_api::codec::INITIAL_BUFFER,
        "a large first update"
    );
    let Some(pb::update::Kind::Snapshot(snap)) = first.kind else {
        panic!("{first:?}")
    };
    assert_eq!(snap.endpoints.len(), 400);
    assert!(snap.endpoints.iter().all(|e| e.mesh.is_some()));

    write_atomic(&config.join("api.yaml"), &service(&all[1..]));
    let update = next(&mut stream, Duration::from_secs(5))
        .await
        .expect("a change");
    let Some(pb::update::Kind::Delta(delta)) = update.kind else {
        panic!("{update:?}")
    };
    assert_eq!(delta.removed, ["198.18.0.1:8080"]);
}

#[tokio::test]
async fn a_malformed_target_or_service_ref_is_invalid_argument() {
    let pki = Pki::new(1);
    let config = pki.path("config");
    std::fs::create_dir(&config).expect("mkdir");
    let cp = start(&pki, &config).await;
    let mut client = client(&cp, &pki).await;
    for bad in ["", "web", "web.shop:80", "198.18.0.1:0", &"x".repeat(1000)] {
        let e = watch(&mut client, bad).await.expect_err(bad);
        assert_eq!(e.code(), Code::InvalidArgument, "{bad}: {e}");
        assert!(e.message().contains("target"), "{e}");
    }
    for (namespace, name, port) in [("shop", "api", 0), ("shop", "API", 80), ("", "api", 80)] {
        let e = watch_service(&mut client, namespace, name, port)
            .await
            .expect_err(name);
        assert_eq!(
            e.code(),
            Code::InvalidArgument,
            "{namespace}/{name}:{port}: {e}"
        );
        assert!(e.message().contains("target"), "{e}");
    }
    // A Service the config does not hold, asked for by name: not a Service, like by IP.
    let mut missing = watch_service(&mut client, "shop", "nope", 80)
        .await
        .expect("watch");
    let first = next(&mut missing, Duration::from_secs(5))
        .await
        .expect("first");
    assert!(matches!(first.kind, Some(pb::update::Kind::NotAService(_))));
}

#[tokio::test]
async fn an_invalid_folder_at_start_is_an_error_naming_every_problem() {
    let pki = Pki::new(1);
    let config = pki.path("config");
    std::fs::create_dir(&config).expect("mkdir");
    std::fs::write(
        config.join("a.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {clusterIP: nope}\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_weft-control-plane"))
        .env_clear()
        .arg("--issuer")
        .arg(pki.issuer_dir())
        .arg("--tokens")
        .arg(pki.tokens_path())
        .arg("--source")
        .arg(format!("local:{}", config.display()))
        .args(["--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64), "configuration: exit 64");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("a.yaml document 0 field spec.clusterIP"),
        "{stderr}"
    );
}

#[tokio::test]
async fn with_kubernetes_the_index_fills_from_list_and_watch_and_identities_come_from_pods() {
    use serde_json::json;
    use weft_testkit::{FakeKube, Kind};

    let api = FakeKube::start();
    api.hold_lists(Kind::Pod);
    api.apply(
        Kind::Service,
        json!({"metadata": {"name": "api", "namespace": "shop"},
               "spec": {"clusterIP": "198.19.0.10", "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
    );
    api.apply(
        Kind::EndpointSlice,
        json!({"metadata": {"name": "api-1", "namespace": "shop", "labels": {"kubernetes.io/service-name": "api"}},
               "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
               "endpoints": [{"addresses": ["198.18.0.11"], "conditions": {"ready": true},
                              "targetRef": {"kind": "Pod", "name": "api-a", "namespace": "shop"}}]}),
    );
    api.apply(
        Kind::Pod,
        json!({"metadata": {"name": "api-a", "namespace": "shop"},
               "spec": {"serviceAccountName": "api-sa",
                        "containers": [{"name": "app", "image": "a"}, {"name": "weft-proxy", "image": "p"}]},
               "status": {"podIP": "198.18.0.11", "phase": "Running"}}),
    );
    let pki = Pki::new(1);
    let kubeconfig = api.kubeconfig(pki.dir.path());
    let cp = ControlPlane::start(
        &pki,
        Tokens::Kube {
            kubeconfig: &kubeconfig,
        },
        &["--source", "kubernetes"],
    )
    .await;
    let mut client = client(&cp, &pki).await;

    // Pods not listed yet: the index is not in sync, so a watch is told to retry, not that no
    // Service exists.
    let e = watch(&mut client, "198.19.0.10:80")
        .await
        .expect_err("not in sync");
    assert_eq!(e.code(), Code::Unavailable, "{e}");

    api.release_lists();
    let mut stream: Option<Streaming<pb::Update>>;
    assert_eventually!(
        {
            stream = watch(&mut client, "198.19.0.10:80").await.ok();
            stream.is_some()
        },
        "the control plane syncs once every list is done"
    );
    let mut stream = stream.expect("stream");
    let first = next(&mut stream, Duration::from_secs(5))
        .await
        .expect("first");
    let Some(pb::update::Kind::Snapshot(snap)) = first.kind else {
        panic!("{first:?}")
    };
    assert_eq!(addresses(&snap.endpoints), ["198.18.0.11:8080"]);
    assert_eq!(
        snap.endpoints[0].mesh.as_ref().map(|m| m.identity.as_str()),
        Some("spiffe://cluster.local/ns/shop/sa/api-sa")
    );

    // A watch event: a second endpoint, with no pod known (plaintext).
    api.apply(
        Kind::EndpointSlice,
        json!({"metadata": {"name": "api-1", "namespace": "shop", "labels": {"kubernetes.io/service-name": "api"}},
               "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
               "endpoints": [{"addresses": ["198.18.0.11"], "targetRef": {"kind": "Pod", "name": "api-a", "namespace": "shop"}},
                             {"addresses": ["198.18.0.12"]}]}),
    );
    let update = next(&mut stream, Duration::from_secs(10))
        .await
        .expect("a change");
    let Some(pb::update::Kind::Delta(delta)) = update.kind else {
        panic!("{update:?}")
    };
    assert_eq!(addresses(&delta.upserts), ["198.18.0.12:8080"]);
    assert!(delta.upserts[0].mesh.is_none());
}
