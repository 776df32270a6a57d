//! The real `weft-control-plane` binary as a child process on loopback port 0: its addresses
//! come from `--addresses-file`, it is ready when `/ready` answers 200, and it is stopped (or
//! killed, when dropped) by its PID.
//!
//! ```ignore
//! let cp = ControlPlaneCommand::locate()?
//!     .arg("--issuer").arg(issuer_dir)
//!     .arg("--tokens").arg(tokens)
//!     .start().await;
//! // ... proxies use cp.grpc ...
//! let again = cp.command(); // the same flags, at the ports it got
//! cp.stop().await;
//! let cp = again.start().await;
//! ```

use std::{
    ffi::OsString,
    io::Read,
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::Duration,
};

use nix::{sys::signal::Signal, unistd::Pid};

use crate::{
    addresses::Addresses,
    bins::{self, MissingBinary},
    http,
    prometheus::Metrics,
    wait::{self, PATIENCE},
};

/// How long a stop may take: SIGTERM, then calls in flight finish within the control plane's
/// shutdown grace (5 s).
pub const STOP_PATIENCE: Duration = Duration::from_secs(10);

/// How to start the control plane: the binary, its flags and environment, and the addresses
/// to bind (loopback port 0 unless [`Self::at`]).
#[derive(Debug, Clone)]
pub struct ControlPlaneCommand {
    bin: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    grpc: SocketAddr,
    admin: SocketAddr,
}

impl ControlPlaneCommand {
    /// Runs `bin` (in its own package's tests, `env!("CARGO_BIN_EXE_weft-control-plane")`).
    pub fn new(bin: impl Into<PathBuf>) -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            bin: bin.into(),
            args: Vec::new(),
            envs: Vec::new(),
            grpc: any,
            admin: any,
        }
    }

    /// `weft-control-plane` as cargo built it for the workspace (see [`crate::bins`]).
    pub fn locate() -> Result<Self, MissingBinary> {
        bins::binary("weft-control-plane", "weft-control-plane").map(Self::new)
    }

    /// One more flag or value. Not `--grpc-addr`, `--admin-addr` or `--addresses-file`: the
    /// command sets those.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// One environment variable; nothing else of the test's environment reaches the process.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Binds these addresses instead of port 0: to start again where an earlier one was.
    pub fn at(mut self, grpc: SocketAddr, admin: SocketAddr) -> Self {
        self.grpc = grpc;
        self.admin = admin;
        self
    }

    /// Starts it and waits (bounded) for its addresses file and `/ready` 200.
    ///
    /// # Panics
    /// If it exits or is not ready within [`PATIENCE`], with everything it logged.
    pub async fn start(&self) -> ControlPlane {
        let dir = tempfile::tempdir().expect("a temporary folder for the addresses file");
        let file = dir.path().join("addresses.json");
        let mut cmd = Command::new(&self.bin);
        // Nothing from the test's environment (WEFT_CP_*, POD_NAMESPACE, proxies) leaks in.
        cmd.env_clear()
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .arg("--grpc-addr")
            .arg(self.grpc.to_string())
            .arg("--admin-addr")
            .arg(self.admin.to_string())
            .arg("--addresses-file")
            .arg(&file)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.bin.display()));
        let logs = Arc::new(Mutex::new(String::new()));
        let (done, log_end) = mpsc::channel();
        if let Some(mut stderr) = child.stderr.take() {
            let sink = logs.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stderr.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
                let _ = done.send(());
            });
        }
        let mut cp = ControlPlane {
            grpc: self.grpc,
            admin: self.admin,
            command: self.clone(),
            child,
            logs,
            log_end,
            _dir: dir,
        };
        let started = tokio::time::Instant::now();
        let mut addresses = None;
        for _ in 0..wait::tries(PATIENCE) {
            if let Ok(Some(_)) = cp.child.try_wait() {
                cp.fail("exited before it was ready");
            }
            if addresses.is_none() {
                addresses = Addresses::read(&file).unwrap_or_else(|e| cp.fail(&e.to_string()));
            }
            if let Some(found) = addresses {
                cp.grpc = found.grpc;
                cp.admin = found.admin;
                if http::get(found.admin, "/ready").await.map(|r| r.0) == Some(200) {
                    return cp;
                }
            }
            if started.elapsed() > PATIENCE {
                break;
            }
            tokio::time::sleep(wait::POLL_STEP).await;
        }
        let what = match addresses {
            None => "no addresses file",
            Some(_) => "/ready did not answer 200",
        };
        cp.fail(&format!("{what} after {PATIENCE:?}"));
    }
}

