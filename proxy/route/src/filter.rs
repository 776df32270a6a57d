//! Compiled `HTTPRouteFilter`s and what they do to a request or a response.
//!
//! Each filter is a function of the request or response parts; only a rewrite (a new URI) and a
//! redirect (a `Location`) build something, and only they allocate.

use http::header::HOST;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};

use crate::error::Reason;
use crate::matching::{check_path, prefix_matches};
use crate::policy::Fault;
use crate::spec::{self, ServiceRef};
use crate::split::{check_service, ServiceId, Services};

/// What the proxy answers instead of forwarding a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer<'a> {
    /// A `RequestRedirect`: `status` (301, 302, 303, 307 or 308) with this `Location`.
    Redirect {
        status: StatusCode,
        location: HeaderValue,
    },
    /// An error: `status` and why, for the log and the `weft-proxy-error` header. A rule whose
    /// backends are all invalid or of weight 0, an invalid backend's share, a filter that
    /// cannot be applied.
    Error { status: StatusCode, reason: &'a str },
}

/// One compiled rule filter, in the rule's order.
#[derive(Debug)]
pub enum Filter {
    RequestHeaderModifier(HeaderModifier),
    ResponseHeaderModifier(HeaderModifier),
    UrlRewrite(UrlRewrite),
    RequestRedirect(RequestRedirect),
    RequestMirror(Mirror),
    Fault(Fault),
}

/// Sets, adds and removes headers (request or response).
#[derive(Debug)]
pub struct HeaderModifier {
    set: Box<[(HeaderName, HeaderValue)]>,
    add: Box<[(HeaderName, HeaderValue)]>,
    remove: Box<[HeaderName]>,
}

/// `URLRewrite`: a new host and/or path before forwarding.
#[derive(Debug)]
pub struct UrlRewrite {
    hostname: Option<Hostname>,
    path: Option<PathModifier>,
}

/// `RequestRedirect`: the `Location` and status to answer.
#[derive(Debug)]
pub struct RequestRedirect {
    scheme: Option<Scheme>,
    hostname: Option<Box<str>>,
    path: Option<PathModifier>,
    port: Option<u16>,
    status: StatusCode,
}

/// `RequestMirror`: also send a copy to a Service, for a fraction of requests.
#[derive(Debug)]
pub struct Mirror {
    service: ServiceRef,
    id: ServiceId,
    /// A request is mirrored when its random `u32` is below this (`fraction × 2^32`).
    threshold: u64,
}

/// A checked host name, ready for the `Host` header and a URI's authority.
#[derive(Debug)]
struct Hostname {
    header: HeaderValue,
    authority: Authority,
}

/// How a rewrite or redirect changes the path.
#[derive(Debug)]
enum PathModifier {
    ReplaceFullPath(Box<str>),
    /// Without its trailing `/`: `/` is the empty string.
    ReplacePrefixMatch(Box<str>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

/// A filter's name as the Gateway API writes it.
pub(crate) fn kind(filter: &spec::Filter) -> &'static str {
    match filter {
        spec::Filter::RequestHeaderModifier(_) => "RequestHeaderModifier",
        spec::Filter::ResponseHeaderModifier(_) => "ResponseHeaderModifier",
        spec::Filter::UrlRewrite(_) => "URLRewrite",
        spec::Filter::RequestRedirect(_) => "RequestRedirect",
        spec::Filter::RequestMirror(_) => "RequestMirror",
        spec::Filter::Fault(_) => "ExtensionRef",
    }
}

impl Filter {
    /// Compiles one rule filter; an error names the field inside the filter.
    pub(crate) fn compile(
        spec: &spec::Filter,
        services: &mut Services,
    ) -> Result<Filter, (String, Reason)> {
        fn within(prefix: &'static str) -> impl Fn((String, Reason)) -> (String, Reason) {
            move |(field, reason)| (format!("{prefix}.{field}"), reason)
        }
        Ok(match spec {
            spec::Filter::RequestHeaderModifier(m) => Filter::RequestHeaderModifier(
                HeaderModifier::compile(m).map_err(within("requestHeaderModifier"))?,
            ),
            spec::Filter::ResponseHeaderModifier(m) => Filter::ResponseHeaderModifier(
                HeaderModifier::compile(m).map_err(within("responseHeaderModifier"))?,
            ),
            spec::Filter::UrlRewrite(rewrite) => {
                Filter::UrlRewrite(UrlRewrite::compile(rewrite).map_err(within("urlRewrite"))?)
            }
            spec::Filter::RequestRedirect(redirect) => Filter::RequestRedirect(
                RequestRedirect::compile(redirect).map_err(within("requestRedirect"))?,
            ),
            spec::Filter::RequestMirror(mirror) => Filter::RequestMirror(
                Mirror::compile(mirror, services).map_err(within("requestMirror"))?,
            ),
            spec::Filter::Fault(fault) => {
                Filter::Fault(Fault::compile(fault).map_err(within("extensionRef"))?)
            }
        })
    }

