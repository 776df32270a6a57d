//! `weft-init`, the init-container mode: `--dry-run` prints the golden rules without root; as
//! root, in a private network namespace on both backends, it installs, checks, re-applies
//! without change and removes (twice) the rule set. Bad flags and variables exit 64 with a
//! message; rules not in place exit 1.

mod support;

use support::{can_run, run, text, Netns, BACKENDS};

const INIT: &str = env!("CARGO_BIN_EXE_weft-init");

#[test]
fn dry_run_prints_the_golden_rules() {
    let out = run(INIT, &["--dry-run", "--ipv6", "on"], &[], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let golden = |name: &str| {
        std::fs::read_to_string(format!(
            "{}/core/tests/golden/{name}.rules",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("golden file")
    };
    let want = format!(
        "# IPv4: iptables-restore --noflush\n{}# IPv6: ip6tables-restore --noflush\n{}",
        golden("default-v4"),
        golden("default-v6")
    );
    assert_eq!(text(&out.stdout), want);
}

#[test]
fn bad_flags_are_refused_with_a_reason() {
    let out = run(
        INIT,
        &["--dry-run", "--skip-inbound-ports", "22,x"],
        &[],
        b"",
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out.stderr).contains("\"x\" is not a port"),
        "{}",
        text(&out.stderr)
    );
    // The same parser as the annotations: an empty item is refused, and named.
    let out = run(
        INIT,
        &["--dry-run"],
        &[("WEFT_SKIP_OUTBOUND_PORTS", "25,,587")],
        b"",
    );
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("item 2 of the list is empty"),
        "{}",
        text(&out.stderr)
    );
    for argv in [
        &["--dry-run", "--skip-outbound-cidrs", "10.0.0.0/33"][..],
        &["--dry-run", "--no-such-flag"],
        &["--dry-run", "--inbound-port", "70000"],
        &["--dry-run", "--remove"],
    ] {
        let out = run(INIT, argv, &[], b"");
        assert_eq!(
            out.status.code(),
            Some(64),
            "{argv:?}: {}",
            text(&out.stderr)
        );
        assert!(!text(&out.stderr).is_empty(), "{argv:?}: no message");
    }
    let out = run(INIT, &["--help"], &[], b"");
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("--skip-outbound-cidrs"));
    let out = run(INIT, &["--dry-run", "--proxy-uid", "0"], &[], b"");
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out.stderr).contains("must not run as root"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn install_check_reapply_remove_on_both_backends() {
    if !can_run("install_check_reapply_remove_on_both_backends") {
        return;
    }
    for backend in BACKENDS {
        let ns = Netns::new(&format!("init-{backend}"));
        let init = |extra: &[&str]| {
            let mut argv = vec![
                INIT,
                "--iptables-backend",
                backend,
                "--skip-outbound-ports",
                "5432",
            ];
            argv.extend_from_slice(extra);
            ns.exec(&argv)
        };
        let out = init(&[]);
        assert!(out.status.success(), "{backend}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains(&format!(
            "installed the Weft rules ({backend}, IPv4 and IPv6)"
        )));
        let v4 = ns.nat(backend, false);
        let v6 = ns.nat(backend, true);
        assert!(v4.contains(":WEFT_OUTPUT - [0:0]") && v6.contains(":WEFT_OUTPUT - [0:0]"));

        let out = init(&["--check"]);
        assert!(
            out.status.success(),
            "{backend}: check: {}",
            text(&out.stderr)
        );
        let out = init(&[]);
        assert!(out.status.success());
        assert_eq!(
            ns.nat(backend, false),
            v4,
            "{backend}: applying twice changes nothing"
        );
        assert_eq!(ns.nat(backend, true), v6);

        // The same namespace, other flags: the new set replaces the old one.
        let out = ns.exec(&[INIT, "--iptables-backend", backend]);
        assert!(out.status.success());
        assert!(
            !ns.nat(backend, false).contains("5432"),
            "the old skip rule is gone"
        );
        let out = init(&["--check"]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{backend}: check against other flags"
        );
        assert!(
            text(&out.stderr).contains("not in place"),
            "{}",
            text(&out.stderr)
        );

        for _ in 0..2 {
            let out = init(&["--remove"]);
            assert!(
                out.status.success(),
                "{backend}: remove: {}",
                text(&out.stderr)
            );
        }
        assert!(
            !ns.nat(backend, false).contains("WEFT"),
            "{backend}: rules left after --remove"
        );
        assert!(!ns.nat(backend, true).contains("WEFT"));
    }
}

#[test]
fn auto_uses_the_backend_that_already_holds_rules() {
    if !can_run("auto_uses_the_backend_that_already_holds_rules") {
        return;
    }
    for backend in BACKENDS {
        let ns = Netns::new(&format!("auto-{backend}"));
        // Someone else's rule (the kubelet's, say) written through this backend.
        let tool = format!("iptables-{backend}");
        let out = ns.exec(&[
            &tool, "-t", "filter", "-A", "INPUT", "-p", "udp", "--dport", "9", "-j", "ACCEPT",
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let out = ns.exec(&[INIT, "--ipv6", "off"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains(&format!("installed the Weft rules ({backend}, IPv4)")),
            "{}",
            text(&out.stdout)
        );
        assert!(ns.nat(backend, false).contains("WEFT_OUTPUT"));
        let other = if backend == "nft" { "legacy" } else { "nft" };
        assert!(
            !ns.nat(other, false).contains("WEFT"),
            "rules written through the other backend too"
        );
    }
}
