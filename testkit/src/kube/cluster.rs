//! The fake API server's state: the objects, one cluster-wide resourceVersion, the history of
//! changes, the open watches, and every request received.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// The kinds served: the core kinds and the route kinds' CRDs, as the control plane watches
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Service,
    EndpointSlice,
    Pod,
    HttpRoute,
    ReferenceGrant,
    TrafficSplit,
    HttpFault,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Pod,
        Kind::HttpRoute,
        Kind::ReferenceGrant,
        Kind::TrafficSplit,
        Kind::HttpFault,
    ];

    /// The collection path over all namespaces.
    pub fn path(self) -> String {
        format!("{}/{}", self.group_path(), self.plural())
    }

    /// The path of one object.
    pub fn object_path(self, namespace: &str, name: &str) -> String {
        format!(
            "{}/namespaces/{namespace}/{}/{name}",
            self.group_path(),
            self.plural()
        )
    }

    fn group_path(self) -> String {
        match self.api_version() {
            "v1" => "/api/v1".to_string(),
            group_version => format!("/apis/{group_version}"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Pod => "Pod",
            Kind::HttpRoute => "HTTPRoute",
            Kind::ReferenceGrant => "ReferenceGrant",
            Kind::TrafficSplit => "TrafficSplit",
            Kind::HttpFault => "HTTPFault",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Kind::Service => "services",
            Kind::EndpointSlice => "endpointslices",
            Kind::Pod => "pods",
            Kind::HttpRoute => "httproutes",
            Kind::ReferenceGrant => "referencegrants",
            Kind::TrafficSplit => "trafficsplits",
            Kind::HttpFault => "httpfaults",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            Kind::Service | Kind::Pod => "v1",
            Kind::HttpRoute => "gateway.networking.k8s.io/v1",
            Kind::ReferenceGrant => "gateway.networking.k8s.io/v1beta1",
            Kind::TrafficSplit => "split.smi-spec.io/v1alpha4",
            Kind::HttpFault => "weft.dev/v1alpha1",
        }
    }

    pub(super) fn from_path(path: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.path() == path)
    }

    /// The kind, namespace and name of an object's `status` subresource path.
    pub(super) fn from_status_path(path: &str) -> Option<(Kind, String, String)> {
        Kind::from_object_path(path.strip_suffix("/status")?)
    }

    /// The kind, namespace and name of an object path.
    pub(super) fn from_object_path(path: &str) -> Option<(Kind, String, String)> {
        let (_, rest) = path.split_once("/namespaces/")?;
        let mut parts = rest.split('/');
        let (namespace, plural, name) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || namespace.is_empty() || name.is_empty() {
            return None;
        }
        let kind = Kind::ALL.into_iter().find(|k| k.plural() == plural)?;
        (kind.object_path(namespace, name) == path)
            .then(|| (kind, namespace.to_string(), name.to_string()))
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
    /// One object (GET), found or not.
    Get,
    /// A merge PATCH of an object's `status` subresource, applied or answered with an error
    /// (a precondition's 409, or one the test queued).
    StatusPatch,
    /// A TokenReview.
    TokenReview,
    /// A `Status` error (the request is also in the problems).
    Refused,
    /// 404 for a kind the server was told not to serve ([`super::FakeKube::unserve`]).
    NotServed,
    /// 403 for a kind the caller was told it may not read ([`super::FakeKube::forbid`]).
    Forbidden,
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
    /// The `Authorization` header, if the client sent one.
    pub authorization: Option<String>,
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

/// The cluster's state, history and open watches. Tests change it through
/// [`FakeKube::with`](super::FakeKube::with) (several changes under one lock: no request is
/// served in between) or the shortcuts on [`FakeKube`](super::FakeKube).
#[derive(Debug, Default)]
pub struct Cluster {
    pub(super) rv: u64,
    /// A watch from a resourceVersion older than this gets 410 Expired.
    pub(super) compacted: u64,
    pub(super) objects: BTreeMap<(Kind, String, String), Value>,
    /// Events after `compacted`: resourceVersion, kind, the event's JSON line.
    pub(super) history: Vec<(u64, Kind, Bytes)>,
    pub(super) watches: Vec<(Kind, mpsc::UnboundedSender<Bytes>)>,
    /// LIST continuations: token -> (resourceVersion, kind, items left).
    pub(super) continues: HashMap<String, (u64, Kind, Vec<Value>)>,
    pub(super) next_token: u64,
    next_uid: u64,
    /// Largest LIST page served whatever the client's `limit` (a server may return fewer).
    pub(super) max_page: Option<usize>,
    /// Kinds whose LIST waits until released.
    pub(super) held: BTreeSet<Kind>,
    /// Kinds answered 404, as by an API server without their CRD.
    pub(super) unserved: BTreeSet<Kind>,
    pub(super) forbidden: BTreeSet<Kind>,
    pub(super) requests: Vec<Recorded>,
    pub(super) problems: Vec<String>,
    /// Well-formed TokenReview request bodies, in order.
    pub(super) reviews: Vec<Value>,
    /// Connections closed unanswered while the server was down.
    pub(super) refused: usize,
    /// Status codes the next status PATCHes are answered with, in order, instead of applying.
    pub(super) status_failures: std::collections::VecDeque<u16>,
    /// Every status PATCH received: the object's namespace/name and the patch's body.
    pub(super) status_patches: Vec<(String, Value)>,
}

impl Cluster {
    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// Creates or replaces `object` (it must have `metadata.name` and `metadata.namespace`);
    /// sets its `kind`, `apiVersion`, `resourceVersion`, `uid` and `creationTimestamp` as an
    /// API server does; returns its new resourceVersion.
    ///
    /// # Panics
    /// Without `metadata.name` or `metadata.namespace`: the test's object is wrong.
    pub fn apply(&mut self, kind: Kind, mut object: Value) -> u64 {
        let name = object["metadata"]["name"]
            .as_str()
            .expect("the object has metadata.name")
            .to_string();
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .expect("the object has metadata.namespace")
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
    ///
    /// # Panics
    /// If there is no such object: the test's premise is wrong.
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

    /// Answers the next status PATCHes with these codes (409 Conflict, 500, ...), in order,
    /// without applying them.
    pub fn fail_status_patches(&mut self, codes: &[u16]) {
        self.status_failures.extend(codes);
    }

    /// Forgets the failures queued by [`Cluster::fail_status_patches`] and not yet answered.
    pub fn clear_status_failures(&mut self) {
        self.status_failures.clear();
    }

    /// Every status PATCH received: the object's `namespace/name` and the patch's body.
    pub fn status_patches(&self) -> &[(String, Value)] {
        &self.status_patches
    }

    /// Applies a merge patch's `status` to an object, as the `status` subresource does: the
    /// rest of the patch is ignored, but its `metadata.resourceVersion`, when present, must be
    /// the object's (else 409). Returns the object as patched, or the error's code and message.
    pub(super) fn patch_status(
        &mut self,
        kind: Kind,
        namespace: &str,
        name: &str,
        patch: &Value,
    ) -> Result<Value, (u16, String)> {
        let key = (kind, namespace.to_string(), name.to_string());
        self.status_patches
            .push((format!("{namespace}/{name}"), patch.clone()));
        if let Some(code) = self.status_failures.pop_front() {
            return Err((code, format!("the test answers this status patch {code}")));
        }
        let Some(object) = self.objects.get(&key) else {
            return Err((404, format!("{} \"{name}\" not found", kind.plural())));
        };
        let mut object = object.clone();
        if let Some(wanted) = patch["metadata"]["resourceVersion"].as_str() {
            if object["metadata"]["resourceVersion"].as_str() != Some(wanted) {
                return Err((
                    409,
                    format!(
                        "Operation cannot be fulfilled on {} \"{name}\": the object has been \
                         modified; please apply your changes to the latest version and try again",
                        kind.plural()
                    ),
                ));
            }
        }
        if let Some(status) = patch.get("status") {
            merge(&mut object["status"], status);
        }
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.objects.insert(key, object.clone());
        self.emit(kind, "MODIFIED", object.clone());
        Ok(object)
    }

    /// The object `namespace/name` of `kind`, as served.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(&(kind, namespace.to_string(), name.to_string()))
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
}

/// RFC 7386 JSON merge patch: objects merge key by key, `null` removes, anything else
/// (lists included) replaces.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Value::Object(target) = target {
        for (k, v) in patch {
            if v.is_null() {
                target.remove(k);
            } else {
                merge(target.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// The 410 Expired `ERROR` watch event.
pub(super) fn expired(from: u64, oldest: u64) -> Value {
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

/// One watch event line: JSON and a newline.
pub(super) fn line(event: &Value) -> Bytes {
    let mut text = event.to_string();
    text.push('\n');
    Bytes::from(text)
}
