use std::net::SocketAddr;

use super::*;

/// Services every test has: `shop/api` (ports http 80 and grpc 9090, cluster IP
/// 198.19.0.10), its versions, a headless Service, and Services of other namespaces.
const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec: {clusterIP: 198.19.0.10, ports: [{name: http, port: 80}, {name: grpc, port: 9090}]}
---
apiVersion: v1
kind: Service
metadata: {name: api-v1, namespace: shop}
spec: {clusterIP: 198.19.0.11, ports: [{name: http, port: 80}, {name: grpc, port: 9090}]}
---
apiVersion: v1
kind: Service
metadata: {name: api-v2, namespace: shop}
spec: {clusterIP: 198.19.0.12, ports: [{name: web, port: 8080}, {name: grpc, port: 9091}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec: {clusterIP: None, ports: [{port: 5432}]}
---
apiVersion: v1
kind: Service
metadata: {name: ledger, namespace: payments}
spec: {clusterIP: 198.19.1.10, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: x, namespace: third}
spec: {clusterIP: 198.19.2.10, ports: [{port: 80}]}
"#;

/// A snapshot of [`SERVICES`] and `extra`, each object added as the sources add them (the
/// folder's cross-reference refusal left out, so the index's own handling shows).
fn snap(extra: &str) -> Snapshot {
    let mut s = Snapshot::default();
    for doc in crate::yaml::documents(&format!("{SERVICES}---\n{extra}")) {
        let doc = doc.expect("YAML");
        crate::yaml::add(&mut s, doc).unwrap_or_else(|e| panic!("{extra}: {e}"));
    }
    s
}

/// An HTTPRoute `ns/name` on Service `api` of `shop` (`parent` extra fields), with `rules`.
fn route(ns: &str, name: &str, parent: &str, rules: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {{name: {name}, namespace: {ns}}}\n\
         spec:\n  parentRefs: [{{group: '', kind: Service, name: api, namespace: shop{parent}}}]\n  rules: {rules}\n---\n"
    )
}

fn target(port: u16, client: Option<&str>) -> RouteTarget {
    RouteTarget {
        service: Target::Name {
            namespace: "shop".into(),
            name: "api".into(),
            port,
        },
        client_namespace: client.map(str::to_string),
        client_service_account: None,
    }
}

/// Each match as `rule-name path [method] hN qN`, in table order.
fn order(t: &pb::RouteTable) -> Vec<String> {
    use pb::path_match::Kind;
    t.matches
        .iter()
        .map(|m| {
            let path = match m.path.as_ref().and_then(|p| p.kind.as_ref()) {
                Some(Kind::Exact(p)) => format!("={p}"),
                Some(Kind::Prefix(p)) => p.clone(),
                Some(Kind::Regex(p)) => format!("~{p}"),
                None => "*".into(),
            };
            let rule = &t.rules[m.rule as usize].name;
            let mut s = format!("{rule} {path}");
            if !m.method.is_empty() {
                s.push_str(&format!(" {}", m.method));
            }
            if !m.headers.is_empty() {
                s.push_str(&format!(" h{}", m.headers.len()));
            }
            if !m.query_params.is_empty() {
                s.push_str(&format!(" q{}", m.query_params.len()));
            }
            s
        })
        .collect()
}

/// A rule's backends as `ns/name:port weight` or `500 reason weight`.
fn backends(list: &[pb::Backend]) -> Vec<String> {
    list.iter()
        .map(|b| {
            let target = match &b.target {
                Some(pb::backend::Target::Service(s)) => {
                    format!("{}/{}:{}", s.namespace, s.name, s.port)
                }
                Some(pb::backend::Target::Invalid(i)) => format!("{} {}", i.status, i.reason),
                None => "none".into(),
            };
            format!("{target} {}", b.weight)
        })
        .collect()
}

fn rule_names(t: &pb::RouteTable) -> Vec<&str> {
    t.rules.iter().map(|r| r.name.as_str()).collect()
}

#[test]
fn matches_are_ordered_as_the_specification_says() {
    // The conformance suite's `httproute-matching`: a longer prefix first, then more header
    // matches, then rule order.
    let s = snap(&route(
        "shop",
        "m",
        "",
        "[{matches: [{path: {type: PathPrefix, value: /}}, {headers: [{name: version, value: one}]}], backendRefs: [{name: api-v1, port: 80}]},
          {matches: [{path: {type: PathPrefix, value: /v2}}, {headers: [{name: version, value: two}]}], backendRefs: [{name: api-v1, port: 9090}]}]",
    ));
    let t = RouteIndex::new(&s).answer(&target(80, None));
    assert_eq!(
        order(&t),
        [
            "httproute/shop/m/rule/1 /v2",
            "httproute/shop/m/rule/0 / h1",
            "httproute/shop/m/rule/1 / h1",
            "httproute/shop/m/rule/0 /",
        ]
    );

    // Every criterion in turn, across routes of different ages and names.
    let young = "2024-01-02T00:00:00Z";
    let old = "2024-01-01T00:00:00Z";
    let aged = |name: &str, at: &str, rules: &str| {
        route("shop", name, "", rules).replace(
            &format!("name: {name}, namespace: shop}}"),
            &format!("name: {name}, namespace: shop, creationTimestamp: '{at}'}}"),
        )
    };
    let a = aged(
        "a",
        young,
        "[{matches: [{path: {type: Exact, value: /a/b}}]},
          {matches: [{path: {type: RegularExpression, value: /a/.*}}]},
          {matches: [{path: {value: /a/b/c}}]},
          {matches: [{path: {value: /a}, method: GET}]},
          {matches: [{path: {value: /a}, headers: [{name: x, value: '1'}, {name: y, value: '1'}]}]},
          {matches: [{path: {value: /a}, headers: [{name: x, value: '1'}], queryParams: [{name: q, value: '1'}]}]},
          {matches: [{path: {value: /a}, queryParams: [{name: q, value: '1'}, {name: r, value: '1'}]}]},
          {matches: [{path: {value: /a}}]}]",
    );
    let b = aged("b", old, "[{matches: [{path: {value: /a}}]}]");
    let d = aged("d", old, "[{matches: [{path: {value: /a}}]}]");
    let t = RouteIndex::new(&snap(&format!("{a}{d}{b}"))).answer(&target(80, None));
    assert_eq!(
        order(&t),
        [
            "httproute/shop/a/rule/0 =/a/b",
            "httproute/shop/a/rule/1 ~/a/.*",
            "httproute/shop/a/rule/2 /a/b/c",
            "httproute/shop/a/rule/3 /a GET",
            "httproute/shop/a/rule/4 /a h2",
            "httproute/shop/a/rule/5 /a h1 q1",
            "httproute/shop/a/rule/6 /a q2",
            // Equal matches: the oldest route, then by name, then the younger route.
            "httproute/shop/b/rule/0 /a",
            "httproute/shop/d/rule/0 /a",
            "httproute/shop/a/rule/7 /a",
        ]
    );
    // Rules are listed oldest route first, each route's rules in order.
    assert_eq!(
        t.routes,
        ["httproute/shop/b", "httproute/shop/d", "httproute/shop/a"]
    );
}

