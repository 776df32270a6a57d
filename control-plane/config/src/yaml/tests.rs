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
