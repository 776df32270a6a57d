//! Gateway API kinds the mesh reads: `HTTPRoute` (`gateway.networking.k8s.io/v1`, and
//! `v1beta1`, the same schema) and `ReferenceGrant` (`v1beta1`, and `v1`), as serde types of
//! our own holding the fields Weft reads, and the checks the CRD's schema and the
//! specification ask for.
//!
//! # Why our own types and not the `gateway-api` crate
//! The kube-rs community's `gateway-api` crate (0.22) is generated from the CRDs with every
//! field, depends on `k8s-openapi` 0.28 and `kube` 4 (Weft is on 0.29 and 5: a second copy of
//! both, whose `ObjectMeta` is not ours, so its objects would not fit the snapshot or our
//! reflectors), and brings `kube-derive` and `schemars` into this pure crate and its fuzz
//! build. The fields Weft reads are a few dozen; declaring them here keeps this crate's
//! dependencies as they are, gives one type for `v1` and `v1beta1` (the same schema), and puts
//! every check next to the field it checks. Unknown fields are ignored, as the API server's
//! own clients do, so objects written for a newer Gateway API still read. The types implement
//! `k8s_openapi::Resource` and `Metadata`, which is all kube-rs needs to watch them.
//!
//! # What is checked here, per object
//! What the CRD's OpenAPI schema and CEL rules refuse (lengths, patterns, enums, counts, the
//! combinations of filters), plus what Weft cannot honour: a regular expression that does not
//! compile (Rust `regex` syntax, compiled size at most [`MAX_REGEX_BYTES`]), a filter type Weft
//! does not implement (`CORS`, `ExternalAuth`, an `ExtensionRef` to anything but a Weft
//! `HTTPFault`), a header value that is not printable ASCII. An object that fails is refused
//! whole (the `Accepted` condition's `UnsupportedValue`). What depends on other objects (does
//! the parent Service exist, may a backend in another namespace be referenced) is not an
//! object's fault and is decided by [`crate::routes`] from the whole snapshot.

use std::collections::HashSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::model::{is_dns_label, is_dns_subdomain, problem, Problem};

/// The Gateway API's group.
pub const GROUP: &str = "gateway.networking.k8s.io";
/// Largest compiled size of one regular expression (the `regex` crate's `size_limit`): a
/// pattern of the CRD's 1,024 characters that compiles larger is refused, so a proxy's memory
/// per route stays bounded. The proxy compiles with the same limit.
pub const MAX_REGEX_BYTES: usize = 256 * 1024;
/// The group and kind of Weft's fault filter, the one `ExtensionRef` Weft resolves.
pub const FAULT_GROUP: &str = "weft.dev";
pub const FAULT_KIND: &str = "HTTPFault";

/// `HTTPRoute`: how requests to a Service (its parent, in the mesh) are matched, changed and
/// sent to backends.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpRoute {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: HttpRouteSpec,
    /// The status as the API server holds it (`status.parents`, every controller's entries),
    /// for the control plane's status writer: never read for routing and not checked. Kept
    /// as a generic value (this crate's `serde_yaml::Value`, which reads JSON as well) so the
    /// entries of other controllers are written back with every field, known to Weft or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_yaml::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteSpec {
    #[serde(default)]
    pub parent_refs: Vec<ParentReference>,
    /// Read and checked, never used: GAMMA says a mesh infers nothing from it (GEP-1294).
    #[serde(default)]
    pub hostnames: Vec<String>,
    /// Absent: the API server's default, one rule matching every request with no backend.
    pub rules: Option<Vec<HttpRouteRule>>,
}

/// What a route attaches to; for the mesh, a Service (`group: ""`, `kind: Service`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    /// Absent: `gateway.networking.k8s.io` (the CRD's default).
    pub group: Option<String>,
    /// Absent: `Gateway` (the CRD's default).
    pub kind: Option<String>,
    /// Absent: the route's own namespace.
    pub namespace: Option<String>,
    pub name: String,
    /// For a Service, the name of one of its ports.
    pub section_name: Option<String>,
    /// For a Service, one of its ports; absent, every port.
    pub port: Option<i32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteRule {
    pub name: Option<String>,
    /// Absent or empty: one match on every path (`PathPrefix /`).
    pub matches: Option<Vec<HttpRouteMatch>>,
    #[serde(default)]
    pub filters: Vec<HttpRouteFilter>,
    #[serde(default)]
    pub backend_refs: Vec<HttpBackendRef>,
    /// GEP-1742.
    pub timeouts: Option<HttpRouteTimeouts>,
    /// GEP-1731.
    pub retry: Option<HttpRouteRetry>,
}

/// A rule's timeouts, as Gateway API Durations; `0s` disables one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteTimeouts {
    /// The whole exchange as the client sees it, retries included.
    pub request: Option<String>,
    /// Each try; at most `request`.
    pub backend_request: Option<String>,
}

