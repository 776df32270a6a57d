//! One fake Kubernetes API server on loopback (plain HTTP), for every test that needs one: the
//! control plane's TokenReview and list/watch, and the CNI plugin's pod lookup.
//!
//! It serves, from a cluster state the test drives:
//! - `POST /apis/authentication.k8s.io/v1/tokenreviews` with the JSON a real one sends, from
//!   the [`Verdict`] the test gave each token (unknown tokens are unauthenticated); the
//!   request must be a TokenReview v1 asking for audience [`TOKEN_AUDIENCE`].
//! - LIST and WATCH of Services, EndpointSlices and Pods over all namespaces, as a real one
//!   does: every change ([`Cluster::apply`], [`Cluster::delete`]) bumps one cluster-wide
//!   resourceVersion, as etcd does, is kept in a history, and reaches every open watch of its
//!   kind. LIST answers `{kind}List` at the current resourceVersion, in pages of at most
//!   `limit` (and [`Cluster::set_max_page`]) items with `continue` tokens that read a
//!   consistent copy. WATCH replays the history after the asked resourceVersion, then streams
//!   live events as chunked, newline-delimited JSON; a resourceVersion older than the
//!   compacted history gets the `ERROR` event with a 410 Expired `Status`.
//! - `GET` of one object (`/api/v1/namespaces/{ns}/pods/{name}`, ...), or a 404 `Status`;
//!   `GET` and merge `PATCH` of its `status` subresource (`.../{name}/status`), the PATCH
//!   applying only `status` and checking `metadata.resourceVersion` as a precondition (409),
//!   as a real one does; the test can queue error answers for the next PATCHes.
//!
//! The test can send a BOOKMARK, compact the history, cut every watch, answer every open watch
//! with 410, hold a kind's LIST, or take the server down (connections closed unanswered, at
//! once) and up again. Every request is recorded with its query; anything a real API server
//! would refuse, or that kube-rs is not expected to send, is recorded in the problems and
//! answered with a `Status`.
//!
//! The server runs on a thread and runtime of its own, so a blocking test (the CNI plugin's)
//! uses it as an async one does; dropping it stops it and closes every connection.

mod cluster;
mod serve;

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
    thread::JoinHandle,
};

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::{
    net::TcpListener,
    sync::{watch, Notify},
    task::JoinSet,
};

pub use cluster::{Cluster, Kind, Outcome, Recorded};

/// The audience a TokenReview must ask for: the control plane's.
pub const TOKEN_AUDIENCE: &str = "identity.weft.dev";
/// Where TokenReviews are posted.
pub const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

/// What the fake API server says about a token.
#[derive(Clone, Debug)]
pub enum Verdict {
    /// Authenticated, a service account, bound to the audiences asked for.
    ServiceAccount { ns: String, sa: String },
    /// Authenticated service account, but bound to other audiences than the ones asked for
    /// (an authenticator that ignores `spec.audiences`).
    OtherAudience { ns: String, sa: String },
    /// Authenticated, but a person, not a service account.
    User(String),
    /// The API server fails: 500 with a `Status` body.
    ServerError,
    /// The API server never answers.
    Hang,
}

/// What the fake is started with.
#[derive(Debug, Default)]
pub struct FakeKubeBuilder {
    verdicts: HashMap<String, Verdict>,
    objects: Vec<(Kind, Value)>,
    keep_alive: Option<bool>,
}

impl FakeKubeBuilder {
    /// What a TokenReview of `token` answers.
    pub fn token(mut self, token: impl Into<String>, verdict: Verdict) -> Self {
        self.verdicts.insert(token.into(), verdict);
        self
    }

    /// An object in the cluster from the start (see [`Cluster::apply`]).
    pub fn object(mut self, kind: Kind, object: Value) -> Self {
        self.objects.push((kind, object));
        self
    }

    /// HTTP keep-alive (on unless told): off, every request has a connection of its own, so
    /// no client holds a pooled connection across [`FakeKube::set_down`].
    pub fn keep_alive(mut self, on: bool) -> Self {
        self.keep_alive = Some(on);
        self
    }

