//! How a meshed pod's TCP gets redirected to its proxy, the two ways Weft does it: the
//! `weft-cni` plugin chained after the bridge in the network list (what the tests use), or
//! `weft-init` run in the pod's namespace after the CNI `ADD`, as the init container does.

use std::path::Path;

use serde_json::{json, Value};

use crate::{error::Result, netns::Netns, process};

// The ports, the UID and the annotation names are the pod contract's (`weft-pod`), so the lab
// cannot disagree with what the CNI, the control plane and the proxy read.
pub use weft_pod::annotations::{
    INJECTED, SKIP_INBOUND_PORTS, SKIP_OUTBOUND_CIDRS, SKIP_OUTBOUND_PORTS,
};
pub use weft_pod::ids::{
    ADMIN_PORT, INBOUND_PORT, OUTBOUND_PORT, PROXY_UID, REDIRECT_CHECK_PORT as SELF_CHECK_PORT,
};

/// Who installs a meshed pod's redirection rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redirect {
    /// `weft-cni`, chained after `bridge` in the network list; it decides from the pod's
    /// annotations (passed as `args.cni.annotations`).
    WeftCni,
    /// `weft-init` in the pod's namespace after the CNI `ADD`, with the pod's skip
    /// annotations as flags (the init-container way, for clusters without the plugin).
    WeftInit,
}

/// The `weft-cni` entry of the network list (local mode: no `kubeconfig`).
pub fn weft_cni_entry(log_file: &Path) -> Value {
    json!({
        "type": "weft-cni",
        "logFile": log_file,
        "logLevel": "debug",
        "iptablesBackend": "auto",
        "redirect": {
            "proxyUid": PROXY_UID,
            "inboundPort": INBOUND_PORT,
            "outboundPort": OUTBOUND_PORT,
            "adminPort": ADMIN_PORT,
        },
    })
}

/// The runtime `args` for `weft-cni`: the pod's annotations, in the CNI conventions'
/// `args.cni` shape.
pub fn weft_cni_args(annotations: &[(String, String)]) -> Value {
    let list: Vec<Value> = annotations
        .iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect();
    json!({"cni": {"annotations": list}})
}

/// `weft-init`'s flags for a pod with `annotations` (the skip annotations; the ports and UID
/// are its defaults, the same as [`weft_cni_entry`]'s).
pub fn weft_init_args(annotations: &[(String, String)]) -> Vec<String> {
    let mut args = Vec::new();
    for (annotation, flag) in [
        (SKIP_INBOUND_PORTS, "--skip-inbound-ports"),
        (SKIP_OUTBOUND_PORTS, "--skip-outbound-ports"),
        (SKIP_OUTBOUND_CIDRS, "--skip-outbound-cidrs"),
    ] {
        if let Some((_, v)) = annotations.iter().find(|(k, _)| k == annotation) {
            args.push(format!("{flag}={v}"));
        }
    }
    args
}

/// Runs `weft-init` inside `ns` for a pod with `annotations`, as its init container would.
pub fn run_weft_init(ns: &Netns, weft_init: &Path, annotations: &[(String, String)]) -> Result<()> {
    let mut cmd = ns.command(weft_init);
    // Its settings come from flags only, none from the lab's own environment.
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .args(weft_init_args(annotations));
    process::run(&mut cmd).map(|_| ())
}
