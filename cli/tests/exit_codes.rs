//! `weftctl`'s exit status, as a script sees it: 0 for success, `--help` and `--version`; 64
//! (`EX_USAGE`) for a command line it refuses, bad values included; 1 for a command that was
//! well formed but failed.

use std::{
    path::PathBuf,
    process::{Command, Output},
};

const USAGE: i32 = 64;
const FAILURE: i32 = 1;

fn weftctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weftctl"))
        .args(args)
        .output()
        .expect("run weftctl")
}

/// Runs `args` and checks the exit status; returns stdout and stderr.
fn expect(args: &[&str], code: i32) -> (String, String) {
    let out = weftctl(args);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(
        out.status.code(),
        Some(code),
        "weftctl {args:?}\nstdout: {stdout}\nstderr: {stderr}"
    );
    (stdout, stderr)
}

/// A scratch folder removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("weftctl-exit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 path")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn help_and_version_succeed() {
    let (help, _) = expect(&["--help"], 0);
    assert!(help.contains("Usage: weftctl"), "{help}");
    let (sub_help, _) = expect(&["certs", "create-anchor", "--help"], 0);
    assert!(sub_help.contains("--trust-domain"), "{sub_help}");
    let (version, _) = expect(&["--version"], 0);
    assert!(
        version.starts_with(&format!("weftctl {}", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
}

#[test]
fn a_command_line_it_refuses_is_a_usage_error() {
    // No subcommand: the help goes to stderr, and it is still a usage error.
    let (_, stderr) = expect(&[], USAGE);
    assert!(stderr.contains("Usage: weftctl"), "{stderr}");
    let (_, stderr) = expect(&["frobnicate"], USAGE);
    assert!(stderr.contains("frobnicate"), "{stderr}");
    expect(&["certs", "create-anchor", "--no-such-flag"], USAGE);
    // Values clap checks: a duration, and numbers out of range.
    let (_, stderr) = expect(&["certs", "create-anchor", "--lifetime", "forever"], USAGE);
    assert!(stderr.contains("--lifetime"), "{stderr}");
    expect(&["demo", "--seconds", "1"], USAGE);
    expect(&["demo", "--rps", "0"], USAGE);
    expect(&["certs", "inspect"], USAGE);
}

#[test]
fn a_bad_trust_domain_is_a_usage_error_and_writes_nothing() {
    let dir = Scratch::new("td");
    let (_, stderr) = expect(
        &[
            "certs",
            "create-anchor",
            "--out",
            dir.path(),
            "--trust-domain",
            "Bad_Domain!",
        ],
        USAGE,
    );
    assert!(
        stderr.contains("--trust-domain") && stderr.contains("trust domain"),
        "names the flag and what is wrong with it: {stderr}"
    );
    assert!(
        !dir.0.join("anchor.key").exists(),
        "nothing is written for a refused command line"
    );
}

#[test]
fn a_well_formed_command_that_fails_exits_1() {
    let dir = Scratch::new("fail");
    let missing = format!("{}/nope.pem", dir.path());
    let (_, stderr) = expect(&["certs", "inspect", &missing], FAILURE);
    assert!(stderr.contains("nope.pem"), "{stderr}");

    expect(&["certs", "create-anchor", "--out", dir.path()], 0);
    let (_, stderr) = expect(&["certs", "create-anchor", "--out", dir.path()], FAILURE);
    assert!(stderr.contains("--force"), "{stderr}");

    let not_pem = dir.0.join("anchor.key");
    let (_, stderr) = expect(
        &["certs", "inspect", not_pem.to_str().expect("utf-8")],
        FAILURE,
    );
    assert!(stderr.contains("holds no PEM certificate"), "{stderr}");
}

#[test]
fn stat_refuses_a_malformed_resource_namespace_window_or_url() {
    for (args, says) in [
        (&["stat", "dep/api"][..], "unknown kind \"dep\""),
        (&["stat", "deploy/API"], "is not a Kubernetes name"),
        (&["stat-outbound", "po/a/b"], "is not a Kubernetes name"),
        (&["stat", "-n", "Shop"], "is not a namespace name"),
        (&["stat", "--window", "0s"], "a window is 1s to 24h"),
        (&["stat", "--window", "soon"], "--window"),
        (
            &["stat", "--prometheus", "https://p:9090"],
            "https is not supported",
        ),
        (&["stat", "--prometheus", "p:9090"], "not an http:// URL"),
        (&["stat", "-n", "a", "-A"], "cannot be used with"),
        (&["stat", "--max-pods", "0"], "--max-pods"),
    ] {
        let (_, stderr) = expect(args, USAGE);
        assert!(stderr.contains(says), "weftctl {args:?}: {stderr}");
    }
    // Well formed, but no source answers: a Prometheus that is not there is named.
    let (_, stderr) = expect(
        &[
            "stat",
            "--prometheus",
            "http://127.0.0.1:1",
            "--window",
            "1m",
        ],
        FAILURE,
    );
    assert!(stderr.contains("127.0.0.1:1"), "{stderr}");
    // The outbound view is a caller's: a Service is not one.
    let (_, stderr) = expect(
        &[
            "stat-outbound",
            "svc/api",
            "--prometheus",
            "http://127.0.0.1:1",
        ],
        FAILURE,
    );
    assert!(
        stderr.contains("give a workload, pod or namespace"),
        "{stderr}"
    );
}
