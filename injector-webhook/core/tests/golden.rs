//! Golden AdmissionReviews (issue 17, "Tests that prove it"): every folder of `tests/golden/` is
//! one pod as the API server sends it to the webhook, and what the injector must answer.
//!
//! A case's files:
//! - `review.json`: the AdmissionReview, as the API server writes it (a ReplicaSet's pod has a
//!   `generateName` and no name yet: the name is made after admission);
//! - `case.json`: what the injector knows besides the review: the namespace's labels and
//!   annotations (the webhook reads them from the API server), the injector's mode (`cni`,
//!   `nativeSidecars`), and `about`, what the case shows;
//! - `response.json`: the expected AdmissionReview answer, its `patch` left out;
//! - `pod.json`: the expected pod, the answer's JSON Patch applied to the review's object; no
//!   such file when the answer has no patch.
//!
//! Shared by every case: `injector.json` (the version, images, control plane and Weft's
//! namespace the injector runs with; the rest are `Config::new`'s defaults, the chart's) and
//! `anchors.pem` (a trust anchor made by `weftctl certs create-anchor`, its key thrown away).
//! `cli/tests/inject.rs` reads the same files to run the real `weftctl inject` on each pod.
//!
//! `WEFT_BLESS=1 cargo test -p weft-injector-core --test golden` writes `response.json` and
//! `pod.json` from what the code does now, and names the files it changed: read the diff.
//!
//! The webhook's side is `review::Request`, the function the `weft-injector` binary calls with
//! the bytes it was sent. The binary itself is not run here: it learns namespaces only from an
//! API server (a kube-rs reflector), and the k8s tier runs it against a real one.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use base64::{prelude::BASE64_STANDARD, Engine as _};
use serde::Deserialize;
use serde_json::Value;
use weft_injector_core::{
    inject::Config,
    manifest,
    review::{Namespace, Outcome, Request, Settings},
    Skip,
};

/// The cases: a folder of `tests/golden/` each. A folder not named here, or a name without a
/// folder, fails the test.
const CASES: [&str; 17] = [
    "already-injected",
    "classic-sidecar",
    "cni",
    "host-network",
    "job-classic-sidecars",
    "job-native-sidecars",
    "kube-system",
    "limits-below-requests",
    "named-ports",
    "namespace-strict-mtls",
    "opted-out",
    "own-init-containers",
    "plain",
    "pod-opt-in",
    "proxy-annotations",
    "refused-annotation",
    "service-account",
];

/// The Kubernetes version the pods are validated for: the cluster's (the k8s tier's).
const KUBERNETES_VERSION: &str = "1.34.0";

/// `injector.json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Injector {
    version: String,
    proxy_image: String,
    init_image: String,
    control_plane: String,
    weft_namespace: String,
}