#[test]
fn matches_fill_defaults_and_keep_the_first_of_equivalent_names() {
    let s = snap(&route(
        "shop",
        "r",
        "",
        "[{matches: [{headers: [{name: X-Canary, value: '1'}, {name: x-canary, value: '2'}, {type: RegularExpression, name: X-User, value: 'u.*'}],
                      queryParams: [{name: v, value: '1'}, {name: v, value: '2'}, {name: V, value: '3'}]}]},
          {}]",
    ));
    let t = RouteIndex::new(&s).answer(&target(80, None));
    let m = &t.matches[0];
    let headers: Vec<_> = m
        .headers
        .iter()
        .map(|h| (h.name.as_str(), h.value.clone()))
        .collect();
    assert_eq!(
        headers,
        [
            ("x-canary", Some(pb::value_match::Value::Exact("1".into()))),
            ("x-user", Some(pb::value_match::Value::Regex("u.*".into()))),
        ]
    );
    let query: Vec<&str> = m.query_params.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(
        query,
        ["v", "V"],
        "query parameter names are case-sensitive"
    );
    // A match without a path, and a rule without matches, match every path.
    assert_eq!(
        order(&t),
        [
            "httproute/shop/r/rule/0 / h2 q2",
            "httproute/shop/r/rule/1 /"
        ]
    );
}

#[test]
fn consumer_routes_replace_producer_routes_for_their_namespace_only_and_per_port() {
    let producer = route(
        "shop",
        "p",
        "",
        "[{backendRefs: [{name: api-v1, port: 80}]}]",
    );
    let consumer = route(
        "client",
        "c",
        ", port: 80",
        "[{backendRefs: [{name: api-v2, namespace: shop, port: 8080}]}]",
    );
    let index = RouteIndex::new(&snap(&format!("{producer}{consumer}")));
    for (port, client, want) in [
        (80, Some("client"), "httproute/client/c/rule/0"),
        (80, Some("other"), "httproute/shop/p/rule/0"),
        (80, Some("shop"), "httproute/shop/p/rule/0"),
        (80, None, "httproute/shop/p/rule/0"),
        // The consumer route is on port 80 only: on 9090 its namespace sees the producer's.
        (9090, Some("client"), "httproute/shop/p/rule/0"),
    ] {
        let t = index.answer(&target(port, client));
        assert_eq!(rule_names(&t), [want], "{port} {client:?}");
    }
    // By cluster IP, the same.
    let by_ip = RouteTarget {
        service: Target::Addr("198.19.0.10:80".parse().expect("addr")),
        client_namespace: Some("client".into()),
        client_service_account: None,
    };
    let t = index.answer(&by_ip);
    assert_eq!(rule_names(&t), ["httproute/client/c/rule/0"]);
    // A consumer route may send to the producer's own Services without a ReferenceGrant.
    assert_eq!(backends(&t.rules[0].backends), ["shop/api-v2:8080 1"]);
}

