//! What the root-only tests share: a private network namespace per test, running the plugin and
//! `weft-init` inside or against it, and reading its `nat` table back.
//!
//! Safety: each namespace is fresh and private, with only loopback (down or up); nothing here
//! sends a packet anywhere. The guard deletes the namespace (and with it every rule the test
//! made) on success, failure and panic.

#![allow(dead_code, unreachable_pub)]

use std::{
    io::Write,
    path::PathBuf,
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

pub const BACKENDS: [&str; 2] = ["nft", "legacy"];

/// A fresh network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(test: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        // Interface-name rules do not apply to namespace names, but keep them short and unique.
        let short: String = test
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(20)
            .collect();
        let name = format!("wc-{}-{n}-{short}", std::process::id());
        let status = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("run ip");
        assert!(status.success(), "ip netns add {name}");
        Self { name }
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// `iptables-save -t nat` (or ip6tables) inside the namespace, without the comment lines
    /// that carry a timestamp.
    pub fn nat(&self, backend: &str, v6: bool) -> String {
        let tool = format!(
            "{}-{backend}-save",
            if v6 { "ip6tables" } else { "iptables" }
        );
        let out = self.exec(&[&tool, "-t", "nat"]);
        assert!(
            out.status.success(),
            "{tool}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    pub fn exec(&self, argv: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(argv)
            .output()
            .expect("run ip netns exec")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Whether this machine can run the tier; prints the reason when not. Fails instead of skipping
/// when `WEFT_REQUIRE_NETNS_TESTS=1` (CI).
pub fn can_run(test: &str) -> bool {
    let mut missing = Vec::new();
    if !nix::unistd::Uid::effective().is_root() {
        missing.push("root".to_owned());
    }
    for tool in [
        "ip",
        "iptables-nft-save",
        "iptables-legacy-save",
        "ip6tables-nft-save",
    ] {
        let found = ["/usr/sbin", "/sbin", "/usr/bin"]
            .iter()
            .any(|d| std::path::Path::new(d).join(tool).exists());
        if !found {
            missing.push(tool.to_owned());
        }
    }
    if missing.is_empty() {
        return true;
    }
    let reason = format!(
        "SKIPPED: {test} needs {} (as root: apt-get install iptables iproute2)",
        missing.join(", ")
    );
    if std::env::var_os("WEFT_REQUIRE_NETNS_TESTS").is_some_and(|v| v == "1") {
        panic!("{reason}; WEFT_REQUIRE_NETNS_TESTS=1 turns this skip into a failure");
    }
    eprintln!("{reason}");
    false
}

/// Runs a binary with env and stdin; its output.
pub fn run(bin: &str, args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut child = Command::new(bin)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).expect("write stdin");
    drop(input);
    child.wait_with_output().expect("wait")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
