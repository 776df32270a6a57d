//! A table with anything wrong is refused whole, with an error naming the place, the field and
//! the reason.

use super::*;
use crate::spec::{Filter, Fraction, PathModifier, RequestMirror, RequestRedirect, UrlRewrite};
use crate::{CompileError, Reason, Site};

fn refused(table: spec::RouteTable) -> CompileError {
    match RouteTable::compile(&table) {
        Err(e) => e,
        Ok(t) => panic!("compiled: {t:?}"),
    }
}

fn table(matches: Vec<spec::Match>, rules: Vec<spec::Rule>) -> spec::RouteTable {
    spec::RouteTable {
        matches,
        rules,
        tcp_split: vec![],
        ..Default::default()
    }
}

fn rule_site(index: usize, name: &str) -> Site {
    Site::Rule {
        index,
        name: name.into(),
    }
}

/// Checks site and field, that the reason is the one expected, and that the message says both.
fn check(e: &CompileError, site: Site, field: &str, reason: fn(&Reason) -> bool) {
    assert_eq!(e.site, site, "{e}");
    assert_eq!(e.field, field, "{e}");
    assert!(reason(&e.reason), "unexpected reason: {e}");
    let message = e.to_string();
    assert!(
        message.contains(&e.site.to_string()) && message.contains(field),
        "{message}"
    );
}

#[test]
fn match_errors_name_the_match_and_field() {
    let one_rule = || vec![rule("r")];
    let e = refused(table(vec![prefix(3, "/")], one_rule()));
    check(&e, Site::Match { index: 0 }, "rule", |r| {
        matches!(r, Reason::NoSuchRule { rule: 3, rules: 1 })
    });

    let e = refused(table(vec![prefix(0, "/"), prefix(0, "api")], one_rule()));
    check(&e, Site::Match { index: 1 }, "path.prefix", |r| {
        matches!(r, Reason::PathNotAbsolute { .. })
    });

    let e = refused(table(vec![exact(0, "/a//b")], one_rule()));
    check(&e, Site::Match { index: 0 }, "path.exact", |r| {
        matches!(r, Reason::PathDoubleSlash { .. })
    });

    let e = refused(table(vec![exact(0, "/a b")], one_rule()));
    check(&e, Site::Match { index: 0 }, "path.exact", |r| {
        matches!(r, Reason::InvalidPath { .. })
    });

    let e = refused(table(
        vec![spec::Match {
            path: Some(spec::PathMatch::Regex("/api/(".into())),
            ..prefix(0, "/")
        }],
        one_rule(),
    ));
    check(&e, Site::Match { index: 0 }, "path.regex", |r| {
        matches!(r, Reason::Regex { .. })
    });
    assert!(e.to_string().contains("/api/("), "{e}");

    let e = refused(table(
        vec![spec::Match {
            method: Some("GE T".into()),
            ..prefix(0, "/")
        }],
        one_rule(),
    ));
    check(&e, Site::Match { index: 0 }, "method", |r| {
        matches!(r, Reason::InvalidMethod { .. })
    });

    let e = refused(table(
        vec![spec::Match {
            headers: vec![header("ok", "1"), header("bad name", "1")],
            ..prefix(0, "/")
        }],
        one_rule(),
    ));
    check(&e, Site::Match { index: 0 }, "headers[1].name", |r| {
        matches!(r, Reason::InvalidHeaderName { .. })
    });

    let e = refused(table(
        vec![spec::Match {
            headers: vec![header("x", "line\nbreak")],
            ..prefix(0, "/")
        }],
        one_rule(),
    ));
    check(&e, Site::Match { index: 0 }, "headers[0].value", |r| {
        matches!(r, Reason::InvalidHeaderValue { .. })
    });

    let e = refused(table(
        vec![spec::Match {
            headers: vec![spec::HeaderMatch {
                name: "x".into(),
                value: spec::ValueMatch::Regex(r"(\w{100}){100}".into()),
            }],
            ..prefix(0, "/")
        }],
        one_rule(),
    ));
    check(&e, Site::Match { index: 0 }, "headers[0].value", |r| {
        matches!(r, Reason::Regex { .. })
    });

    let e = refused(table(
        vec![spec::Match {
            query: vec![query("", "1")],
            ..prefix(0, "/")
        }],
        one_rule(),
    ));
    check(&e, Site::Match { index: 0 }, "query[0].name", |r| {
        matches!(r, Reason::Empty)
    });
}

#[test]
fn too_many_regexes_are_refused() {
    let regex_match = || spec::Match {
        path: Some(spec::PathMatch::Regex("/a".into())),
        ..prefix(0, "/")
    };
    let matches = (0..=crate::MAX_REGEXES).map(|_| regex_match()).collect();
    let e = refused(table(matches, vec![rule("r")]));
    check(
        &e,
        Site::Match {
            index: crate::MAX_REGEXES,
        },
        "path.regex",
        |r| matches!(r, Reason::TooManyRegexes { .. }),
    );
}