#[test]
fn a_parent_port_or_section_attaches_to_that_port_only() {
    let on_80 = route(
        "shop",
        "p80",
        ", port: 80",
        "[{backendRefs: [{name: api-v1, port: 80}]}]",
    );
    let on_grpc = route(
        "shop",
        "pgrpc",
        ", sectionName: grpc",
        "[{backendRefs: [{name: api-v1, port: 9090}]}]",
    );
    let index = RouteIndex::new(&snap(&format!("{on_80}{on_grpc}")));
    assert_eq!(
        rule_names(&index.answer(&target(80, None))),
        ["httproute/shop/p80/rule/0"]
    );
    assert_eq!(
        rule_names(&index.answer(&target(9090, None))),
        ["httproute/shop/pgrpc/rule/0"]
    );
    // Without a port, every port (the `MeshPorts` conformance test).
    let all = RouteIndex::new(&snap(&route("shop", "all", "", "[{}]")));
    for port in [80, 9090] {
        assert_eq!(
            rule_names(&all.answer(&target(port, None))),
            ["httproute/shop/all/rule/0"]
        );
    }
}

#[test]
fn targets_without_routes_get_an_empty_table() {
    let index = RouteIndex::new(&snap(&route("shop", "r", "", "[{}]")));
    let at = |addr: &str| {
        index.answer(&RouteTarget {
            service: Target::Addr(addr.parse::<SocketAddr>().expect("addr")),
            client_namespace: None,
            client_service_account: None,
        })
    };
    // A pod's own address is never routed; nor a port the Service does not expose.
    for addr in ["198.18.0.20:80", "198.19.0.10:81"] {
        assert_eq!(*at(addr), pb::RouteTable::default(), "{addr}");
    }
    // A Service with no route: empty, naming the Service.
    let t = at("198.19.0.11:80");
    assert!(t.matches.is_empty() && t.rules.is_empty() && t.tcp_split.is_empty());
    assert_eq!(t.service.as_ref().map(|s| s.name.as_str()), Some("api-v1"));
}

#[test]
fn a_rule_without_backends_goes_to_the_parent_and_a_redirect_has_none() {
    let s = snap(&route(
        "shop",
        "r",
        "",
        "[{matches: [{path: {value: /old}}], filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}}]},
          {filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x-route, value: r}]}}]}]",
    ));
    let t = RouteIndex::new(&s).answer(&target(9090, None));
    assert!(t.rules[0].backends.is_empty());
    let Some(pb::filter::Kind::RequestRedirect(redirect)) = &t.rules[0].filters[0].kind else {
        panic!("{:?}", t.rules[0].filters)
    };
    assert_eq!(redirect.status_code, 302, "the CRD's default");
    assert_eq!(backends(&t.rules[1].backends), ["shop/api:9090 1"]);
}

#[test]
fn backend_references_resolve_to_service_ports_or_500_with_the_reason() {
    let s = snap(&route(
        "shop",
        "r",
        "",
        "[{backendRefs: [
            {name: api-v1, port: 80, weight: 0},
            {name: api-v3, port: 80},
            {name: api-v1, port: 8080, weight: 5},
            {group: multicluster.x-k8s.io, kind: ServiceImport, name: api, port: 80},
            {name: ledger, namespace: payments, port: 80}]}]",
    ));
    let t = RouteIndex::new(&s).answer(&target(80, None));
    assert_eq!(
        backends(&t.rules[0].backends),
        [
            "shop/api-v1:80 0",
            "500 BackendNotFound: Service shop/api-v3 not found 1",
            "500 BackendNotFound: Service shop/api-v1 has no port 8080 5",
            "500 InvalidKind: multicluster.x-k8s.io/ServiceImport is not a kind Weft sends traffic to (a core Service) 1",
            "500 RefNotPermitted: Service payments/ledger is in another namespace, and no ReferenceGrant in payments lets HTTPRoutes of shop reference it 1",
        ]
    );
}

