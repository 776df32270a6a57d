//! Addresses: honoured in the pools, chosen otherwise, never twice, stable across edits.

use super::*;
use crate::cluster::{FIRST_SERVICE_IP, GATEWAY, POD_SUBNET};

fn svc_ip(folder: &Folder, namespace: &str, name: &str) -> Option<Ipv4Addr> {
    folder.services[&key(namespace, name)].cluster_ip
}

fn service_at(name: &str, cluster_ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\n\
         spec: {{clusterIP: {cluster_ip}, selector: {{app: x}}, ports: [{{port: 80}}]}}\n"
    )
}

#[test]
fn the_pools_agree_with_the_cluster() {
    assert_eq!(POD_POOL.subnet, POD_SUBNET);
    assert!(!POD_POOL.contains(GATEWAY), "the node's address");
    assert_eq!(POD_POOL.first, ip("198.18.0.10"), ".1 to .9 stay free");
    assert_eq!(POD_POOL.size(), 245);
    assert_eq!(SERVICE_POOL.first, FIRST_SERVICE_IP);
    assert_eq!(SERVICE_POOL.size(), 245);
    assert!(!SERVICE_POOL.contains(ip("198.18.0.10")) && !POD_POOL.contains(ip("198.19.0.10")));
}

#[test]
fn addresses_in_the_pools_are_honoured_and_others_chosen_with_a_note() {
    let folder = whole(&[(
        "a.yaml",
        &docs(&[
            &pod_at("default", "a", "198.18.0.50"),
            &pod_at("default", "b", "10.0.0.5"),
            &pod_at("default", "c", "198.18.0.5"),
            &pod_at("default", "d", "fd00::1"),
            &pod("default", "e", ""),
            &service_at("s1", "198.19.0.77"),
            &service_at("s2", "10.96.0.1"),
            &service_at("s3", "\"\""),
            &service_at("headless", "None"),
            "apiVersion: v1\nkind: Service\nmetadata: {name: ext}\n\
             spec: {type: ExternalName, externalName: example.com}\n",
        ]),
    )]);
    let pods: Vec<(&str, Ipv4Addr)> = folder
        .pods
        .iter()
        .map(|((_, n), p)| (n.as_str(), p.ip))
        .collect();
    assert_eq!(
        pods,
        [
            ("a", ip("198.18.0.50")),
            ("b", ip("198.18.0.10")),
            ("c", ip("198.18.0.11")),
            ("d", ip("198.18.0.12")),
            ("e", ip("198.18.0.13")),
        ]
    );
    assert_eq!(svc_ip(&folder, "default", "s1"), Some(ip("198.19.0.77")));
    assert_eq!(svc_ip(&folder, "default", "s2"), Some(ip("198.19.0.10")));
    assert_eq!(svc_ip(&folder, "default", "s3"), Some(ip("198.19.0.11")));
    assert_eq!(svc_ip(&folder, "default", "headless"), None);
    assert_eq!(svc_ip(&folder, "default", "ext"), None);
    let notes: Vec<(usize, &str)> = folder
        .notes
        .iter()
        .map(|n| (n.document, n.field.as_str()))
        .collect();
    assert_eq!(
        notes,
        [
            (1, "status.podIP"),
            (2, "status.podIP"),
            (3, "status.podIP"),
            (6, "spec.clusterIP")
        ]
    );
    let note = folder.notes[0].to_string();
    assert!(
        note.contains("10.0.0.5 is outside the lab's 198.18.0.10 to 198.18.0.254 (198.18.0.0/24)")
            && note.contains("pod default/b"),
        "{note}"
    );
}

#[test]
fn an_address_asked_for_twice_is_refused_naming_both_objects() {
    let folder = load(&[
        ("a.yaml", &pod_at("default", "a", "198.18.0.50")),
        (
            "b.yaml",
            &docs(&[
                &pod("default", "x", ""),
                &pod_at("default", "b", "198.18.0.50"),
            ]),
        ),
    ]);
    refused_once(
        &folder,
        "b.yaml",
        1,
        "status.podIP",
        "198.18.0.50 is asked for twice",
    );
    let reason = &folder.refused[0].reason;
    assert!(
        reason.contains("pod default/b wants it")
            && reason.contains("pod default/a (a.yaml document 0) asks for it first"),
        "{reason}"
    );
    assert_eq!(folder.pods[&key("default", "a")].ip, ip("198.18.0.50"));
    assert!(!folder.pods.contains_key(&key("default", "b")));
    assert!(
        folder.pods.contains_key(&key("default", "x")),
        "the rest loads"
    );

    // A Service's cluster IP outside the pool is replaced; one already taken is refused.
    let folder = load(&[(
        "s.yaml",
        &docs(&[
            &service_at("first", "198.19.0.20"),
            &service_at("outside", "10.96.0.20"),
            &service_at("taken", "198.19.0.20"),
        ]),
    )]);
    refused_once(
        &folder,
        "s.yaml",
        2,
        "spec.clusterIP",
        "198.19.0.20 is asked for twice",
    );
    assert!(folder.refused[0]
        .reason
        .contains("Service default/first (s.yaml document 0)"));
    assert_eq!(
        svc_ip(&folder, "default", "outside"),
        Some(ip("198.19.0.10"))
    );
    assert_eq!(folder.notes.len(), 1, "{:#?}", folder.notes);
    assert!(!folder.services.contains_key(&key("default", "taken")));
}

