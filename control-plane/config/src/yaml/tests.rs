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

/// Reads `files` (name, text) once with [`Reader::read`] and once with
/// [`Reader::read_cached`] through `cache`; both results.
type Read = Result<Snapshot, Vec<DocError>>;
fn both(files: &[(&str, &str)], cache: &mut ParseCache) -> (Read, Read) {
    let mut plain = Reader::new();
    let mut cached = Reader::new();
    for (name, text) in files {
        let _ = plain.read(Path::new(name), text);
        let _ = cached.read_cached(Path::new(name), text, cache);
    }
    cache.sweep();
    (plain.finish(), cached.finish())
}

fn service(name: &str, port: u16) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\nspec: {{clusterIP: 198.19.0.9, ports: [{{port: {port}}}]}}\n")
}

#[test]
fn pieces_are_cut_at_document_markers_only() {
    fn cut(t: &str) -> Vec<&str> {
        pieces_of(t).collect()
    }
    assert_eq!(cut(""), [""]);
    assert_eq!(cut("a: 1\n"), ["a: 1\n"]);
    assert_eq!(
        cut("---\na: 1\n---\nb: 2\n"),
        ["---\na: 1\n", "---\nb: 2\n"]
    );
    assert_eq!(cut("a: 1\n--- # two\nb: 2"), ["a: 1\n", "--- # two\nb: 2"]);
    assert_eq!(cut("a: 1\r\n---\r\nb: 2"), ["a: 1\r\n", "---\r\nb: 2"]);
    assert_eq!(cut("a: 1\n---"), ["a: 1\n", "---"]);
    // Not markers: more dashes, text after them, an indented line.
    assert_eq!(
        cut("a: 1\n----\nb: |\n  ---\n"),
        ["a: 1\n----\nb: |\n  ---\n"]
    );
    assert_eq!(cut("a: 1\n---x\n"), ["a: 1\n---x\n"]);
}

#[test]
fn a_cached_read_is_the_same_as_a_read() {
    let two = format!("{}---\n{}", service("a", 80), service("b", 81));
    let texts: Vec<String> =
        vec![
        two.clone(),
        format!("# a comment before the first marker\n---\n{two}---\n"),
        format!("---\n{}...\n---\n{}", service("a", 80), service("b", 81)),
        two.replace('\n', "\r\n"),
        format!("{}---\n---\n{}", service("a", 80), service("b", 81)),
        // Errors: a bad field in the second document, a duplicate, a syntax error after a
        // good document (its line is the file's), and an unknown version.
        format!("{}---\n{}", service("a", 80), service("b", 0)),
        format!("{}---\n{}", service("a", 80), service("a", 81)),
        format!("{}---\nkind: [unclosed\n---\n{}", service("a", 80), service("b", 81)),
        "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: HTTPRoute\nmetadata: {name: r}\n"
            .to_string(),
        format!("key: |\n  ---\n  text\n---\n{}", service("a", 80)),
    ];
    let mut cache = ParseCache::new();
    for text in &texts {
        // Cold, then warm: the same answer both times.
        for pass in ["cold", "warm"] {
            let (plain, cached) = both(&[("f.yaml", text)], &mut cache);
            assert_eq!(plain, cached, "{pass}: {text:?}");
        }
    }
    let (plain, _) = both(&[("f.yaml", &texts[7])], &mut cache);
    let errors = plain.expect_err("a syntax error");
    assert!(
        errors[0].reason.contains("line 6"),
        "the file's line: {errors:?}"
    );
}

#[test]
fn an_edit_parses_only_the_document_that_changed() {
    let file = |port_of_c: u16| -> String {
        (0..50)
            .map(|i| {
                let name = format!("s{i}");
                service(&name, if i == 7 { port_of_c } else { 80 })
            })
            .collect::<Vec<_>>()
            .join("---\n")
    };
    let mut cache = ParseCache::new();
    let (_, first) = both(
        &[
            ("services.yaml", &file(80)),
            ("other.yaml", &service("x", 80)),
        ],
        &mut cache,
    );
    first.expect("the folder reads");
    assert_eq!(cache.counts(), (51, 0), "everything parsed once");
    assert_eq!(cache.len(), 51);

    let (plain, cached) = both(
        &[
            ("services.yaml", &file(8080)),
            ("other.yaml", &service("x", 80)),
        ],
        &mut cache,
    );
    assert_eq!(plain, cached);
    let snapshot = cached.expect("the folder reads");
    assert_eq!(snapshot.services.len(), 51);
    assert_eq!(
        cache.counts(),
        (52, 50),
        "one document parsed again, fifty reused"
    );
    // The old text of the edited document is gone; so is a file that went away.
    assert_eq!(cache.len(), 51);
    let _ = both(&[("services.yaml", &file(8080))], &mut cache);
    assert_eq!(cache.len(), 50);
}

#[test]
fn many_new_documents_are_parsed_on_two_threads_into_the_same_snapshot() {
    let file = |edited: usize, port: u16| -> String {
        (0..300)
            .map(|i| service(&format!("s{i}"), if i < edited { port } else { 80 }))
            .collect::<Vec<_>>()
            .join("---\n")
    };
    let mut cache = ParseCache::new();
    let (plain, cached) = both(&[("services.yaml", &file(0, 80))], &mut cache);
    assert_eq!(plain, cached);
    assert_eq!(cached.expect("reads").services.len(), 300);
    assert_eq!(cache.counts(), (300, 0), "every piece parsed once");
    // 100 edited (past PARALLEL_PIECES): those parsed again, the rest reused.
    let (plain, cached) = both(&[("services.yaml", &file(100, 8080))], &mut cache);
    assert_eq!(plain, cached);
    assert_eq!(cache.counts(), (400, 200));
    // Errors among them read the same too.
    let (plain, cached) = both(&[("services.yaml", &file(100, 0))], &mut cache);
    assert_eq!(plain, cached);
    assert_eq!(cached.expect_err("port 0").len(), 100);
}

#[test]
fn the_document_bound_holds_for_cached_reads() {
    let text = "---\n".repeat(MAX_DOCUMENTS + 5);
    let mut cache = ParseCache::new();
    let (plain, cached) = both(&[("many.yaml", &text)], &mut cache);
    assert_eq!(plain, cached);
    let errors = cached.expect_err("too many documents");
    assert!(errors[0].reason.contains("more than"), "{errors:?}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    #[test]
    fn any_mix_of_documents_reads_the_same_cached_or_not(
        parts in proptest::collection::vec(0usize..8, 0..12),
        seps in proptest::collection::vec(0usize..4, 12),
    ) {
        let snippets = [
            service("a", 80),
            service("b", 81),
            service("a", 82),
            "# only a comment\n".to_string(),
            String::new(),
            "kind: Service\napiVersion: v1\nmetadata: {name: c}\nspec: {ports: [{port: 99999}]}\n".into(),
            "x: [unclosed\n".into(),
            "key: |\n  ---\n  not a marker\n".into(),
        ];
        let separators = ["---\n", "--- # c\n", "...\n---\n", "\n---\n"];
        let mut text = String::new();
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                text.push_str(separators[seps[i] % separators.len()]);
            }
            text.push_str(&snippets[*p]);
        }
        let mut cache = ParseCache::new();
        for _ in 0..2 {
            let (plain, cached) = both(&[("f.yaml", &text)], &mut cache);
            proptest::prop_assert_eq!(plain, cached, "{:?}", text);
        }
    }
}
