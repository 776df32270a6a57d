//! The route service end to end: the real `weft-control-plane` binary reading a local folder
//! of Kubernetes YAML with HTTPRoutes, and clients that watch a Service's routes as a proxy
//! does, unauthenticated or with the certificate the control plane issued them.

mod support;

use std::{path::Path, sync::Arc, time::Duration};

use hyper_util::rt::TokioIo;
use support::{
    certify, client_config, cp_id, csr_for, id, tls_connect, write_atomic, ControlPlane, Pki,
    Tokens,
};
use tonic::{Code, Streaming};
use weft_api::{
    client::H2Connection,
    identity::identity_client::IdentityClient,
    route::{self as pb, routes_client::RoutesClient},
};
use weft_certs::{certified_key, CertStore};
use weft_testkit::assert_eventually;

const CLIENT_APP: &str = "tok-client-app-0123456789";
const OTHER_APP: &str = "tok-other-app-0123456789";

/// Services `shop/api`, `shop/api-v1`, `shop/api-v2`.
const SERVICES: &str = "\
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec: {clusterIP: 198.19.0.10, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: api-v1, namespace: shop}
spec: {clusterIP: 198.19.0.11, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: api-v2, namespace: shop}
spec: {clusterIP: 198.19.0.12, ports: [{name: http, port: 80}]}
";

/// The canary: HTTPRoute `shop/api` sending `v1` and `v2` shares to the two versions, and
/// `extra` documents after it.
fn canary(v1: u32, v2: u32, extra: &str) -> String {
    format!(
        "{SERVICES}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api, namespace: shop}}
spec:
  parentRefs: [{{group: '', kind: Service, name: api}}]
  rules:
  - backendRefs:
    - {{name: api-v1, port: 80, weight: {v1}}}
    - {{name: api-v2, port: 80, weight: {v2}}}
{extra}"
    )
}

/// A consumer route: namespace `client`'s clients of `shop/api` all go to `api-v2`.
const CONSUMER: &str = "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api-for-client, namespace: client}
spec:
  parentRefs: [{group: '', kind: Service, name: api, namespace: shop}]
  rules:
  - backendRefs: [{name: api-v2, namespace: shop, port: 80}]
";

async fn start(pki: &Pki, config: &Path) -> ControlPlane {
    pki.write_tokens(&format!("{CLIENT_APP} client app\n{OTHER_APP} other app\n"));
    let source = format!("local:{}", config.display());
    ControlPlane::start(
        pki,
        Tokens::File(&pki.tokens_path()),
        &["--source", &source, "--config-poll-interval", "50ms"],
    )
    .await
}

/// A route client over its own connection; with `cert`, presenting it as a proxy does.
async fn client(
    cp: &ControlPlane,
    pki: &Pki,
    cert: Option<Arc<CertStore>>,
) -> RoutesClient<H2Connection> {
    let mut config = (*client_config(&pki.bundle_pem(), &cp_id())).clone();
    if let Some(store) = cert {
        config.client_auth_cert_resolver = store;
    }
    let tls = tls_connect(cp.grpc, Arc::new(config))
        .await
        .expect("TLS to the control plane");
    let conn = H2Connection::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP/2");
    RoutesClient::with_origin(conn, "https://control-plane".parse().expect("origin"))
}

/// A certificate for `ns/sa`, as a proxy gets one: a token from the tokens file, `Certify`.
async fn certificate(
    cp: &ControlPlane,
    pki: &Pki,
    ns: &str,
    sa: &str,
    token: &str,
) -> Arc<CertStore> {
    let identity = id(ns, sa);
    let req = csr_for(&identity);
    let mut identity_client = cp.client(pki).await;
    let rsp = certify(
        &mut identity_client,
        &identity.to_string(),
        token,
        req.csr_der.clone(),
    )
    .await
    .expect("certified");
    let chain: Vec<Vec<u8>> = std::iter::once(rsp.leaf_certificate)
        .chain(rsp.intermediate_certificates)
        .collect();
    let store = CertStore::new();
    store.store(certified_key(&chain, &req.key, &support::provider()).expect("a usable key"));
    store
}

