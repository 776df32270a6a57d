//! SPIFFE IDs as Weft issues them: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
//!
//! Parsing follows the SPIFFE ID specification (scheme, trust domain and path character sets,
//! no empty, `.` or `..` segments, no query, fragment, port or user info, at most 2048 bytes) and
//! then Weft's shape: exactly `/ns/<namespace>/sa/<service-account>`, with a namespace that is a
//! Kubernetes DNS-1123 label and a service account that is a DNS-1123 subdomain.

use std::{fmt, str::FromStr};

/// The longest SPIFFE ID the specification allows.
pub const MAX_ID_LEN: usize = 2048;
/// The longest trust domain the specification allows.
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// A workload identity: trust domain, namespace and service account.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

/// Why a string is not a Weft SPIFFE ID.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    #[error("a SPIFFE ID starts with \"spiffe://\"")]
    Scheme,
    #[error("a SPIFFE ID is at most {MAX_ID_LEN} bytes, this one is {0}")]
    TooLong(usize),
    #[error("invalid trust domain {0:?}: {1}")]
    TrustDomain(String, &'static str),
    #[error("invalid path {0:?}: {1}")]
    Path(String, &'static str),
    #[error("invalid namespace {0:?}: {1}")]
    Namespace(String, &'static str),
    #[error("invalid service account {0:?}: {1}")]
    ServiceAccount(String, &'static str),
}

impl SpiffeId {
    /// The identity of service account `sa` in namespace `ns` of `trust_domain`, validated.
    pub fn new(trust_domain: &str, ns: &str, sa: &str) -> Result<Self, SpiffeIdError> {
        check_trust_domain(trust_domain)?;
        check_label(ns).map_err(|r| SpiffeIdError::Namespace(ns.into(), r))?;
        check_subdomain(sa).map_err(|r| SpiffeIdError::ServiceAccount(sa.into(), r))?;
        let id = Self {
            trust_domain: trust_domain.into(),
            namespace: ns.into(),
            service_account: sa.into(),
        };
        let len = id.to_string().len();
        if len > MAX_ID_LEN {
            return Err(SpiffeIdError::TooLong(len));
        }
        Ok(id)
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn service_account(&self) -> &str {
        &self.service_account
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, SpiffeIdError> {
        if s.len() > MAX_ID_LEN {
            return Err(SpiffeIdError::TooLong(s.len()));
        }
        let rest = s.strip_prefix("spiffe://").ok_or(SpiffeIdError::Scheme)?;
        let (td, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        check_trust_domain(td)?;
        let bad_path = |r| SpiffeIdError::Path(path.into(), r);
        if path.is_empty() {
            return Err(bad_path(
                "Weft identities have the path /ns/<namespace>/sa/<service-account>",
            ));
        }
        let segments: Vec<&str> = path[1..].split('/').collect();
        for seg in &segments {
            if seg.is_empty() {
                return Err(bad_path("empty segment (a doubled or trailing slash)"));
            }
            if *seg == "." || *seg == ".." {
                return Err(bad_path("\".\" and \"..\" segments are not allowed"));
            }
            if !seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
            {
                return Err(bad_path(
                    "segments hold only letters, digits, '.', '-' and '_'",
                ));
            }
        }
        match segments[..] {
            ["ns", ns, "sa", sa] => Self::new(td, ns, sa),
            _ => Err(bad_path(
                "Weft identities have the path /ns/<namespace>/sa/<service-account>",
            )),
        }
    }
}

/// Debug shows the URI: error messages that embed an identity (rustls formats its errors with
/// Debug) read as the operator would write it.
impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({self})")
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

/// Trust domain characters per the SPIFFE spec: lowercase letters, digits, `.`, `-`, `_`.
/// A port, user info, percent-encoding or upper case all fail here.
fn check_trust_domain(td: &str) -> Result<(), SpiffeIdError> {
    let bad = |r| SpiffeIdError::TrustDomain(td.into(), r);
    if td.is_empty() {
        return Err(bad("empty"));
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(bad("longer than 255 bytes"));
    }
    if !td
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(bad(
            "only lowercase letters, digits, '.', '-' and '_' are allowed",
        ));
    }
    Ok(())
}

/// A Kubernetes DNS-1123 label (a namespace name).
fn check_label(s: &str) -> Result<(), &'static str> {
    if s.is_empty() || s.len() > 63 {
        return Err("must be 1 to 63 characters");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("only lowercase letters, digits and '-' are allowed");
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err("must start and end with a letter or digit");
    }
    Ok(())
}

/// A Kubernetes DNS-1123 subdomain (a service account name).
fn check_subdomain(s: &str) -> Result<(), &'static str> {
    if s.is_empty() || s.len() > 253 {
        return Err("must be 1 to 253 characters");
    }
    for label in s.split('.') {
        if label.is_empty() {
            return Err("empty label between dots");
        }
        check_label(label)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let id: SpiffeId = "spiffe://cluster.local/ns/shop/sa/orders-api"
            .parse()
            .expect("valid");
        assert_eq!(
            (id.trust_domain(), id.namespace(), id.service_account()),
            ("cluster.local", "shop", "orders-api")
        );
        assert_eq!(
            id.to_string(),
            "spiffe://cluster.local/ns/shop/sa/orders-api"
        );
        assert_eq!(SpiffeId::new("cluster.local", "shop", "orders-api"), Ok(id));
        let dotted: SpiffeId = "spiffe://td/ns/a/sa/b.c"
            .parse()
            .expect("dotted service account");
        assert_eq!(dotted.service_account(), "b.c");
    }

    #[test]
    fn rejects_with_a_reason() {
        let cases = [
            ("http://cluster.local/ns/a/sa/b", "spiffe://"),
            ("SPIFFE://cluster.local/ns/a/sa/b", "spiffe://"),
            ("spiffe:///ns/a/sa/b", "empty"),
            ("spiffe://Cluster.local/ns/a/sa/b", "lowercase"),
            ("spiffe://cluster.local:8080/ns/a/sa/b", "lowercase"),
            ("spiffe://user@cluster.local/ns/a/sa/b", "lowercase"),
            ("spiffe://cluster.local", "path"),
            ("spiffe://cluster.local/", "empty segment"),
            ("spiffe://cluster.local/ns/a/sa/b/", "empty segment"),
            ("spiffe://cluster.local/ns//sa/b", "empty segment"),
            ("spiffe://cluster.local/ns/../sa/b", "\"..\""),
            ("spiffe://cluster.local/ns/a/sa/b?x=1", "segments hold only"),
            ("spiffe://cluster.local/ns/a/sa/b#f", "segments hold only"),
            ("spiffe://cluster.local/ns/a%20b/sa/b", "segments hold only"),
            ("spiffe://cluster.local/sa/b/ns/a", "/ns/<namespace>"),
            ("spiffe://cluster.local/ns/a/sa", "/ns/<namespace>"),
            ("spiffe://cluster.local/ns/A/sa/b", "namespace"),
            ("spiffe://cluster.local/ns/-a/sa/b", "start and end"),
            ("spiffe://cluster.local/ns/a_b/sa/b", "namespace"),
            ("spiffe://cluster.local/ns/a/sa/b..c", "empty label"),
            ("spiffe://cluster.local/ns/a/sa/B", "service account"),
        ];
        for (input, reason) in cases {
            let err = input.parse::<SpiffeId>().expect_err(input);
            assert!(err.to_string().contains(reason), "{input}: {err}");
        }
        let long_td = format!("spiffe://{}/ns/a/sa/b", "a".repeat(256));
        assert!(long_td.parse::<SpiffeId>().is_err());
        let too_long = format!("spiffe://td/ns/a/sa/{}", "a".repeat(MAX_ID_LEN));
        assert!(matches!(
            too_long.parse::<SpiffeId>(),
            Err(SpiffeIdError::TooLong(_))
        ));
        assert!(SpiffeId::new("td", &"a".repeat(64), "b").is_err());
    }
}
