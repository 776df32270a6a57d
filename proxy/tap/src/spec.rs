//! What a tap asks for, read from the query string of `GET /tap` (untrusted: any byte string
//! is refused with a [`SpecError`] naming the parameter, or accepted within fixed bounds).
//!
//! | parameter | meaning | default |
//! |---|---|---|
//! | `direction` | `inbound` or `outbound` | both |
//! | `method` | an HTTP method, exactly | any |
//! | `authority` | the request's authority (or `Host`), exactly, ASCII case aside | any |
//! | `path` | a prefix of the request's path, starting with `/` | any |
//! | `limit` | events after which the stream ends, 1..=[`MAX_LIMIT`] | [`DEFAULT_LIMIT`] |
//! | `headers` | `none`, `redacted` (sensitive values replaced) or `all` | `none` |

use http::Method;

use crate::Direction;

/// Events one tap gets when it names no `limit`.
pub const DEFAULT_LIMIT: u64 = 1000;
/// The most events one tap may ask for; it ends after them and the caller taps again.
pub const MAX_LIMIT: u64 = 100_000;
/// The longest query string read.
pub const MAX_QUERY: usize = 4096;
/// The longest `authority` or `path` filter.
const MAX_FILTER: usize = 1024;

/// Which requests a tap sees.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub direction: Option<Direction>,
    pub method: Option<Method>,
    /// Lowercase.
    pub authority: Option<Box<str>>,
    pub path_prefix: Option<Box<str>>,
}

/// Which request headers an event carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Headers {
    #[default]
    None,
    /// Every header, the values of sensitive ones ([`crate::is_sensitive`]) replaced.
    Redacted,
    /// Every header as it came.
    All,
}

/// A tap's request: its filter, its event limit and its headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub filter: Filter,
    pub limit: u64,
    pub headers: Headers,
}

impl Default for Spec {
    fn default() -> Self {
        Self {
            filter: Filter::default(),
            limit: DEFAULT_LIMIT,
            headers: Headers::None,
        }
    }
}

/// Why a query was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("the query is {0} bytes; at most {MAX_QUERY} are read")]
    TooLong(usize),
    #[error("unknown parameter {0:?}; known: direction, method, authority, path, limit, headers")]
    Unknown(String),
    #[error("parameter {0:?} given twice")]
    Repeated(&'static str),
    #[error("{param}={value:?}: {why}")]
    Invalid {
        param: &'static str,
        value: String,
        why: &'static str,
    },
}

impl Spec {
    /// Reads a query string (without the `?`); `None` or empty is the default spec.
    pub fn parse(query: Option<&str>) -> Result<Spec, SpecError> {
        let query = query.unwrap_or("");
        if query.len() > MAX_QUERY {
            return Err(SpecError::TooLong(query.len()));
        }
        let mut spec = Spec::default();
        let mut seen = [false; 6];
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let (slot, param) = match &*key {
                "direction" => (0, "direction"),
                "method" => (1, "method"),
                "authority" => (2, "authority"),
                "path" => (3, "path"),
                "limit" => (4, "limit"),
                "headers" => (5, "headers"),
                other => return Err(SpecError::Unknown(truncate(other))),
            };
            if std::mem::replace(&mut seen[slot], true) {
                return Err(SpecError::Repeated(param));
            }
            let invalid = |why| SpecError::Invalid {
                param,
                value: truncate(&value),
                why,
            };
            match slot {
                0 => {
                    spec.filter.direction = Some(match &*value {
                        "inbound" => Direction::Inbound,
                        "outbound" => Direction::Outbound,
                        _ => return Err(invalid("inbound or outbound")),
                    })
                }
                1 => {
                    if value.is_empty() || value.len() > 32 {
                        return Err(invalid("an HTTP method of 1 to 32 characters"));
                    }
                    let m = Method::from_bytes(value.as_bytes())
                        .map_err(|_| invalid("not an HTTP method token"))?;
                    spec.filter.method = Some(m);
                }
                2 => {
                    if value.is_empty() || value.len() > MAX_FILTER {
                        return Err(invalid("an authority of 1 to 1024 bytes"));
                    }
                    if value.bytes().any(|b| b.is_ascii_control() || b == b' ') {
                        return Err(invalid("no spaces or control characters"));
                    }
                    spec.filter.authority = Some(value.to_ascii_lowercase().into());
                }
                3 => {
                    if !value.starts_with('/') || value.len() > MAX_FILTER {
                        return Err(invalid(
                            "a path prefix starting with / of at most 1024 bytes",
                        ));
                    }
                    spec.filter.path_prefix = Some(value.as_ref().into());
                }
                4 => {
                    spec.limit = value
                        .parse::<u64>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| invalid("a whole number from 1 to 100000"))?;
                }
                _ => {
                    spec.headers = match &*value {
                        "none" => Headers::None,
                        "redacted" => Headers::Redacted,
                        "all" => Headers::All,
                        _ => return Err(invalid("none, redacted or all")),
                    }
                }
            }
        }
        Ok(spec)
    }
}

