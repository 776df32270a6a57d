//! One compiled `HTTPRouteMatch` and how a request is tested against it: path, method, headers
//! and query parameters, without allocating.

use http::{HeaderMap, HeaderName, Method, Uri};
use regex::bytes::{Regex, RegexBuilder};

use crate::error::{CompileError, Reason, Site};
use crate::spec;

/// The most compiled size of one regular expression (`RegexBuilder::size_limit`). A pattern
/// that needs more is refused: `(\w{50}){50}`, not `/api/v[0-9]+/users/[^/]+`.
pub const REGEX_SIZE_LIMIT: usize = 512 * 1024;
/// The most memory one regular expression's lazy DFA cache may take
/// (`RegexBuilder::dfa_size_limit`); past it the search falls back to slower engines.
pub const REGEX_DFA_SIZE_LIMIT: usize = 512 * 1024;
/// The most regular expressions in one table. With the two limits above, a hostile table costs
/// at most about a gigabyte, and a table for real routes a tiny part of that.
pub const MAX_REGEXES: usize = 1024;

/// How many bytes of a percent-encoded query value are decoded on the stack for a regex match;
/// a longer one is decoded into a heap buffer.
const DECODE_ON_STACK: usize = 256;

/// One compiled match: the request must satisfy every condition. See [`crate::spec::Match`].
#[derive(Debug)]
pub struct Match {
    index: usize,
    rule: usize,
    path: PathMatch,
    method: Option<Method>,
    headers: Box<[HeaderMatch]>,
    query: Box<[QueryMatch]>,
}

/// How a compiled match tests the path.
#[derive(Debug)]
enum PathMatch {
    Exact(Box<str>),
    /// Without its trailing `/`: `/` is the empty string, which matches every path.
    Prefix(Box<str>),
    Regex(Regex),
}

#[derive(Debug)]
struct HeaderMatch {
    name: HeaderName,
    value: ValueMatch,
}

#[derive(Debug)]
struct QueryMatch {
    name: Box<str>,
    value: ValueMatch,
}

#[derive(Debug)]
enum ValueMatch {
    Exact(Box<[u8]>),
    Regex(Regex),
}

/// Counts the regular expressions of a table as they are compiled, to bound them.
#[derive(Debug, Default)]
pub(crate) struct RegexBudget {
    compiled: usize,
}

impl Match {
    /// Its position in the table's ordered matches.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The index of the rule it leads to.
    pub fn rule_index(&self) -> usize {
        self.rule
    }

    /// The prefix a `PathPrefix` match (or a match with no path condition) matched, without its
    /// trailing `/` (`""` for `/`): what `ReplacePrefixMatch` replaces. `None` for `Exact` and
    /// regex path matches.
    pub fn prefix(&self) -> Option<&str> {
        match &self.path {
            PathMatch::Prefix(prefix) => Some(prefix),
            PathMatch::Exact(_) | PathMatch::Regex(_) => None,
        }
    }

    /// Whether a request with this method, URI and headers satisfies every condition.
    pub fn matches(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> bool {
        if self.method.as_ref().is_some_and(|m| m != method) {
            return false;
        }
        if !self.path.matches(uri.path()) {
            return false;
        }
        let headers_match = self.headers.iter().all(|h| {
            headers
                .get_all(&h.name)
                .iter()
                .any(|value| h.value.matches(value.as_bytes()))
        });
        if !headers_match {
            return false;
        }
        if self.query.is_empty() {
            return true;
        }
        let query = uri.query().unwrap_or("");
        self.query.iter().all(|q| {
            first_query_value(query, q.name.as_bytes())
                .is_some_and(|raw| q.value.matches_encoded(raw))
        })
    }

    /// What the path condition is, for a compile error.
    pub(crate) fn path_kind(&self) -> &'static str {
        match self.path {
            PathMatch::Exact(_) => "exactly (Exact)",
            PathMatch::Prefix(_) => "by prefix (PathPrefix)",
            PathMatch::Regex(_) => "by a regular expression",
        }
    }

