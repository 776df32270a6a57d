//! Reading: kinds, refusals with file, document, field and reason, notes, bounds, names, files.

use std::fs;

use super::*;

#[test]
fn a_folder_of_every_kind_loads_and_passes_the_rest_through() {
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
                 metadata: {name: api, namespace: shop}\n\
                 spec: {parentRefs: [{kind: Service, name: api, port: 80}]}\n";
    let split = "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\n\
                 metadata: {name: api, namespace: shop}\nspec: {service: api, backends: [{service: api, weight: 1}]}\n";
    let fault = "apiVersion: weft.dev/v1alpha1\nkind: HTTPFault\n\
                 metadata: {name: slow, namespace: shop}\nspec: {delay: {percent: 50, fixedDelay: 100ms}}\n";
    let folder = whole(&[
        (
            "a.yaml",
            &docs(&[
                &namespace("shop", "weft.dev/inject: enabled"),
                "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: api, namespace: shop}\n",
                &deployment("shop", "api", 2),
                &service("shop", "api", "api", "http"),
            ]),
        ),
        (
            "b.yml",
            &docs(&[&pod("shop", "client", ""), route, split, fault, ""]),
        ),
    ]);
    assert_eq!(folder.namespaces.len(), 1);
    assert!(folder.service_accounts.contains_key(&key("shop", "api")));
    assert!(folder.deployments.contains_key(&key("shop", "api")));
    assert_eq!(folder.pods.len(), 3, "{:?}", folder.pods.keys());
    assert_eq!(folder.services.len(), 1);
    assert_eq!(folder.endpoint_slices.len(), 1, "one slice derived for api");
    let kinds: Vec<&str> = folder
        .passed
        .iter()
        .map(|d| d.object.get("kind").and_then(|k| k.as_str()).unwrap_or(""))
        .collect();
    assert_eq!(kinds, ["HTTPRoute", "TrafficSplit", "HTTPFault"]);
    // Untouched: the value as read, with where it was read.
    let fault_value: serde_yaml::Value = serde_yaml::from_str(fault).expect("yaml");
    assert_eq!(folder.passed[2].object, fault_value);
    assert_eq!(folder.passed[2].origin.document, 3);
    assert!(folder.notes.is_empty(), "{:#?}", folder.notes);
}

#[test]
fn bad_documents_are_refused_with_file_document_field_and_reason_and_the_rest_loads() {
    let good = pod("default", "good", "");
    let no_containers = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: []}\n";
    for (bad, field, reason) in [
        (deployment("default", "web", -1), "spec.replicas", "-1 is not a number of replicas"),
        (deployment("default", "web", 100_000), "spec.replicas", "more pods than the lab has addresses"),
        ("kind: Pod\nmetadata: {name: p}\n".to_string(), "apiVersion", "missing"),
        ("apiVersion: v1\nmetadata: {name: p}\n".to_string(), "kind", "missing"),
        (no_containers.to_string(), "spec.containers", "at least one container"),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {clusterIP: 198.19.0.300}\n".into(),
            "spec.clusterIP",
            "not an IP address",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 70000}]}\n".into(),
            "spec.ports[0].port",
            "not a port",
        ),
        (
            format!("{}status: {{podIP: not-an-ip}}\n", pod("default", "p", "")),
            "status.podIP",
            "not an IP address",
        ),
        (pod("Shop", "p", ""), "metadata.namespace", "not a valid Kubernetes name"),
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  selector: {matchLabels: {app: x}}\n  \
             template: {metadata: {labels: {app: y}}, spec: {containers: [{name: a}]}}\n"
                .into(),
            "spec.selector",
            "does not match spec.template.metadata.labels",
        ),
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  selector: {}\n  \
             template: {spec: {containers: [{name: a}]}}\n"
                .into(),
            "spec.selector",
            "empty",
        ),
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  \
             selector: {matchExpressions: [{key: app, operator: Near}]}\n  \
             template: {metadata: {labels: {app: x}}, spec: {containers: [{name: a}]}}\n"
                .into(),
            "spec.selector.matchExpressions[0].operator",
            "\"Near\"",
        ),
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  selector: {matchLabels: {app: x}}\n  \
             template: {metadata: {labels: {app: x}}, spec: {serviceAccountName: Bad_SA, containers: [{name: a}]}}\n"
                .into(),
            "spec.template.spec.serviceAccountName",
            "not a valid name",
        ),
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {replicas: many}\n".into(),
            "spec.replicas",
            "invalid type",
        ),
        (
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s}\naddressType: IPv4\nendpoints: []\n"
                .into(),
            "metadata.labels",
            "kubernetes.io/service-name",
        ),
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {namespace: x}\n".into(),
            "metadata.name",
            "missing",
        ),
        (
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: List\n  items: []\n".into(),
            "items[0]",
            "a List inside a List",
        ),
        (
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: s}\n  spec: {ports: [{port: 0}]}\n"
                .into(),
            "items[0].spec.ports[0].port",
            "0 is not a port",
        ),
    ] {
        let text = docs(&[&good, &bad]);
        let folder = load(&[("pods.yaml", &text)]);
        assert_eq!(folder.refused.len(), 1, "{bad}\n{:#?}", folder.refused);
        let e = &folder.refused[0];
        assert_eq!(
            (e.file.as_path(), e.document, e.field.as_str()),
            (Path::new("pods.yaml"), 1, field),
            "{bad}\n{e}"
        );
        assert!(e.reason.contains(reason), "{bad}\n{e}");
        let shown = e.to_string();
        assert!(shown.contains("pods.yaml document 1") && shown.contains(field), "{shown}");
        assert!(folder.pods.contains_key(&key("default", "good")), "{bad}: the rest loads");
        assert!(!folder.is_whole());
    }
}

