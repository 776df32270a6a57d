//! A `weftctl lab` run of a folder written by the test: the engine (`LabRun`) itself, its
//! events kept, edits applied and waited for, and what the route and fault tests read.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    sync::atomic::AtomicBool,
    thread,
    time::{Duration, Instant},
};

use weft_lab::{
    netns::Netns,
    registry::Registry,
    run::{Event, LabRun},
    Metrics,
};

/// A running lab of a folder the test wrote, and its event log.
pub(crate) struct Lab {
    pub(crate) run: LabRun,
    pub(crate) events: Vec<String>,
    dir: tempfile::TempDir,
    _registry: tempfile::TempDir,
}

impl Lab {
    /// Writes `files` into a new folder and runs it as lab `name`; `None` (after a loud
    /// `SKIPPED:` line) when the machine cannot run the netns tier. Fails if the folder
    /// refuses a document.
    pub(crate) fn start(test: &str, name: &str, files: &[(&str, &str)]) -> Option<Lab> {
        Lab::start_with(test, name, files, Vec::new())
    }

    /// [`Lab::start`] with `proxy_env` for every meshed pod's proxy.
    pub(crate) fn start_with(
        test: &str,
        name: &str,
        files: &[(&str, &str)],
        proxy_env: Vec<(String, String)>,
    ) -> Option<Lab> {
        if !weft_lab::prereq::should_run(test) {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        for (file, text) in files {
            std::fs::write(dir.path().join(file), text).expect("write");
        }
        let registry = tempfile::tempdir().expect("tempdir");
        let stop = AtomicBool::new(false);
        let mut events = Vec::new();
        let run = LabRun::start_with(
            Registry::at(registry.path()),
            name,
            dir.path(),
            &stop,
            &mut |e| events.push(format!("{e:?}")),
            proxy_env,
        )
        .expect("the lab starts");
        assert!(
            !events.iter().any(|e| e.starts_with("Refused")),
            "{events:#?}"
        );
        Some(Lab {
            run,
            events,
            dir,
            _registry: registry,
        })
    }

    /// The folder the lab runs.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Applies the folder's edits; `true` when one was applied.
    pub(crate) fn poll(&mut self) -> bool {
        let mut applied = false;
        let events = &mut self.events;
        self.run
            .poll(&mut |e| {
                applied |= matches!(e, Event::Applied { .. });
                events.push(match e {
                    Event::Refused(d) => format!(
                        "refused {} {} {}: {}",
                        d.file.display(),
                        d.document,
                        d.field,
                        d.reason
                    ),
                    other => format!("{other:?}"),
                });
            })
            .expect("the lab applies the edit");
        applied
    }

    /// A pod's network namespace.
    pub(crate) fn netns(&self, namespace: &str, pod: &str) -> Netns {
        let entry = self
            .run
            .entry()
            .pod(namespace, pod)
            .expect("the pod")
            .clone();
        Netns::attach(&entry.netns).expect("its namespace")
    }

    /// Rewrites (or, with `None`, removes) `file` and polls until the edit is applied (at
    /// most 10 s).
    pub(crate) fn edit(&mut self, file: &str, text: Option<&str>) {
        match text {
            Some(t) => std::fs::write(self.dir().join(file), t).expect("write"),
            None => std::fs::remove_file(self.dir().join(file)).expect("remove"),
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if self.poll() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!("the edit of {file} was not applied: {:#?}", self.events);
    }
}

/// The sum of a pod proxy's samples `name` with `labels` (0 when its metrics cannot be read).
pub(crate) fn metric(ns: &Netns, name: &str, labels: &[(&str, &str)]) -> f64 {
    let admin = SocketAddr::from((Ipv4Addr::LOCALHOST, 15190));
    weft_lab::http::get(ns, admin, "localhost", "/metrics")
        .ok()
        .and_then(|r| Metrics::parse(&r.body).ok())
        .map_or(0.0, |m| m.sum(name, labels))
}

/// Opens a tap on the proxy of the pod whose namespace is `ns` (on its loopback, as a tap must
/// be) with `query`, and reads its first `n` events on a thread, within 60 s. The tap is open
/// when this returns. HTTP/1.0, so the stream comes as plain lines until the proxy closes it.
pub(crate) fn tap(ns: &Netns, query: &str, n: usize) -> thread::JoinHandle<Vec<serde_json::Value>> {
    use std::io::{BufRead, BufReader, Write};
    let admin = SocketAddr::from((Ipv4Addr::LOCALHOST, 15190));
    let mut conn = ns
        .connect(admin, Duration::from_secs(60))
        .expect("connect to the proxy's admin port");
    write!(conn, "GET /tap?{query} HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("send the tap");
    let mut reader = BufReader::new(conn);
    let mut status = String::new();
    reader
        .read_line(&mut status)
        .expect("the tap's status line");
    assert!(status.starts_with("HTTP/1.0 200"), "tap refused: {status}");
    let mut line = String::new();
    while line != "\r\n" {
        line.clear();
        assert!(
            reader.read_line(&mut line).expect("a header line") > 0,
            "closed in the head"
        );
    }
    thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut events = Vec::new();
        let mut line = String::new();
        while events.len() < n && Instant::now() < deadline {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => events.push(serde_json::from_str(&line).expect("a JSON line")),
            }
        }
        events
    })
}

/// The 99.99 % interval of a binomial count (normal approximation, z = 3.89). Five such checks
/// run in every `make test`; at 99.9 % one run in about 200 failed by chance alone (CI saw
/// 570 aborts of 2,000 at 25 %, 3.6 standard deviations), at 99.99 % one in 2,000. The
/// intervals stay narrow enough to catch a wrong share: 25 % of 2,000 is 500 +- 75.
pub(crate) fn interval(n: usize, p: f64) -> (usize, usize) {
    let mean = n as f64 * p;
    let spread = 3.89 * (mean * (1.0 - p)).sqrt();
    (
        (mean - spread).floor() as usize,
        (mean + spread).ceil() as usize,
    )
}
