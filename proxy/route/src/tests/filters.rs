//! Filters: header modifiers (request, response, per backend), both rewrites with and without
//! query strings, redirects' `Location`, mirrors and the unimplemented fault.

use http::header::HOST;
use http::{HeaderValue, StatusCode};

use super::*;
use crate::spec::{Filter, Fraction, HeaderModifier, PathModifier, RequestRedirect, UrlRewrite};
use crate::Answer;

fn modifier(set: &[(&str, &str)], add: &[(&str, &str)], remove: &[&str]) -> HeaderModifier {
    let pairs = |list: &[(&str, &str)]| {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    };
    HeaderModifier {
        set: pairs(set),
        add: pairs(add),
        remove: remove.iter().map(|n| n.to_string()).collect(),
    }
}

/// Routes `uri` (with `headers`) through a one-rule table (`PathPrefix match_prefix`) and applies
/// the rule's request filters: the request after them, or the answer.
fn filtered(
    match_prefix: &str,
    filters: Vec<Filter>,
    uri: &str,
    headers: &[(&str, &str)],
) -> Result<Parts, (StatusCode, String)> {
    let table = compile(vec![prefix(0, match_prefix)], vec![rule_with("r", filters)]);
    let mut parts = request("GET", uri, headers);
    let Route::Matched(routed) = table.route_parts(&parts) else {
        panic!("{uri} does not match {match_prefix}");
    };
    match routed.filter_request(&mut parts, 80) {
        Ok(()) => Ok(parts),
        Err(Answer::Redirect { status, location }) => {
            Err((status, location.to_str().expect("ASCII").to_owned()))
        }
        Err(Answer::Error { status, reason }) => Err((status, reason.to_owned())),
    }
}

fn rewritten(match_prefix: &str, rewrite: UrlRewrite, uri: &str) -> String {
    let parts = filtered(match_prefix, vec![Filter::UrlRewrite(rewrite)], uri, &[])
        .unwrap_or_else(|answer| panic!("{uri}: {answer:?}"));
    parts.uri.to_string()
}

fn redirected(
    match_prefix: &str,
    redirect: RequestRedirect,
    uri: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    match filtered(
        match_prefix,
        vec![Filter::RequestRedirect(redirect)],
        uri,
        headers,
    ) {
        Err((status, location)) => (status.as_u16(), location),
        Ok(parts) => panic!("{uri} was not redirected: {parts:?}"),
    }
}

fn path_rewrite(path: PathModifier) -> UrlRewrite {
    UrlRewrite {
        hostname: None,
        path: Some(path),
    }
}

fn redirect() -> RequestRedirect {
    RequestRedirect {
        scheme: None,
        hostname: None,
        path: None,
        port: None,
        status_code: 302,
    }
}

#[test]
fn request_header_modifier_sets_adds_and_removes_case_insensitively() {
    // MeshHTTPRouteRequestHeaderModifier's cases.
    let filters = vec![Filter::RequestHeaderModifier(modifier(
        &[("X-Header-Set", "set-overwrites-values")],
        &[("X-Header-Add", "add-appends-values")],
        &["X-Header-Remove"],
    ))];
    let parts = filtered(
        "/",
        filters.clone(),
        "/set",
        &[
            ("some-other-header", "val"),
            ("x-header-set", "some-other-value"),
            ("X-HEADER-SET", "second"),
        ],
    )
    .expect("forwarded");
    assert_eq!(
        joined(&parts.headers, "x-header-set").as_deref(),
        Some("set-overwrites-values")
    );
    assert_eq!(
        joined(&parts.headers, "some-other-header").as_deref(),
        Some("val")
    );
    assert_eq!(
        joined(&parts.headers, "x-header-add").as_deref(),
        Some("add-appends-values")
    );

    let parts = filtered(
        "/",
        filters.clone(),
        "/add",
        &[("x-header-add", "some-other-value")],
    )
    .expect("forwarded");
    assert_eq!(
        joined(&parts.headers, "x-header-add").as_deref(),
        Some("some-other-value,add-appends-values")
    );

    let parts = filtered(
        "/",
        filters,
        "/remove",
        &[
            ("X-Header-Remove", "val"),
            ("x-header-remove", "v2"),
            ("keep", "k"),
        ],
    )
    .expect("forwarded");
    assert_eq!(joined(&parts.headers, "x-header-remove"), None);
    assert_eq!(joined(&parts.headers, "keep").as_deref(), Some("k"));
}

