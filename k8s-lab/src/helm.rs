//! Helm, as users run it, on Weft's chart (`helm/weft`): built by `scripts/helm-build.sh` from
//! its published Go module (pinned in `tools/helm`), for `helm lint`, `helm template` and the
//! k8s tier's `helm install`, `upgrade` and `uninstall`; and `kubernetes-validate`
//! (`scripts/py-tools.sh`), which checks rendered objects against the API's own schemas.
//!
//! Helm keeps its cache, config and data under a directory of the caller's (never the
//! user's home), and in the cluster it runs inside the node's network namespace with the
//! admin kubeconfig, as [`Kubectl`] does.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use weft_lab::process;

use crate::{
    bins::repo_root,
    error::{Error, Result},
    kubectl::{Kubectl, Outcome},
};

/// Overrides where `helm` is (a path to the binary).
pub const HELM_ENV: &str = "WEFT_HELM";

/// How long one `helm` call may take; an install that waits for its pods says how long
/// itself (`--timeout`), and that must be shorter.
pub const HELM_TIMEOUT: Duration = Duration::from_secs(300);

/// The Kubernetes version the chart is rendered and validated for: the k8s tier's.
pub const KUBE_VERSION: &str = "1.34.4";

/// Weft's chart in this repository.
pub fn chart_dir() -> PathBuf {
    repo_root().join("helm/weft")
}

/// `helm`, maybe aimed at a cluster.
#[derive(Debug, Clone)]
pub struct Helm {
    bin: PathBuf,
    home: PathBuf,
    cluster: Option<Kubectl>,
}

impl Helm {
    /// `$WEFT_HELM`, or the binary `scripts/helm-build.sh --locate` names for the current
    /// sources; Helm's own files go under `home`.
    pub fn locate(home: &Path) -> Result<Helm> {
        let bin = match std::env::var_os(HELM_ENV) {
            Some(bin) => PathBuf::from(bin),
            None => PathBuf::from(locate_with("scripts/helm-build.sh", "helm")?),
        };
        if !bin.is_file() {
            return Err(Error::ToolMissing {
                tool: "helm".into(),
                reason: format!("{} is not a file", bin.display()),
                script: "scripts/helm-build.sh".into(),
            });
        }
        Ok(Helm {
            bin,
            home: home.to_path_buf(),
            cluster: None,
        })
    }

    /// The same `helm` on the cluster `kubectl` reaches (its kubeconfig, in its namespace).
    pub fn on(&self, kubectl: &Kubectl) -> Helm {
        Helm {
            cluster: Some(kubectl.clone()),
            ..self.clone()
        }
    }

    fn command(&self) -> Command {
        let mut cmd = match &self.cluster {
            Some(k) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", k.netns()])
                    .arg(&self.bin)
                    .arg("--kubeconfig")
                    .arg(k.kubeconfig());
                cmd
            }
            None => Command::new(&self.bin),
        };
        for (var, dir) in [
            ("HELM_CACHE_HOME", "cache"),
            ("HELM_CONFIG_HOME", "config"),
            ("HELM_DATA_HOME", "data"),
        ] {
            cmd.env(var, self.home.join(dir));
        }
        cmd
    }

    /// Runs `helm args`; a failure is not an error here.
    pub fn outcome(&self, args: &[&str]) -> Result<Outcome> {
        let out = process::run_with_input(self.command().args(args), b"", HELM_TIMEOUT)?;
        Ok(Outcome {
            success: out.status.success(),
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }

    /// Runs `helm args`; a non-zero exit is an error carrying its stderr.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let out = self.outcome(args)?;
        if out.success {
            Ok(out.stdout)
        } else {
            Err(Error::Helm {
                args: args.join(" "),
                stderr: out.stderr.trim().to_string(),
            })
        }
    }
}

/// `kubernetes-validate` of `scripts/py-tools.sh`, or why it is not there.
pub fn kubernetes_validate() -> Result<PathBuf> {
    let bin = PathBuf::from(locate_with("scripts/py-tools.sh", "kubernetes-validate")?)
        .join("kubernetes-validate");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(Error::ToolMissing {
            tool: "kubernetes-validate".into(),
            reason: format!("{} is not a file", bin.display()),
            script: "scripts/py-tools.sh".into(),
        })
    }
}

/// Validates every file in `files` strictly (unknown fields are errors) against Kubernetes
/// [`KUBE_VERSION`]'s schemas; the error carries the tool's report.
pub fn validate(files: &[PathBuf]) -> Result<()> {
    let bin = kubernetes_validate()?;
    let (major, rest) = KUBE_VERSION.split_once('.').unwrap_or((KUBE_VERSION, ""));
    let minor = rest.split('.').next().unwrap_or_default();
    // Its schemas are per minor release.
    let version = format!("{major}.{minor}.0");
    let mut cmd = Command::new(&bin);
    cmd.args(["--strict", "--quiet", "-k", &version])
        .args(files);
    let out = process::run_with_input(&mut cmd, b"", Duration::from_secs(120))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Validate {
            version,
            report: format!("{}{}", out.stdout, out.stderr),
        })
    }
}

/// The path `<script> --locate` prints.
fn locate_with(script: &str, tool: &str) -> Result<String> {
    let path = repo_root().join(script);
    let out = process::run_with_input(
        Command::new(&path).arg("--locate"),
        b"",
        Duration::from_secs(30),
    )?;
    if !out.status.success() {
        return Err(Error::ToolMissing {
            tool: tool.into(),
            reason: out.stderr.trim().to_string(),
            script: script.into(),
        });
    }
    Ok(out.stdout.trim().to_string())
}
