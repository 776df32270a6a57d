//! Fuzzes `weft_proxy_route`: an arbitrary route table and an arbitrary request, through
//! compile, route, the rule's request filters, pick, the backend's filters, the response filters,
//! mirrors and the TCP split.
//!
//! Beyond "never panics", it checks what the proxy relies on:
//! - a rewritten request's URI is a valid `http::Uri` (it survives a round trip through text),
//!   and a redirect's `Location` parses as a URI;
//! - the match taken really holds: a prefix match's prefix is a whole-segment prefix of the path;
//! - a picked backend has a weight above 0 and its `ServiceId` indexes `services()` to itself;
//! - routing is a function of the request: the same request routes the same way twice.
//!
//! Strings come half from the raw input and half from a small dictionary of words the compiler
//! understands (paths, methods, regexes, header names), so inputs reach past compile.
//!
//! Run it from `proxy/route` with `RUSTC_BOOTSTRAP=1 cargo fuzz run route -O`, or through
//! `scripts/fuzz.sh`.

#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use weft_proxy_route::spec::{self, Filter, Fraction, PathModifier, ValueMatch};
use weft_proxy_route::{Answer, Route, RouteTable, Split};

/// Words that mean something to the compiler or the matcher.
const WORDS: &[&str] = &[
    "/",
    "/a",
    "/a/",
    "/a/b",
    "/api",
    "/api/v1",
    "/%41",
    "",
    "GET",
    "POST",
    "http",
    "https",
    "x-canary",
    "Host",
    "true",
    "a|ab",
    ".*",
    "[0-9]+",
    "(",
    "example.org",
    "echo",
    "ns",
    "a b",
    "é",
    "%",
    "?",
    "#",
    "//",
];

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok((table, request, r)) = input(&mut u) else {
        return;
    };
    let Ok(table) = RouteTable::compile(&table) else {
        return;
    };
    check(&table, request, r);
});

fn check(table: &RouteTable, (method, uri, headers): (Method, Uri, HeaderMap), r: u32) {
    if let Some(split) = table.tcp_split() {
        check_pick(table, split, r);
    }
    let route = table.route(&method, &uri, &headers);
    let again = table.route(&method, &uri, &headers);
    let Route::Matched(routed) = route else {
        assert_eq!(
            std::mem::discriminant(&route),
            std::mem::discriminant(&again),
            "the same request routed differently"
        );
        assert_eq!(matches!(route, Route::Unrouted), table.is_empty());
        return;
    };
    match again {
        Route::Matched(again) => assert_eq!(again.matched().index(), routed.matched().index()),
        other => panic!("the same request matched, then {other:?}"),
    }
    if let Some(prefix) = routed.matched().prefix() {
        let path = uri.path();
        let holds = prefix.is_empty()
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        assert!(holds, "prefix {prefix:?} taken for path {path:?}");
    }
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.headers = headers;
    match routed.filter_request(&mut parts, 80) {
        Ok(()) => {
            let text = parts.uri.to_string();
            let reparsed: Uri = text
                .parse()
                .unwrap_or_else(|e| panic!("rewritten URI {text:?} does not parse: {e}"));
            assert_eq!(reparsed, parts.uri, "rewritten URI {text:?}");
            check_pick(table, routed.rule().split(), r);
            if let Ok(backend) = routed.pick(r) {
                backend.filter_request(&mut parts.headers);
                let mut response = parts.headers.clone();
                routed.filter_response(&mut response);
                backend.filter_response(&mut response);
            }
        }
        Err(Answer::Redirect { status, location }) => {
            assert!(status.is_redirection(), "{status}");
            if let Err(e) = Uri::try_from(location.as_bytes()) {
                panic!("Location {location:?} does not parse: {e}");
            }
        }
        Err(Answer::Error { status, reason }) => {
            assert!(
                status.is_server_error() || status.is_client_error(),
                "{status}"
            );
            assert!(!reason.is_empty());
        }
    }
    for mirror in routed.mirrors() {
        let _ = mirror.sample(r);
        assert_eq!(table.services()[mirror.id().index()], *mirror.service());
    }
}

fn check_pick(table: &RouteTable, split: &Split, r: u32) {
    if let Ok(backend) = split.pick(r) {
        assert!(backend.weight() > 0, "picked a backend of weight 0");
        assert_eq!(table.services()[backend.id().index()], *backend.service());
    }
}

fn input(u: &mut Unstructured<'_>) -> Result<(spec::RouteTable, (Method, Uri, HeaderMap), u32)> {
    // The request first: were it last, most inputs would run out of bytes before it.
    let request = request(u)?;
    let r = u.arbitrary()?;
    let rules: Vec<spec::Rule> = list(u, 3, rule)?;
    let rule_count = rules.len() as u32;
    let matches = list(u, 4, |u| a_match(u, rule_count))?;
    let tcp_split = list(u, 2, backend)?;
    Ok((
        spec::RouteTable {
            matches,
            rules,
            tcp_split,
            ..Default::default()
        },
        request,
        r,
    ))
}

