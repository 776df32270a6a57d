//! Root-only: an image built here is imported into a containerd of the test's own and run by
//! runc, as the k8s tier's pods will be.
//!
//! The containerd has its own root, state and socket under a temp dir and runs in a private
//! mount namespace (`unshare --mount --propagation private`, exec'd in place, so its PID is
//! the daemon's) with a tmpfs on /run, so the overlay mounts of its snapshots and containers
//! and its shims' sockets never reach the machine's namespace and vanish with it. The containers get their own network namespace with
//! only loopback (`ctr run` without `--net-host`), their cgroups under the test's own cgroup
//! (a relative `--cgroup` path), and runc's state and ctr's FIFOs under the temp dir, so
//! nothing is left on the machine.

use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use tempfile::TempDir;
use weft_k8s_lab::image::{self, ImageBuilder, NAMESPACE, SNAPSHOTTER, WEFT_UID};
use weft_lab::{
    process::{run_with_input, Daemon},
    wait,
};

const CONTAINERD: &str = "/usr/bin/containerd";
const CTR: &str = "/usr/bin/ctr";
const REFERENCE: &str = "weft.local/image-test:v1";
const GREETING: &str = "hello from a locally built image\n";
/// How long containerd may take to serve its socket.
const START_PATIENCE: Duration = Duration::from_secs(30);
/// How long one `ctr` command (a container run included) may take.
const CTR_TIMEOUT: Duration = Duration::from_secs(60);
/// How long containerd may take to exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Why this machine cannot run the test, if it cannot.
fn missing() -> Option<String> {
    let mut why = Vec::new();
    if !nix::unistd::Uid::effective().is_root() {
        why.push("needs root to run containerd and runc".to_string());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let on_path = |tool: &str| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file());
    let mut absent: Vec<&str> = [
        "unshare",
        "sh",
        "mount",
        "ldd",
        "runc",
        "containerd-shim-runc-v2",
    ]
    .into_iter()
    .filter(|tool| !on_path(tool))
    .collect();
    absent.extend(
        [CONTAINERD, CTR]
            .into_iter()
            .filter(|f| !Path::new(f).is_file()),
    );
    if !absent.is_empty() {
        why.push(format!(
            "{} missing (as root: apt-get install containerd runc)",
            absent.join(", ")
        ));
    }
    let filesystems = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems
        .lines()
        .any(|l| l.trim_end().ends_with("overlay"))
    {
        why.push("the kernel has no overlay filesystem (modprobe overlay)".into());
    }
    (!why.is_empty()).then(|| why.join("; "))
}

/// A containerd of the test's own; on drop it is killed by PID, and whatever it left running
/// (containers: the processes in the test's cgroups; shims: processes naming the temp dir)
/// is killed by PID too, and the containers' cgroups are removed.
struct Containerd {
    daemon: Daemon,
    socket: PathBuf,
    dir: TempDir,
    /// The cgroup names the test's containers use, under the test's own cgroups.
    cgroups: Vec<String>,
}