#[test]
fn response_header_modifier_applies_to_the_response_then_the_backends() {
    let backend_filters = vec![
        Filter::RequestHeaderModifier(modifier(&[("x-backend", "v1")], &[], &["x-drop"])),
        Filter::ResponseHeaderModifier(modifier(
            &[("x-served-by", "v1")],
            &[("x-both", "backend")],
            &[],
        )),
    ];
    let table = compile(
        vec![prefix(0, "/")],
        vec![spec::Rule {
            name: "r".into(),
            filters: vec![Filter::ResponseHeaderModifier(modifier(
                &[("X-Header-Set", "set-overwrites-values")],
                &[("X-Header-Add", "add-appends-values"), ("x-both", "rule")],
                &["X-Header-Remove", "server"],
            ))],
            backends: vec![spec::Backend {
                filters: backend_filters,
                ..backend("v1", 1)
            }],
            ..Default::default()
        }],
    );
    let mut parts = request("GET", "/", &[("x-drop", "1")]);
    let Route::Matched(routed) = table.route_parts(&parts) else {
        panic!("no route");
    };
    routed.filter_request(&mut parts, 80).expect("forwarded");
    let backend = routed.pick(0).expect("a backend");
    backend.filter_request(&mut parts.headers);
    assert_eq!(joined(&parts.headers, "x-backend").as_deref(), Some("v1"));
    assert_eq!(joined(&parts.headers, "x-drop"), None);
    // Response filters never touch the request.
    assert_eq!(joined(&parts.headers, "x-header-set"), None);

    let mut response = HeaderMap::new();
    response.insert("x-header-set", HeaderValue::from_static("original"));
    response.insert("x-header-add", HeaderValue::from_static("original"));
    response.insert("x-header-remove", HeaderValue::from_static("gone"));
    response.insert("server", HeaderValue::from_static("app"));
    routed.filter_response(&mut response);
    backend.filter_response(&mut response);
    assert_eq!(
        joined(&response, "x-header-set").as_deref(),
        Some("set-overwrites-values")
    );
    assert_eq!(
        joined(&response, "x-header-add").as_deref(),
        Some("original,add-appends-values")
    );
    assert_eq!(joined(&response, "x-header-remove"), None);
    assert_eq!(joined(&response, "server"), None);
    assert_eq!(joined(&response, "x-served-by").as_deref(), Some("v1"));
    assert_eq!(joined(&response, "x-both").as_deref(), Some("rule,backend"));
}

#[test]
fn replace_prefix_match_follows_the_gateway_api_table() {
    // HTTPPathModifier.ReplacePrefixMatch's table: request path, prefix, replacement, result.
    let rows = [
        ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
        ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
        ("/foo/bar", "/foo/", "/xyz", "/xyz/bar"),
        ("/foo/bar", "/foo/", "/xyz/", "/xyz/bar"),
        ("/foo", "/foo", "/xyz", "/xyz"),
        ("/foo/", "/foo", "/xyz", "/xyz/"),
        ("/foo/bar", "/foo", "", "/bar"),
        ("/foo/", "/foo", "", "/"),
        ("/foo", "/foo", "", "/"),
        ("/foo/", "/foo", "/", "/"),
        ("/foo", "/foo", "/", "/"),
        // MeshHTTPRouteRewritePath's cases.
        ("/prefix/one/two", "/prefix/one", "/one", "/one/two"),
        ("/strip-prefix/three", "/strip-prefix", "/", "/three"),
        ("/strip-prefix", "/strip-prefix", "/", "/"),
        (
            "/prefix/rewrite-path-and-modify-headers/one",
            "/prefix/rewrite-path-and-modify-headers",
            "/prefix",
            "/prefix/one",
        ),
        // The root prefix: the replacement goes in front.
        ("/a/b", "/", "/v1", "/v1/a/b"),
        ("/", "/", "/v1", "/v1/"),
    ];
    for (path, matched, replacement, expected) in rows {
        let rewrite = path_rewrite(PathModifier::ReplacePrefixMatch(replacement.into()));
        assert_eq!(
            rewritten(matched, rewrite, path),
            expected,
            "{path} with prefix {matched} -> {replacement:?}"
        );
    }
}