impl Filter {
    /// Whether a request of `direction` with this `method`, `authority` and `path` is seen.
    pub fn matches(
        &self,
        direction: Direction,
        method: &Method,
        authority: Option<&str>,
        path: &str,
    ) -> bool {
        self.direction.is_none_or(|d| d == direction)
            && self.method.as_ref().is_none_or(|m| m == method)
            && self
                .authority
                .as_deref()
                .is_none_or(|a| authority.is_some_and(|got| got.eq_ignore_ascii_case(a)))
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| path.starts_with(p))
    }
}

/// At most 64 characters of untrusted text for an error message.
fn truncate(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_everything_a_thousand_events_no_headers() {
        for q in [None, Some("")] {
            assert_eq!(Spec::parse(q), Ok(Spec::default()));
        }
        assert_eq!(Spec::default().limit, DEFAULT_LIMIT);
    }

    #[test]
    fn every_parameter_is_read() {
        let spec = Spec::parse(Some(
            "direction=outbound&method=POST&authority=API.shop%3A80&path=%2Fv1%2F&limit=5&headers=redacted",
        ))
        .expect("valid");
        assert_eq!(
            spec,
            Spec {
                filter: Filter {
                    direction: Some(Direction::Outbound),
                    method: Some(Method::POST),
                    authority: Some("api.shop:80".into()),
                    path_prefix: Some("/v1/".into()),
                },
                limit: 5,
                headers: Headers::Redacted,
            }
        );
    }

    #[test]
    fn bad_queries_are_refused_naming_the_parameter() {
        let cases = [
            ("color=red", "unknown parameter \"color\""),
            ("limit=1&limit=2", "\"limit\" given twice"),
            ("limit=0", "limit=\"0\""),
            ("limit=100001", "limit=\"100001\""),
            ("limit=-1", "limit=\"-1\""),
            (
                "direction=sideways",
                "direction=\"sideways\": inbound or outbound",
            ),
            ("method=GE%20T", "method=\"GE T\""),
            ("method=", "method=\"\""),
            ("path=api", "path=\"api\""),
            ("authority=a%0Ab", "authority="),
            ("headers=some", "headers=\"some\""),
        ];
        for (q, want) in cases {
            let err = Spec::parse(Some(q)).expect_err(q).to_string();
            assert!(err.contains(want), "{q}: {err}");
        }
        let long = "path=/".to_owned() + &"a".repeat(MAX_QUERY);
        assert_eq!(
            Spec::parse(Some(&long)),
            Err(SpecError::TooLong(long.len()))
        );
        let err = Spec::parse(Some(&format!("{}=1", "k".repeat(500)))).expect_err("unknown");
        assert!(err.to_string().len() < 200, "{err}");
    }

    #[test]
    fn filters_match_as_documented() {
        let f = Spec::parse(Some(
            "direction=inbound&method=GET&authority=api:80&path=/v1",
        ))
        .expect("valid")
        .filter;
        assert!(f.matches(Direction::Inbound, &Method::GET, Some("API:80"), "/v1/x"));
        assert!(!f.matches(Direction::Outbound, &Method::GET, Some("api:80"), "/v1"));
        assert!(!f.matches(Direction::Inbound, &Method::POST, Some("api:80"), "/v1"));
        assert!(!f.matches(Direction::Inbound, &Method::GET, Some("web:80"), "/v1"));
        assert!(!f.matches(Direction::Inbound, &Method::GET, None, "/v1"));
        assert!(!f.matches(Direction::Inbound, &Method::GET, Some("api:80"), "/v2"));
        assert!(Filter::default().matches(Direction::Outbound, &Method::PUT, None, "/"));
    }

    proptest::proptest! {
        #[test]
        fn any_query_is_parsed_or_refused_without_panic(q in ".{0,300}") {
            let _ = Spec::parse(Some(&q));
        }
    }
}
