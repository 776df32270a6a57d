use std::{
    fs,
    path::{Path, PathBuf},
};

use super::*;

const FAULT: &str = "apiVersion: weft.dev/v1alpha1\nkind: HTTPFault\nmetadata:\n  name: f\n";

/// A fresh folder `<tmp>/<name>` holding `files` (name, content).
fn folder(name: &str, files: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("a temporary folder");
    let dir = tmp.path().join(name);
    fs::create_dir(&dir).expect("the case folder");
    for (file, content) in files {
        fs::write(dir.join(file), content).expect("a case file");
    }
    (tmp, dir)
}

fn names(cases: &[Case]) -> Vec<&str> {
    cases
        .iter()
        .map(|c| c.file.file_name().and_then(|n| n.to_str()).unwrap_or(""))
        .collect()
}

/// The message of the error `cases(dir)` must return.
fn refusal(dir: &Path) -> String {
    match cases(dir) {
        Ok(found) => panic!(
            "{} was read without error: {:?}",
            dir.display(),
            names(&found)
        ),
        Err(e) => e.to_string(),
    }
}

#[test]
fn reads_cases_sorted_with_their_expectations() {
    let b = format!("# expect: spec.abort.percent\n{FAULT}");
    let a = format!("# expect:   spec.delay.fixedDelay  \n---\n{FAULT}");
    let (_tmp, dir) = folder(
        "invalid",
        &[
            ("b.yaml", &b),
            ("a.yaml", &a),
            ("README.md", "not a case"),
            ("c.yml", "# expect: x\n"),
        ],
    );
    fs::create_dir(dir.join("sub.yaml")).expect("a folder named like a case");
    let found = cases(&dir).expect("the cases");
    assert_eq!(names(&found), ["a.yaml", "b.yaml"]);
    assert_eq!(found[0].expect.as_deref(), Some("spec.delay.fixedDelay"));
    assert_eq!(found[1].expect.as_deref(), Some("spec.abort.percent"));
    assert_eq!(found[1].yaml, b);
    assert_eq!(found[1].file, dir.join("b.yaml"));
}

#[test]
fn valid_cases_have_no_expectation() {
    let (_tmp, dir) = folder(
        "valid",
        &[(
            "fault.yaml",
            &format!("# A comment, not an expectation.\n{FAULT}"),
        )],
    );
    let found = cases(&dir).expect("the cases");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].expect, None);
}

#[test]
fn an_invalid_case_without_expect_is_refused_naming_it() {
    let (_tmp, dir) = folder(
        "invalid",
        &[
            ("good.yaml", &format!("# expect: spec\n{FAULT}")),
            ("bare.yaml", FAULT),
        ],
    );
    let msg = refusal(&dir);
    assert!(msg.contains("bare.yaml"), "{msg}");
    assert!(msg.contains("# expect:"), "{msg}");
}

#[test]
fn an_expect_line_must_be_the_first_and_hold_text() {
    let later = format!("# A case.\n# expect: spec\n{FAULT}");
    let (_tmp, dir) = folder("invalid", &[("later.yaml", &later)]);
    assert!(refusal(&dir).contains("later.yaml"));
    let (_tmp, dir) = folder(
        "invalid",
        &[("empty.yaml", &format!("# expect:  \n{FAULT}"))],
    );
    let msg = refusal(&dir);
    assert!(
        msg.contains("empty.yaml") && msg.contains("no text"),
        "{msg}"
    );
}

#[test]
fn a_valid_case_with_expect_is_refused_naming_it() {
    let (_tmp, dir) = folder(
        "valid",
        &[("odd.yaml", &format!("# expect: spec\n{FAULT}"))],
    );
    let msg = refusal(&dir);
    assert!(
        msg.contains("odd.yaml") && msg.contains("invalid/"),
        "{msg}"
    );
}

#[test]
fn a_case_is_one_document() {
    let two = format!("# expect: spec\n{FAULT}---\n{FAULT}");
    let (_tmp, dir) = folder("invalid", &[("two.yaml", &two)]);
    let msg = refusal(&dir);
    assert!(msg.contains("two.yaml") && msg.contains("line 6"), "{msg}");
}

#[test]
fn sizes_are_bounded() {
    let big = format!("{FAULT}{}", "#".repeat(MAX_CASE_BYTES as usize));
    let (_tmp, dir) = folder("valid", &[("big.yaml", &big)]);
    let msg = refusal(&dir);
    assert!(msg.contains("big.yaml") && msg.contains("bytes"), "{msg}");

    let (_tmp, dir) = folder("valid", &[]);
    for i in 0..=MAX_CASES {
        fs::write(dir.join(format!("{i:03}.yaml")), FAULT).expect("a case file");
    }
    let msg = refusal(&dir);
    assert!(msg.contains(&format!("more than {MAX_CASES}")), "{msg}");
}

