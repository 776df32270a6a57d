//! Why a route table was refused: where (which match, rule, backend and field) and what is wrong.

use std::fmt;

/// A route table that cannot be compiled. The table is refused whole: nothing of it is used.
///
/// Displays as `<site>: <field>: <reason>`, e.g.
/// `rules[2] "httproute/shop/api/rule/0": filters[0].urlRewrite.path: ...`.
#[derive(Debug, thiserror::Error)]
#[error("{site}: {field}: {reason}")]
pub struct CompileError {
    /// The match, rule, backend or TCP split entry at fault.
    pub site: Site,
    /// The field inside it, as a path (`headers[1].value`, `filters[0].requestRedirect.port`).
    pub field: String,
    /// What is wrong with it.
    pub reason: Reason,
}

/// Where in the table an error is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Site {
    /// `matches[index]`.
    Match { index: usize },
    /// `rules[index]`, with its name when it has one.
    Rule { index: usize, name: String },
    /// `rules[rule].backends[index]`.
    Backend {
        rule: usize,
        rule_name: String,
        index: usize,
    },
    /// `tcp_split[index]`.
    TcpSplit { index: usize },
    /// The table as a whole.
    Table,
}

/// What is wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Reason {
    #[error("names rule {rule}, but the table has {rules} rule(s); check how the table was built")]
    NoSuchRule { rule: u32, rules: usize },
    #[error("{path:?} must start with '/'")]
    PathNotAbsolute { path: String },
    #[error(
        "{path:?} must not contain '//' (the Gateway API refuses it for Exact and PathPrefix)"
    )]
    PathDoubleSlash { path: String },
    #[error("{path:?} is not a valid URI path (no spaces, '?', '#' or control characters)")]
    InvalidPath { path: String },
    #[error("regular expression {pattern:?} does not compile within the size limits: {source}")]
    Regex {
        pattern: String,
        #[source]
        source: Box<regex::Error>,
    },
    #[error(
        "the table holds more than {max} regular expressions; split the routes or use \
         Exact and PathPrefix matches"
    )]
    TooManyRegexes { max: usize },
    #[error("{method:?} is not an HTTP method")]
    InvalidMethod { method: String },
    #[error("{name:?} is not a valid HTTP header name")]
    InvalidHeaderName { name: String },
    #[error("{value:?} is not a valid HTTP header value (printable ASCII, tabs and spaces)")]
    InvalidHeaderValue { value: String },
    #[error("is empty")]
    Empty,
    #[error("the weights add up to more than {max}; use smaller weights", max = u32::MAX)]
    WeightOverflow,
    #[error("status {status} is not one of {expected}")]
    InvalidStatus { status: u16, expected: &'static str },
    #[error("{hostname:?} is not a valid host name")]
    InvalidHostname { hostname: String },
    #[error("scheme {scheme:?} is not supported; use http or https")]
    UnsupportedScheme { scheme: String },
    #[error("port 0 is not a port")]
    PortZero,
    #[error(
        "ReplacePrefixMatch needs a PathPrefix match, but matches[{match_index}] matches the \
         path {kind}"
    )]
    PrefixRewriteWithoutPrefixMatch {
        match_index: usize,
        kind: &'static str,
    },
    #[error("a rule takes at most one {filter} filter")]
    DuplicateFilter { filter: &'static str },
    #[error("URLRewrite and RequestRedirect cannot be on the same rule")]
    RewriteWithRedirect,
    #[error("a backend takes only RequestHeaderModifier and ResponseHeaderModifier, not {filter}")]
    FilterOnBackend { filter: &'static str },
    #[error("a TCP split's backends cannot have filters (TCP has no headers)")]
    FilterOnTcpBackend,
    #[error(
        "fraction {numerator}/{denominator} is not between 0 and 1 with a denominator above 0"
    )]
    InvalidFraction { numerator: u32, denominator: u32 },
    #[error("{per_million} millionths is more than the whole (at most 1,000,000: 100 %)")]
    InvalidShare { per_million: u32 },
    #[error("{wait:?} is not between 1 ms and {max:?}")]
    InvalidWait {
        wait: std::time::Duration,
        max: std::time::Duration,
    },
    #[error("gRPC status {code} is not a gRPC error code (1 to 16)")]
    InvalidGrpcStatus { code: u32 },
    #[error("{backend:?} is longer than the request timeout {request:?} it is part of")]
    BackendTimeoutAboveRequest {
        backend: std::time::Duration,
        request: std::time::Duration,
    },
    #[error("{attempts} retries is more than the {max} a rule may ask for")]
    TooManyAttempts { attempts: u32, max: u32 },
    #[error("a retry policy lists at most {max} status codes")]
    TooManyRetryCodes { max: usize },
}

impl CompileError {
    pub(crate) fn new(site: Site, field: impl Into<String>, reason: Reason) -> CompileError {
        CompileError {
            site,
            field: field.into(),
            reason,
        }
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Site::Match { index } => write!(f, "matches[{index}]"),
            Site::Rule { index, name } => write!(f, "rules[{index}] {name:?}"),
            Site::Backend {
                rule,
                rule_name,
                index,
            } => write!(f, "rules[{rule}] {rule_name:?} backends[{index}]"),
            Site::TcpSplit { index } => write!(f, "tcp_split[{index}]"),
            Site::Table => f.write_str("table"),
        }
    }
}
