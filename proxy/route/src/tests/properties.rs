//! Properties over generated input: prefix matching against a plain segment-splitting reference,
//! and compile (then route, pick, filter) never panicking on arbitrary spec strings.

use http::Uri;
use proptest::prelude::*;

use super::*;
use crate::matching::prefix_matches;
use crate::spec::{Filter, Fraction, PathModifier};
use crate::Answer;

/// The Gateway API's words, directly: split both on `/`, ignore one trailing `/` of the prefix,
/// and compare element by element. `/` matches everything.
fn reference_prefix_match(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    let mut wanted: Vec<&str> = prefix.split('/').collect();
    if wanted.len() > 1 && wanted.last() == Some(&"") {
        wanted.pop();
    }
    let elements: Vec<&str> = path.split('/').collect();
    elements.len() >= wanted.len() && elements[..wanted.len()] == wanted[..]
}

/// Segments from a small alphabet, so that prefixes and paths often share them.
fn segments(max: usize) -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec("[ab]{1,2}", 0..max)
}

/// A valid `PathPrefix` value: `/`, segments, maybe a trailing `/`.
fn prefix_value() -> impl Strategy<Value = String> {
    (segments(4), any::<bool>()).prop_map(|(segments, trailing)| {
        let mut prefix = format!("/{}", segments.join("/"));
        if trailing && prefix.len() > 1 {
            prefix.push('/');
        }
        prefix
    })
}

/// A request path: segments, some empty (`//`), maybe a trailing `/`.
fn request_path() -> impl Strategy<Value = String> {
    prop::collection::vec("[ab]{0,2}", 0..6).prop_map(|segments| format!("/{}", segments.join("/")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4_000))]

    #[test]
    fn prefix_matching_equals_the_segment_reference(prefix in prefix_value(), path in request_path()) {
        let table = compile(vec![spec::Match { rule: 0, ..super::prefix(0, &prefix) }], vec![rule("p")]);
        let routed = outcome(&table, "GET", &path, &[]) == "p";
        prop_assert_eq!(routed, reference_prefix_match(&prefix, &path), "prefix {} path {}", prefix, path);
        let normalized = prefix.strip_suffix('/').unwrap_or(&prefix);
        prop_assert_eq!(prefix_matches(normalized, &path), routed);
    }
}

/// Any string at all, or one that often means something to the compiler.
fn text() -> BoxedStrategy<String> {
    prop_oneof![
        any::<String>(),
        "[ -~]{0,12}",
        Just(String::new()),
        "/[a-z/%.?#]{0,10}",
        "[a-z(|)*+\\[\\]{}\\\\^$.]{0,10}",
    ]
    .boxed()
}

/// Mostly a value of the given valid shape, sometimes anything: tables often compile, and
/// every field is sometimes what refuses them.
fn mostly(valid: impl Strategy<Value = String> + 'static) -> BoxedStrategy<String> {
    prop_oneof![12 => valid, 1 => text()].boxed()
}

fn path_text() -> BoxedStrategy<String> {
    mostly("/([a-z]{1,3}/?){0,3}")
}

fn regex_text() -> BoxedStrategy<String> {
    let valid = [
        "[a-z]+", "/api/.*", "v[0-9]", "a|ab", ".*", "/[^/]+/x", "(?i)GET",
    ];
    prop_oneof![
        6 => prop::sample::select(valid.map(str::to_owned).to_vec()),
        3 => "[a-z/.*+?|()]{0,8}",
        1 => text(),
    ]
    .boxed()
}

fn name_text() -> BoxedStrategy<String> {
    mostly("[a-zA-Z][a-zA-Z0-9-]{0,6}")
}

fn value_text() -> BoxedStrategy<String> {
    mostly("[!-~]{0,8}")
}

fn hostname_text() -> BoxedStrategy<String> {
    mostly("[a-z0-9]{1,5}(\\.[a-z]{1,5}){0,2}")
}

