//! `weftctl lab` end to end, as a user runs it: `up` on a folder of YAML in the background,
//! requests from a client pod through every Service, a live edit, a malformed document, and
//! `down` leaving nothing behind.

mod support;

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::Command,
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use support::weftctl::{entry_with, weftctl, Up};
use weft_lab::{
    netns::{self, Netns},
    registry::Registry,
    wait, Metrics,
};

const FOLDER: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels: {weft.dev/inject: enabled}
---
apiVersion: v1
kind: Namespace
metadata: {name: ops}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      serviceAccountName: api
      containers: [{name: api, image: example/api, ports: [{name: http, containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  clusterIP: 198.19.0.20
  selector: {app: api}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: catalog, namespace: shop, labels: {app: catalog}}
spec:
  serviceAccountName: catalog
  containers: [{name: catalog, image: example/catalog, ports: [{containerPort: 9090}]}]
---
apiVersion: v1
kind: Service
metadata: {name: catalog, namespace: shop}
spec:
  clusterIP: 198.19.0.21
  selector: {app: catalog}
  ports: [{name: http, port: 80, targetPort: 9090}]
---
apiVersion: v1
kind: Pod
metadata: {name: collector, namespace: ops, labels: {app: collector}}
spec:
  containers: [{name: collector, image: example/collector, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: collector, namespace: ops}
spec:
  clusterIP: 198.19.0.22
  selector: {app: collector}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop}
spec:
  serviceAccountName: web
  containers: [{name: client, image: example/client}]
"#;

/// The echo app's JSON for `GET path` to `dst`, sent from inside `pod`.
fn get(pod: &Netns, dst: SocketAddr, path: &str) -> serde_json::Value {
    let reply = weft_lab::http::get(pod, dst, &dst.ip().to_string(), path)
        .unwrap_or_else(|e| panic!("GET {dst}{path}: {e}"));
    assert_eq!(reply.status, 200, "GET {dst}{path}: {reply:?}");
    serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("{e}: {}", reply.body))
}

#[test]
fn weftctl_lab_runs_a_folder_live_and_down_removes_it() {
    if !weft_lab::prereq::should_run("weftctl lab") {
        return;
    }
    let folder = tempfile::tempdir().expect("tempdir");
    std::fs::write(folder.path().join("shop.yaml"), FOLDER).expect("write the folder");
    let name = format!("e2e-{}", std::process::id());
    let up = Up::start(folder.path(), &name);
    let lab = entry_with(&name, 5, &up);
    let prefix = lab.node.trim_end_matches("-node").to_string();

    let client = lab.pod("shop", "client").expect("the client pod");
    assert!(
        client.identity.is_some(),
        "shop's pods are meshed: {client:?}"
    );
    let collector = lab.pod("ops", "collector").expect("the collector pod");
    assert_eq!(collector.identity, None, "ops' pods are not");
    let from = Netns::attach(&client.netns).expect("the client's namespace");

    // Every Service through its cluster IP, answered by one of its pods.
    let api_pods: Vec<String> = lab
        .pods
        .iter()
        .filter(|p| p.name.starts_with("api-"))
        .map(|p| p.name.clone())
        .collect();
    assert_eq!(api_pods.len(), 2, "{:?}", lab.pods);
    for (ip, service, pods) in [
        ([198, 19, 0, 20], "api", api_pods.clone()),
        ([198, 19, 0, 21], "catalog", vec!["catalog".to_string()]),
        ([198, 19, 0, 22], "collector", vec!["collector".to_string()]),
    ] {
        let json = get(&from, SocketAddr::from((ip, 80)), &format!("/to/{service}"));
        assert_eq!(json["service"], service, "{json}");
        assert!(pods.iter().any(|p| json["pod"] == p.as_str()), "{json}");
        assert_eq!(json["path"], format!("/to/{service}"), "{json}");
    }
    // `lab exec` runs a command in a pod, Service names resolving as cluster DNS resolves
    // them: bare from the Service's namespace, qualified from anywhere.
    for (pod, url, service) in [
        ("shop/client", "http://api/exec", "api"),
        ("shop/client", "http://collector.ops/exec", "collector"),
        (
            "ops/collector",
            "http://catalog.shop.svc.cluster.local/exec",
            "catalog",
        ),
    ] {
        let out = Command::new(weftctl())
            .args([
                "lab", "exec", "--lab", &name, pod, "--", "curl", "-sS", "-m", "5", url,
            ])
            .output()
            .expect("weftctl lab exec");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "exec {pod} curl {url}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(json["service"], service, "{json}");
    }
    let out = Command::new(weftctl())
        .args([
            "lab",
            "exec",
            "--lab",
            &name,
            "-n",
            "ops",
            "collector",
            "--",
            "getent",
            "hosts",
            "api",
        ])
        .output()
        .expect("weftctl lab exec");
    assert!(
        !out.status.success(),
        "a bare name of another namespace does not resolve"
    );
    assert!(
        std::fs::read_to_string("/etc/hosts").is_ok_and(|h| !h.contains("svc.cluster.local")),
        "the machine's /etc/hosts is untouched"
    );

    // A pod's own address, with no Service.
    let catalog = lab.pod("shop", "catalog").expect("catalog");
    let ip: Ipv4Addr = catalog.ip.parse().expect("an IP");
    let json = get(&from, SocketAddr::from((ip, 9090)), "/direct");
    assert_eq!(json["pod"], "catalog", "{json}");

    // The meshed calls went over mTLS, with the callee's identity.
    let metrics = weft_lab::http::get(
        &from,
        SocketAddr::from((Ipv4Addr::LOCALHOST, 15190)),
        "localhost",
        "/metrics",
    )
    .expect("the client's proxy metrics");
    let m = Metrics::parse(&metrics.body).expect("metrics");
    for callee in ["api", "catalog"] {
        let id = weft_lab::spiffe_id("shop", callee);
        let n = m.sum(
            "weft_requests_total",
            &[("server_id", id.as_str()), ("tls", "true")],
        );
        assert!(n >= 1.0, "mTLS to {callee}:\n{}", metrics.body);
    }

    // A malformed document is refused with its file and field; the rest keeps serving.
    std::fs::write(
        folder.path().join("zz-bad.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: broken, namespace: shop}\nspec:\n  replicas: -1\n  selector: {matchLabels: {app: b}}\n  template:\n    metadata: {labels: {app: b}}\n    spec: {containers: [{name: b, image: b}]}\n",
    )
    .expect("write the bad file");
    wait::until("the refusal to be printed", Duration::from_secs(10), || {
        let out = up.output();
        (out.contains("zz-bad.yaml") && out.contains("replicas")).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}:\n{}", up.output()));
    let json = get(&from, SocketAddr::from(([198, 19, 0, 21], 80)), "/still");
    assert_eq!(json["pod"], "catalog", "{json}");

    // An edit that removes a pod: scale the Deployment to one replica. While the folder
    // refuses a document, the last good set keeps running: the edit waits for the fix.
    let edited = std::fs::read_to_string(folder.path().join("shop.yaml"))
        .expect("read")
        .replace("replicas: 2", "replicas: 1");
    std::fs::write(folder.path().join("shop.yaml"), edited).expect("edit");
    wait::until(
        "the edit to be read and held",
        Duration::from_secs(10),
        || {
            (up.output()
                .matches("keeps running the last good set")
                .count()
                >= 2)
                .then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}:\n{}", up.output()));
    assert_eq!(
        Registry::system()
            .find(Some(&name))
            .expect("the lab")
            .pods
            .len(),
        5,
        "nothing applied while a document is refused"
    );
    let edit = Instant::now();
    std::fs::remove_file(folder.path().join("zz-bad.yaml")).expect("fix the folder");
    let lab = entry_with(&name, 4, &up);
    println!(
        "the removal took effect {:?} after the edit",
        edit.elapsed()
    );
    let left: Vec<&str> = lab
        .pods
        .iter()
        .filter(|p| p.name.starts_with("api-"))
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(left.len(), 1, "{:?}", lab.pods);
    for i in 0..6 {
        let json = get(
            &from,
            SocketAddr::from(([198, 19, 0, 20], 80)),
            &format!("/after/{i}"),
        );
        assert_eq!(
            json["pod"], left[0],
            "only the remaining replica answers: {json}"
        );
    }
    drop(from);

    // `down` stops it; nothing of it is left.
    let down = Command::new(weftctl())
        .args(["lab", "down", "--lab", &name])
        .output()
        .expect("weftctl lab down");
    assert!(
        down.status.success(),
        "{}{}",
        String::from_utf8_lossy(&down.stdout),
        String::from_utf8_lossy(&down.stderr)
    );
    let left: Vec<String> = netns::list()
        .expect("ip netns list")
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert_eq!(left, Vec::<String>::new(), "namespaces left");
    assert!(
        Registry::system().find(Some(&name)).is_err(),
        "the registry entry is gone"
    );
    assert!(!lab.dir.exists(), "{} is gone", lab.dir.display());
    drop(up);
}

#[test]
fn a_panic_while_a_lab_runs_leaves_nothing_behind() {
    if !weft_lab::prereq::should_run("lab run panic") {
        return;
    }
    let folder = tempfile::tempdir().expect("tempdir");
    std::fs::write(folder.path().join("shop.yaml"), FOLDER).expect("write the folder");
    let registry_dir = tempfile::tempdir().expect("tempdir");
    let registry = Registry::at(registry_dir.path());
    let stop = std::sync::atomic::AtomicBool::new(false);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let run = weft_lab::run::LabRun::start(
            registry.clone(),
            "panics",
            folder.path(),
            &stop,
            &mut |_| {},
        )
        .expect("the lab starts");
        assert_eq!(run.entry().pods.len(), 5);
        let made = (
            run.entry().node.trim_end_matches("-node").to_string(),
            run.entry().dir.clone(),
        );
        assert_eq!(
            registry.list().expect("the registry"),
            vec![run.entry().clone()],
            "registered while it runs"
        );
        std::panic::panic_any(made);
    }));
    let payload = outcome.expect_err("the closure panics");
    let (prefix, dir) = payload
        .downcast_ref::<(String, PathBuf)>()
        .cloned()
        .expect("the injected panic");
    let left: Vec<String> = netns::list()
        .expect("ip netns list")
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert_eq!(left, Vec::<String>::new(), "namespaces left");
    assert!(!dir.exists(), "{} is gone", dir.display());
    assert_eq!(
        registry.list().expect("the registry"),
        Vec::new(),
        "entry removed"
    );
    let procs: Vec<String> = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).into_owned())
        .filter(|c| c.contains(&dir.to_string_lossy().into_owned()))
        .collect();
    assert_eq!(procs, Vec::<String>::new(), "processes of the lab left");
}

