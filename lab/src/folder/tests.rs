//! The folder model's tests: one file per part, helpers here.

use std::path::Path;

use super::*;

mod addresses;
mod control_plane;
mod diff;
mod meshing;
mod read;
mod slices;

/// The folder made of `files` (name, text), with no earlier addresses.
fn load(files: &[(&str, &str)]) -> Folder {
    load_after(files, &Addresses::default())
}

/// The folder made of `files`, keeping `previous` addresses.
fn load_after(files: &[(&str, &str)], previous: &Addresses) -> Folder {
    build(
        files.iter().map(|(name, text)| (Path::new(*name), *text)),
        previous,
    )
}

/// The folder, which must load whole.
fn whole(files: &[(&str, &str)]) -> Folder {
    let folder = load(files);
    assert!(folder.is_whole(), "refused: {:#?}", folder.refused);
    folder
}

fn key(namespace: &str, name: &str) -> Key {
    (namespace.to_string(), name.to_string())
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("a test address")
}

/// The one refusal, checked for its file, document, field and a part of its reason.
#[track_caller]
fn refused_once(folder: &Folder, file: &str, document: usize, field: &str, reason: &str) {
    assert_eq!(folder.refused.len(), 1, "{:#?}", folder.refused);
    let e = &folder.refused[0];
    assert_eq!(e.file, Path::new(file), "{e}");
    assert_eq!(e.document, document, "{e}");
    assert_eq!(e.field, field, "{e}");
    assert!(e.reason.contains(reason), "{e}");
}

/// A pod document.
fn pod(namespace: &str, name: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {namespace}\n{extra}\
         spec:\n  containers:\n  - name: app\n    image: app\n"
    )
}

/// A pod document with `status.podIP`.
fn pod_at(namespace: &str, name: &str, ip: &str) -> String {
    format!("{}status:\n  podIP: {ip}\n", pod(namespace, name, ""))
}

/// A Deployment of `replicas` pods labelled `app: <name>`, with container port `http` 8080.
fn deployment(namespace: &str, name: &str, replicas: i64) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
         spec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n\
         \x20   metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers:\n\
         \x20     - name: app\n        image: app\n        ports: [{{name: http, containerPort: 8080}}]\n"
    )
}

/// A Service selecting `app: <app>`, port 80 to `target`.
fn service(namespace: &str, name: &str, app: &str, target: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
         spec:\n  selector: {{app: {app}}}\n  ports: [{{name: http, port: 80, targetPort: {target}}}]\n"
    )
}

fn namespace(name: &str, labels: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {{{labels}}}}}\n")
}

fn docs(parts: &[&str]) -> String {
    parts
        .iter()
        .map(|p| format!("---\n{p}"))
        .collect::<Vec<_>>()
        .join("")
}
