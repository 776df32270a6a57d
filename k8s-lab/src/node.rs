//! The node's private pieces of the machine: a mount namespace that containerd, its shims and
//! the kubelet share (so every mount they make, container root filesystems, volume tmpfs, pod
//! network-namespace handles, vanishes with it), the cgroup subtree the kubelet puts pods in,
//! and the kernel settings the kubelet changes (put back on teardown).
//!
//! Everything here is found again by what this cluster made (its mount namespace, its cgroup
//! root, its state folder), never by a guess: teardown signals only processes the cluster
//! started, directly or through containerd.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::Duration,
};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use weft_lab::process::{self, Daemon};

use crate::error::{Error, Result};

/// Host folders the node's mount namespace covers with a tmpfs of its own, because containerd,
/// its shims or the kubelet write there whatever they are configured with: the shims' sockets,
/// FIFOs and runc state (`/run/containerd`), pod network-namespace handles (`/run/netns`), the
/// CNI result cache (`/var/lib/cni`), and the kubelet's `/var/log/containers` links. Whole
/// folders that every Linux machine has, so nothing is ever created on the host (a folder made
/// on the host could not be removed again by a cluster whose process was killed). Nothing the
/// node runs needs the host's copies: every state path the cluster configures is under its own
/// state folder in `/var/tmp`.
const PRIVATE_DIRS: [&str; 3] = ["/run", "/var/lib", "/var/log"];

/// The environment variable naming the cluster that owns a holder process.
pub const OWNER_ENV: &str = "WEFT_K8S_CLUSTER";

/// A process holding the node's mount namespace open (`unshare --mount --propagation private`),
/// with a tmpfs on each of [`PRIVATE_DIRS`]. Processes started with [`MountNs::command`] share
/// it.
#[derive(Debug)]
pub struct MountNs {
    holder: Daemon,
    /// The holder's `/proc/<pid>/ns/mnt` link text, `mnt:[inode]`, to find its members.
    id: String,
}

impl MountNs {
    /// Starts the holder (its log in `log`) and mounts the private tmpfs folders. `owner` (the
    /// cluster's state folder) goes into the holder's environment as `WEFT_K8S_CLUSTER`, so a
    /// sweep after a crash finds it as it finds the processes that name the folder.
    pub fn create(log: &Path, owner: &Path) -> Result<MountNs> {
        if let Some(missing) = PRIVATE_DIRS.into_iter().find(|d| !Path::new(d).is_dir()) {
            return Err(Error::Missing(format!(
                "this machine has no {missing} folder"
            )));
        }
        let holder = Daemon::spawn(
            "the node's mount namespace holder",
            Command::new("unshare")
                .args(["--mount", "--propagation", "private", "sleep", "infinity"])
                .env(OWNER_ENV, owner),
            log,
        )?;
        let pid = holder.pid().unwrap_or_default();
        let mut ns = MountNs {
            holder,
            id: String::new(),
        };
        // `unshare` execs `sleep` once the namespace exists: wait until the link differs from
        // ours.
        let ours = ns_link("self")?;
        ns.id =
            weft_lab::wait::until("the mount namespace holder", Duration::from_secs(5), || {
                ns_link(&pid.to_string()).ok().filter(|id| *id != ours)
            })?;
        for dir in PRIVATE_DIRS {
            process::run(Command::new("nsenter").args([
                "--target",
                &pid.to_string(),
                "--mount",
                "--",
                "mount",
                "-t",
                "tmpfs",
                "-o",
                "mode=0755,size=256m",
                "weft-k8s",
                dir,
            ]))?;
        }
        Ok(ns)
    }

    /// `nsenter` into this mount namespace and the network namespace at `netns`, then
    /// `program`. nsenter opens `netns` before it enters the mount namespace (where the host's
    /// `/run/netns` is covered) and execs the program in place, so the PID is the program's.
    pub fn command(&self, netns: &Path, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg("--target")
            .arg(self.holder.pid().unwrap_or_default().to_string())
            .arg("--mount")
            .arg(format!("--net={}", netns.display()))
            .arg("--")
            .arg(program);
        cmd
    }

    /// The PIDs of every process in this mount namespace but the holder: containerd, its
    /// shims, the kubelet.
    pub fn members(&self) -> Vec<i32> {
        let holder = self.holder.pid().and_then(|p| i32::try_from(p).ok());
        proc_pids()
            .into_iter()
            .filter(|pid| Some(*pid) != holder)
            .filter(|pid| ns_link(&pid.to_string()).is_ok_and(|id| id == self.id))
            .collect()
    }

