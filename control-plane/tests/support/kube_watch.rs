//! A fake Kubernetes API server on loopback (plain HTTP) that serves LIST and WATCH of
//! Services, EndpointSlices and Pods over all namespaces as a real one does, from a cluster
//! state the test drives.
//!
//! - Every change (apply, delete) bumps one cluster-wide resourceVersion, as etcd does, is
//!   kept in a history, and reaches every open watch of its kind.
//! - LIST answers `{kind}List` at the current resourceVersion, in pages of at most `limit`
//!   (and of the test's `max_page`) items with `continue` tokens that read a consistent copy.
//! - WATCH replays the history after the asked resourceVersion, then streams live events as
//!   chunked, newline-delimited JSON. A resourceVersion older than the compacted history gets
//!   the `ERROR` event with a 410 Expired `Status`, as a real API server sends it.
//! - The test can send a BOOKMARK, compact the history, cut every watch, answer every open
//!   watch with 410, hold a kind's LIST, or take the server down (connections closed at once).
//!
//! Every request is recorded with its query; anything a real API server would refuse, or that
//! kube-rs is not expected to send, is recorded in `problems` and answered with a `Status`.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::{
    body::{Body, Frame, Incoming},
    service::service_fn,
    Request, Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::{
    net::TcpListener,
    sync::{mpsc, watch, Notify},
    task::JoinSet,
};

/// The kinds served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Service,
    EndpointSlice,
    Pod,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Service, Kind::EndpointSlice, Kind::Pod];

    /// The collection path over all namespaces.
    pub fn path(self) -> &'static str {
        match self {
            Kind::Service => "/api/v1/services",
            Kind::EndpointSlice => "/apis/discovery.k8s.io/v1/endpointslices",
            Kind::Pod => "/api/v1/pods",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Pod => "Pod",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            Kind::Service | Kind::Pod => "v1",
        }
    }

    fn from_path(path: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.path() == path)
    }
}

/// How the fake answered a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A LIST page.
    List,
    /// A WATCH stream.
    Watch,
    /// A WATCH stream that opened with the 410 Expired `ERROR` event.
    Gone,
    /// A `Status` error (the request is also in `problems`).
    Refused,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The query's pairs, in order, as sent (kube-rs's values here need no decoding).
    pub query: Vec<(String, String)>,
    pub kind: Option<Kind>,
    pub outcome: Outcome,
}

impl Recorded {
    /// The value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn is_watch(&self) -> bool {
        self.param("watch") == Some("true")
    }
}

/// The cluster's state, history and open watches. Tests change it through [`FakeKube::with`]
/// (several changes under one lock: no watch request is served in between) or the shortcuts
/// on [`FakeKube`].
#[derive(Debug, Default)]
pub struct Cluster {
    rv: u64,
    /// A watch from a resourceVersion older than this gets 410 Expired.
    compacted: u64,
    objects: BTreeMap<(Kind, String, String), Value>,
    /// Events after `compacted`: resourceVersion, kind, the event's JSON line.
    history: Vec<(u64, Kind, Bytes)>,
    watches: Vec<(Kind, mpsc::UnboundedSender<Bytes>)>,
    /// LIST continuations: token -> (resourceVersion, kind, items left).
    continues: HashMap<String, (u64, Kind, Vec<Value>)>,
    next_token: u64,
    next_uid: u64,
    /// Largest LIST page served whatever the client's `limit` (a server may return fewer).
    max_page: Option<usize>,
    /// Kinds whose LIST waits until released.
    held: BTreeSet<Kind>,
    requests: Vec<Recorded>,
    problems: Vec<String>,
    /// Connections closed unanswered while the server was down.
    refused: usize,
}

