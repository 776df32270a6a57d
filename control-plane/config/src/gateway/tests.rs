use super::*;

/// A route of `rules` (YAML flow), attached to Service `api`.
fn route(rules: &str) -> HttpRoute {
    let yaml = format!(
        "metadata: {{name: r, namespace: shop}}\n\
         spec:\n  parentRefs: [{{group: '', kind: Service, name: api}}]\n  rules: {rules}\n"
    );
    serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"))
}

#[test]
fn a_full_route_passes() {
    let r = route(
        r#"
  - name: canary
    matches:
    - path: {type: PathPrefix, value: /api}
      headers: [{name: x-canary, value: "1"}, {type: RegularExpression, name: x-user, value: "u[0-9]+"}]
      queryParams: [{name: v, value: "2"}]
      method: GET
    - path: {type: Exact, value: "/exact/a%20b"}
    - path: {type: RegularExpression, value: "/items/[0-9]+"}
    filters:
    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: a, value: b}], add: [{name: c, value: d}], remove: [e]}}
    - {type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x, value: y}]}}
    - {type: URLRewrite, urlRewrite: {hostname: api.example, path: {type: ReplaceFullPath, replaceFullPath: /v2}}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 80}, fraction: {numerator: 1, denominator: 3}}}
    - {type: ExtensionRef, extensionRef: {group: weft.dev, kind: HTTPFault, name: slow}}
    backendRefs:
    - {name: api-v1, port: 80, weight: 90}
    - name: api-v2
      port: 80
      weight: 10
      filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: v, value: "2"}]}}]
  - filters: [{type: RequestRedirect, requestRedirect: {scheme: https, port: 443, statusCode: 301, path: {type: ReplaceFullPath, replaceFullPath: /new}}}]
"#,
    );
    check_http_route(&r).expect("valid");
    // No rules at all is the API server's default rule.
    let mut r = route("[]");
    r.spec.rules = None;
    check_http_route(&r).expect("valid");
    assert_eq!(rules(&r).len(), 1);
}