#[test]
fn bad_yaml_refuses_the_rest_of_its_file_only() {
    let folder = load(&[
        (
            "a.yaml",
            &docs(&[
                &pod("default", "a", ""),
                "kind: [oops\n",
                &pod("default", "lost", ""),
            ]),
        ),
        ("b.yaml", &pod("default", "b", "")),
    ]);
    refused_once(&folder, "a.yaml", 1, "", "not YAML");
    let names: Vec<&str> = folder.pods.keys().map(|(_, n)| n.as_str()).collect();
    assert_eq!(
        names,
        ["a", "b"],
        "a document after a syntax error cannot be read reliably"
    );
}

#[test]
fn a_name_defined_twice_is_refused_naming_the_first() {
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\n";
    let other_group = "apiVersion: example.com/v1\nkind: HTTPRoute\nmetadata: {name: r}\n";
    for (first, second, what) in [
        (
            pod("default", "a", ""),
            pod("default", "a", ""),
            "Pod default/a is defined twice",
        ),
        (
            service("shop", "api", "api", "80"),
            service("shop", "api", "x", "81"),
            "Service shop/api is defined twice",
        ),
        (
            deployment("d", "web", 1),
            deployment("d", "web", 2),
            "Deployment d/web is defined twice",
        ),
        (
            namespace("shop", ""),
            namespace("shop", ""),
            "Namespace shop is defined twice",
        ),
        (
            route.to_string(),
            route.to_string(),
            "HTTPRoute r is defined twice",
        ),
    ] {
        let folder = load(&[("one.yaml", &first), ("two.yaml", &second)]);
        refused_once(&folder, "two.yaml", 0, "metadata.name", what);
        assert!(
            folder.refused[0].reason.contains("one.yaml document 0"),
            "{}",
            folder.refused[0]
        );
    }
    // The same name in another namespace, or another API group, is another object.
    whole(&[(
        "a.yaml",
        &docs(&[&pod("a", "p", ""), &pod("b", "p", ""), route, other_group]),
    )]);
}