impl Containerd {
    fn start() -> Result<Containerd> {
        let dir = tempfile::Builder::new()
            .prefix("weft-image-test-")
            .tempdir()
            .context("create the temp dir")?;
        let socket = dir.path().join("containerd.sock");
        let config = dir.path().join("config.toml");
        let base = dir.path().display();
        // aufs, btrfs, zfs and devmapper cannot load here; CRI is the kubelet's (and would
        // bind its fixed stream port). The v1 runtime stays: containerd 1.6's tasks service
        // does not load without it. The opt plugin would make /opt/containerd on the machine.
        fs::write(
            &config,
            format!(
                r#"version = 2
root = "{base}/root"
state = "{base}/state"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.grpc.v1.cri",
]

[grpc]
  address = "{base}/containerd.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "{base}/opt"
"#
            ),
        )
        .context("write containerd's config")?;
        // In its own mount namespace, containerd gets an empty /run: the shims' sockets
        // (`/run/containerd/s/`, not configurable in 1.6) go there and vanish with it. The
        // shell execs containerd, as unshare execs the shell, so the PID stays containerd's.
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mount -t tmpfs -o mode=0755 weft-image-test-run /run && exec {CONTAINERD} --config \"$1\""
            ))
            .arg("sh")
            .arg(&config);
        let daemon = Daemon::spawn("containerd", &mut cmd, &dir.path().join("containerd.log"))?;
        let mut containerd = Containerd {
            daemon,
            socket,
            dir,
            cgroups: Vec::new(),
        };
        let socket = containerd.socket.clone();
        let daemon = &mut containerd.daemon;
        let ready = wait::until("containerd's socket", START_PATIENCE, || {
            if let Err(e) = daemon.check_running() {
                return Some(Err(e));
            }
            socket.exists().then_some(Ok(()))
        });
        match ready {
            Ok(Ok(())) => {}
            Ok(Err(e)) => bail!("containerd exited before serving {}: {e}", socket.display()),
            Err(e) => bail!(
                "{e}; the end of containerd's log:\n{}",
                containerd.log_tail()
            ),
        }
        containerd.ctr(&["version"])?;
        Ok(containerd)
    }

    /// `ctr --address SOCKET --namespace k8s.io ARGS...` within [`CTR_TIMEOUT`]; its stdout.
    fn ctr(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new(CTR);
        cmd.arg("--address")
            .arg(&self.socket)
            .args(["--namespace", NAMESPACE])
            .args(args);
        let out = run_with_input(&mut cmd, b"", CTR_TIMEOUT)?;
        ensure!(
            out.status.success(),
            "`ctr {}` failed ({}): {}{}\nthe end of containerd's log:\n{}",
            args.join(" "),
            out.status,
            out.stdout,
            out.stderr,
            self.log_tail()
        );
        Ok(out.stdout)
    }

    /// The last lines containerd logged.
    fn log_tail(&self) -> String {
        let log = self.daemon.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Runs `command` (or the image's own) in a new container `id` and returns its output.
    fn run(&mut self, id: &str, command: &[&str]) -> Result<String> {
        let cgroup = format!("weft-image-test-{}-{id}", std::process::id());
        self.cgroups.push(cgroup.clone());
        let runc_root = self.dir.path().join("runc");
        let runc_root = runc_root.to_string_lossy();
        let fifo_dir = self.dir.path().join("fifo");
        let fifo_dir = fifo_dir.to_string_lossy();
        let mut args = vec![
            "run",
            "--rm",
            "--snapshotter",
            SNAPSHOTTER,
            "--cgroup",
            &cgroup,
            "--runc-root",
            &runc_root,
            "--fifo-dir",
            &fifo_dir,
            REFERENCE,
            id,
        ];
        args.extend_from_slice(command);
        self.ctr(&args)
    }

    /// Sends SIGTERM and waits for containerd to exit; the PID it had.
    fn stop(&mut self) -> Result<u32> {
        let pid = self.daemon.pid().context("containerd already stopped")?;
        let status = self.daemon.terminate(STOP_GRACE);
        ensure!(
            status.is_some(),
            "containerd (PID {pid}) did not exit within {STOP_GRACE:?} of SIGTERM"
        );
        Ok(pid)
    }

    /// The test's own cgroup directories that its containers' cgroups would be in.
    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mut dirs = Vec::new();
        for line in own.lines() {
            let mut fields = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            // v1 hierarchies are mounted by controller name; the v2 one (`0::`) at
            // `unified` beside them on a hybrid host like this one, or at the top.
            let unified = Path::new("/sys/fs/cgroup/unified");
            let mount = match controllers.trim_start_matches("name=") {
                "" if unified.is_dir() => unified.to_path_buf(),
                "" => PathBuf::from("/sys/fs/cgroup"),
                name => Path::new("/sys/fs/cgroup").join(name),
            };
            let base = mount.join(path.trim_start_matches('/'));
            for cgroup in &self.cgroups {
                dirs.push(base.join(cgroup));
            }
        }
        dirs
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.daemon.kill();
        // The containers' processes are in the test's own cgroups; the shims name the temp
        // dir. Both are what this test started, found by PID.
        let cgroups = self.cgroup_dirs();
        let mut pids: Vec<i32> = cgroups.iter().flat_map(|d| cgroup_procs(d)).collect();
        pids.extend(leftovers(self.dir.path()));
        pids.sort_unstable();
        pids.dedup();
        for pid in pids {
            eprintln!("cleanup: killing PID {pid}, left by the test's containerd");
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = wait::until("the test's cgroups to empty", STOP_GRACE, || {
            cgroups
                .iter()
                .all(|d| cgroup_procs(d).is_empty())
                .then_some(())
        });
        for dir in cgroups {
            // An empty cgroup goes with rmdir; absent is the normal case.
            let _ = fs::remove_dir(&dir);
        }
    }
}

/// The PIDs in the cgroup directory `dir` (none if it does not exist).
fn cgroup_procs(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Processes that name `dir` on their command line: the shims (`-address DIR/...`).
fn leftovers(dir: &Path) -> Vec<i32> {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|pid| *pid != i32::try_from(std::process::id()).unwrap_or(0))
        .filter(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains(&needle)
        })
        .collect()
}

