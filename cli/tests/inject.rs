//! `weftctl inject` and `uninject` as a user runs them: files and stdin, many documents,
//! injecting twice changes nothing, uninject gives the original back, bad input fails with the
//! file and document named and nothing written.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

const MANIFEST: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      initContainers: [{name: migrate, image: 'web:1'}]
      containers: [{name: web, image: 'web:1', ports: [{name: http, containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {ports: [{port: 80, targetPort: http}]}
---
apiVersion: v1
kind: Pod
metadata: {name: host, namespace: shop}
spec:
  hostNetwork: true
  containers: [{name: agent, image: 'agent:1'}]
";

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("weftctl-inject-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn weftctl(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weftctl"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run weftctl");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        // A command that fails before it reads (a missing anchors file) closes its stdin.
        match input.write_all(text.as_bytes()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => other.expect("write stdin"),
        }
    }
    drop(input);
    child.wait_with_output().expect("weftctl ends")
}

fn ok(out: &Output) -> (String, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    (stdout, stderr)
}

fn anchors(dir: &Scratch) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_weftctl"))
        .args(["certs", "create-anchor", "--out"])
        .arg(&dir.0)
        .output()
        .expect("run weftctl certs");
    assert!(out.status.success(), "{out:?}");
    path(&dir.0.join("anchor.crt"))
}

fn path(p: &Path) -> String {
    p.to_str().expect("a UTF-8 path").to_string()
}

#[test]
fn inject_twice_changes_nothing_and_uninject_gives_the_original_back() {
    let dir = Scratch::new("roundtrip");
    let anchors = anchors(&dir);
    let file = path(&dir.write("app.yaml", MANIFEST));
    let (once, report) = ok(&weftctl(
        &["inject", "--trust-anchors", &anchors, &file],
        None,
    ));
    assert!(report.contains("Deployment/web injected"), "{report}");
    assert!(
        report.contains("Pod/host skipped: it uses the host's network"),
        "{report}"
    );
    let docs: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(&once)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML"))
        .collect();
    assert_eq!(docs.len(), 3, "every document, in order");
    let inits = &docs[0]["spec"]["template"]["spec"]["initContainers"];
    let names: Vec<_> = inits
        .as_array()
        .expect("init containers")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, ["weft-init", "weft-proxy", "migrate"]);
    let env = inits[1]["env"].as_array().expect("env");
    let pem = env
        .iter()
        .find(|e| e["name"] == "WEFT_TRUST_ANCHORS_PEM")
        .and_then(|e| e["value"].as_str())
        .expect("the anchors");
    assert!(pem.contains("BEGIN CERTIFICATE"));
    assert_eq!(docs[1]["kind"], "Service");

    // Through a pipe, a second time: nothing changes.
    let (twice, report) = ok(&weftctl(
        &["inject", "--trust-anchors", &anchors],
        Some(&once),
    ));
    assert_eq!(twice, once);
    assert!(report.contains("Deployment/web skipped: it is injected already"));

    let (back, _) = ok(&weftctl(&["uninject", "-"], Some(&once)));
    let original: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(MANIFEST)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML"))
        .collect();
    let restored: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(&back)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML"))
        .collect();
    assert_eq!(restored, original);
}

#[test]
fn bad_input_names_the_file_and_document_and_writes_nothing() {
    let dir = Scratch::new("bad");
    let anchors = anchors(&dir);
    let bad = path(&dir.write(
        "bad.yaml",
        "kind: Pod\nmetadata: {name: ok}\nspec: {containers: []}\n---\nkind: Deployment\nmetadata: {name: web}\nspec: {template: {spec: {containers: 7}}}\n",
    ));
    let out = weftctl(&["inject", "--trust-anchors", &anchors, &bad], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "nothing written");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.yaml: document 2") && stderr.contains("Deployment web"),
        "{stderr}"
    );
    let out = weftctl(
        &["inject", "--trust-anchors", &path(&dir.0.join("none.pem"))],
        Some(MANIFEST),
    );
    assert_eq!(out.status.code(), Some(1));
    let no_pem = path(&dir.write("empty.pem", "not a certificate\n"));
    let out = weftctl(&["inject", "--trust-anchors", &no_pem], Some(MANIFEST));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no PEM certificate"));
}