    /// Serves on 127.0.0.1:0 on a thread of its own.
    ///
    /// # Panics
    /// If it cannot bind loopback or start its thread: nothing in the test could run.
    pub fn start(self) -> FakeKube {
        let mut cluster = Cluster::default();
        for (kind, object) in self.objects {
            cluster.apply(kind, object);
        }
        let shared = Arc::new(Shared {
            cluster: Mutex::new(cluster),
            released: Notify::new(),
            down: AtomicBool::new(false),
            verdicts: self.verdicts,
        });
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fake API server");
        let addr = listener
            .local_addr()
            .expect("the fake API server's address");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let (state, state_rx) = watch::channel(State::Up);
        let keep_alive = self.keep_alive.unwrap_or(true);
        let serving = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fake-kube".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the fake API server's runtime");
                runtime.block_on(serve(listener, serving, state_rx, keep_alive));
            })
            .expect("start the fake API server's thread");
        FakeKube {
            addr,
            shared,
            state,
            thread: Some(thread),
        }
    }
}

/// A running fake API server; stops (closing every connection) when dropped.
#[derive(Debug)]
pub struct FakeKube {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    state: watch::Sender<State>,
    thread: Option<JoinHandle<()>>,
}

impl FakeKube {
    pub fn builder() -> FakeKubeBuilder {
        FakeKubeBuilder::default()
    }

    /// An empty cluster, no tokens known.
    pub fn start() -> FakeKube {
        FakeKube::builder().start()
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig for this server to `dir/kubeconfig`: plain HTTP, no credentials,
    /// namespace `weft`.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        write_kubeconfig(&dir.join("kubeconfig"), &self.url(), None)
    }

    /// Runs `f` on the cluster under one lock.
    pub fn with<T>(&self, f: impl FnOnce(&mut Cluster) -> T) -> T {
        f(&mut self.shared.lock())
    }