impl Cluster {
    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// Creates or replaces `object` (it must have `metadata.name` and `metadata.namespace`);
    /// returns its new resourceVersion.
    pub fn apply(&mut self, kind: Kind, mut object: Value) -> u64 {
        let name = object["metadata"]["name"]
            .as_str()
            .expect("metadata.name")
            .to_string();
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .expect("metadata.namespace")
            .to_string();
        self.rv += 1;
        let key = (kind, namespace, name);
        let previous = self.objects.get(&key);
        let event = if previous.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        let uid = match previous.and_then(|p| p["metadata"]["uid"].as_str()) {
            Some(uid) => uid.to_string(),
            None => {
                self.next_uid += 1;
                format!("6f1f3c1e-0000-4000-8000-{:012}", self.next_uid)
            }
        };
        object["kind"] = json!(kind.name());
        object["apiVersion"] = json!(kind.api_version());
        let meta = &mut object["metadata"];
        meta["resourceVersion"] = json!(self.rv.to_string());
        meta["uid"] = json!(uid);
        if meta.get("creationTimestamp").is_none() {
            meta["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        self.objects.insert(key, object.clone());
        self.emit(kind, event, object);
        self.rv
    }

    /// Deletes an object; returns the deletion's resourceVersion.
    pub fn delete(&mut self, kind: Kind, namespace: &str, name: &str) -> u64 {
        let key = (kind, namespace.to_string(), name.to_string());
        let mut object = self
            .objects
            .remove(&key)
            .unwrap_or_else(|| panic!("delete: no {} {namespace}/{name}", kind.name()));
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.emit(kind, "DELETED", object);
        self.rv
    }

    /// Sends every open watch a BOOKMARK at the current resourceVersion; returns it.
    pub fn bookmark(&mut self) -> u64 {
        let rv = self.rv.to_string();
        for (kind, tx) in &self.watches {
            let bookmark = json!({
                "type": "BOOKMARK",
                "object": {
                    "kind": kind.name(),
                    "apiVersion": kind.api_version(),
                    "metadata": { "resourceVersion": rv },
                },
            });
            let _ = tx.send(line(&bookmark));
        }
        self.rv
    }

    /// Forgets the history: a watch from an older resourceVersion than now gets 410.
    pub fn compact(&mut self) {
        self.compacted = self.rv;
        self.history.clear();
    }

    /// Ends every open watch cleanly, as an API server does at `timeoutSeconds`.
    pub fn cut_watches(&mut self) {
        self.watches.clear();
    }

    /// Answers every open watch with the 410 Expired `ERROR` event and ends it.
    pub fn expire_watches(&mut self) {
        let gone = line(&expired(self.rv.saturating_sub(1), self.rv));
        for (_, tx) in self.watches.drain(..) {
            let _ = tx.send(gone.clone());
        }
    }

    /// Serves LIST pages of at most `n` items.
    pub fn set_max_page(&mut self, n: usize) {
        self.max_page = Some(n);
    }

    /// Watches of `kind` open now.
    pub fn open_watches(&self, kind: Kind) -> usize {
        self.watches
            .iter()
            .filter(|(k, tx)| *k == kind && !tx.is_closed())
            .count()
    }

    fn emit(&mut self, kind: Kind, event: &str, object: Value) {
        let line = line(&json!({ "type": event, "object": object }));
        self.history.push((self.rv, kind, line.clone()));
        self.watches
            .retain(|(k, tx)| *k != kind || tx.send(line.clone()).is_ok());
    }

    fn record(&mut self, req: &Request<Incoming>, kind: Option<Kind>, outcome: Outcome) {
        self.requests.push(Recorded {
            method: req.method().to_string(),
            path: req.uri().path().to_string(),
            query: query(req),
            kind,
            outcome,
        });
    }
}

/// A running fake API server; stops (closing every connection) when dropped.
pub struct FakeKube {
    pub addr: SocketAddr,
    cluster: Arc<Mutex<Cluster>>,
    released: Arc<Notify>,
    down: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeKube {
    /// Serves on 127.0.0.1:0.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let cluster = Arc::new(Mutex::new(Cluster::default()));
        let released = Arc::new(Notify::new());
        let (down, mut down_rx) = watch::channel(false);
        let state = (cluster.clone(), released.clone());
        let task = tokio::spawn(async move {
            // Connections live in the set, so taking the server down (or dropping it) closes
            // them all.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((tcp, _)) = accepted else { continue };
                        if *down_rx.borrow() {
                            state.0.lock().expect("cluster").refused += 1;
                            drop(tcp);
                            continue;
                        }
                        let (cluster, released) = state.clone();
                        conns.spawn(async move {
                            let svc = service_fn(move |req| {
                                let cluster = cluster.clone();
                                let released = released.clone();
                                async move {
                                    Ok::<_, Infallible>(answer(req, &cluster, &released).await)
                                }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(tcp), svc)
                                .await;
                        });
                    }
                    changed = down_rx.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        if *down_rx.borrow() {
                            conns.abort_all();
                        }
                    }
                }
                while conns.try_join_next().is_some() {}
            }
        });
        Self {
            addr,
            cluster,
            released,
            down,
            task,
        }
    }

    /// A client for this server: plain HTTP, no credentials.
    pub fn client(&self) -> kube::Client {
        let url = format!("http://{}", self.addr).parse().expect("URL");
        kube::Client::try_from(kube::Config::new(url)).expect("kube client")
    }

    /// Runs `f` on the cluster under one lock.
    pub fn with<T>(&self, f: impl FnOnce(&mut Cluster) -> T) -> T {
        f(&mut self.lock())
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

    pub fn release_lists(&self) {
        self.with(|c| c.held.clear());
        self.released.notify_waiters();
    }

    /// Down: every connection is closed, and new ones are closed unanswered. Up again: served
    /// as before, from the same state and history.
    pub fn set_down(&self, down: bool) {
        self.down.send_replace(down);
        if down {
            // Their connections are closing; forget them.
            self.cut_watches();
        }
    }

    /// Connections closed unanswered while down.
    pub fn refused_connections(&self) -> usize {
        self.with(|c| c.refused)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.with(|c| c.requests.clone())
    }

    /// The LIST requests of `kind` so far.
    pub fn lists(&self, kind: Kind) -> Vec<Recorded> {
        self.of(kind, false)
    }

    /// The WATCH requests of `kind` so far.
    pub fn watches(&self, kind: Kind) -> Vec<Recorded> {
        self.of(kind, true)
    }

    fn of(&self, kind: Kind, watch: bool) -> Vec<Recorded> {
        self.with(|c| {
            c.requests
                .iter()
                .filter(|r| r.kind == Some(kind) && r.is_watch() == watch)
                .cloned()
                .collect()
        })
    }

    /// Panics with what was wrong if any request was one a real API server would refuse or
    /// kube-rs should not send.
    pub fn assert_no_problems(&self) {
        let problems = self.with(|c| c.problems.clone());
        assert!(problems.is_empty(), "bad requests: {problems:?}");
    }

    fn lock(&self) -> MutexGuard<'_, Cluster> {
        self.cluster.lock().expect("cluster")
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type RspBody = BoxBody<Bytes, Infallible>;

/// Parameters kube-rs's watcher sends with `watcher::Config::default()`.
const LIST_PARAMS: [&str; 2] = ["limit", "continue"];
const WATCH_PARAMS: [&str; 4] = [
    "watch",
    "resourceVersion",
    "allowWatchBookmarks",
    "timeoutSeconds",
];

async fn answer(
    req: Request<Incoming>,
    cluster: &Mutex<Cluster>,
    released: &Notify,
) -> Response<RspBody> {
    let kind = Kind::from_path(req.uri().path());
    let params = query(&req);
    let refuse = |code: StatusCode, reason: &str, problem: String| {
        let mut c = cluster.lock().expect("cluster");
        c.record(&req, kind, Outcome::Refused);
        c.problems.push(problem.clone());
        status(code, reason, &problem)
    };
    let Some(kind) = kind else {
        return refuse(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!(
                "the server could not find the requested resource: {}",
                req.uri()
            ),
        );
    };
    if req.method() != hyper::Method::GET {
        return refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{} {} is not supported", req.method(), req.uri()),
        );
    }
    let watching = params.iter().any(|(k, v)| k == "watch" && v == "true");
    let allowed: &[&str] = if watching {
        &WATCH_PARAMS
    } else {
        &LIST_PARAMS
    };
    if let Some((k, v)) = params.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("unexpected query parameter {k}={v} in {}", req.uri()),
        );
    }
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    if watching {
        let Some(from) = param("resourceVersion").and_then(|v| v.parse::<u64>().ok()) else {
            return refuse(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("watch without a numeric resourceVersion: {}", req.uri()),
            );
        };
        if param("timeoutSeconds").is_some_and(|t| t.parse::<u32>().is_err()) {
            return refuse(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("timeoutSeconds is not a number: {}", req.uri()),
            );
        }
        return watch_stream(&req, kind, from, cluster, refuse);
    }
    let limit = match param("limit").map(|l| l.parse::<usize>()) {
        None => None,
        Some(Ok(l)) if l > 0 => Some(l),
        Some(_) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("limit is not a positive number: {}", req.uri()),
            )
        }
    };
    // A held LIST waits (the Notified future is created before the check, so a release in
    // between is not missed).
    loop {
        let notified = released.notified();
        if !cluster.lock().expect("cluster").held.contains(&kind) {
            break;
        }
        notified.await;
    }
    let mut c = cluster.lock().expect("cluster");
    let (rv, mut items) = match param("continue") {
        Some(token) => match c.continues.remove(&token) {
            Some((rv, k, items)) if k == kind => (rv, items),
            _ => {
                drop(c);
                return refuse(
                    StatusCode::GONE,
                    "Expired",
                    format!("unknown continue token {token:?}"),
                );
            }
        },
        None => {
            let items = c
                .objects
                .iter()
                .filter(|((k, _, _), _)| *k == kind)
                .map(|(_, v)| v.clone())
                .collect();
            (c.rv, items)
        }
    };
    let page = limit
        .unwrap_or(usize::MAX)
        .min(c.max_page.unwrap_or(usize::MAX));
    let mut metadata = json!({ "resourceVersion": rv.to_string() });
    if items.len() > page {
        let rest = items.split_off(page);
        c.next_token += 1;
        let token = format!("page-{}", c.next_token);
        metadata["continue"] = json!(token);
        metadata["remainingItemCount"] = json!(rest.len());
        c.continues.insert(token, (rv, kind, rest));
    }
    c.record(&req, Some(kind), Outcome::List);
    drop(c);
    let body = json!({
        "kind": format!("{}List", kind.name()),
        "apiVersion": kind.api_version(),
        "metadata": metadata,
        "items": items,
    });
    json_response(StatusCode::OK, &body)
}

