//! What the root-only tests share: a private network namespace per test, running the plugin and
//! `weft-init` inside or against it, and reading its `nat` table back.
//!
//! Safety: each namespace is fresh and private, with only loopback (up), made by the lab's
//! `netns` module; nothing here sends a packet anywhere. The guard deletes the namespace (and
//! with it every rule the test made) on success, failure and panic.

#![allow(dead_code, unreachable_pub)]

use std::{
    io::Write,
    path::PathBuf,
    process::{Command, Output, Stdio},
};

use weft_lab::{netns, prereq};

pub const BACKENDS: [&str; 2] = ["nft", "legacy"];

/// A fresh network namespace (with loopback up), deleted on drop: the lab's
/// ([`weft_lab::netns`]), with what these tests ask of it.
pub struct Netns(netns::Netns);

impl Netns {
    pub fn new(test: &str) -> Self {
        // Keep the name short and readable: the test it is for, after the lab's unique prefix.
        let short: String = test
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(20)
            .collect();
        let name = format!("{}-{short}", netns::unique_prefix());
        Self(netns::Netns::create(&name).unwrap_or_else(|e| panic!("{e}")))
    }

    pub fn path(&self) -> PathBuf {
        self.0.path()
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

    /// Runs `argv` inside the namespace (within the lab's command time bound); a non-zero exit
    /// is the caller's to judge.
    pub fn exec(&self, argv: &[&str]) -> Output {
        let (program, args) = argv.split_first().expect("a command to run");
        let out = self
            .0
            .output(program, args, b"")
            .unwrap_or_else(|e| panic!("{e}"));
        Output {
            status: out.status,
            stdout: out.stdout.into_bytes(),
            stderr: out.stderr.into_bytes(),
        }
    }
}

/// Whether this machine can run the tier; prints the reason when not. Fails instead of skipping
/// when `WEFT_REQUIRE_NETNS_TESTS=1` (CI): the lab's skip rule.
pub fn can_run(test: &str) -> bool {
    let tools = [
        "ip",
        "iptables-nft-save",
        "iptables-legacy-save",
        "ip6tables-nft-save",
    ];
    let why_not = prereq::missing_tools(&tools)
        .map(|why| format!("{why} (as root: apt-get install iptables iproute2)"));
    prereq::run_or_skip(test, why_not)
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
