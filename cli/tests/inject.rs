//! `weftctl inject` and `uninject` as a user runs them: files and stdin, many documents,
//! injecting twice changes nothing, uninject gives the original back, bad input fails with the
//! file and document named and nothing written; and on the injector's golden cases, the pod
//! the webhook makes.

use std::{
    collections::BTreeMap,
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

/// The injector's golden AdmissionReviews (`injector-webhook/core/tests/golden`, whose test
/// compares the webhook's answers with them): the real `weftctl inject`, given each case's pod
/// as YAML, writes the webhook's pod (`pod.json`), leaves alone what the webhook leaves alone,
/// and refuses what the webhook denies, naming the annotation.
/// A golden case's pod and what the webhook made of it.
struct Golden {
    name: String,
    object: serde_json::Value,
    expected: Expected,
}

enum Expected {
    Injected(serde_json::Value),
    Unchanged,
    Denied(String),
}

#[test]
fn weftctl_inject_gives_the_golden_pods_of_the_webhook() {
    let golden =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../injector-webhook/core/tests/golden");
    let json = |p: &Path| -> serde_json::Value {
        let text = std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
        serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    let injector = json(&golden.join("injector.json"));
    let setting = |key: &str| {
        injector[key]
            .as_str()
            .unwrap_or_else(|| panic!("injector.json: no {key}"))
            .to_string()
    };
    let mut names: Vec<_> = std::fs::read_dir(&golden)
        .expect("the golden cases")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.is_dir())
        .collect();
    names.sort();
    // By the injector's mode: (cni, native sidecars).
    let mut modes: BTreeMap<(bool, bool), Vec<Golden>> = BTreeMap::new();
    for dir in names {
        let name = dir
            .file_name()
            .expect("a name")
            .to_string_lossy()
            .into_owned();
        let case = json(&dir.join("case.json"));
        let object = json(&dir.join("review.json"))["request"]["object"].take();
        let response = json(&dir.join("response.json"))["response"].take();
        // Offline, `weftctl inject` knows no namespace: the command is the opt-in, and the
        // namespace's annotations are not read.
        let namespace = &case["namespace"];
        let opted_in = namespace["labels"]["weft.dev/inject"] == "enabled"
            || object["metadata"]["annotations"]["weft.dev/inject"].is_string();
        if namespace["annotations"]
            .as_object()
            .is_some_and(|a| !a.is_empty())
            || !opted_in
        {
            println!("{name}: not compared: weftctl inject does not know the namespace");
            continue;
        }
        let pod = dir.join("pod.json");
        let expected = if pod.exists() {
            Expected::Injected(json(&pod))
        } else if response["allowed"] == true {
            Expected::Unchanged
        } else {
            let message = response["status"]["message"].as_str().expect("why denied");
            let reason = message
                .strip_prefix("weft: the pod cannot be meshed: ")
                .unwrap_or_else(|| panic!("{name}: {message}"));
            Expected::Denied(reason.to_string())
        };
        let mode = &case["injector"];
        let key = (
            mode["cni"].as_bool().expect("cni"),
            mode["nativeSidecars"].as_bool().expect("nativeSidecars"),
        );
        modes.entry(key).or_default().push(Golden {
            name,
            object,
            expected,
        });
    }
    let dir = Scratch::new("golden");
    let anchors = path(&golden.join("anchors.pem"));
    let (proxy, init, control_plane, weft_namespace) = (
        setting("proxyImage"),
        setting("initImage"),
        setting("controlPlane"),
        setting("weftNamespace"),
    );
    let yaml = |doc: &serde_json::Value| serde_yaml::to_string(doc).expect("YAML");
    let mut compared = 0;
    for ((cni, native), cases) in modes {
        let run = |file: &str| {
            let mut args = vec![
                "inject",
                "--trust-anchors",
                &anchors,
                "--proxy-image",
                &proxy,
                "--init-image",
                &init,
                "--control-plane",
                &control_plane,
                "--weft-namespace",
                &weft_namespace,
            ];
            args.extend(cni.then_some("--cni"));
            args.extend((!native).then_some("--classic-sidecar"));
            args.push(file);
            weftctl(&args, None)
        };
        // Every pod of the mode in one run, as documents of one file; a denied one alone, as
        // its error stops the run.
        let (denied, cases): (Vec<_>, Vec<_>) = cases
            .into_iter()
            .partition(|case| matches!(case.expected, Expected::Denied(_)));
        for Golden {
            name,
            object,
            expected,
        } in denied
        {
            let Expected::Denied(reason) = expected else {
                unreachable!()
            };
            let file = path(&dir.write(&format!("{name}.yaml"), &yaml(&object)));
            let out = run(&file);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
            assert!(stderr.contains(&reason), "{name}: {stderr}");
            compared += 1;
        }
        let text: Vec<String> = cases.iter().map(|case| yaml(&case.object)).collect();
        let file = path(&dir.write(&format!("mode-{cni}-{native}.yaml"), &text.join("---\n")));
        let (stdout, report) = ok(&run(&file));
        let docs: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(&stdout)
            .map(|d| serde::Deserialize::deserialize(d).expect("YAML"))
            .collect();
        let report: Vec<&str> = report.lines().collect();
        assert_eq!(docs.len(), cases.len(), "{stdout}");
        assert_eq!(report.len(), cases.len(), "{report:?}");
        for ((case, mut doc), line) in cases.into_iter().zip(docs).zip(report) {
            let name = case.name;
            match case.expected {
                Expected::Injected(pod) => {
                    assert!(line.ends_with(" injected"), "{name}: {line}");
                    // weftctl writes its own version; the golden files pin theirs.
                    let version = &mut doc["metadata"]["annotations"]["weft.dev/injected"];
                    assert_eq!(*version, env!("CARGO_PKG_VERSION"), "{name}");
                    *version = injector["version"].clone();
                    assert!(doc == pod, "{name}: {}", first_difference(&pod, &doc));
                }
                Expected::Unchanged => {
                    assert!(line.contains(" skipped: "), "{name}: {line}");
                    assert!(
                        doc == case.object,
                        "{name}: {}",
                        first_difference(&case.object, &doc)
                    );
                }
                Expected::Denied(_) => unreachable!(),
            }
            compared += 1;
        }
    }
    assert!(compared >= 12, "only {compared} cases compared");
}

/// Where two documents' JSON first differs, a few lines of each around it.
fn first_difference(expected: &serde_json::Value, actual: &serde_json::Value) -> String {
    let pretty = |v| serde_json::to_string_pretty(v).expect("JSON");
    let (expected, actual) = (pretty(expected), pretty(actual));
    let (expected, actual): (Vec<_>, Vec<_>) =
        (expected.lines().collect(), actual.lines().collect());
    let at = expected
        .iter()
        .zip(&actual)
        .position(|(e, a)| e != a)
        .unwrap_or(expected.len().min(actual.len()));
    let around = |lines: &[&str]| lines[at.saturating_sub(3)..(at + 3).min(lines.len())].join("\n");
    format!(
        "line {}: expected\n{}\nweftctl wrote\n{}",
        at + 1,
        around(&expected),
        around(&actual)
    )
}