fn value_match() -> impl Strategy<Value = spec::ValueMatch> {
    prop_oneof![
        3 => value_text().prop_map(spec::ValueMatch::Exact),
        1 => regex_text().prop_map(spec::ValueMatch::Regex),
    ]
}

fn path_match() -> impl Strategy<Value = Option<spec::PathMatch>> {
    prop_oneof![
        Just(None),
        path_text().prop_map(|s| Some(spec::PathMatch::Exact(s))),
        path_text().prop_map(|s| Some(spec::PathMatch::Prefix(s))),
        regex_text().prop_map(|s| Some(spec::PathMatch::Regex(s))),
    ]
}

fn a_match(rules: u32) -> impl Strategy<Value = spec::Match> {
    (
        prop_oneof![19 => 0..rules, 1 => any::<u32>()],
        path_match(),
        prop::option::of(mostly(prop_oneof![
            Just("GET".to_owned()),
            Just("POST".to_owned())
        ])),
        prop::collection::vec((name_text(), value_match()), 0..3),
        prop::collection::vec((name_text(), value_match()), 0..3),
    )
        .prop_map(|(rule, path, method, headers, query)| spec::Match {
            rule,
            path,
            method,
            headers: headers
                .into_iter()
                .map(|(name, value)| spec::HeaderMatch { name, value })
                .collect(),
            query: query
                .into_iter()
                .map(|(name, value)| spec::QueryMatch { name, value })
                .collect(),
        })
}

fn service_ref() -> impl Strategy<Value = spec::ServiceRef> {
    (
        name_text(),
        name_text(),
        prop_oneof![9 => 1_u16.., 1 => Just(0_u16)],
    )
        .prop_map(|(namespace, name, port)| spec::ServiceRef {
            namespace,
            name,
            port,
        })
}

fn modifier() -> impl Strategy<Value = spec::HeaderModifier> {
    (
        prop::collection::vec((name_text(), value_text()), 0..2),
        prop::collection::vec((name_text(), value_text()), 0..2),
        prop::collection::vec(name_text(), 0..2),
    )
        .prop_map(|(set, add, remove)| spec::HeaderModifier { set, add, remove })
}

fn path_modifier() -> impl Strategy<Value = Option<PathModifier>> {
    prop_oneof![
        Just(None),
        path_text().prop_map(|s| Some(PathModifier::ReplaceFullPath(s))),
        path_text().prop_map(|s| Some(PathModifier::ReplacePrefixMatch(s))),
        Just(Some(PathModifier::ReplacePrefixMatch(String::new()))),
    ]
}

fn filter() -> impl Strategy<Value = Filter> {
    let scheme = mostly(prop_oneof![
        Just("http".to_owned()),
        Just("https".to_owned())
    ]);
    let status = prop_oneof![9 => prop::sample::select(vec![301_u16, 302, 303, 307, 308]), 1 => any::<u16>()];
    let fraction = prop_oneof![
        9 => (0_u32..=100).prop_map(Fraction::percent),
        1 => (any::<u32>(), any::<u32>()).prop_map(|(numerator, denominator)| Fraction { numerator, denominator }),
    ];
    prop_oneof![
        modifier().prop_map(Filter::RequestHeaderModifier),
        modifier().prop_map(Filter::ResponseHeaderModifier),
        (prop::option::of(hostname_text()), path_modifier())
            .prop_map(|(hostname, path)| Filter::UrlRewrite(spec::UrlRewrite { hostname, path })),
        (
            prop::option::of(scheme),
            prop::option::of(hostname_text()),
            path_modifier(),
            prop::option::of(any::<u16>()),
            status
        )
            .prop_map(|(scheme, hostname, path, port, status_code)| {
                Filter::RequestRedirect(spec::RequestRedirect {
                    scheme,
                    hostname,
                    path,
                    port,
                    status_code,
                })
            }),
        (service_ref(), fraction).prop_map(|(backend, fraction)| Filter::RequestMirror(
            spec::RequestMirror { backend, fraction }
        )),
        (
            text(),
            any::<Option<(u32, u16)>>(),
            any::<Option<(u32, u16, bool)>>()
        )
            .prop_map(|(name, delay, abort)| Filter::Fault(spec::FaultSpec {
                name,
                delay: delay.map(|(per_million, ms)| spec::FaultDelay {
                    per_million: per_million % 1_100_000,
                    fixed_delay: std::time::Duration::from_millis(u64::from(ms)),
                }),
                abort: abort.map(|(per_million, status, grpc)| spec::FaultAbort {
                    per_million: per_million % 1_100_000,
                    status: if grpc {
                        spec::AbortStatus::Grpc(u32::from(status % 20))
                    } else {
                        spec::AbortStatus::Http(status % 700)
                    },
                }),
            })),
    ]
}

