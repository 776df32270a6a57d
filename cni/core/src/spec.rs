//! The CNI 1.0 wire formats `weft-cni` speaks (<https://www.cni.dev/docs/spec/>): the network
//! config on stdin, `CNI_COMMAND` and `CNI_ARGS`, the result on stdout, and errors.
//!
//! `weft-cni` is a chained plugin: it never creates an interface, so its result is the previous
//! plugin's result (`prevResult`) passed through unchanged but for the `cniVersion`.

use std::{collections::BTreeMap, path::PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use weft_pod::{CidrList, PortList};

use crate::redirect::Redirect;

/// The CNI versions whose config and result formats this plugin reads and writes. `CHECK`
/// exists from 0.4.0 on.
pub const SUPPORTED_VERSIONS: [&str; 4] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// The biggest network config read from stdin. A real one is a few KiB; the runtime's own
/// results from earlier plugins (`prevResult`) are the bulk.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// The error codes of the spec (0-99 are the spec's, 100 and up the plugin's).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// CHECK found the pod's rules not as ADD left them.
    pub const RULES_NOT_IN_PLACE: u32 = 100;
    /// iptables refused the rules, or could not be run.
    pub const IPTABLES_FAILED: u32 = 101;
    /// The Kubernetes API did not tell us about the pod.
    pub const KUBERNETES_FAILED: u32 = 102;
}

/// `CNI_COMMAND`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
}

/// A CNI error: printed on stdout as JSON, with a non-zero exit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(rename_all = "camelCase")]
#[error("{msg}: {details}")]
pub struct CniError {
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

/// Which iptables backend to drive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Whichever the host already uses (the one holding rules), else the system's default.
    #[default]
    Auto,
    Nft,
    Legacy,
}

/// Our plugin's entry in the conflist, as the runtime hands it over.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type")]
    pub plugin_type: String,
    #[serde(default)]
    pub prev_result: Option<Value>,
    /// Where the plugin logs; the runtime owns stdout and stderr.
    #[serde(default)]
    pub log_file: Option<PathBuf>,
    #[serde(default)]
    pub log_level: Option<String>,
    #[serde(default)]
    pub iptables_backend: Backend,
    /// Kubernetes mode: the pod's annotations come from the API through this kubeconfig. Without
    /// it, local mode: they come from the runtime's `args`.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// Pods in these namespaces are never meshed (the control plane's own, `kube-system`).
    #[serde(default)]
    pub exclude_namespaces: Vec<String>,
    #[serde(default)]
    pub redirect: RedirectConf,
    #[serde(default)]
    pub args: Option<RuntimeArgs>,
    /// Every other key: the spec's own (`ipam`, `dns`, `runtimeConfig`, ...) are ignored; any
    /// other is most likely a typo, and is logged.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// `redirect` in the plugin config: the defaults are DESIGN.md's.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedirectConf {
    pub proxy_uid: Option<u32>,
    pub inbound_port: Option<u16>,
    pub outbound_port: Option<u16>,
    pub admin_port: Option<u16>,
    pub check_port: Option<u16>,
    pub skip_inbound_ports: Option<String>,
    pub skip_outbound_ports: Option<String>,
    pub skip_outbound_cidrs: Option<String>,
}