    pub(crate) fn compile(
        index: usize,
        spec: &spec::Match,
        rules: usize,
        budget: &mut RegexBudget,
    ) -> Result<Match, CompileError> {
        let err = |field: String, reason| CompileError::new(Site::Match { index }, field, reason);
        let rule = usize::try_from(spec.rule)
            .ok()
            .filter(|&rule| rule < rules)
            .ok_or_else(|| {
                err(
                    "rule".into(),
                    Reason::NoSuchRule {
                        rule: spec.rule,
                        rules,
                    },
                )
            })?;
        let path = match &spec.path {
            None => PathMatch::Prefix("".into()),
            Some(spec::PathMatch::Exact(path)) => {
                check_path(path).map_err(|reason| err("path.exact".into(), reason))?;
                PathMatch::Exact(path.as_str().into())
            }
            Some(spec::PathMatch::Prefix(path)) => {
                check_path(path).map_err(|reason| err("path.prefix".into(), reason))?;
                PathMatch::Prefix(path.strip_suffix('/').unwrap_or(path).into())
            }
            Some(spec::PathMatch::Regex(pattern)) => PathMatch::Regex(
                budget
                    .compile(pattern)
                    .map_err(|reason| err("path.regex".into(), reason))?,
            ),
        };
        let method = match &spec.method {
            None => None,
            Some(method) => Some(Method::from_bytes(method.as_bytes()).map_err(|_| {
                err(
                    "method".into(),
                    Reason::InvalidMethod {
                        method: method.clone(),
                    },
                )
            })?),
        };
        let mut headers: Vec<HeaderMatch> = Vec::with_capacity(spec.headers.len());
        for (i, header) in spec.headers.iter().enumerate() {
            let name = HeaderName::from_bytes(header.name.as_bytes()).map_err(|_| {
                err(
                    format!("headers[{i}].name"),
                    Reason::InvalidHeaderName {
                        name: header.name.clone(),
                    },
                )
            })?;
            if let spec::ValueMatch::Exact(value) = &header.value {
                // No header holds such a value: it could never match.
                if http::HeaderValue::from_str(value).is_err() {
                    return Err(err(
                        format!("headers[{i}].value"),
                        Reason::InvalidHeaderValue {
                            value: value.clone(),
                        },
                    ));
                }
            }
            let value = ValueMatch::compile(&header.value, budget)
                .map_err(|reason| err(format!("headers[{i}].value"), reason))?;
            // Of two entries with the same name only the first counts (Gateway API).
            if headers.iter().all(|h| h.name != name) {
                headers.push(HeaderMatch { name, value });
            }
        }
        let mut query: Vec<QueryMatch> = Vec::with_capacity(spec.query.len());
        for (i, param) in spec.query.iter().enumerate() {
            if param.name.is_empty() {
                return Err(err(format!("query[{i}].name"), Reason::Empty));
            }
            let value = ValueMatch::compile(&param.value, budget)
                .map_err(|reason| err(format!("query[{i}].value"), reason))?;
            if query.iter().all(|q| *q.name != *param.name) {
                query.push(QueryMatch {
                    name: param.name.as_str().into(),
                    value,
                });
            }
        }
        Ok(Match {
            index,
            rule,
            path,
            method,
            headers: headers.into(),
            query: query.into(),
        })
    }
}

impl PathMatch {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(exact) => path == &**exact,
            PathMatch::Prefix(prefix) => prefix_matches(prefix, path),
            PathMatch::Regex(regex) => regex.is_match(path.as_bytes()),
        }
    }
}

impl ValueMatch {
    fn compile(spec: &spec::ValueMatch, budget: &mut RegexBudget) -> Result<ValueMatch, Reason> {
        match spec {
            spec::ValueMatch::Exact(value) => Ok(ValueMatch::Exact(value.as_bytes().into())),
            spec::ValueMatch::Regex(pattern) => budget.compile(pattern).map(ValueMatch::Regex),
        }
    }

