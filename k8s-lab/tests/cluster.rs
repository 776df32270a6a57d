//! The harness itself: a cluster that fails to start names the component and shows its log,
//! and teardown leaves nothing behind, also when the code holding the cluster panics.
//!
//! Root-only and needs `make k8s` (skips loudly otherwise; `WEFT_REQUIRE_K8S_TESTS=1` makes a
//! skip a failure). Each test starts its own cluster without DNS (about ten seconds).

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    panic,
    path::Path,
    sync::{Mutex, MutexGuard},
};

use weft_k8s_lab::{
    bins::{self, K8sBins, BUILT},
    cluster::{leftovers, PREFIX, STATE_PARENT},
    Cluster, ClusterOptions, Error,
};

/// One cluster at a time: the checks for leftovers look at the whole machine.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn options() -> ClusterOptions {
    ClusterOptions {
        skip_dns: true,
        ..ClusterOptions::default()
    }
}

/// The clusters this process has made so far, by name.
fn ours() -> Vec<String> {
    let prefix = format!("{PREFIX}-{}-", std::process::id());
    fs::read_dir(STATE_PARENT)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_component_that_fails_is_named_with_its_log_and_nothing_is_left() {
    if !bins::run_or_skip("cluster start failure", bins::why_not()) {
        return;
    }
    let _one = one_at_a_time();
    // The real binaries, but a kube-apiserver that refuses to start.
    let real = K8sBins::locate().expect("the Kubernetes binaries");
    let dir = tempfile::tempdir().expect("tempdir");
    for name in BUILT {
        std::os::unix::fs::symlink(real.get(name), dir.path().join(name)).expect("link");
    }
    let broken = dir.path().join("kube-apiserver");
    fs::remove_file(&broken).expect("unlink");
    fs::write(
        &broken,
        "#!/bin/sh\necho 'E0101 injected failure: --etcd-servers is unreachable' >&2\nexit 1\n",
    )
    .expect("write");
    fs::set_permissions(&broken, fs::Permissions::from_mode(0o755)).expect("chmod");

    let started = Cluster::start(&ClusterOptions {
        bins: Some(K8sBins::in_dir(dir.path()).expect("the binaries, one broken")),
        ..options()
    });
    let err = started.expect_err("a cluster without an API server cannot start");
    let Error::Component {
        component, tail, ..
    } = &err
    else {
        panic!("not a component failure: {err}");
    };
    assert_eq!(component, "kube-apiserver", "{err}");
    assert!(
        tail.contains("injected failure"),
        "the log's end is shown: {err}"
    );
    let left: Vec<(String, Vec<String>)> = ours()
        .into_iter()
        .map(|name| {
            let what = leftovers(&name);
            (name, what)
        })
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn teardown_leaves_nothing_when_the_holder_panics() {
    if !bins::run_or_skip("cluster teardown on panic", bins::why_not()) {
        return;
    }
    let _one = one_at_a_time();
    let outcome = panic::catch_unwind(|| {
        let cluster = Cluster::start(&options()).expect("a cluster");
        let name = cluster.name().to_string();
        // Something to tear down beyond the components: a running pod (its sandbox, mounts,
        // network namespace, veth and cgroups).
        cluster
            .kubectl()
            .apply(
                "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: default}\nspec:\n  containers:\n  - {name: c, image: weft.local/pause:v1, imagePullPolicy: Never}\n",
            )
            .expect("a pod");
        cluster
            .kubectl()
            .run(&["wait", "--for=condition=Ready", "pod/p", "--timeout=60s"])
            .expect("the pod Ready");
        let veths = cluster
            .node()
            .ip(&["-o", "link", "show", "type", "veth"])
            .expect("ip link");
        assert!(!veths.trim().is_empty(), "the pod has its veth on the node");
        panic!("injected panic in {name}");
    });
    let message = outcome.expect_err("the closure panics");
    let message = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    let name = message
        .strip_prefix("injected panic in ")
        .unwrap_or_else(|| panic!("unexpected panic: {message}"));
    assert_eq!(leftovers(name), Vec::<String>::new(), "after the panic");
    assert!(
        !Path::new("/run/containerd").exists(),
        "no /run/containerd left on the host"
    );
}

#[test]
fn a_cluster_whose_process_was_killed_is_swept_by_the_next_start() {
    use std::{
        io::{BufRead, BufReader},
        process::{Command, Stdio},
        sync::mpsc,
        time::Duration,
    };
    if !bins::run_or_skip("sweep after SIGKILL", bins::why_not()) {
        return;
    }
    let _one = one_at_a_time();
    // `make cluster`'s binary, killed with no chance to tear down.
    let mut child = Command::new(env!("CARGO_BIN_EXE_weft-k8s-lab"))
        .args(["up", "--no-dns"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("weft-k8s-lab up");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("node namespace ").nth(1) {
                let _ = tx.send(rest.trim_end_matches('.').to_string());
            }
        }
    });
    let name = rx.recv_timeout(Duration::from_secs(120));
    let _ = child.kill();
    let _ = child.wait();
    let name = name.expect("the cluster came up and said its name");
    assert!(
        !leftovers(&name).is_empty(),
        "a killed owner leaves its cluster behind"
    );

    let next = Cluster::start(&options()).expect("the next cluster");
    assert_eq!(
        leftovers(&name),
        Vec::<String>::new(),
        "swept by the next start"
    );
    drop(next);
}
