use super::*;

#[test]
fn bad_documents_are_refused_with_file_document_field_and_reason() {
    for (text, document, field, reason) in [
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 0}]}\n",
            0,
            "spec.ports[0].port",
            "0 is not a port",
        ),
        (
            "---\napiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: http}]}\n",
            0,
            "spec.ports[0].port",
            "invalid type",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: []}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {clusterIP: 198.18.0.300}\n",
            1,
            "spec.clusterIP",
            "not an IP address",
        ),
        (
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s}\naddressType: IPv4\nendpoints: []\n",
            0,
            "metadata.labels",
            "kubernetes.io/service-name",
        ),
        (
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s, labels: {kubernetes.io/service-name: a}}\naddressType: IPv4\nendpoints: [{addresses: ['2001:2::1']}]\n",
            0,
            "endpoints[0].addresses[0]",
            "not an IPv4 address",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: Bad_Name}\nspec: {}\n",
            0,
            "metadata.name",
            "not a valid Kubernetes name",
        ),
        ("kind: Service\n", 0, "apiVersion", "missing"),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {}\n",
            1,
            "metadata.name",
            "defined twice",
        ),
        ("apiVersion: v1\nkind: Service\nmetadata: {name: [oops\n", 0, "", "not YAML"),
    ] {
        let errors = load_text(Path::new("svc.yaml"), text).expect_err(text);
        assert_eq!(errors.len(), 1, "{text}: {errors:?}");
        let e = &errors[0];
        assert!(e.file.ends_with("svc.yaml"), "{e}");
        assert_eq!(e.document, document, "{text}: {e}");
        assert_eq!(e.field, field, "{text}: {e}");
        assert!(e.reason.contains(reason), "{text}: {e}");
        let shown = e.to_string();
        assert!(shown.contains("svc.yaml") && shown.contains(&format!("document {document}")), "{shown}");
    }
}

const API: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: shop}\n\
                   spec: {clusterIP: 198.19.0.10, ports: [{port: 80}]}\n---\n";

#[test]
fn route_kinds_are_read_in_every_version_weft_reads() {
    let text = format!(
        "{API}apiVersion: gateway.networking.k8s.io/v1beta1\nkind: HTTPRoute\n\
         metadata: {{name: a, namespace: shop}}\nspec: {{parentRefs: [{{group: '', kind: Service, name: api}}]}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {{name: b, namespace: shop}}\nspec: {{rules: [{{backendRefs: [{{name: api, port: 80}}]}}]}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: ReferenceGrant\n\
         metadata: {{name: g, namespace: shop}}\n\
         spec: {{from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: client}}], to: [{{group: '', kind: Service}}]}}\n---\n\
         apiVersion: split.smi-spec.io/v1alpha2\nkind: TrafficSplit\n\
         metadata: {{name: s, namespace: shop}}\nspec: {{service: api, backends: [{{service: api, weight: 900m}}]}}\n---\n\
         apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\n\
         metadata: {{name: t, namespace: shop}}\nspec: {{service: api, backends: [{{service: api, weight: 1}}]}}\n"
    );
    let s = load_text(Path::new("routes.yaml"), &text).expect("valid");
    assert_eq!(s.http_routes.len(), 2);
    assert_eq!(s.reference_grants.len(), 1);
    assert_eq!(s.traffic_splits.len(), 2);
}

#[test]
fn bad_route_documents_are_refused_with_file_document_field_and_reason() {
    let route = |api_version: &str, rules: &str| {
        format!(
            "{API}apiVersion: {api_version}\nkind: HTTPRoute\nmetadata: {{name: r, namespace: shop}}\n\
             spec: {{parentRefs: [{{group: '', kind: Service, name: api}}], rules: {rules}}}\n"
        )
    };
    for (text, field, reason) in [
        (
            route("gateway.networking.k8s.io/v1", "[{matches: [{path: {type: RegularExpression, value: '/(a'}}]}]"),
            "spec.rules[0].matches[0].path.value",
            "not a regular expression",
        ),
        (
            route("gateway.networking.k8s.io/v1", "[{filters: [{type: CORS, cors: {}}]}]"),
            "spec.rules[0].filters[0].type",
            "not supported",
        ),
        (
            route("gateway.networking.k8s.io/v1", "[{backendRefs: [{name: api, port: http}]}]"),
            "spec.rules[0].backendRefs[0].port",
            "invalid type",
        ),
        (
            route("gateway.networking.k8s.io/v1alpha2", "[{}]"),
            "apiVersion",
            "HTTPRoute is read as gateway.networking.k8s.io/v1 or v1beta1",
        ),
        // Once the folder is read whole: a backend of another namespace without a grant.
        (
            route("gateway.networking.k8s.io/v1", "[{backendRefs: [{name: ledger, namespace: payments, port: 80}]}]"),
            "spec.rules[0].backendRefs[0]",
            "RefNotPermitted: Service payments/ledger is in another namespace",
        ),
        (
            format!(
                "{API}apiVersion: split.smi-spec.io/v1alpha3\nkind: TrafficSplit\nmetadata: {{name: s}}\n\
                 spec: {{service: api, backends: [{{service: api, weight: 1}}]}}\n"
            ),
            "apiVersion",
            "read as split.smi-spec.io/v1alpha4 or v1alpha2",
        ),
    ] {
        let errors = load_text(Path::new("route.yaml"), &text).expect_err(&text);
        assert_eq!(errors.len(), 1, "{text}: {errors:?}");
        let e = &errors[0];
        assert_eq!(
            (e.file.as_path(), e.document, e.field.as_str()),
            (Path::new("route.yaml"), 1, field),
            "{text}: {e}"
        );
        assert!(e.reason.contains(reason), "{text}: {e}");
    }
    // A missing backend is not the folder's mistake to refuse: it gets its 500 and condition.
    let text = route(
        "gateway.networking.k8s.io/v1",
        "[{backendRefs: [{name: api-v9, port: 80}]}]",
    );
    load_text(Path::new("route.yaml"), &text).expect("a missing backend is not refused");
}
