//! The CNI plugin's commands: ADD, DEL, CHECK and VERSION, as the spec says a chained plugin
//! answers them.
//!
//! Order matters in ADD and CHECK: everything that needs the host's network (the Kubernetes API)
//! and the host's iptables (detecting the backend) happens first, in the host's namespace; only
//! then does the plugin enter the pod's namespace, where it runs `iptables-restore`.

use std::{collections::BTreeMap, ffi::OsString, path::PathBuf};

use tracing::{info, warn};
use weft_cni_core::{
    pod,
    spec::{self, code, CniError, Command, NetConf},
    Redirect,
};
use weft_pod::Decision;

use crate::{
    iptables::Iptables,
    kube, netns,
    redirector::{Ipv6, Redirector},
};

/// The runtime's environment variables, as the spec names them.
#[derive(Clone, Debug, Default)]
pub struct Env {
    pub command: Option<String>,
    pub container_id: Option<String>,
    pub netns: Option<PathBuf>,
    pub ifname: Option<String>,
    pub args: Option<String>,
}

/// What the plugin prints on stdout, and how it exits.
#[derive(Debug)]
pub struct Outcome {
    pub stdout: String,
    pub exit: Exit,
}

/// How the plugin exits. The runtime reads the CNI error on stdout; the status tells a person or
/// a script running the plugin by hand whether the input was wrong or the work failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Success,
    /// A bad network config, environment or version: 64 (`EX_USAGE`).
    Usage,
    /// The work failed (iptables, the namespace, the Kubernetes API): 1.
    Failure,
}

/// The pod, as far as the plugin knows it.
#[derive(Debug)]
struct PodRef {
    namespace: Option<String>,
    name: Option<String>,
}

impl Env {
    /// Reads `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME` and `CNI_ARGS`.
    pub fn from_process() -> Self {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let text = |v: OsString| v.to_string_lossy().into_owned();
        Self {
            command: var("CNI_COMMAND").map(text),
            container_id: var("CNI_CONTAINERID").map(text),
            netns: var("CNI_NETNS").map(PathBuf::from),
            ifname: var("CNI_IFNAME").map(text),
            args: var("CNI_ARGS").map(text),
        }
    }
}

impl Outcome {
    fn ok(stdout: String) -> Self {
        Self {
            stdout,
            exit: Exit::Success,
        }
    }
}

impl From<CniError> for Outcome {
    fn from(e: CniError) -> Self {
        Self {
            stdout: e.to_json(),
            exit: if e.is_usage() {
                Exit::Usage
            } else {
                Exit::Failure
            },
        }
    }
}

impl Exit {
    /// The process exit status.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Usage => 64,
            Exit::Failure => 1,
        }
    }
}

/// Runs one command. `setup_logging` is called with the config's log file and level once the
/// config is read (tests pass a no-op).
pub fn run(env: &Env, stdin: &[u8], setup_logging: &dyn Fn(&NetConf)) -> Outcome {
    let command = match Command::parse(env.command.as_deref()) {
        Ok(c) => c,
        Err(e) => return e.into(),
    };
    if command == Command::Version {
        let requested = serde_json::from_slice::<serde_json::Value>(stdin)
            .ok()
            .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_owned));
        return Outcome::ok(spec::version_reply(requested.as_deref()));
    }
    let conf = match NetConf::parse(stdin) {
        Ok(c) => c,
        Err(e) => return e.into(),
    };
    setup_logging(&conf);
    for key in conf.unknown_keys() {
        warn!(
            key,
            "the network config has a key weft-cni does not know; is it misspelt?"
        );
    }
    let result = match command {
        Command::Add => add(env, &conf),
        Command::Check => check(env, &conf),
        Command::Del => del(env, &conf),
        Command::Version => Ok(spec::version_reply(None)),
    };
    match result {
        Ok(stdout) => Outcome::ok(stdout),
        Err(e) => {
            warn!(code = e.code, msg = %e.msg, details = %e.details, "{command:?} failed");
            e.into()
        }
    }
}