    fn matches(&self, value: &[u8]) -> bool {
        match self {
            ValueMatch::Exact(exact) => value == &**exact,
            ValueMatch::Regex(regex) => regex.is_match(value),
        }
    }

    /// Matches a percent-encoded query value, decoding it only if it holds a `%`.
    fn matches_encoded(&self, raw: &str) -> bool {
        let raw = raw.as_bytes();
        if !raw.contains(&b'%') {
            return self.matches(raw);
        }
        match self {
            ValueMatch::Exact(exact) => decoded_eq(raw, exact),
            ValueMatch::Regex(regex) => {
                // Decoding never lengthens, so a short value fits the stack buffer.
                if raw.len() <= DECODE_ON_STACK {
                    let mut buf = [0_u8; DECODE_ON_STACK];
                    let mut len = 0;
                    for (slot, byte) in buf.iter_mut().zip(PercentDecode(raw)) {
                        *slot = byte;
                        len += 1;
                    }
                    regex.is_match(&buf[..len])
                } else {
                    let decoded: Vec<u8> = PercentDecode(raw).collect();
                    regex.is_match(&decoded)
                }
            }
        }
    }
}

impl RegexBudget {
    /// Compiles `pattern` to match whole values only, within the size limits.
    pub(crate) fn compile(&mut self, pattern: &str) -> Result<Regex, Reason> {
        if self.compiled >= MAX_REGEXES {
            return Err(Reason::TooManyRegexes { max: MAX_REGEXES });
        }
        let regex_error = |source: regex::Error| Reason::Regex {
            pattern: pattern.to_owned(),
            source: Box::new(source),
        };
        // Parse the pattern alone first: wrapped in `^(?:...)$` an unbalanced pattern such as
        // `a)|(b` would otherwise compile into something else, unanchored.
        regex_syntax::Parser::new()
            .parse(pattern)
            .map_err(|e| regex_error(regex::Error::Syntax(e.to_string())))?;
        let regex = RegexBuilder::new(&format!("^(?:{pattern})$"))
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_DFA_SIZE_LIMIT)
            .build()
            .map_err(regex_error)?;
        self.compiled += 1;
        Ok(regex)
    }
}

/// Whether `path` starts with `prefix` by whole segments; `prefix` has no trailing `/`, and
/// the empty prefix (`/`) matches every path.
pub(crate) fn prefix_matches(prefix: &str, path: &str) -> bool {
    // Checked first: comparing with the empty string (a dangling pointer) made glibc's AVX-512
    // memcmp take ~80 ns here (measured; a masked load near address 0), five times the rest of
    // a header match.
    if prefix.is_empty() {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// A path for an `Exact` or `PathPrefix` match, a rewrite or a redirect: absolute, no `//`, and
/// made of characters a URI path may hold.
pub(crate) fn check_path(path: &str) -> Result<(), Reason> {
    if !path.starts_with('/') {
        return Err(Reason::PathNotAbsolute { path: path.into() });
    }
    if path.contains("//") {
        return Err(Reason::PathDoubleSlash { path: path.into() });
    }
    let valid = path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b));
    if !valid {
        return Err(Reason::InvalidPath { path: path.into() });
    }
    Ok(())
}

/// The raw (still encoded) value of the first parameter of `query` whose percent-decoded name is
/// `name`. A parameter without `=` has the empty value.
fn first_query_value<'q>(query: &'q str, name: &[u8]) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = key.as_bytes();
        let same = if key.contains(&b'%') {
            decoded_eq(key, name)
        } else {
            key == name
        };
        same.then_some(value)
    })
}

/// Whether `raw` percent-decoded is `expected`, without decoding into a buffer.
fn decoded_eq(raw: &[u8], expected: &[u8]) -> bool {
    let mut decoded = PercentDecode(raw);
    expected.iter().all(|&b| decoded.next() == Some(b)) && decoded.next().is_none()
}

