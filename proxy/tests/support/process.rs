//! The built `weft-proxy` binary as a child process, for what only a process shows: signals,
//! exit codes, memory.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// A running proxy process, killed (by its PID) when dropped.
pub struct ProxyProcess {
    pub child: Child,
    pub outbound: SocketAddr,
    pub admin: SocketAddr,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl ProxyProcess {
    /// Starts the binary with ports 0, JSON logs, and `env`; waits for its `listening` line.
    pub fn spawn(env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft-proxy"));
        cmd.env_clear()
            .env("WEFT_OUTBOUND_PORT", "0")
            .env("WEFT_INBOUND_PORT", "0")
            .env("WEFT_ADMIN_PORT", "0")
            .env("WEFT_LOG_FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn weft-proxy");
        let stdout = child.stdout.take().expect("stdout");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("\"listening\"") {
                    let _ = tx.send(line.clone());
                }
                sink.lock().expect("logs").push(line);
            }
        });
        let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) else {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "proxy did not start listening: stderr {:?}, logs {:?}",
                String::from_utf8_lossy(&out.stderr),
                logs.lock().expect("logs")
            );
        };
        let v: serde_json::Value = serde_json::from_str(&line).expect("json log line");
        let port = |key: &str| -> u16 {
            let addr: SocketAddr = v[key].as_str().expect(key).parse().expect("addr");
            addr.port()
        };
        Self {
            outbound: SocketAddr::from(([127, 0, 0, 1], port("outbound"))),
            admin: SocketAddr::from(([127, 0, 0, 1], port("admin"))),
            child,
            logs,
        }
    }

    /// Sends `signal` to the proxy (the process this test started).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        nix::sys::signal::kill(pid, signal).expect("kill");
    }

    /// Waits up to `patience` for the process to exit; its exit code.
    pub async fn wait_exit(&mut self, patience: Duration) -> Option<i32> {
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }

    /// A field of `/proc/PID/status` in KiB (VmRSS, VmHWM).
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc status"))
    }

    /// The logs so far, one JSON line each.
    pub fn log_text(&self) -> String {
        self.logs.lock().expect("logs").join("\n")
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