async fn watch(
    client: &mut RoutesClient<H2Connection>,
    target: &str,
) -> Result<Streaming<pb::Update>, tonic::Status> {
    let req = pb::WatchRequest {
        target: target.into(),
        proxy_id: "spiffe://cluster.local/ns/test/sa/test".into(),
        service: None,
    };
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

/// The first rule's backends of a table update, as `name weight`.
fn split(update: &pb::Update) -> Vec<String> {
    let Some(pb::update::Kind::Table(table)) = &update.kind else {
        panic!("{update:?}")
    };
    table.rules[0]
        .backends
        .iter()
        .map(|b| match &b.target {
            Some(pb::backend::Target::Service(s)) => format!("{} {}", s.name, b.weight),
            other => panic!("{other:?}"),
        })
        .collect()
}

fn rule_names(update: &pb::Update) -> Vec<String> {
    let Some(pb::update::Kind::Table(table)) = &update.kind else {
        panic!("{update:?}")
    };
    table.rules.iter().map(|r| r.name.clone()).collect()
}

#[tokio::test]
async fn a_canary_split_arrives_changes_live_and_a_bad_edit_keeps_the_last_good_table() {
    let pki = Pki::new(1);
    let config = pki.path("config");
    std::fs::create_dir(&config).expect("mkdir");
    write_atomic(&config.join("api.yaml"), &canary(90, 10, ""));
    let cp = start(&pki, &config).await;
    let mut client = client(&cp, &pki, None).await;

    let mut stream = watch(&mut client, "198.19.0.10:80").await.expect("watch");
    let first = next(&mut stream, Duration::from_secs(5))
        .await
        .expect("first");
    assert_eq!(split(&first), ["api-v1 90", "api-v2 10"]);
    let Some(pb::update::Kind::Table(table)) = &first.kind else {
        panic!("{first:?}")
    };
    assert_eq!(table.routes, ["httproute/shop/api"]);
    assert_eq!(table.service.as_ref().map(|s| s.port), Some(80));
    assert_eq!(cp.metric_now("weft_routes_subscribers").await, 1.0);

    // The weights edited: the new table arrives.
    write_atomic(&config.join("api.yaml"), &canary(0, 100, ""));
    let update = next(&mut stream, Duration::from_secs(5))
        .await
        .expect("a change");
    assert_eq!(split(&update), ["api-v1 0", "api-v2 100"]);
    assert!(update.version > first.version);

    // A route with a bad regex: refused by file, document, field and reason; nothing sent.
    let bad = "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: broken, namespace: shop}
spec:
  parentRefs: [{group: '', kind: Service, name: api}]
  rules: [{matches: [{path: {type: RegularExpression, value: '/items/(['}}]}]
";
    write_atomic(&config.join("api.yaml"), &canary(50, 50, bad));
    assert_eventually!(
        cp.logs()
            .contains("api.yaml document 4 field spec.rules[0].matches[0].path.value: not a regular expression"),
        "the log names file, document, field and reason"
    );
    assert_eq!(
        cp.metric_now("weft_config_refused_documents_total{source=\"local\"}")
            .await,
        1.0
    );
    assert_eq!(next(&mut stream, Duration::from_millis(300)).await, None);
    // A new watch gets the last good table too.
    let mut again = watch(&mut client, "198.19.0.10:80").await.expect("watch");
    let held = next(&mut again, Duration::from_secs(5))
        .await
        .expect("first");
    assert_eq!(split(&held), ["api-v1 0", "api-v2 100"]);

    // A backend of another namespace with no ReferenceGrant is refused the same way.
    let foreign = "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: foreign, namespace: shop}
spec:
  parentRefs: [{group: '', kind: Service, name: api-v1}]
  rules: [{backendRefs: [{name: ledger, namespace: payments, port: 80}]}]
";
    write_atomic(&config.join("api.yaml"), &canary(50, 50, foreign));
    assert_eventually!(
        cp.logs().contains(
            "api.yaml document 4 field spec.rules[0].backendRefs[0]: RefNotPermitted: Service payments/ledger"
        ),
        "a backend the folder may not reference is named"
    );
    assert_eq!(next(&mut stream, Duration::from_millis(300)).await, None);

    // Fixed: the next change flows.
    write_atomic(&config.join("api.yaml"), &canary(50, 50, ""));
    let update = next(&mut stream, Duration::from_secs(5))
        .await
        .expect("a change");
    assert_eq!(split(&update), ["api-v1 50", "api-v2 50"]);

    // The admin port shows each route's conditions.
    let (status, body) = weft_testkit::http::get(cp.admin, "/routes")
        .await
        .expect("GET /routes");
    assert_eq!(status, 200, "{body}");
    let view: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let route = view["httpRoutes"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["route"] == "shop/api"))
        .unwrap_or_else(|| panic!("shop/api in {body}"));
    let conditions = &route["parents"][0]["conditions"];
    assert_eq!(conditions[0]["type"], "Accepted", "{body}");
    assert_eq!(conditions[0]["status"], "True", "{body}");
    assert_eq!(conditions[1]["type"], "ResolvedRefs", "{body}");

    // A Service with no route, and an address that is no Service: empty tables.
    for target in ["198.19.0.11:80", "198.18.0.20:80"] {
        let mut s = watch(&mut client, target).await.expect("watch");
        let first = next(&mut s, Duration::from_secs(5)).await.expect("first");
        let Some(pb::update::Kind::Table(table)) = first.kind else {
            panic!("{first:?}")
        };
        assert!(
            table.rules.is_empty() && table.matches.is_empty(),
            "{target}"
        );
    }
    drop((stream, again));
    assert_eventually!(
        cp.metric("weft_routes_subscribers").await == Some(0.0),
        "closed streams are counted out"
    );
}

