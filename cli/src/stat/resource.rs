//! What `weftctl stat` is asked about: `RESOURCE` as kubectl and `linkerd viz stat` spell it
//! (`deploy`, `deploy/api`, `po/web`, `ns`, `svc/api`, `route/api-canary`, ...).

use std::fmt;

/// A kind of resource and, optionally, one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resource {
    pub(crate) kind: Kind,
    pub(crate) name: Option<String>,
}

/// What rows are made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Every meshed pod of each namespace, by its inbound requests.
    Namespace,
    /// Pods grouped by their workload (`weft_proxy_info`): one kind (`deployment`,
    /// `statefulset`, ...) or, with `None`, every kind (bare pods are the workload `pod/NAME`).
    Workload(Option<&'static str>),
    /// Each pod, by its inbound requests.
    Pod,
    /// Each Service, by the requests the mesh's clients sent it (as a route's backend, or
    /// unrouted).
    Service,
    /// Each route rule, by the requests its clients sent through it; `Some` for one kind of
    /// route (`httproute`, `trafficsplit`).
    Route(Option<&'static str>),
}

/// A `RESOURCE` that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("resource {given:?}: {reason}")]
pub(crate) struct ResourceError {
    given: String,
    reason: String,
}

/// The kinds `RESOURCE` takes, for messages and the help.
pub(crate) const KINDS: &str = "ns, workload, deploy, sts, ds, job, po, svc, route, httproute, \
     trafficsplit (plural and long forms too: namespaces, deployments, pods, services, ...)";

impl Resource {
    /// `KIND` or `KIND/NAME`.
    pub(crate) fn parse(given: &str) -> Result<Resource, ResourceError> {
        let error = |reason: String| ResourceError {
            given: given.to_string(),
            reason,
        };
        let (kind, name) = match given.split_once('/') {
            Some((kind, name)) => (kind, Some(name)),
            None => (given, None),
        };
        let kind = match kind.to_ascii_lowercase().as_str() {
            "ns" | "namespace" | "namespaces" => Kind::Namespace,
            "wl" | "workload" | "workloads" => Kind::Workload(None),
            "deploy" | "deployment" | "deployments" => Kind::Workload(Some("deployment")),
            "sts" | "statefulset" | "statefulsets" => Kind::Workload(Some("statefulset")),
            "ds" | "daemonset" | "daemonsets" => Kind::Workload(Some("daemonset")),
            "job" | "jobs" => Kind::Workload(Some("job")),
            "rs" | "replicaset" | "replicasets" => Kind::Workload(Some("replicaset")),
            "po" | "pod" | "pods" => Kind::Pod,
            "svc" | "service" | "services" => Kind::Service,
            "route" | "routes" => Kind::Route(None),
            "httproute" | "httproutes" => Kind::Route(Some("httproute")),
            "ts" | "trafficsplit" | "trafficsplits" => Kind::Route(Some("trafficsplit")),
            "" => return Err(error(format!("no kind; one of {KINDS}"))),
            other => return Err(error(format!("unknown kind {other:?}; one of {KINDS}"))),
        };
        let name = match name {
            None => None,
            Some(n) if is_name(n) => Some(n.to_string()),
            Some(n) => {
                return Err(error(format!(
                    "{n:?} is not a Kubernetes name (lowercase letters, digits, '-' and '.', \
                     at most 253 characters)"
                )))
            }
        };
        Ok(Resource { kind, name })
    }

    /// Whether rows are pods' inbound requests (rather than their callers' outbound ones).
    pub(crate) fn is_served(&self) -> bool {
        matches!(self.kind, Kind::Namespace | Kind::Workload(_) | Kind::Pod)
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Namespace => "namespace",
            Kind::Workload(None) => "workload",
            Kind::Workload(Some(k)) => k,
            Kind::Pod => "pod",
            Kind::Service => "service",
            Kind::Route(None) => "route",
            Kind::Route(Some(k)) => k,
        };
        match &self.name {
            Some(name) => write!(f, "{kind}/{name}"),
            None => f.write_str(kind),
        }
    }
}

/// A DNS subdomain name (RFC 1123), what Kubernetes names most objects.
pub(crate) fn is_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 253
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && n.starts_with(|c: char| c.is_ascii_alphanumeric())
        && n.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A route rule's label, `<kind>/<namespace>/<name>/rule/<i>`, read back; `None` for `""`,
/// `other` or anything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuleName<'a> {
    pub(crate) kind: &'a str,
    pub(crate) namespace: &'a str,
    pub(crate) name: &'a str,
    pub(crate) rule: &'a str,
}

impl<'a> RuleName<'a> {
    pub(crate) fn parse(label: &'a str) -> Option<RuleName<'a>> {
        let mut parts = label.split('/');
        let (kind, namespace, name, word, rule) = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        (parts.next().is_none() && word == "rule").then_some(RuleName {
            kind,
            namespace,
            name,
            rule,
        })
    }
}

/// A `dst_service` label (`namespace/name:port`) as namespace and name.
pub(crate) fn service_of(dst_service: &str) -> Option<(&str, &str)> {
    let (namespace, rest) = dst_service.split_once('/')?;
    let name = rest.rsplit_once(':').map_or(rest, |(n, _)| n);
    (!namespace.is_empty() && !name.is_empty()).then_some((namespace, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_names_parse_as_kubectl_spells_them() {
        let p = |s: &str| Resource::parse(s).expect(s);
        assert_eq!(p("deploy").kind, Kind::Workload(Some("deployment")));
        assert_eq!(p("deployments/api").name.as_deref(), Some("api"));
        assert_eq!(p("po/web-0").kind, Kind::Pod);
        assert_eq!(p("ns").kind, Kind::Namespace);
        assert_eq!(p("svc/api").kind, Kind::Service);
        assert_eq!(p("route/api-canary").kind, Kind::Route(None));
        assert_eq!(p("httproute/x").kind, Kind::Route(Some("httproute")));
        assert_eq!(p("Deploy/api").to_string(), "deployment/api");
        assert!(p("po").is_served() && !p("svc").is_served());
        for (bad, says) in [
            ("", "no kind"),
            ("dep/api", "unknown kind \"dep\""),
            ("deploy/", "is not a Kubernetes name"),
            ("deploy/API", "is not a Kubernetes name"),
            ("po/a/b", "is not a Kubernetes name"),
        ] {
            let e = Resource::parse(bad).expect_err(bad).to_string();
            assert!(e.contains(says) && e.contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn rule_and_service_labels_read_back() {
        assert_eq!(
            RuleName::parse("httproute/demo/api-canary/rule/1"),
            Some(RuleName {
                kind: "httproute",
                namespace: "demo",
                name: "api-canary",
                rule: "1"
            })
        );
        assert_eq!(RuleName::parse("other"), None);
        assert_eq!(RuleName::parse("httproute/demo/x/rules/1"), None);
        assert_eq!(service_of("demo/api-v1:80"), Some(("demo", "api-v1")));
        assert_eq!(service_of(""), None);
    }
}
