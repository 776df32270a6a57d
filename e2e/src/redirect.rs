//! How a meshed pod's TCP gets redirected to its proxy: the `weft-cni` plugin chained after the
//! bridge (what the tests use), or the same rules applied by hand with `iptables-restore` in the
//! pod's namespace, as `weft-init` would (a seam for developing without the plugin, and a
//! reference to compare the plugin's rules with).

use std::path::Path;

use serde_json::{json, Value};

use crate::{
    error::{Error, Result},
    netns::Netns,
    process,
};

/// The proxy's UID: its own traffic is never redirected.
pub const PROXY_UID: u32 = 2121;
/// The proxy's outbound listener.
pub const OUTBOUND_PORT: u16 = 15140;
/// The port the proxy's redirect self-check dials on 127.0.0.1; the rules send it to
/// [`OUTBOUND_PORT`].
pub const SELF_CHECK_PORT: u16 = 15141;
/// The proxy's inbound listener.
pub const INBOUND_PORT: u16 = 15143;
/// The proxy's admin port.
pub const ADMIN_PORT: u16 = 15190;

/// The annotation that marks a pod meshed.
pub const INJECTED: &str = "weft.dev/injected";
/// Inbound ports that reach the app directly.
pub const SKIP_INBOUND_PORTS: &str = "weft.dev/skip-inbound-ports";
/// Outbound ports that leave directly.
pub const SKIP_OUTBOUND_PORTS: &str = "weft.dev/skip-outbound-ports";
/// Outbound CIDRs that leave directly.
pub const SKIP_OUTBOUND_CIDRS: &str = "weft.dev/skip-outbound-cidrs";

/// Who installs a meshed pod's redirection rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redirect {
    /// `weft-cni`, chained after `bridge` in the network list; it decides from the pod's
    /// annotations (passed as `args.cni.annotations`).
    WeftCni,
    /// The harness, with `iptables-restore` in the pod's namespace after the CNI `ADD`.
    Manual,
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

/// The rules `weft-cni` installs, as `iptables-restore` input, for `annotations`; `v6` picks
/// the ip6tables flavour (IPv4 CIDRs are left out of it, and the other way round).
pub fn rules(annotations: &[(String, String)], v6: bool) -> Result<String> {
    let get = |key: &str| {
        annotations
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let skip_in = ports(get(SKIP_INBOUND_PORTS))?;
    let skip_out = ports(get(SKIP_OUTBOUND_PORTS))?;
    let cidrs: Vec<&str> = get(SKIP_OUTBOUND_CIDRS)
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty() && c.contains(':') == v6)
        .collect();
    let lo = if v6 { "::1/128" } else { "127.0.0.1/32" };
    let mut r = String::from("*nat\n:WEFT_PREROUTING - [0:0]\n:WEFT_OUTPUT - [0:0]\n");
    r.push_str("-A PREROUTING -p tcp -j WEFT_PREROUTING\n");
    r.push_str("-A OUTPUT -p tcp -j WEFT_OUTPUT\n");
    for port in [INBOUND_PORT, ADMIN_PORT] {
        r.push_str(&format!(
            "-A WEFT_PREROUTING -p tcp --dport {port} -j RETURN\n"
        ));
    }
    if !skip_in.is_empty() {
        r.push_str(&format!(
            "-A WEFT_PREROUTING -p tcp -m multiport --dports {skip_in} -j RETURN\n"
        ));
    }
    r.push_str(&format!(
        "-A WEFT_PREROUTING -p tcp -j REDIRECT --to-ports {INBOUND_PORT}\n"
    ));
    r.push_str(&format!(
        "-A WEFT_OUTPUT -d {lo} -p tcp --dport {SELF_CHECK_PORT} -m owner --uid-owner {PROXY_UID} \
         -j REDIRECT --to-ports {OUTBOUND_PORT}\n"
    ));
    r.push_str(&format!(
        "-A WEFT_OUTPUT -m owner --uid-owner {PROXY_UID} -j RETURN\n"
    ));
    r.push_str("-A WEFT_OUTPUT -o lo -j RETURN\n");
    if !skip_out.is_empty() {
        r.push_str(&format!(
            "-A WEFT_OUTPUT -p tcp -m multiport --dports {skip_out} -j RETURN\n"
        ));
    }
    for cidr in cidrs {
        r.push_str(&format!("-A WEFT_OUTPUT -d {cidr} -j RETURN\n"));
    }
    r.push_str(&format!(
        "-A WEFT_OUTPUT -p tcp -j REDIRECT --to-ports {OUTBOUND_PORT}\n"
    ));
    r.push_str("COMMIT\n");
    Ok(r)
}

/// Applies [`rules`] inside `ns` with `iptables-restore` and `ip6tables-restore`.
pub fn apply_by_hand(ns: &Netns, annotations: &[(String, String)]) -> Result<()> {
    for (program, v6) in [("iptables-restore", false), ("ip6tables-restore", true)] {
        let input = rules(annotations, v6)?;
        let mut cmd = ns.command(program);
        cmd.args(["-w", "10"]);
        let line = process::describe(&cmd);
        let out = process::run_with_input(&mut cmd, input.as_bytes(), process::COMMAND_TIMEOUT)?;
        if !out.status.success() {
            return Err(Error::Command {
                command: line,
                status: out.status.to_string(),
                stderr: format!("{}\ninput:\n{input}", out.stderr.trim()),
            });
        }
    }
    Ok(())
}

/// An annotation's port list (`9000, 9100-9200`) in iptables multiport form (`9000,9100:9200`).
fn ports(list: &str) -> Result<String> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let ok = |s: &str| s.parse::<u16>().is_ok_and(|p| p > 0);
        let valid = match item.split_once('-') {
            Some((a, b)) => ok(a) && ok(b),
            None => ok(item),
        };
        if !valid {
            return Err(Error::Invalid {
                what: "port list",
                value: list.into(),
                reason: "expected ports and a-b ranges separated by commas",
            });
        }
        out.push(item.replace('-', ":"));
    }
    Ok(out.join(","))
}