fn a_backend() -> impl Strategy<Value = spec::Backend> {
    let target = prop_oneof![
        4 => service_ref().prop_map(spec::Target::Service),
        1 => (prop_oneof![9 => 400_u16..600, 1 => any::<u16>()], text())
            .prop_map(|(status, reason)| spec::Target::Invalid { status, reason }),
    ];
    let header_filter = prop_oneof![
        9 => modifier().prop_map(Filter::RequestHeaderModifier),
        9 => modifier().prop_map(Filter::ResponseHeaderModifier),
        1 => filter(),
    ];
    (
        prop_oneof![9 => 0_u32..100, 1 => any::<u32>()],
        target,
        prop::collection::vec(header_filter, 0..2),
    )
        .prop_map(|(weight, target, filters)| spec::Backend {
            weight,
            target,
            filters,
        })
}

fn a_rule() -> impl Strategy<Value = spec::Rule> {
    (
        mostly("[a-z/]{1,12}"),
        prop::collection::vec(filter(), 0..3),
        prop::collection::vec(a_backend(), 0..3),
    )
        .prop_map(|(name, filters, backends)| spec::Rule {
            name,
            filters,
            backends,
            ..Default::default()
        })
}

fn a_table() -> impl Strategy<Value = spec::RouteTable> {
    prop::collection::vec(a_rule(), 1..4)
        .prop_flat_map(|rules| {
            let count = u32::try_from(rules.len()).unwrap_or(u32::MAX);
            (
                prop::collection::vec(a_match(count), 0..4),
                Just(rules),
                prop_oneof![3 => Just(vec![]), 1 => prop::collection::vec(a_backend(), 1..3)],
            )
        })
        .prop_map(|(matches, rules, tcp_split)| spec::RouteTable {
            matches,
            rules,
            tcp_split,
            ..Default::default()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn compile_never_panics_and_a_compiled_table_serves_any_request(
        table in a_table(),
        path in "/[a-z/%?=&.]{0,16}",
        r in any::<u32>(),
    ) {
        let Ok(table) = RouteTable::compile(&table) else {
            return Ok(());
        };
        for uri in [path.as_str(), "/", "http://echo:8080/a/b?x=1"] {
            let mut parts = request("GET", uri, &[("host", "echo")]);
            let Route::Matched(routed) = table.route_parts(&parts) else {
                continue;
            };
            match routed.filter_request(&mut parts, 80) {
                Ok(()) => {
                    // A rewritten URI is a valid URI: it survives a round trip through text.
                    let text = parts.uri.to_string();
                    prop_assert_eq!(text.parse::<Uri>().ok(), Some(parts.uri.clone()), "{}", text);
                    if let Ok(backend) = routed.pick(r) {
                        backend.filter_request(&mut parts.headers);
                    }
                }
                Err(Answer::Redirect { location, .. }) => {
                    prop_assert!(Uri::try_from(location.as_bytes()).is_ok(), "{:?}", location);
                }
                Err(Answer::Error { .. }) => {}
            }
            let mut response = HeaderMap::new();
            routed.filter_response(&mut response);
            for mirror in routed.mirrors() {
                let _ = mirror.sample(r);
            }
        }
        if let Some(split) = table.tcp_split() {
            let _ = split.pick(r);
        }
    }
}
