//! Weft's Helm chart (`helm/weft`) with a real Helm: `helm lint --strict`, renders compared
//! with golden files for several values files, every rendered object validated against
//! Kubernetes' own schemas at the k8s tier's version, and bad values refused with a message
//! naming the value. The k8s tier installs the same chart into its cluster.
//!
//! `WEFT_BLESS=1 cargo test -p weft-k8s-lab --test chart` writes the golden files anew.

use std::{
    fs,
    path::{Path, PathBuf},
};

use base64::{prelude::BASE64_STANDARD, Engine as _};
use serde::Deserialize as _;
use serde_yaml::Value;
use weft_k8s_lab::{
    helm::{self, chart_dir, Helm, KUBE_VERSION},
    kubectl::Outcome,
};

/// The values files under `tests/values`, each with the namespace it is rendered into.
const RENDERS: [(&str, &str); 3] = [
    ("default", "weft"),
    ("ha-ignore-cni", "weft"),
    ("existing-secret-cert-manager", "mesh"),
];

/// What a generated certificate is replaced with in golden files.
const GENERATED: &str = "<generated>";

fn helm(home: &Path) -> Helm {
    Helm::locate(home).unwrap_or_else(|e| panic!("{e}"))
}

fn values(name: &str) -> PathBuf {
    chart_dir().join(format!("tests/values/{name}.yaml"))
}

fn render(helm: &Helm, values_file: &str, ns: &str, extra: &[&str]) -> Outcome {
    let chart = chart_dir();
    let values = values(values_file);
    let mut args = vec![
        "template",
        "weft",
        chart.to_str().expect("utf-8 path"),
        "--namespace",
        ns,
        "--kube-version",
        KUBE_VERSION,
        "--include-crds",
        "-f",
        values.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(extra);
    helm.outcome(&args).expect("helm runs")
}

/// The rendered documents, empty ones dropped.
fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).expect("helm renders YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn kind_name(doc: &Value) -> (String, String) {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (s(&doc["kind"]), s(&doc["metadata"]["name"]))
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter()
        .find(|d| kind_name(d) == (kind.to_string(), name.to_string()))
}

fn b64(v: &Value) -> String {
    let bytes = BASE64_STANDARD
        .decode(v.as_str().expect("a base64 string"))
        .expect("base64");
    String::from_utf8(bytes).expect("PEM is text")
}

