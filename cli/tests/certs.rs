//! `weftctl certs` as an operator runs it, in a scratch folder.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// A scratch folder removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("weftctl-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn weftctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weftctl"))
        .args(args)
        .output()
        .expect("run weftctl")
}

fn ok(args: &[&str]) -> String {
    let out = weftctl(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn anchor_then_issuer_in_the_control_planes_layout() {
    let dir = Scratch::new("layout");
    let d = dir.0.to_str().expect("utf-8 path");
    ok(&[
        "certs",
        "create-anchor",
        "--trust-domain",
        "prod.example",
        "--out",
        d,
    ]);
    assert_eq!(mode(&dir.0.join("anchor.key")), 0o600);
    assert_eq!(mode(&dir.0.join("anchor.crt")), 0o644);

    let issuer_dir = dir.0.join("issuer");
    let i = issuer_dir.to_str().expect("utf-8 path");
    let anchor_crt = format!("{d}/anchor.crt");
    let anchor_key = format!("{d}/anchor.key");
    ok(&[
        "certs",
        "create-issuer",
        "--trust-domain",
        "prod.example",
        "--anchor-cert",
        &anchor_crt,
        "--anchor-key",
        &anchor_key,
        "--out",
        i,
        "--lifetime",
        "30d",
    ]);
    assert_eq!(mode(&issuer_dir.join("issuer.key")), 0o600);
    assert_eq!(
        std::fs::read_to_string(issuer_dir.join("anchors.pem")).expect("anchors"),
        std::fs::read_to_string(dir.0.join("anchor.crt")).expect("anchor")
    );

    // The issuer it wrote loads back and signs for the trust domain.
    let issuer = weft_certs::Ca::from_pem(
        &std::fs::read_to_string(issuer_dir.join("issuer.crt")).expect("crt"),
        &std::fs::read_to_string(issuer_dir.join("issuer.key")).expect("key"),
    )
    .expect("issuer loads");
    let id = weft_certs::SpiffeId::new("prod.example", "shop", "orders").expect("id");
    let req = weft_certs::new_key_and_csr(&id).expect("csr");
    issuer
        .sign_csr(
            &req.csr_der,
            &id,
            std::time::Duration::from_secs(3600),
            time::OffsetDateTime::now_utc(),
        )
        .expect("signs");

    let shown = ok(&["certs", "inspect", &format!("{i}/issuer.crt")]);
    assert!(shown.contains("Weft issuer for prod.example"), "{shown}");
    assert!(shown.contains("ca:         yes"), "{shown}");
    assert!(
        shown.contains("Weft trust anchor for prod.example"),
        "issuer line: {shown}"
    );
}

#[test]
fn inspect_shows_a_workload_identity() {
    let dir = Scratch::new("inspect");
    let now = time::OffsetDateTime::now_utc();
    let day = std::time::Duration::from_secs(86_400);
    let anchor = weft_certs::Ca::new_anchor("cluster.local", day, now).expect("anchor");
    let issuer = anchor
        .new_issuer("cluster.local", day, now)
        .expect("issuer");
    let id = weft_certs::SpiffeId::new("cluster.local", "shop", "orders").expect("id");
    let req = weft_certs::new_key_and_csr(&id).expect("csr");
    let signed = issuer
        .sign_csr(&req.csr_der, &id, day, now)
        .expect("signed");
    let pem = signed.chain_pem();
    let file = dir.0.join("chain.pem");
    std::fs::write(&file, pem).expect("write chain");
    let shown = ok(&["certs", "inspect", file.to_str().expect("utf-8")]);
    assert!(
        shown.contains("spiffe id:  spiffe://cluster.local/ns/shop/sa/orders"),
        "{shown}"
    );
    assert!(
        shown.contains("certificate 1:"),
        "both certificates of the chain: {shown}"
    );
}

#[test]
fn refuses_to_overwrite_a_key_and_explains_bad_input() {
    let dir = Scratch::new("refuse");
    let d = dir.0.to_str().expect("utf-8 path");
    ok(&["certs", "create-anchor", "--out", d]);
    let again = weftctl(&["certs", "create-anchor", "--out", d]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("--force"),
        "{:?}",
        again
    );
    ok(&["certs", "create-anchor", "--out", d, "--force"]);

    let bad_td = weftctl(&[
        "certs",
        "create-anchor",
        "--out",
        d,
        "--force",
        "--trust-domain",
        "Bad_Domain!",
    ]);
    assert!(!bad_td.status.success());
    assert!(
        String::from_utf8_lossy(&bad_td.stderr).contains("trust domain"),
        "{:?}",
        bad_td
    );

    let missing = weftctl(&["certs", "inspect", &format!("{d}/nope.pem")]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope.pem"));
    let usage = weftctl(&["certs", "create-anchor", "--lifetime", "forever"]);
    assert_eq!(usage.status.code(), Some(64));
}