#[test]
fn rule_and_filter_errors_name_the_rule_and_field() {
    let named = |filters| vec![rule_with("httproute/ns/api/rule/0", filters)];
    let site = || rule_site(0, "httproute/ns/api/rule/0");

    let e = refused(table(vec![prefix(0, "/")], vec![rule("")]));
    check(&e, rule_site(0, ""), "name", |r| matches!(r, Reason::Empty));

    let e = refused(table(
        vec![prefix(0, "/")],
        named(vec![Filter::RequestHeaderModifier(spec::HeaderModifier {
            set: vec![("ok".into(), "1".into()), ("x:y".into(), "1".into())],
            ..Default::default()
        })]),
    ));
    check(
        &e,
        site(),
        "filters[0].requestHeaderModifier.set[1].name",
        |r| matches!(r, Reason::InvalidHeaderName { .. }),
    );
    assert!(e.to_string().contains("httproute/ns/api/rule/0"), "{e}");

    let e = refused(table(
        vec![prefix(0, "/")],
        named(vec![Filter::ResponseHeaderModifier(spec::HeaderModifier {
            remove: vec!["".into()],
            ..Default::default()
        })]),
    ));
    check(
        &e,
        site(),
        "filters[0].responseHeaderModifier.remove[0]",
        |r| matches!(r, Reason::InvalidHeaderName { .. }),
    );

    let redirect = |f: fn(&mut RequestRedirect)| {
        let mut r = RequestRedirect {
            scheme: None,
            hostname: None,
            path: None,
            port: None,
            status_code: 302,
        };
        f(&mut r);
        named(vec![Filter::RequestRedirect(r)])
    };
    let e = refused(table(
        vec![prefix(0, "/")],
        redirect(|r| r.status_code = 200),
    ));
    check(&e, site(), "filters[0].requestRedirect.statusCode", |r| {
        matches!(r, Reason::InvalidStatus { status: 200, .. })
    });
    let e = refused(table(
        vec![prefix(0, "/")],
        redirect(|r| r.scheme = Some("ftp".into())),
    ));
    check(&e, site(), "filters[0].requestRedirect.scheme", |r| {
        matches!(r, Reason::UnsupportedScheme { .. })
    });
    let e = refused(table(vec![prefix(0, "/")], redirect(|r| r.port = Some(0))));
    check(&e, site(), "filters[0].requestRedirect.port", |r| {
        matches!(r, Reason::PortZero)
    });
    let e = refused(table(
        vec![prefix(0, "/")],
        redirect(|r| r.hostname = Some("a:80".into())),
    ));
    check(&e, site(), "filters[0].requestRedirect.hostname", |r| {
        matches!(r, Reason::InvalidHostname { .. })
    });
    let e = refused(table(
        vec![prefix(0, "/")],
        redirect(|r| r.path = Some(PathModifier::ReplaceFullPath("relative".into()))),
    ));
    check(
        &e,
        site(),
        "filters[0].requestRedirect.path.replaceFullPath",
        |r| matches!(r, Reason::PathNotAbsolute { .. }),
    );

    let rewrite = |path: &str| {
        Filter::UrlRewrite(UrlRewrite {
            hostname: None,
            path: Some(PathModifier::ReplacePrefixMatch(path.into())),
        })
    };
    let e = refused(table(vec![prefix(0, "/")], named(vec![rewrite("/a?b")])));
    check(
        &e,
        site(),
        "filters[0].urlRewrite.path.replacePrefixMatch",
        |r| matches!(r, Reason::InvalidPath { .. }),
    );
    let e = refused(table(
        vec![prefix(0, "/")],
        named(vec![rewrite("/a"), rewrite("/b")]),
    ));
    check(&e, site(), "filters[1]", |r| {
        matches!(
            r,
            Reason::DuplicateFilter {
                filter: "URLRewrite"
            }
        )
    });
    let e = refused(table(
        vec![prefix(0, "/")],
        named(vec![
            rewrite("/a"),
            Filter::RequestRedirect(RequestRedirect {
                scheme: None,
                hostname: None,
                path: None,
                port: None,
                status_code: 302,
            }),
        ]),
    ));
    check(&e, site(), "filters[1]", |r| {
        matches!(r, Reason::RewriteWithRedirect)
    });
    // ReplacePrefixMatch with an Exact match of the same rule.
    let e = refused(table(
        vec![prefix(0, "/a"), exact(0, "/b")],
        named(vec![rewrite("/c")]),
    ));
    check(&e, site(), "filters[0]", |r| {
        matches!(
            r,
            Reason::PrefixRewriteWithoutPrefixMatch { match_index: 1, .. }
        )
    });
    // ...which is fine when the Exact match is another rule's.
    compile(
        vec![prefix(0, "/a"), exact(1, "/b")],
        vec![rule_with("a", vec![rewrite("/c")]), rule("b")],
    );

    let mirror = |backend: spec::ServiceRef, fraction| {
        named(vec![Filter::RequestMirror(RequestMirror {
            backend,
            fraction,
        })])
    };
    let e = refused(table(
        vec![prefix(0, "/")],
        mirror(
            service("m"),
            Fraction {
                numerator: 2,
                denominator: 1,
            },
        ),
    ));
    check(&e, site(), "filters[0].requestMirror.fraction", |r| {
        matches!(r, Reason::InvalidFraction { .. })
    });
    let e = refused(table(
        vec![prefix(0, "/")],
        mirror(
            service("m"),
            Fraction {
                numerator: 0,
                denominator: 0,
            },
        ),
    ));
    check(&e, site(), "filters[0].requestMirror.fraction", |r| {
        matches!(r, Reason::InvalidFraction { .. })
    });
    let nameless = spec::ServiceRef {
        name: String::new(),
        ..service("m")
    };
    let e = refused(table(vec![prefix(0, "/")], mirror(nameless, Fraction::ALL)));
    check(&e, site(), "filters[0].requestMirror.backend.name", |r| {
        matches!(r, Reason::Empty)
    });
}