    /// SIGKILLs every member (bounded: a few rounds, as a dying shim may leave a child that
    /// shows up in the next), then the holder; the namespace and its mounts go with the last.
    pub fn kill_all(&mut self) {
        for _ in 0..10 {
            let members = self.members();
            if members.is_empty() {
                break;
            }
            for pid in members {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            thread::sleep(Duration::from_millis(50));
        }
        self.holder.kill();
    }
}

impl Drop for MountNs {
    fn drop(&mut self) {
        self.kill_all();
    }
}

fn ns_link(pid: &str) -> Result<String> {
    let path = format!("/proc/{pid}/ns/mnt");
    fs::read_link(&path)
        .map(|l| l.to_string_lossy().into_owned())
        .map_err(Error::io(format!("read {path}")))
}

fn proc_pids() -> Vec<i32> {
    fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The cgroup subtree `/<name>` in every cgroup hierarchy of the machine (v1 controllers, the
/// named `systemd` one, and a v2 `unified` one in hybrid mode): the kubelet's `cgroupRoot`, so
/// pods and their containers live under it and nowhere else.
#[derive(Debug)]
pub struct Cgroups {
    name: String,
    roots: Vec<PathBuf>,
}

impl Cgroups {
    /// Creates `/<name>` in every hierarchy. A v1 `cpuset` child starts with no CPUs and no
    /// memory nodes, so it gets its parent's.
    pub fn create(name: &str) -> Result<Cgroups> {
        let mut cgroups = Cgroups {
            name: name.to_string(),
            roots: Vec::new(),
        };
        for mount in cgroup_mounts()? {
            let root = mount.join(name);
            fs::create_dir_all(&root).map_err(Error::io(format!("create {}", root.display())))?;
            cgroups.roots.push(root.clone());
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let parent = mount.join(file);
                if parent.exists() {
                    let value = fs::read_to_string(&parent)
                        .map_err(Error::io(format!("read {}", parent.display())))?;
                    fs::write(root.join(file), value.trim())
                        .map_err(Error::io(format!("write {}", root.join(file).display())))?;
                }
            }
        }
        Ok(cgroups)
    }

    /// The name the kubelet takes as `cgroupRoot`.
    pub fn root(&self) -> String {
        format!("/{}", self.name)
    }

    /// Every PID in the subtree, in any hierarchy.
    pub fn pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for root in &self.roots {
            walk(root, &mut |dir| {
                if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
                    pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
                }
            });
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// SIGKILLs every process in the subtree (the containers; bounded rounds), then removes the
    /// subtree's folders, deepest first.
    pub fn remove(&mut self) {
        for _ in 0..20 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            thread::sleep(Duration::from_millis(50));
        }
        for root in std::mem::take(&mut self.roots) {
            let mut dirs = Vec::new();
            walk(&root, &mut |dir| dirs.push(dir.to_path_buf()));
            // `walk` visits parents before children.
            for dir in dirs.iter().rev() {
                if let Err(e) = fs::remove_dir(dir) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        eprintln!("cleanup: rmdir {}: {e}", dir.display());
                    }
                }
            }
        }
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Calls `f` on `dir` and every folder below it, parents first; bounded depth.
fn walk(dir: &Path, f: &mut impl FnMut(&Path)) {
    fn go(dir: &Path, depth: u32, f: &mut impl FnMut(&Path)) {
        f(dir);
        if depth == 0 {
            return;
        }
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    go(&entry.path(), depth - 1, f);
                }
            }
        }
    }
    go(dir, 8, f);
}

/// The mount points of every cgroup hierarchy, from `/proc/self/mountinfo`.
fn cgroup_mounts() -> Result<Vec<PathBuf>> {
    let info = fs::read_to_string("/proc/self/mountinfo")
        .map_err(Error::io("read /proc/self/mountinfo"))?;
    Ok(info
        .lines()
        .filter_map(|line| {
            // `id parent major:minor root mountpoint options... - fstype source superoptions`
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            let mountpoint = left.split_whitespace().nth(4)?;
            matches!(fstype, "cgroup" | "cgroup2").then(|| PathBuf::from(mountpoint))
        })
        .collect())
}

/// The kernel settings the kubelet sets on start (`setupKernelTunables`): their values before,
/// written back on drop, so a test cluster leaves the machine's kernel as it found it.
#[derive(Debug)]
pub struct KernelSettings {
    saved: Vec<(PathBuf, String)>,
}

/// What the kubelet checks and, unless `protectKernelDefaults`, changes.
const KUBELET_SYSCTLS: [&str; 5] = [
    "vm/overcommit_memory",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];

impl KernelSettings {
    /// Reads the settings the kubelet will change.
    pub fn save() -> KernelSettings {
        let saved = KUBELET_SYSCTLS
            .into_iter()
            .map(|s| Path::new("/proc/sys").join(s))
            .filter_map(|p| Some((p.clone(), fs::read_to_string(&p).ok()?)))
            .collect();
        KernelSettings { saved }
    }
}

impl Drop for KernelSettings {
    fn drop(&mut self) {
        for (path, value) in &self.saved {
            if fs::read_to_string(path).is_ok_and(|now| now != *value) {
                if let Err(e) = fs::write(path, value.trim()) {
                    eprintln!("cleanup: restore {}: {e}", path.display());
                }
            }
        }
    }
}