#[test]
fn deployment_pods_are_named_as_the_replicaset_controller_names_them_and_stay_named() {
    let text = deployment("shop", "web", 3);
    let folder = whole(&[("d.yaml", &text)]);
    let hash = names::template_hash("shop", "web");
    let names: Vec<String> = folder.pods.keys().map(|(_, n)| n.clone()).collect();
    assert_eq!(names.len(), 3);
    for name in &names {
        let suffix = name
            .strip_prefix(&format!("web-{hash}-"))
            .unwrap_or_else(|| panic!("{name} is not web-<hash>-<5>"));
        assert_eq!(suffix.len(), 5, "{name}");
        assert!(
            suffix.bytes().all(|b| names::ALPHABET.contains(&b)),
            "{name}"
        );
        let pod = &folder.pods[&key("shop", name)];
        assert_eq!(pod.deployment.as_deref(), Some("web"));
        assert_eq!(pod.labels().get("pod-template-hash"), Some(&hash));
        assert_eq!(pod.labels().get("app").map(String::as_str), Some("web"));
        assert_eq!(pod.origin.file, Path::new("d.yaml"));
    }
    // A reload gives the same names; scaling up keeps them and adds one; down drops one.
    assert_eq!(whole(&[("d.yaml", &text)]).pods, folder.pods);
    let up: Vec<String> = whole(&[("d.yaml", &deployment("shop", "web", 4))])
        .pods
        .into_keys()
        .map(|(_, n)| n)
        .collect();
    assert_eq!(up.len(), 4);
    assert!(names.iter().all(|n| up.contains(n)), "{names:?} in {up:?}");
    let down = whole(&[("d.yaml", &deployment("shop", "web", 2))]);
    assert_eq!(down.pods.len(), 2);
    assert!(down.pods.keys().all(|(_, n)| names.contains(n)));
    // No replicas, no pods; still a Deployment.
    let none = whole(&[("d.yaml", &deployment("shop", "web", 0))]);
    assert!(none.pods.is_empty() && none.deployments.len() == 1);
}

#[test]
fn a_replica_never_takes_the_name_of_a_pod_document() {
    let first = whole(&[("d.yaml", &deployment("shop", "web", 1))]);
    let taken = first.pods.keys().next().expect("one pod").1.clone();
    let folder = whole(&[
        ("d.yaml", &deployment("shop", "web", 1)),
        ("p.yaml", &pod("shop", &taken, "")),
    ]);
    assert_eq!(folder.pods.len(), 2);
    assert!(
        folder.pods[&key("shop", &taken)].deployment.is_none(),
        "the Pod keeps its name"
    );
}

#[test]
fn a_list_is_read_item_by_item() {
    let text = "apiVersion: v1\nkind: List\nitems:\n\
                - {apiVersion: v1, kind: Pod, metadata: {name: a}, spec: {containers: [{name: c}]}}\n\
                - {apiVersion: v1, kind: Service, metadata: {name: s}, spec: {selector: {x: y}, ports: [{port: 80}]}}\n";
    let folder = whole(&[("list.yaml", text)]);
    assert!(folder.pods.contains_key(&key("default", "a")));
    assert!(folder.services.contains_key(&key("default", "s")));
}

#[test]
fn what_the_folder_leaves_undefined_is_noted_once_where_first_used() {
    let folder = whole(&[(
        "a.yaml",
        &docs(&[
            &pod("shop", "a", ""),
            &pod("shop", "b", ""),
            "apiVersion: v1\nkind: Pod\nmetadata: {name: c, namespace: default}\n\
             spec: {serviceAccountName: api, containers: [{name: app}]}\n",
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec: {}\n",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: d, annotations: {weft.dev/inject: \"yes\"}}\n\
             spec: {containers: [{name: app}]}\n",
        ]),
    )]);
    let notes: Vec<(usize, &str, &str)> = folder
        .notes
        .iter()
        .map(|n| (n.document, n.field.as_str(), n.reason.as_str()))
        .collect();
    assert_eq!(notes.len(), 4, "{:#?}", folder.notes);
    assert!(notes.iter().any(|(d, f, r)| *d == 0
        && *f == "metadata.namespace"
        && r.contains("namespace shop is not defined")));
    assert!(notes.iter().any(|(d, f, r)| *d == 2
        && *f == "spec.serviceAccountName"
        && r.contains("service account default/api is not defined")));
    assert!(notes.iter().any(|(d, f, r)| *d == 3
        && *f == "kind"
        && r.contains("StatefulSet is not run by the lab")));
    assert!(notes.iter().any(|(d, f, r)| *d == 4
        && *f == "metadata.annotations"
        && r.contains("weft.dev/inject is \"yes\"")));
    assert!(
        folder.passed.is_empty(),
        "a workload the lab does not run is not passed on"
    );
}

#[test]
fn the_number_of_documents_is_bounded() {
    let text = "---\n~\n".repeat(MAX_DOCUMENTS + 10);
    let folder = load(&[
        ("many.yaml", &text),
        ("after.yaml", &pod("default", "a", "")),
    ]);
    refused_once(
        &folder,
        "many.yaml",
        MAX_DOCUMENTS,
        "",
        "more than 4096 documents",
    );
    assert!(folder.pods.is_empty(), "reading stops at the bound");
}