    /// The `PathPrefix` replacement it needs, if any (for the check that the rule's matches
    /// are prefix matches).
    pub(crate) fn replaces_prefix(&self) -> bool {
        let path = match self {
            Filter::UrlRewrite(rewrite) => &rewrite.path,
            Filter::RequestRedirect(redirect) => &redirect.path,
            _ => return false,
        };
        matches!(path, Some(PathModifier::ReplacePrefixMatch(_)))
    }
}

impl HeaderModifier {
    /// Applies `set` (replace every value), then `add` (append a value), then `remove` (every
    /// value).
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &*self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &*self.add {
            headers.append(name.clone(), value.clone());
        }
        for name in &*self.remove {
            headers.remove(name);
        }
    }

    pub(crate) fn compile(spec: &spec::HeaderModifier) -> Result<HeaderModifier, (String, Reason)> {
        let pairs = |list: &[(String, String)], field: &str| {
            list.iter()
                .enumerate()
                .map(|(i, (name, value))| {
                    Ok((
                        header_name(name).map_err(|r| (format!("{field}[{i}].name"), r))?,
                        header_value(value).map_err(|r| (format!("{field}[{i}].value"), r))?,
                    ))
                })
                .collect::<Result<Box<[_]>, (String, Reason)>>()
        };
        Ok(HeaderModifier {
            set: pairs(&spec.set, "set")?,
            add: pairs(&spec.add, "add")?,
            remove: spec
                .remove
                .iter()
                .enumerate()
                .map(|(i, name)| header_name(name).map_err(|r| (format!("remove[{i}]"), r)))
                .collect::<Result<_, _>>()?,
        })
    }
}

impl UrlRewrite {
    /// Rewrites the request's host and path. `prefix` is what the request's match matched
    /// ([`crate::Match::prefix`]), for `ReplacePrefixMatch`. The query string is kept.
    ///
    /// The `Host` header is set when the request has one or its URI has no authority (HTTP/1);
    /// an absolute URI's authority (HTTP/2's `:authority`) is replaced. A CONNECT's
    /// authority-form target is left alone, and only a path that starts with `/` is rewritten.
    pub fn apply(
        &self,
        uri: &mut Uri,
        headers: &mut HeaderMap,
        prefix: &str,
    ) -> Result<(), Answer<'static>> {
        if let Some(hostname) = &self.hostname {
            if headers.contains_key(HOST) || uri.authority().is_none() {
                headers.insert(HOST, hostname.header.clone());
            }
        }
        let authority = match (&self.hostname, uri.scheme()) {
            (Some(hostname), Some(_)) => Some(hostname.authority.clone()),
            _ => None,
        };
        let path = match &self.path {
            Some(modifier) if uri.path().starts_with('/') => {
                Some(modifier.apply(uri.path(), prefix))
            }
            _ => None,
        };
        if authority.is_none() && path.is_none() {
            return Ok(());
        }
        let path_and_query = match path {
            Some(mut path) => {
                if let Some(query) = uri.query() {
                    path.push('?');
                    path.push_str(query);
                }
                Some(PathAndQuery::try_from(path).map_err(|_| invalid_rewrite())?)
            }
            None => uri.path_and_query().cloned(),
        };
        let mut parts = http::uri::Parts::default();
        parts.scheme = uri.scheme().cloned();
        parts.authority = authority.or_else(|| uri.authority().cloned());
        parts.path_and_query = path_and_query;
        *uri = Uri::from_parts(parts).map_err(|_| invalid_rewrite())?;
        Ok(())
    }

    fn compile(spec: &spec::UrlRewrite) -> Result<UrlRewrite, (String, Reason)> {
        Ok(UrlRewrite {
            hostname: match &spec.hostname {
                None => None,
                Some(hostname) => {
                    Some(Hostname::compile(hostname).map_err(|r| ("hostname".into(), r))?)
                }
            },
            path: match &spec.path {
                None => None,
                Some(path) => {
                    Some(PathModifier::compile(path).map_err(|(f, r)| (format!("path.{f}"), r))?)
                }
            },
        })
    }
}

