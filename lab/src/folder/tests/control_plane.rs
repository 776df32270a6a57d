//! What the control plane reads: written whole, accepted by its own loader, answering with the
//! endpoints the folder means.

use std::{net::SocketAddr, sync::Arc};

use weft_control_plane_config::{
    index::{Answer, Lookup, Target},
    yaml::load_text,
};

use super::*;

/// Two namespaces (one labelled for injection), three Services, a Deployment of two, an
/// unmeshed client, a route passed through.
fn shop() -> Folder {
    whole(&[
        (
            "00-namespaces.yaml",
            &docs(&[
                &namespace("shop", "weft.dev/inject: enabled"),
                &namespace("web", ""),
                "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: api, namespace: shop}\n",
            ]),
        ),
        (
            "10-api.yaml",
            &docs(&[
                &deployment("shop", "api", 2)
                    .replace("    spec:\n", "    spec:\n      serviceAccountName: api\n"),
                &service("shop", "api", "api", "http"),
            ]),
        ),
        (
            "20-web.yaml",
            &docs(&[
                &format!(
                    "{}status: {{podIP: 198.18.0.40}}\n",
                    pod(
                        "web",
                        "front",
                        "  labels: {app: front}\n  annotations: {weft.dev/inject: enabled}\n"
                    )
                ),
                &format!(
                    "{}status: {{podIP: 198.18.0.41}}\n",
                    pod("web", "client", "")
                ),
                &service("web", "front", "front", "8080")
                    .replace("spec:\n", "spec:\n  clusterIP: 198.19.0.40\n"),
                &service("web", "plain", "plain", "80"),
                &pod("web", "plain", "  labels: {app: plain}\n"),
                "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
                 metadata: {name: front, namespace: web}\n\
                 spec: {parentRefs: [{kind: Service, name: front, port: 80}]}\n",
            ]),
        ),
    ])
}

fn endpoints(lookup: &Lookup, addr: SocketAddr) -> Vec<(String, Option<String>)> {
    match lookup.answer(&Target::Addr(addr)) {
        Answer::Endpoints { endpoints, .. } => endpoints
            .values()
            .map(|e| {
                (
                    e.address.clone(),
                    e.mesh.as_ref().map(|m| m.identity.clone()),
                )
            })
            .collect(),
        Answer::NotAService => panic!("{addr} is not a Service"),
    }
}

#[test]
fn what_is_written_is_what_the_control_plane_reads() {
    let folder = shop();
    let text = render_for_control_plane(&folder).expect("render");
    let snapshot = load_text(Path::new(CONTROL_PLANE_FILE), &text)
        .unwrap_or_else(|e| panic!("the control plane refuses it: {e:?}\n{text}"));
    assert_eq!(snapshot.pods.len(), 5);
    assert_eq!(snapshot.services.len(), 3);
    assert_eq!(snapshot.endpoint_slices.len(), 3);
    let lookup = Lookup::new(Arc::new(snapshot), "cluster.local");

    let api = &folder.services[&key("shop", "api")];
    let mut want: Vec<(String, Option<String>)> = folder
        .pods
        .values()
        .filter(|p| p.deployment.is_some())
        .map(|p| {
            assert_eq!(p.injection, Injection::NamespaceLabel);
            (
                p.addr(8080).to_string(),
                Some("spiffe://cluster.local/ns/shop/sa/api".to_string()),
            )
        })
        .collect();
    want.sort();
    assert_eq!(
        endpoints(&lookup, api.addr(80).expect("a cluster IP")),
        want
    );

    let front = &folder.services[&key("web", "front")];
    assert_eq!(front.cluster_ip, Some(ip("198.19.0.40")));
    assert_eq!(
        endpoints(&lookup, front.addr(80).expect("a cluster IP")),
        [(
            "198.18.0.40:8080".to_string(),
            Some("spiffe://cluster.local/ns/web/sa/default".to_string())
        )],
        "meshed by its annotation in an unlabelled namespace"
    );
    let plain = &folder.services[&key("web", "plain")];
    let plain_pod = &folder.pods[&key("web", "plain")];
    assert_eq!(
        endpoints(&lookup, plain.addr(80).expect("a cluster IP")),
        [(plain_pod.addr(80).to_string(), None)],
        "an unmeshed pod is reached in plaintext"
    );
    // A meshed pod's own address answers with its identity; an unmeshed one is not a Service.
    assert_eq!(
        endpoints(&lookup, SocketAddr::from((ip("198.18.0.40"), 8080))),
        [(
            "198.18.0.40:8080".to_string(),
            Some("spiffe://cluster.local/ns/web/sa/default".to_string())
        )]
    );
    assert_eq!(
        lookup.answer(&Target::Addr(SocketAddr::from((ip("198.18.0.41"), 8080)))),
        Answer::NotAService
    );
    // The passed-through route is there as read.
    assert!(text.contains("kind: HTTPRoute"), "{text}");
    assert!(
        !text.contains("kind: Deployment"),
        "pods, not Deployments: {text}"
    );
}

