//! Child processes: short commands run to completion under a time bound, and long-running
//! daemons (proxies, the control plane, tcpdump) that are killed and reaped by PID when their
//! guard drops. The lab never signals a process it did not start.

use std::{
    fs::File,
    io::{Read, Write},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

use crate::{
    error::{Error, Result},
    wait::POLL_STEP,
};

/// How long a setup command (`ip`, `iptables`, a CNI plugin) may run.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// What a finished command wrote.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// `program args...` as one line, for messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Runs `cmd` with `input` on its stdin, within `timeout`; past it the child is killed.
/// A non-zero exit is not an error here: the caller decides (a CNI plugin's error is on stdout).
pub fn run_with_input(cmd: &mut Command, input: &[u8], timeout: Duration) -> Result<Output> {
    let line = describe(cmd);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(Error::io(format!("start `{line}`")))?;
    let stdin = child.stdin.take();
    let input = input.to_vec();
    // Writer and readers on their own threads, so a child that fills one pipe while we wait on
    // another never deadlocks.
    let writer = thread::spawn(move || {
        if let Some(mut stdin) = stdin {
            // A child that exits without reading its input is not our error to report.
            let _ = stdin.write_all(&input);
        }
    });
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    let status = wait_bounded(&mut child, timeout);
    let _ = writer.join();
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => Err(Error::CommandTimeout {
            command: line,
            after: timeout,
        }),
    }
}

/// Runs `cmd` to completion within [`COMMAND_TIMEOUT`]; a non-zero exit is an error carrying
/// its stderr. Returns stdout.
pub fn run(cmd: &mut Command) -> Result<String> {
    let line = describe(cmd);
    let out = run_with_input(cmd, b"", COMMAND_TIMEOUT)?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(Error::Command {
            command: line,
            status: out.status.to_string(),
            stderr: out.stderr.trim().to_string(),
        })
    }
}

fn reader<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            // Bounded: nothing the lab runs legitimately writes more than a few MiB.
            let _ = pipe.by_ref().take(16 << 20).read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Waits for `child` up to `timeout`; kills and reaps it past that (then `None`).
fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    for _ in 0..crate::wait::tries(timeout) {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(_) => break,
        }
        if start.elapsed() > timeout {
            break;
        }
        thread::sleep(POLL_STEP / 4);
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// A long-running child whose stdout and stderr go to a log file; killed (by its PID) and
/// reaped on drop.
#[derive(Debug)]
pub struct Daemon {
    what: String,
    child: Option<Child>,
    log: PathBuf,
    argv: Vec<String>,
}

impl Daemon {
    /// Starts `cmd` with its output appended to `log`. `what` names it in messages.
    pub fn spawn(what: impl Into<String>, cmd: &mut Command, log: &Path) -> Result<Daemon> {
        let what = what.into();
        let argv = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(Error::io(format!(
                "open the log of {what} at {}",
                log.display()
            )))?;
        let err = out
            .try_clone()
            .map_err(Error::io(format!("clone the log handle of {what}")))?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .map_err(Error::io(format!("start {what}: `{}`", describe(cmd))))?;
        Ok(Daemon {
            what,
            child: Some(child),
            log: log.to_path_buf(),
            argv,
        })
    }

    /// The process ID (the program's own: `ip netns exec` and `setpriv` exec in place).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The program and arguments it was started with (to start it again the same way).
    pub fn command_line(&self) -> &[String] {
        &self.argv
    }

    /// What the daemon has written so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// An error if the daemon has exited.
    pub fn check_running(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Err(Error::Exited {
                what: self.what.clone(),
                status: "stopped by the lab".into(),
                log: String::new(),
            });
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(Error::Exited {
                what: self.what.clone(),
                status: status.to_string(),
                log: self.log(),
            }),
            Err(e) => Err(Error::io(format!("poll {}", self.what))(e)),
        }
    }

    /// SIGTERM, then up to `grace` for the process to exit, then SIGKILL; reaps it either way.
    /// Returns its exit status.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let pid = Pid::from_raw(i32::try_from(child.id()).ok()?);
        // Only our own child, by PID, and it has not been reaped yet, so the PID is still ours.
        if kill(pid, Signal::SIGTERM).is_ok() {
            if let Some(status) = wait_bounded(&mut child, grace) {
                return Some(status);
            }
            // wait_bounded killed and reaped it.
            return None;
        }
        let _ = child.kill();
        child.wait().ok()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Err(e) = child.kill() {
                // Already exited is fine; anything else is worth a line.
                if e.kind() != std::io::ErrorKind::InvalidInput {
                    eprintln!("cleanup: kill {} ({}): {e}", self.what, child.id());
                }
            }
            if let Err(e) = child.wait() {
                eprintln!("cleanup: reap {} ({}): {e}", self.what, child.id());
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}