/// `case.json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CaseFile {
    about: String,
    namespace: NamespaceFile,
    injector: Mode,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespaceFile {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Mode {
    cni: bool,
    native_sidecars: bool,
}

/// One case, read.
#[derive(Debug)]
struct Case {
    name: &'static str,
    /// What the case shows.
    about: String,
    dir: PathBuf,
    /// `review.json` as sent.
    review: Vec<u8>,
    /// The same, parsed.
    review_json: Value,
    namespace: Namespace,
    settings: Settings,
}

impl Case {
    /// The pod the API server sent.
    fn object(&self) -> &Value {
        &self.review_json["request"]["object"]
    }
}

/// What the webhook's code answered.
#[derive(Debug)]
struct Answered {
    outcome: Outcome,
    /// The AdmissionReview written back, its patch as the API server reads it (base64).
    review: Value,
    /// The pod once the API server applies the patch; the pod as sent when there is none.
    pod: Value,
    /// The patch's operations.
    ops: Option<Value>,
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn injector() -> Injector {
    let path = golden_dir().join("injector.json");
    serde_json::from_slice(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every case, checking that the folders are the cases named in [`CASES`].
fn cases() -> Vec<Case> {
    let root = golden_dir();
    let mut folders: Vec<String> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("read {}: {e}", root.display()))
        .map(|entry| entry.expect("a folder entry"))
        .filter(|entry| entry.path().is_dir())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    assert_eq!(folders, CASES, "the folders of {}", root.display());
    let injector = injector();
    let anchors = String::from_utf8(read(&root.join("anchors.pem"))).expect("PEM is text");
    CASES
        .iter()
        .map(|&name| {
            let dir = root.join(name);
            let case_path = dir.join("case.json");
            let file: CaseFile = serde_json::from_slice(&read(&case_path))
                .unwrap_or_else(|e| panic!("{}: {e}", case_path.display()));
            let review = read(&dir.join("review.json"));
            let review_json = serde_json::from_slice(&review)
                .unwrap_or_else(|e| panic!("{name}/review.json: not JSON: {e}"));
            // As `weftctl inject` builds its config (cli/src/inject.rs): `Config::new` and
            // the two modes; the version is pinned so that a release does not touch the files.
            let inject = Config {
                version: injector.version.clone(),
                cni: file.injector.cni,
                native_sidecars: file.injector.native_sidecars,
                ..Config::new(
                    injector.proxy_image.clone(),
                    injector.init_image.clone(),
                    injector.control_plane.clone(),
                    anchors.clone(),
                )
            };
            Case {
                name,
                about: file.about,
                dir,
                review,
                review_json,
                namespace: Namespace {
                    labels: file.namespace.labels,
                    annotations: file.namespace.annotations,
                },
                settings: Settings {
                    inject,
                    weft_namespace: injector.weft_namespace.clone(),
                },
            }
        })
        .collect()
}

/// The webhook's answer to the case's review, and the pod it makes.
fn answer(case: &Case, review: &[u8]) -> Answered {
    let name = case.name;
    let request = Request::parse(review).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(
        request.namespace(),
        case.review_json["request"]["namespace"].as_str(),
        "{name}: the request's namespace"
    );
    let answer = request.answer(&case.namespace, &case.settings);
    let written: Value = serde_json::from_slice(&answer.to_json()).expect("the answer is JSON");
    let mut pod =
        serde_json::from_slice::<Value>(review).expect("JSON")["request"]["object"].take();
    let ops = written["response"].get("patch").map(|patch| {
        let text = patch.as_str().expect("the patch as a base64 string");
        let bytes = BASE64_STANDARD
            .decode(text)
            .unwrap_or_else(|e| panic!("{name}: the patch is not base64: {e}"));
        let ops: json_patch::Patch = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{name}: the patch is not a JSON Patch: {e}"));
        json_patch::patch(&mut pod, &ops.0)
            .unwrap_or_else(|e| panic!("{name}: the patch does not apply to the pod: {e}"));
        serde_json::from_slice(&bytes).expect("JSON")
    });
    Answered {
        outcome: answer.outcome,
        review: written,
        pod,
        ops,
    }
}

/// `response.json`: the review written back, its patch left out (`pod.json` shows it applied).
fn response_file(answered: &Answered) -> Value {
    let mut review = answered.review.clone();
    if let Some(response) = review["response"].as_object_mut() {
        response.remove("patch");
    }
    review
}

/// The value with every object's keys in order, so that a file's text is stable.
fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let ordered: BTreeMap<&String, Value> =
                map.iter().map(|(k, v)| (k, sorted(v))).collect();
            Value::Object(ordered.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(&sorted(value)).expect("JSON") + "\n"
}

/// Where `expected` and `actual` differ, as JSON pointers (the first few).
fn differences(expected: &Value, actual: &Value, at: &str, out: &mut Vec<String>) {
    const MAX: usize = 12;
    if out.len() >= MAX || expected == actual {
        return;
    }
    let short = |v: Option<&Value>| {
        let text = v.map_or("(nothing)".to_string(), Value::to_string);
        match text.char_indices().nth(120) {
            Some((i, _)) => format!("{}...", &text[..i]),
            None => text,
        }
    };
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            let keys: std::collections::BTreeSet<&String> = e.keys().chain(a.keys()).collect();
            for key in keys {
                let path = format!("{at}/{}", key.replace('~', "~0").replace('/', "~1"));
                match (e.get(key), a.get(key)) {
                    (Some(ev), Some(av)) => differences(ev, av, &path, out),
                    (ev, av) if out.len() < MAX => {
                        out.push(format!("{path}: expected {}, got {}", short(ev), short(av)))
                    }
                    _ => return,
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            for i in 0..e.len().max(a.len()) {
                let path = format!("{at}/{i}");
                match (e.get(i), a.get(i)) {
                    (Some(ev), Some(av)) => differences(ev, av, &path, out),
                    (ev, av) if out.len() < MAX => {
                        out.push(format!("{path}: expected {}, got {}", short(ev), short(av)))
                    }
                    _ => return,
                }
            }
        }
        _ => out.push(format!(
            "{}: expected {}, got {}",
            if at.is_empty() { "/" } else { at },
            short(Some(expected)),
            short(Some(actual))
        )),
    }
}

/// Compares `actual` with the file (or, blessing, writes it when it differs). `None` means no
/// file. Returns the mismatch, if any.
fn check_file(path: &Path, actual: Option<&Value>, bless: bool) -> Option<String> {
    let shown = path
        .strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap_or(path)
        .display()
        .to_string();
    let expected = path
        .exists()
        .then(|| String::from_utf8(read(path)).expect("text"));
    if bless {
        match (actual, &expected) {
            (Some(value), _) => {
                let text = pretty(value);
                if expected.as_deref() != Some(text.as_str()) {
                    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {shown}: {e}"));
                    println!("blessed {shown}");
                }
            }
            (None, Some(_)) => {
                std::fs::remove_file(path).unwrap_or_else(|e| panic!("remove {shown}: {e}"));
                println!("blessed {shown} (removed: no patch)");
            }
            (None, None) => {}
        }
        return None;
    }
    let bless_hint = "WEFT_BLESS=1 cargo test -p weft-injector-core --test golden rewrites it";
    match (actual, expected) {
        (None, None) => None,
        (None, Some(_)) => Some(format!("{shown}: expected, but the answer has no patch")),
        (Some(_), None) => Some(format!("{shown}: missing ({bless_hint})")),
        (Some(actual), Some(text)) => {
            let expected: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{shown}: not JSON: {e}"));
            let mut found = Vec::new();
            differences(&expected, actual, "", &mut found);
            if found.is_empty() && pretty(actual) != text {
                found.push("the same JSON, written differently: bless to tidy".into());
            }
            (!found.is_empty()).then(|| {
                format!(
                    "{shown} differs ({bless_hint}, then read the diff):\n  {}",
                    found.join("\n  ")
                )
            })
        }
    }
}

#[test]
fn every_review_is_answered_as_its_golden_files_say() {
    let bless = std::env::var_os("WEFT_BLESS").is_some_and(|v| v == "1");
    let mut failures = Vec::new();
    for case in cases() {
        let name = case.name;
        let answered = answer(&case, &case.review);
        let response = &answered.review["response"];
        assert_eq!(answered.review["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(answered.review["kind"], "AdmissionReview");
        assert_eq!(
            response["uid"], case.review_json["request"]["uid"],
            "{name}: the answer carries the request's uid"
        );
        match &answered.ops {
            Some(ops) => {
                assert_eq!(answered.outcome, Outcome::Injected, "{name}");
                assert_eq!(response["patchType"], "JSONPatch", "{name}");
                // Only `add`s: what the user wrote is never replaced or removed.
                for op in ops.as_array().expect("a JSON Patch is an array") {
                    assert_eq!(op["op"], "add", "{name}: {op}");
                }
            }
            None => {
                assert_ne!(answered.outcome, Outcome::Injected, "{name}");
                assert!(response.get("patchType").is_none(), "{name}");
                assert_eq!(&answered.pod, case.object(), "{name}: no patch, no change");
            }
        }
        // A skip is an allow; only an annotation that cannot be honoured denies.
        assert_eq!(
            response["allowed"],
            answered.outcome != Outcome::Refused,
            "{name}: {response}"
        );
        let pod = answered.ops.is_some().then_some(&answered.pod);
        let files = [
            check_file(
                &case.dir.join("response.json"),
                Some(&response_file(&answered)),
                bless,
            ),
            check_file(&case.dir.join("pod.json"), pod, bless),
        ];
        failures.extend(
            files
                .into_iter()
                .flatten()
                .map(|f| format!("{f}\n  (the case: {})", case.about)),
        );
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn an_injected_pod_sent_again_is_left_alone() {
    let mut injected = 0;
    for case in cases() {
        let answered = answer(&case, &case.review);
        if answered.ops.is_none() {
            continue;
        }
        injected += 1;
        let mut again = case.review_json.clone();
        again["request"]["object"] = answered.pod;
        let again = serde_json::to_vec(&again).expect("JSON");
        let second = answer(&case, &again);
        assert_eq!(
            second.outcome,
            Outcome::Skipped(Skip::AlreadyInjected),
            "{}",
            case.name
        );
        assert!(second.ops.is_none(), "{}: patched twice", case.name);
        let response = &second.review["response"];
        assert_eq!(response["allowed"], true, "{}", case.name);
        assert!(
            response.get("warnings").is_none(),
            "{}: {response}",
            case.name
        );
    }
    assert!(injected >= 8, "only {injected} cases are injected");
}

/// Why `weftctl inject` cannot give the webhook's pod for a case, if it cannot: offline, it
/// knows no namespace, and the user's running the command is the opt-in.
fn offline_differs(case: &Case, outcome: &Outcome) -> Option<&'static str> {
    if !case.namespace.annotations.is_empty() {
        return Some("weftctl inject does not know the namespace's annotations");
    }
    if *outcome == Outcome::Skipped(Skip::NotEnabled) {
        return Some("for weftctl inject, the command is the opt-in");
    }
    None
}

#[test]
fn weftctl_inject_gives_the_webhooks_pod() {
    let mut compared = 0;
    for case in cases() {
        let name = case.name;
        let answered = answer(&case, &case.review);
        if let Some(why) = offline_differs(&case, &answered.outcome) {
            println!("{name}: not compared: {why}");
            continue;
        }
        compared += 1;
        // What `weftctl inject` calls for each document, with the config it builds.
        let mut doc = case.object().clone();
        let mut reports = Vec::new();
        let result = manifest::inject(
            &mut doc,
            &case.settings.inject,
            &case.settings.weft_namespace,
            &mut reports,
        );
        match &answered.outcome {
            Outcome::Refused => {
                let err = result.expect_err(name).to_string();
                let message = answered.review["response"]["status"]["message"]
                    .as_str()
                    .expect("a denial says why");
                let reason = message
                    .strip_prefix("weft: the pod cannot be meshed: ")
                    .unwrap_or_else(|| panic!("{name}: {message}"));
                assert!(err.ends_with(reason), "{name}: {err} / {message}");
                continue;
            }
            Outcome::Injected => {
                result.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(reports.len(), 1, "{name}");
                assert_eq!(reports[0].skipped, None, "{name}");
            }
            Outcome::Skipped(skip) => {
                result.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(reports.len(), 1, "{name}");
                assert_eq!(reports[0].skipped, Some(skip.to_string()), "{name}");
            }
            Outcome::NotAPod => panic!("{name}: every case is a pod"),
        }
        let mut found = Vec::new();
        differences(&answered.pod, &doc, "", &mut found);
        assert!(
            found.is_empty(),
            "{name}: weftctl's pod (got) differs from the webhook's (expected):\n  {}",
            found.join("\n  ")
        );
    }
    assert!(compared >= 12, "only {compared} cases compared");
}

/// A scratch folder, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("weft-golden-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch folder");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `kubernetes-validate`, from the venv `scripts/py-tools.sh` makes (once; later runs only
/// check its stamp).
fn kubernetes_validate() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/py-tools.sh");
    let out = Command::new(&script)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scripts/py-tools.sh failed ({}); the pods cannot be validated without \
         kubernetes-validate, which needs python3 with venv:\n{stderr}",
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let bin = stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("scripts/py-tools.sh printed no folder:\n{stderr}"));
    let tool = Path::new(bin.trim()).join("kubernetes-validate");
    assert!(tool.exists(), "{} is missing", tool.display());
    tool
}

/// Runs the validator on `files`: its exit status and what it printed.
fn validate(tool: &Path, files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(tool)
        .args(["--strict", "-k", KUBERNETES_VERSION, "--quiet"])
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", tool.display()));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// What the API server checks beyond the schema, for the resources the injector writes: no
/// container's request above its limit ("must be less than or equal to cpu limit").
fn requests_within_limits(name: &str, pod: &Value) {
    let spec = &pod["spec"];
    let containers = ["initContainers", "containers"]
        .iter()
        .filter_map(|list| spec[list].as_array())
        .flatten();
    for container in containers {
        let resources = &container["resources"];
        for (resource, scale) in [("cpu", 9), ("memory", 3)] {
            let units = |of: &str| {
                resources[of][resource].as_str().map(|q| {
                    weft_pod::Quantity::parse(q)
                        .and_then(|q| q.ceil_scaled(scale))
                        .unwrap_or_else(|| panic!("{name}: {resource} {of} {q:?}"))
                })
            };
            if let (Some(request), Some(limit)) = (units("requests"), units("limits")) {
                assert!(
                    request <= limit,
                    "{name}: container {}: {resource} request above its limit: {resources}",
                    container["name"]
                );
            }
        }
    }
}

#[test]
fn every_pod_passes_kubernetes_validate_strict_and_the_limits_check() {
    let tool = kubernetes_validate();
    let scratch = Scratch::new("validate");
    let mut files = Vec::new();
    let mut injected_pod = None;
    for case in cases() {
        let answered = answer(&case, &case.review);
        let mut pod = answered.pod;
        // The validator needs a whole object, name included (it stops at a pod without one);
        // the API server names a generateName pod only after admission, so one is made here
        // as it would be.
        if pod["metadata"].get("name").is_none() {
            let base = pod["metadata"]["generateName"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: neither name nor generateName", case.name));
            pod["metadata"]["name"] = Value::String(format!("{base}g0ld3"));
        }
        let file = scratch.0.join(format!("{}.json", case.name));
        std::fs::write(&file, pretty(&pod)).expect("write the pod");
        files.push(file);
        requests_within_limits(case.name, &pod);
        if case.name == "plain" {
            injected_pod = Some(pod);
        }
    }
    let (ok, output) = validate(&tool, &files);
    assert!(
        ok,
        "kubernetes-validate --strict -k {KUBERNETES_VERSION} refused a pod:\n{output}"
    );

    // The check can fail: a field the API does not have, in the proxy's container, is refused.
    let mut bad = injected_pod.expect("the plain case");
    let proxy = bad["spec"]["initContainers"]
        .as_array_mut()
        .and_then(|c| c.iter_mut().find(|c| c["name"] == "weft-proxy"))
        .expect("the proxy, a native sidecar");
    proxy["restartPolicyy"] = Value::String("Always".into());
    let file = scratch.0.join("unknown-field.json");
    std::fs::write(&file, pretty(&bad)).expect("write the pod");
    let (ok, output) = validate(&tool, &[file]);
    assert!(
        !ok && output.contains("restartPolicyy"),
        "kubernetes-validate accepted an unknown field: {output}"
    );
}