/// A watch of `kind` from resourceVersion `from`: the history after it, then live events; or
/// the 410 `ERROR` event if the history no longer reaches back that far.
fn watch_stream(
    req: &Request<Incoming>,
    kind: Kind,
    from: u64,
    cluster: &Mutex<Cluster>,
    refuse: impl FnOnce(StatusCode, &str, String) -> Response<RspBody>,
) -> Response<RspBody> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut c = cluster.lock().expect("cluster");
    if from > c.rv {
        drop(c);
        return refuse(
            StatusCode::GATEWAY_TIMEOUT,
            "Timeout",
            format!("Too large resource version: {from}"),
        );
    }
    if from < c.compacted {
        let _ = tx.send(line(&expired(from, c.compacted)));
        c.record(req, Some(kind), Outcome::Gone);
    } else {
        for (_, _, event) in c
            .history
            .iter()
            .filter(|(rv, k, _)| *k == kind && *rv > from)
        {
            let _ = tx.send(event.clone());
        }
        c.watches.push((kind, tx));
        c.record(req, Some(kind), Outcome::Watch);
    }
    drop(c);
    let mut rsp = Response::new(Events(rx).boxed());
    rsp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    rsp
}

/// The 410 Expired `ERROR` watch event.
fn expired(from: u64, oldest: u64) -> Value {
    json!({
        "type": "ERROR",
        "object": {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": format!("too old resource version: {from} ({oldest})"),
            "reason": "Expired",
            "code": 410,
        },
    })
}

/// A watch stream's body: the events sent to it, until every sender is gone.
struct Events(mpsc::UnboundedReceiver<Bytes>);

impl Body for Events {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|event| event.map(|bytes| Ok(Frame::data(bytes))))
    }
}

fn line(event: &Value) -> Bytes {
    let mut text = event.to_string();
    text.push('\n');
    Bytes::from(text)
}

fn query(req: &Request<Incoming>) -> Vec<(String, String)> {
    req.uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (p.to_string(), String::new()),
        })
        .collect()
}

/// A Kubernetes `Status` failure body.
fn status(code: StatusCode, reason: &str, message: &str) -> Response<RspBody> {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    json_response(code, &body)
}

fn json_response(code: StatusCode, body: &Value) -> Response<RspBody> {
    let mut rsp = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *rsp.status_mut() = code;
    rsp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    rsp
}