fn add(env: &Env, conf: &NetConf) -> Result<String, CniError> {
    let result = conf.result()?;
    let netns = require_netns(env, conf)?;
    let container = require(conf, "CNI_CONTAINERID", env.container_id.as_deref())?;
    let pod = pod_ref(env, conf)?;
    let Some(redirect) = wanted(conf, &pod)? else {
        return Ok(result);
    };
    let redirector = redirector(conf)?;
    enter_pod(conf, &netns)?;
    redirector.apply(&redirect).map_err(|e| {
        conf.error(
            code::IPTABLES_FAILED,
            "cannot install the redirect rules",
            e.to_string(),
        )
    })?;
    info!(
        container,
        netns = %netns.display(),
        pod = ?pod,
        backend = redirector.iptables.backend.name(),
        families = redirector.families.len(),
        "redirect rules installed"
    );
    Ok(result)
}

fn check(env: &Env, conf: &NetConf) -> Result<String, CniError> {
    conf.result()?;
    let netns = require_netns(env, conf)?;
    let pod = pod_ref(env, conf)?;
    let wanted = wanted(conf, &pod)?;
    let redirector = redirector(conf)?;
    enter_pod(conf, &netns)?;
    let iptables_error = |e: crate::redirector::RedirectorError| {
        conf.error(
            code::IPTABLES_FAILED,
            "cannot read the pod's rules",
            e.to_string(),
        )
    };
    match wanted {
        Some(redirect) => match redirector.check(&redirect).map_err(iptables_error)? {
            Ok(()) => Ok(String::new()),
            Err(mismatch) => Err(conf.error(
                code::RULES_NOT_IN_PLACE,
                "the pod's redirect rules are not as ADD left them",
                mismatch.to_string(),
            )),
        },
        // An unmeshed pod must hold none of our rules: anything to remove is a mismatch.
        None => {
            let ours_present = redirector.families.iter().try_fold(false, |any, &family| {
                let now = redirector.iptables.save(family).map_err(|e| {
                    conf.error(
                        code::IPTABLES_FAILED,
                        "cannot read the pod's rules",
                        e.to_string(),
                    )
                })?;
                Ok::<_, CniError>(any || weft_cni_core::plan::remove(&now).is_some())
            })?;
            if ours_present {
                Err(conf.error(
                    code::RULES_NOT_IN_PLACE,
                    "the pod is not meshed but holds Weft redirect rules",
                    "remove them with weft-init --remove inside the pod's network namespace",
                ))
            } else {
                Ok(String::new())
            }
        }
    }
}

/// DEL: the pod's namespace is about to go, and its rules with it. Removing them is a courtesy;
/// a DEL must succeed when things are already gone, so only a bad config is an error.
fn del(env: &Env, conf: &NetConf) -> Result<String, CniError> {
    let Some(netns) = env.netns.as_ref() else {
        info!(container = ?env.container_id, "DEL without a network namespace: nothing to remove");
        return Ok(String::new());
    };
    let redirector = match redirector(conf) {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "DEL: no iptables to remove rules with; the namespace's deletion removes them");
            return Ok(String::new());
        }
    };
    match netns::enter(netns) {
        Ok(()) => {}
        Err(netns::NetnsError::Missing { .. }) => {
            info!(netns = %netns.display(), "DEL: the network namespace is already gone");
            return Ok(String::new());
        }
        Err(e) => {
            warn!(error = %e, "DEL: cannot enter the network namespace; nothing removed");
            return Ok(String::new());
        }
    }
    match redirector.remove() {
        Ok(()) => {
            info!(netns = %netns.display(), container = ?env.container_id, "redirect rules removed")
        }
        Err(e) => {
            warn!(error = %e, "DEL: removing the rules failed; the namespace's deletion removes them")
        }
    }
    Ok(String::new())
}