    pub fn apply(&self, kind: Kind, object: Value) -> u64 {
        self.with(|c| c.apply(kind, object))
    }

    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) -> u64 {
        self.with(|c| c.delete(kind, namespace, name))
    }

    pub fn bookmark(&self) -> u64 {
        self.with(Cluster::bookmark)
    }

    pub fn cut_watches(&self) {
        self.with(Cluster::cut_watches);
    }

    pub fn expire_watches(&self) {
        self.with(Cluster::expire_watches);
    }

    pub fn open_watches(&self, kind: Kind) -> usize {
        self.with(|c| c.open_watches(kind))
    }

    /// LISTs of `kind` wait until [`Self::release_lists`].
    pub fn hold_lists(&self, kind: Kind) {
        self.with(|c| c.held.insert(kind));
    }

    /// Requests for `kind` are answered 404 NotFound, as an API server without the kind's CRD
    /// answers (not a problem: a deliberate answer).
    pub fn unserve(&self, kind: Kind) {
        self.with(|c| c.unserved.insert(kind));
    }

    /// Requests for `kind` are answered 403 Forbidden, as an API server answers a caller whose
    /// ClusterRole does not cover the kind (a deliberate answer, not a problem).
    pub fn forbid(&self, kind: Kind) {
        self.with(|c| c.forbidden.insert(kind));
    }

    pub fn release_lists(&self) {
        self.with(|c| c.held.clear());
        self.shared.released.notify_waiters();
    }

    /// Down: every connection is closed, and new ones, and requests on connections not yet
    /// closed, are closed unanswered; from the moment this returns. Up again: served as
    /// before, from the same state and history.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
        self.state
            .send_replace(if down { State::Down } else { State::Up });
        if down {
            // Their connections are closing; forget them.
            self.cut_watches();
        }
    }

    /// The status PATCHes received so far: the object's `namespace/name` and the patch's body.
    pub fn status_patches(&self) -> Vec<(String, Value)> {
        self.with(|c| c.status_patches().to_vec())
    }

    /// Connections and requests closed unanswered while down.
    pub fn refused_connections(&self) -> usize {
        self.with(|c| c.refused)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.with(|c| c.requests.clone())
    }

    /// The LIST requests of `kind` so far.
    pub fn lists(&self, kind: Kind) -> Vec<Recorded> {
        self.of(kind, Some(false))
    }

    /// The WATCH requests of `kind` so far.
    pub fn watches(&self, kind: Kind) -> Vec<Recorded> {
        self.of(kind, Some(true))
    }

    /// The GETs of one object of `kind` so far.
    pub fn gets(&self, kind: Kind) -> Vec<Recorded> {
        self.with(|c| {
            c.requests
                .iter()
                .filter(|r| r.kind == Some(kind) && r.outcome == Outcome::Get)
                .cloned()
                .collect()
        })
    }

    /// Every well-formed TokenReview request body, in order.
    pub fn reviews(&self) -> Vec<Value> {
        self.with(|c| c.reviews.clone())
    }

    /// The tokens reviewed so far, in order.
    pub fn reviewed_tokens(&self) -> Vec<String> {
        self.reviews()
            .iter()
            .filter_map(|r| r["spec"]["token"].as_str().map(str::to_string))
            .collect()
    }

    /// What was wrong with the requests a real API server would refuse.
    pub fn problems(&self) -> Vec<String> {
        self.with(|c| c.problems.clone())
    }

    /// Panics with what was wrong if any request was one a real API server would refuse or
    /// kube-rs should not send.
    pub fn assert_no_problems(&self) {
        let problems = self.problems();
        assert!(problems.is_empty(), "bad requests: {problems:?}");
    }

    fn of(&self, kind: Kind, watch: Option<bool>) -> Vec<Recorded> {
        self.with(|c| {
            c.requests
                .iter()
                .filter(|r| r.kind == Some(kind) && r.outcome != Outcome::Get)
                .filter(|r| watch.is_none_or(|w| r.is_watch() == w))
                .cloned()
                .collect()
        })
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.state.send_replace(State::Stopped);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Writes a kubeconfig naming `server`, with a bearer `token` or no credentials, namespace
/// `weft`; returns `path`.
///
/// # Panics
/// If the file cannot be written.
pub fn write_kubeconfig(path: &Path, server: &str, token: Option<&str>) -> PathBuf {
    let user = match token {
        Some(token) => format!("\n    token: {token}"),
        None => " {}".to_string(),
    };
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: {server}
users:
- name: test
  user:{user}
contexts:
- name: fake
  context:
    cluster: fake
    user: test
    namespace: weft
current-context: fake
"
    );
    std::fs::write(path, text)
        .unwrap_or_else(|e| panic!("writing the kubeconfig {}: {e}", path.display()));
    path.to_path_buf()
}

/// What the server thread shares with the test.
#[derive(Debug)]
struct Shared {
    cluster: Mutex<Cluster>,
    released: Notify,
    down: AtomicBool,
    verdicts: HashMap<String, Verdict>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Cluster> {
        // A test that panicked while holding the lock has failed already; its state is still
        // worth reading for the report.
        self.cluster
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Up,
    Down,
    Stopped,
}

async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut state: watch::Receiver<State>,
    keep_alive: bool,
) {
    let Ok(listener) = TcpListener::from_std(listener) else {
        return;
    };
    // Connections live in the set, so taking the server down (or dropping it) closes them all.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                if shared.is_down() {
                    shared.lock().refused += 1;
                    drop(tcp);
                    continue;
                }
                let shared = shared.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req| {
                        let shared = shared.clone();
                        async move { serve::answer(req, &shared).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(keep_alive)
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
            changed = state.changed() => {
                let now = *state.borrow_and_update();
                if changed.is_err() || now == State::Stopped {
                    return;
                }
                if now == State::Down {
                    conns.abort_all();
                }
            }
        }
        while conns.try_join_next().is_some() {}
    }
}

#[cfg(test)]
mod tests;