#[tokio::test]
async fn a_consumer_route_is_seen_only_by_clients_of_its_namespace() {
    let pki = Pki::new(1);
    let config = pki.path("config");
    std::fs::create_dir(&config).expect("mkdir");
    write_atomic(&config.join("api.yaml"), &canary(90, 10, CONSUMER));
    let cp = start(&pki, &config).await;

    let in_client = certificate(&cp, &pki, "client", "app", CLIENT_APP).await;
    let in_other = certificate(&cp, &pki, "other", "app", OTHER_APP).await;
    let mut consumer = client(&cp, &pki, Some(in_client)).await;
    let mut other = client(&cp, &pki, Some(in_other)).await;
    let mut anonymous = client(&cp, &pki, None).await;

    for (who, client, want) in [
        (
            "client",
            &mut consumer,
            "httproute/client/api-for-client/rule/0",
        ),
        ("other", &mut other, "httproute/shop/api/rule/0"),
        (
            "no certificate",
            &mut anonymous,
            "httproute/shop/api/rule/0",
        ),
    ] {
        let mut stream = watch(client, "198.19.0.10:80").await.expect("watch");
        let first = next(&mut stream, Duration::from_secs(5))
            .await
            .expect("first");
        assert_eq!(rule_names(&first), [want], "{who}");
    }
    // Three callers, two distinct tables but three targets (the client namespace is part of
    // what is watched).
    assert_eq!(cp.metric_now("weft_routes_targets").await, 3.0);

    // A certificate the anchors do not accept (another mesh's, or one expired after an
    // outage) proves nothing: producer routes. And it does not cost the connection: the
    // caller can still ask for a certificate on it.
    let foreign = Pki::new(1).new_issuer(0, Duration::from_secs(3600));
    let req = csr_for(&id("client", "app"));
    let signed = foreign
        .sign_csr(
            &req.csr_der,
            &id("client", "app"),
            Duration::from_secs(3600),
            time::OffsetDateTime::now_utc(),
        )
        .expect("signed");
    let store = CertStore::new();
    store.store(certified_key(&signed.chain_der, &req.key, &support::provider()).expect("key"));
    let mut impostor = client(&cp, &pki, Some(store.clone())).await;
    let mut stream = watch(&mut impostor, "198.19.0.10:80").await.expect("watch");
    let first = next(&mut stream, Duration::from_secs(5))
        .await
        .expect("first");
    assert_eq!(rule_names(&first), ["httproute/shop/api/rule/0"]);
    let mut config = (*client_config(&pki.bundle_pem(), &cp_id())).clone();
    config.client_auth_cert_resolver = store;
    let tls = tls_connect(cp.grpc, Arc::new(config)).await.expect("TLS");
    let conn = H2Connection::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP/2");
    let mut renew =
        IdentityClient::with_origin(conn, "https://control-plane".parse().expect("origin"));
    let fresh = csr_for(&id("client", "app"));
    certify(
        &mut renew,
        &id("client", "app").to_string(),
        CLIENT_APP,
        fresh.csr_der,
    )
    .await
    .expect("certified over a connection presenting an unaccepted certificate");
    assert_eventually!(
        cp.logs().contains("route watch"),
        "watches are logged at debug"
    );
}