#[test]
fn meshed_pods_carry_the_injectors_marks_and_unmeshed_ones_do_not() {
    let folder = shop();
    let text = render_for_control_plane(&folder).expect("render");
    let snapshot = load_text(Path::new("x.yaml"), &text).expect("loads");
    for (k, pod) in &folder.pods {
        let written = &snapshot.pods[k];
        let annotations = written.metadata.annotations.clone().unwrap_or_default();
        let containers: Vec<&str> = written
            .spec
            .iter()
            .flat_map(|s| s.containers.iter().map(|c| c.name.as_str()))
            .collect();
        assert_eq!(
            weft_pod::decide(&annotations, containers.iter().copied()).is_meshed(),
            pod.is_meshed(),
            "{k:?}: {containers:?} {annotations:?}"
        );
        assert_eq!(
            annotations.contains_key("weft.dev/injected"),
            pod.is_meshed(),
            "{k:?}"
        );
        assert_eq!(
            containers.iter().filter(|c| **c == "weft-proxy").count(),
            usize::from(pod.is_meshed())
        );
        assert_eq!(
            pod.as_injected().metadata.annotations.unwrap_or_default(),
            annotations,
            "{k:?}: what weft-cni is given is what the control plane reads"
        );
        let status = written.status.as_ref().expect("status");
        assert_eq!(status.pod_ip.as_deref(), Some(pod.ip.to_string().as_str()));
        assert_eq!(status.phase.as_deref(), Some("Running"));
    }
}

#[test]
fn the_file_is_written_whole_by_a_rename() {
    let folder = shop();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_for_control_plane(&folder, dir.path()).expect("write");
    assert_eq!(path, dir.path().join(CONTROL_PLANE_FILE));
    let text = std::fs::read_to_string(&path).expect("read");
    assert_eq!(text, render_for_control_plane(&folder).expect("render"));
    // The lab's own read of the out folder sees only the control plane's file: no temp file.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    assert_eq!(names, [CONTROL_PLANE_FILE]);
    // Rewritten after an edit: replaced, still one file.
    let smaller = whole(&[("a.yaml", &pod("default", "a", ""))]);
    write_for_control_plane(&smaller, dir.path()).expect("rewrite");
    let snapshot = load_text(&path, &std::fs::read_to_string(&path).expect("read")).expect("loads");
    assert_eq!(snapshot.pods.len(), 1);
    assert!(snapshot.services.is_empty());

    let missing = dir.path().join("missing");
    let e = write_for_control_plane(&folder, &missing).expect_err("no folder");
    assert!(e.to_string().contains("missing"), "{e}");
}

#[test]
fn a_folder_with_refusals_still_writes_what_the_control_plane_accepts() {
    let folder = load(&[(
        "a.yaml",
        &docs(&[
            &pod_at("default", "a", "198.18.0.50"),
            &pod_at("default", "b", "198.18.0.50"),
            &deployment("default", "web", -1),
            &service("default", "a", "a", "80"),
            "kind: [oops\n",
        ]),
    )]);
    assert_eq!(folder.refused.len(), 3, "{:#?}", folder.refused);
    let text = render_for_control_plane(&folder).expect("render");
    let snapshot = load_text(Path::new("x.yaml"), &text).expect("the usable rest loads");
    assert_eq!(snapshot.pods.len(), 1);
}
