//! The lab leaves nothing behind: once a cluster's handles are dropped, none of the
//! namespaces it made is left (`ip netns list`), the proxies it started are gone, and its temp
//! dir is deleted; also when the test body panics. A pod dropped while its cluster lives gets
//! a CNI `DEL`: host-local frees its address and weft-cni removes its rules.

mod support;

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    path::{Path, PathBuf},
    sync::Mutex,
};

use weft_lab::{netns, Cluster, PodSpec};

/// What a cluster made, to look for after it is gone.
#[derive(Debug, Default)]
struct Made {
    namespaces: Vec<String>,
    pids: Vec<u32>,
    dir: PathBuf,
}

/// A cluster with a meshed and an unmeshed pod; records what it made in `made`.
fn build(c: &Cluster, made: &Mutex<Made>) -> Vec<weft_lab::Pod> {
    let a = c
        .pod(PodSpec::new("shop", "a").service_account("web").meshed())
        .expect("pod a");
    let u = c.pod(PodSpec::new("shop", "u")).expect("pod u");
    let mut m = made.lock().expect("lock");
    m.namespaces = vec![
        c.node().name().to_string(),
        a.netns().name().to_string(),
        u.netns().name().to_string(),
    ];
    m.pids = a.proxy_pid().into_iter().collect();
    m.dir = c.dir().to_path_buf();
    assert_eq!(m.pids.len(), 1, "a's proxy runs");
    vec![a, u]
}

/// Nothing in `made` exists any more.
fn assert_gone(made: &Made) {
    assert_eq!(made.namespaces.len(), 3, "{made:?}");
    let left: Vec<String> = netns::list()
        .expect("ip netns list")
        .into_iter()
        .filter(|n| made.namespaces.contains(n))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    for pid in &made.pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "the proxy {pid} is still there (not killed, or not reaped)"
        );
    }
    assert!(!made.dir.exists(), "{} left behind", made.dir.display());
}

#[test]
fn dropping_the_cluster_leaves_nothing_behind() {
    let Some(c) = support::cluster("dropping_the_cluster_leaves_nothing_behind") else {
        return;
    };
    let made = Mutex::new(Made::default());
    let pods = build(&c, &made);
    let made = made.into_inner().expect("lock");
    let listed = netns::list().expect("ip netns list");
    for ns in &made.namespaces {
        assert!(listed.contains(ns), "{ns} exists while the cluster does");
    }

    // One pod dropped while the cluster lives: CNI DEL ran for it.
    let [a, u]: [weft_lab::Pod; 2] = pods.try_into().expect("two pods");
    let lease = c
        .dir()
        .join("ipam")
        .join(weft_lab::cluster::NETWORK)
        .join(a.ip().to_string());
    assert!(
        lease.exists(),
        "host-local holds a's address: {}",
        lease.display()
    );
    drop(a);
    assert!(!lease.exists(), "host-local freed a's address on DEL");
    assert!(
        c.weft_cni_log().contains("redirect rules removed"),
        "weft-cni's DEL removed a's rules:\n{}",
        c.weft_cni_log()
    );
    assert!(
        !netns::list().expect("list").contains(&made.namespaces[1]),
        "a's namespace is deleted with it"
    );

    drop(u);
    drop(c);
    assert_gone(&made);
}

#[test]
fn a_panicking_test_leaves_nothing_behind() {
    let Some(c) = support::cluster("a_panicking_test_leaves_nothing_behind") else {
        return;
    };
    let made = Mutex::new(Made::default());
    // The lab prints the proxy's, control plane's and weft-cni's logs while unwinding:
    // that is part of what is checked here, and why this test's output is noisy.
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let _pods = build(&c, &made);
        drop(c);
        panic!("a deliberate failure, to check the cleanup on unwinding");
    }));
    assert!(outcome.is_err(), "the body panicked");
    let made = made.into_inner().unwrap_or_else(|p| p.into_inner());
    assert_gone(&made);
}
