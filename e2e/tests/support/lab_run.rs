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

/// The 99.9 % interval of a binomial count (normal approximation, z = 3.29).
pub(crate) fn interval(n: usize, p: f64) -> (usize, usize) {
    let mean = n as f64 * p;
    let spread = 3.29 * (mean * (1.0 - p)).sqrt();
    (
        (mean - spread).floor() as usize,
        (mean + spread).ceil() as usize,
    )
}
