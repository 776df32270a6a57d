//! `weft-control-plane`'s exit codes: 0 for `--help` and `--version`, 64 for bad usage or
//! configuration (flags, the issuer directory, the tokens file, the config source), 1 for a
//! failure at run time. The real binary, each run bounded in time.

#[macro_use]
mod support;

use std::{
    io::Read,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use support::Pki;

/// How the process ended: its exit code, stdout and stderr.
struct Exit {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// The flags of a control plane that starts, for `pki`, on port-0 loopback addresses; with
/// `args` after them, each flag of `args` replacing the default one of the same name.
fn flags(pki: &Pki, args: &[&str]) -> Vec<String> {
    let defaults = [
        ("--issuer", pki.issuer_dir().display().to_string()),
        ("--tokens", pki.tokens_path().display().to_string()),
        ("--grpc-addr", "127.0.0.1:0".to_string()),
        ("--admin-addr", "127.0.0.1:0".to_string()),
    ];
    let mut v: Vec<String> = Vec::new();
    for (flag, value) in defaults {
        if !args.contains(&flag) {
            v.extend([flag.to_string(), value]);
        }
    }
    v.extend(args.iter().map(|a| a.to_string()));
    v
}

/// Runs the binary with exactly `args` and `env`, and waits at most 10 s for it to exit.
fn run(args: &[String], env: &[(&str, &Path)]) -> Exit {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft-control-plane"));
    cmd.env_clear();
    cmd.args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn weft-control-plane");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("weft-control-plane {args:?} still running after 10s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut stdout).expect("stdout");
    }
    if let Some(mut err) = child.stderr.take() {
        err.read_to_string(&mut stderr).expect("stderr");
    }
    Exit {
        code: status.code(),
        stdout,
        stderr,
    }
}

#[test]
fn help_and_version_exit_zero() {
    let help = run(&["--help".into()], &[]);
    assert_eq!(help.code, Some(0), "{}", help.stderr);
    assert!(help.stdout.contains("--issuer"), "{}", help.stdout);
    let version = run(&["--version".into()], &[]);
    assert_eq!(version.code, Some(0), "{}", version.stderr);
    assert!(
        version.stdout.contains(env!("CARGO_PKG_VERSION")),
        "{}",
        version.stdout
    );
}

#[test]
fn bad_usage_exits_64() {
    let pki = Pki::new(1);
    let missing_issuer = run(&[], &[]);
    assert_eq!(missing_issuer.code, Some(64), "{}", missing_issuer.stderr);
    assert!(
        missing_issuer.stderr.contains("--issuer"),
        "{}",
        missing_issuer.stderr
    );
    for (args, says) in [
        (&["--no-such-flag"][..], "--no-such-flag"),
        (&["--source", "bogus"], "expected kubernetes or local:DIR"),
        (&["--source", "local:"], "expected kubernetes or local:DIR"),
        (&["--grpc-addr", "not-an-address"], "--grpc-addr"),
        (&["--cert-lifetime", "forever"], "--cert-lifetime"),
    ] {
        let exit = run(&flags(&pki, args), &[]);
        assert_eq!(exit.code, Some(64), "{args:?}: {}", exit.stderr);
        assert!(exit.stderr.contains(says), "{args:?}: {}", exit.stderr);
    }
}

#[test]
fn bad_configuration_exits_64_naming_what_to_check() {
    let pki = Pki::new(1);
    let empty = pki.path("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let bad_tokens = pki.path("bad-tokens");
    std::fs::write(&bad_tokens, "only-a-token\n").expect("write");
    let empty_dir = empty.display().to_string();
    let bad_tokens = bad_tokens.display().to_string();
    let missing_folder = format!("local:{}", pki.path("no-such-folder").display());
    for (args, says) in [
        (&["--issuer", &empty_dir][..], "--issuer"),
        (&["--tokens", &bad_tokens], "--tokens"),
        (&["--source", &missing_folder], "--source local:"),
        (&["--log-format", "xml"], "--log-format"),
        (&["--log", "shop=loudest"], "--log"),
        (&["--namespace", "Not_A_Namespace"], "own identity"),
    ] {
        let exit = run(&flags(&pki, args), &[]);
        assert_eq!(exit.code, Some(64), "{args:?}: {}", exit.stderr);
        assert!(exit.stderr.contains(says), "{args:?}: {}", exit.stderr);
    }

    // No --tokens and no usable Kubernetes config: TokenReview cannot work.
    let mut no_tokens = flags(&pki, &[]);
    let at = no_tokens
        .iter()
        .position(|f| f == "--tokens")
        .expect("--tokens");
    no_tokens.drain(at..at + 2);
    let exit = run(
        &no_tokens,
        &[("KUBECONFIG", &pki.path("no-such-kubeconfig"))],
    );
    assert_eq!(exit.code, Some(64), "{}", exit.stderr);
    assert!(
        exit.stderr.contains("Kubernetes API config"),
        "{}",
        exit.stderr
    );
}

#[test]
fn a_failure_at_run_time_exits_1() {
    let pki = Pki::new(1);
    // The gRPC address is taken (by this test, on loopback): a run-time failure, not the
    // operator's configuration.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let exit = run(&flags(&pki, &["--grpc-addr", &addr]), &[]);
    assert_eq!(exit.code, Some(1), "{}", exit.stderr);
    assert!(
        exit.stderr
            .contains(&format!("binding the gRPC address {addr}")),
        "{}",
        exit.stderr
    );
}
