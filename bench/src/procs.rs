//! Child processes of the harness and what `/proc` says about them.

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use weft_testkit::Addresses;

/// A process the harness started; killed (by its PID) when dropped.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    pub child: Child,
}

impl Proc {
    /// Starts `cmd` with its output discarded (stderr kept for errors).
    pub fn spawn(name: &str, cmd: &mut Command) -> anyhow::Result<Proc> {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc {
            name: name.to_string(),
            child,
        })
    }

    /// Starts `cmd` and returns the first `n` lines it prints on stdout.
    pub fn spawn_reading(
        name: &str,
        cmd: &mut Command,
        n: usize,
    ) -> anyhow::Result<(Proc, Vec<String>)> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = Vec::new();
        let mut reader = BufReader::new(stdout);
        for _ in 0..n {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            lines.push(line.trim().to_string());
        }
        Ok((
            Proc {
                name: name.to_string(),
                child,
            },
            lines,
        ))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User plus system CPU time so far.
    pub fn cpu(&self) -> anyhow::Result<Duration> {
        self.cpu_times().map(CpuTimes::total)
    }

    /// User and system CPU time so far, apart.
    pub fn cpu_times(&self) -> anyhow::Result<CpuTimes> {
        cpu_times_of(self.pid()).with_context(|| format!("CPU time of {}", self.name))
    }

    /// A `/proc/PID/status` field in KiB (`VmRSS`, `VmHWM`).
    pub fn status_kib(&self, field: &str) -> anyhow::Result<u64> {
        status_kib_of(self.pid(), field).with_context(|| format!("{field} of {}", self.name))
    }

    /// Fails if the process has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited: {status}", self.name);
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// User plus system CPU time of process `pid` so far (`std::process::id()` for this one).
pub fn cpu_of(pid: u32) -> anyhow::Result<Duration> {
    cpu_in(&format!("/proc/{pid}/stat"))
}

/// The CPU time of process `pid` so far, user and system (kernel) apart.
pub fn cpu_times_of(pid: u32) -> anyhow::Result<CpuTimes> {
    cpu_times_in(&format!("/proc/{pid}/stat"))
}

/// CPU time spent in user space and in the kernel on the process's behalf (system calls,
/// and the network stack's work they run).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuTimes {
    pub user: Duration,
    pub system: Duration,
}

impl CpuTimes {
    pub fn total(self) -> Duration {
        self.user + self.system
    }
}

impl std::ops::Sub for CpuTimes {
    type Output = CpuTimes;
    fn sub(self, before: CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user.saturating_sub(before.user),
            system: self.system.saturating_sub(before.system),
        }
    }
}

impl std::iter::Sum for CpuTimes {
    fn sum<I: Iterator<Item = CpuTimes>>(iter: I) -> CpuTimes {
        iter.fold(CpuTimes::default(), |a, b| CpuTimes {
            user: a.user + b.user,
            system: a.system + b.system,
        })
    }
}

/// The CPU time (user + system) of the calling thread.
pub fn thread_cpu() -> anyhow::Result<Duration> {
    cpu_in("/proc/thread-self/stat")
}

/// The CPU time (user + system) of a thread of this process, by its `/proc/thread-self` path
/// as that thread read it ([`thread_path`]).
pub fn thread_cpu_at(path: &std::path::Path) -> anyhow::Result<Duration> {
    cpu_in(&format!("{}/stat", path.display()))
}

/// Where the calling thread's `/proc` entry is, for [`thread_cpu_at`] from another thread.
pub fn thread_path() -> anyhow::Result<std::path::PathBuf> {
    Ok(std::path::Path::new("/proc").join(std::fs::read_link("/proc/thread-self")?))
}

fn cpu_in(path: &str) -> anyhow::Result<Duration> {
    cpu_times_in(path).map(CpuTimes::total)
}

fn cpu_times_in(path: &str) -> anyhow::Result<CpuTimes> {
    let stat = std::fs::read_to_string(path)?;
    // Fields after the command name (which may hold spaces) start past the last ')'.
    let rest = stat.rsplit_once(')').context("stat format")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
    let field = |i: usize| -> anyhow::Result<u64> {
        Ok(fields.get(i).context("stat format")?.parse::<u64>()?)
    };
    let secs = |ticks: u64| Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64);
    Ok(CpuTimes {
        user: secs(field(11)?),
        system: secs(field(12)?),
    })
}

