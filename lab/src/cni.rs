//! A small libcni: the container runtime's side of the CNI 1.0 protocol.
//!
//! The lab attaches a pod exactly as a runtime does: for each plugin of a network
//! configuration list, in order, it runs the plugin binary found in `CNI_PATH` with
//! `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS` and `CNI_PATH` in its
//! environment and the plugin's configuration on stdin: the list's entry with the list's `name`
//! and `cniVersion` injected, the previous plugin's result as `prevResult`, and any runtime
//! `args` for that plugin type. The last result is the attachment's. `DEL` runs the plugins in
//! reverse order, each given the cached `ADD` result as `prevResult`, and carries on past a
//! failing plugin so that every plugin gets to release what it holds.
//!
//! Plugins run inside the node's network namespace (`ip netns exec <node> <plugin>`), so the
//! bridge and the host-side veth ends are made there and the machine's own namespace is never
//! touched.

use std::{net::Ipv4Addr, path::PathBuf, process::Command};

use serde_json::{json, Map, Value};

use crate::{
    error::{Error, Result},
    process::{self, COMMAND_TIMEOUT},
};

/// The CNI spec version the lab speaks.
pub const CNI_VERSION: &str = "1.0.0";

/// A network configuration list (what a `.conflist` file holds).
#[derive(Debug, Clone)]
pub struct NetworkList {
    pub name: String,
    pub cni_version: String,
    /// Each plugin's entry (`{"type": ..., ...}`), in order.
    pub plugins: Vec<Value>,
}

impl NetworkList {
    /// The list as one JSON document, as it would be written to `/etc/cni/net.d`.
    pub fn to_json(&self) -> Value {
        json!({"cniVersion": self.cni_version, "name": self.name, "plugins": self.plugins})
    }
}