/// A running control plane, killed (by its PID) when dropped.
#[derive(Debug)]
pub struct ControlPlane {
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    command: ControlPlaneCommand,
    child: Child,
    logs: Arc<Mutex<String>>,
    log_end: mpsc::Receiver<()>,
    _dir: tempfile::TempDir,
}

impl ControlPlane {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it logged so far (stderr).
    pub fn logs(&self) -> String {
        self.logs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Its `/metrics`, parsed; `None` if the admin port did not answer.
    pub async fn metrics(&self) -> Option<Metrics> {
        http::metrics(self.admin).await
    }

    /// The sample named `selector` as printed (`name{k="v",...}`, any label order); `None`
    /// if absent or the admin port did not answer.
    pub async fn metric(&self, selector: &str) -> Option<f64> {
        self.metrics().await?.series(selector)
    }

    /// Like [`Self::metric`], but the series must be there.
    pub async fn metric_now(&self, selector: &str) -> f64 {
        let metrics = self.metrics().await.expect("the admin port answers");
        metrics
            .series(selector)
            .unwrap_or_else(|| panic!("no {selector} on /metrics:\n{metrics}"))
    }

    /// Sends `signal` to the process this test started.
    pub fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.pid()).expect("a PID fits an i32"));
        nix::sys::signal::kill(pid, signal).unwrap_or_else(|e| panic!("kill -{signal} {pid}: {e}"));
    }

    pub fn sigterm(&self) {
        self.signal(Signal::SIGTERM);
    }

    /// Waits up to `patience` for the process to exit: its exit code (`None` for a signal), or
    /// `None` if it is still running.
    pub async fn wait_exit(&mut self, patience: Duration) -> Option<Option<i32>> {
        let started = tokio::time::Instant::now();
        for _ in 0..wait::tries(patience) {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status.code()),
                Ok(None) => {}
                Err(e) => panic!("waiting for the control plane (PID {}): {e}", self.pid()),
            }
            if started.elapsed() > patience {
                break;
            }
            tokio::time::sleep(wait::POLL_STEP).await;
        }
        None
    }

    /// SIGTERM, and waits until it has exited 0.
    ///
    /// # Panics
    /// If it does not exit 0 within [`STOP_PATIENCE`].
    pub async fn stop(mut self) {
        self.stop_in_place().await;
    }

    /// How it was started, at the addresses it got: to start it again where it was (after
    /// [`Self::stop`]), so proxies find it at the address they know. Its ports are free once it
    /// has exited; only an outgoing connection given one of them as its ephemeral port in
    /// between could take one, which a start then reports as the address in use.
    pub fn command(&self) -> ControlPlaneCommand {
        self.command.clone().at(self.grpc, self.admin)
    }

    async fn stop_in_place(&mut self) {
        self.sigterm();
        let code = self.wait_exit(STOP_PATIENCE).await;
        if code != Some(Some(0)) {
            let why = match code {
                None => format!("still running {STOP_PATIENCE:?} after SIGTERM"),
                Some(code) => format!("exited with {code:?} on SIGTERM"),
            };
            self.fail(&why);
        }
    }

    /// Panics with `why`, how it exited and everything it logged.
    fn fail(&mut self, why: &str) -> ! {
        let status = match self.child.try_wait() {
            Ok(Some(status)) => {
                // Its stderr closes when it exits: let the reader finish (bounded).
                let _ = self.log_end.recv_timeout(Duration::from_secs(2));
                format!("exited: {status}")
            }
            _ => "still running".to_string(),
        };
        panic!(
            "weft-control-plane ({}): {why}; {status}; logs:\n{}",
            self.command.bin.display(),
            self.logs()
        );
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