#[test]
fn a_reference_grant_permits_exactly_what_it_says() {
    let r = route(
        "shop",
        "r",
        "",
        "[{backendRefs: [{name: ledger, namespace: payments, port: 80}]}]",
    );
    let grant = |ns: &str, from_kind: &str, from_ns: &str, to: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\n\
             metadata: {{name: g, namespace: {ns}}}\n\
             spec: {{from: [{{group: gateway.networking.k8s.io, kind: {from_kind}, namespace: {from_ns}}}], to: [{to}]}}\n---\n"
        )
    };
    for (grant, permitted) in [
        (String::new(), false),
        (
            grant(
                "payments",
                "HTTPRoute",
                "shop",
                "{group: '', kind: Service}",
            ),
            true,
        ),
        (
            grant(
                "payments",
                "HTTPRoute",
                "shop",
                "{group: '', kind: Service, name: ledger}",
            ),
            true,
        ),
        (
            grant(
                "payments",
                "HTTPRoute",
                "shop",
                "{group: '', kind: Service, name: other}",
            ),
            false,
        ),
        (
            grant(
                "payments",
                "HTTPRoute",
                "elsewhere",
                "{group: '', kind: Service}",
            ),
            false,
        ),
        (
            grant(
                "payments",
                "GRPCRoute",
                "shop",
                "{group: '', kind: Service}",
            ),
            false,
        ),
        (
            grant("payments", "HTTPRoute", "shop", "{group: '', kind: Secret}"),
            false,
        ),
        // A grant must be in the namespace of what it grants.
        (
            grant("shop", "HTTPRoute", "shop", "{group: '', kind: Service}"),
            false,
        ),
    ] {
        let s = snap(&format!("{r}{grant}"));
        let t = RouteIndex::new(&s).answer(&target(80, None));
        let got = backends(&t.rules[0].backends);
        assert_eq!(
            got == ["payments/ledger:80 1"],
            permitted,
            "{grant}: {got:?}"
        );
        let status = &route_statuses(&s)[0].parents[0].conditions[1];
        assert_eq!(status.status, permitted, "{grant}: {status:?}");
        if !permitted {
            assert_eq!(status.reason, REF_NOT_PERMITTED);
        }
        assert!(reference_problems(&s).is_empty() == permitted, "{grant}");
    }
    // A consumer route needs a grant for a third namespace, not for the parent's.
    let c = route(
        "client",
        "c",
        "",
        "[{backendRefs: [{name: api-v1, namespace: shop, port: 80}, {name: x, namespace: third, port: 80}]}]",
    );
    let s = snap(&c);
    let t = RouteIndex::new(&s).answer(&target(80, Some("client")));
    let got = backends(&t.rules[0].backends);
    assert_eq!(got[0], "shop/api-v1:80 1");
    assert!(got[1].starts_with("500 RefNotPermitted"), "{got:?}");
}

/// (route YAML, then per Service parent: Accepted (status, reason), ResolvedRefs (status,
/// reason)).
type ConditionCase = (String, Vec<((bool, &'static str), (bool, &'static str))>);

#[test]
fn conditions_follow_the_specification() {
    let ok = (true, ACCEPTED);
    let resolved = (true, RESOLVED_REFS);
    let cases: Vec<ConditionCase> = vec![
        (route("shop", "r", "", "[{backendRefs: [{name: api-v1, port: 80}]}]"), vec![(ok, resolved)]),
        (route("client", "r", "", "[{}]"), vec![(ok, resolved)]),
        (
            route("shop", "r", "", "[{backendRefs: [{name: nope, port: 80}]}]"),
            vec![(ok, (false, BACKEND_NOT_FOUND))],
        ),
        (
            route("shop", "r", "", "[{backendRefs: [{kind: Pod, name: p, port: 80}, {name: nope, port: 80}]}]"),
            vec![(ok, (false, INVALID_KIND))],
        ),
        (
            route("shop", "r", "", "[{filters: [{type: RequestMirror, requestMirror: {backendRef: {name: nope, port: 80}}}]}]"),
            vec![(ok, (false, BACKEND_NOT_FOUND))],
        ),
        (
            route("shop", "r", ", port: 8080", "[{}]"),
            vec![((false, NO_MATCHING_PARENT), resolved)],
        ),
        (
            route("shop", "r", ", sectionName: admin", "[{}]"),
            vec![((false, NO_MATCHING_PARENT), resolved)],
        ),
        (
            route("shop", "r", "", "[{}]").replace("name: api, namespace: shop", "name: gone, namespace: shop"),
            vec![((false, NO_MATCHING_PARENT), resolved)],
        ),
        (
            route("shop", "r", "", "[{}]").replace("name: api, namespace: shop", "name: db, namespace: shop"),
            vec![((false, UNSUPPORTED_VALUE), resolved)],
        ),
        // A Gateway parent is another controller's: no status of ours.
        (
            route("shop", "r", "", "[{}]").replace("{group: '', kind: Service,", "{kind: Gateway,"),
            vec![],
        ),
    ];
    for (yaml, want) in cases {
        let s = snap(&yaml);
        let status = route_statuses(&s).pop().expect("a status");
        let got: Vec<_> = status
            .parents
            .iter()
            .map(|p| {
                assert_eq!(p.conditions[0].type_, ACCEPTED);
                assert_eq!(p.conditions[1].type_, RESOLVED_REFS);
                let c = |i: usize| (p.conditions[i].status, p.conditions[i].reason);
                (c(0), c(1))
            })
            .collect();
        assert_eq!(got, want, "{yaml}\n{status:#?}");
    }
}

