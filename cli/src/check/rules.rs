//! The judgements of `weftctl check`, pure: what the cluster said in, a line out. Everything
//! the command fetches is decided here, so each rule is tested without a cluster.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use rustls::{
    client::{danger::ServerCertVerifier, WebPkiServerVerifier},
    RootCertStore,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime};
use serde::Serialize;
use time::OffsetDateTime;
use weft_certs::inspect;

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    Pass,
    /// Works now, but needs attention (a certificate expiring soon, mixed proxy versions).
    Warn,
    Fail,
}

/// One check's outcome: what was checked, what was found, and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Line {
    pub section: &'static str,
    pub check: String,
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about a warning or a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Line {
    pub(crate) fn pass(
        section: &'static str,
        check: impl Into<String>,
        detail: impl Into<String>,
    ) -> Line {
        Line {
            section,
            check: check.into(),
            status: Status::Pass,
            detail: detail.into(),
            fix: None,
        }
    }

    pub(crate) fn fail(
        section: &'static str,
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Line {
        Line {
            section,
            check: check.into(),
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    pub(crate) fn warn(
        section: &'static str,
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Line {
        Line {
            status: Status::Warn,
            ..Line::fail(section, check, detail, fix)
        }
    }
}

/// The oldest Kubernetes the chart installs on: `matchConditions` are GA in 1.30 (native
/// sidecars came in 1.29).
pub(crate) const MIN_MINOR: u32 = 30;

/// The API server's version, as `/version` reports it (`minor` may end in `+`).
pub(crate) fn version(major: &str, minor: &str, git_version: &str) -> Line {
    const CHECK: &str = "the API server is Kubernetes 1.30 or newer";
    let minor_number = minor.trim_end_matches('+').parse::<u32>().ok();
    match (major, minor_number) {
        ("1", Some(m)) if m >= MIN_MINOR => Line::pass("kubernetes-api", CHECK, git_version),
        _ => Line::fail(
            "kubernetes-api",
            CHECK,
            format!("it is {git_version} (major {major:?}, minor {minor:?})"),
            "upgrade the cluster: the injector's webhook needs matchConditions (GA in 1.30) and native sidecars (1.29)",
        ),
    }
}

/// A Deployment's readiness: `ready` of `wanted` replicas.
pub(crate) fn deployment(
    section: &'static str,
    name: &str,
    namespace: &str,
    found: Option<(i32, i32)>,
) -> Line {
    let check = format!("{name} is ready");
    match found {
        None => Line::fail(
            section,
            check,
            format!("no Deployment {namespace}/{name}"),
            format!("install Weft (helm install weft helm/weft -n {namespace}), or give its namespace with --namespace"),
        ),
        Some((wanted, ready)) if wanted > 0 && ready >= wanted => {
            Line::pass(section, check, format!("{ready} of {wanted} replicas ready"))
        }
        Some((wanted, ready)) => Line::fail(
            section,
            check,
            format!("{ready} of {wanted} replicas ready"),
            format!("kubectl -n {namespace} describe deployment {name}; kubectl -n {namespace} logs deployment/{name}"),
        ),
    }
}

/// The injector down: what its webhook's `failurePolicy` makes of that.
pub(crate) fn injector_down_consequence(failure_policy: Option<&str>) -> &'static str {
    match failure_policy {
        Some("Ignore") => {
            "failurePolicy is Ignore: pods of meshed namespaces are created now without the proxy, outside the mesh until recreated"
        }
        _ => "failurePolicy is Fail: no pod of a meshed namespace can be created until it is back",
    }
}

/// Whether `ca_bundle_pem` (the webhook's caBundle) verifies `serving_pem` (the injector's
/// certificate) for `server_name` at `now`, as the API server will when it calls it.
pub(crate) fn ca_bundle_verifies(
    ca_bundle_pem: &[u8],
    serving_pem: &[u8],
    server_name: &str,
    now: OffsetDateTime,
) -> Result<(), String> {
    let mut roots = RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(ca_bundle_pem) {
        let der = der.map_err(|e| format!("the caBundle is not PEM: {e}"))?;
        roots
            .add(der)
            .map_err(|e| format!("the caBundle holds a certificate rustls cannot use: {e}"))?;
    }
    if roots.is_empty() {
        return Err("the caBundle holds no certificate".into());
    }
    let mut chain = CertificateDer::pem_slice_iter(serving_pem);
    let leaf = chain
        .next()
        .ok_or("the serving Secret's tls.crt holds no certificate")?
        .map_err(|e| format!("the serving Secret's tls.crt is not PEM: {e}"))?;
    let intermediates: Vec<CertificateDer<'static>> = chain.filter_map(Result::ok).collect();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| format!("the caBundle cannot verify: {e}"))?;
    let name =
        ServerName::try_from(server_name.to_string()).map_err(|e| format!("{server_name}: {e}"))?;
    let seconds = u64::try_from(now.unix_timestamp()).unwrap_or(0);
    verifier
        .verify_server_cert(
            &leaf,
            &intermediates,
            &name,
            &[],
            UnixTime::since_unix_epoch(Duration::from_secs(seconds)),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The validity of every certificate in `pem` (`what`: "trust anchor", "identity issuer"):
/// a failure once one has expired (or is not valid yet), a warning within `warn_within` of it.
pub(crate) fn expiry(
    section: &'static str,
    what: &str,
    pem: &[u8],
    now: OffsetDateTime,
    warn_within: Duration,
    renew: &str,
) -> Line {
    let check = format!("the {what} is valid");
    let mut soonest: Option<(OffsetDateTime, String)> = None;
    let mut count = 0;
    for (i, der) in CertificateDer::pem_slice_iter(pem).enumerate() {
        let info = match der
            .map_err(|e| e.to_string())
            .and_then(|der| inspect(&der).map_err(|e| e.to_string()))
        {
            Ok(info) => info,
            Err(e) => {
                return Line::fail(
                    section,
                    check,
                    format!("certificate {i}: {e}"),
                    renew.to_string(),
                )
            }
        };
        count += 1;
        if info.not_before > now {
            return Line::fail(
                section,
                check,
                format!("{} is not valid before {}", info.subject, info.not_before),
                "check the clocks of the machine that made it and of this one",
            );
        }
        if soonest.as_ref().is_none_or(|(at, _)| info.not_after < *at) {
            soonest = Some((info.not_after, info.subject));
        }
    }
    let Some((not_after, subject)) = soonest else {
        return Line::fail(
            section,
            check,
            "no PEM certificate in it",
            renew.to_string(),
        );
    };
    let left = not_after - now;
    let plural = if count == 1 { "" } else { "s" };
    if left.is_negative() {
        Line::fail(
            section,
            check,
            format!("{subject} expired at {not_after}"),
            renew.to_string(),
        )
    } else if left.unsigned_abs() < warn_within {
        Line::warn(
            section,
            check,
            format!(
                "{subject} expires at {not_after}, in {}",
                humantime::format_duration(Duration::from_secs(left.unsigned_abs().as_secs()))
            ),
            renew.to_string(),
        )
    } else {
        Line::pass(
            section,
            check,
            format!("{count} certificate{plural}, the first to expire at {not_after}"),
        )
    }
}

/// Whether the issuer is signed by one of the anchors: its issuer's name is one of theirs.
/// (The control plane checks the signature itself when it loads them; this catches the common
/// mistake, an issuer from another anchor, before it is installed.)
pub(crate) fn issuer_under_anchors(issuer_pem: &[u8], anchors_pem: &[u8]) -> Result<(), String> {
    let first = |pem: &[u8]| -> Result<Vec<weft_certs::CertInfo>, String> {
        CertificateDer::pem_slice_iter(pem)
            .map(|der| {
                der.map_err(|e| e.to_string())
                    .and_then(|der| inspect(&der).map_err(|e| e.to_string()))
            })
            .collect()
    };
    let issuer = first(issuer_pem)?;
    let issuer = issuer.first().ok_or("the issuer holds no certificate")?;
    let anchors = first(anchors_pem)?;
    if anchors.iter().any(|a| a.subject == issuer.issuer) {
        Ok(())
    } else {
        Err(format!(
            "the issuer ({}) was signed by {}, which is not among the trust anchors ({})",
            issuer.subject,
            issuer.issuer,
            anchors
                .iter()
                .map(|a| a.subject.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        ))
    }
}

/// A pod of a namespace that asks for the mesh, as far as the mesh is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PodMesh {
    pub namespace: String,
    pub name: String,
    /// `weft.dev/injected`: the version that injected it; `None`: no proxy.
    pub injected: Option<String>,
}

/// Pods that asked for the mesh and have no proxy (created while the injector was down with
/// `failurePolicy: Ignore`, or before the namespace was labelled).
pub(crate) fn unmeshed(pods: &[PodMesh]) -> Line {
    const CHECK: &str = "every pod of a meshed namespace has the proxy";
    let missing: Vec<String> = pods
        .iter()
        .filter(|p| p.injected.is_none())
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect();
    if missing.is_empty() {
        let n = pods.len();
        return Line::pass("weft-data-plane", CHECK, format!("{n} meshed pods"));
    }
    Line::fail(
        "weft-data-plane",
        CHECK,
        format!("{} without it: {}", missing.len(), shorten(&missing)),
        "recreate them once the injector is ready (kubectl rollout restart deployment -n NAMESPACE, or delete the pods)",
    )
}

/// Every namespace's proxies on one version, and that the control plane's.
pub(crate) fn proxy_versions(pods: &[PodMesh], control_plane_version: Option<&str>) -> Line {
    const CHECK: &str = "the proxies of each namespace run one version, the control plane's";
    let mut by_ns: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    for p in pods {
        if let Some(v) = &p.injected {
            *by_ns.entry(&p.namespace).or_default().entry(v).or_default() += 1;
        }
    }
    let mut problems = Vec::new();
    for (ns, versions) in &by_ns {
        let odd = control_plane_version.is_some_and(|cp| versions.keys().any(|v| *v != cp));
        if versions.len() > 1 || odd {
            let list: Vec<String> = versions
                .iter()
                .map(|(v, n)| format!("{v} ({n} pod{})", if *n == 1 { "" } else { "s" }))
                .collect();
            problems.push(format!("{ns}: {}", list.join(", ")));
        }
    }
    if problems.is_empty() {
        let n = by_ns.len();
        let namespaces = format!("{n} namespace{}", if n == 1 { "" } else { "s" });
        let detail = match control_plane_version {
            Some(v) => format!("{namespaces}, all on {v}"),
            None => format!("{namespaces}, one version each"),
        };
        return Line::pass("weft-data-plane", CHECK, detail);
    }
    Line::warn(
        "weft-data-plane",
        CHECK,
        format!(
            "{}{}",
            problems.join("; "),
            control_plane_version.map(|v| format!(" (control plane {v})")).unwrap_or_default()
        ),
        "restart their workloads to take the current proxy (kubectl rollout restart deployment -n NAMESPACE)",
    )
}

/// The first few items of a long list, and how many more.
fn shorten(items: &[String]) -> String {
    const SHOWN: usize = 10;
    if items.len() <= SHOWN {
        items.join(", ")
    } else {
        format!(
            "{}, and {} more",
            items[..SHOWN].join(", "),
            items.len() - SHOWN
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_certs::Ca;

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn pod(ns: &str, name: &str, v: Option<&str>) -> PodMesh {
        PodMesh {
            namespace: ns.into(),
            name: name.into(),
            injected: v.map(Into::into),
        }
    }

    #[test]
    fn versions_from_1_30_pass() {
        assert_eq!(version("1", "34", "v1.34.4").status, Status::Pass);
        assert_eq!(version("1", "30+", "v1.30.2-eks").status, Status::Pass);
        assert_eq!(version("1", "29", "v1.29.9").status, Status::Fail);
        assert_eq!(version("1", "x", "?").status, Status::Fail);
    }

    #[test]
    fn a_deployment_is_ready_when_every_replica_is() {
        let line = |found| deployment("s", "weft-injector", "weft", found).status;
        assert_eq!(line(Some((1, 1))), Status::Pass);
        assert_eq!(line(Some((2, 1))), Status::Fail);
        assert_eq!(line(Some((0, 0))), Status::Fail, "scaled to zero is down");
        assert_eq!(line(None), Status::Fail);
    }

    /// A CA and a serving certificate for `names` signed by it, as PEM.
    fn serving(names: &[&str]) -> (String, String) {
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&ca_key).expect("ca");
        let issuer = rcgen::Issuer::new(params, ca_key);
        let key = rcgen::KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let leaf = rcgen::CertificateParams::new(names)
            .expect("params")
            .signed_by(&key, &issuer)
            .expect("leaf");
        (ca.pem(), leaf.pem())
    }

    #[test]
    fn the_ca_bundle_must_verify_the_serving_certificate_for_the_services_name() {
        let (ca, leaf) = serving(&["weft-injector.weft.svc"]);
        let name = "weft-injector.weft.svc";
        assert_eq!(
            ca_bundle_verifies(ca.as_bytes(), leaf.as_bytes(), name, now()),
            Ok(())
        );
        let (other_ca, _) = serving(&["x"]);
        assert!(ca_bundle_verifies(other_ca.as_bytes(), leaf.as_bytes(), name, now()).is_err());
        let elsewhere = "weft-injector.mesh.svc";
        assert!(ca_bundle_verifies(ca.as_bytes(), leaf.as_bytes(), elsewhere, now()).is_err());
        assert!(ca_bundle_verifies(b"", leaf.as_bytes(), name, now()).is_err());
    }

    #[test]
    fn certificates_expire_with_a_warning_first() {
        let at = now();
        let anchor =
            Ca::new_anchor("cluster.local", Duration::from_secs(86_400 * 10), at).expect("anchor");
        let pem = anchor.cert_pem().as_bytes();
        let line = |when, warn| expiry("s", "trust anchor", pem, when, warn, "renew").status;
        assert_eq!(line(at, Duration::from_secs(86_400)), Status::Pass);
        assert_eq!(line(at, Duration::from_secs(86_400 * 30)), Status::Warn);
        assert_eq!(
            line(at + time::Duration::days(11), Duration::from_secs(1)),
            Status::Fail
        );
        assert_eq!(
            expiry("s", "trust anchor", b"junk", at, Duration::ZERO, "renew").status,
            Status::Fail
        );
    }

    #[test]
    fn the_issuer_must_come_from_an_anchor() {
        let at = now();
        let year = Duration::from_secs(86_400 * 365);
        let anchor = Ca::new_anchor("cluster.local", year, at).expect("anchor");
        let issuer = anchor
            .new_issuer("cluster.local", year, at)
            .expect("issuer");
        let stranger = Ca::new_anchor("example.org", year, at).expect("anchor");
        let ok = issuer_under_anchors(issuer.cert_pem().as_bytes(), anchor.cert_pem().as_bytes());
        assert_eq!(ok, Ok(()));
        let err =
            issuer_under_anchors(issuer.cert_pem().as_bytes(), stranger.cert_pem().as_bytes())
                .expect_err("another anchor");
        assert!(err.contains("not among the trust anchors"), "{err}");
    }

    #[test]
    fn unmeshed_pods_are_named() {
        let pods = [
            pod("shop", "web-1", Some("0.1.0")),
            pod("shop", "web-2", None),
        ];
        let line = unmeshed(&pods);
        assert_eq!(line.status, Status::Fail);
        assert!(line.detail.contains("shop/web-2"), "{}", line.detail);
        assert_eq!(unmeshed(&pods[..1]).status, Status::Pass);
    }

    #[test]
    fn mixed_or_stale_proxy_versions_warn() {
        let same = [pod("a", "1", Some("0.1.0")), pod("b", "2", Some("0.1.0"))];
        assert_eq!(proxy_versions(&same, Some("0.1.0")).status, Status::Pass);
        assert_eq!(proxy_versions(&same, Some("0.2.0")).status, Status::Warn);
        let mixed = [pod("a", "1", Some("0.1.0")), pod("a", "2", Some("0.0.9"))];
        let line = proxy_versions(&mixed, None);
        assert_eq!(line.status, Status::Warn);
        assert!(line.detail.contains("0.0.9 (1 pod)"), "{}", line.detail);
    }

    #[test]
    fn a_down_injector_says_what_its_policy_does() {
        assert!(injector_down_consequence(Some("Ignore")).contains("without the proxy"));
        assert!(injector_down_consequence(Some("Fail")).contains("can be created"));
    }
}