/// A rule's retry policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpRouteRetry {
    /// Statuses retried (400 to 599).
    #[serde(default)]
    pub codes: Vec<i32>,
    /// Retries after the first try.
    pub attempts: Option<i32>,
    /// The wait before each retry.
    pub backoff: Option<String>,
}

/// The most retries Weft lets a rule ask for.
pub const MAX_RETRY_ATTEMPTS: i32 = 10;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteMatch {
    pub path: Option<HttpPathMatch>,
    #[serde(default)]
    pub headers: Vec<HttpHeaderMatch>,
    #[serde(default)]
    pub query_params: Vec<HttpHeaderMatch>,
    pub method: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpPathMatch {
    /// `Exact`, `PathPrefix` (the default) or `RegularExpression`.
    #[serde(rename = "type")]
    pub type_: Option<String>,
    /// Default `/`.
    pub value: Option<String>,
}

/// A header or query parameter match (the two have the same fields).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpHeaderMatch {
    /// `Exact` (the default) or `RegularExpression`.
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub name: String,
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteFilter {
    #[serde(rename = "type")]
    pub type_: String,
    pub request_header_modifier: Option<HttpHeaderFilter>,
    pub response_header_modifier: Option<HttpHeaderFilter>,
    pub request_mirror: Option<HttpRequestMirrorFilter>,
    pub request_redirect: Option<HttpRequestRedirectFilter>,
    pub url_rewrite: Option<HttpUrlRewriteFilter>,
    pub extension_ref: Option<LocalObjectReference>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpHeaderFilter {
    #[serde(default)]
    pub set: Vec<HttpHeader>,
    #[serde(default)]
    pub add: Vec<HttpHeader>,
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpPathModifier {
    /// `ReplaceFullPath` or `ReplacePrefixMatch`.
    #[serde(rename = "type")]
    pub type_: String,
    pub replace_full_path: Option<String>,
    pub replace_prefix_match: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRequestRedirectFilter {
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub path: Option<HttpPathModifier>,
    pub port: Option<i32>,
    /// Default 302.
    pub status_code: Option<i32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpUrlRewriteFilter {
    pub hostname: Option<String>,
    pub path: Option<HttpPathModifier>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRequestMirrorFilter {
    pub backend_ref: BackendObjectReference,
    pub percent: Option<i32>,
    pub fraction: Option<Fraction>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Fraction {
    pub numerator: i32,
    /// Default 100.
    pub denominator: Option<i32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BackendObjectReference {
    /// Absent: `""`, the core group.
    pub group: Option<String>,
    /// Absent: `Service`.
    pub kind: Option<String>,
    pub name: String,
    /// Absent: the route's namespace.
    pub namespace: Option<String>,
    /// A Service port (required for a Service).
    pub port: Option<i32>,
}

/// A backend of a rule: a [`BackendObjectReference`] with a weight and filters of its own.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpBackendRef {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub name: String,
    pub namespace: Option<String>,
    pub port: Option<i32>,
    /// 0..=1,000,000; default 1.
    pub weight: Option<i32>,
    #[serde(default)]
    pub filters: Vec<HttpRouteFilter>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LocalObjectReference {
    pub group: String,
    pub kind: String,
    pub name: String,
}

/// `ReferenceGrant`: objects in its namespace that routes of other namespaces may reference.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReferenceGrant {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ReferenceGrantSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReferenceGrantSpec {
    #[serde(default)]
    pub from: Vec<ReferenceGrantFrom>,
    #[serde(default)]
    pub to: Vec<ReferenceGrantTo>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReferenceGrantFrom {
    pub group: String,
    pub kind: String,
    pub namespace: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReferenceGrantTo {
    pub group: String,
    pub kind: String,
    /// Absent: every object of that kind in the grant's namespace.
    pub name: Option<String>,
}

macro_rules! resource {
    ($type:ty, $version:literal, $kind:literal, $plural:literal) => {
        impl k8s_openapi::Resource for $type {
            const API_VERSION: &'static str = concat!("gateway.networking.k8s.io/", $version);
            const GROUP: &'static str = GROUP;
            const KIND: &'static str = $kind;
            const VERSION: &'static str = $version;
            const URL_PATH_SEGMENT: &'static str = $plural;
            type Scope = k8s_openapi::NamespaceResourceScope;
        }

        impl k8s_openapi::ListableResource for $type {
            const LIST_KIND: &'static str = concat!($kind, "List");
        }

        impl k8s_openapi::Metadata for $type {
            type Ty = ObjectMeta;

            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

// The versions watched: `v1` for HTTPRoute (its storage version), `v1beta1` for ReferenceGrant
// (its storage version, served by every Gateway API release that has the kind).
resource!(HttpRoute, "v1", "HTTPRoute", "httproutes");
resource!(
    ReferenceGrant,
    "v1beta1",
    "ReferenceGrant",
    "referencegrants"
);

impl ParentReference {
    /// Whether this parent is a core Service: the mesh's parents (GAMMA). Anything else (a
    /// Gateway, the default) belongs to another controller and is ignored.
    pub fn is_service(&self) -> bool {
        self.group.as_deref() == Some("") && self.kind.as_deref() == Some("Service")
    }
}

impl HttpBackendRef {
    /// The reference without weight and filters.
    pub fn object(&self) -> BackendObjectReference {
        BackendObjectReference {
            group: self.group.clone(),
            kind: self.kind.clone(),
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            port: self.port,
        }
    }
}

impl BackendObjectReference {
    /// Whether it names a core Service (the only backend kind Weft resolves).
    pub fn is_service(&self) -> bool {
        self.group.as_deref().unwrap_or("").is_empty()
            && self.kind.as_deref().unwrap_or("Service") == "Service"
    }
}

/// The rules of a route, with the API server's default for absent rules.
pub fn rules(route: &HttpRoute) -> std::borrow::Cow<'_, [HttpRouteRule]> {
    match &route.spec.rules {
        Some(rules) => std::borrow::Cow::Borrowed(rules),
        None => std::borrow::Cow::Owned(vec![HttpRouteRule::default()]),
    }
}

/// Checks an HTTPRoute as its CRD does, and what Weft cannot honour.
pub fn check_http_route(route: &HttpRoute) -> Result<(), Problem> {
    let spec = &route.spec;
    if spec.parent_refs.len() > 32 {
        return Err(problem("spec.parentRefs", "more than 32 parents"));
    }
    for (i, parent) in spec.parent_refs.iter().enumerate() {
        check_parent(parent, &format!("spec.parentRefs[{i}]"))?;
    }
    check_parent_uniqueness(&spec.parent_refs)?;
    if spec.hostnames.len() > 16 {
        return Err(problem("spec.hostnames", "more than 16 hostnames"));
    }
    for (i, host) in spec.hostnames.iter().enumerate() {
        let bare = host.strip_prefix("*.").unwrap_or(host);
        if host.len() > 253 || !is_dns_subdomain(bare) {
            return Err(problem(
                &format!("spec.hostnames[{i}]"),
                format!("{host:?} is not a hostname (lowercase DNS name, optionally *. first)"),
            ));
        }
    }
    let Some(rules) = &spec.rules else {
        return Ok(());
    };
    if rules.is_empty() {
        return Err(problem(
            "spec.rules",
            "empty: at least one rule (or none at all, for the default)",
        ));
    }
    if rules.len() > 16 {
        return Err(problem("spec.rules", "more than 16 rules"));
    }
    let total: usize = rules
        .iter()
        .map(|r| r.matches.as_ref().map_or(0, Vec::len))
        .sum();
    if total > 128 {
        return Err(problem(
            "spec.rules",
            format!("{total} matches in all: at most 128 across the rules of a route"),
        ));
    }
    let mut names = HashSet::new();
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        check_rule(rule, &at)?;
        if let Some(name) = &rule.name {
            if !names.insert(name) {
                return Err(problem(
                    &format!("{at}.name"),
                    format!("{name:?} names two rules"),
                ));
            }
        }
    }
    Ok(())
}

fn check_parent(parent: &ParentReference, at: &str) -> Result<(), Problem> {
    if let Some(group) = &parent.group {
        check_group(group, &format!("{at}.group"))?;
    }
    if let Some(kind) = &parent.kind {
        check_kind(kind, &format!("{at}.kind"))?;
    }
    if let Some(ns) = &parent.namespace {
        check_namespace(ns, &format!("{at}.namespace"))?;
    }
    check_object_name(&parent.name, &format!("{at}.name"))?;
    if let Some(section) = &parent.section_name {
        if !is_dns_subdomain(section) {
            return Err(problem(
                &format!("{at}.sectionName"),
                format!("{section:?} is not a valid section name (a lowercase DNS name)"),
            ));
        }
    }
    if let Some(port) = parent.port {
        check_port(port, &format!("{at}.port"))?;
    }
    Ok(())
}

/// The CRD's rule: two references to one parent must each name a different section.
fn check_parent_uniqueness(parents: &[ParentReference]) -> Result<(), Problem> {
    for (i, a) in parents.iter().enumerate() {
        for b in &parents[..i] {
            let same_parent = a.group == b.group
                && a.kind == b.kind
                && a.name == b.name
                && a.namespace.as_deref().unwrap_or("") == b.namespace.as_deref().unwrap_or("");
            if !same_parent {
                continue;
            }
            let section = |p: &ParentReference| p.section_name.clone().filter(|s| !s.is_empty());
            let reason = match (section(a), section(b)) {
                (Some(x), Some(y)) if x == y => "names the same parent and section twice",
                (Some(_), Some(_)) => continue,
                _ => "names the same parent twice: each reference must then have a sectionName",
            };
            return Err(problem(&format!("spec.parentRefs[{i}]"), reason));
        }
    }
    Ok(())
}

/// A rule's timeouts and retry, read (`None`: no bound, no retry policy): `timeouts.request`,
/// `timeouts.backendRequest`, and `(attempts, codes, backoff)`.
#[allow(clippy::type_complexity)]
pub fn timeouts_and_retry(
    rule: &HttpRouteRule,
) -> (
    Option<std::time::Duration>,
    Option<std::time::Duration>,
    Option<(u32, Vec<u32>, std::time::Duration)>,
) {
    let duration = |d: &Option<String>| {
        d.as_deref()
            .and_then(|d| crate::fault::parse_duration(d).ok())
            .filter(|d| !d.is_zero())
    };
    let (request, backend) = rule.timeouts.as_ref().map_or((None, None), |t| {
        (duration(&t.request), duration(&t.backend_request))
    });
    let retry = rule.retry.as_ref().map(|r| {
        (
            u32::try_from(r.attempts.unwrap_or(0)).unwrap_or(0),
            r.codes
                .iter()
                .filter_map(|c| u32::try_from(*c).ok())
                .collect(),
            duration(&r.backoff).unwrap_or_default(),
        )
    });
    (request, backend, retry)
}

fn check_timeouts_and_retry(rule: &HttpRouteRule, at: &str) -> Result<(), Problem> {
    let duration = |d: &Option<String>, field: &str| -> Result<_, Problem> {
        d.as_deref()
            .map(|d| {
                crate::fault::parse_duration(d).map_err(|e| problem(&format!("{at}.{field}"), e))
            })
            .transpose()
    };
    if let Some(t) = &rule.timeouts {
        let request = duration(&t.request, "timeouts.request")?;
        let backend = duration(&t.backend_request, "timeouts.backendRequest")?;
        // As the CRD's CEL rule: backendRequest within request, when both bound.
        if let (Some(r), Some(b)) = (request, backend) {
            if !r.is_zero() && b > r {
                return Err(problem(
                    &format!("{at}.timeouts.backendRequest"),
                    format!(
                        "{} must not be longer than timeouts.request ({})",
                        t.backend_request.as_deref().unwrap_or_default(),
                        t.request.as_deref().unwrap_or_default()
                    ),
                ));
            }
        }
    }
    if let Some(r) = &rule.retry {
        if let Some(attempts) = r.attempts {
            if !(0..=MAX_RETRY_ATTEMPTS).contains(&attempts) {
                return Err(problem(
                    &format!("{at}.retry.attempts"),
                    format!(
                        "{attempts}: Weft retries a request at most {MAX_RETRY_ATTEMPTS} times"
                    ),
                ));
            }
        }
        if r.codes.len() > 16 {
            return Err(problem(&format!("{at}.retry.codes"), "more than 16 codes"));
        }
        for (i, code) in r.codes.iter().enumerate() {
            if !(400..=599).contains(code) {
                return Err(problem(
                    &format!("{at}.retry.codes[{i}]"),
                    format!("{code} is not a status from 400 to 599"),
                ));
            }
        }
        if let Some(backoff) = duration(&r.backoff, "retry.backoff")? {
            if backoff > std::time::Duration::from_secs(3600) {
                return Err(problem(
                    &format!("{at}.retry.backoff"),
                    "more than the 1h a request may wait",
                ));
            }
        }
    }
    Ok(())
}

fn check_rule(rule: &HttpRouteRule, at: &str) -> Result<(), Problem> {
    if let Some(name) = &rule.name {
        if !is_dns_subdomain(name) {
            return Err(problem(
                &format!("{at}.name"),
                format!("{name:?} is not a valid rule name (a lowercase DNS name)"),
            ));
        }
    }
    let matches = rule.matches.as_deref().unwrap_or_default();
    if matches.len() > 64 {
        return Err(problem(&format!("{at}.matches"), "more than 64 matches"));
    }
    for (i, m) in matches.iter().enumerate() {
        check_match(m, &format!("{at}.matches[{i}]"))?;
    }
    check_filters(&rule.filters, &format!("{at}.filters"), FilterPlace::Rule)?;
    if rule.backend_refs.len() > 16 {
        return Err(problem(
            &format!("{at}.backendRefs"),
            "more than 16 backends",
        ));
    }
    check_timeouts_and_retry(rule, at)?;
    let redirect = rule.filters.iter().any(|f| f.type_ == "RequestRedirect");
    if redirect && !rule.backend_refs.is_empty() {
        return Err(problem(
            &format!("{at}.backendRefs"),
            "a rule with a RequestRedirect filter answers the redirect itself: it has no backends",
        ));
    }
    for (i, backend) in rule.backend_refs.iter().enumerate() {
        let at_b = format!("{at}.backendRefs[{i}]");
        check_backend_object(&backend.object(), &at_b)?;
        if let Some(weight) = backend.weight {
            if !(0..=1_000_000).contains(&weight) {
                return Err(problem(
                    &format!("{at_b}.weight"),
                    format!("{weight} is not a weight 0-1000000"),
                ));
            }
        }
        check_filters(
            &backend.filters,
            &format!("{at_b}.filters"),
            FilterPlace::Backend,
        )?;
    }
    // `ReplacePrefixMatch` rewrites the prefix that matched: it needs exactly one, a PathPrefix.
    let replaces_prefix = rule.filters.iter().any(|f| {
        let path = match f.type_.as_str() {
            "URLRewrite" => f.url_rewrite.as_ref().and_then(|r| r.path.as_ref()),
            "RequestRedirect" => f.request_redirect.as_ref().and_then(|r| r.path.as_ref()),
            _ => None,
        };
        path.is_some_and(|p| p.type_ == "ReplacePrefixMatch")
    });
    if replaces_prefix {
        let one_prefix = match matches {
            [m] => m
                .path
                .as_ref()
                .is_none_or(|p| p.type_.as_deref().unwrap_or("PathPrefix") == "PathPrefix"),
            // No matches is the default match, `PathPrefix /`.
            [] => true,
            _ => false,
        };
        if !one_prefix {
            return Err(problem(
                &format!("{at}.matches"),
                "a ReplacePrefixMatch path modifier needs exactly one match, a PathPrefix",
            ));
        }
    }
    Ok(())
}

fn check_match(m: &HttpRouteMatch, at: &str) -> Result<(), Problem> {
    if let Some(path) = &m.path {
        check_path_match(path, &format!("{at}.path"))?;
    }
    for (what, list, max_value) in [
        ("headers", &m.headers, 4096),
        ("queryParams", &m.query_params, 1024),
    ] {
        if list.len() > 16 {
            return Err(problem(
                &format!("{at}.{what}"),
                format!("more than 16 {what} matches"),
            ));
        }
        for (i, h) in list.iter().enumerate() {
            let at_h = format!("{at}.{what}[{i}]");
            check_header_name(&h.name, &format!("{at_h}.name"))?;
            if h.value.is_empty() || h.value.len() > max_value {
                return Err(problem(
                    &format!("{at_h}.value"),
                    format!("{} bytes: a value is 1-{max_value} bytes", h.value.len()),
                ));
            }
            match h.type_.as_deref().unwrap_or("Exact") {
                "Exact" if what == "headers" => {
                    check_header_value(&h.value, &format!("{at_h}.value"))?
                }
                "Exact" => {}
                "RegularExpression" => check_regex(&h.value, &format!("{at_h}.value"))?,
                other => {
                    return Err(problem(
                        &format!("{at_h}.type"),
                        format!("{other:?}: expected Exact or RegularExpression"),
                    ))
                }
            }
        }
    }
    if let Some(method) = &m.method {
        const METHODS: [&str; 9] = [
            "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
        ];
        if !METHODS.contains(&method.as_str()) {
            return Err(problem(
                &format!("{at}.method"),
                format!("{method:?}: expected one of {}", METHODS.join(", ")),
            ));
        }
    }
    Ok(())
}

fn check_path_match(path: &HttpPathMatch, at: &str) -> Result<(), Problem> {
    let value = path.value.as_deref().unwrap_or("/");
    if value.len() > 1024 {
        return Err(problem(&format!("{at}.value"), "longer than 1024 bytes"));
    }
    match path.type_.as_deref().unwrap_or("PathPrefix") {
        "Exact" | "PathPrefix" => check_path(value, &format!("{at}.value")),
        "RegularExpression" => check_regex(value, &format!("{at}.value")),
        other => Err(problem(
            &format!("{at}.type"),
            format!("{other:?}: expected Exact, PathPrefix or RegularExpression"),
        )),
    }
}

/// An `Exact` or `PathPrefix` path, as the CRD's rules say.
pub fn check_path(value: &str, at: &str) -> Result<(), Problem> {
    let bad = |reason: &str| Err(problem(at, format!("{value:?} {reason}")));
    if !value.starts_with('/') {
        return bad("does not start with /");
    }
    for (part, what) in [
        ("//", "//"),
        ("/./", "/./"),
        ("/../", "/../"),
        ("%2f", "%2f"),
        ("%2F", "%2F"),
        ("#", "#"),
    ] {
        if value.contains(part) {
            return bad(&format!("contains {what}"));
        }
    }
    if value.ends_with("/..") || value.ends_with("/.") {
        return bad("ends with /. or /..");
    }
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return bad("has a % not followed by two hex digits");
            }
            i += 3;
            continue;
        }
        if !(b.is_ascii_alphanumeric() || b"-/._~!$&'()*+,;=:@".contains(&b)) {
            return bad(&format!(
                "contains {:?}, not allowed in a path",
                char::from(b)
            ));
        }
        i += 1;
    }
    Ok(())
}

/// A regular expression Weft's proxies will compile: Rust `regex` syntax, at most
/// [`MAX_REGEX_BYTES`] compiled.
pub fn check_regex(pattern: &str, at: &str) -> Result<(), Problem> {
    regex::RegexBuilder::new(pattern)
        .size_limit(MAX_REGEX_BYTES)
        .build()
        .map(|_| ())
        .map_err(|e| {
            let reason = match e {
                regex::Error::CompiledTooBig(limit) => {
                    format!("the regular expression compiles larger than {limit} bytes")
                }
                other => format!("not a regular expression (Rust regex syntax): {other}"),
            };
            problem(at, reason)
        })
}

/// An HTTP header name: an RFC 7230 token of at most 256 bytes.
pub fn check_header_name(name: &str, at: &str) -> Result<(), Problem> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || name.len() > 256 || !name.bytes().all(token) {
        return Err(problem(at, format!("{name:?} is not an HTTP header name")));
    }
    Ok(())
}

/// A header value a proxy can send: printable ASCII, spaces and tabs.
fn check_header_value(value: &str, at: &str) -> Result<(), Problem> {
    if let Some(c) = value
        .chars()
        .find(|&c| !(c == '\t' || (' '..='~').contains(&c)))
    {
        return Err(problem(
            at,
            format!("contains {c:?}: a header value is printable ASCII, spaces and tabs"),
        ));
    }
    Ok(())
}

/// Where a filter list is: a rule's, or a backend's (header modifiers only, in Weft).
#[derive(Clone, Copy, PartialEq, Eq)]
enum FilterPlace {
    Rule,
    Backend,
}

fn check_filters(filters: &[HttpRouteFilter], at: &str, place: FilterPlace) -> Result<(), Problem> {
    if filters.len() > 16 {
        return Err(problem(at, "more than 16 filters"));
    }
    let mut seen = HashSet::new();
    for (i, f) in filters.iter().enumerate() {
        let at_f = format!("{at}[{i}]");
        check_filter(f, &at_f, place)?;
        let once = [
            "RequestHeaderModifier",
            "ResponseHeaderModifier",
            "RequestRedirect",
            "URLRewrite",
        ];
        if once.contains(&f.type_.as_str()) && !seen.insert(f.type_.as_str()) {
            return Err(problem(
                &format!("{at_f}.type"),
                format!("a second {} filter", f.type_),
            ));
        }
    }
    if seen.contains("RequestRedirect") && seen.contains("URLRewrite") {
        return Err(problem(
            at,
            "RequestRedirect and URLRewrite cannot be combined",
        ));
    }
    Ok(())
}

fn check_filter(f: &HttpRouteFilter, at: &str, place: FilterPlace) -> Result<(), Problem> {
    // Each type has its own field, and only that field is set.
    let fields: [(&str, &str, bool); 6] = [
        (
            "RequestHeaderModifier",
            "requestHeaderModifier",
            f.request_header_modifier.is_some(),
        ),
        (
            "ResponseHeaderModifier",
            "responseHeaderModifier",
            f.response_header_modifier.is_some(),
        ),
        ("RequestMirror", "requestMirror", f.request_mirror.is_some()),
        (
            "RequestRedirect",
            "requestRedirect",
            f.request_redirect.is_some(),
        ),
        ("URLRewrite", "urlRewrite", f.url_rewrite.is_some()),
        ("ExtensionRef", "extensionRef", f.extension_ref.is_some()),
    ];
    let Some(&(_, field, set)) = fields.iter().find(|(t, _, _)| *t == f.type_) else {
        let reason = match f.type_.as_str() {
            "CORS" | "ExternalAuth" => format!("the {} filter is not supported by Weft", f.type_),
            other => format!(
                "{other:?} is not a filter type Weft supports (RequestHeaderModifier, \
                 ResponseHeaderModifier, RequestMirror, RequestRedirect, URLRewrite, ExtensionRef)"
            ),
        };
        return Err(problem(&format!("{at}.type"), reason));
    };
    if !set {
        return Err(problem(
            &format!("{at}.{field}"),
            format!("missing for a {} filter", f.type_),
        ));
    }
    if let Some((_, other, _)) = fields.iter().find(|(t, _, s)| *s && *t != f.type_) {
        return Err(problem(
            &format!("{at}.{other}"),
            format!("set on a {} filter", f.type_),
        ));
    }
    if place == FilterPlace::Backend
        && !matches!(
            f.type_.as_str(),
            "RequestHeaderModifier" | "ResponseHeaderModifier"
        )
    {
        return Err(problem(
            &format!("{at}.type"),
            format!(
                "a {} filter on a backend is not supported by Weft (header modifiers only; \
                 put it on the rule)",
                f.type_
            ),
        ));
    }
    let at_field = format!("{at}.{field}");
    if let Some(h) = f
        .request_header_modifier
        .as_ref()
        .or(f.response_header_modifier.as_ref())
    {
        check_header_filter(h, &at_field)?;
    }
    if let Some(m) = &f.request_mirror {
        check_backend_object(&m.backend_ref, &format!("{at_field}.backendRef"))?;
        match (m.percent, &m.fraction) {
            (Some(_), Some(_)) => {
                return Err(problem(&at_field, "percent and fraction are exclusive"));
            }
            (Some(p), None) if !(0..=100).contains(&p) => {
                return Err(problem(
                    &format!("{at_field}.percent"),
                    format!("{p} is not 0-100"),
                ));
            }
            (None, Some(fr)) => {
                let den = fr.denominator.unwrap_or(100);
                if den < 1 || fr.numerator < 0 || fr.numerator > den {
                    return Err(problem(
                        &format!("{at_field}.fraction"),
                        format!(
                            "{}/{den}: the numerator is 0 to the denominator, which is at least 1",
                            fr.numerator
                        ),
                    ));
                }
            }
            _ => {}
        }
    }
    if let Some(r) = &f.request_redirect {
        if let Some(scheme) = &r.scheme {
            if scheme != "http" && scheme != "https" {
                return Err(problem(
                    &format!("{at_field}.scheme"),
                    format!("{scheme:?}: expected http or https"),
                ));
            }
        }
        if let Some(host) = &r.hostname {
            check_precise_hostname(host, &format!("{at_field}.hostname"))?;
        }
        if let Some(path) = &r.path {
            check_path_modifier(path, &format!("{at_field}.path"))?;
        }
        if let Some(port) = r.port {
            check_port(port, &format!("{at_field}.port"))?;
        }
        if let Some(code) = r.status_code {
            if ![301, 302, 303, 307, 308].contains(&code) {
                return Err(problem(
                    &format!("{at_field}.statusCode"),
                    format!("{code}: expected 301, 302, 303, 307 or 308"),
                ));
            }
        }
    }
    if let Some(r) = &f.url_rewrite {
        if let Some(host) = &r.hostname {
            check_precise_hostname(host, &format!("{at_field}.hostname"))?;
        }
        if let Some(path) = &r.path {
            check_path_modifier(path, &format!("{at_field}.path"))?;
        }
    }
    if let Some(e) = &f.extension_ref {
        check_group(&e.group, &format!("{at_field}.group"))?;
        check_kind(&e.kind, &format!("{at_field}.kind"))?;
        check_object_name(&e.name, &format!("{at_field}.name"))?;
        if e.group != FAULT_GROUP || e.kind != FAULT_KIND {
            return Err(problem(
                &at_field,
                format!(
                    "{}/{} is not a filter Weft knows: an ExtensionRef names a {FAULT_KIND} \
                     (group {FAULT_GROUP})",
                    if e.group.is_empty() { "core" } else { &e.group },
                    e.kind
                ),
            ));
        }
        if !is_dns_subdomain(&e.name) {
            return Err(problem(
                &format!("{at_field}.name"),
                format!("{:?} is not a valid object name", e.name),
            ));
        }
    }
    Ok(())
}

fn check_header_filter(h: &HttpHeaderFilter, at: &str) -> Result<(), Problem> {
    let mut names = HashSet::new();
    for (what, list) in [("set", &h.set), ("add", &h.add)] {
        if list.len() > 16 {
            return Err(problem(&format!("{at}.{what}"), "more than 16 headers"));
        }
        for (i, header) in list.iter().enumerate() {
            let at_h = format!("{at}.{what}[{i}]");
            check_header_name(&header.name, &format!("{at_h}.name"))?;
            if header.value.is_empty() || header.value.len() > 4096 {
                return Err(problem(&format!("{at_h}.value"), "a value is 1-4096 bytes"));
            }
            check_header_value(&header.value, &format!("{at_h}.value"))?;
            if !names.insert(header.name.to_ascii_lowercase()) {
                return Err(problem(
                    &format!("{at_h}.name"),
                    format!(
                        "{:?} has a second action: one action per header name",
                        header.name
                    ),
                ));
            }
        }
    }
    if h.remove.len() > 16 {
        return Err(problem(&format!("{at}.remove"), "more than 16 headers"));
    }
    for (i, name) in h.remove.iter().enumerate() {
        let at_h = format!("{at}.remove[{i}]");
        check_header_name(name, &at_h)?;
        if !names.insert(name.to_ascii_lowercase()) {
            return Err(problem(
                &at_h,
                format!("{name:?} has a second action: one action per header name"),
            ));
        }
    }
    Ok(())
}

fn check_path_modifier(p: &HttpPathModifier, at: &str) -> Result<(), Problem> {
    let value = match (
        p.type_.as_str(),
        &p.replace_full_path,
        &p.replace_prefix_match,
    ) {
        ("ReplaceFullPath", Some(v), None) | ("ReplacePrefixMatch", None, Some(v)) => v,
        ("ReplaceFullPath", None, _) => {
            return Err(problem(&format!("{at}.replaceFullPath"), "missing"))
        }
        ("ReplacePrefixMatch", _, None) => {
            return Err(problem(&format!("{at}.replacePrefixMatch"), "missing"))
        }
        ("ReplaceFullPath" | "ReplacePrefixMatch", _, _) => {
            return Err(problem(
                at,
                format!("only the field of type {} may be set", p.type_),
            ))
        }
        (other, _, _) => {
            return Err(problem(
                &format!("{at}.type"),
                format!("{other:?}: expected ReplaceFullPath or ReplacePrefixMatch"),
            ))
        }
    };
    if value.len() > 1024 {
        return Err(problem(at, "longer than 1024 bytes"));
    }
    // The replacement becomes the request's path: empty (for a prefix) or a valid path.
    if !(value.is_empty() && p.type_ == "ReplacePrefixMatch") {
        let field = if p.type_ == "ReplaceFullPath" {
            "replaceFullPath"
        } else {
            "replacePrefixMatch"
        };
        check_path(value, &format!("{at}.{field}"))?;
    }
    Ok(())
}

fn check_backend_object(b: &BackendObjectReference, at: &str) -> Result<(), Problem> {
    if let Some(group) = &b.group {
        check_group(group, &format!("{at}.group"))?;
    }
    if let Some(kind) = &b.kind {
        check_kind(kind, &format!("{at}.kind"))?;
    }
    check_object_name(&b.name, &format!("{at}.name"))?;
    if let Some(ns) = &b.namespace {
        check_namespace(ns, &format!("{at}.namespace"))?;
    }
    match b.port {
        Some(port) => check_port(port, &format!("{at}.port")),
        None if b.is_service() => Err(problem(
            &format!("{at}.port"),
            "missing: a Service backend needs a port",
        )),
        None => Ok(()),
    }
}

fn check_group(group: &str, at: &str) -> Result<(), Problem> {
    if !group.is_empty() && !is_dns_subdomain(group) {
        return Err(problem(at, format!("{group:?} is not an API group")));
    }
    Ok(())
}

fn check_kind(kind: &str, at: &str) -> Result<(), Problem> {
    let ok = kind.len() <= 63
        && kind.starts_with(|c: char| c.is_ascii_alphabetic())
        && kind.ends_with(|c: char| c.is_ascii_alphanumeric())
        && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !ok {
        return Err(problem(at, format!("{kind:?} is not a kind")));
    }
    Ok(())
}

fn check_namespace(ns: &str, at: &str) -> Result<(), Problem> {
    if !is_dns_label(ns) {
        return Err(problem(at, format!("{ns:?} is not a namespace")));
    }
    Ok(())
}

fn check_object_name(name: &str, at: &str) -> Result<(), Problem> {
    if name.is_empty() || name.len() > 253 {
        return Err(problem(at, "a name is 1-253 bytes"));
    }
    Ok(())
}

fn check_port(port: i32, at: &str) -> Result<(), Problem> {
    if !(1..=65535).contains(&port) {
        return Err(problem(at, format!("{port} is not a port")));
    }
    Ok(())
}

fn check_precise_hostname(host: &str, at: &str) -> Result<(), Problem> {
    if !is_dns_subdomain(host) {
        return Err(problem(
            at,
            format!("{host:?} is not a hostname (a lowercase DNS name)"),
        ));
    }
    Ok(())
}

/// Checks a ReferenceGrant as its CRD does.
pub fn check_reference_grant(grant: &ReferenceGrant) -> Result<(), Problem> {
    let spec = &grant.spec;
    for (what, len) in [("from", spec.from.len()), ("to", spec.to.len())] {
        if !(1..=16).contains(&len) {
            return Err(problem(
                &format!("spec.{what}"),
                format!("{len} entries: 1-16 expected"),
            ));
        }
    }
    for (i, from) in spec.from.iter().enumerate() {
        let at = format!("spec.from[{i}]");
        check_group(&from.group, &format!("{at}.group"))?;
        check_kind(&from.kind, &format!("{at}.kind"))?;
        check_namespace(&from.namespace, &format!("{at}.namespace"))?;
    }
    for (i, to) in spec.to.iter().enumerate() {
        let at = format!("spec.to[{i}]");
        check_group(&to.group, &format!("{at}.group"))?;
        check_kind(&to.kind, &format!("{at}.kind"))?;
        if let Some(name) = &to.name {
            check_object_name(name, &format!("{at}.name"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
