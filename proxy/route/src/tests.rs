//! Tests through the public API: matching and precedence as the Gateway API specifies it and
//! its conformance tests expect, backend choice, filters, compile errors, and properties.
//!
//! Helpers build spec tables tersely: a rule is named after where its requests go, so a test
//! reads `"/v2/example" -> "v2"`.

use http::request::Parts;
use http::{HeaderMap, Request};

use crate::spec::{self, PathMatch, ValueMatch};
use crate::{Route, RouteTable};

mod compile;
mod filters;
mod matching;
mod policy;
mod properties;
mod split;

pub(crate) fn service(name: &str) -> spec::ServiceRef {
    spec::ServiceRef {
        namespace: "ns".into(),
        name: name.into(),
        port: 8080,
    }
}

pub(crate) fn backend(name: &str, weight: u32) -> spec::Backend {
    spec::Backend {
        weight,
        target: spec::Target::Service(service(name)),
        filters: vec![],
    }
}

pub(crate) fn invalid(status: u16, weight: u32) -> spec::Backend {
    spec::Backend {
        weight,
        target: spec::Target::Invalid {
            status,
            reason: "backend ns/missing not found (BackendNotFound)".into(),
        },
        filters: vec![],
    }
}

/// A rule named `name` sending everything to the Service `name`.
pub(crate) fn rule(name: &str) -> spec::Rule {
    spec::Rule {
        name: name.into(),
        filters: vec![],
        backends: vec![backend(name, 1)],
        ..Default::default()
    }
}

pub(crate) fn rule_with(name: &str, filters: Vec<spec::Filter>) -> spec::Rule {
    spec::Rule {
        filters,
        ..rule(name)
    }
}

pub(crate) fn prefix(rule: u32, path: &str) -> spec::Match {
    spec::Match {
        rule,
        path: Some(PathMatch::Prefix(path.into())),
        ..Default::default()
    }
}

pub(crate) fn exact(rule: u32, path: &str) -> spec::Match {
    spec::Match {
        rule,
        path: Some(PathMatch::Exact(path.into())),
        ..Default::default()
    }
}

pub(crate) fn header(name: &str, value: &str) -> spec::HeaderMatch {
    spec::HeaderMatch {
        name: name.into(),
        value: ValueMatch::Exact(value.into()),
    }
}

pub(crate) fn query(name: &str, value: &str) -> spec::QueryMatch {
    spec::QueryMatch {
        name: name.into(),
        value: ValueMatch::Exact(value.into()),
    }
}

pub(crate) fn compile(matches: Vec<spec::Match>, rules: Vec<spec::Rule>) -> RouteTable {
    RouteTable::compile(&spec::RouteTable {
        matches,
        rules,
        tcp_split: vec![],
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("the table compiles: {e}"))
}

pub(crate) fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
    let mut builder = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(())
        .unwrap_or_else(|e| panic!("request {method} {uri}: {e}"))
        .into_parts()
        .0
}

/// Where a request goes, in words: the rule's name, `404` or `unrouted`.
pub(crate) fn outcome(
    table: &RouteTable,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
) -> String {
    match table.route_parts(&request(method, uri, headers)) {
        Route::Unrouted => "unrouted".into(),
        Route::NotFound => "404".into(),
        Route::Matched(routed) => routed.rule().name().into(),
    }
}

/// The values of `name` joined by `,`, as the conformance tests' echo server reports them.
pub(crate) fn joined(headers: &HeaderMap, name: &str) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap_or("<not text>"))
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

#[test]
fn compiled_tables_are_send_and_sync() {
    fn shared<T: Send + Sync + 'static>() {}
    shared::<RouteTable>();
}