#[test]
fn an_edit_moves_no_existing_pod_or_service() {
    let v1_files = [
        (
            "b.yaml",
            docs(&[&pod("default", "p1", ""), &pod("default", "p2", "")]),
        ),
        ("c.yaml", deployment("default", "web", 2)),
        (
            "d.yaml",
            docs(&[&service_at("s1", "\"\""), &service_at("s2", "\"\"")]),
        ),
    ];
    let files: Vec<(&str, &str)> = v1_files.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let v1 = whole(&files);
    let before = v1.addresses();
    assert_eq!(before.pods.len(), 4);
    assert_eq!(before.services.len(), 2);

    // New objects first in folder order, p2 removed, web scaled up.
    let v2_files = [
        (
            "a.yaml",
            docs(&[&pod("default", "p0", ""), &service_at("s0", "\"\"")]),
        ),
        ("b.yaml", pod("default", "p1", "")),
        ("c.yaml", deployment("default", "web", 3)),
        (
            "d.yaml",
            docs(&[&service_at("s1", "\"\""), &service_at("s2", "\"\"")]),
        ),
    ];
    let files: Vec<(&str, &str)> = v2_files.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let v2 = load_after(&files, &before);
    assert!(v2.is_whole(), "{:#?}", v2.refused);
    for (k, old) in &before.pods {
        if k.1 != "p2" {
            assert_eq!(v2.pods[k].ip, *old, "{k:?} moved");
        }
    }
    for (k, old) in &before.services {
        assert_eq!(v2.services[k].cluster_ip, Some(*old), "{k:?} moved");
    }
    // New pods get addresses nobody held, not p2's freed one.
    let p2 = before.pods[&key("default", "p2")];
    let new: Vec<Ipv4Addr> = v2
        .pods
        .iter()
        .filter(|(k, _)| !before.pods.contains_key(*k))
        .map(|(_, p)| p.ip)
        .collect();
    assert_eq!(new.len(), 2);
    assert!(
        new.iter()
            .all(|ip| *ip != p2 && !before.pods.values().any(|b| b == ip)),
        "{new:?}"
    );
    // The same read again changes nothing.
    assert_eq!(
        load_after(&files, &v2.addresses()).addresses(),
        v2.addresses()
    );
    // Without the earlier addresses, p0 (first in folder order) would have taken p1's.
    let fresh = load(&files);
    assert_eq!(
        fresh.pods[&key("default", "p0")].ip,
        before.pods[&key("default", "p1")]
    );
}

#[test]
fn a_new_request_for_an_address_held_from_before_is_refused_and_an_edited_one_moves() {
    let v1 = whole(&[(
        "a.yaml",
        &docs(&[
            &pod("default", "a", ""),
            &pod_at("default", "m", "198.18.0.50"),
        ]),
    )]);
    let held = v1.pods[&key("default", "a")].ip;
    let v2 = load_after(
        &[(
            "a.yaml",
            &docs(&[
                &pod("default", "a", ""),
                &pod_at("default", "m", "198.18.0.60"),
                &pod_at("default", "b", &held.to_string()),
            ]),
        )],
        &v1.addresses(),
    );
    refused_once(
        &v2,
        "a.yaml",
        2,
        "status.podIP",
        "has had it since an earlier read",
    );
    assert_eq!(v2.pods[&key("default", "a")].ip, held);
    assert_eq!(
        v2.pods[&key("default", "m")].ip,
        ip("198.18.0.60"),
        "an edited podIP is honoured"
    );
}

#[test]
fn an_exhausted_pool_refuses_what_does_not_fit() {
    let folder = load(&[
        ("a.yaml", &deployment("default", "web", 245)),
        ("b.yaml", &pod("default", "late", "")),
    ]);
    refused_once(
        &folder,
        "b.yaml",
        0,
        "status.podIP",
        "no free address left for pod default/late",
    );
    assert_eq!(folder.pods.len(), 245);
    let ips: std::collections::BTreeSet<Ipv4Addr> = folder.pods.values().map(|p| p.ip).collect();
    assert_eq!(ips.len(), 245, "all distinct");
    assert!(ips.iter().all(|ip| POD_POOL.contains(*ip)));

    let services: Vec<String> = (0..246)
        .map(|i| service_at(&format!("s{i}"), "\"\""))
        .collect();
    let text = docs(&services.iter().map(String::as_str).collect::<Vec<_>>());
    let folder = load(&[("s.yaml", &text)]);
    refused_once(
        &folder,
        "s.yaml",
        245,
        "spec.clusterIP",
        "no free address left for Service default/s245",
    );
}
