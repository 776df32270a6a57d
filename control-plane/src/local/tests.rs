use super::*;

fn work() -> ConfigThread {
    ConfigThread::start().expect("config thread")
}

fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write");
    }
    dir
}

const GOOD: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  clusterIP: 198.19.0.10
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: api-abc12
  namespace: shop
  labels: {kubernetes.io/service-name: api}
addressType: IPv4
endpoints:
  - addresses: [198.18.0.11]
    targetRef: {kind: Pod, name: api-1, namespace: shop}
  - addresses: [198.18.0.12]
ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: api-1, namespace: shop}
spec:
  serviceAccountName: api
  containers: [{name: app, image: example/api}]
status:
  podIP: 198.18.0.11
  podIPs: [{ip: 198.18.0.11}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: later}
---
"#;

#[test]
fn a_folder_of_multi_document_files_loads_into_typed_objects() {
    let dir = folder(&[("shop.yaml", GOOD), ("notes.txt", "not yaml at all: [")]);
    let snap = load_dir(dir.path()).expect("valid folder");
    let key = ("shop".to_string(), "api".to_string());
    let svc = &snap.services[&key];
    assert_eq!(
        svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()),
        Some("198.19.0.10")
    );
    let slice = &snap.endpoint_slices[&("shop".to_string(), "api-abc12".to_string())];
    assert_eq!(slice.endpoints.len(), 2);
    let pod = &snap.pods[&("shop".to_string(), "api-1".to_string())];
    assert_eq!(
        pod.spec
            .as_ref()
            .and_then(|s| s.service_account_name.as_deref()),
        Some("api")
    );
    assert_eq!(snap.services.len(), 1, "HTTPRoute skipped, not refused");
}