/// What the runtime says about one pod's attachment.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// `CNI_CONTAINERID`: the pod sandbox's ID.
    pub container_id: String,
    /// `CNI_NETNS`: `/run/netns/<pod>`.
    pub netns: PathBuf,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS`, `KEY=VALUE` joined with `;`.
    pub cni_args: Vec<(String, String)>,
    /// Runtime `args` added to the entry of the plugin with this `type` (e.g. `args.cni`).
    pub plugin_args: Vec<(String, Value)>,
}

/// Where plugins are found and where they run.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// `CNI_PATH`, searched in order for a plugin's `type`.
    pub plugin_dirs: Vec<PathBuf>,
    /// The namespace the plugins run in: the node's.
    pub exec_in: String,
}

impl Runtime {
    /// `ADD` of every plugin of `list`, in order; the last result.
    pub fn add(&self, list: &NetworkList, att: &Attachment) -> Result<Value> {
        let mut prev: Option<Value> = None;
        for entry in &list.plugins {
            let conf = self.plugin_conf(list, entry, att, prev.as_ref());
            let result = self.invoke("ADD", &conf, att)?;
            let Some(result) = result else {
                return Err(protocol("ADD", entry, "no result on stdout", "", ""));
            };
            prev = Some(result);
        }
        prev.ok_or_else(|| Error::Invalid {
            what: "network list",
            value: list.name.clone(),
            reason: "has no plugins",
        })
    }

    /// `DEL` of every plugin of `list`, in reverse order, each given `cached` (the `ADD`
    /// result, if the `ADD` got that far). Every plugin runs; the first failure is returned.
    pub fn del(&self, list: &NetworkList, att: &Attachment, cached: Option<&Value>) -> Result<()> {
        let mut first_error = None;
        for entry in list.plugins.iter().rev() {
            let conf = self.plugin_conf(list, entry, att, cached);
            if let Err(e) = self.invoke("DEL", &conf, att) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// One plugin's stdin: its entry, the list's name and version, `prevResult`, runtime args.
    fn plugin_conf(
        &self,
        list: &NetworkList,
        entry: &Value,
        att: &Attachment,
        prev: Option<&Value>,
    ) -> Value {
        let mut conf = entry.as_object().cloned().unwrap_or_else(Map::new);
        conf.insert("cniVersion".into(), list.cni_version.clone().into());
        conf.insert("name".into(), list.name.clone().into());
        if let Some(prev) = prev {
            conf.insert("prevResult".into(), prev.clone());
        }
        let ty = plugin_type(entry);
        for (for_type, args) in &att.plugin_args {
            if *for_type == ty {
                conf.insert("args".into(), args.clone());
            }
        }
        Value::Object(conf)
    }

    /// Runs the plugin named by `conf.type` with `command`; its result, if it wrote one.
    fn invoke(&self, command: &str, conf: &Value, att: &Attachment) -> Result<Option<Value>> {
        let ty = plugin_type(conf);
        let binary = self.find(&ty)?;
        let cni_path = std::env::join_paths(&self.plugin_dirs).map_err(|_| Error::Invalid {
            what: "CNI_PATH",
            value: format!("{:?}", self.plugin_dirs),
            reason: "a directory holds ':'",
        })?;
        let cni_args: Vec<String> = att
            .cni_args
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.exec_in])
            .arg(&binary)
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
            )
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &att.container_id)
            .env("CNI_NETNS", &att.netns)
            .env("CNI_IFNAME", &att.ifname)
            .env("CNI_ARGS", cni_args.join(";"))
            .env("CNI_PATH", cni_path);
        let input = serde_json::to_vec(conf).unwrap_or_default();
        let out = process::run_with_input(&mut cmd, &input, COMMAND_TIMEOUT)?;
        let stdout = out.stdout.trim();
        if !out.status.success() {
            // The spec: a non-zero exit with a CNI error on stdout.
            let err: Option<Value> = serde_json::from_str(stdout).ok();
            return Err(
                match err
                    .as_ref()
                    .and_then(|e| e["code"].as_u64().map(|c| (e, c)))
                {
                    Some((e, code)) => Error::Cni {
                        plugin: ty,
                        command: command.into(),
                        code,
                        msg: e["msg"].as_str().unwrap_or_default().into(),
                        details: e["details"].as_str().unwrap_or_default().into(),
                    },
                    None => protocol(
                        command,
                        conf,
                        &format!("exited {} without a CNI error on stdout", out.status),
                        stdout,
                        &out.stderr,
                    ),
                },
            );
        }
        if stdout.is_empty() {
            return Ok(None);
        }
        let result: Value = serde_json::from_str(stdout)
            .map_err(|_| protocol(command, conf, "stdout is not JSON", stdout, &out.stderr))?;
        if command == "ADD" && result["cniVersion"].as_str() != Some(CNI_VERSION) {
            return Err(protocol(
                command,
                conf,
                "the result's cniVersion is not 1.0.0",
                stdout,
                &out.stderr,
            ));
        }
        Ok(Some(result))
    }

    fn find(&self, ty: &str) -> Result<PathBuf> {
        if ty.is_empty() || ty.contains('/') {
            return Err(Error::Invalid {
                what: "CNI plugin type",
                value: ty.into(),
                reason: "must be a plain file name",
            });
        }
        self.plugin_dirs
            .iter()
            .map(|d| d.join(ty))
            .find(|p| p.is_file())
            .ok_or_else(|| Error::Io {
                what: format!("find CNI plugin {ty} in {:?}", self.plugin_dirs),
                source: std::io::ErrorKind::NotFound.into(),
            })
    }
}

/// Attaches loopback as runtimes do before the pod network: network `lo`, plugin `loopback`.
pub fn loopback_list() -> NetworkList {
    NetworkList {
        name: "lo".into(),
        cni_version: CNI_VERSION.into(),
        plugins: vec![json!({"type": "loopback"})],
    }
}

/// The first IPv4 address of a CNI result, with its prefix length.
pub fn result_ipv4(result: &Value) -> Option<(Ipv4Addr, u8)> {
    result["ips"].as_array()?.iter().find_map(|ip| {
        let (addr, len) = ip["address"].as_str()?.split_once('/')?;
        Some((addr.parse().ok()?, len.parse().ok()?))
    })
}

fn plugin_type(conf: &Value) -> String {
    conf["type"].as_str().unwrap_or_default().to_string()
}

fn protocol(command: &str, conf: &Value, problem: &str, output: &str, stderr: &str) -> Error {
    Error::CniProtocol {
        plugin: plugin_type(conf),
        command: command.into(),
        problem: problem.into(),
        output: output.into(),
        stderr: stderr.trim().into(),
    }
}
