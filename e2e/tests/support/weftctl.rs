//! The real `weftctl` binary of this build, and a `weftctl lab up` running in the background
//! as a user runs it.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::Duration,
};

use weft_lab::{
    registry::{LabEntry, Registry},
    wait,
};

/// `weftctl` of this build.
pub(crate) fn weftctl() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable");
    let mut dir = exe.parent().expect("its folder").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("weftctl")
}

/// A running `weftctl lab up`, its output collected; killed (by PID) if still running on drop.
pub(crate) struct Up {
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Up {
    pub(crate) fn start(dir: &Path, name: &str) -> Up {
        let mut child = Command::new(weftctl())
            .args(["lab", "up", "--name", name, "--poll", "200ms"])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("weftctl lab up");
        let output = Arc::new(Mutex::new(String::new()));
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let output = output.clone();
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut out = output.lock().unwrap_or_else(|p| p.into_inner());
                    out.push_str(&line);
                    out.push('\n');
                }
            });
        }
        Up { child, output }
    }

    pub(crate) fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for Up {
    /// As Ctrl-C would (SIGTERM), so the lab removes what it made even when the test failed;
    /// killed outright only if it does not end within a minute.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            if let Ok(pid) = i32::try_from(self.child.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let _ = wait::until("weftctl lab up to end", Duration::from_secs(60), || {
                matches!(self.child.try_wait(), Ok(Some(_))).then_some(())
            });
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The lab's entry once it lists exactly `pods` pods.
pub(crate) fn entry_with(name: &str, pods: usize, up: &Up) -> LabEntry {
    wait::until(
        format!("lab {name} to run {pods} pods"),
        Duration::from_secs(60),
        || {
            Registry::system()
                .find(Some(name))
                .ok()
                .filter(|e| e.pods.len() == pods)
        },
    )
    .unwrap_or_else(|e| panic!("{e}; weftctl lab up said:\n{}", up.output()))
}
