//! The route table of one target as it arrives: plain data, strings not yet checked or compiled.
//!
//! Whoever decodes the wire (the proxy's discovery client) builds these; [`crate::RouteTable::compile`]
//! checks and compiles them. The shapes follow the Gateway API `HTTPRoute` after the control
//! plane has merged and ordered it for one target (`route-contract.md` in the issue, and
//! `ARCHITECTURE.md`): matches already in precedence order, each naming its rule by index.

/// The routes of one target (a Service port, as seen by one client namespace).
///
/// With no `matches` no route is attached: the Service is balanced as without routes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteTable {
    /// In precedence order: the first that matches a request wins.
    pub matches: Vec<Match>,
    /// What a match leads to; a match names its rule by index.
    pub rules: Vec<Rule>,
    /// A TrafficSplit's weighted backends, for opaque TCP (chosen per connection); empty if none.
    pub tcp_split: Vec<Backend>,
    /// `HTTPFault`s on the whole Service (by `targetRef`), for every HTTP request to it, in
    /// order, before any rule's own fault; also when no route is attached.
    pub faults: Vec<FaultSpec>,
}

/// One `HTTPRouteMatch`: every condition given must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Match {
    /// Index into [`RouteTable::rules`].
    pub rule: u32,
    /// `None` matches every path (the Gateway API's default, `PathPrefix /`).
    pub path: Option<PathMatch>,
    /// An HTTP method, upper case as the Gateway API writes it (`GET`, `POST`...).
    pub method: Option<String>,
    /// All must match. Names are case-insensitive; of two entries with the same name only the
    /// first counts, as the Gateway API says.
    pub headers: Vec<HeaderMatch>,
    /// All must match. Names are exact (case-sensitive); of two entries with the same name only
    /// the first counts.
    pub query: Vec<QueryMatch>,
}

/// How a request's path is matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathMatch {
    /// The whole path, case-sensitive: `/abc` matches `/abc` only, not `/abc/` or `/abcd`.
    Exact(String),
    /// A prefix by whole `/`-separated segments, a trailing `/` ignored: `/abc` (or `/abc/`)
    /// matches `/abc`, `/abc/` and `/abc/def`, not `/abcd`.
    Prefix(String),
    /// A regular expression (the `regex` crate's syntax, RE2-like) that must match the whole path.
    Regex(String),
}

/// A header condition. A header sent several times matches if any of its values does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderMatch {
    /// A header name, any case.
    pub name: String,
    pub value: ValueMatch,
}

/// A query parameter condition, on the parameter's first occurrence (as the Gateway API
/// recommends). Names and values are percent-decoded (`%20` is a space; `+` stays `+`, as in a
/// URI rather than a form); a parameter without `=` has the empty value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryMatch {
    /// The parameter's name, exact.
    pub name: String,
    pub value: ValueMatch,
}

/// How a header's or a query parameter's value is matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueMatch {
    /// The whole value, byte for byte.
    Exact(String),
    /// A regular expression that must match the whole value.
    Regex(String),
}

/// One `HTTPRouteRule`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    /// `<route-kind>/<namespace>/<name>/rule/<index>`: the `route` label of request metrics.
    pub name: String,
    /// Applied in order to every request that matches the rule.
    pub filters: Vec<Filter>,
    /// Chosen by weight per request. None (or all of weight 0): the rule answers 500, unless a
    /// filter (a redirect) answers first.
    pub backends: Vec<Backend>,
    /// GEP-1742 `timeouts`.
    pub timeouts: Timeouts,
    /// GEP-1731 `retry`; `None` (or 0 attempts): never retried.
    pub retry: Option<Retry>,
}

/// A rule's timeouts; `None` is no bound (a Gateway API `0s`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// The whole exchange as the client sees it, to the response's head: every try, the
    /// backoff between them and an injected delay included.
    pub request: Option<std::time::Duration>,
    /// Each try, to the response's head. At most `request`.
    pub backend_request: Option<std::time::Duration>,
}

/// A rule's retry policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retry {
    /// Retries after the first try (at most [`crate::MAX_ATTEMPTS`]).
    pub attempts: u32,
    /// Statuses retried, 400 to 599. Connection failures, resets before a response and a try
    /// that hit `backend_request` are retried whatever this says.
    pub codes: Vec<u16>,
    /// The wait before each retry (the proxy adds up to 25 % of jitter).
    pub backoff: std::time::Duration,
}