#[test]
fn what_the_crd_or_weft_refuses_is_named_by_field() {
    let many = |n: usize, item: &str| format!("[{}]", vec![item; n].join(", "));
    for (rules, field, reason) in [
        ("[]", "spec.rules", "at least one rule"),
        (&many(17, "{}"), "spec.rules", "more than 16 rules"),
        (
            &many(3, &format!("{{matches: {}}}", many(50, "{}"))),
            "spec.rules",
            "at most 128",
        ),
        (&format!("[{{matches: {}}}]", many(65, "{}")), "spec.rules[0].matches", "more than 64"),
        ("[{matches: [{path: {type: Exact, value: api}}]}]", "spec.rules[0].matches[0].path.value", "does not start with /"),
        ("[{matches: [{path: {value: /a//b}}]}]", "spec.rules[0].matches[0].path.value", "contains //"),
        ("[{matches: [{path: {value: /a/../b}}]}]", "spec.rules[0].matches[0].path.value", "contains /../"),
        ("[{matches: [{path: {value: /a%2Fb}}]}]", "spec.rules[0].matches[0].path.value", "contains %2F"),
        ("[{matches: [{path: {value: /a/.}}]}]", "spec.rules[0].matches[0].path.value", "ends with"),
        ("[{matches: [{path: {value: '/a b'}}]}]", "spec.rules[0].matches[0].path.value", "not allowed in a path"),
        ("[{matches: [{path: {value: '/a%zz'}}]}]", "spec.rules[0].matches[0].path.value", "two hex digits"),
        ("[{matches: [{path: {type: Glob, value: /}}]}]", "spec.rules[0].matches[0].path.type", "expected Exact"),
        ("[{matches: [{path: {type: RegularExpression, value: '/(a'}}]}]", "spec.rules[0].matches[0].path.value", "not a regular expression"),
        ("[{matches: [{path: {type: RegularExpression, value: '/\\w{1000}\\w{1000}'}}]}]", "spec.rules[0].matches[0].path.value", "compiles larger"),
        ("[{matches: [{headers: [{name: 'bad name', value: x}]}]}]", "spec.rules[0].matches[0].headers[0].name", "not an HTTP header name"),
        ("[{matches: [{headers: [{name: ':path', value: x}]}]}]", "spec.rules[0].matches[0].headers[0].name", "not an HTTP header name"),
        ("[{matches: [{headers: [{name: a, value: ''}]}]}]", "spec.rules[0].matches[0].headers[0].value", "1-4096"),
        ("[{matches: [{headers: [{name: a, value: \"x\\ny\"}]}]}]", "spec.rules[0].matches[0].headers[0].value", "printable ASCII"),
        ("[{matches: [{headers: [{type: RegularExpression, name: a, value: '['}]}]}]", "spec.rules[0].matches[0].headers[0].value", "not a regular expression"),
        ("[{matches: [{headers: [{type: Prefix, name: a, value: b}]}]}]", "spec.rules[0].matches[0].headers[0].type", "expected Exact or RegularExpression"),
        ("[{matches: [{queryParams: [{type: RegularExpression, name: q, value: '(('}]}]}]", "spec.rules[0].matches[0].queryParams[0].value", "not a regular expression"),
        ("[{matches: [{method: get}]}]", "spec.rules[0].matches[0].method", "expected one of"),
        ("[{backendRefs: [{name: a, port: 80, weight: 1000001}]}]", "spec.rules[0].backendRefs[0].weight", "0-1000000"),
        ("[{backendRefs: [{name: a, port: 80, weight: -1}]}]", "spec.rules[0].backendRefs[0].weight", "0-1000000"),
        ("[{backendRefs: [{name: a}]}]", "spec.rules[0].backendRefs[0].port", "needs a port"),
        ("[{backendRefs: [{name: a, port: 0}]}]", "spec.rules[0].backendRefs[0].port", "not a port"),
        ("[{backendRefs: [{name: a, port: 80, namespace: Other}]}]", "spec.rules[0].backendRefs[0].namespace", "not a namespace"),
        (&format!("[{{backendRefs: {}}}]", many(17, "{name: a, port: 80}")), "spec.rules[0].backendRefs", "more than 16"),
        ("[{filters: [{type: CORS}]}]", "spec.rules[0].filters[0].type", "not supported by Weft"),
        ("[{filters: [{type: Teleport}]}]", "spec.rules[0].filters[0].type", "not a filter type Weft supports"),
        ("[{filters: [{type: RequestHeaderModifier}]}]", "spec.rules[0].filters[0].requestHeaderModifier", "missing"),
        ("[{filters: [{type: RequestHeaderModifier, requestHeaderModifier: {}, urlRewrite: {}}]}]", "spec.rules[0].filters[0].urlRewrite", "set on a RequestHeaderModifier"),
        ("[{filters: [{type: RequestHeaderModifier, requestHeaderModifier: {}}, {type: RequestHeaderModifier, requestHeaderModifier: {}}]}]", "spec.rules[0].filters[1].type", "a second RequestHeaderModifier"),
        ("[{filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: a, value: b}], remove: [A]}}]}]", "spec.rules[0].filters[0].requestHeaderModifier.remove[0]", "one action per header name"),
        ("[{filters: [{type: RequestRedirect, requestRedirect: {}}, {type: URLRewrite, urlRewrite: {}}]}]", "spec.rules[0].filters", "cannot be combined"),
        ("[{filters: [{type: RequestRedirect, requestRedirect: {}}], backendRefs: [{name: a, port: 80}]}]", "spec.rules[0].backendRefs", "has no backends"),
        ("[{filters: [{type: RequestRedirect, requestRedirect: {statusCode: 304}}]}]", "spec.rules[0].filters[0].requestRedirect.statusCode", "expected 301"),
        ("[{filters: [{type: RequestRedirect, requestRedirect: {scheme: ftp}}]}]", "spec.rules[0].filters[0].requestRedirect.scheme", "expected http or https"),
        ("[{filters: [{type: RequestRedirect, requestRedirect: {hostname: Bad.Example}}]}]", "spec.rules[0].filters[0].requestRedirect.hostname", "not a hostname"),
        ("[{filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath}}}]}]", "spec.rules[0].filters[0].urlRewrite.path.replaceFullPath", "missing"),
        ("[{filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: x}}}]}]", "spec.rules[0].filters[0].urlRewrite.path.replaceFullPath", "does not start with /"),
        ("[{filters: [{type: URLRewrite, urlRewrite: {path: {type: Replace, replaceFullPath: /x}}}]}]", "spec.rules[0].filters[0].urlRewrite.path.type", "expected ReplaceFullPath"),
        (
            "[{matches: [{path: {type: Exact, value: /a}}], filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}]}]",
            "spec.rules[0].matches",
            "exactly one match, a PathPrefix",
        ),
        ("[{filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 80}, percent: 101}}]}]", "spec.rules[0].filters[0].requestMirror.percent", "not 0-100"),
        ("[{filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 80}, fraction: {numerator: 3, denominator: 2}}}]}]", "spec.rules[0].filters[0].requestMirror.fraction", "numerator"),
        ("[{filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 80}, percent: 1, fraction: {numerator: 1}}}]}]", "spec.rules[0].filters[0].requestMirror", "exclusive"),
        ("[{filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m}}}]}]", "spec.rules[0].filters[0].requestMirror.backendRef.port", "needs a port"),
        ("[{filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: Auth, name: a}}]}]", "spec.rules[0].filters[0].extensionRef", "not a filter Weft knows"),
        ("[{backendRefs: [{name: a, port: 80, filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 80}}}]}]}]", "spec.rules[0].backendRefs[0].filters[0].type", "on a backend is not supported"),
        ("[{name: Bad_Name}]", "spec.rules[0].name", "not a valid rule name"),
        ("[{name: a}, {name: a}]", "spec.rules[1].name", "names two rules"),
    ] {
        let r = route(rules);
        let e = check_http_route(&r).expect_err(rules);
        assert_eq!(e.field, field, "{rules}: {e}");
        assert!(e.reason.contains(reason), "{rules}: {e}");
    }
}

