//! Matching and first-match order, case by case from the Gateway API's field docs and the intent
//! of its (mesh) conformance tests. The control plane orders the matches; these tables are
//! written in the order it would send them.

use super::*;

/// Request headers, as name and value.
type Headers<'a> = &'a [(&'a str, &'a str)];

/// Runs `(method, uri, headers) -> expected outcome` cases against a table.
fn check(table: &RouteTable, cases: &[(&str, &str, Headers<'_>, &str)]) {
    let mut failures = Vec::new();
    for (method, uri, headers, expected) in cases {
        let got = outcome(table, method, uri, headers);
        if got != *expected {
            failures.push(format!(
                "{method} {uri} {headers:?}: expected {expected}, got {got}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn an_empty_table_routes_nothing_and_a_table_with_routes_answers_404() {
    let empty = compile(vec![], vec![]);
    assert!(empty.is_empty());
    check(
        &empty,
        &[
            ("GET", "/", &[], "unrouted"),
            ("POST", "/x", &[], "unrouted"),
        ],
    );
    assert!(RouteTable::empty().is_empty());

    let table = compile(vec![exact(0, "/only")], vec![rule("only")]);
    check(
        &table,
        &[
            ("GET", "/only", &[], "only"),
            ("GET", "/", &[], "404"),
            ("GET", "/only/", &[], "404"),
        ],
    );
}

#[test]
fn exact_and_prefix_paths_by_whole_segments() {
    // As MeshHTTPRouteMatching and HTTPRouteExactPathMatching expect.
    let table = compile(
        vec![
            exact(0, "/exact"),
            prefix(1, "/v2"),
            prefix(2, "/v3/"),
            prefix(3, "/"),
        ],
        vec![rule("exact"), rule("v2"), rule("v3"), rule("root")],
    );
    check(
        &table,
        &[
            ("GET", "/exact", &[], "exact"),
            ("GET", "/exact/", &[], "root"),
            ("GET", "/exactly", &[], "root"),
            ("GET", "/Exact", &[], "root"),
            ("GET", "/exact?q=1", &[], "exact"),
            ("GET", "/v2", &[], "v2"),
            ("GET", "/v2/", &[], "v2"),
            ("GET", "/v2/example", &[], "v2"),
            ("GET", "/v2?x=y", &[], "v2"),
            ("GET", "/v2example", &[], "root"),
            ("GET", "/V2", &[], "root"),
            ("GET", "/foo/v2/example", &[], "root"),
            // A trailing `/` in the prefix is ignored.
            ("GET", "/v3", &[], "v3"),
            ("GET", "/v3/", &[], "v3"),
            ("GET", "/v3/a/b", &[], "v3"),
            ("GET", "/v3a", &[], "root"),
            ("GET", "/", &[], "root"),
            ("GET", "http://echo/v2/x", &[], "v2"),
            ("GET", "http://echo", &[], "root"),
        ],
    );
}

#[test]
fn the_root_prefix_and_a_match_without_path_match_every_request() {
    let table = compile(
        vec![spec::Match {
            rule: 0,
            ..Default::default()
        }],
        vec![rule("all")],
    );
    check(
        &table,
        &[
            ("GET", "/", &[], "all"),
            ("GET", "/a/b", &[], "all"),
            ("OPTIONS", "*", &[], "all"),
            ("CONNECT", "echo:80", &[], "all"),
        ],
    );
    let root = compile(vec![prefix(0, "/")], vec![rule("all")]);
    check(
        &root,
        &[("OPTIONS", "*", &[], "all"), ("GET", "/x", &[], "all")],
    );
    // Any other prefix needs a path that starts with it.
    let api = compile(vec![prefix(0, "/api")], vec![rule("api")]);
    check(
        &api,
        &[
            ("OPTIONS", "*", &[], "404"),
            ("CONNECT", "echo:80", &[], "404"),
        ],
    );
}

#[test]
fn regex_paths_match_the_whole_path() {
    let table = compile(
        vec![
            spec::Match {
                rule: 0,
                path: Some(PathMatch::Regex("/api/v[0-9]+/users/[^/]+".into())),
                ..Default::default()
            },
            prefix(1, "/"),
        ],
        vec![rule("users"), rule("root")],
    );
    check(
        &table,
        &[
            ("GET", "/api/v1/users/ann", &[], "users"),
            ("GET", "/api/v22/users/bob?full=1", &[], "users"),
            ("GET", "/api/vx/users/ann", &[], "root"),
            ("GET", "/api/v1/users/ann/cart", &[], "root"),
            ("GET", "/x/api/v1/users/ann", &[], "root"),
            ("GET", "/API/v1/users/ann", &[], "root"),
        ],
    );
}

#[test]
fn methods() {
    // HTTPRouteMethodMatching: a method match only for that method; a path-only match for all.
    let table = compile(
        vec![
            spec::Match {
                rule: 0,
                method: Some("POST".into()),
                ..prefix(0, "/")
            },
            spec::Match {
                rule: 1,
                method: Some("GET".into()),
                ..prefix(1, "/")
            },
            prefix(2, "/path"),
        ],
        vec![rule("post"), rule("get"), rule("any")],
    );
    check(
        &table,
        &[
            ("POST", "/", &[], "post"),
            ("GET", "/", &[], "get"),
            ("HEAD", "/", &[], "404"),
            ("DELETE", "/path/x", &[], "any"),
            ("PATCH", "/", &[], "404"),
        ],
    );
}

#[test]
fn headers_exact_and_regex_all_must_match() {
    let table = compile(
        vec![
            spec::Match {
                headers: vec![header("version", "two"), header("color", "orange")],
                ..prefix(1, "/")
            },
            spec::Match {
                headers: vec![header("Version", "one")],
                ..prefix(0, "/")
            },
            spec::Match {
                headers: vec![header("version", "two")],
                ..prefix(1, "/")
            },
            spec::Match {
                headers: vec![spec::HeaderMatch {
                    name: "x-canary".into(),
                    value: ValueMatch::Regex("1|true|yes".into()),
                }],
                ..prefix(2, "/")
            },
        ],
        vec![rule("v1"), rule("v2"), rule("canary")],
    );
    check(
        &table,
        &[
            ("GET", "/", &[("version", "one")], "v1"),
            // Names are case-insensitive, values are not.
            ("GET", "/", &[("VERSION", "one")], "v1"),
            ("GET", "/", &[("version", "One")], "404"),
            ("GET", "/", &[("version", "two")], "v2"),
            ("GET", "/", &[("version", "two"), ("color", "orange")], "v2"),
            ("GET", "/", &[("version", "two"), ("color", "blue")], "v2"),
            ("GET", "/", &[("color", "orange")], "404"),
            ("GET", "/", &[("version", "three")], "404"),
            ("GET", "/", &[("x-canary", "true")], "canary"),
            ("GET", "/", &[("X-Canary", "1")], "canary"),
            ("GET", "/", &[("x-canary", "truest")], "404"),
            ("GET", "/", &[("x-canary", "")], "404"),
            // A repeated header matches if any of its values does.
            ("GET", "/", &[("version", "zero"), ("version", "one")], "v1"),
            ("GET", "/", &[], "404"),
        ],
    );
}

#[test]
fn of_two_header_or_query_entries_with_one_name_only_the_first_counts() {
    let table = compile(
        vec![spec::Match {
            headers: vec![header("version", "one"), header("Version", "two")],
            query: vec![query("a", "1"), query("a", "2")],
            ..prefix(0, "/")
        }],
        vec![rule("first")],
    );
    check(
        &table,
        &[
            ("GET", "/?a=1", &[("version", "one")], "first"),
            ("GET", "/?a=2", &[("version", "one")], "404"),
            ("GET", "/?a=1", &[("version", "two")], "404"),
        ],
    );
}

#[test]
fn query_parameters_as_the_mesh_conformance_test_expects() {
    // MeshHTTPRouteQueryParamMatching's route, with its matches in the order the control plane
    // ranks them (longest prefix, then number of headers, then rule order).
    let with = |m: spec::Match, queries: Vec<spec::QueryMatch>| spec::Match {
        query: queries,
        ..m
    };
    let table = compile(
        vec![
            with(prefix(2, "/path1"), vec![query("animal", "whale")]),
            with(prefix(4, "/path3"), vec![query("animal", "shark")]),
            spec::Match {
                headers: vec![header("version", "three")],
                ..with(prefix(4, "/path4"), vec![query("animal", "kraken")])
            },
            prefix(5, "/path5"),
            spec::Match {
                headers: vec![header("version", "one")],
                ..with(prefix(3, "/"), vec![query("animal", "whale")])
            },
            with(prefix(0, "/"), vec![query("animal", "whale")]),
            with(prefix(1, "/"), vec![query("animal", "dolphin")]),
            with(prefix(6, "/"), vec![query("animal", "hydra")]),
        ],
        vec![
            rule("r0-v1"),
            rule("r1-v2"),
            rule("r2-v1"),
            rule("r3-v2"),
            rule("r4-v1"),
            rule("r5-v1"),
            rule("r6-v2"),
        ],
    );
    check(
        &table,
        &[
            ("GET", "/?animal=whale", &[], "r0-v1"),
            ("GET", "/?animal=dolphin", &[], "r1-v2"),
            ("GET", "/?animal=whale&otherparam=irrelevant", &[], "r0-v1"),
            ("GET", "/?animal=dolphin&color=yellow", &[], "r1-v2"),
            ("GET", "/?color=blue", &[], "404"),
            ("GET", "/?animal=dog", &[], "404"),
            ("GET", "/?animal=whaledolphin", &[], "404"),
            ("GET", "/", &[], "404"),
            ("GET", "/path1?animal=whale", &[], "r2-v1"),
            ("GET", "/?animal=whale", &[("version", "one")], "r3-v2"),
            ("GET", "/path3?animal=shark", &[], "r4-v1"),
            (
                "GET",
                "/path4?animal=kraken",
                &[("version", "three")],
                "r4-v1",
            ),
            ("GET", "/?animal=shark", &[], "404"),
            ("GET", "/path4?animal=kraken", &[], "404"),
            ("GET", "/path5?animal=hydra", &[], "r5-v1"),
            ("GET", "/?animal=hydra", &[], "r6-v2"),
            // Names are exact; values are percent-decoded; the first occurrence counts.
            ("GET", "/?Animal=whale", &[], "404"),
            ("GET", "/?animal=wh%61le", &[], "r0-v1"),
            ("GET", "/?an%69mal=dolphin", &[], "r1-v2"),
            ("GET", "/?animal=dolphin&animal=whale", &[], "r1-v2"),
            ("GET", "/?x=1&animal=whale", &[], "r0-v1"),
        ],
    );
}

#[test]
fn query_regex() {
    let table = compile(
        vec![spec::Match {
            query: vec![spec::QueryMatch {
                name: "id".into(),
                value: ValueMatch::Regex("[0-9]{1,4}".into()),
            }],
            ..prefix(0, "/")
        }],
        vec![rule("numeric")],
    );
    check(
        &table,
        &[
            ("GET", "/?id=42", &[], "numeric"),
            ("GET", "/?id=%34%32", &[], "numeric"),
            ("GET", "/?id=12345", &[], "404"),
            ("GET", "/?id=", &[], "404"),
            ("GET", "/?id", &[], "404"),
            ("GET", "/?id=4a", &[], "404"),
        ],
    );
}

#[test]
fn the_first_match_that_holds_wins() {
    // Both matches hold for `/a/b`: the order given decides, whatever the rules' order.
    let rules = vec![rule("broad"), rule("narrow")];
    let narrow_first = compile(vec![prefix(1, "/a/b"), prefix(0, "/a")], rules.clone());
    let broad_first = compile(vec![prefix(0, "/a"), prefix(1, "/a/b")], rules);
    check(
        &narrow_first,
        &[
            ("GET", "/a/b", &[], "narrow"),
            ("GET", "/a/c", &[], "broad"),
        ],
    );
    check(
        &broad_first,
        &[("GET", "/a/b", &[], "broad"), ("GET", "/a/c", &[], "broad")],
    );
}

#[test]
fn one_rule_with_several_matches_is_their_or() {
    // MeshHTTPRouteMatching: rule 0 is `PathPrefix /` OR `version: one`, rule 1 `/v2` OR
    // `version: two`, ranked: /v2, /, then the header matches (each with an implicit `/`).
    let table = compile(
        vec![
            prefix(1, "/v2"),
            spec::Match {
                headers: vec![header("version", "one")],
                ..prefix(0, "/")
            },
            spec::Match {
                headers: vec![header("version", "two")],
                ..prefix(1, "/")
            },
            prefix(0, "/"),
        ],
        vec![rule("v1"), rule("v2")],
    );
    check(
        &table,
        &[
            ("GET", "/", &[], "v1"),
            ("GET", "/example", &[], "v1"),
            ("GET", "/", &[("Version", "one")], "v1"),
            ("GET", "/v2", &[], "v2"),
            ("GET", "/v2/example", &[], "v2"),
            ("GET", "/", &[("Version", "two")], "v2"),
            ("GET", "/v2/", &[], "v2"),
            ("GET", "/v2example", &[], "v1"),
            ("GET", "/foo/v2/example", &[], "v1"),
        ],
    );
}

#[test]
fn the_routed_request_knows_its_match_and_prefix() {
    let table = compile(
        vec![exact(0, "/e"), prefix(0, "/p/"), prefix(1, "/")],
        vec![rule("a"), rule("b")],
    );
    let routed = |uri: &str| match table.route_parts(&request("GET", uri, &[])) {
        Route::Matched(routed) => (
            routed.matched().index(),
            routed.matched().prefix().map(String::from),
        ),
        other => panic!("{uri}: {other:?}"),
    };
    assert_eq!(routed("/e"), (0, None));
    assert_eq!(routed("/p/x"), (1, Some("/p".into())));
    assert_eq!(routed("/z"), (2, Some("".into())));
    assert_eq!(table.matches()[1].rule_index(), 0);
    assert_eq!(table.rules()[1].index(), 1);
}
