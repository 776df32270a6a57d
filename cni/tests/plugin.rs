//! `weft-cni` as a container runtime runs it: the real binary, CNI 1.0 environment and config on
//! stdin, a real network namespace, real `iptables-restore` on both the nft and the legacy
//! backend. Root-only; without root each test prints `SKIPPED:` and passes, unless
//! `WEFT_REQUIRE_NETNS_TESTS=1`.
//!
//! What the tests prove:
//! - ADD on a meshed pod passes `prevResult` through and installs exactly the rule set; ADD twice
//!   changes nothing; CHECK passes, and fails with code 100 naming the difference once a rule is
//!   gone; DEL removes the rules, and DEL again, or on a namespace that is gone, succeeds;
//! - an unmeshed pod gets no rules, and its result still passes through; CHECK fails if it
//!   holds some;
//! - a malformed config, a missing or relative netns path, a config without prevResult, and a
//!   bad pod annotation each get a CNI error (JSON on stdout, the spec's code, non-zero exit),
//!   never a panic, and leave no rule behind; the exit status is 64 when the input was wrong
//!   (config, environment) and 1 when the work failed (namespace, iptables, API server);
//! - Kubernetes mode reads the pod's annotations from the API server named by the kubeconfig,
//!   and a pod the API does not know is an error (the API server is `weft_testkit::kube`);
//! - the plugin logs to the file its config names.

mod support;

use std::path::Path;

use serde_json::{json, Value};
use support::{can_run, run, text, Netns, BACKENDS};
use weft_testkit::kube::{write_kubeconfig, FakeKube, Kind};

const PLUGIN: &str = env!("CARGO_BIN_EXE_weft-cni");

fn prev_result() -> Value {
    json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "mac": "0a:58:c6:12:00:05", "sandbox": "/run/netns/x"}],
        "ips": [{"address": "198.18.0.5/24", "gateway": "198.18.0.1", "interface": 0}]
    })
}

fn conf(backend: &str, log: &Path, annotations: &[(&str, &str)]) -> Value {
    let annotations: Vec<Value> = annotations
        .iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect();
    json!({
        "cniVersion": "1.0.0",
        "name": "weft-test",
        "type": "weft-cni",
        "logFile": log,
        "logLevel": "debug",
        "iptablesBackend": backend,
        "redirect": {"skipOutboundCidrs": "10.96.0.0/12"},
        "args": {"cni": {"annotations": annotations}},
        "prevResult": prev_result(),
    })
}

fn cni(command: &str, netns: &str, conf: &Value) -> (bool, String) {
    let (exit, out) = cni_exit(command, netns, conf);
    (exit == Some(0), out)
}

/// The plugin's exit status and stdout.
fn cni_exit(command: &str, netns: &str, conf: &Value) -> (Option<i32>, String) {
    let out = run(
        PLUGIN,
        &[],
        &[
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", "c0ffee"),
            ("CNI_NETNS", netns),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web",
            ),
            ("CNI_PATH", "/usr/lib/cni"),
        ],
        conf.to_string().as_bytes(),
    );
    (out.status.code(), text(&out.stdout))
}

fn error_code(stdout: &str) -> u64 {
    let v: Value =
        serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout:?}"));
    assert!(v["msg"].is_string(), "{v}");
    v["code"].as_u64().unwrap_or_else(|| panic!("no code: {v}"))
}

fn has_weft(ns: &Netns, backend: &str) -> bool {
    ns.nat(backend, false).contains("WEFT_") || ns.nat(backend, true).contains("WEFT_")
}