#[test]
fn read_takes_the_folders_yaml_files_in_name_order_and_refuses_unreadable_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    fs::write(d.join("b.yml"), pod("default", "b", "")).expect("write");
    fs::write(d.join("a.yaml"), pod_at("default", "a", "198.18.0.99")).expect("write");
    fs::write(d.join("notes.txt"), "not: read").expect("write");
    fs::write(d.join(".a.yaml.tmp"), "kind: [").expect("write");
    fs::create_dir(d.join("sub.yaml")).expect("mkdir");
    fs::write(d.join("c.yaml"), [0xff, 0xfe, 0x00]).expect("write");
    let big = vec![b'#'; usize::try_from(MAX_FILE_BYTES).expect("fits") + 1];
    fs::write(d.join("d.yaml"), big).expect("write");
    let folder = read(d, &Addresses::default()).expect("read");
    let refused: Vec<(String, &str)> = folder
        .refused
        .iter()
        .map(|e| {
            (
                e.file
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                e.reason.as_str(),
            )
        })
        .collect();
    assert_eq!(
        refused,
        [
            ("c.yaml".into(), "not UTF-8 text"),
            ("d.yaml".into(), "larger than 8388608 bytes")
        ]
    );
    assert_eq!(folder.pods.len(), 2);
    assert_eq!(
        folder.pods[&key("default", "a")].origin.file,
        d.join("a.yaml")
    );
    assert_eq!(folder.pods[&key("default", "a")].ip, ip("198.18.0.99"));

    let missing = d.join("missing");
    let e = read(&missing, &Addresses::default()).expect_err("no folder");
    assert!(matches!(e, FolderError::Dir { .. }), "{e}");
    assert!(e.to_string().contains("missing"), "{e}");
}

#[test]
fn the_number_of_files_is_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    for i in 0..=MAX_FILES {
        fs::write(dir.path().join(format!("{i:04}.yaml")), "").expect("write");
    }
    let e = read(dir.path(), &Addresses::default()).expect_err("too many");
    assert!(
        matches!(e, FolderError::TooManyFiles { max: MAX_FILES, .. }),
        "{e}"
    );
}

#[test]
fn routes_the_control_plane_would_refuse_are_refused_by_file_and_field() {
    let svc = |name: &str| service("shop", name, name, "8080");
    let route = |backend_ns: &str, regex: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r, namespace: shop}}\n\
             spec:\n  parentRefs: [{{group: \"\", kind: Service, name: api, port: 80}}]\n  rules:\n\
             \x20 - matches: [{{path: {{type: RegularExpression, value: \"{regex}\"}}}}]\n\
             \x20   backendRefs: [{{name: api-v2, namespace: {backend_ns}, port: 80}}]\n"
        )
    };
    let good = docs(&[&svc("api"), &svc("api-v2"), &route("shop", "/a.*")]);
    let folder = load(&[("a.yaml", &good)]);
    assert!(folder.is_whole(), "{:#?}", folder.refused);
    assert_eq!(folder.passed.len(), 1);

    let bad = docs(&[&svc("api"), &svc("api-v2"), &route("shop", "/a(")]);
    let folder = load(&[("a.yaml", &bad)]);
    assert_eq!(folder.refused.len(), 1, "{:#?}", folder.refused);
    let e = &folder.refused[0];
    assert_eq!(
        (e.file.as_path(), e.document),
        (Path::new("a.yaml"), 2),
        "{e}"
    );
    assert!(e.field.contains("rules[0].matches[0].path"), "{e}");
    assert!(
        folder.passed.is_empty(),
        "a refused route is not given to the control plane"
    );

    let foreign = docs(&[
        &svc("api"),
        &service("other", "api-v2", "x", "8080"),
        &route("other", "/a.*"),
    ]);
    let folder = load(&[("a.yaml", &foreign)]);
    assert_eq!(folder.refused.len(), 1, "{:#?}", folder.refused);
    assert!(
        folder.refused[0].reason.contains("RefNotPermitted")
            || folder.refused[0].reason.contains("ReferenceGrant"),
        "{}",
        folder.refused[0]
    );
}