#[test]
fn one_bad_document_refuses_the_whole_folder_and_lists_every_problem() {
    let dir = folder(&[
        ("a.yaml", GOOD),
        ("b.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: 70000}]}\n"),
        ("c.yml", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {serviceAccountName: 'No Good', containers: []}\n"),
    ]);
    let errors = load_dir(dir.path()).expect_err("refused");
    let files: Vec<_> = errors
        .iter()
        .map(|e| e.file.file_name().map(|f| f.to_owned()))
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(files
        .iter()
        .any(|f| f.as_deref() == Some(std::ffi::OsStr::new("b.yaml"))));
    assert!(files
        .iter()
        .any(|f| f.as_deref() == Some(std::ffi::OsStr::new("c.yml"))));
}

#[test]
fn a_missing_folder_is_a_clear_error() {
    let errors = load_dir(Path::new("/nonexistent/weft-config")).expect_err("missing");
    assert!(
        errors[0].to_string().contains("/nonexistent/weft-config"),
        "{}",
        errors[0]
    );
}

#[test]
fn the_source_publishes_changes_and_refuses_bad_edits_keeping_the_last_good() {
    let dir = folder(&[("shop.yaml", GOOD)]);
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let mut source = LocalSource::load(
        dir.path().to_path_buf(),
        Duration::from_millis(10),
        metrics.clone(),
        work(),
    )
    .expect("loads");
    let first = source.snapshot();
    assert_eq!(source.poll().expect("unchanged"), None);

    std::fs::write(
        dir.path().join("more.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {ports: [{port: 80}]}\n",
    )
    .expect("write");
    let second = source.poll().expect("applied").expect("changed");
    assert_eq!(second.services.len(), 2);

    std::fs::write(
        dir.path().join("more.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: -1}]}\n",
    )
    .expect("write");
    let refused = source.poll().expect_err("refused");
    assert!(
        refused
            .to_string()
            .contains("more.yaml document 0 field spec.ports[0].port"),
        "{refused}"
    );
    assert_eq!(source.snapshot(), second, "the last good config stays");
    assert_eq!(
        source.poll().expect("no news"),
        None,
        "a refusal is reported once"
    );

    std::fs::remove_file(dir.path().join("more.yaml")).expect("rm");
    assert_eq!(source.poll().expect("applied"), Some(first));
    let text = metrics.encode();
    assert!(
        text.contains("weft_config_refused_documents_total{source=\"local\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("weft_config_snapshots_total{result=\"refused\",source=\"local\"} 1"),
        "{text}"
    );
}

#[test]
fn a_folder_that_does_not_load_is_a_start_error() {
    let dir = folder(&[("bad.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {serviceAccountName: 'No Good', containers: []}\n")]);
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let e = LocalSource::load(
        dir.path().to_path_buf(),
        Duration::from_secs(1),
        metrics,
        work(),
    )
    .expect_err("refused");
    assert!(
        e.to_string()
            .contains("bad.yaml document 0 field spec.serviceAccountName"),
        "{e}"
    );
}

#[test]
fn an_edit_parses_only_the_documents_that_changed() {
    let services = |port_of_s7: u16| -> String {
        (0..40)
            .map(|i| {
                let port = if i == 7 { port_of_s7 } else { 80 };
                format!("apiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: shop}}\nspec: {{ports: [{{port: {port}}}]}}\n")
            })
            .collect::<Vec<_>>()
            .join("---\n")
    };
    let dir = folder(&[("services.yaml", &services(80)), ("shop.yaml", GOOD)]);
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let mut source = LocalSource::load(
        dir.path().to_path_buf(),
        Duration::from_millis(10),
        metrics,
        work(),
    )
    .expect("loads");
    let (parsed, reused) = source.cache.counts();
    assert_eq!(reused, 0);

    std::fs::write(dir.path().join("services.yaml"), services(8080)).expect("write");
    let changed = source.poll().expect("applied").expect("changed");
    let port = changed.services[&("shop".to_string(), "s7".to_string())]
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .map(|p| p[0].port);
    assert_eq!(port, Some(8080));
    let (now_parsed, now_reused) = source.cache.counts();
    assert_eq!(
        now_parsed - parsed,
        1,
        "only the edited document was parsed again"
    );
    assert_eq!(
        now_reused - reused,
        parsed - 1,
        "every other document was reused"
    );
    // Unchanged documents are the very objects of the last snapshot, shared, not copies.
    let before = source.snapshot();
    std::fs::write(dir.path().join("services.yaml"), services(8081)).expect("write");
    let after = source.poll().expect("applied").expect("changed");
    let key = ("shop".to_string(), "s3".to_string());
    assert!(Arc::ptr_eq(&before.services[&key], &after.services[&key]));
}

#[test]
fn a_poll_reads_the_files_only_when_their_metadata_moved_or_is_recent() {
    let dir = folder(&[("a.yaml", GOOD), ("b.yaml", "# nothing yet\n")]);
    let settle = Duration::from_millis(100);
    let mut seen = Seen {
        settle,
        ..Seen::default()
    };
    seen.read(dir.path()).expect("read");
    assert_eq!(seen.reads, 1);

    // Recent metadata proves nothing: the content is read and compared (and is the same).
    assert!(seen.changed(dir.path()).is_none());
    assert_eq!(seen.reads, 2);
    // Settled since the last read started: metadata alone answers.
    std::thread::sleep(settle * 2);
    assert!(seen.changed(dir.path()).is_none(), "a read, same content");
    assert_eq!(seen.reads, 3);
    for _ in 0..3 {
        assert!(seen.changed(dir.path()).is_none());
    }
    assert_eq!(seen.reads, 3, "settled and unmoved: no read");

    // A rewrite with the same bytes moves the metadata: read, but no change.
    std::fs::write(dir.path().join("b.yaml"), "# nothing yet\n").expect("write");
    assert!(seen.changed(dir.path()).is_none());
    assert_eq!(seen.reads, 4);

    // New content of the same size in place, and a file replaced by a rename: changes.
    std::fs::write(dir.path().join("b.yaml"), "# nothing now\n").expect("write");
    let files = seen.changed(dir.path()).expect("changed").expect("listed");
    assert_eq!(files.len(), 2);
    std::thread::sleep(settle * 2);
    assert!(seen.changed(dir.path()).is_none());
    let tmp = dir.path().join("b.tmp");
    std::fs::write(&tmp, "# nothing here\n").expect("write");
    std::fs::rename(&tmp, dir.path().join("b.yaml")).expect("rename");
    assert!(seen.changed(dir.path()).is_some(), "replaced by a rename");

    // A file that appears, one that goes.
    std::fs::write(dir.path().join("c.yml"), "# c\n").expect("write");
    assert!(seen.changed(dir.path()).is_some(), "a new file");
    std::fs::remove_file(dir.path().join("c.yml")).expect("remove");
    assert!(seen.changed(dir.path()).is_some(), "a file gone");
}

const WEB: &str =
    "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {ports: [{port: 80}]}\n";

/// Runs `dir`'s source with a poll interval no test waits for: what it publishes, from the
/// folder's events alone.
fn run_without_ticks(dir: &Path) -> (watch::Receiver<Arc<Snapshot>>, CancellationToken) {
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let source = LocalSource::load(
        dir.to_path_buf(),
        Duration::from_secs(3600),
        metrics,
        work(),
    )
    .expect("loads");
    let (tx, rx) = watch::channel(source.snapshot());
    let shutdown = CancellationToken::new();
    tokio::spawn(Box::new(source).run(tx, shutdown.clone()));
    (rx, shutdown)
}

/// The next snapshot `rx` publishes, within 10 s.
async fn next_snapshot(rx: &mut watch::Receiver<Arc<Snapshot>>) -> Arc<Snapshot> {
    tokio::time::timeout(Duration::from_secs(10), rx.changed())
        .await
        .expect("a new snapshot within 10 s (the poll interval is an hour)")
        .expect("the source runs");
    rx.borrow_and_update().clone()
}

#[tokio::test]
async fn an_edit_is_read_when_the_folder_changes_not_at_the_next_tick() {
    let dir = folder(&[("shop.yaml", GOOD)]);
    let (mut rx, shutdown) = run_without_ticks(dir.path());
    // An editor's save (a temporary file renamed over), a removal, a file written in place.
    // The first may be read by the first tick's poll (the source's task has not run yet); the
    // others can only be read because of their events.
    std::fs::write(dir.path().join(".more.yaml.tmp"), WEB).expect("write");
    std::fs::rename(
        dir.path().join(".more.yaml.tmp"),
        dir.path().join("more.yaml"),
    )
    .expect("rename");
    assert_eq!(next_snapshot(&mut rx).await.services.len(), 2);
    std::fs::remove_file(dir.path().join("more.yaml")).expect("rm");
    assert_eq!(next_snapshot(&mut rx).await.services.len(), 1);
    std::fs::write(dir.path().join("more.yml"), WEB).expect("write");
    assert_eq!(next_snapshot(&mut rx).await.services.len(), 2);
    shutdown.cancel();
}

#[tokio::test]
async fn a_configmap_volume_update_is_read_when_its_symlink_is_swapped() {
    // A ConfigMap volume: each key a symlink through `..data`, itself a symlink to the
    // current timestamped folder; an update writes a new folder and renames a new `..data`
    // over the old one, so only `..data` changes in the watched folder.
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::create_dir(root.join("..2026_12_06_1")).expect("mkdir");
    std::fs::write(root.join("..2026_12_06_1/shop.yaml"), GOOD).expect("write");
    std::os::unix::fs::symlink("..2026_12_06_1", root.join("..data")).expect("symlink");
    std::os::unix::fs::symlink("..data/shop.yaml", root.join("shop.yaml")).expect("symlink");
    let (mut rx, shutdown) = run_without_ticks(root);
    assert_eq!(rx.borrow().services.len(), 1);
    // The first update may be the first tick's (the source's task has not run yet); the one
    // after it can only come from the swap's event.
    let swap = |n: usize, text: &str| {
        let version = format!("..2026_12_06_{n}");
        std::fs::create_dir(root.join(&version)).expect("mkdir");
        std::fs::write(root.join(&version).join("shop.yaml"), text).expect("write");
        std::os::unix::fs::symlink(&version, root.join("..data_tmp")).expect("symlink");
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).expect("swap");
    };
    swap(2, &format!("{GOOD}\n---\n{WEB}"));
    assert_eq!(next_snapshot(&mut rx).await.services.len(), 2);
    swap(3, GOOD);
    assert_eq!(next_snapshot(&mut rx).await.services.len(), 1);
    shutdown.cancel();
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_removed_folder_ends_the_watch() {
    let dir = folder(&[("shop.yaml", GOOD)]);
    let mut events = FolderEvents::watch(dir.path()).expect("inotify");
    let gone = dir.path().to_path_buf();
    drop(dir);
    assert!(!gone.exists());
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        // Deleting the files is events of their own; the folder's removal ends the watch.
        for _ in 0..16 {
            if events.changed().await.is_err() {
                return true;
            }
        }
        false
    })
    .await
    .expect("within 10 s");
    assert!(ended, "the watch ends with its folder");
}