#[test]
fn add_twice_check_del_on_both_backends() {
    if !can_run("add_twice_check_del_on_both_backends") {
        return;
    }
    for backend in BACKENDS {
        let ns = Netns::new(&format!("add-{backend}"));
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("weft-cni.log");
        let conf = conf(
            backend,
            &log,
            &[
                ("weft.dev/injected", "0.1.0"),
                ("weft.dev/skip-inbound-ports", "22"),
            ],
        );
        let netns = ns.path().display().to_string();

        let (ok, out) = cni("ADD", &netns, &conf);
        assert!(ok, "{backend}: ADD failed: {out}");
        let result: Value = serde_json::from_str(&out).expect("the result is JSON");
        assert_eq!(
            result,
            prev_result(),
            "{backend}: prevResult passes through"
        );
        let v4 = ns.nat(backend, false);
        let v6 = ns.nat(backend, true);
        assert!(v4.contains("-A OUTPUT -p tcp -m comment --comment \"weft: outbound TCP goes through the Weft proxy\" -j WEFT_OUTPUT"), "{v4}");
        assert!(v4.contains("--dports 22 "), "skip annotation applied: {v4}");
        assert!(
            v4.contains("-d 10.96.0.0/12 "),
            "the config's skip CIDR: {v4}"
        );
        assert!(
            v6.contains("-d ::1/128 -p tcp -m tcp --dport 15141"),
            "{v6}"
        );

        let (ok, out) = cni("ADD", &netns, &conf);
        assert!(ok, "{backend}: second ADD failed: {out}");
        assert_eq!(
            ns.nat(backend, false),
            v4,
            "{backend}: ADD twice changes nothing"
        );
        assert_eq!(ns.nat(backend, true), v6);

        let (ok, out) = cni("CHECK", &netns, &conf);
        assert!(ok && out.is_empty(), "{backend}: CHECK: {out}");

        let flush = ns.exec(&[
            &format!("iptables-{backend}"),
            "-t",
            "nat",
            "-D",
            "WEFT_OUTPUT",
            "1",
        ]);
        assert!(flush.status.success(), "{}", text(&flush.stderr));
        let (exit, out) = cni_exit("CHECK", &netns, &conf);
        assert_eq!(exit, Some(1), "{backend}: CHECK with a rule gone: {out}");
        assert_eq!(error_code(&out), 100, "{out}");
        assert!(
            out.contains("WEFT_OUTPUT"),
            "the difference is named: {out}"
        );

        let (ok, out) = cni("DEL", &netns, &conf);
        assert!(ok && out.is_empty(), "{backend}: DEL: {out}");
        assert!(!has_weft(&ns, backend), "{backend}: DEL left rules");
        let (ok, out) = cni("DEL", &netns, &conf);
        assert!(ok && out.is_empty(), "{backend}: DEL twice: {out}");

        let log = std::fs::read_to_string(&log).expect("the plugin wrote its log file");
        assert!(log.contains("redirect rules installed"), "{log}");
        assert!(log.contains("redirect rules removed"), "{log}");
    }
}

#[test]
fn unmeshed_pods_get_no_rules() {
    if !can_run("unmeshed_pods_get_no_rules") {
        return;
    }
    let ns = Netns::new("unmeshed");
    let dir = tempfile::tempdir().expect("tempdir");
    let netns = ns.path().display().to_string();
    for annotations in [
        &[][..],
        &[
            ("weft.dev/injected", "0.1.0"),
            ("weft.dev/inject", "disabled"),
        ][..],
    ] {
        let conf = conf("nft", &dir.path().join("log"), annotations);
        let (ok, out) = cni("ADD", &netns, &conf);
        assert!(ok, "ADD: {out}");
        assert_eq!(
            serde_json::from_str::<Value>(&out).expect("JSON"),
            prev_result()
        );
        assert!(
            !has_weft(&ns, "nft"),
            "{annotations:?}: rules installed in an unmeshed pod"
        );
        let (ok, out) = cni("CHECK", &netns, &conf);
        assert!(ok, "CHECK: {out}");
    }
    // Rules in a pod that should have none: CHECK says so.
    let init = ns.exec(&[env!("CARGO_BIN_EXE_weft-init"), "--iptables-backend", "nft"]);
    assert!(init.status.success(), "{}", text(&init.stderr));
    let (exit, out) = cni_exit("CHECK", &netns, &conf("nft", &dir.path().join("log"), &[]));
    assert_eq!(
        exit,
        Some(1),
        "CHECK of an unmeshed pod holding rules: {out}"
    );
    assert_eq!(error_code(&out), 100, "{out}");
    assert!(out.contains("not meshed but holds"), "{out}");
}

#[test]
fn bad_input_gets_a_cni_error_and_no_rules() {
    if !can_run("bad_input_gets_a_cni_error_and_no_rules") {
        return;
    }
    let ns = Netns::new("badinput");
    let dir = tempfile::tempdir().expect("tempdir");
    let netns = ns.path().display().to_string();
    let meshed = conf(
        "nft",
        &dir.path().join("log"),
        &[("weft.dev/injected", "0.1.0")],
    );

    // Malformed JSON, cut short.
    let out = run(
        PLUGIN,
        &[],
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_NETNS", &netns),
            ("CNI_CONTAINERID", "c"),
        ],
        b"{\"cniVersion\": \"1.0",
    );
    assert_eq!(
        out.status.code(),
        Some(64),
        "a config cut short is bad usage"
    );
    assert_eq!(error_code(&text(&out.stdout)), 6, "decode failure");

    // What the runtime got wrong exits 64; what failed while working on a sound request, 1.
    let cases: [(&str, Value, &str, u64, i32); 6] = [
        (
            "a namespace that does not exist",
            meshed.clone(),
            "/run/netns/weft-no-such-namespace",
            3,
            1,
        ),
        (
            "a relative namespace path",
            meshed.clone(),
            "run/netns/x",
            4,
            64,
        ),
        (
            "a path that is not a namespace",
            meshed.clone(),
            "/etc/hostname",
            3,
            1,
        ),
        (
            "no prevResult",
            {
                let mut c = meshed.clone();
                c.as_object_mut().expect("object").remove("prevResult");
                c
            },
            &netns,
            7,
            64,
        ),
        (
            "a skip list with an empty item in the network config",
            {
                let mut c = meshed.clone();
                c["redirect"]["skipOutboundPorts"] = json!("25,,587");
                c
            },
            &netns,
            7,
            64,
        ),
        (
            "a bad annotation",
            conf(
                "nft",
                &dir.path().join("log"),
                &[
                    ("weft.dev/injected", "0.1.0"),
                    ("weft.dev/skip-outbound-ports", "80,http"),
                ],
            ),
            &netns,
            7,
            64,
        ),
    ];
    for (what, conf, path, code, exit) in cases {
        let (status, out) = cni_exit("ADD", path, &conf);
        assert_eq!(status, Some(exit), "{what}: {out}");
        assert_eq!(error_code(&out), code, "{what}: {out}");
    }
    assert!(!has_weft(&ns, "nft"), "a refused ADD left rules behind");

    // An unknown command and a missing one.
    let out = run(
        PLUGIN,
        &[],
        &[("CNI_COMMAND", "GC")],
        meshed.to_string().as_bytes(),
    );
    assert_eq!(error_code(&text(&out.stdout)), 4);
    assert_eq!(out.status.code(), Some(64));
    let out = run(PLUGIN, &[], &[], b"");
    assert_eq!(error_code(&text(&out.stdout)), 4);
    assert_eq!(out.status.code(), Some(64));

    // DEL on a namespace that is gone succeeds, as the spec asks.
    let (ok, out) = cni("DEL", "/run/netns/weft-no-such-namespace", &meshed);
    assert!(ok && out.is_empty(), "DEL: {out}");
}