#[test]
fn not_utf8_is_refused_naming_the_file() {
    let (_tmp, dir) = folder("valid", &[]);
    fs::write(dir.join("latin1.yaml"), b"name: caf\xe9\n").expect("a case file");
    let msg = refusal(&dir);
    assert!(
        msg.contains("latin1.yaml") && msg.contains("UTF-8"),
        "{msg}"
    );
}

#[test]
fn the_folder_must_be_valid_or_invalid_and_hold_cases() {
    let (_tmp, dir) = folder("cases", &[("a.yaml", FAULT)]);
    let msg = refusal(&dir);
    assert!(msg.contains("named valid or invalid"), "{msg}");

    let (_tmp, dir) = folder("valid", &[("notes.txt", "")]);
    let msg = refusal(&dir);
    assert!(msg.contains("no *.yaml case"), "{msg}");

    let tmp = tempfile::tempdir().expect("a temporary folder");
    let missing = tmp.path().join("valid");
    let msg = refusal(&missing);
    assert!(msg.contains(&missing.display().to_string()), "{msg}");
}

/// The repository's own cases read cleanly, and the invalid ones cover what the CRDs promise.
#[test]
fn the_repository_cases_read() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/crd-cases");
    let valid = cases(&root.join("valid")).expect("the valid cases");
    let invalid = cases(&root.join("invalid")).expect("the invalid cases");
    for kind in [
        "HTTPFault",
        "AuthorizationPolicy",
        "HTTPRoute",
        "TrafficSplit",
    ] {
        let needle = format!("kind: {kind}\n");
        assert!(
            valid.iter().any(|c| c.yaml.contains(&needle)),
            "no valid {kind} case"
        );
    }
    for version in ["split.smi-spec.io/v1alpha2", "split.smi-spec.io/v1alpha4"] {
        assert!(
            valid.iter().any(|c| c.yaml.contains(version)),
            "no valid {version} case"
        );
    }
    assert!(invalid.len() >= 8, "{} invalid cases", invalid.len());
    for field in [
        "spec.delay.percent",
        "spec.abort.percent",
        "spec.delay.fixedDelay",
        "spec.abort: ",
        "spec: ",
        "spec.targetRef.kind",
        "spec.rules[0].from.identities[0]",
        "spec.rules[0].to.ports[0]",
    ] {
        assert!(
            invalid
                .iter()
                .any(|c| c.expect.as_deref().is_some_and(|e| e.starts_with(field))),
            "no invalid case expects {field}"
        );
    }
}

/// The kind and `metadata.name` of a case, read from its top-level `kind:` and the first
/// `  name:` line (every case is written that way).
fn kind_and_name(case: &Case) -> (String, String) {
    let field = |prefix: &str| {
        case.yaml
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
            .unwrap_or_else(|| panic!("{}: no {prefix:?} line", case.file.display()))
            .to_string()
    };
    (field("kind:"), field("  name:"))
}

/// Every case can be created in one namespace, since no two share a kind and a name; the invalid
/// ones too, so a refusal is never an "already exists" from a clash.
#[test]
fn the_repository_cases_have_distinct_names() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/crd-cases");
    let mut seen = std::collections::BTreeMap::new();
    for dir in ["valid", "invalid"] {
        for case in cases(&root.join(dir)).expect("the cases") {
            if let Some(other) = seen.insert(kind_and_name(&case), case.file.clone()) {
                panic!(
                    "{} and {} name the same object",
                    other.display(),
                    case.file.display()
                );
            }
        }
    }
}

/// The examples of docs/crds.md are valid cases word for word, so the API server has accepted
/// what the page shows.
#[test]
fn the_documented_examples_are_valid_cases() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = manifest.join("../docs/crds.md");
    let text = fs::read_to_string(&doc).expect("docs/crds.md");
    let valid = cases(&manifest.join("tests/crd-cases/valid")).expect("the valid cases");
    let examples: Vec<&str> = text
        .split("```yaml\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .filter(|block| block.contains("apiVersion:"))
        .collect();
    assert_eq!(
        examples.len(),
        2,
        "the page shows one whole object per kind"
    );
    for example in examples {
        assert!(
            valid.iter().any(|c| c.yaml == example),
            "this example of docs/crds.md is no valid case (copy it to \
             k8s-lab/tests/crd-cases/valid/docs-*.yaml):\n{example}"
        );
    }
}
