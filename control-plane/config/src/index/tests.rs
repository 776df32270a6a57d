use super::*;

fn snapshot(yaml: &str) -> Arc<Snapshot> {
    Arc::new(crate::yaml::load_text(std::path::Path::new("c.yaml"), yaml).expect("valid"))
}

const SHOP: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  clusterIP: 198.19.0.10
  ports: [{name: http, port: 80, targetPort: http}, {name: grpc, port: 9090}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: api-1
  namespace: shop
  labels: {kubernetes.io/service-name: api}
addressType: IPv4
endpoints:
  - addresses: [198.18.0.11]
    targetRef: {kind: Pod, name: api-a, namespace: shop}
    zone: z1
  - addresses: [198.18.0.12]
    conditions: {ready: true}
  - addresses: [198.18.0.13]
    conditions: {ready: false}
ports: [{name: http, port: 8080}, {name: grpc, port: 9091}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: api-2
  namespace: shop
  labels: {kubernetes.io/service-name: api}
addressType: IPv4
endpoints:
  - addresses: [198.18.0.14]
ports: [{name: http, port: 8081}]
---
apiVersion: v1
kind: Pod
metadata: {name: api-a, namespace: shop}
spec:
  serviceAccountName: api
  containers:
    - {name: app, image: example/api}
    - name: weft-proxy
      image: weft/proxy
      ports: [{name: weft-inbound, containerPort: 15999}]
status: {podIP: 198.18.0.11}
---
apiVersion: v1
kind: Pod
metadata:
  name: api-b
  namespace: shop
  annotations: {weft.dev/injected: v1}
spec:
  containers: [{name: app, image: example/api}]
status: {podIPs: [{ip: 198.18.0.12}]}
---
apiVersion: v1
kind: Pod
metadata: {name: plain, namespace: shop}
spec:
  containers: [{name: app, image: example/api}]
status: {podIP: 198.18.0.20}
"#;

fn addr(s: &str) -> Target {
    Target::Addr(s.parse().expect("addr"))
}

fn endpoints(answer: &Answer) -> &BTreeMap<String, pb::Endpoint> {
    match answer {
        Answer::Endpoints { endpoints, .. } => endpoints,
        Answer::NotAService => panic!("expected endpoints"),
    }
}

#[test]
fn a_cluster_ip_resolves_to_ready_endpoints_on_the_named_target_port() {
    let lookup = Lookup::new(snapshot(SHOP), "cluster.local");
    let answer = lookup.answer(&addr("198.19.0.10:80"));
    let eps = endpoints(&answer);
    let addrs: Vec<&str> = eps.keys().map(String::as_str).collect();
    // Not ready (.13) left out; each slice's own port for the "http" name.
    assert_eq!(
        addrs,
        ["198.18.0.11:8080", "198.18.0.12:8080", "198.18.0.14:8081"]
    );
    let a = &eps["198.18.0.11:8080"];
    assert_eq!(a.pod, "shop/api-a");
    assert_eq!(a.zone, "z1");
    let mesh = a.mesh.as_ref().expect("meshed: runs weft-proxy");
    assert_eq!(mesh.identity, "spiffe://cluster.local/ns/shop/sa/api");
    assert_eq!(mesh.inbound_port, 15999);
    // Found by IP, no targetRef; annotated; no service account means `default`.
    let b = &eps["198.18.0.12:8080"];
    assert_eq!(b.pod, "shop/api-b");
    let mesh = b.mesh.as_ref().expect("meshed: annotated");
    assert_eq!(mesh.identity, "spiffe://cluster.local/ns/shop/sa/default");
    assert_eq!(mesh.inbound_port, 15143);
    // No pod known: plaintext, straight to the endpoint.
    assert!(eps["198.18.0.14:8081"].mesh.is_none());

    let Answer::Endpoints { service, .. } = &answer else {
        unreachable!()
    };
    assert_eq!(
        service,
        &Some(pb::ServiceRef {
            namespace: "shop".into(),
            name: "api".into(),
            port: 80
        })
    );
}

#[test]
fn the_name_and_the_cluster_ip_give_the_same_answer() {
    let lookup = Lookup::new(snapshot(SHOP), "cluster.local");
    let by_name = Target::parse("api.shop.svc.cluster.local:80", "cluster.local").expect("name");
    assert_eq!(
        lookup.answer(&by_name),
        lookup.answer(&addr("198.19.0.10:80"))
    );
    // The second port: only the slice that names it serves it.
    let grpc = lookup.answer(&addr("198.19.0.10:9090"));
    let addrs: Vec<&str> = endpoints(&grpc).keys().map(String::as_str).collect();
    assert_eq!(addrs, ["198.18.0.11:9091", "198.18.0.12:9091"]);
}

#[test]
fn unknown_addresses_ports_and_unmeshed_pods_are_not_services() {
    let lookup = Lookup::new(snapshot(SHOP), "cluster.local");
    assert_eq!(lookup.answer(&addr("198.19.0.99:80")), Answer::NotAService);
    assert_eq!(lookup.answer(&addr("198.19.0.10:81")), Answer::NotAService);
    assert_eq!(lookup.answer(&addr("198.18.0.20:80")), Answer::NotAService);
    let missing = Target::parse("nope.shop.svc.cluster.local:80", "cluster.local").expect("ok");
    assert_eq!(lookup.answer(&missing), Answer::NotAService);
}

#[test]
fn a_meshed_pod_ip_is_one_endpoint_with_its_identity() {
    let lookup = Lookup::new(snapshot(SHOP), "cluster.local");
    let answer = lookup.answer(&addr("198.18.0.11:7000"));
    let eps = endpoints(&answer);
    assert_eq!(eps.len(), 1);
    let ep = &eps["198.18.0.11:7000"];
    assert_eq!(
        ep.mesh.as_ref().map(|m| m.identity.as_str()),
        Some("spiffe://cluster.local/ns/shop/sa/api")
    );
}

#[test]
fn a_service_without_endpoints_is_an_empty_set_not_pass_through() {
    let lookup = Lookup::new(
        snapshot(
            "apiVersion: v1\nkind: Service\nmetadata: {name: idle}\nspec: {clusterIP: 198.19.0.5, ports: [{port: 80}]}\n",
        ),
        "cluster.local",
    );
    let answer = lookup.answer(&addr("198.19.0.5:80"));
    assert!(endpoints(&answer).is_empty());
}

#[test]
fn targets_parse_strictly() {
    let td = "cluster.local";
    assert_eq!(
        Target::parse("[2001:2::1]:80", td),
        Ok(Target::Addr("[2001:2::1]:80".parse().expect("v6")))
    );
    assert_eq!(
        Target::parse("::ffff:198.18.0.1:80", td).ok(),
        None,
        "an unbracketed v6 address is ambiguous"
    );
    assert_eq!(
        Target::parse("[::ffff:198.18.0.1]:80", td),
        Ok(addr("198.18.0.1:80")),
        "v4-mapped is the v4 address"
    );
    assert_eq!(
        Target::parse("web.shop.svc.cluster.local.:8080", td),
        Ok(Target::Name {
            namespace: "shop".into(),
            name: "web".into(),
            port: 8080
        })
    );
    for bad in [
        "",
        "198.18.0.1",
        "198.18.0.1:0",
        "web:80",
        "web.shop:80",
        "web.shop.svc.other.domain:80",
        "a.b.c.svc.cluster.local:80",
        "Web.shop.svc.cluster.local:80",
        "web.shop.svc.cluster.local:99999",
    ] {
        let e = Target::parse(bad, td).expect_err(bad);
        assert!(e.to_string().contains("target"), "{e}");
    }
    assert!(Target::parse(&"a".repeat(400), td).is_err());
}

#[test]
fn a_service_ref_is_the_same_target_as_its_dns_name() {
    let r = |namespace: &str, name: &str, port: u32| pb::ServiceRef {
        namespace: namespace.into(),
        name: name.into(),
        port,
    };
    assert_eq!(
        Target::service(&r("shop", "api", 80)),
        Target::parse("api.shop.svc.cluster.local:80", "cluster.local")
    );
    let lookup = Lookup::new(snapshot(SHOP), "cluster.local");
    let by_ref = Target::service(&r("shop", "api", 80)).expect("valid");
    assert_eq!(
        lookup.answer(&by_ref),
        lookup.answer(&addr("198.19.0.10:80"))
    );
    for (bad, reason) in [
        (r("shop", "api", 0), "port"),
        (r("shop", "api", 65536), "port"),
        (r("shop", "", 80), "DNS label"),
        (r("", "api", 80), "DNS label"),
        (r("shop", "Api", 80), "DNS label"),
        (r("shop.x", "api", 80), "DNS label"),
        (r("shop", &"a".repeat(64), 80), "DNS label"),
    ] {
        let e = Target::service(&bad).expect_err(&format!("{bad:?}"));
        let text = e.to_string();
        assert!(text.contains("target") && text.contains(reason), "{text}");
    }
}

#[test]
fn updates_are_deltas_within_a_service_and_whole_otherwise() {
    let lookup = Lookup::new(snapshot(SHOP), "cluster.local");
    let full = lookup.answer(&addr("198.19.0.10:80"));
    assert_eq!(full.since(&full, 2), None, "nothing changed");

    let Answer::Endpoints {
        service,
        mut endpoints,
    } = full.clone()
    else {
        unreachable!()
    };
    endpoints.remove("198.18.0.14:8081");
    if let Some(ep) = endpoints.get_mut("198.18.0.12:8080") {
        ep.zone = "z2".into();
    }
    let fewer = Answer::Endpoints {
        service: service.clone(),
        endpoints,
    };
    let update = fewer.since(&full, 3).expect("changed");
    assert_eq!(update.version, 3);
    let Some(pb::update::Kind::Delta(delta)) = update.kind else {
        panic!("a delta: {update:?}")
    };
    assert_eq!(delta.removed, ["198.18.0.14:8081"]);
    assert_eq!(delta.upserts.len(), 1);
    assert_eq!(delta.upserts[0].zone, "z2");

    let gone = Answer::NotAService.since(&full, 4).expect("changed");
    assert!(matches!(gone.kind, Some(pb::update::Kind::NotAService(_))));
    let back = full.since(&Answer::NotAService, 5).expect("changed");
    assert!(matches!(back.kind, Some(pb::update::Kind::Snapshot(_))));
}

#[test]
fn a_pod_with_injection_disabled_is_not_meshed_even_with_a_proxy() {
    // The CNI installs no redirect rules in such a pod (`weft_pod::decide`), so its proxy never
    // sees inbound traffic: an mTLS connection to its inbound port would be the only way in, and
    // plaintext to the app is what reaches it.
    let lookup = Lookup::new(
        snapshot(
            r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 198.19.0.20, ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: shop
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
endpoints:
  - addresses: [198.18.0.31]
    targetRef: {kind: Pod, name: web-off, namespace: shop}
  - addresses: [198.18.0.32]
    targetRef: {kind: Pod, name: web-on, namespace: shop}
ports: [{port: 8080}]
---
apiVersion: v1
kind: Pod
metadata:
  name: web-off
  namespace: shop
  annotations: {weft.dev/injected: v1, weft.dev/inject: disabled}
spec:
  containers: [{name: app, image: example/web}, {name: weft-proxy, image: weft/proxy}]
status: {podIP: 198.18.0.31}
---
apiVersion: v1
kind: Pod
metadata:
  name: web-on
  namespace: shop
  annotations: {weft.dev/inject: enabled}
spec:
  containers: [{name: app, image: example/web}, {name: weft-proxy, image: weft/proxy}]
status: {podIP: 198.18.0.32}
"#,
        ),
        "cluster.local",
    );
    let answer = lookup.answer(&addr("198.19.0.20:80"));
    let eps = endpoints(&answer);
    let off = &eps["198.18.0.31:8080"];
    assert_eq!(off.pod, "shop/web-off");
    assert!(off.mesh.is_none(), "inject: disabled is plaintext: {off:?}");
    assert!(
        eps["198.18.0.32:8080"].mesh.is_some(),
        "inject: enabled changes nothing for an injected pod"
    );
    assert_eq!(
        lookup.answer(&addr("198.18.0.31:8080")),
        Answer::NotAService,
        "the pod's own address: forwarded as it is"
    );
}

#[test]
fn a_native_sidecar_proxy_meshes_its_pod_on_its_named_port() {
    // Kubernetes 1.29+: the proxy is an init container that keeps running.
    let yaml = format!(
        "{SHOP}---\n{}",
        r#"apiVersion: v1
kind: Pod
metadata: {name: api-c, namespace: shop}
spec:
  serviceAccountName: api
  initContainers:
    - name: weft-proxy
      image: weft/proxy
      restartPolicy: Always
      ports: [{name: weft-inbound, containerPort: 15888}]
  containers: [{name: app, image: example/api}]
status: {podIP: 198.18.0.30}
"#
    );
    let lookup = Lookup::new(snapshot(&yaml), "cluster.local");
    let answer = lookup.answer(&addr("198.18.0.30:8080"));
    let eps = endpoints(&answer);
    let mesh = eps["198.18.0.30:8080"]
        .mesh
        .as_ref()
        .expect("meshed: runs weft-proxy as a native sidecar");
    assert_eq!(mesh.identity, "spiffe://cluster.local/ns/shop/sa/api");
    assert_eq!(mesh.inbound_port, 15888);
}

#[test]
fn a_change_touches_its_service_and_the_pods_it_names_only() {
    let old = snapshot(SHOP);
    let other = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 198.19.0.20
  ports: [{port: 80}]
"#;
    let with_web = snapshot(&format!("{SHOP}---\n{other}"));
    let (before, after) = (
        Lookup::new(old.clone(), "cluster.local"),
        Lookup::new(with_web.clone(), "cluster.local"),
    );
    let changes = Changes::between(&old, &with_web).expect("a Service was added");
    assert_eq!(changes.services(), 1);
    assert!(after.touched(&before, &changes, &addr("198.19.0.20:80")));
    assert!(!after.touched(&before, &changes, &addr("198.19.0.10:80")));
    assert!(!after.touched(&before, &changes, &addr("198.18.0.11:8080")));
    assert!(Changes::between(&with_web, &snapshot(&format!("{SHOP}---\n{other}"))).is_none());

    // The pod api-a changes its service account: api (whose slice names it) and its own
    // address are touched.
    let renamed = SHOP.replace("serviceAccountName: api", "serviceAccountName: api2");
    let new = snapshot(&renamed);
    let changes = Changes::between(&old, &new).expect("a pod changed");
    let after = Lookup::new(new, "cluster.local");
    for target in ["198.19.0.10:80", "198.18.0.11:8080"] {
        assert!(after.touched(&before, &changes, &addr(target)), "{target}");
        assert_ne!(before.answer(&addr(target)), after.answer(&addr(target)));
    }
    assert!(!after.touched(&before, &changes, &addr("198.18.0.20:80")));
}

/// A random little cluster: three slots each of Services, EndpointSlices and Pods in one
/// namespace, each absent or one of many variants drawn from a few names, addresses and ports,
/// so that refs collide, dangle and move.
fn cluster(slots: &[Option<u32>]) -> String {
    let ip = |n: u32| format!("198.18.0.{}", n % 4 + 1);
    let mut docs = Vec::new();
    for (i, v) in slots[0..3].iter().enumerate() {
        let Some(v) = v else { continue };
        let cluster_ip = ["198.19.0.1", "198.19.0.2", "None"][(v % 3) as usize];
        let ports = [
            "[{name: http, port: 80}]",
            "[{name: http, port: 80}, {port: 81}]",
            "[{port: 81}]",
        ][(v / 3 % 3) as usize];
        docs.push(format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: a}}\nspec: {{clusterIP: {cluster_ip}, ports: {ports}}}\n"
        ));
    }
    for (i, v) in slots[3..6].iter().enumerate() {
        let Some(v) = v else { continue };
        // s3 is never a Service: a slice whose Service is gone.
        let label = format!("labels: {{kubernetes.io/service-name: s{}}}", v % 4);
        let mut endpoints = Vec::new();
        let mut e = v / 4;
        for _ in 0..(e % 4) {
            e /= 4;
            let target = match e % 4 {
                3 => String::new(),
                p => format!(", targetRef: {{kind: Pod, name: p{p}}}"),
            };
            let ready = [
                "",
                ", conditions: {ready: true}",
                ", conditions: {ready: false}",
            ][(e / 4 % 3) as usize];
            endpoints.push(format!("{{addresses: [{}]{target}{ready}}}", ip(e / 12)));
        }
        docs.push(format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: e{i}, namespace: a, {label}}}\naddressType: IPv4\nendpoints: [{}]\nports: [{{name: http, port: 8080}}, {{port: 8081}}]\n",
            endpoints.join(", ")
        ));
    }
    for (i, v) in slots[6..9].iter().enumerate() {
        let Some(v) = v else { continue };
        let meshed = if v % 2 == 0 {
            ", annotations: {weft.dev/injected: v1}"
        } else {
            ""
        };
        docs.push(format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: a{meshed}}}\nspec: {{serviceAccountName: sa{}, containers: [{{name: app, image: x}}]}}\nstatus: {{podIP: {}}}\n",
            v / 2 % 2,
            ip(v / 4)
        ));
    }
    docs.join("---\n")
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
    /// What makes answering only touched targets safe: every target `touched` leaves out is
    /// answered the same by both snapshots.
    #[test]
    fn an_untouched_target_answers_the_same(
        old in proptest::collection::vec(proptest::option::of(proptest::num::u32::ANY), 9),
        other in proptest::collection::vec(proptest::option::of(proptest::num::u32::ANY), 9),
        keep in proptest::collection::vec(proptest::bool::weighted(0.8), 9),
    ) {
        let new: Vec<Option<u32>> = (0..9).map(|i| if keep[i] { old[i] } else { other[i] }).collect();
        let (before_snapshot, after_snapshot) = (snapshot(&cluster(&old)), snapshot(&cluster(&new)));
        let before = Lookup::new(before_snapshot.clone(), "cluster.local");
        let after = Lookup::new(after_snapshot.clone(), "cluster.local");
        let changes = Changes::between(&before_snapshot, &after_snapshot);
        let mut targets: Vec<Target> = Vec::new();
        for s in 0..3 {
            for port in [80, 81] {
                targets.push(Target::Name { namespace: "a".into(), name: format!("s{s}"), port });
            }
        }
        for ip in ["198.19.0.1", "198.19.0.2", "198.18.0.1", "198.18.0.2", "198.18.0.3", "198.18.0.4"] {
            for port in [80, 81, 8080] {
                targets.push(addr(&format!("{ip}:{port}")));
            }
        }
        for target in &targets {
            let touched = changes
                .as_ref()
                .is_some_and(|changes| after.touched(&before, changes, target));
            if !touched {
                proptest::prop_assert_eq!(
                    before.answer(target),
                    after.answer(target),
                    "{} untouched\nold:\n{}\nnew:\n{}",
                    target,
                    cluster(&old),
                    cluster(&new)
                );
            }
        }
    }
}