/// A Weft `HTTPFault`, resolved by the control plane. Neither delay nor abort: it could not be
/// resolved, and a request that meets it is answered 500.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultSpec {
    /// `namespace/name`, for logs and `/config`.
    pub name: String,
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
}

/// Delay a share of requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultDelay {
    /// The share delayed, in millionths (0 to 1,000,000).
    pub per_million: u32,
    /// How long, 1 ms to [`crate::MAX_WAIT`].
    pub fixed_delay: std::time::Duration,
}

/// Answer a share of requests in the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultAbort {
    /// The share aborted, in millionths (0 to 1,000,000).
    pub per_million: u32,
    pub status: AbortStatus,
}

/// What an aborted request is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbortStatus {
    /// An HTTP status, 200 to 599.
    Http(u16),
    /// A gRPC status code, 1 to 16.
    Grpc(u32),
}

/// One weighted `backendRef`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// Its share against the others of the rule; 0 gets nothing.
    pub weight: u32,
    pub target: Target,
    /// `RequestHeaderModifier` and `ResponseHeaderModifier` only, applied after the rule's.
    pub filters: Vec<Filter>,
}

/// Where a backend's share goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A Service port, balanced over its endpoints.
    Service(ServiceRef),
    /// A backendRef the control plane could not resolve: its share is answered with `status`
    /// (500 for `BackendNotFound`, `RefNotPermitted`, `InvalidKind`).
    Invalid { status: u16, reason: String },
}

/// A Service port: `backendRef` ports are Service ports.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
    pub port: u16,
}

/// One `HTTPRouteFilter`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    RequestHeaderModifier(HeaderModifier),
    ResponseHeaderModifier(HeaderModifier),
    UrlRewrite(UrlRewrite),
    RequestRedirect(RequestRedirect),
    RequestMirror(RequestMirror),
    /// An `ExtensionRef` to an `HTTPFault`, resolved: the proxy delays and aborts as it says
    /// (an unresolved one answers 500, as the Gateway API says for a filter that cannot be
    /// honoured: never skipped).
    Fault(FaultSpec),
}

/// `set` replaces a header, `add` appends a value, `remove` removes every value; applied in that
/// order. Names are case-insensitive.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderModifier {
    pub set: Vec<(String, String)>,
    pub add: Vec<(String, String)>,
    pub remove: Vec<String>,
}

/// `URLRewrite`: changes the request before it is forwarded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UrlRewrite {
    /// Replaces the `Host` header (and the URI's authority, if it has one).
    pub hostname: Option<String>,
    pub path: Option<PathModifier>,
}

/// How a rewrite or a redirect changes the path. The query string is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathModifier {
    /// The whole path becomes this.
    ReplaceFullPath(String),
    /// The prefix that matched (by whole segments) becomes this; only with a `PathPrefix` match.
    ReplacePrefixMatch(String),
}

/// `RequestRedirect`: the proxy answers with a redirect instead of forwarding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRedirect {
    /// `http` or `https`; `None` keeps the request's.
    pub scheme: Option<String>,
    /// `None` keeps the request's host (from the URI or `Host`, without its port).
    pub hostname: Option<String>,
    /// `None` keeps the request's path.
    pub path: Option<PathModifier>,
    /// `None`: the scheme's port if a scheme is given, else the port the request was sent to.
    /// Left out of `Location` when it is the scheme's default (80 for http, 443 for https).
    pub port: Option<u16>,
    /// 301, 302, 303, 307 or 308 (the Gateway API's default is 302).
    pub status_code: u16,
}

/// `RequestMirror`: also send a copy of the request to `backend`, for `fraction` of requests;
/// its answer is dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestMirror {
    pub backend: ServiceRef,
    pub fraction: Fraction,
}

/// `numerator / denominator` of requests (`percent: p` is `p / 100`; neither given is `1 / 1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fraction {
    pub numerator: u32,
    pub denominator: u32,
}

impl Fraction {
    /// Every request.
    pub const ALL: Fraction = Fraction {
        numerator: 1,
        denominator: 1,
    };

    /// `percent` of 100.
    pub fn percent(percent: u32) -> Fraction {
        Fraction {
            numerator: percent,
            denominator: 100,
        }
    }
}