fn sha256_hex(text: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A generated webhook certificate is consistent (the Secret's CA is the webhooks' caBundle,
/// the checksum is the certificate's) and is then replaced by [`GENERATED`], so that golden
/// files do not change with every render.
fn redact_generated(docs: &mut [Value]) {
    let Some(secret) = find(docs, "Secret", "weft-injector-tls").cloned() else {
        return;
    };
    let data = &secret["data"];
    let (crt, ca) = (b64(&data["tls.crt"]), b64(&data["ca.crt"]));
    assert!(crt.contains("BEGIN CERTIFICATE") && ca.contains("BEGIN CERTIFICATE"));
    assert!(b64(&data["tls.key"]).contains("PRIVATE KEY"));
    for doc in docs.iter_mut() {
        match kind_name(doc) {
            (k, n) if k == "Secret" && n == "weft-injector-tls" => {
                for key in ["tls.crt", "tls.key", "ca.crt"] {
                    doc["data"][key] = GENERATED.into();
                }
            }
            (k, _) if k == "MutatingWebhookConfiguration" => {
                for hook in doc["webhooks"].as_sequence_mut().expect("webhooks") {
                    let bundle = &mut hook["clientConfig"]["caBundle"];
                    assert_eq!(b64(bundle), ca, "the caBundle is the Secret's CA");
                    *bundle = GENERATED.into();
                }
            }
            (k, n) if k == "Deployment" && n == "weft-injector" => {
                let sum = &mut doc["spec"]["template"]["metadata"]["annotations"]["checksum/tls"];
                assert_eq!(sum.as_str(), Some(sha256_hex(&crt).as_str()));
                *sum = GENERATED.into();
            }
            _ => {}
        }
    }
}

#[test]
fn the_chart_lints_clean_with_every_values_file() {
    let home = tempfile::tempdir().expect("tempdir");
    let helm = helm(home.path());
    for (name, ns) in RENDERS {
        let values = values(name);
        let out = helm
            .outcome(&[
                "lint",
                "--strict",
                chart_dir().to_str().expect("utf-8"),
                "--namespace",
                ns,
                "--kube-version",
                KUBE_VERSION,
                "-f",
                values.to_str().expect("utf-8"),
            ])
            .expect("helm runs");
        assert!(out.success, "{name}: {}{}", out.stdout, out.stderr);
    }
}

#[test]
fn renders_match_their_golden_files_and_validate_at_the_clusters_version() {
    let home = tempfile::tempdir().expect("tempdir");
    let helm = helm(home.path());
    let bless = std::env::var_os("WEFT_BLESS").is_some();
    let mut files = Vec::new();
    let mut stale = Vec::new();
    for (name, ns) in RENDERS {
        let out = render(&helm, name, ns, &[]);
        assert!(out.success, "{name}: {}", out.stderr);
        let mut docs = documents(&out.stdout);
        assert!(docs.len() >= 12, "{name}: only {} objects", docs.len());

        // Helm's own output for the validator: the bytes an install sends.
        let file = home.path().join(format!("{name}.yaml"));
        fs::write(&file, &out.stdout).expect("write");
        files.push(file);

        redact_generated(&mut docs);
        // The CRDs are source files of their own (helm/weft/crds), checked by the k8s tier.
        let text: String = docs
            .iter()
            .filter(|d| d["kind"] != "CustomResourceDefinition")
            .map(|d| format!("---\n{}", serde_yaml::to_string(d).expect("yaml")))
            .collect();
        let golden = chart_dir().join(format!("tests/golden/{name}.yaml"));
        if bless {
            fs::create_dir_all(golden.parent().expect("dir")).expect("mkdir");
            fs::write(&golden, &text).expect("write golden");
            println!("wrote {}", golden.display());
        } else if fs::read_to_string(&golden).ok().as_deref() != Some(text.as_str()) {
            // Kept after the test (cargo's scratch directory for integration tests).
            let got = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("chart-{name}.yaml"));
            fs::write(&got, &text).expect("write");
            stale.push(format!(
                "{name}: the render differs from {} (diff it with {}; WEFT_BLESS=1 rewrites)",
                golden.display(),
                got.display()
            ));
        }
    }
    // cert-manager's and the Prometheus Operator's kinds have no schema in the validator: it
    // warns and checks the rest. (The PrometheusRule's spec is the rules file promtool checks:
    // `make rules`, and the_prometheus_rule_is_the_rules_file below.)
    helm::validate(&files).unwrap_or_else(|e| panic!("{e}"));
    assert!(stale.is_empty(), "{}", stale.join("\n"));
}

#[test]
fn the_validator_refuses_what_the_api_server_would() {
    // The check above could pass by checking nothing: the same tool refuses a misspelt field.
    let home = tempfile::tempdir().expect("tempdir");
    let file = home.path().join("bad.yaml");
    fs::write(
        &file,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: a\n    image: a\n    securityContext: {readOnlyRootFileSystem: true}\n",
    )
    .expect("write");
    let err = helm::validate(&[file]).expect_err("a misspelt field is refused");
    assert!(err.to_string().contains("readOnlyRootFileSystem"), "{err}");
}

#[test]
fn what_the_values_ask_for_is_what_is_rendered() {
    let home = tempfile::tempdir().expect("tempdir");
    let helm = helm(home.path());

    let default = documents(&render(&helm, "default", "weft", &[]).stdout);
    let webhook = find(&default, "MutatingWebhookConfiguration", "weft-injector").expect("webhook");
    let hooks = webhook["webhooks"].as_sequence().expect("webhooks");
    assert_eq!(
        hooks.len(),
        2,
        "one for labelled namespaces, one for opted-in pods"
    );
    for hook in hooks {
        let exprs = hook["namespaceSelector"]["matchExpressions"]
            .as_sequence()
            .expect("exprs");
        let names = exprs
            .iter()
            .find(|e| e["key"] == "kubernetes.io/metadata.name")
            .expect("a name selector");
        assert_eq!(names["operator"], "NotIn");
        for ns in ["kube-system", "kube-public", "kube-node-lease", "weft"] {
            assert!(
                names["values"]
                    .as_sequence()
                    .expect("values")
                    .iter()
                    .any(|v| v == ns),
                "{ns} is never matched"
            );
        }
        assert_eq!(hook["failurePolicy"], "Fail");
        assert_eq!(hook["sideEffects"], "None");
        assert_eq!(hook["reinvocationPolicy"], "IfNeeded");
    }
    for name in ["weft-control-plane", "weft-injector"] {
        let d = find(&default, "Deployment", name).expect("deployment");
        let annotations = &d["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(
            annotations["weft.dev/inject"], "disabled",
            "{name} opts out"
        );
        assert!(find(&default, "PodDisruptionBudget", name).is_none());
    }
    let args = |docs: &[Value]| -> Vec<String> {
        find(docs, "Deployment", "weft-injector").expect("injector")["spec"]["template"]["spec"]
            ["containers"][0]["args"]
            .as_sequence()
            .expect("args")
            .iter()
            .map(|a| a.as_str().expect("string").to_string())
            .collect()
    };
    assert!(!args(&default).contains(&"--cni".to_string()));

    let ha = documents(&render(&helm, "ha-ignore-cni", "weft", &[]).stdout);
    for name in ["weft-control-plane", "weft-injector"] {
        assert!(find(&ha, "PodDisruptionBudget", name).is_some(), "{name}");
    }
    assert!(args(&ha).contains(&"--cni".to_string()));
    assert!(
        args(&ha).contains(&"--trace-collector=jaeger-collector.tracing:4317".to_string())
            && args(&ha).contains(&"--trace-sampling=0.1".to_string()),
        "{:?}",
        args(&ha)
    );
    assert!(!args(&default).iter().any(|a| a.starts_with("--trace")));
    let hooks =
        &find(&ha, "MutatingWebhookConfiguration", "weft-injector").expect("webhook")["webhooks"];
    assert_eq!(hooks[0]["failurePolicy"], "Ignore");

    // The CNI DaemonSet: only with cni.enabled and cni.install; the excluded namespaces are
    // kube-system, the release's and the values', once each.
    assert!(find(&default, "DaemonSet", "weft-cni").is_none());
    let ds = find(&ha, "DaemonSet", "weft-cni").expect("the CNI DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let env = |name: &str| -> String {
        container["env"]
            .as_sequence()
            .expect("env")
            .iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("env {name}"))
            .to_string()
    };
    assert_eq!(
        env("WEFT_CNI_EXCLUDE_NAMESPACES"),
        "kube-system,weft,legacy"
    );
    assert_eq!(env("WEFT_CNI_HOST_CONF_DIR"), "/etc/cni/net.d");
    assert_eq!(env("WEFT_CNI_LOG_FILE"), "/var/log/weft/cni.log");
    assert_eq!(pod["volumes"][0]["hostPath"]["path"], "/opt/cni/bin");
    assert_eq!(pod["volumes"][1]["hostPath"]["path"], "/etc/cni/net.d");
    assert_eq!(container["securityContext"]["runAsUser"], 0);
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"][0],
        "ALL"
    );
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert!(container["securityContext"]["capabilities"]["add"].is_null());
    assert_eq!(
        container["readinessProbe"]["exec"]["command"][1], "check",
        "ready when the node has it all"
    );
    assert_eq!(pod["serviceAccountName"], "weft-cni");
    let rules = &find(&ha, "ClusterRole", "weft-cni").expect("the plugin's role")["rules"];
    assert_eq!(rules.as_sequence().map(Vec::len), Some(1), "{rules:?}");
    assert_eq!(rules[0]["verbs"][0], "get");
    assert_eq!(rules[0]["resources"][0], "pods");
    let self_installed = documents(
        &render(
            &helm,
            "ha-ignore-cni",
            "weft",
            &["--set", "cni.install=false"],
        )
        .stdout,
    );
    assert!(find(&self_installed, "DaemonSet", "weft-cni").is_none());
    assert!(args(&self_installed).contains(&"--cni".to_string()));

    // Elsewhere: the proxies are told the control plane's address and identity there.
    let mesh = documents(&render(&helm, "existing-secret-cert-manager", "mesh", &[]).stdout);
    let a = args(&mesh);
    for want in [
        "--control-plane=weft-control-plane.mesh.svc.k8s.example.org:8443",
        "--control-plane-identity=spiffe://example.org/ns/mesh/sa/weft-control-plane",
        "--trust-domain=example.org",
    ] {
        assert!(a.contains(&want.to_string()), "{want} in {a:?}");
    }
    assert!(find(&mesh, "Certificate", "weft-injector").is_some());
    assert!(find(&mesh, "Secret", "weft-identity-issuer").is_none());
}

