//! Running labs, as `weftctl lab exec | status | down` find them: each `weftctl lab up` writes
//! one JSON file, `/run/weft-lab/<name>.json`, naming its process, its node namespace and every
//! pod with its network namespace, address and identity, rewritten (atomically) whenever its
//! pods change and removed at teardown.
//!
//! A file whose process is gone (a lab killed without teardown) is reported as stale, never
//! acted on: `down` signals only a process whose command line is still a `weftctl lab up`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where running labs register.
pub const REGISTRY_DIR: &str = "/run/weft-lab";

/// One running lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabEntry {
    /// The lab's name (`weftctl lab up --name`, default `lab`).
    pub name: String,
    /// The `weftctl lab up` process.
    pub pid: u32,
    /// The folder of YAML it runs.
    pub folder: PathBuf,
    /// Its node network namespace.
    pub node: String,
    /// Its working folder (logs, the control plane's config).
    pub dir: PathBuf,
    /// Its pods, sorted by namespace and name.
    pub pods: Vec<PodEntry>,
}

impl LabEntry {
    /// The `/etc/hosts` that `weftctl lab exec` shows a pod of `namespace`
    /// ([`crate::folder::hosts_file`]): Service names as cluster DNS gives them.
    pub fn hosts_file(&self, namespace: &str) -> PathBuf {
        self.dir.join("hosts").join(namespace)
    }
}

/// One pod of a running lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodEntry {
    pub namespace: String,
    pub name: String,
    /// Its network namespace (`ip netns exec <netns> ...`).
    pub netns: String,
    pub ip: String,
    /// Its SPIFFE ID when meshed.
    pub identity: Option<String>,
    /// The container ports its echo app answers on.
    pub ports: Vec<u16>,
    /// Its workload, `kind/name` as its proxy's `WEFT_WORKLOAD` (`deployment/api` for a
    /// Deployment's replica, `pod/web` for a bare pod); absent in entries of older labs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
}

/// A folder of lab entries: [`REGISTRY_DIR`] for real labs, another for tests.
#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
}

impl Registry {
    /// The machine's registry, [`REGISTRY_DIR`].
    pub fn system() -> Registry {
        Registry::at(Path::new(REGISTRY_DIR))
    }

    /// A registry in `dir`.
    pub fn at(dir: &Path) -> Registry {
        Registry {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Writes `lab`'s entry (a temp file renamed into place, so a reader never sees half of
    /// it).
    pub fn save(&self, lab: &LabEntry) -> Result<()> {
        fs::create_dir_all(&self.dir)
            .map_err(Error::io(format!("create {}", self.dir.display())))?;
        let path = self.path(&lab.name);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(lab).map_err(|e| Error::Protocol {
            what: format!("serialize the lab entry {}", lab.name),
            answer: e.to_string(),
        })?;
        fs::write(&tmp, text).map_err(Error::io(format!("write {}", tmp.display())))?;
        fs::rename(&tmp, &path).map_err(Error::io(format!("rename to {}", path.display())))
    }

    /// Removes the entry of the lab `name` (nothing to remove is fine), and the folder once no
    /// lab is left in it.
    pub fn remove(&self, name: &str) {
        let _ = fs::remove_file(self.path(name));
        let _ = fs::remove_dir(&self.dir);
    }

    /// Removes what labs whose process is gone (killed outright, so it could not clean up)
    /// left: their network namespaces (pods and node, with the bridge, veths and rules in
    /// them), their working folder and their entry. Their proxies and control plane died
    /// with them (started with a parent-death signal). Returns the names of the labs swept.
    pub fn sweep_stale(&self) -> Result<Vec<String>> {
        let stale: Vec<LabEntry> = self
            .list()?
            .into_iter()
            .filter(|l| !l.is_running())
            .collect();
        if stale.is_empty() {
            return Ok(Vec::new());
        }
        let namespaces = crate::netns::list()?;
        let mut swept = Vec::new();
        for lab in stale {
            let Some(prefix) = lab.node.strip_suffix("-node") else {
                continue;
            };
            let prefix = format!("{prefix}-");
            // Names are `weft-lab-<pid>-<n>-...`: if that PID runs again, the names may be a
            // new process's, so they are left alone.
            let pid_alive = prefix
                .strip_prefix("weft-lab-")
                .and_then(|rest| rest.split('-').next())
                .is_none_or(|pid| Path::new("/proc").join(pid).exists());
            for ns in namespaces
                .iter()
                .filter(|n| n.starts_with(&prefix) && !pid_alive)
            {
                // Gone already (another sweep) is fine.
                let _ = crate::process::run(Command::new("ip").args(["netns", "del", ns]));
            }
            let ours = lab
                .dir
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix));
            if ours && !pid_alive {
                let _ = fs::remove_dir_all(&lab.dir);
            }
            self.remove(&lab.name);
            swept.push(lab.name);
        }
        Ok(swept)
    }

