//! The upstream binaries the cluster runs: built by `make k8s` (`scripts/k8s-build.sh`) from
//! the Go modules pinned in `tools/k8s`, into a cache outside the source tree; and the ones
//! Debian packages (containerd, runc, ctr, the reference CNI plugins, iptables).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::error::{Error, Result};

/// Overrides where the Kubernetes binaries are (a folder holding all of them).
pub const BIN_ENV: &str = "WEFT_K8S_BIN";

/// The repository this crate was built from: where `scripts/k8s-build.sh` is.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The Kubernetes release's binaries, CoreDNS, etcd and pause, all from one build.
#[derive(Debug, Clone)]
pub struct K8sBins {
    dir: PathBuf,
}

/// Every binary `make k8s` builds.
pub const BUILT: [&str; 9] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kubectl",
    "coredns",
    "pause",
];

/// What the node needs from Debian: the container runtime and its CLI.
pub const SYSTEM: [&str; 9] = [
    "containerd",
    "containerd-shim-runc-v2",
    "runc",
    "ctr",
    "ip",
    "iptables",
    "iptables-restore",
    "nsenter",
    "unshare",
];

impl K8sBins {
    /// `$WEFT_K8S_BIN`, or the folder `scripts/k8s-build.sh --locate` names for the current
    /// sources. Errors (saying to run `make k8s`) when the build is missing or incomplete.
    pub fn locate() -> Result<K8sBins> {
        let dir = match std::env::var_os(BIN_ENV) {
            Some(dir) => PathBuf::from(dir),
            None => {
                let script = repo_root().join("scripts/k8s-build.sh");
                let out = Command::new(&script)
                    .arg("--locate")
                    .output()
                    .map_err(Error::io(format!("run {}", script.display())))?;
                if !out.status.success() {
                    return Err(Error::NotBuilt(
                        String::from_utf8_lossy(&out.stderr).trim().to_string(),
                    ));
                }
                PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
            }
        };
        K8sBins::in_dir(&dir)
    }

    /// The binaries in `dir`, all of which must be there.
    pub fn in_dir(dir: &Path) -> Result<K8sBins> {
        let missing: Vec<&str> = BUILT
            .into_iter()
            .filter(|b| !dir.join(b).is_file())
            .collect();
        if !missing.is_empty() {
            return Err(Error::NotBuilt(format!(
                "{} missing from {}",
                missing.join(", "),
                dir.display()
            )));
        }
        Ok(K8sBins {
            dir: dir.to_path_buf(),
        })
    }

    /// The path of one of [`BUILT`].
    pub fn get(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Why the node cannot run here, if it cannot: not root, or a Debian tool or CNI plugin
/// missing (`make k8s-deps` installs them).
pub fn missing_system() -> Option<String> {
    let why: Vec<String> = weft_lab::prereq::missing_tools(&SYSTEM)
        .into_iter()
        .chain(weft_lab::prereq::missing())
        .collect();
    (!why.is_empty()).then(|| why.join("; "))
}

/// The absolute path of `tool` on `PATH`.
pub fn which(tool: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::Missing(format!("{tool} is not on PATH")))
}

/// Set to `1` (CI does) to turn a skip of the k8s tier into a failure.
pub const REQUIRE_ENV: &str = "WEFT_REQUIRE_K8S_TESTS";

/// Why the k8s tier cannot run here, if it cannot: not root, a Debian tool missing, or the
/// Kubernetes binaries not built for these sources.
pub fn why_not() -> Option<String> {
    if let Some(why) = missing_system() {
        return Some(why);
    }
    K8sBins::locate().err().map(|e| e.to_string())
}

/// For tests: `true` if `why_not` is `None`; otherwise prints `SKIPPED: <test>: <why_not>` to
/// stderr and returns `false`, or, with `WEFT_REQUIRE_K8S_TESTS=1`, panics with the reason.
pub fn run_or_skip(test: &str, why_not: Option<String>) -> bool {
    weft_lab::prereq::run_or_skip_unless(REQUIRE_ENV, test, why_not)
}