#[test]
fn a_condition_message_names_each_field_and_reason() {
    let s = snap(&route(
        "shop",
        "r",
        "",
        "[{backendRefs: [{name: api-v1, port: 80}]}, {backendRefs: [{name: nope, port: 80}, {name: api-v1, port: 1}]}]",
    ));
    let status = &route_statuses(&s)[0];
    assert_eq!(status.route, ("shop".to_string(), "r".to_string()));
    let c = &status.parents[0].conditions[1];
    assert_eq!(
        c.message,
        "spec.rules[1].backendRefs[0]: Service shop/nope not found; \
         spec.rules[1].backendRefs[1]: Service shop/api-v1 has no port 1"
    );
    // A kind: Service parent without group: "" is the Gateway API's group by default: not
    // attached, and said so.
    let s = snap(
        &route("shop", "r", "", "[{}]").replace("{group: '', kind: Service,", "{kind: Service,"),
    );
    let status = &route_statuses(&s)[0];
    assert!(status.parents.is_empty());
    assert_eq!(status.ignored_service_parents.len(), 1);
    assert!(RouteIndex::new(&s)
        .answer(&target(80, None))
        .rules
        .is_empty());
}

#[test]
fn a_refused_route_is_not_accepted_with_its_problem() {
    let yaml = route(
        "shop",
        "r",
        "",
        "[{matches: [{path: {type: RegularExpression, value: '('}}]}]",
    );
    let doc = crate::yaml::documents(&yaml)
        .next()
        .expect("a doc")
        .expect("YAML");
    let r: HttpRoute = crate::yaml::typed(doc).expect("typed");
    let problem = gateway::check_http_route(&r).expect_err("bad regex");
    let status = refused_route_status(&("shop".into(), "r".into()), &r, &problem);
    let c = &status.parents[0].conditions[0];
    assert_eq!(
        (c.type_, c.status, c.reason),
        (ACCEPTED, false, UNSUPPORTED_VALUE)
    );
    assert!(
        c.message.contains("spec.rules[0].matches[0].path.value"),
        "{c:?}"
    );
}

#[test]
fn filters_reach_the_table_and_an_unresolved_mirror_is_dropped() {
    let s = snap(&route(
        "shop",
        "r",
        "",
        "[{filters: [
            {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-A, value: a}], add: [{name: x-b, value: b}], remove: [x-c]}},
            {type: RequestMirror, requestMirror: {backendRef: {name: api-v1, port: 80}, percent: 25}},
            {type: RequestMirror, requestMirror: {backendRef: {name: nope, port: 80}}},
            {type: URLRewrite, urlRewrite: {hostname: api.internal, path: {type: ReplacePrefixMatch, replacePrefixMatch: ''}}},
            {type: ExtensionRef, extensionRef: {group: weft.dev, kind: HTTPFault, name: slow}}],
          backendRefs: [{name: api-v1, port: 80, filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {remove: [server]}}]}]}]",
    ));
    let t = RouteIndex::new(&s).answer(&target(80, None));
    use pb::filter::Kind;
    let kinds: Vec<_> = t.rules[0]
        .filters
        .iter()
        .filter_map(|f| f.kind.clone())
        .collect();
    assert_eq!(
        kinds,
        [
            Kind::RequestHeaderModifier(pb::HeaderModifier {
                set: vec![pb::Header {
                    name: "X-A".into(),
                    value: "a".into()
                }],
                add: vec![pb::Header {
                    name: "x-b".into(),
                    value: "b".into()
                }],
                remove: vec!["x-c".into()],
            }),
            Kind::RequestMirror(pb::RequestMirror {
                backend: Some(pb::ServiceRef {
                    namespace: "shop".into(),
                    name: "api-v1".into(),
                    port: 80
                }),
                numerator: 25,
                denominator: 100,
            }),
            Kind::UrlRewrite(pb::UrlRewrite {
                hostname: "api.internal".into(),
                path: Some(pb::PathModifier {
                    kind: Some(pb::path_modifier::Kind::ReplacePrefixMatch(String::new())),
                }),
            }),
            Kind::Fault(pb::Fault {
                namespace: "shop".into(),
                name: "slow".into(),
                ..Default::default()
            }),
        ]
    );
    let backend_filters = &t.rules[0].backends[0].filters;
    assert!(matches!(
        backend_filters[0].kind,
        Some(Kind::ResponseHeaderModifier(ref h)) if h.remove == ["server"]
    ));
}

