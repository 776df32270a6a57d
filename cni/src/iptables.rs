//! Running `iptables-save` and `iptables-restore` (and their IPv6 twins) on the right backend.
//!
//! Hosts run one of two iptables backends: `nf_tables` (Debian 11+, RHEL 8+) or the older
//! `legacy` x_tables. Rules written through the wrong one still work but are invisible to the
//! host's own tools, and mixing both on one host is how rules end up silently shadowed. So in
//! `auto` mode we do what Kubernetes' iptables-wrapper does: use the backend that already holds
//! rules (the kubelet and kube-proxy write plenty), and only when neither does, the system's
//! default `iptables`. Every command runs in the calling thread's network namespace.

use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
};

use weft_cni_core::{plan::NatTable, spec::Backend, Family};

/// A backend we have settled on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolved {
    Nft,
    Legacy,
}

/// Why an iptables command failed; the message names the command and what it said.
#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    #[error("cannot run {command}: {source}; is the iptables package installed?")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("cannot read what {command} printed: {source}")]
    Save {
        command: String,
        source: weft_cni_core::plan::SaveError,
    },
    #[error("no iptables found: neither iptables-nft nor iptables-legacy is installed (Debian: apt-get install iptables)")]
    NotInstalled,
}

/// The iptables commands of one backend.
#[derive(Clone, Copy, Debug)]
pub struct Iptables {
    pub backend: Resolved,
}

impl Resolved {
    pub fn name(self) -> &'static str {
        match self {
            Resolved::Nft => "nft",
            Resolved::Legacy => "legacy",
        }
    }
}

impl Iptables {
    /// Picks the backend; `auto` looks at the current network namespace (call it where the
    /// host's rules are: the host's namespace for the CNI plugin).
    pub fn resolve(backend: Backend) -> Result<Self, IptablesError> {
        let backend = match backend {
            Backend::Nft => Resolved::Nft,
            Backend::Legacy => Resolved::Legacy,
            Backend::Auto => detect()?,
        };
        Ok(Self { backend })
    }

    fn command(&self, family: Family, tool: &str) -> String {
        let base = match family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        format!("{base}-{}-{tool}", self.backend.name())
    }

    /// The `nat` table as it is now.
    pub fn save(&self, family: Family) -> Result<NatTable, IptablesError> {
        let command = self.command(family, "save");
        let out = run(&command, &["-t", "nat"], None)?;
        NatTable::parse(&out).map_err(|source| IptablesError::Save { command, source })
    }

    /// One `--noflush` transaction: all of `input` or none of it.
    pub fn restore(&self, family: Family, input: &str) -> Result<(), IptablesError> {
        // `-w`: wait up to 5 s for the legacy backend's xtables lock rather than fail at once.
        run(
            &self.command(family, "restore"),
            &["--noflush", "-w", "5"],
            Some(input),
        )
        .map(drop)
    }
}

fn detect() -> Result<Resolved, IptablesError> {
    let count = |b: Resolved| -> Option<usize> {
        let command = format!("iptables-{}-save", b.name());
        let out = run(&command, &[], None).ok()?;
        Some(out.lines().filter(|l| l.starts_with("-A ")).count())
    };
    match (count(Resolved::Legacy), count(Resolved::Nft)) {
        (Some(legacy), Some(nft)) if legacy > nft => Ok(Resolved::Legacy),
        (Some(legacy), Some(nft)) if nft > legacy => Ok(Resolved::Nft),
        (Some(_), Some(_)) => Ok(system_default()),
        (Some(_), None) => Ok(Resolved::Legacy),
        (None, Some(_)) => Ok(Resolved::Nft),
        (None, None) => Err(IptablesError::NotInstalled),
    }
}

/// What plain `iptables` is on this system; nft when it cannot tell, as on current distros.
fn system_default() -> Resolved {
    match run("iptables", &["-V"], None) {
        Ok(v) if v.contains("legacy") => Resolved::Legacy,
        _ => Resolved::Nft,
    }
}

/// Runs a command to completion, feeding `input` on stdin; its stdout on success.
fn run(command: &str, args: &[&str], input: Option<&str>) -> Result<String, IptablesError> {
    let spawn_error = |source| IptablesError::Spawn {
        command: command.to_owned(),
        source,
    };
    let mut child = Command::new(resolve(command))
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(input.as_bytes()).map_err(spawn_error)?;
    }
    let out = child.wait_with_output().map_err(spawn_error)?;
    if !out.status.success() {
        return Err(IptablesError::Failed {
            command: format!("{command} {}", args.join(" ")),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr)
                .trim()
                .chars()
                .take(2000)
                .collect(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The iptables tools live in `/usr/sbin`, which a container runtime's or a test's `PATH` may
/// lack; look there when `PATH` does not have them.
fn resolve(command: &str) -> std::path::PathBuf {
    let in_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(command).is_file()));
    if !in_path {
        for dir in ["/usr/sbin", "/sbin"] {
            let path = Path::new(dir).join(command);
            if path.is_file() {
                return path;
            }
        }
    }
    command.into()
}