fn list<T>(
    u: &mut Unstructured<'_>,
    max: usize,
    mut item: impl FnMut(&mut Unstructured<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let len = u.int_in_range(0..=max)?;
    (0..len).map(|_| item(u)).collect()
}

fn text(u: &mut Unstructured<'_>) -> Result<String> {
    if u.arbitrary()? {
        let words = u.int_in_range(1..=3)?;
        let mut s = String::new();
        for _ in 0..words {
            s.push_str(u.choose(WORDS)?);
        }
        Ok(s)
    } else {
        u.arbitrary()
    }
}

fn value_match(u: &mut Unstructured<'_>) -> Result<ValueMatch> {
    Ok(if u.arbitrary()? {
        ValueMatch::Exact(text(u)?)
    } else {
        ValueMatch::Regex(text(u)?)
    })
}

fn a_match(u: &mut Unstructured<'_>, rules: u32) -> Result<spec::Match> {
    let rule = if rules > 0 && u.ratio(15, 16)? {
        u.int_in_range(0..=rules - 1)?
    } else {
        u.arbitrary()?
    };
    let path = match u.int_in_range(0..=3)? {
        0 => None,
        1 => Some(spec::PathMatch::Exact(text(u)?)),
        2 => Some(spec::PathMatch::Prefix(text(u)?)),
        _ => Some(spec::PathMatch::Regex(text(u)?)),
    };
    Ok(spec::Match {
        rule,
        path,
        method: if u.arbitrary()? { Some(text(u)?) } else { None },
        headers: list(u, 2, |u| {
            Ok(spec::HeaderMatch {
                name: text(u)?,
                value: value_match(u)?,
            })
        })?,
        query: list(u, 2, |u| {
            Ok(spec::QueryMatch {
                name: text(u)?,
                value: value_match(u)?,
            })
        })?,
    })
}

fn service(u: &mut Unstructured<'_>) -> Result<spec::ServiceRef> {
    Ok(spec::ServiceRef {
        namespace: text(u)?,
        name: text(u)?,
        port: u.arbitrary()?,
    })
}

fn modifier(u: &mut Unstructured<'_>) -> Result<spec::HeaderModifier> {
    let pair = |u: &mut Unstructured<'_>| Ok((text(u)?, text(u)?));
    Ok(spec::HeaderModifier {
        set: list(u, 2, pair)?,
        add: list(u, 2, pair)?,
        remove: list(u, 2, text)?,
    })
}

fn path_modifier(u: &mut Unstructured<'_>) -> Result<Option<PathModifier>> {
    Ok(match u.int_in_range(0..=2)? {
        0 => None,
        1 => Some(PathModifier::ReplaceFullPath(text(u)?)),
        _ => Some(PathModifier::ReplacePrefixMatch(text(u)?)),
    })
}

fn option_text(u: &mut Unstructured<'_>) -> Result<Option<String>> {
    Ok(if u.arbitrary()? { Some(text(u)?) } else { None })
}

fn filter(u: &mut Unstructured<'_>) -> Result<Filter> {
    Ok(match u.int_in_range(0..=5)? {
        0 => Filter::RequestHeaderModifier(modifier(u)?),
        1 => Filter::ResponseHeaderModifier(modifier(u)?),
        2 => Filter::UrlRewrite(spec::UrlRewrite {
            hostname: option_text(u)?,
            path: path_modifier(u)?,
        }),
        3 => Filter::RequestRedirect(spec::RequestRedirect {
            scheme: option_text(u)?,
            hostname: option_text(u)?,
            path: path_modifier(u)?,
            port: u.arbitrary()?,
            status_code: if u.arbitrary()? {
                *u.choose(&[301, 302, 303, 307, 308])?
            } else {
                u.arbitrary()?
            },
        }),
        4 => Filter::RequestMirror(spec::RequestMirror {
            backend: service(u)?,
            fraction: Fraction {
                numerator: u.arbitrary()?,
                denominator: u.arbitrary()?,
            },
        }),
        _ => Filter::Fault(fault(u)?),
    })
}

fn fault(u: &mut Unstructured<'_>) -> Result<spec::FaultSpec> {
    let delay = if u.arbitrary()? {
        Some(spec::FaultDelay {
            per_million: u.arbitrary()?,
            fixed_delay: std::time::Duration::from_millis(u.arbitrary::<u32>()?.into()),
        })
    } else {
        None
    };
    let abort = if u.arbitrary()? {
        Some(spec::FaultAbort {
            per_million: u.arbitrary()?,
            status: if u.arbitrary()? {
                spec::AbortStatus::Http(u.arbitrary()?)
            } else {
                spec::AbortStatus::Grpc(u.arbitrary()?)
            },
        })
    } else {
        None
    };
    Ok(spec::FaultSpec {
        name: text(u)?,
        delay,
        abort,
    })
}

fn backend(u: &mut Unstructured<'_>) -> Result<spec::Backend> {
    let target = if u.ratio(3, 4)? {
        spec::Target::Service(service(u)?)
    } else {
        spec::Target::Invalid {
            status: u.arbitrary()?,
            reason: text(u)?,
        }
    };
    Ok(spec::Backend {
        weight: if u.arbitrary()? {
            u.int_in_range(0..=10)?
        } else {
            u.arbitrary()?
        },
        target,
        filters: list(u, 2, filter)?,
    })
}

fn rule(u: &mut Unstructured<'_>) -> Result<spec::Rule> {
    Ok(spec::Rule {
        name: text(u)?,
        filters: list(u, 3, filter)?,
        backends: list(u, 3, backend)?,
        ..Default::default()
    })
}

/// A request from the input; parts that do not parse fall back to something plain.
fn request(u: &mut Unstructured<'_>) -> Result<(Method, Uri, HeaderMap)> {
    let method = Method::from_bytes(text(u)?.as_bytes()).unwrap_or(Method::GET);
    let uri = text(u)?
        .parse::<Uri>()
        .unwrap_or_else(|_| Uri::from_static("/"));
    let mut headers = HeaderMap::new();
    for (name, value) in list(u, 4, |u| Ok((text(u)?, text(u)?)))? {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            headers.append(name, value);
        }
    }
    Ok((method, uri, headers))
}