#[test]
fn rewrites_keep_the_query_string() {
    let prefix_rewrite = || path_rewrite(PathModifier::ReplacePrefixMatch("/one".into()));
    assert_eq!(
        rewritten("/prefix/one", prefix_rewrite(), "/prefix/one/two?a=1&b=%20"),
        "/one/two?a=1&b=%20"
    );
    assert_eq!(
        rewritten("/prefix/one", prefix_rewrite(), "/prefix/one?"),
        "/one?"
    );
    let full = || path_rewrite(PathModifier::ReplaceFullPath("/one".into()));
    assert_eq!(rewritten("/full/one", full(), "/full/one/two"), "/one");
    assert_eq!(
        rewritten("/full/one", full(), "/full/one/two?x=y"),
        "/one?x=y"
    );
    // An absolute URI (HTTP/2) keeps its scheme and authority.
    assert_eq!(
        rewritten("/full/one", full(), "http://echo:8080/full/one/two?x=y"),
        "http://echo:8080/one?x=y"
    );
}

#[test]
fn rewrite_hostname_sets_host_and_the_authority() {
    let rewrite = || UrlRewrite {
        hostname: Some("one.example.org".into()),
        path: None,
    };
    // HTTP/1: the Host header.
    let parts = filtered(
        "/",
        vec![Filter::UrlRewrite(rewrite())],
        "/one?x=1",
        &[("host", "echo:80")],
    )
    .expect("forwarded");
    assert_eq!(parts.headers.get(HOST).expect("host"), "one.example.org");
    assert_eq!(parts.uri, "/one?x=1");
    // No Host and no authority: Host is set.
    let parts = filtered("/", vec![Filter::UrlRewrite(rewrite())], "/one", &[]).expect("forwarded");
    assert_eq!(parts.headers.get(HOST).expect("host"), "one.example.org");
    // HTTP/2: the authority, and no Host header made up.
    let parts = filtered(
        "/",
        vec![Filter::UrlRewrite(rewrite())],
        "http://echo:80/one?x=1",
        &[],
    )
    .expect("forwarded");
    assert_eq!(parts.uri, "http://one.example.org/one?x=1");
    assert!(parts.headers.get(HOST).is_none());
    // Both at once.
    let both = UrlRewrite {
        hostname: Some("two.example.org".into()),
        path: Some(PathModifier::ReplacePrefixMatch("/v2".into())),
    };
    let parts = filtered(
        "/api",
        vec![Filter::UrlRewrite(both)],
        "https://echo/api/x?q",
        &[("host", "echo")],
    )
    .expect("forwarded");
    assert_eq!(parts.uri, "https://two.example.org/v2/x?q");
    assert_eq!(parts.headers.get(HOST).expect("host"), "two.example.org");
}

#[test]
fn rewrite_then_header_modifier_in_order() {
    // MeshHTTPRouteRewritePath: /full/rewrite-path-and-modify-headers/test -> /test with headers.
    let filters = vec![
        Filter::UrlRewrite(path_rewrite(PathModifier::ReplaceFullPath("/test".into()))),
        Filter::RequestHeaderModifier(modifier(
            &[("X-Header-Set", "set-overwrites-values")],
            &[
                ("X-Header-Add", "header-val-1"),
                ("X-Header-Add-Append", "header-val-2"),
            ],
            &["X-Header-Remove"],
        )),
    ];
    let parts = filtered(
        "/full/rewrite-path-and-modify-headers",
        filters,
        "/full/rewrite-path-and-modify-headers/test",
        &[
            ("x-header-set", "x"),
            ("x-header-add-append", "append-val-1"),
            ("x-header-remove", "y"),
        ],
    )
    .expect("forwarded");
    assert_eq!(parts.uri, "/test");
    assert_eq!(
        joined(&parts.headers, "x-header-set").as_deref(),
        Some("set-overwrites-values")
    );
    assert_eq!(
        joined(&parts.headers, "x-header-add").as_deref(),
        Some("header-val-1")
    );
    assert_eq!(
        joined(&parts.headers, "x-header-add-append").as_deref(),
        Some("append-val-1,header-val-2")
    );
    assert_eq!(joined(&parts.headers, "x-header-remove"), None);
}