/// Mount points under `dir` in the test's own mount namespace.
fn mounts_under(dir: &Path) -> Vec<String> {
    let table = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    table
        .lines()
        .filter_map(|line| line.split_whitespace().nth(4))
        .filter(|point| Path::new(point).starts_with(dir))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_local_image_is_imported_into_containerd_and_run() -> Result<()> {
    let test = "a_local_image_is_imported_into_containerd_and_run";
    if !weft_k8s_lab::bins::run_or_skip(test, missing()) {
        return Ok(());
    }
    let mut containerd = Containerd::start()?;
    let dir = containerd.dir.path().to_path_buf();
    let pid = containerd.daemon.pid().context("containerd's PID")?;
    let mount_ns = fs::metadata(format!("/proc/{pid}/ns/mnt"))
        .context("containerd's mount namespace")?
        .ino();
    let own_ns = fs::metadata("/proc/self/ns/mnt")?.ino();
    ensure!(
        mount_ns != own_ns,
        "containerd runs in a mount namespace of its own"
    );

    let greeting = dir.join("greeting");
    fs::write(&greeting, GREETING)?;
    let archive = dir.join("image.tar");
    let started = Instant::now();
    let digest = ImageBuilder::new(REFERENCE)
        .binary("/bin/cat", "/bin/cat")
        .binary("/bin/id", "/usr/bin/id")
        .file("/etc/weft/greeting", &greeting, 0o644)
        .symlink("/greeting", "etc/weft/greeting")
        .dir("/tmp", 0o1777)
        .entrypoint(["/bin/cat"])
        .cmd(["/greeting"])
        .user(WEFT_UID, WEFT_UID)
        .write_archive(&archive)?;
    let built = started.elapsed();
    let archive_size = fs::metadata(&archive)?.len();

    let started = Instant::now();
    image::import(Path::new(CTR), &containerd.socket, &archive)?;
    let imported = started.elapsed();
    let images = containerd.ctr(&["images", "ls"])?;
    ensure!(
        images.contains(REFERENCE) && images.contains(digest.as_str()),
        "the k8s.io namespace holds {REFERENCE} at {digest}: {images}"
    );
    let snapshots = containerd.ctr(&["snapshots", "--snapshotter", SNAPSHOTTER, "ls"])?;
    ensure!(
        snapshots.contains("Committed"),
        "the import unpacked the layer for {SNAPSHOTTER}: {snapshots}"
    );

    let started = Instant::now();
    let out = containerd.run("weft-image-cat", &[])?;
    let first_run = started.elapsed();
    ensure!(out == GREETING, "the image's own command printed {out:?}");
    let out = containerd.run("weft-image-id", &["/bin/id"])?;
    ensure!(
        out.contains(&format!("uid={WEFT_UID}(weft) gid={WEFT_UID}(weft)")),
        "the image's user and its /etc/passwd: {out:?}"
    );
    let out = containerd.run("weft-image-net", &["/bin/cat", "/proc/net/dev"])?;
    let interfaces: Vec<&str> = out
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    ensure!(
        interfaces == ["lo"],
        "the container has its own network namespace with loopback only: {out}"
    );
    let containers = containerd.ctr(&["containers", "ls", "-q"])?;
    ensure!(
        containers.trim().is_empty(),
        "--rm removed the containers: {containers}"
    );

    containerd.stop()?;
    // The shims exit once their tasks are deleted, maybe just after ctr returned.
    let shims = wait::until("the shims to exit", STOP_GRACE, || {
        leftovers(&dir).is_empty().then_some(())
    });
    ensure!(shims.is_ok(), "shims left running: {:?}", leftovers(&dir));
    let in_cgroups: Vec<i32> = containerd
        .cgroup_dirs()
        .iter()
        .flat_map(|d| cgroup_procs(d))
        .collect();
    ensure!(
        in_cgroups.is_empty(),
        "container processes left: {in_cgroups:?}"
    );
    let mounts = mounts_under(&dir);
    ensure!(
        mounts.is_empty(),
        "mounts left under {}: {mounts:?}",
        dir.display()
    );
    let cgroups: Vec<PathBuf> = containerd
        .cgroup_dirs()
        .into_iter()
        .filter(|d| d.exists())
        .collect();
    ensure!(cgroups.is_empty(), "cgroups left: {cgroups:?}");

    let layer_size = layer_size(&archive)?;
    eprintln!(
        "image {REFERENCE}: built in {built:?} (archive {archive_size} bytes, layer \
         {layer_size} bytes), imported in {imported:?}, first `ctr run --rm` in {first_run:?}"
    );
    Ok(())
}

/// The size of the biggest blob of an image archive: its layer.
fn layer_size(archive: &Path) -> Result<u64> {
    let mut tar = tar_reader(archive)?;
    let mut biggest = 0;
    for entry in tar.entries()? {
        let entry = entry?;
        if entry.path()?.starts_with("blobs/sha256") {
            biggest = biggest.max(entry.size());
        }
    }
    Ok(biggest)
}

fn tar_reader(archive: &Path) -> Result<tar::Archive<fs::File>> {
    Ok(tar::Archive::new(fs::File::open(archive)?))
}
