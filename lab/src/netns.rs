//! Named network namespaces (`ip netns add`), deleted on drop, and the two ways into one: a
//! child process started with `ip netns exec`, or a thread that has `setns`-ed into it to make
//! sockets there (a socket belongs to the namespace it was created in, whichever thread uses it
//! afterwards).
//!
//! The one network-namespace helper of the repository: the lab's pods and node, and the
//! root-only tests of the proxy (`proxy/tests/transparent.rs`) and of the CNI plugin
//! (`cni/tests`) all make their namespaces here.

use std::{
    fs::File,
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::Duration,
};

use nix::sched::{setns, CloneFlags};

use crate::{
    error::{Error, Result},
    process,
};

/// Where `ip netns` keeps its namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// A unique prefix for names made by this process: `weft-lab-<pid>-<n>`.
pub fn unique_prefix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "weft-lab-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The namespaces `ip netns list` shows now.
pub fn list() -> Result<Vec<String>> {
    let out = process::run(Command::new("ip").args(["netns", "list"]))?;
    // Lines look like `name` or `name (id: 3)`.
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// A named network namespace: one this lab created (deleted on drop), or one of another
/// process's that it only uses ([`Netns::attach`], left alone on drop).
#[derive(Debug)]
pub struct Netns {
    name: String,
    owned: bool,
}

impl Netns {
    /// `ip netns add <name>`, then loopback up.
    pub fn create(name: &str) -> Result<Netns> {
        if name.is_empty() || name.len() > 200 || name.contains(['/', ' ']) {
            return Err(Error::Invalid {
                what: "namespace name",
                value: name.into(),
                reason: "must be 1 to 200 characters with no '/' or space",
            });
        }
        process::run(Command::new("ip").args(["netns", "add", name]))?;
        // From here on, an early return or a panic deletes it.
        let ns = Netns {
            name: name.into(),
            owned: true,
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// An existing namespace another process made (a running lab's pod, for `weftctl lab
    /// exec`): usable like one of ours, never deleted by this handle.
    pub fn attach(name: &str) -> Result<Netns> {
        let path = PathBuf::from(NETNS_DIR).join(name);
        if name.contains('/') || !path.exists() {
            return Err(Error::Invalid {
                what: "network namespace",
                value: name.into(),
                reason: "does not exist (is the lab still running?)",
            });
        }
        Ok(Netns {
            name: name.into(),
            owned: false,
        })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`, what `CNI_NETNS` names.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(NETNS_DIR).join(&self.name)
    }

    /// `ip netns exec <name> <program>`: a command to run inside. `ip` execs the program in
    /// place, so the child's PID is the program's.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `program args` inside, to completion; returns stdout.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        process::run(self.command(program).args(args))
    }

    /// Runs `program args` inside with `input` on its stdin, to completion within
    /// [`process::COMMAND_TIMEOUT`]; a non-zero exit is not an error here, the caller judges
    /// the [`process::Output`] (for tests of commands that are meant to fail).
    pub fn output(&self, program: &str, args: &[&str], input: &[u8]) -> Result<process::Output> {
        process::run_with_input(
            self.command(program).args(args),
            input,
            process::COMMAND_TIMEOUT,
        )
    }

    /// `ip -n <name> args`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        process::run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Runs `f` on a thread that has entered the namespace and returns what it returns. Sockets
    /// `f` creates belong to this namespace.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let path = self.path();
        let file = File::open(&path).map_err(Error::io(format!("open {}", path.display())))?;
        thread::scope(|s| {
            s.spawn(move || {
                setns(&file, CloneFlags::CLONE_NEWNET)
                    .map_err(|e| Error::io(format!("setns into {}", path.display()))(e.into()))?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// A TCP listener inside the namespace.
    pub fn listen(&self, addr: SocketAddr) -> Result<TcpListener> {
        self.enter(|| TcpListener::bind(addr))?
            .map_err(Error::io(format!("bind {addr} in {}", self.name)))
    }

    /// A TCP connection made from inside the namespace, with `timeout` on the connect and on
    /// every read and write afterwards.
    pub fn connect(&self, addr: SocketAddr, timeout: Duration) -> Result<TcpStream> {
        let what = || format!("connect to {addr} from {}", self.name);
        let stream = self
            .enter(|| TcpStream::connect_timeout(&addr, timeout))?
            .map_err(Error::io(what()))?;
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .map_err(Error::io(what()))?;
        Ok(stream)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        // Deleting the namespace takes its interfaces (veth ends, a bridge) and its iptables
        // rules with it.
        if let Err(e) = process::run(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("cleanup: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attached_namespace_outlives_its_handle_and_an_owned_one_does_not() {
        if !crate::prereq::run_or_skip("netns attach", crate::prereq::missing_tools(&["ip"])) {
            return;
        }
        let name = format!("{}-attach", unique_prefix());
        let owned = Netns::create(&name).expect("create");
        let attached = Netns::attach(&name).expect("attach");
        assert_eq!(
            attached
                .run("ip", &["-o", "link", "show", "lo"])
                .map(|o| o.contains("lo"))
                .ok(),
            Some(true)
        );
        drop(attached);
        assert!(
            list().expect("list").contains(&name),
            "still there after the attached handle"
        );
        drop(owned);
        assert!(
            !list().expect("list").contains(&name),
            "gone with its owner"
        );
        assert!(
            Netns::attach(&name).is_err(),
            "attaching to a missing namespace fails"
        );
        assert!(Netns::attach("../etc").is_err());
    }
}