    /// Every registered lab, running or stale, sorted by name.
    pub fn list(&self) -> Result<Vec<LabEntry>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format!("list {}", self.dir.display()))(e)),
        };
        let mut labs = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let text =
                fs::read_to_string(&path).map_err(Error::io(format!("read {}", path.display())))?;
            let lab: LabEntry = serde_json::from_str(&text).map_err(|e| Error::Protocol {
                what: format!("read the lab entry {}", path.display()),
                answer: e.to_string(),
            })?;
            labs.push(lab);
        }
        labs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(labs)
    }

    /// The running lab named `name`, or the only running one when `name` is `None`; an error
    /// says which labs there are when that is ambiguous or nothing matches.
    pub fn find(&self, name: Option<&str>) -> Result<LabEntry> {
        let running: Vec<LabEntry> = self
            .list()?
            .into_iter()
            .filter(LabEntry::is_running)
            .collect();
        let names = running
            .iter()
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        match name {
            Some(name) => running
                .iter()
                .find(|l| l.name == name)
                .cloned()
                .ok_or_else(|| Error::Invalid {
                    what: "lab",
                    value: name.into(),
                    reason: "no running lab has this name (`weftctl lab status` lists them)",
                }),
            None => match running.as_slice() {
                [one] => Ok(one.clone()),
                [] => Err(Error::Invalid {
                    what: "lab",
                    value: String::new(),
                    reason: "no lab is running; start one with `weftctl lab up DIR`",
                }),
                _ => Err(Error::Protocol {
                    what: "choose a lab".into(),
                    answer: format!("several labs run ({names}); name one with --lab"),
                }),
            },
        }
    }
}

impl LabEntry {
    /// Whether its process still runs: that PID is still a `weftctl lab up` or a `weftctl
    /// demo` (which runs as a lab), not another program that got the PID since.
    pub fn is_running(&self) -> bool {
        fs::read(format!("/proc/{}/cmdline", self.pid)).is_ok_and(|cmd| {
            let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            args.windows(2).any(|w| w == [&b"lab"[..], &b"up"[..]])
                || args.get(1).is_some_and(|a| *a == b"demo")
        })
    }

    /// The pod `namespace/name`.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&PodEntry> {
        self.pods
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, pid: u32) -> LabEntry {
        LabEntry {
            name: name.into(),
            pid,
            folder: "/tmp/f".into(),
            node: format!("{name}-node"),
            dir: "/tmp/d".into(),
            pods: vec![PodEntry {
                namespace: "shop".into(),
                name: "api-0".into(),
                netns: format!("{name}-shop-api-0"),
                ip: "198.18.0.10".into(),
                identity: Some("spiffe://cluster.local/ns/shop/sa/api".into()),
                ports: vec![8080],
                workload: Some("deployment/api".into()),
            }],
        }
    }

    #[test]
    fn entries_round_trip_and_only_running_labs_are_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let registry = Registry::at(&dir.path().join("labs"));
        assert_eq!(registry.list().expect("empty"), Vec::new());
        assert!(registry.find(None).is_err(), "no lab runs");
        // This test's own process is no `weftctl lab up`: a lab with its PID is stale.
        let stale = entry("old", std::process::id());
        registry.save(&stale).expect("save");
        assert_eq!(registry.list().expect("list"), vec![stale.clone()]);
        assert!(!stale.is_running());
        let err = registry.find(None).expect_err("a stale lab is not found");
        assert!(err.to_string().contains("no lab is running"), "{err}");
        assert!(registry.find(Some("old")).is_err());
        assert_eq!(
            stale.pod("shop", "api-0").map(|p| p.ip.as_str()),
            Some("198.18.0.10")
        );
        assert!(stale.pod("shop", "nope").is_none());
        registry.remove("old");
        assert_eq!(registry.list().expect("list"), Vec::new());
        assert!(
            !dir.path().join("labs").exists(),
            "the empty folder goes too"
        );
    }

    #[test]
    fn a_corrupt_entry_is_an_error_naming_its_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("bad.json"), "{not json").expect("write");
        let err = Registry::at(dir.path()).list().expect_err("corrupt");
        assert!(err.to_string().contains("bad.json"), "{err}");
    }
}