/// A process's resident and private memory, KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss_kib: u64,
    /// Private memory: heap and stacks, without the binary's shared code pages.
    pub anon_kib: u64,
}

/// `VmRSS` and `RssAnon` of process `pid`.
pub fn memory_of(pid: u32) -> anyhow::Result<Memory> {
    Ok(Memory {
        rss_kib: status_kib_of(pid, "VmRSS")?,
        anon_kib: status_kib_of(pid, "RssAnon")?,
    })
}

/// A `/proc/PID/status` field of process `pid` in KiB (`VmRSS`, `RssAnon`, `VmHWM`).
pub fn status_kib_of(pid: u32, field: &str) -> anyhow::Result<u64> {
    weft_testkit::procfs::status_kib(pid, field)
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// The kernel's clock tick (`sysconf(_SC_CLK_TCK)`), read once through `getconf`.
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// A free loopback port (bound and released: the harness is the only thing starting listeners
/// on this machine while it runs).
pub fn free_port() -> anyhow::Result<u16> {
    free_port_on([127, 0, 0, 1])
}

/// How many ports the kernel may offer that this run already handed out before giving up.
const PORT_DRAWS: usize = 64;

/// A free port on the loopback address `ip`, as [`free_port`], and never one this run handed
/// out before: a released port is free again at once, so the kernel may offer it to the next
/// caller while the process it was meant for has not bound it yet (two listeners of one
/// setup once drew the same port).
pub fn free_port_on(ip: [u8; 4]) -> anyhow::Result<u16> {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let addr = SocketAddr::from((ip, 0));
    for _ in 0..PORT_DRAWS {
        let port = TcpListener::bind(addr)
            .with_context(|| format!("binding {addr}"))?
            .local_addr()?
            .port();
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
        if handed_out.insert(port) {
            return Ok(port);
        }
    }
    bail!("{PORT_DRAWS} ports offered on {addr} were all handed out before")
}

/// Starts `weft-control-plane` (`cmd`, flags but the addresses) on loopback port 0 and waits
/// up to `patience` for the addresses it reports (`--addresses-file`) and for `/ready` 200:
/// no free port is picked first, so nothing can take it in between.
pub fn start_control_plane(
    cmd: &mut Command,
    work: &Path,
    patience: Duration,
) -> anyhow::Result<(Proc, Addresses)> {
    let file = work.join(format!(
        "control-plane-addresses-{}.json",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&file);
    let mut proc = Proc::spawn(
        "weft-control-plane",
        cmd.args(["--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
            .arg("--addresses-file")
            .arg(&file),
    )?;
    let deadline = Instant::now() + patience;
    let mut addresses = None;
    loop {
        proc.check_running()
            .context("the control plane exited while starting (its log is above)")?;
        if addresses.is_none() {
            addresses = Addresses::read(&file)?;
        }
        if let Some(found) = addresses {
            if is_ready(found.admin) {
                return Ok((proc, found));
            }
        }
        if Instant::now() >= deadline {
            match addresses {
                None => bail!(
                    "weft-control-plane wrote no {} within {patience:?}",
                    file.display()
                ),
                Some(a) => bail!(
                    "weft-control-plane was not ready on {} within {patience:?}",
                    a.admin
                ),
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (up to 10 s) until `GET /ready` on `admin` answers 200.
pub fn wait_ready(admin: SocketAddr, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if is_ready(admin) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("{what} was not ready on {admin} within 10s")
}

/// Whether `GET /ready` on `admin` answers 200 now (each step bounded).
pub fn is_ready(admin: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect_timeout(&admin, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut head = [0u8; 12];
    s.write_all(b"GET /ready HTTP/1.0\r\n\r\n").is_ok()
        && s.read_exact(&mut head).is_ok()
        && &head[9..12] == b"200"
}

/// Waits up to 10 s for something to accept on `addr`.
pub fn wait_listening(addr: SocketAddr, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("{what} did not listen on {addr} within 10s")
}