fn split(name: &str, at: Option<&str>, backends: &str) -> String {
    let at = at
        .map(|t| format!(", creationTimestamp: '{t}'"))
        .unwrap_or_default();
    format!(
        "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\n\
         metadata: {{name: {name}, namespace: shop{at}}}\n\
         spec: {{service: api, backends: {backends}}}\n---\n"
    )
}

#[test]
fn a_traffic_split_is_one_rule_without_match_and_splits_tcp() {
    let s = snap(&split(
        "canary",
        None,
        "[{service: api-v1, weight: 90}, {service: api-v2, weight: 10}]",
    ));
    let index = RouteIndex::new(&s);
    let t = index.answer(&target(80, None));
    assert_eq!(order(&t), ["trafficsplit/shop/canary/rule/0 /"]);
    assert_eq!(
        backends(&t.rules[0].backends),
        [
            "shop/api-v1:80 9",
            "500 BackendNotFound: Service shop/api-v2 has no port 80 (or named \"http\") 1"
        ]
    );
    assert_eq!(t.tcp_split, t.rules[0].backends);
    assert_eq!(t.routes, ["trafficsplit/shop/canary"]);
    // On the grpc port, each backend's port of that number, else of that name.
    let t = index.answer(&target(9090, None));
    assert_eq!(
        backends(&t.tcp_split),
        ["shop/api-v1:9090 9", "shop/api-v2:9091 1"]
    );
    // Consumers see it too (it is the producer's).
    assert_eq!(
        *index.answer(&target(80, Some("client"))),
        *index.answer(&target(80, None))
    );
    let status = split_statuses(&s);
    assert!(status[0].in_force, "{status:?}");
    assert!(
        status[0].message.contains("ports 80, 9090")
            || status[0].message.contains("port(s) 80, 9090"),
        "{status:?}"
    );
}

#[test]
fn an_http_route_shadows_a_traffic_split_and_the_older_split_wins() {
    let ts = split("canary", None, "[{service: api-v1, weight: 1}]");
    let r = route(
        "shop",
        "r",
        ", port: 80",
        "[{backendRefs: [{name: api-v1, port: 80}]}]",
    );
    let s = snap(&format!("{ts}{r}"));
    let index = RouteIndex::new(&s);
    assert_eq!(
        rule_names(&index.answer(&target(80, None))),
        ["httproute/shop/r/rule/0"]
    );
    assert!(index.answer(&target(80, None)).tcp_split.is_empty());
    assert_eq!(
        rule_names(&index.answer(&target(9090, None))),
        ["trafficsplit/shop/canary/rule/0"]
    );
    let status = &split_statuses(&s)[0];
    assert!(status.in_force);
    assert!(
        status
            .message
            .contains("shadowed on its other ports by httproute/shop/r"),
        "{status:?}"
    );

    let older = split(
        "a-new",
        Some("2024-01-02T00:00:00Z"),
        "[{service: api-v1, weight: 1}]",
    );
    let oldest = split(
        "z-old",
        Some("2024-01-01T00:00:00Z"),
        "[{service: api-v1, weight: 1}]",
    );
    let s = snap(&format!("{older}{oldest}"));
    let t = RouteIndex::new(&s).answer(&target(80, None));
    assert_eq!(t.routes, ["trafficsplit/shop/z-old"]);
    let status = split_statuses(&s);
    assert!(!status[0].in_force);
    assert!(
        status[0].message.contains("by trafficsplit/shop/z-old"),
        "{status:?}"
    );
    // A split of a Service that does not exist is in force nowhere.
    let s = snap(
        &split("lost", None, "[{service: api-v1, weight: 1}]")
            .replace("service: api,", "service: gone,"),
    );
    assert!(!split_statuses(&s)[0].in_force);
}