#[test]
fn redirect_location_scheme_host_port_and_path() {
    let host = &[("host", "echo")][..];
    // (the match's prefix, the filter, the request's URI and headers, status and Location)
    type Case<'a> = (
        &'a str,
        RequestRedirect,
        &'a str,
        &'a [(&'a str, &'a str)],
        (u16, &'a str),
    );
    let cases: Vec<Case<'_>> = vec![
        // MeshHTTPRouteRedirectScheme / Port / HostAndStatus.
        (
            "/scheme",
            RequestRedirect {
                scheme: Some("https".into()),
                ..redirect()
            },
            "/scheme",
            host,
            (302, "https://echo/scheme"),
        ),
        (
            "/port",
            RequestRedirect {
                port: Some(8083),
                ..redirect()
            },
            "/port",
            host,
            (302, "http://echo:8083/port"),
        ),
        (
            "/port-and-host",
            RequestRedirect {
                port: Some(8083),
                hostname: Some("example.org".into()),
                ..redirect()
            },
            "/port-and-host",
            host,
            (302, "http://example.org:8083/port-and-host"),
        ),
        (
            "/s",
            RequestRedirect {
                port: Some(8083),
                status_code: 301,
                ..redirect()
            },
            "/s",
            host,
            (301, "http://echo:8083/s"),
        ),
        (
            "/h",
            RequestRedirect {
                hostname: Some("example.org".into()),
                ..redirect()
            },
            "/h",
            host,
            (302, "http://example.org/h"),
        ),
        // The default port of the scheme is left out; another is kept.
        (
            "/",
            RequestRedirect {
                scheme: Some("https".into()),
                port: Some(443),
                ..redirect()
            },
            "/a",
            host,
            (302, "https://echo/a"),
        ),
        (
            "/",
            RequestRedirect {
                scheme: Some("https".into()),
                port: Some(8443),
                ..redirect()
            },
            "/a",
            host,
            (302, "https://echo:8443/a"),
        ),
        (
            "/",
            RequestRedirect {
                scheme: Some("http".into()),
                port: Some(80),
                ..redirect()
            },
            "/a",
            host,
            (302, "http://echo/a"),
        ),
        (
            "/",
            RequestRedirect {
                scheme: Some("https".into()),
                port: Some(80),
                ..redirect()
            },
            "/a",
            host,
            (302, "https://echo:80/a"),
        ),
        // No scheme and no port: the request's port (80 here) and scheme; the Host's port goes.
        (
            "/",
            redirect(),
            "/a",
            &[("host", "echo:8080")],
            (302, "http://echo/a"),
        ),
        // An https request keeps https; port 80 is then not its default.
        (
            "/",
            redirect(),
            "https://echo/a",
            &[],
            (302, "https://echo:80/a"),
        ),
        // Paths: MeshHTTPRouteRedirectPath's cases, and the query string is kept.
        (
            "/original-prefix",
            RequestRedirect {
                path: Some(PathModifier::ReplacePrefixMatch(
                    "/replacement-prefix".into(),
                )),
                ..redirect()
            },
            "/original-prefix/lemon",
            host,
            (302, "http://echo/replacement-prefix/lemon"),
        ),
        (
            "/full",
            RequestRedirect {
                path: Some(PathModifier::ReplaceFullPath(
                    "/full-path-replacement".into(),
                )),
                ..redirect()
            },
            "/full/path/original",
            host,
            (302, "http://echo/full-path-replacement"),
        ),
        (
            "/path-and-host",
            RequestRedirect {
                hostname: Some("example.org".into()),
                path: Some(PathModifier::ReplacePrefixMatch(
                    "/replacement-prefix".into(),
                )),
                ..redirect()
            },
            "/path-and-host?x=1",
            host,
            (302, "http://example.org/replacement-prefix?x=1"),
        ),
        (
            "/full-path-and-status",
            RequestRedirect {
                path: Some(PathModifier::ReplaceFullPath("/replacement-full".into())),
                status_code: 301,
                ..redirect()
            },
            "/full-path-and-status",
            host,
            (301, "http://echo/replacement-full"),
        ),
        (
            "/",
            RequestRedirect {
                scheme: Some("https".into()),
                ..redirect()
            },
            "/a?b=c&d",
            host,
            (302, "https://echo/a?b=c&d"),
        ),
        // The host from an absolute URI, without its port.
        (
            "/",
            RequestRedirect {
                scheme: Some("https".into()),
                ..redirect()
            },
            "http://echo:8080/a",
            &[],
            (302, "https://echo/a"),
        ),
        (
            "/",
            redirect(),
            "/v6",
            &[("host", "[::1]:80")],
            (302, "http://[::1]/v6"),
        ),
        // Neither Host nor authority: a relative Location.
        (
            "/",
            RequestRedirect {
                scheme: Some("https".into()),
                ..redirect()
            },
            "/a?q",
            &[],
            (302, "/a?q"),
        ),
        // An unusable Host is no host.
        ("/", redirect(), "/a", &[("host", "bad host")], (302, "/a")),
        // `OPTIONS *` redirects as `/`.
        (
            "/",
            redirect(),
            "*",
            &[("host", "echo")],
            (302, "http://echo/"),
        ),
    ];
    for (match_prefix, redirect, uri, headers, (status, location)) in cases {
        assert_eq!(
            redirected(match_prefix, redirect.clone(), uri, headers),
            (status, location.to_owned()),
            "{uri} {headers:?} with {redirect:?}"
        );
    }
}