fn invalid_rewrite() -> Answer<'static> {
    Answer::Error {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        reason: "the URLRewrite filter made an invalid URI",
    }
}

impl RequestRedirect {
    /// The redirect for a request: its status and `Location`. `prefix` is what the request's
    /// match matched, for `ReplacePrefixMatch`; `dst_port` the port the client sent the request
    /// to (the Service port), which a redirect without scheme or port keeps.
    ///
    /// The scheme is the filter's, else the URI's, else `http`. The host is the filter's, else
    /// the request's (the URI's authority or `Host`, without a port); a request with neither
    /// gets a relative `Location` (path and query only). The port is the filter's, else the
    /// filter scheme's (80, 443), else `dst_port`, and is left out when it is the scheme's
    /// default. The query string is kept.
    pub fn answer(
        &self,
        uri: &Uri,
        headers: &HeaderMap,
        prefix: &str,
        dst_port: u16,
    ) -> Answer<'static> {
        let scheme = self.scheme.unwrap_or(match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => Scheme::Https,
            _ => Scheme::Http,
        });
        let port = self
            .port
            .or(self.scheme.map(Scheme::default_port))
            .unwrap_or(dst_port);
        let request_host = request_authority(uri, headers);
        let host = match (&self.hostname, &request_host) {
            (Some(hostname), _) => Some(&**hostname),
            (None, Some(authority)) => Some(authority.host()),
            (None, None) => None,
        };
        // `*` (OPTIONS) and a CONNECT's empty path redirect as `/`.
        let path = Some(uri.path())
            .filter(|path| path.starts_with('/'))
            .unwrap_or("/");
        let path = match &self.path {
            Some(modifier) => modifier.apply(path, prefix),
            None => path.to_owned(),
        };
        let mut location = String::with_capacity(path.len() + 64);
        if let Some(host) = host {
            location.push_str(scheme.as_str());
            location.push_str("://");
            location.push_str(host);
            if port != scheme.default_port() {
                location.push(':');
                location.push_str(&port.to_string());
            }
        }
        location.push_str(&path);
        if let Some(query) = uri.query() {
            location.push('?');
            location.push_str(query);
        }
        match HeaderValue::try_from(location) {
            Ok(location) => Answer::Redirect {
                status: self.status,
                location,
            },
            Err(_) => Answer::Error {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                reason: "the RequestRedirect filter made an invalid Location",
            },
        }
    }

    fn compile(spec: &spec::RequestRedirect) -> Result<RequestRedirect, (String, Reason)> {
        let scheme = match spec.scheme.as_deref() {
            None => None,
            Some("http") => Some(Scheme::Http),
            Some("https") => Some(Scheme::Https),
            Some(other) => {
                return Err((
                    "scheme".into(),
                    Reason::UnsupportedScheme {
                        scheme: other.into(),
                    },
                ))
            }
        };
        let hostname = match &spec.hostname {
            None => None,
            Some(hostname) => {
                Hostname::compile(hostname).map_err(|r| ("hostname".to_owned(), r))?;
                Some(hostname.as_str().into())
            }
        };
        let path = match &spec.path {
            None => None,
            Some(path) => {
                Some(PathModifier::compile(path).map_err(|(f, r)| (format!("path.{f}"), r))?)
            }
        };
        if spec.port == Some(0) {
            return Err(("port".into(), Reason::PortZero));
        }
        let status = match spec.status_code {
            301 | 302 | 303 | 307 | 308 => StatusCode::from_u16(spec.status_code).ok(),
            _ => None,
        }
        .ok_or((
            "statusCode".into(),
            Reason::InvalidStatus {
                status: spec.status_code,
                expected: "301, 302, 303, 307 or 308",
            },
        ))?;
        Ok(RequestRedirect {
            scheme,
            hostname,
            path,
            port: spec.port,
            status,
        })
    }
}