#[test]
fn backend_errors_name_the_rule_backend_and_field() {
    let site = |index| Site::Backend {
        rule: 0,
        rule_name: "r".into(),
        index,
    };
    let with_backends = |backends| {
        table(
            vec![prefix(0, "/")],
            vec![spec::Rule {
                name: "r".into(),
                filters: vec![],
                backends,
                ..Default::default()
            }],
        )
    };
    let e = refused(with_backends(vec![backend("a", u32::MAX), backend("b", 1)]));
    check(&e, site(1), "weight", |r| {
        matches!(r, Reason::WeightOverflow)
    });
    // The sum may be exactly u32::MAX.
    RouteTable::compile(&with_backends(vec![
        backend("a", u32::MAX - 1),
        backend("b", 1),
    ]))
    .expect("fits");

    let e = refused(with_backends(vec![invalid(200, 1)]));
    check(&e, site(0), "target.status", |r| {
        matches!(r, Reason::InvalidStatus { status: 200, .. })
    });
    let e = refused(with_backends(vec![invalid(1000, 1)]));
    check(&e, site(0), "target.status", |r| {
        matches!(r, Reason::InvalidStatus { status: 1000, .. })
    });

    let portless = spec::Backend {
        target: spec::Target::Service(spec::ServiceRef {
            port: 0,
            ..service("a")
        }),
        ..backend("a", 1)
    };
    let e = refused(with_backends(vec![portless]));
    check(&e, site(0), "target.port", |r| {
        matches!(r, Reason::PortZero)
    });

    let rewriting = spec::Backend {
        filters: vec![Filter::UrlRewrite(UrlRewrite::default())],
        ..backend("a", 1)
    };
    let e = refused(with_backends(vec![backend("b", 1), rewriting]));
    check(&e, site(1), "filters[0]", |r| {
        matches!(
            r,
            Reason::FilterOnBackend {
                filter: "URLRewrite"
            }
        )
    });

    let bad_header = spec::Backend {
        filters: vec![Filter::RequestHeaderModifier(spec::HeaderModifier {
            add: vec![("x".into(), "\u{7f}".into())],
            ..Default::default()
        })],
        ..backend("a", 1)
    };
    let e = refused(with_backends(vec![bad_header]));
    check(
        &e,
        site(0),
        "filters[0].requestHeaderModifier.add[0].value",
        |r| matches!(r, Reason::InvalidHeaderValue { .. }),
    );
}

#[test]
fn tcp_split_errors() {
    let filtered = spec::Backend {
        filters: vec![Filter::RequestHeaderModifier(Default::default())],
        ..backend("a", 1)
    };
    let e = refused(spec::RouteTable {
        tcp_split: vec![backend("b", 1), filtered],
        ..Default::default()
    });
    check(&e, Site::TcpSplit { index: 1 }, "filters", |r| {
        matches!(r, Reason::FilterOnTcpBackend)
    });
}

#[test]
fn messages_read_as_a_path_and_a_reason() {
    let e = refused(table(
        vec![spec::Match {
            headers: vec![header("x", "\u{0}")],
            ..prefix(0, "/")
        }],
        vec![rule("r")],
    ));
    assert_eq!(
        e.to_string(),
        "matches[0]: headers[0].value: \"\\0\" is not a valid HTTP header value (printable ASCII, tabs and spaces)"
    );
    let e = refused(table(vec![prefix(0, "/")], vec![rule("")]));
    assert_eq!(e.to_string(), "rules[0] \"\": name: is empty");
}
