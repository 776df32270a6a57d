//! Which pods are meshed (as the injector will decide), their identities and their app ports.

use super::*;

#[test]
fn a_pod_is_meshed_as_the_injector_decides_the_annotation_winning() {
    let injected = "weft.dev/injected: 0.1.0";
    for (ns_label, annotation, want) in [
        ("", "", Injection::NotRequested),
        ("weft.dev/inject: enabled", "", Injection::NamespaceLabel),
        ("weft.dev/inject: disabled", "", Injection::NotRequested),
        ("", "weft.dev/inject: enabled", Injection::PodAnnotation),
        (
            "weft.dev/inject: enabled",
            "weft.dev/inject: disabled",
            Injection::Disabled,
        ),
        (
            "weft.dev/inject: enabled",
            "weft.dev/inject: \" disabled \"",
            Injection::Disabled,
        ),
        ("", injected, Injection::AlreadyInjected),
        (
            "weft.dev/inject: enabled",
            injected,
            Injection::AlreadyInjected,
        ),
        (
            "",
            "{weft.dev/injected: 0.1.0, weft.dev/inject: disabled}",
            Injection::Disabled,
        ),
        (
            "weft.dev/inject: enabled",
            "weft.dev/inject: \"yes\"",
            Injection::NamespaceLabel,
        ),
    ] {
        let annotations = match annotation {
            "" => String::new(),
            a if a.starts_with('{') => format!("  annotations: {a}\n"),
            a => format!("  annotations: {{{a}}}\n"),
        };
        // The Namespace after the pod: folder order does not matter.
        let folder = whole(&[
            ("a.yaml", &pod("shop", "p", &annotations)),
            ("b.yaml", &namespace("shop", ns_label)),
        ]);
        let p = &folder.pods[&key("shop", "p")];
        assert_eq!(p.injection, want, "{ns_label:?} {annotation:?}");
        assert_eq!(p.is_meshed(), want.is_meshed());
    }
}

#[test]
fn a_weft_proxy_container_is_injected_already_and_not_an_app_port() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n\
                \x20 - {name: app, ports: [{containerPort: 9090}]}\n\
                \x20 - {name: weft-proxy, ports: [{name: weft-inbound, containerPort: 15143}]}\n";
    let folder = whole(&[("a.yaml", text)]);
    let p = &folder.pods[&key("default", "p")];
    assert_eq!(p.injection, Injection::AlreadyInjected);
    let ports: Vec<u16> = p.ports.iter().map(|p| p.port).collect();
    assert_eq!(ports, [9090]);
}

#[test]
fn a_meshed_pod_cannot_have_its_app_on_a_proxy_port_once_per_deployment() {
    let text = deployment("shop", "web", 3).replace("containerPort: 8080", "containerPort: 15190");
    let folder = load(&[
        ("d.yaml", &text),
        ("ns.yaml", &namespace("shop", "weft.dev/inject: enabled")),
    ]);
    refused_once(
        &folder,
        "d.yaml",
        0,
        "spec.template.spec.containers[0].ports[0].containerPort",
        "15190 is the proxy's admin port",
    );
    assert!(folder.pods.is_empty() && folder.deployments.is_empty());
    // Unmeshed, the port is the app's.
    let folder = whole(&[("d.yaml", &text)]);
    assert!(folder.pods.values().all(|p| p.ports[0].port == 15190));
}

#[test]
fn identity_is_the_namespace_and_the_service_account() {
    let folder = whole(&[(
        "a.yaml",
        &docs(&[
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: api, namespace: shop}\n",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: shop}\n\
             spec: {serviceAccountName: api, containers: [{name: app}]}\n",
            &pod("shop", "b", ""),
            &namespace("shop", ""),
        ]),
    )]);
    let a = &folder.pods[&key("shop", "a")];
    assert_eq!(a.service_account(), "api");
    assert_eq!(a.spiffe_id(), "spiffe://cluster.local/ns/shop/sa/api");
    let b = &folder.pods[&key("shop", "b")];
    assert_eq!(b.service_account(), "default");
    assert_eq!(b.spiffe_id(), "spiffe://cluster.local/ns/shop/sa/default");
}

#[test]
fn the_workload_is_the_deployment_else_the_pod_as_the_injector_names_it() {
    let folder = whole(&[(
        "a.yaml",
        &docs(&[&deployment("shop", "api", 2), &pod("shop", "debug", "")]),
    )]);
    let replicas: Vec<_> = folder
        .pods
        .values()
        .filter(|p| p.deployment.is_some())
        .collect();
    assert_eq!(replicas.len(), 2);
    for replica in replicas {
        assert!(replica.name().starts_with("api-"), "{}", replica.name());
        assert_eq!(replica.workload(), "deployment/api");
    }
    assert_eq!(folder.pods[&key("shop", "debug")].workload(), "pod/debug");
}

