//! Local mode's config source: a folder of Kubernetes YAML (`*.yaml`, `*.yml`, several documents
//! per file allowed), read into the same typed objects the Kubernetes source watches.
//!
//! A folder is taken whole or not at all: any document that fails to parse or validate refuses
//! the load with every problem listed by file, document index, field and reason, so nothing
//! half-applied can reach a proxy; the caller keeps its last good snapshot. Kinds this control
//! plane does not use yet are skipped, not refused.
//!
//! YAML is read with serde_yaml (multi-document streams, the same serde path the Kubernetes
//! types use; upstream is in maintenance, which for a parser of a settled format is acceptable)
//! and every typed document through serde_path_to_error, so a type error names its field.

use std::{
    collections::BTreeMap,
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
};

use k8s_openapi::api::{core::v1::Pod, core::v1::Service, discovery::v1::EndpointSlice};
use serde::de::DeserializeOwned;

use crate::files::{read_bounded, ReadError};

/// Largest YAML file read.
const MAX_FILE_BYTES: u64 = 8 << 20;
/// Most documents read from the whole folder.
const MAX_DOCUMENTS: usize = 100_000;
/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// An object's namespace and name.
pub type Key = (String, String);

/// Everything a folder held, by namespace and name.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Snapshot {
    pub services: BTreeMap<Key, Service>,
    pub endpoint_slices: BTreeMap<Key, EndpointSlice>,
    pub pods: BTreeMap<Key, Pod>,
}

/// One refused document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocError {
    pub file: PathBuf,
    /// Position of the document in its file, from 0.
    pub document: usize,
    /// The field at fault (`spec.ports[0].port`), empty when the document as a whole is.
    pub field: String,
    pub reason: String,
}

impl fmt::Display for DocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} document {}", self.file.display(), self.document)?;
        if !self.field.is_empty() {
            write!(f, " field {}", self.field)?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// Reads every YAML file directly in `dir`, in name order.
pub fn load_dir(dir: &Path) -> Result<Snapshot, Vec<DocError>> {
    let whole = |reason: String| {
        vec![DocError {
            file: dir.to_path_buf(),
            document: 0,
            field: String::new(),
            reason,
        }]
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| whole(format!("cannot read the folder: {e}")))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    files.sort();
    let mut snapshot = Snapshot::default();
    let mut errors = Vec::new();
    let mut documents = 0;
    for file in files {
        let text = match read_bounded(&file, MAX_FILE_BYTES) {
            Ok(raw) => match String::from_utf8(raw) {
                Ok(t) => t,
                Err(_) => {
                    errors.push(doc_error(&file, 0, "", "not UTF-8 text".into()));
                    continue;
                }
            },
            Err(ReadError::Io(e)) => {
                errors.push(doc_error(&file, 0, "", format!("cannot read: {e}")));
                continue;
            }
            Err(ReadError::TooLarge(max)) => {
                errors.push(doc_error(&file, 0, "", format!("larger than {max} bytes")));
                continue;
            }
        };
        for (index, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            documents += 1;
            if documents > MAX_DOCUMENTS {
                errors.push(doc_error(
                    &file,
                    index,
                    "",
                    format!("more than {MAX_DOCUMENTS} documents in the folder"),
                ));
                return Err(errors);
            }
            let value: Result<serde_yaml::Value, _> = serde::Deserialize::deserialize(doc);
            let value = match value {
                Ok(v) => v,
                Err(e) => {
                    errors.push(doc_error(&file, index, "", format!("not YAML: {e}")));
                    // A syntax error ends the stream: nothing after it can be read reliably.
                    break;
                }
            };
            if let Err(e) = add(&mut snapshot, value) {
                errors.push(DocError {
                    file: file.clone(),
                    document: index,
                    field: e.0,
                    reason: e.1,
                });
            }
        }
    }
    if errors.is_empty() {
        Ok(snapshot)
    } else {
        Err(errors)
    }
}

fn doc_error(file: &Path, document: usize, field: &str, reason: String) -> DocError {
    DocError {
        file: file.to_path_buf(),
        document,
        field: field.to_string(),
        reason,
    }
}

/// (field, reason)
type Problem = (String, String);

fn problem(field: &str, reason: impl Into<String>) -> Problem {
    (field.to_string(), reason.into())
}

fn add(snapshot: &mut Snapshot, value: serde_yaml::Value) -> Result<(), Problem> {
    if value.is_null() {
        return Ok(()); // an empty document (a trailing `---`)
    }
    let text = |field: &str| {
        value
            .get(field)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let api_version = text("apiVersion").ok_or_else(|| problem("apiVersion", "missing"))?;
    let kind = text("kind").ok_or_else(|| problem("kind", "missing"))?;
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "Service") => {
            let svc: Service = typed(value)?;
            check_service(&svc)?;
            insert(&mut snapshot.services, key(&svc.metadata)?, svc, "Service")
        }
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            let slice: EndpointSlice = typed(value)?;
            check_slice(&slice)?;
            insert(
                &mut snapshot.endpoint_slices,
                key(&slice.metadata)?,
                slice,
                "EndpointSlice",
            )
        }
        ("v1", "Pod") => {
            let pod: Pod = typed(value)?;
            check_pod(&pod)?;
            insert(&mut snapshot.pods, key(&pod.metadata)?, pod, "Pod")
        }
        _ => Ok(()),
    }
}