#[test]
fn the_prometheus_rule_is_the_rules_file() {
    // One copy of the rules: the PrometheusRule's spec is rules/weft.rules.yaml as it is, the
    // plain rules file that promtool checks and tests (`make rules`).
    let home = tempfile::tempdir().expect("tempdir");
    let helm = helm(home.path());
    let default = documents(&render(&helm, "default", "weft", &[]).stdout);
    assert!(
        default.iter().all(|d| d["kind"] != "PrometheusRule"),
        "off by default"
    );
    let ha = documents(&render(&helm, "ha-ignore-cni", "weft", &[]).stdout);
    let rule = find(&ha, "PrometheusRule", "weft").expect("the PrometheusRule");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["metadata"]["namespace"], "weft");
    assert_eq!(
        rule["metadata"]["labels"]["release"], "prom",
        "the Operator's selector label from the values"
    );
    let file = fs::read_to_string(chart_dir().join("rules/weft.rules.yaml")).expect("rules file");
    let plain: Value = serde_yaml::from_str(&file).expect("the rules file is YAML");
    assert!(
        plain["groups"].as_sequence().is_some_and(|g| !g.is_empty()),
        "{plain:?}"
    );
    assert_eq!(rule["spec"], plain);
}

#[test]
fn the_dashboards_are_config_maps_for_grafanas_sidecar() {
    // One ConfigMap per dashboards/*.json, the file as it is, labelled as the sidecar selects
    // (grafana_dashboard: "1" unless the values say otherwise); none by default.
    let home = tempfile::tempdir().expect("tempdir");
    let helm = helm(home.path());
    let default = documents(&render(&helm, "default", "weft", &[]).stdout);
    assert!(
        default.iter().all(|d| d["kind"] != "ConfigMap"
            || !d["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("-dashboard"))),
        "off by default"
    );
    let mut files: Vec<_> = fs::read_dir(chart_dir().join("dashboards"))
        .expect("dashboards/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 7, "{files:?}");
    let ha = documents(&render(&helm, "ha-ignore-cni", "weft", &[]).stdout);
    for path in &files {
        let file = path.file_name().and_then(|n| n.to_str()).expect("a name");
        let name = format!("{}-dashboard", file.trim_end_matches(".json"));
        let cm = find(&ha, "ConfigMap", &name).unwrap_or_else(|| panic!("no ConfigMap {name}"));
        assert_eq!(cm["metadata"]["namespace"], "weft");
        assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
        assert_eq!(cm["metadata"]["annotations"]["grafana_folder"], "Weft");
        let text = fs::read_to_string(path).expect("the dashboard");
        assert_eq!(cm["data"][file].as_str(), Some(text.as_str()), "{file}");
    }
    let relabelled = render(
        &helm,
        "ha-ignore-cni",
        "weft",
        &[
            "--set",
            "dashboards.label=example.com/dashboard",
            "--set",
            "dashboards.labelValue=weft",
        ],
    );
    assert!(relabelled.success, "{}", relabelled.stderr);
    let docs = documents(&relabelled.stdout);
    let cm = find(&docs, "ConfigMap", "weft-mesh-dashboard").expect("the mesh dashboard");
    assert_eq!(cm["metadata"]["labels"]["example.com/dashboard"], "weft");
    assert!(cm["metadata"]["labels"]["grafana_dashboard"].is_null());
    let bad = render(
        &helm,
        "default",
        "weft",
        &[
            "--set",
            "dashboards.enabled=true",
            "--set",
            "dashboards.label=not a label",
        ],
    );
    assert!(
        !bad.success && bad.stderr.contains("/dashboards/label"),
        "{}",
        bad.stderr
    );
}

#[test]
fn bad_values_are_refused_naming_what_is_wrong() {
    let home = tempfile::tempdir().expect("tempdir");
    let helm = helm(home.path());
    for (set, expect) in [
        (
            "identity.trustAnchorsPEM=",
            "identity.trustAnchorsPEM is required",
        ),
        (
            "identity.trustAnchorsPEM=not a pem",
            "holds no PEM certificate",
        ),
        ("injector.failurPolicy=Ignore", "failurPolicy"),
        ("injector.failurePolicy=Maybe", "failurePolicy"),
        ("injector.timeoutSeconds=60", "timeoutSeconds"),
        (
            "injector.certificate.source=given",
            "crtPEM, keyPEM and caPEM are all required",
        ),
        ("identity.issuer.existingSecret=mine", "not both"),
        ("controlPlane.replicas=0", "replicas"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("prometheusRule.enable=true", "enable"),
    ] {
        let out = render(&helm, "default", "weft", &["--set", set]);
        assert!(!out.success, "--set {set} was accepted");
        assert!(
            out.stderr.contains(expect),
            "--set {set}: the error does not say {expect:?}: {}",
            out.stderr
        );
    }
}