#[test]
fn a_redirect_answers_before_later_filters_and_the_backends() {
    let table = compile(
        vec![prefix(0, "/")],
        vec![spec::Rule {
            name: "r".into(),
            filters: vec![
                Filter::RequestRedirect(RequestRedirect {
                    hostname: Some("example.org".into()),
                    ..redirect()
                }),
                Filter::RequestHeaderModifier(modifier(&[("x-after", "1")], &[], &[])),
            ],
            // A redirect rule usually has no backends at all.
            backends: vec![],
            ..Default::default()
        }],
    );
    let mut parts = request("GET", "/x", &[]);
    let Route::Matched(routed) = table.route_parts(&parts) else {
        panic!("no route");
    };
    match routed.filter_request(&mut parts, 80) {
        Err(Answer::Redirect { status, location }) => {
            assert_eq!(status, StatusCode::FOUND);
            assert_eq!(location, "http://example.org/x");
        }
        other => panic!("{other:?}"),
    }
    assert!(parts.headers.get("x-after").is_none());
}

#[test]
fn mirrors_sample_their_fraction() {
    let mirror = |fraction| {
        let table = compile(
            vec![prefix(0, "/")],
            vec![rule_with(
                "r",
                vec![Filter::RequestMirror(spec::RequestMirror {
                    backend: service("shadow"),
                    fraction,
                })],
            )],
        );
        let sweep: Vec<bool> = {
            let m = table.rules()[0].mirrors().next().expect("a mirror");
            assert_eq!(m.service().name, "shadow");
            (0..=u16::MAX)
                .map(|i| m.sample(u32::from(i) << 16 | u32::from(i)))
                .collect()
        };
        sweep.iter().filter(|&&mirrored| mirrored).count()
    };
    assert_eq!(mirror(Fraction::ALL), 65_536);
    assert_eq!(mirror(Fraction::percent(100)), 65_536);
    assert_eq!(mirror(Fraction::percent(0)), 0);
    assert_eq!(mirror(Fraction::percent(50)), 32_768);
    let third = mirror(Fraction {
        numerator: 1,
        denominator: 3,
    });
    assert!((21_800..=21_900).contains(&third), "{third}");
}

#[test]
fn an_unresolved_fault_answers_500_and_is_never_skipped() {
    let filters = vec![
        Filter::RequestHeaderModifier(modifier(&[("x-a", "1")], &[], &[])),
        Filter::RequestRedirect(redirect()),
        Filter::Fault(spec::FaultSpec {
            name: "slow".into(),
            ..Default::default()
        }),
    ];
    match filtered("/", filters, "/", &[]) {
        Err((status, reason)) => {
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
            assert!(reason.contains("HTTPFault \"slow\""), "{reason}");
        }
        Ok(parts) => panic!("forwarded: {parts:?}"),
    }
}