#[test]
fn a_headless_parent_takes_no_route() {
    let s = snap(
        &route("shop", "r", "", "[{}]")
            .replace("name: api, namespace: shop", "name: db, namespace: shop"),
    );
    let index = RouteIndex::new(&s);
    let t = index.answer(&RouteTarget {
        service: Target::Name {
            namespace: "shop".into(),
            name: "db".into(),
            port: 5432,
        },
        client_namespace: None,
        client_service_account: None,
    });
    assert!(t.rules.is_empty());
}

#[test]
fn a_table_too_large_to_send_answers_500_saying_why() {
    let headers = (0..16)
        .map(|i| format!("{{name: h{i}, value: '{}'}}", "v".repeat(4096)))
        .collect::<Vec<_>>()
        .join(", ");
    let matches = vec![format!("{{headers: [{headers}]}}"); 64].join(", ");
    let s = snap(&route(
        "shop",
        "big",
        "",
        &format!("[{{matches: [{matches}]}}]"),
    ));
    let t = RouteIndex::new(&s).answer(&target(80, None));
    assert!(t.encoded_len() < weft_api::MAX_UPDATE_BYTES);
    assert_eq!(t.matches.len(), 1);
    let got = backends(&t.rules[0].backends);
    assert!(
        got[0].starts_with("500 the route table of this Service port is"),
        "{got:?}"
    );
    assert_eq!(t.routes, ["httproute/shop/big"]);
}

#[test]
fn an_index_answers_the_same_for_the_same_snapshot() {
    let yaml = format!(
        "{}{}",
        route(
            "shop",
            "r",
            "",
            "[{backendRefs: [{name: api-v1, port: 80, weight: 9}, {name: api-v2, port: 8080}]}]"
        ),
        route("client", "c", "", "[{}]")
    );
    let (a, b) = (RouteIndex::new(&snap(&yaml)), RouteIndex::new(&snap(&yaml)));
    for client in [None, Some("client"), Some("x")] {
        for port in [80, 9090] {
            assert_eq!(
                a.answer(&target(port, client)),
                b.answer(&target(port, client))
            );
        }
    }
    assert_eq!(a.routes(), 2);
}

#[test]
fn targets_print_their_service_and_client() {
    assert_eq!(
        target(80, Some("client")).to_string(),
        "api.shop.svc:80 for namespace client"
    );
    assert_eq!(
        target(80, None).to_string(),
        "api.shop.svc:80 for an unauthenticated client"
    );
    let t = RouteTarget::parse("198.19.0.10:80", "cluster.local", None).expect("addr");
    assert_eq!(
        t.service,
        Target::Addr("198.19.0.10:80".parse().expect("addr"))
    );
    let named = RouteTarget::service(
        &pb::ServiceRef {
            namespace: "shop".into(),
            name: "api".into(),
            port: 80,
        },
        None,
    )
    .expect("a ref");
    assert_eq!(named, target(80, None));
    for bad in [("shop", "API", 80), ("shop", "api", 0), ("", "api", 80)] {
        let r = pb::ServiceRef {
            namespace: bad.0.into(),
            name: bad.1.into(),
            port: bad.2,
        };
        assert!(RouteTarget::service(&r, None).is_err(), "{bad:?}");
    }
}

fn fault(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: weft.dev/v1alpha1\nkind: HTTPFault\nmetadata: {{name: {name}, namespace: shop}}\nspec: {spec}\n---\n"
    )
}

#[test]
fn timeouts_and_retries_reach_the_rule() {
    let s = snap(&route(
        "shop",
        "r",
        ", port: 80",
        "[{timeouts: {request: 2s, backendRequest: 500ms}, retry: {attempts: 2, codes: [502, 503], backoff: 25ms}, backendRefs: [{name: api-v1, port: 80}]}, \
         {timeouts: {request: 0s}, retry: {codes: [503]}, backendRefs: [{name: api-v1, port: 80}]}]",
    ));
    let t = RouteIndex::new(&s).answer(&target(80, None));
    assert_eq!(
        t.rules[0].timeouts,
        Some(pb::Timeouts {
            request_ms: 2000,
            backend_request_ms: 500
        })
    );
    assert_eq!(
        t.rules[0].retry,
        Some(pb::Retry {
            attempts: 2,
            codes: vec![502, 503],
            backoff_ms: 25
        })
    );
    // `0s` disables a timeout; a retry without attempts retries nothing.
    assert_eq!(t.rules[1].timeouts, None);
    assert_eq!(t.rules[1].retry.as_ref().map(|r| r.attempts), Some(0));
}