#[test]
fn parents_are_checked_as_the_crd_does() {
    for (parents, field, reason) in [
        ("[{group: '', kind: Service, name: api, port: 0}]", "spec.parentRefs[0].port", "not a port"),
        ("[{group: '', kind: 'Ser vice', name: api}]", "spec.parentRefs[0].kind", "not a kind"),
        ("[{group: 'Core', kind: Service, name: api}]", "spec.parentRefs[0].group", "not an API group"),
        ("[{group: '', kind: Service, name: ''}]", "spec.parentRefs[0].name", "1-253"),
        ("[{group: '', kind: Service, name: api, namespace: A}]", "spec.parentRefs[0].namespace", "not a namespace"),
        (
            "[{group: '', kind: Service, name: api}, {group: '', kind: Service, name: api}]",
            "spec.parentRefs[1]",
            "each reference must then have a sectionName",
        ),
        (
            "[{group: '', kind: Service, name: api, sectionName: http}, {group: '', kind: Service, name: api, sectionName: http}]",
            "spec.parentRefs[1]",
            "same parent and section twice",
        ),
    ] {
        let yaml = format!("metadata: {{name: r}}\nspec: {{parentRefs: {parents}}}\n");
        let r: HttpRoute = serde_yaml::from_str(&yaml).expect(&yaml);
        let e = check_http_route(&r).expect_err(parents);
        assert_eq!(e.field, field, "{parents}: {e}");
        assert!(e.reason.contains(reason), "{parents}: {e}");
    }
    // One Service by two sections, and a Service and a Gateway of the same name: fine.
    for parents in [
        "[{group: '', kind: Service, name: api, sectionName: http}, {group: '', kind: Service, name: api, sectionName: grpc}]",
        "[{group: '', kind: Service, name: api}, {name: api}]",
    ] {
        let yaml = format!("metadata: {{name: r}}\nspec: {{parentRefs: {parents}}}\n");
        let r: HttpRoute = serde_yaml::from_str(&yaml).expect(&yaml);
        check_http_route(&r).expect(parents);
    }
}

#[test]
fn only_core_services_are_mesh_parents_and_backends() {
    let parent = |group: Option<&str>, kind: Option<&str>| ParentReference {
        group: group.map(str::to_string),
        kind: kind.map(str::to_string),
        name: "api".into(),
        ..Default::default()
    };
    assert!(parent(Some(""), Some("Service")).is_service());
    // The CRD's defaults: an absent group is the Gateway API's, an absent kind Gateway.
    assert!(!parent(None, Some("Service")).is_service());
    assert!(!parent(Some(""), None).is_service());
    assert!(!parent(Some(GROUP), Some("Gateway")).is_service());
    let backend = |group: Option<&str>, kind: Option<&str>| BackendObjectReference {
        group: group.map(str::to_string),
        kind: kind.map(str::to_string),
        name: "api".into(),
        ..Default::default()
    };
    // A backend's defaults are the core group and Service.
    assert!(backend(None, None).is_service());
    assert!(backend(Some(""), Some("Service")).is_service());
    assert!(!backend(Some("multicluster.x-k8s.io"), Some("ServiceImport")).is_service());
}

#[test]
fn reference_grants_are_checked() {
    for (spec, field) in [
        ("{from: [], to: [{group: '', kind: Service}]}", "spec.from"),
        ("{from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: A}], to: [{group: '', kind: Service}]}", "spec.from[0].namespace"),
        ("{from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: a}], to: [{group: '', kind: '9'}]}", "spec.to[0].kind"),
    ] {
        let grant: ReferenceGrant =
            serde_yaml::from_str(&format!("metadata: {{name: g}}\nspec: {spec}\n")).expect(spec);
        let e = check_reference_grant(&grant).expect_err(spec);
        assert_eq!(e.field, field, "{spec}: {e}");
    }
}