/// `weftctl ARGS` within a minute; its stdout, after checking it succeeded.
fn weftctl_ok(args: &[&str]) -> String {
    let out = Command::new(weftctl())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("weftctl {args:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "weftctl {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// JSON lines, each parsed.
fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn weftctl_tap_and_top_show_a_labs_requests_live() {
    if !weft_lab::prereq::should_run("weftctl tap") {
        return;
    }
    let folder = tempfile::tempdir().expect("tempdir");
    std::fs::write(folder.path().join("shop.yaml"), FOLDER).expect("write the folder");
    let name = format!("tap-{}", std::process::id());
    let up = Up::start(folder.path(), &name);
    let lab = entry_with(&name, 5, &up);
    let client = lab.pod("shop", "client").expect("the client pod").clone();

    // Traffic from the client to api, two paths, for as long as the test taps (bounded).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        thread::spawn(move || {
            let from = Netns::attach(&client.netns).expect("the client's namespace");
            let api = SocketAddr::from(([198, 19, 0, 20], 80));
            let mut sent = 0;
            for i in 0..3000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let path = if i % 3 == 0 { "/tap/b" } else { "/tap/a" };
                if weft_lab::http::get(&from, api, "api", path).is_ok_and(|r| r.status == 200) {
                    sent += 1;
                }
                thread::sleep(Duration::from_millis(20));
            }
            sent
        })
    };

    let lab_args = ["--lab", name.as_str(), "-n", "shop", "--duration", "30s"];
    // The api replicas' inbound side: the client's calls, with both identities over mTLS.
    let mut args = vec![
        "tap",
        "deploy/api",
        "--path",
        "/tap/",
        "--max",
        "6",
        "-o",
        "json",
    ];
    args.extend(lab_args);
    let events = json_lines(&weftctl_ok(&args));
    assert_eq!(events.len(), 6, "{events:?}");
    for e in &events {
        assert!(
            e["pod"]
                .as_str()
                .is_some_and(|p| p.starts_with("shop/api-")),
            "{e}"
        );
        assert_eq!(e["direction"], "inbound", "{e}");
        assert_eq!(e["status"], 200, "{e}");
        assert_eq!(e["tls"], true, "{e}");
        assert_eq!(e["src_identity"], weft_lab::spiffe_id("shop", "web"), "{e}");
        assert_eq!(e["dst_identity"], weft_lab::spiffe_id("shop", "api"), "{e}");
        assert!(
            e["path"].as_str().is_some_and(|p| p.starts_with("/tap/")),
            "{e}"
        );
    }

    // The client's outbound side: the endpoint that served each call, as text lines.
    let mut args = vec!["tap", "pod/client", "--direction", "outbound", "--max", "3"];
    args.extend(lab_args);
    let text = weftctl_ok(&args);
    assert_eq!(text.lines().count(), 3, "{text}");
    for l in text.lines() {
        assert!(l.starts_with("shop/client out GET "), "{l}");
        assert!(
            l.contains(" 200 ") && l.contains("tls=true") && l.contains(" endpoint=198.18."),
            "{l}"
        );
    }

    // Inside the pod, the proxy on its own loopback, as `kubectl exec` would.
    let inside = weftctl_ok(&[
        "lab",
        "exec",
        "--lab",
        &name,
        "shop/client",
        "--",
        &weftctl().to_string_lossy(),
        "tap",
        "--max",
        "1",
        "--duration",
        "30s",
        "-o",
        "json",
    ]);
    let e = &json_lines(&inside)[0];
    assert_eq!(e["pod"], "127.0.0.1:15190", "{e}");

    // top: both paths, busiest first, every call a success.
    let mut args = vec!["top", "deploy/api", "--path", "/tap/", "-o", "json"];
    args.extend(["--lab", name.as_str(), "-n", "shop", "--duration", "3s"]);
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&weftctl_ok(&args)).expect("top's JSON");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = traffic.join().expect("the traffic thread");
    assert!(sent > 0);
    let paths: Vec<&str> = rows.iter().filter_map(|r| r["path"].as_str()).collect();
    assert_eq!(
        paths,
        ["/tap/a", "/tap/b"],
        "/tap/a is twice as busy: {rows:?}"
    );
    for r in &rows {
        assert!(r["count"].as_u64() > Some(0), "{r}");
        assert_eq!(r["success"], r["count"], "{r}");
        assert!(r["worst_ms"].as_f64() >= r["best_ms"].as_f64(), "{r}");
    }

    // A tap the proxies refuse says why, naming the pod.
    let out = Command::new(weftctl())
        .args([
            "tap",
            "deploy/api",
            "--lab",
            &name,
            "-n",
            "shop",
            "--method",
            "G T",
        ])
        .output()
        .expect("weftctl tap");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("shop/api-") && err.contains("400") && err.contains("method"),
        "{err}"
    );
    drop(up);
}