#[test]
fn version_names_the_supported_versions() {
    // No root needed: VERSION touches nothing.
    let out = run(
        PLUGIN,
        &[],
        &[("CNI_COMMAND", "VERSION")],
        br#"{"cniVersion": "1.0.0"}"#,
    );
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["cniVersion"], "1.0.0");
    assert_eq!(
        v["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0"])
    );
}

#[test]
fn kubernetes_mode_reads_the_pod_from_the_api() {
    if !can_run("kubernetes_mode_reads_the_pod_from_the_api") {
        return;
    }
    let api = FakeKube::builder()
        .object(
            Kind::Pod,
            json!({
                "metadata": {"name": "web", "namespace": "shop", "annotations": {"weft.dev/skip-outbound-ports": "5432"}},
                "spec": {"containers": [{"name": "app", "image": "app"}, {"name": "weft-proxy", "image": "weft"}]}
            }),
        )
        .start();
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = write_kubeconfig(
        &dir.path().join("kubeconfig"),
        &api.url(),
        Some("test-token"),
    );
    let ns = Netns::new("kube");
    let netns = ns.path().display().to_string();
    let mut conf = conf("nft", &dir.path().join("log"), &[]);
    conf["kubeconfig"] = json!(kubeconfig);

    let (ok, out) = cni("ADD", &netns, &conf);
    assert!(ok, "ADD: {out}");
    let v4 = ns.nat("nft", false);
    assert!(
        v4.contains("-m multiport --dports 5432 "),
        "the API's annotation applied: {v4}"
    );

    // A pod the API server does not know.
    let run_for = |pod: &str| {
        let args = format!("K8S_POD_NAMESPACE=shop;K8S_POD_NAME={pod}");
        run(
            PLUGIN,
            &[],
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "c"),
                ("CNI_NETNS", netns.as_str()),
                ("CNI_ARGS", args.as_str()),
            ],
            conf.to_string().as_bytes(),
        )
    };
    let out = run_for("gone");
    assert_eq!(
        out.status.code(),
        Some(1),
        "the API's answer is no usage error"
    );
    let stdout = text(&out.stdout);
    assert_eq!(error_code(&stdout), 102, "{stdout}");
    assert!(stdout.contains("shop/gone"), "{stdout}");
    let gets: Vec<_> = api.gets(Kind::Pod).into_iter().map(|r| r.path).collect();
    assert_eq!(
        gets,
        [
            "/api/v1/namespaces/shop/pods/web",
            "/api/v1/namespaces/shop/pods/gone"
        ]
    );
    assert!(
        api.requests()
            .iter()
            .all(|r| r.authorization.as_deref() == Some("Bearer test-token")),
        "the kubeconfig's token was sent: {:?}",
        api.requests()
    );
    api.assert_no_problems();
}

#[test]
fn an_api_server_that_does_not_answer_means_try_again_later() {
    if !can_run("an_api_server_that_does_not_answer_means_try_again_later") {
        return;
    }
    // An API server that closes every connection unanswered.
    let api = FakeKube::start();
    api.set_down(true);
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = api.kubeconfig(dir.path());
    let ns = Netns::new("kubedown");
    let mut conf = conf("nft", &dir.path().join("log"), &[]);
    conf["kubeconfig"] = json!(kubeconfig);
    let (exit, out) = cni_exit("ADD", &ns.path().display().to_string(), &conf);
    assert_eq!(exit, Some(1), "ADD without an API server: {out}");
    assert_eq!(error_code(&out), 11, "{out}");
    assert!(!has_weft(&ns, "nft"));
    assert!(
        api.refused_connections() >= 1,
        "the plugin asked the API server"
    );
}