#[test]
fn the_app_listens_on_the_container_ports_the_service_targets_or_8080() {
    let folder = whole(&[(
        "a.yaml",
        &docs(&[
            &pod("default", "bare", "  labels: {app: bare}\n"),
            &pod("default", "alone", ""),
            "apiVersion: v1\nkind: Pod\nmetadata: {name: ports, labels: {app: ports}}\nspec:\n  containers:\n\
             \x20 - {name: a, ports: [{name: http, containerPort: 8081}, {name: dns, containerPort: 53, protocol: UDP}]}\n\
             \x20 - {name: b, ports: [{containerPort: 9000}, {containerPort: 8081}]}\n",
            // Numeric and absent target ports add ports; a named one is the container's.
            "apiVersion: v1\nkind: Service\nmetadata: {name: bare}\nspec:\n  selector: {app: bare}\n  ports:\n\
             \x20 - {name: a, port: 80, targetPort: 7000}\n  - {name: b, port: 81}\n\
             \x20 - {name: c, port: 82, targetPort: http}\n  - {name: d, port: 83, targetPort: 7001, protocol: UDP}\n",
            &service("default", "ports", "ports", "http"),
        ]),
    )]);
    let ports = |name: &str| -> Vec<(u16, Option<&str>)> {
        folder.pods[&key("default", name)]
            .ports
            .iter()
            .map(|p| (p.port, p.name.as_deref()))
            .collect()
    };
    assert_eq!(ports("bare"), [(81, None), (7000, None)]);
    assert_eq!(ports("alone"), [(DEFAULT_APP_PORT, None)]);
    assert_eq!(ports("ports"), [(8081, Some("http")), (9000, None)]);
}

#[test]
fn the_reason_reads_after_meshed_or_not_meshed() {
    assert_eq!(
        format!("meshed: {}", Injection::NamespaceLabel),
        "meshed: namespace label weft.dev/inject=enabled"
    );
    assert_eq!(
        format!("not meshed: {}", Injection::Disabled),
        "not meshed: annotation weft.dev/inject: disabled"
    );
    assert!(!Injection::NotRequested.is_meshed() && Injection::AlreadyInjected.is_meshed());
}

#[test]
fn weft_annotations_set_the_proxy_as_the_injector_will_and_bad_ones_refuse_the_pod() {
    let ns = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels: {weft.dev/inject: enabled}\n  annotations: {weft.dev/mtls: strict}\n";
    let good = pod(
        "shop",
        "p",
        "  annotations: {weft.dev/opaque-ports: \"7000, 25\", weft.dev/proxy-log-level: debug, weft.dev/proxy-memory-limit: 64Mi}\n",
    );
    let folder = whole(&[("a.yaml", &docs(&[ns, &good]))]);
    let p = &folder.pods[&key("shop", "p")];
    assert_eq!(
        p.settings.env,
        vec![
            ("WEFT_OPAQUE_PORTS", "25,7000".to_string()),
            ("WEFT_LOG", "debug".to_string()),
            ("WEFT_INBOUND_MTLS", "strict".to_string()),
        ]
    );
    assert!(
        folder.notes.iter().any(
            |n| n.field == "metadata.annotations[weft.dev/proxy-memory-limit]"
                && n.reason.contains("not enforced")
        ),
        "{:#?}",
        folder.notes
    );
    // An unmeshed pod's annotations set nothing.
    let off = pod(
        "shop",
        "q",
        "  annotations: {weft.dev/inject: disabled, weft.dev/proxy-log-level: loud}\n",
    );
    let folder = whole(&[("a.yaml", &docs(&[ns, &off]))]);
    assert_eq!(folder.pods[&key("shop", "q")].settings, Default::default());

    let bad = pod(
        "shop",
        "p",
        "  annotations: {weft.dev/opaque-ports: \"25,,587\"}\n",
    );
    let folder = load(&[("a.yaml", &docs(&[ns, &bad]))]);
    refused_once(
        &folder,
        "a.yaml",
        1,
        "metadata.annotations[weft.dev/opaque-ports]",
        "pod annotation weft.dev/opaque-ports",
    );
    let strictest = ns.replace("strict", "strictest");
    let folder = load(&[("a.yaml", &docs(&[&strictest, &good]))]);
    refused_once(
        &folder,
        "a.yaml",
        1,
        "metadata.namespace (shop)",
        "namespace annotation weft.dev/mtls",
    );
}