/// Enters the pod's network namespace for ADD and CHECK; a path that is not one is code 3.
fn enter_pod(conf: &NetConf, netns: &std::path::Path) -> Result<(), CniError> {
    netns::enter(netns).map_err(|e| {
        conf.error(
            code::UNKNOWN_CONTAINER,
            "cannot enter the pod's network namespace",
            e.to_string(),
        )
    })
}

fn require<'a>(conf: &NetConf, name: &str, value: Option<&'a str>) -> Result<&'a str, CniError> {
    value.ok_or_else(|| {
        conf.error(
            code::INVALID_ENVIRONMENT,
            format!("{name} is not set"),
            "the container runtime must set it",
        )
    })
}

fn require_netns(env: &Env, conf: &NetConf) -> Result<PathBuf, CniError> {
    let netns = env.netns.clone().ok_or_else(|| {
        conf.error(
            code::INVALID_ENVIRONMENT,
            "CNI_NETNS is not set",
            "the container runtime must set it",
        )
    })?;
    if !netns.is_absolute() {
        return Err(conf.error(
            code::INVALID_ENVIRONMENT,
            "CNI_NETNS is not an absolute path",
            netns.display().to_string(),
        ));
    }
    Ok(netns)
}

fn pod_ref(env: &Env, conf: &NetConf) -> Result<PodRef, CniError> {
    let args = spec::parse_cni_args(env.args.as_deref().unwrap_or_default())
        .map_err(|e| conf.error(e.code, e.msg, e.details))?;
    Ok(PodRef {
        namespace: args.get("K8S_POD_NAMESPACE").cloned(),
        name: args.get("K8S_POD_NAME").cloned(),
    })
}

/// The rules this pod should get, or `None` if it is not meshed.
fn wanted(conf: &NetConf, pod: &PodRef) -> Result<Option<Redirect>, CniError> {
    if let Some(ns) = &pod.namespace {
        if conf.exclude_namespaces.contains(ns) {
            info!(pod = ?pod, "pod not meshed: its namespace is excluded in the plugin config");
            return Ok(None);
        }
    }
    let (annotations, containers): (BTreeMap<String, String>, Vec<String>) = match &conf.kubeconfig
    {
        None => (conf.local_annotations(), Vec::new()),
        Some(path) => {
            let (Some(namespace), Some(name)) = (&pod.namespace, &pod.name) else {
                return Err(conf.error(
                    code::INVALID_ENVIRONMENT,
                    "CNI_ARGS has no K8S_POD_NAMESPACE and K8S_POD_NAME",
                    "in Kubernetes mode (kubeconfig set) the runtime must name the pod",
                ));
            };
            let info = kube::pod_info(path, namespace, name).map_err(|e| {
                let code = if e.is_transient() {
                    code::TRY_AGAIN_LATER
                } else {
                    code::KUBERNETES_FAILED
                };
                conf.error(code, "cannot look the pod up in Kubernetes", e.to_string())
            })?;
            (info.annotations, info.containers)
        }
    };
    match weft_pod::decide(&annotations, containers.iter().map(String::as_str)) {
        Decision::Skip(why) => {
            info!(pod = ?pod, "pod not meshed: {why}");
            Ok(None)
        }
        Decision::Mesh => {
            let base = conf.redirect()?;
            pod::redirect_for(&base, &annotations)
                .map(Some)
                .map_err(|e| {
                    conf.error(
                        code::INVALID_CONFIG,
                        "the pod's annotations are not valid",
                        e.to_string(),
                    )
                })
        }
    }
}

fn redirector(conf: &NetConf) -> Result<Redirector, CniError> {
    let iptables = Iptables::resolve(conf.iptables_backend)
        .map_err(|e| conf.error(code::IPTABLES_FAILED, "no usable iptables", e.to_string()))?;
    Ok(Redirector::new(iptables, Ipv6::Auto))
}