/// Percent-decodes bytes: `%` and two hex digits is one byte, anything else (a lone `%`, and
/// `+`) stays as it is.
#[derive(Clone, Debug)]
pub(crate) struct PercentDecode<'a>(pub(crate) &'a [u8]);

impl Iterator for PercentDecode<'_> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        if first == b'%' {
            if let [hi, lo, tail @ ..] = rest {
                if let (Some(hi), Some(lo)) = (hex(*hi), hex(*lo)) {
                    self.0 = tail;
                    return Some(hi << 4 | lo);
                }
            }
        }
        self.0 = rest;
        Some(first)
    }
}

fn hex(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        let decode = |s: &str| PercentDecode(s.as_bytes()).collect::<Vec<u8>>();
        assert_eq!(decode("a%20b"), b"a b");
        assert_eq!(decode("%41%4a%4A"), b"AJJ");
        assert_eq!(decode("100%"), b"100%");
        assert_eq!(decode("%zz%4"), b"%zz%4");
        assert_eq!(decode("a+b"), b"a+b");
        assert_eq!(decode("%e2%82%ac"), "€".as_bytes());
    }

    #[test]
    fn first_query_value_takes_the_first_occurrence_by_decoded_name() {
        assert_eq!(first_query_value("a=1&b=2&a=3", b"a"), Some("1"));
        assert_eq!(first_query_value("a=1&b=2", b"b"), Some("2"));
        assert_eq!(first_query_value("flag&b=2", b"flag"), Some(""));
        assert_eq!(first_query_value("x=1=2", b"x"), Some("1=2"));
        assert_eq!(first_query_value("my%20name=v", b"my name"), Some("v"));
        assert_eq!(first_query_value("&&a=1", b"a"), Some("1"));
        assert_eq!(first_query_value("ab=1", b"a"), None);
        assert_eq!(first_query_value("", b"a"), None);
    }

    #[test]
    fn encoded_values_are_decoded_for_both_kinds() {
        let mut budget = RegexBudget::default();
        let exact = ValueMatch::Exact(b"a b".as_slice().into());
        assert!(exact.matches_encoded("a%20b"));
        assert!(exact.matches_encoded("a b"));
        assert!(!exact.matches_encoded("a%20bc"));
        let regex = ValueMatch::Regex(budget.compile("a b+").expect("compiles"));
        assert!(regex.matches_encoded("a%20bbb"));
        assert!(!regex.matches_encoded("a%20bbbc"));
        // Longer than the stack buffer: decoded on the heap, same answer.
        let long = format!("a%20{}", "b".repeat(DECODE_ON_STACK * 2));
        assert!(regex.matches_encoded(&long));
    }

    #[test]
    fn regexes_match_whole_values_and_cannot_escape_the_anchors() {
        let mut budget = RegexBudget::default();
        let regex = budget.compile("v[0-9]").expect("compiles");
        assert!(regex.is_match(b"v1"));
        assert!(!regex.is_match(b"xv1"));
        assert!(!regex.is_match(b"v12"));
        // Alternation inside the anchors: `a|ab` must match `ab` whole.
        let alternation = budget.compile("a|ab").expect("compiles");
        assert!(alternation.is_match(b"ab"));
        assert!(matches!(budget.compile("a)|(b"), Err(Reason::Regex { .. })));
    }

    #[test]
    fn oversized_regexes_are_refused() {
        let mut budget = RegexBudget::default();
        let err = budget.compile(r"(\w{100}){100}").expect_err("too big");
        assert!(matches!(err, Reason::Regex { .. }), "{err}");
        // A realistic Unicode-aware pattern fits.
        budget.compile(r"\w+(-\w+)*").expect("fits the limits");
    }

    #[test]
    fn the_regex_budget_is_counted() {
        let mut budget = RegexBudget {
            compiled: MAX_REGEXES - 1,
        };
        budget.compile("a").expect("the last one fits");
        assert!(matches!(
            budget.compile("a"),
            Err(Reason::TooManyRegexes { max: MAX_REGEXES })
        ));
    }
}