/// The request's authority: its URI's, else its `Host` header's, if valid.
fn request_authority(uri: &Uri, headers: &HeaderMap) -> Option<Authority> {
    if let Some(authority) = uri.authority() {
        return Some(authority.clone());
    }
    let host = headers.get(HOST)?;
    Authority::try_from(host.as_bytes()).ok()
}

impl Mirror {
    /// Whether this request is mirrored, from `r`, a uniformly random `u32` the caller draws.
    pub fn sample(&self, r: u32) -> bool {
        u64::from(r) < self.threshold
    }

    /// The Service port the copy goes to.
    pub fn service(&self) -> &ServiceRef {
        &self.service
    }

    /// The Service's number in its table.
    pub fn id(&self) -> ServiceId {
        self.id
    }

    fn compile(
        spec: &spec::RequestMirror,
        services: &mut Services,
    ) -> Result<Mirror, (String, Reason)> {
        check_service(&spec.backend).map_err(|(f, r)| (format!("backend.{f}"), r))?;
        let spec::Fraction {
            numerator,
            denominator,
        } = spec.fraction;
        if denominator == 0 || numerator > denominator {
            return Err((
                "fraction".into(),
                Reason::InvalidFraction {
                    numerator,
                    denominator,
                },
            ));
        }
        Ok(Mirror {
            service: spec.backend.clone(),
            id: services.id(&spec.backend),
            // numerator ≤ denominator < 2^32, so numerator × 2^32 fits a u64.
            threshold: (u64::from(numerator) << 32) / u64::from(denominator),
        })
    }
}

impl Hostname {
    fn compile(hostname: &str) -> Result<Hostname, Reason> {
        let invalid = || Reason::InvalidHostname {
            hostname: hostname.into(),
        };
        // A host name, nothing else: no port, no user info.
        let valid = !hostname.is_empty()
            && hostname
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !valid {
            return Err(invalid());
        }
        Ok(Hostname {
            header: HeaderValue::from_str(hostname).map_err(|_| invalid())?,
            authority: Authority::try_from(hostname).map_err(|_| invalid())?,
        })
    }
}

impl PathModifier {
    /// The new path for `path` (which starts with `/`); `prefix` is what matched.
    fn apply(&self, path: &str, prefix: &str) -> String {
        match self {
            PathModifier::ReplaceFullPath(full) => full.to_string(),
            PathModifier::ReplacePrefixMatch(replacement) => {
                // The rest after the matched prefix: empty or from a `/` on. Compilation makes
                // sure the match was by prefix; were it not, the whole path is the rest.
                let rest = if prefix_matches(prefix, path) {
                    &path[prefix.len()..]
                } else {
                    path
                };
                let mut new = String::with_capacity(replacement.len() + rest.len() + 1);
                new.push_str(replacement);
                new.push_str(rest);
                if new.is_empty() {
                    new.push('/');
                }
                new
            }
        }
    }

    fn compile(spec: &spec::PathModifier) -> Result<PathModifier, (String, Reason)> {
        match spec {
            spec::PathModifier::ReplaceFullPath(path) => {
                check_path(path).map_err(|r| ("replaceFullPath".to_owned(), r))?;
                Ok(PathModifier::ReplaceFullPath(path.as_str().into()))
            }
            spec::PathModifier::ReplacePrefixMatch(path) => {
                // The Gateway API allows the empty replacement (strip the prefix).
                if !path.is_empty() {
                    check_path(path).map_err(|r| ("replacePrefixMatch".to_owned(), r))?;
                }
                Ok(PathModifier::ReplacePrefixMatch(
                    path.strip_suffix('/').unwrap_or(path).into(),
                ))
            }
        }
    }
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

fn header_name(name: &str) -> Result<HeaderName, Reason> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| Reason::InvalidHeaderName { name: name.into() })
}

fn header_value(value: &str) -> Result<HeaderValue, Reason> {
    HeaderValue::from_str(value).map_err(|_| Reason::InvalidHeaderValue {
        value: value.into(),
    })
}
