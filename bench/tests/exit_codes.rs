//! `weft-bench` exits as every Weft binary does: 0 for `--help`, 64 for a command line it
//! refuses.

use std::process::Command;

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_weft-bench"))
        .args(args)
        .output()
        .expect("run weft-bench")
}

#[test]
fn bad_usage_exits_64_and_help_exits_0() {
    for args in [&["--no-such-flag"][..], &["run", "--reps", "many"], &[]] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?}: says why");
    }
    let help = run(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("Usage"));
}
