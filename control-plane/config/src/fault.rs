//! Weft's `HTTPFault` (`weft.dev/v1alpha1`): delay and abort a share of HTTP and gRPC requests,
//! in the client's proxy. Attached to a route rule by an `ExtensionRef` filter, or to every
//! request to a Service by `targetRef` (optionally only for some clients, `from`). The schema
//! and its CEL rules are `helm/weft/crds/httpfaults.weft.dev.yaml` (field by field in
//! `docs/crds.md`); the checks here are the same, so a folder is refused as the API server would
//! refuse it, and an object the API server let through (an older CRD) is refused here too.
//!
//! Also the Gateway API `Duration` (GEP-2257) the faults and the HTTPRoute's timeouts and
//! retries are written in.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::model::{is_dns_label, is_dns_subdomain, problem, Problem};

/// Weft's API group.
pub const GROUP: &str = "weft.dev";
/// The most clients one fault's `from` lists.
pub const MAX_FROM: usize = 16;

/// The gRPC status codes by their canonical names, as Istio writes them (`UNAVAILABLE`), code
/// = position + 1 (`OK`, 0, is no error to inject).
pub const GRPC_STATUSES: [&str; 16] = [
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpFault {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: HttpFaultSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpFaultSpec {
    /// The Service (in the fault's namespace) every request to which meets the fault.
    pub target_ref: Option<FaultTarget>,
    /// With `targetRef`: only these clients meet it (by namespace, and service account when
    /// given); absent or empty: every client.
    #[serde(default)]
    pub from: Vec<FaultClient>,
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultTarget {
    /// `""` (the default) only.
    pub group: Option<String>,
    /// `Service` only.
    pub kind: String,
    pub name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultClient {
    pub namespace: String,
    /// Absent: every service account of the namespace.
    pub service_account: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultDelay {
    /// 0 to 100, decimals allowed.
    pub percent: f64,
    /// A Gateway API Duration, at least 1 ms.
    pub fixed_delay: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultAbort {
    pub percent: f64,
    pub http_status: Option<i32>,
    pub grpc_status: Option<String>,
}

/// A checked fault, ready for a proxy: shares in millionths, the delay, the abort's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedFault {
    pub delay: Option<(u32, Duration)>,
    pub abort: Option<(u32, AbortStatus)>,
}

/// What an aborted request is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbortStatus {
    Http(u16),
    /// A gRPC code, 1 to 16.
    Grpc(u32),
}

impl k8s_openapi::Resource for HttpFault {
    const API_VERSION: &'static str = "weft.dev/v1alpha1";
    const GROUP: &'static str = GROUP;
    const KIND: &'static str = "HTTPFault";
    const VERSION: &'static str = "v1alpha1";
    const URL_PATH_SEGMENT: &'static str = "httpfaults";
    type Scope = k8s_openapi::NamespaceResourceScope;
}

impl k8s_openapi::ListableResource for HttpFault {
    const LIST_KIND: &'static str = "HTTPFaultList";
}

impl k8s_openapi::Metadata for HttpFault {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Checks an HTTPFault as its CRD does, and reads it.
pub fn check_http_fault(fault: &HttpFault) -> Result<ResolvedFault, Problem> {
    let spec = &fault.spec;
    if spec.delay.is_none() && spec.abort.is_none() {
        return Err(problem(
            "spec",
            "an HTTPFault needs delay, abort or both (spec.delay, spec.abort)",
        ));
    }
    if let Some(target) = &spec.target_ref {
        if !target.group.as_deref().unwrap_or("").is_empty() {
            return Err(problem(
                "spec.targetRef.group",
                "only \"\" (the core group) is supported",
            ));
        }
        if target.kind != "Service" {
            return Err(problem(
                "spec.targetRef.kind",
                format!("{:?}: only Service is supported", target.kind),
            ));
        }
        if !is_dns_label(&target.name) {
            return Err(problem(
                "spec.targetRef.name",
                format!("{:?} is not a Service name", target.name),
            ));
        }
    }
    if spec.from.len() > MAX_FROM {
        return Err(problem(
            "spec.from",
            format!("more than {MAX_FROM} clients"),
        ));
    }
    if !spec.from.is_empty() && spec.target_ref.is_none() {
        return Err(problem(
            "spec.from",
            "only a fault with a targetRef chooses its clients (a route's fault applies to the route's clients)",
        ));
    }
    for (i, client) in spec.from.iter().enumerate() {
        if !is_dns_label(&client.namespace) {
            return Err(problem(
                &format!("spec.from[{i}].namespace"),
                format!("{:?} is not a namespace name", client.namespace),
            ));
        }
        if let Some(sa) = &client.service_account {
            if !is_dns_subdomain(sa) {
                return Err(problem(
                    &format!("spec.from[{i}].serviceAccount"),
                    format!("{sa:?} is not a service account name"),
                ));
            }
        }
    }
    let delay = match &spec.delay {
        None => None,
        Some(d) => {
            let share = per_million(d.percent, "spec.delay.percent")?;
            let wait =
                parse_duration(&d.fixed_delay).map_err(|e| problem("spec.delay.fixedDelay", e))?;
            if wait < Duration::from_millis(1) {
                return Err(problem(
                    "spec.delay.fixedDelay",
                    "at least 1ms (a delay of nothing is no fault)",
                ));
            }
            if wait > Duration::from_secs(3600) {
                return Err(problem(
                    "spec.delay.fixedDelay",
                    format!(
                        "{} is more than the 1h a request may be held",
                        d.fixed_delay
                    ),
                ));
            }
            Some((share, wait))
        }
    };
    let abort = match &spec.abort {
        None => None,
        Some(a) => {
            let share = per_million(a.percent, "spec.abort.percent")?;
            let status = match (a.http_status, &a.grpc_status) {
                (Some(s), None) => {
                    if !(200..=599).contains(&s) {
                        return Err(problem(
                            "spec.abort.httpStatus",
                            format!("{s} is not an HTTP status from 200 to 599"),
                        ));
                    }
                    AbortStatus::Http(u16::try_from(s).unwrap_or(500))
                }
                (None, Some(name)) => {
                    let code = GRPC_STATUSES
                        .iter()
                        .position(|n| n == name)
                        .ok_or_else(|| {
                            problem(
                                "spec.abort.grpcStatus",
                                format!(
                                    "{name:?} is not a gRPC status name ({})",
                                    GRPC_STATUSES.join(", ")
                                ),
                            )
                        })?;
                    AbortStatus::Grpc(u32::try_from(code + 1).unwrap_or(2))
                }
                _ => {
                    return Err(problem(
                        "spec.abort",
                        "abort needs exactly one of httpStatus and grpcStatus",
                    ))
                }
            };
            Some((share, status))
        }
    };
    Ok(ResolvedFault { delay, abort })
}

/// A percentage (0 to 100, decimals allowed) in millionths, rounded to the nearest.
fn per_million(percent: f64, at: &str) -> Result<u32, Problem> {
    if !(0.0..=100.0).contains(&percent) {
        return Err(problem(
            at,
            format!("{percent} is not a percentage from 0 to 100"),
        ));
    }
    // 0..=1,000,000 after the check: the cast cannot truncate.
    Ok((percent * 10_000.0).round() as u32)
}

impl FaultClient {
    /// Whether a client of `namespace` running as `service_account` is this one.
    pub fn selects(&self, namespace: &str, service_account: Option<&str>) -> bool {
        self.namespace == namespace
            && self
                .service_account
                .as_deref()
                .is_none_or(|sa| Some(sa) == service_account)
    }
}

/// A Gateway API `Duration` (GEP-2257): one to four numbers of up to five digits, each with a
/// unit `h`, `m`, `s` or `ms` (`1h30m`, `250ms`, `0s`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad =
        |why: &str| format!("{s:?} is not a Gateway API duration ({why}; e.g. 250ms, 2s, 1m30s)");
    if s.is_empty() {
        return Err(bad("empty"));
    }
    let mut total = Duration::ZERO;
    let mut parts = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return Err(bad("each part is 1 to 5 digits and a unit"));
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad("a number"))?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else {
            return Err(bad("units are h, m, s and ms"));
        };
        rest = &rest[len..];
        // At most 99,999 h a part, four parts: far within a u32 multiplier of an hour.
        total += unit * u32::try_from(n).map_err(|_| bad("a number"))?;
        parts += 1;
        if parts > 4 {
            return Err(bad("at most four parts"));
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(yaml: &str) -> HttpFault {
        serde_yaml::from_str(yaml).expect("YAML")
    }

    #[test]
    fn durations_read_as_the_gateway_api_writes_them() {
        for (text, ms) in [
            ("0s", 0),
            ("250ms", 250),
            ("2s", 2000),
            ("1m30s", 90_000),
            ("1h", 3_600_000),
            ("1h1m1s1ms", 3_661_001),
            ("99999ms", 99_999),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
        for bad in [
            "",
            "1",
            "s",
            "1.5s",
            "-1s",
            "1d",
            "100000ms",
            "1h1m1s1ms1s",
            "1 s",
            "1us",
        ] {
            let e = parse_duration(bad).expect_err(bad);
            assert!(e.contains("Gateway API duration"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_fault_is_read_into_millionths() {
        let f = fault(
            "metadata: {name: f, namespace: shop}\nspec:\n  delay: {percent: 0.5, fixedDelay: 250ms}\n  abort: {percent: 25, grpcStatus: UNAVAILABLE}\n",
        );
        assert_eq!(
            check_http_fault(&f),
            Ok(ResolvedFault {
                delay: Some((5_000, Duration::from_millis(250))),
                abort: Some((250_000, AbortStatus::Grpc(14))),
            })
        );
        let f = fault("spec: {abort: {percent: 100, httpStatus: 503}}");
        assert_eq!(
            check_http_fault(&f).map(|r| r.abort),
            Ok(Some((1_000_000, AbortStatus::Http(503))))
        );
    }

    #[test]
    fn bad_faults_are_refused_by_field() {
        for (yaml, field) in [
            ("spec: {}", "spec"),
            ("spec: {abort: {percent: 101, httpStatus: 503}}", "spec.abort.percent"),
            ("spec: {abort: {percent: -1, httpStatus: 503}}", "spec.abort.percent"),
            ("spec: {abort: {percent: 5, httpStatus: 600}}", "spec.abort.httpStatus"),
            ("spec: {abort: {percent: 5, httpStatus: 100}}", "spec.abort.httpStatus"),
            ("spec: {abort: {percent: 5}}", "spec.abort"),
            (
                "spec: {abort: {percent: 5, httpStatus: 503, grpcStatus: INTERNAL}}",
                "spec.abort",
            ),
            ("spec: {abort: {percent: 5, grpcStatus: OK}}", "spec.abort.grpcStatus"),
            ("spec: {abort: {percent: 5, grpcStatus: '14'}}", "spec.abort.grpcStatus"),
            ("spec: {delay: {percent: 5, fixedDelay: 0ms}}", "spec.delay.fixedDelay"),
            ("spec: {delay: {percent: 5, fixedDelay: 2h}}", "spec.delay.fixedDelay"),
            ("spec: {delay: {percent: 5, fixedDelay: soon}}", "spec.delay.fixedDelay"),
            ("spec: {delay: {percent: 200, fixedDelay: 1s}}", "spec.delay.percent"),
            (
                "spec: {targetRef: {kind: Deployment, name: api}, abort: {percent: 5, httpStatus: 503}}",
                "spec.targetRef.kind",
            ),
            (
                "spec: {targetRef: {group: apps, kind: Service, name: api}, abort: {percent: 5, httpStatus: 503}}",
                "spec.targetRef.group",
            ),
            (
                "spec: {targetRef: {kind: Service, name: Api}, abort: {percent: 5, httpStatus: 503}}",
                "spec.targetRef.name",
            ),
            (
                "spec: {from: [{namespace: ops}], abort: {percent: 5, httpStatus: 503}}",
                "spec.from",
            ),
            (
                "spec: {targetRef: {kind: Service, name: api}, from: [{namespace: Ops}], abort: {percent: 5, httpStatus: 503}}",
                "spec.from[0].namespace",
            ),
            (
                "spec: {targetRef: {kind: Service, name: api}, from: [{namespace: ops, serviceAccount: 'a b'}], abort: {percent: 5, httpStatus: 503}}",
                "spec.from[0].serviceAccount",
            ),
        ] {
            let e = check_http_fault(&fault(yaml)).expect_err(yaml);
            assert_eq!(e.field, field, "{yaml}: {e}");
        }
    }

    #[test]
    fn from_selects_by_namespace_and_service_account() {
        let any = FaultClient {
            namespace: "ops".into(),
            service_account: None,
        };
        let one = FaultClient {
            namespace: "ops".into(),
            service_account: Some("robot".into()),
        };
        assert!(any.selects("ops", Some("robot")) && any.selects("ops", None));
        assert!(!any.selects("shop", Some("robot")));
        assert!(one.selects("ops", Some("robot")));
        assert!(!one.selects("ops", Some("human")) && !one.selects("ops", None));
    }
}

/// The CRD's own cases (`k8s-lab/tests/crd-cases`, which the k8s tier submits to a real API
/// server): the control plane takes every valid HTTPFault and refuses every invalid one, so a
/// folder is refused as the cluster would refuse it.
#[cfg(test)]
mod crd_cases {
    use std::path::Path;

    use crate::{model::Snapshot, yaml};

    fn cases(kind: &str) -> Vec<(String, String)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../k8s-lab/tests/crd-cases")
            .join(kind);
        let mut cases: Vec<(String, String)> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.contains("httpfault"))
            })
            .map(|p| {
                let text = std::fs::read_to_string(&p).expect("read");
                (p.display().to_string(), text)
            })
            .collect();
        cases.sort();
        cases
    }

    fn read(text: &str) -> Result<Snapshot, String> {
        let mut snapshot = Snapshot::default();
        for doc in yaml::documents(text) {
            let mut doc = doc?;
            if let Some(meta) = doc.get_mut("metadata").and_then(|m| m.as_mapping_mut()) {
                meta.insert("namespace".into(), "crd-cases".into());
            }
            yaml::add(&mut snapshot, doc).map_err(|e| e.to_string())?;
        }
        Ok(snapshot)
    }

    #[test]
    fn valid_faults_are_taken_and_invalid_ones_refused() {
        let valid = cases("valid");
        assert!(valid.len() >= 4, "{valid:?}");
        for (file, text) in &valid {
            let s = read(text).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(s.http_faults.len(), 1, "{file}");
        }
        let invalid = cases("invalid");
        assert!(invalid.len() >= 10, "{invalid:?}");
        for (file, text) in &invalid {
            // Unknown fields are the API server's to refuse (strict field validation); the
            // control plane reads what it knows, as every Kubernetes client does.
            if file.ends_with("httpfault-unknown-field.yaml") {
                continue;
            }
            assert!(read(text).is_err(), "{file} was taken");
        }
    }
}