fn typed<T: DeserializeOwned>(value: serde_yaml::Value) -> Result<T, Problem> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { String::new() } else { field };
        (field, e.into_inner().to_string())
    })
}

fn key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Result<Key, Problem> {
    let name = meta
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| problem("metadata.name", "missing"))?;
    let namespace = meta
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    // Names may be DNS subdomains (dots allowed); namespaces must be DNS labels.
    if !is_dns_subdomain(&name) {
        return Err(problem(
            "metadata.name",
            format!("{name:?} is not a valid Kubernetes name"),
        ));
    }
    if !is_dns_label(&namespace) {
        return Err(problem(
            "metadata.namespace",
            format!("{namespace:?} is not a valid Kubernetes name"),
        ));
    }
    Ok((namespace, name))
}

fn insert<T>(map: &mut BTreeMap<Key, T>, key: Key, value: T, kind: &str) -> Result<(), Problem> {
    if map.contains_key(&key) {
        return Err(problem(
            "metadata.name",
            format!("{kind} {}/{} is defined twice", key.0, key.1),
        ));
    }
    map.insert(key, value);
    Ok(())
}

fn check_service(svc: &Service) -> Result<(), Problem> {
    let Some(spec) = &svc.spec else {
        return Err(problem("spec", "missing"));
    };
    if let Some(ip) = &spec.cluster_ip {
        if ip != "None" && !ip.is_empty() && ip.parse::<IpAddr>().is_err() {
            return Err(problem(
                "spec.clusterIP",
                format!("{ip:?} is not an IP address or None"),
            ));
        }
    }
    for (i, port) in spec.ports.iter().flatten().enumerate() {
        if !(1..=65535).contains(&port.port) {
            return Err(problem(
                &format!("spec.ports[{i}].port"),
                format!("{} is not a port", port.port),
            ));
        }
    }
    Ok(())
}

fn check_slice(slice: &EndpointSlice) -> Result<(), Problem> {
    let labels = slice.metadata.labels.as_ref();
    if labels.and_then(|l| l.get(SERVICE_NAME_LABEL)).is_none() {
        return Err(problem(
            "metadata.labels",
            format!("missing {SERVICE_NAME_LABEL}: which Service is this slice for?"),
        ));
    }
    let want_v6 = match slice.address_type.as_str() {
        "IPv4" => false,
        "IPv6" => true,
        other => {
            return Err(problem(
                "addressType",
                format!("{other:?}: expected IPv4 or IPv6"),
            ));
        }
    };
    for (i, endpoint) in slice.endpoints.iter().enumerate() {
        for (j, addr) in endpoint.addresses.iter().enumerate() {
            match addr.parse::<IpAddr>() {
                Ok(ip) if ip.is_ipv6() == want_v6 => {}
                _ => {
                    return Err(problem(
                        &format!("endpoints[{i}].addresses[{j}]"),
                        format!("{addr:?} is not an {} address", slice.address_type),
                    ))
                }
            }
        }
    }
    for (i, port) in slice.ports.iter().flatten().enumerate() {
        if let Some(p) = port.port {
            if !(1..=65535).contains(&p) {
                return Err(problem(
                    &format!("ports[{i}].port"),
                    format!("{p} is not a port"),
                ));
            }
        }
    }
    Ok(())
}

fn check_pod(pod: &Pod) -> Result<(), Problem> {
    if let Some(sa) = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_ref())
    {
        if !is_dns_subdomain(sa) {
            return Err(problem(
                "spec.serviceAccountName",
                format!("{sa:?} is not a valid name"),
            ));
        }
    }
    for (i, ip) in pod
        .status
        .iter()
        .flat_map(|s| s.pod_ips.iter().flatten())
        .enumerate()
    {
        if ip.ip.parse::<IpAddr>().is_err() {
            return Err(problem(
                &format!("status.podIPs[{i}].ip"),
                format!("{:?} is not an IP address", ip.ip),
            ));
        }
    }
    Ok(())
}

/// RFC 1123 label: lowercase alphanumerics and '-', 1–63, alphanumeric at both ends.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain: labels joined by '.', at most 253.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests;