/// `args` as the CNI conventions shape it (`args.cni.labels` there); we read annotations in the
/// same shape, for local mode.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RuntimeArgs {
    #[serde(default)]
    pub cni: Option<CniArgs>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct CniArgs {
    #[serde(default)]
    pub annotations: Vec<KeyValue>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// Keys of the spec and its conventions that a runtime may put in any plugin's config.
const STANDARD_KEYS: [&str; 7] = [
    "ipam",
    "dns",
    "ipMasq",
    "runtimeConfig",
    "capabilities",
    "cniVersions",
    "disableCheck",
];

impl Command {
    pub fn parse(value: Option<&str>) -> Result<Self, CniError> {
        match value {
            Some("ADD") => Ok(Command::Add),
            Some("DEL") => Ok(Command::Del),
            Some("CHECK") => Ok(Command::Check),
            Some("VERSION") => Ok(Command::Version),
            Some(other) => Err(CniError::new(
                "1.0.0",
                code::INVALID_ENVIRONMENT,
                "unknown CNI_COMMAND",
                format!("{other:?} is not ADD, DEL, CHECK or VERSION"),
            )),
            None => Err(CniError::new(
                "1.0.0",
                code::INVALID_ENVIRONMENT,
                "CNI_COMMAND is not set",
                "weft-cni is a CNI plugin: a container runtime runs it with CNI_COMMAND and a network config on stdin",
            )),
        }
    }
}

impl CniError {
    pub fn new(
        version: &str,
        code: u32,
        msg: impl Into<String>,
        details: impl Into<String>,
    ) -> Self {
        Self {
            cni_version: version.to_owned(),
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// Whether the error is the caller's: a bad network config, environment or version, which
    /// running again unchanged cannot fix (`weft-cni` exits 64 for these, 1 for the others).
    pub fn is_usage(&self) -> bool {
        matches!(
            self.code,
            code::INCOMPATIBLE_VERSION
                | code::UNSUPPORTED_FIELD
                | code::INVALID_ENVIRONMENT
                | code::DECODE_FAILURE
                | code::INVALID_CONFIG
        )
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| {
            format!(
                "{{\"cniVersion\":\"1.0.0\",\"code\":{},\"msg\":\"error\"}}",
                self.code
            )
        })
    }
}

impl NetConf {
    /// Reads and checks the config: it must be JSON of the right shape, in a version we speak,
    /// and its redirect settings must be valid. Everything else is read when a command needs it.
    pub fn parse(bytes: &[u8]) -> Result<Self, CniError> {
        if bytes.len() > MAX_CONFIG_BYTES {
            return Err(CniError::new(
                "1.0.0",
                code::INVALID_CONFIG,
                "network config too large",
                format!(
                    "{} bytes on stdin; at most {MAX_CONFIG_BYTES} are read",
                    bytes.len()
                ),
            ));
        }
        let conf: NetConf = serde_json::from_slice(bytes).map_err(|e| {
            let version = serde_json::from_slice::<Value>(bytes)
                .ok()
                .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_owned))
                .unwrap_or_else(|| "1.0.0".to_owned());
            let code = if e.is_data() {
                code::INVALID_CONFIG
            } else {
                code::DECODE_FAILURE
            };
            CniError::new(
                &version,
                code,
                "cannot read the network config",
                e.to_string(),
            )
        })?;
        if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
            return Err(CniError::new(
                "1.0.0",
                code::INCOMPATIBLE_VERSION,
                "incompatible CNI version",
                format!(
                    "the config says cniVersion {:?}; weft-cni speaks {}",
                    conf.cni_version,
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        if let Some(prev) = &conf.prev_result {
            if !prev.is_object() {
                return Err(conf.error(code::INVALID_CONFIG, "prevResult is not an object", ""));
            }
        }
        conf.redirect()?;
        Ok(conf)
    }

    pub fn error(&self, code: u32, msg: impl Into<String>, details: impl Into<String>) -> CniError {
        CniError::new(&self.cni_version, code, msg, details)
    }

    /// The base redirect config, before any pod's annotations.
    pub fn redirect(&self) -> Result<Redirect, CniError> {
        let c = &self.redirect;
        let d = Redirect::default();
        let bad = |field: &str, e: &dyn std::fmt::Display| {
            self.error(
                code::INVALID_CONFIG,
                format!("redirect.{field} is not valid"),
                e.to_string(),
            )
        };
        let ports = |field: &str, v: &Option<String>| match v {
            Some(v) => PortList::parse(v).map_err(|e| bad(field, &e)),
            None => Ok(PortList::default()),
        };
        let redirect = Redirect {
            proxy_uid: c.proxy_uid.unwrap_or(d.proxy_uid),
            inbound_port: c.inbound_port.unwrap_or(d.inbound_port),
            outbound_port: c.outbound_port.unwrap_or(d.outbound_port),
            admin_port: c.admin_port.unwrap_or(d.admin_port),
            check_port: c.check_port.unwrap_or(d.check_port),
            skip_inbound_ports: ports("skipInboundPorts", &c.skip_inbound_ports)?,
            skip_outbound_ports: ports("skipOutboundPorts", &c.skip_outbound_ports)?,
            skip_outbound_cidrs: match &c.skip_outbound_cidrs {
                Some(v) => CidrList::parse(v).map_err(|e| bad("skipOutboundCidrs", &e))?,
                None => CidrList::default(),
            },
        };
        redirect.validate().map_err(|e| {
            self.error(
                code::INVALID_CONFIG,
                "the redirect config is not valid",
                e.to_string(),
            )
        })?;
        Ok(redirect)
    }

    /// The result to print: `prevResult` with our version, or an error if there is none (a
    /// chained plugin has nothing of its own to report).
    pub fn result(&self) -> Result<String, CniError> {
        let Some(Value::Object(prev)) = &self.prev_result else {
            return Err(self.error(
                code::INVALID_CONFIG,
                "no prevResult",
                "weft-cni is a chained plugin: list it after the plugin that creates the pod's interface (bridge, ptp, calico, ...) in a conflist",
            ));
        };
        let mut result = prev.clone();
        result.insert(
            "cniVersion".to_owned(),
            Value::String(self.cni_version.clone()),
        );
        serde_json::to_string(&result)
            .map_err(|e| self.error(code::IO_FAILURE, "cannot write the result", e.to_string()))
    }

    /// The annotations the runtime passed in `args.cni.annotations` (local mode).
    pub fn local_annotations(&self) -> BTreeMap<String, String> {
        self.args
            .iter()
            .flat_map(|a| a.cni.iter())
            .flat_map(|c| c.annotations.iter())
            .map(|kv| (kv.key.clone(), kv.value.clone()))
            .collect()
    }

    /// Keys that are neither ours nor the spec's: most likely typos.
    pub fn unknown_keys(&self) -> impl Iterator<Item = &str> {
        self.other
            .keys()
            .map(String::as_str)
            .filter(|k| !STANDARD_KEYS.contains(k))
    }
}

/// The answer to `VERSION`.
pub fn version_reply(requested: Option<&str>) -> String {
    serde_json::json!({
        "cniVersion": requested.filter(|v| SUPPORTED_VERSIONS.contains(v)).unwrap_or("1.0.0"),
        "supportedVersions": SUPPORTED_VERSIONS,
    })
    .to_string()
}

/// `CNI_ARGS`: `K=V;K=V`. Kubernetes runtimes put the pod's namespace and name there.
pub fn parse_cni_args(text: &str) -> Result<BTreeMap<String, String>, CniError> {
    let mut args = BTreeMap::new();
    for pair in text.split(';').filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(CniError::new(
                "1.0.0",
                code::INVALID_ENVIRONMENT,
                "CNI_ARGS is malformed",
                format!(
                    "{:?} is not KEY=VALUE",
                    pair.chars().take(64).collect::<String>()
                ),
            ));
        };
        args.insert(k.to_owned(), v.to_owned());
    }
    Ok(args)
}

#[cfg(test)]
mod tests;
