//! What changed between two reads.

use super::*;

#[test]
fn an_unchanged_folder_is_an_empty_diff() {
    let files = [(
        "a.yaml",
        docs(&[
            &deployment("default", "web", 2),
            &service("default", "web", "web", "http"),
        ]),
    )];
    let files: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let a = whole(&files);
    let b = load_after(&files, &a.addresses());
    let d = diff(&a, &b);
    assert!(d.is_empty(), "{d:#?}");
}

#[test]
fn pods_added_removed_and_changed_with_what_changed() {
    let v1_text = docs(&[
        &pod("default", "gone", ""),
        &pod("default", "same", "  labels: {app: z}\n"),
        &pod("default", "relabelled", "  labels: {app: x}\n"),
        &pod("default", "meshed", ""),
        &pod_at("default", "moved", "198.18.0.50"),
        &pod("default", "sa", ""),
        &pod("default", "image", ""),
        &pod("default", "tuned", ""),
        &service("default", "x", "x", "80"),
        &service("default", "kept", "x", "80"),
    ]);
    let v1 = whole(&[("a.yaml", &v1_text)]);
    let v2_text = docs(&[
        &pod("default", "new", ""),
        &pod("default", "same", "  labels: {app: z}\n"),
        &pod("default", "relabelled", "  labels: {app: y}\n"),
        &pod(
            "default",
            "meshed",
            "  annotations: {weft.dev/inject: enabled}\n",
        ),
        &pod_at("default", "moved", "198.18.0.60"),
        &pod("default", "sa", "").replace("spec:\n", "spec:\n  serviceAccountName: other\n"),
        &pod("default", "image", "").replace("image: app", "image: app:v2"),
        &pod(
            "default",
            "tuned",
            "  annotations: {weft.dev/opaque-ports: \"7000\"}\n",
        ),
        &service("default", "x", "x", "81"),
        &service("default", "kept", "x", "80"),
        &service("default", "added", "x", "80"),
    ]);
    let v2 = load_after(&[("a.yaml", &v2_text)], &v1.addresses());
    assert!(v2.is_whole(), "{:#?}", v2.refused);
    let d = diff(&v1, &v2);
    assert_eq!(d.pods_added, [key("default", "new")]);
    assert_eq!(d.pods_removed, [key("default", "gone")]);
    let changed: Vec<(&str, Vec<PodField>, bool)> = d
        .pods_changed
        .iter()
        .map(|c| (c.key.1.as_str(), c.fields.clone(), c.needs_restart()))
        .collect();
    assert_eq!(
        changed,
        [
            ("image", vec![PodField::Other], false),
            (
                "meshed",
                vec![PodField::Injection, PodField::WeftAnnotations],
                true
            ),
            ("moved", vec![PodField::Address], true),
            ("relabelled", vec![PodField::Ports, PodField::Labels], true),
            ("sa", vec![PodField::ServiceAccount], true),
            ("tuned", vec![PodField::WeftAnnotations], true),
        ]
    );
    assert_eq!(d.services_added, [key("default", "added")]);
    assert!(d.services_removed.is_empty());
    assert_eq!(d.services_changed, [key("default", "x")]);
    assert!(d.config_changed);
}

#[test]
fn only_labels_changing_rebuilds_no_pod_but_rewrites_the_config() {
    let v1 = whole(&[("a.yaml", &pod("default", "p", "  labels: {app: x}\n"))]);
    let v2 = load_after(
        &[("a.yaml", &pod("default", "p", "  labels: {app: y}\n"))],
        &v1.addresses(),
    );
    let d = diff(&v1, &v2);
    assert_eq!(d.pods_changed.len(), 1);
    assert_eq!(d.pods_changed[0].fields, [PodField::Labels]);
    assert!(!d.pods_changed[0].needs_restart());
    assert!(d.config_changed);
}