#[test]
fn bad_timeouts_and_retries_are_refused_by_field() {
    for (rule, field) in [
        (
            "{timeouts: {request: 1s, backendRequest: 2s}}",
            "spec.rules[0].timeouts.backendRequest",
        ),
        (
            "{timeouts: {request: soon}}",
            "spec.rules[0].timeouts.request",
        ),
        ("{retry: {attempts: 11}}", "spec.rules[0].retry.attempts"),
        ("{retry: {attempts: -1}}", "spec.rules[0].retry.attempts"),
        ("{retry: {codes: [200]}}", "spec.rules[0].retry.codes[0]"),
        ("{retry: {backoff: 2h}}", "spec.rules[0].retry.backoff"),
    ] {
        let text = format!(
            "{SERVICES}---\n{}",
            route("shop", "r", "", &format!("[{rule}]"))
        );
        let e = crate::yaml::load_text(std::path::Path::new("r.yaml"), &text).expect_err(rule);
        assert_eq!(e[0].field, field, "{rule}: {e:?}");
    }
}

#[test]
fn a_rule_fault_is_resolved_inline_and_a_missing_one_is_sent_empty() {
    let rules = "[{filters: [{type: ExtensionRef, extensionRef: {group: weft.dev, kind: HTTPFault, name: flaky}}], backendRefs: [{name: api-v1, port: 80}]}, \
                 {matches: [{path: {value: /gone}}], filters: [{type: ExtensionRef, extensionRef: {group: weft.dev, kind: HTTPFault, name: gone}}], backendRefs: [{name: api-v1, port: 80}]}]";
    let s = snap(&format!(
        "{}{}",
        fault(
            "flaky",
            "{delay: {percent: 12.5, fixedDelay: 1m2s}, abort: {percent: 0.01, grpcStatus: DEADLINE_EXCEEDED}}"
        ),
        route("shop", "r", ", port: 80", rules)
    ));
    let t = RouteIndex::new(&s).answer(&target(80, None));
    let fault_of = |rule: usize| match t.rules[rule].filters[0].kind.clone() {
        Some(pb::filter::Kind::Fault(f)) => f,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        fault_of(0),
        pb::Fault {
            namespace: "shop".into(),
            name: "flaky".into(),
            delay: Some(pb::FaultDelay {
                per_million: 125_000,
                fixed_delay_ms: 62_000
            }),
            abort: Some(pb::FaultAbort {
                per_million: 100,
                status: Some(pb::fault_abort::Status::GrpcStatus(4)),
            }),
        }
    );
    let gone = fault_of(1);
    assert_eq!(
        (gone.delay, gone.abort),
        (None, None),
        "answered 500 by the proxy"
    );
}

#[test]
fn service_faults_go_to_the_clients_they_choose() {
    let s = snap(&format!(
        "{}{}{}",
        fault(
            "everyone",
            "{targetRef: {kind: Service, name: api}, abort: {percent: 10, httpStatus: 503}}"
        ),
        fault(
            "ops-robot",
            "{targetRef: {kind: Service, name: api}, from: [{namespace: ops, serviceAccount: robot}], delay: {percent: 100, fixedDelay: 1s}}"
        ),
        fault("unattached", "{abort: {percent: 100, httpStatus: 500}}"),
    ));
    let index = RouteIndex::new(&s);
    let names =
        |t: &pb::RouteTable| -> Vec<String> { t.faults.iter().map(|f| f.name.clone()).collect() };
    // No route on the Service: a table of faults alone, for every port.
    let anyone = index.answer(&target(80, None));
    assert!(anyone.matches.is_empty() && anyone.rules.is_empty());
    assert_eq!(names(&anyone), ["everyone"]);
    assert_eq!(
        names(&index.answer(&target(9090, Some("ops")))),
        ["everyone"]
    );
    let robot = index.answer(&target(80, Some("ops")).with_service_account(Some("robot".into())));
    assert_eq!(names(&robot), ["everyone", "ops-robot"]);
    let human = index.answer(&target(80, Some("ops")).with_service_account(Some("human".into())));
    assert_eq!(names(&human), ["everyone"]);
    // Another Service is untouched.
    let other = index.answer(&RouteTarget {
        service: Target::Name {
            namespace: "shop".into(),
            name: "api-v1".into(),
            port: 80,
        },
        client_namespace: None,
        client_service_account: None,
    });
    assert!(other.faults.is_empty());
    // With routes, the faults ride along with the routes' table.
    let s = snap(&format!(
        "{}{}",
        fault(
            "everyone",
            "{targetRef: {kind: Service, name: api}, abort: {percent: 10, httpStatus: 503}}"
        ),
        route(
            "shop",
            "r",
            ", port: 80",
            "[{backendRefs: [{name: api-v1, port: 80}]}]"
        )
    ));
    let t = RouteIndex::new(&s).answer(&target(80, None));
    assert_eq!(rule_names(&t), ["httproute/shop/r/rule/0"]);
    assert_eq!(names(&t), ["everyone"]);
}
