//! The cluster's `kubectl`, run inside the node's network namespace (where the API server
//! listens) with the admin kubeconfig: how tests and people talk to the cluster, so that what
//! they do is what a user's `kubectl` does.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use weft_lab::process;

use crate::error::{Error, Result};

/// How long one `kubectl` call may take.
pub const KUBECTL_TIMEOUT: Duration = Duration::from_secs(30);

/// `kubectl` with a kubeconfig, inside a network namespace.
#[derive(Debug, Clone)]
pub struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    netns: String,
}

/// What a `kubectl` call that may fail gave.
#[derive(Debug)]
pub struct Outcome {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Kubectl {
    /// `bin` with `kubeconfig`, run in the network namespace named `netns`.
    pub fn new(bin: &Path, kubeconfig: &Path, netns: &str) -> Kubectl {
        Kubectl {
            bin: bin.to_path_buf(),
            kubeconfig: kubeconfig.to_path_buf(),
            netns: netns.to_string(),
        }
    }

    /// The same `kubectl` as another user (their kubeconfig).
    pub fn with_kubeconfig(&self, kubeconfig: &Path) -> Kubectl {
        Kubectl {
            kubeconfig: kubeconfig.to_path_buf(),
            ..self.clone()
        }
    }

    /// The kubeconfig it uses.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The network namespace it runs in (the node's).
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// The command line a person runs for the same: `ip netns exec <node> <kubectl>
    /// --kubeconfig <file>`.
    pub fn command_line(&self) -> String {
        format!(
            "ip netns exec {} {} --kubeconfig {}",
            self.netns,
            self.bin.display(),
            self.kubeconfig.display()
        )
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns])
            .arg(&self.bin)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig);
        cmd
    }

    /// Runs `kubectl args` with `input` on stdin; a refusal is not an error here.
    pub fn outcome(&self, args: &[&str], input: &str) -> Result<Outcome> {
        let out =
            process::run_with_input(self.command().args(args), input.as_bytes(), KUBECTL_TIMEOUT)?;
        Ok(Outcome {
            success: out.status.success(),
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }

    /// Runs `kubectl args`; a non-zero exit is an error carrying its stderr.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        self.run_with_input(args, "")
    }

    /// Runs `kubectl args` with `input` on stdin.
    pub fn run_with_input(&self, args: &[&str], input: &str) -> Result<String> {
        let out = self.outcome(args, input)?;
        if out.success {
            Ok(out.stdout)
        } else {
            Err(Error::Kubectl {
                args: args.join(" "),
                stderr: out.stderr.trim().to_string(),
            })
        }
    }

    /// `kubectl apply -f -` of `yaml` (server-side validation, as a user's apply).
    pub fn apply(&self, yaml: &str) -> Result<String> {
        self.run_with_input(&["apply", "-f", "-"], yaml)
    }

    /// `kubectl get <args> -o json`, parsed.
    pub fn get_json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let out = self.run(&all)?;
        serde_json::from_str(&out).map_err(|e| Error::Kubectl {
            args: all.join(" "),
            stderr: format!("its output is not JSON ({e}): {out}"),
        })
    }
}