#[tokio::test]
async fn a_malformed_route_target_is_invalid_argument() {
    let pki = Pki::new(1);
    let config = pki.path("config");
    std::fs::create_dir(&config).expect("mkdir");
    let cp = start(&pki, &config).await;
    let mut client = client(&cp, &pki, None).await;
    for bad in ["", "api", "198.19.0.10:0", &"x".repeat(1000)] {
        let e = watch(&mut client, bad).await.expect_err(bad);
        assert_eq!(e.code(), Code::InvalidArgument, "{bad}: {e}");
    }
    let req = pb::WatchRequest {
        target: String::new(),
        proxy_id: String::new(),
        service: Some(pb::ServiceRef {
            namespace: "shop".into(),
            name: "API".into(),
            port: 80,
        }),
    };
    let e = client.watch(req).await.expect_err("an invalid name");
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
}

#[tokio::test]
async fn with_kubernetes_routes_come_from_the_api_and_a_kind_not_installed_is_no_route() {
    use serde_json::json;
    use weft_testkit::{FakeKube, Kind};

    let api = FakeKube::start();
    // No TrafficSplit CRD in this cluster: the mesh runs without splits. And a ClusterRole
    // that does not let the control plane read ReferenceGrants: it runs without them.
    api.unserve(Kind::TrafficSplit);
    api.forbid(Kind::ReferenceGrant);
    for (name, ip) in [
        ("api", "198.19.0.10"),
        ("api-v1", "198.19.0.11"),
        ("api-v2", "198.19.0.12"),
    ] {
        api.apply(
            Kind::Service,
            json!({"metadata": {"name": name, "namespace": "shop"},
                   "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80}]}}),
        );
    }
    let route = |v1: u32, v2: u32, path: &str| {
        json!({"metadata": {"name": "api", "namespace": "shop"},
               "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "api"}],
                        "rules": [{"matches": [{"path": {"type": "RegularExpression", "value": path}}],
                                   "backendRefs": [{"name": "api-v1", "port": 80, "weight": v1},
                                                   {"name": "api-v2", "port": 80, "weight": v2}]}]}})
    };
    api.apply(Kind::HttpRoute, route(90, 10, "/.*"));
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
    let mut client = client(&cp, &pki, None).await;
    let mut stream: Option<Streaming<pb::Update>>;
    assert_eventually!(
        {
            stream = watch(&mut client, "198.19.0.10:80").await.ok();
            stream.is_some()
        },
        "the control plane syncs, the TrafficSplit kind (no CRD) and ReferenceGrants (forbidden) counting as empty"
    );
    let mut stream = stream.expect("stream");
    let first = next(&mut stream, Duration::from_secs(5))
        .await
        .expect("first");
    assert_eq!(split(&first), ["api-v1 90", "api-v2 10"]);
    assert_eventually!(
        cp.logs().contains("does not serve this kind"),
        "the missing CRD is logged"
    );

    api.apply(Kind::HttpRoute, route(0, 100, "/.*"));
    let update = next(&mut stream, Duration::from_secs(10))
        .await
        .expect("a change");
    assert_eq!(split(&update), ["api-v1 0", "api-v2 100"]);

    // A version the checks refuse: its last good version stays in force.
    api.apply(Kind::HttpRoute, route(50, 50, "/(["));
    assert_eventually!(
        cp.logs()
            .contains("HTTPRoute refused; its last good version stays in force"),
        "the refusal is logged"
    );
    assert_eq!(next(&mut stream, Duration::from_millis(300)).await, None);
}
