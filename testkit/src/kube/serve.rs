//! How the fake API server answers one request.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited};
use hyper::{
    body::{Body, Frame, Incoming},
    Method, Request, Response, StatusCode,
};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::{
    cluster::{expired, line, Kind, Outcome, Recorded},
    Shared, Verdict, TOKEN_AUDIENCE, TOKEN_REVIEWS,
};

pub(super) type RspBody = BoxBody<Bytes, Infallible>;

/// The server is down: the connection is closed without an answer.
#[derive(Debug)]
pub(super) struct Down;

impl std::fmt::Display for Down {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the fake API server is down")
    }
}

impl std::error::Error for Down {}

/// Parameters kube-rs's watcher sends with `watcher::Config::default()`.
const LIST_PARAMS: [&str; 2] = ["limit", "continue"];
const WATCH_PARAMS: [&str; 4] = [
    "watch",
    "resourceVersion",
    "allowWatchBookmarks",
    "timeoutSeconds",
];

/// The request as recorded, before it is consumed.
struct Head {
    method: Method,
    path: String,
    uri: String,
    query: Vec<(String, String)>,
    authorization: Option<String>,
}

impl Head {
    fn of(req: &Request<Incoming>) -> Head {
        Head {
            method: req.method().clone(),
            path: req.uri().path().to_string(),
            uri: req.uri().to_string(),
            query: query(req),
            authorization: req
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        }
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub(super) async fn answer(
    req: Request<Incoming>,
    shared: &Shared,
) -> Result<Response<RspBody>, Down> {
    if shared.is_down() {
        shared.lock().refused += 1;
        return Err(Down);
    }
    let head = Head::of(&req);
    if head.path == TOKEN_REVIEWS {
        return Ok(token_review(req, head, shared).await);
    }
    if let Some((kind, namespace, name)) = Kind::from_status_path(&head.path) {
        if head.method == Method::PATCH {
            return Ok(patch_status(req, &head, kind, &namespace, &name, shared).await);
        }
        return Ok(get(&head, kind, &namespace, &name, shared));
    }
    if let Some((kind, namespace, name)) = Kind::from_object_path(&head.path) {
        return Ok(get(&head, kind, &namespace, &name, shared));
    }
    let Some(kind) = Kind::from_path(&head.path) else {
        let problem = format!(
            "the server could not find the requested resource: {}",
            head.uri
        );
        return Ok(refuse(
            shared,
            &head,
            None,
            StatusCode::NOT_FOUND,
            "NotFound",
            problem,
        ));
    };
    if shared.lock().unserved.contains(&kind) {
        shared
            .lock()
            .requests
            .push(head.record(Some(kind), Outcome::NotServed));
        return Ok(status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        ));
    }
    if shared.lock().forbidden.contains(&kind) {
        shared
            .lock()
            .requests
            .push(head.record(Some(kind), Outcome::Forbidden));
        return Ok(status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "the caller may not list this resource",
        ));
    }
    if head.method != Method::GET {
        let problem = format!("{} {} is not supported", head.method, head.uri);
        return Ok(refuse(
            shared,
            &head,
            Some(kind),
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            problem,
        ));
    }
    let bad = |problem: String| {
        refuse(
            shared,
            &head,
            Some(kind),
            StatusCode::BAD_REQUEST,
            "BadRequest",
            problem,
        )
    };
    let watching = head.param("watch") == Some("true");
    let allowed: &[&str] = if watching {
        &WATCH_PARAMS
    } else {
        &LIST_PARAMS
    };
    if let Some((k, v)) = head
        .query
        .iter()
        .find(|(k, _)| !allowed.contains(&k.as_str()))
    {
        return Ok(bad(format!(
            "unexpected query parameter {k}={v} in {}",
            head.uri
        )));
    }
    if watching {
        let Some(from) = head
            .param("resourceVersion")
            .and_then(|v| v.parse::<u64>().ok())
        else {
            return Ok(bad(format!(
                "watch without a numeric resourceVersion: {}",
                head.uri
            )));
        };
        if head
            .param("timeoutSeconds")
            .is_some_and(|t| t.parse::<u32>().is_err())
        {
            return Ok(bad(format!("timeoutSeconds is not a number: {}", head.uri)));
        }
        return Ok(watch_stream(&head, kind, from, shared));
    }
    let limit = match head.param("limit").map(str::parse::<usize>) {
        None => None,
        Some(Ok(l)) if l > 0 => Some(l),
        Some(_) => return Ok(bad(format!("limit is not a positive number: {}", head.uri))),
    };
    Ok(list(&head, kind, limit, shared).await)
}

/// A LIST page of `kind` over all namespaces.
async fn list(head: &Head, kind: Kind, limit: Option<usize>, shared: &Shared) -> Response<RspBody> {
    // A held LIST waits (the Notified future is created before the check, so a release in
    // between is not missed).
    loop {
        let notified = shared.released.notified();
        if !shared.lock().held.contains(&kind) {
            break;
        }
        notified.await;
    }
    let mut c = shared.lock();
    let (rv, mut items) = match head.param("continue") {
        Some(token) => match c.continues.remove(token) {
            Some((rv, k, items)) if k == kind => (rv, items),
            _ => {
                drop(c);
                return refuse(
                    shared,
                    head,
                    Some(kind),
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
    c.requests.push(head.record(Some(kind), Outcome::List));
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
fn watch_stream(head: &Head, kind: Kind, from: u64, shared: &Shared) -> Response<RspBody> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut c = shared.lock();
    if from > c.rv {
        drop(c);
        return refuse(
            shared,
            head,
            Some(kind),
            StatusCode::GATEWAY_TIMEOUT,
            "Timeout",
            format!("Too large resource version: {from}"),
        );
    }
    if from < c.compacted {
        let _ = tx.send(line(&expired(from, c.compacted)));
        c.requests.push(head.record(Some(kind), Outcome::Gone));
    } else {
        for (_, _, event) in c
            .history
            .iter()
            .filter(|(rv, k, _)| *k == kind && *rv > from)
        {
            let _ = tx.send(event.clone());
        }
        c.watches.push((kind, tx));
        c.requests.push(head.record(Some(kind), Outcome::Watch));
    }
    drop(c);
    let mut rsp = Response::new(Events(rx).boxed());
    rsp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    rsp
}

/// `GET` of one object: it, or a 404 `Status` as a real API server sends.
fn get(head: &Head, kind: Kind, namespace: &str, name: &str, shared: &Shared) -> Response<RspBody> {
    if head.method != Method::GET {
        let problem = format!("{} {} is not supported", head.method, head.uri);
        return refuse(
            shared,
            head,
            Some(kind),
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            problem,
        );
    }
    if let Some((k, v)) = head.query.first() {
        let problem = format!("unexpected query parameter {k}={v} in {}", head.uri);
        return refuse(
            shared,
            head,
            Some(kind),
            StatusCode::BAD_REQUEST,
            "BadRequest",
            problem,
        );
    }
    let mut c = shared.lock();
    c.requests.push(head.record(Some(kind), Outcome::Get));
    match c.get(kind, namespace, name) {
        Some(object) => json_response(StatusCode::OK, object),
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("{} \"{name}\" not found", kind.plural()),
        ),
    }
}

/// A merge `PATCH` of an object's `status` subresource (as kube-rs's `Api::patch_status` sends
/// it with `Patch::Merge`): applied, or answered 409 for a stale `metadata.resourceVersion`, 404,
/// or a failure the test queued.
async fn patch_status(
    req: Request<Incoming>,
    head: &Head,
    kind: Kind,
    namespace: &str,
    name: &str,
    shared: &Shared,
) -> Response<RspBody> {
    let bad = |problem: String| {
        refuse(
            shared,
            head,
            Some(kind),
            StatusCode::BAD_REQUEST,
            "BadRequest",
            problem,
        )
    };
    let content_type = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if content_type != "application/merge-patch+json" {
        return bad(format!("status PATCH with content-type {content_type:?}"));
    }
    if let Some((k, v)) = head.query.iter().find(|(k, _)| k != "fieldManager") {
        return bad(format!(
            "unexpected query parameter {k}={v} in {}",
            head.uri
        ));
    }
    let body = match Limited::new(req.into_body(), 1024 * 1024).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => return bad(format!("reading the status PATCH body: {e}")),
    };
    let patch: Value = match serde_json::from_slice(&body) {
        Ok(patch) => patch,
        Err(e) => return bad(format!("the status PATCH body is not JSON: {e}")),
    };
    let mut c = shared.lock();
    c.requests
        .push(head.record(Some(kind), Outcome::StatusPatch));
    match c.patch_status(kind, namespace, name, &patch) {
        Ok(object) => json_response(StatusCode::OK, &object),
        Err((code, message)) => {
            let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let reason = match code {
                StatusCode::CONFLICT => "Conflict",
                StatusCode::NOT_FOUND => "NotFound",
                _ => "InternalError",
            };
            status(code, reason, &message)
        }
    }
}

/// `POST` of a TokenReview: the verdict the test gave the token, or unauthenticated.
async fn token_review(req: Request<Incoming>, head: Head, shared: &Shared) -> Response<RspBody> {
    let review = match well_formed_review(req).await {
        Ok(review) => review,
        Err(problem) => {
            return refuse(
                shared,
                &head,
                None,
                StatusCode::BAD_REQUEST,
                "BadRequest",
                problem,
            )
        }
    };
    {
        let mut c = shared.lock();
        c.requests.push(head.record(None, Outcome::TokenReview));
        c.reviews.push(review.clone());
    }
    let spec = review["spec"].clone();
    let token = spec["token"].as_str().unwrap_or_default();
    let asked: Vec<Value> = spec["audiences"].as_array().cloned().unwrap_or_default();
    let authenticated = |username: String, audiences: Vec<Value>| {
        json!({
            "authenticated": true,
            "user": {
                "username": username,
                "uid": "6f1f3c1e-0000-4000-8000-000000000001",
                "groups": ["system:serviceaccounts", "system:authenticated"],
                "extra": {
                    "authentication.kubernetes.io/pod-name": ["web-7d4b9c-xk2lp"],
                },
            },
            "audiences": audiences,
        })
    };
    let review_status = match shared.verdicts.get(token) {
        None => json!({
            "user": {},
            "error": "[invalid bearer token, service account token has been invalidated]",
        }),
        Some(Verdict::ServiceAccount { ns, sa }) => {
            authenticated(format!("system:serviceaccount:{ns}:{sa}"), asked)
        }
        Some(Verdict::OtherAudience { ns, sa }) => authenticated(
            format!("system:serviceaccount:{ns}:{sa}"),
            vec![json!("https://kubernetes.default.svc.cluster.local")],
        ),
        Some(Verdict::User(name)) => authenticated(name.clone(), asked),
        Some(Verdict::ServerError) => {
            return status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "Internal error occurred: authentication webhook unavailable",
            )
        }
        Some(Verdict::Hang) => std::future::pending().await,
    };
    let body = json!({
        "kind": "TokenReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": { "creationTimestamp": null },
        "spec": spec,
        "status": review_status,
    });
    json_response(StatusCode::CREATED, &body)
}

/// The request's TokenReview, if it is one a real API server would take, asking for the
/// control plane's audience.
async fn well_formed_review(req: Request<Incoming>) -> Result<Value, String> {
    if req.method() != Method::POST {
        return Err(format!("unexpected {} {}", req.method(), req.uri()));
    }
    let content_type = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if !content_type.starts_with("application/json") {
        return Err(format!("content-type {content_type:?}"));
    }
    let body = Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
        .map_err(|e| format!("reading the body: {e}"))?
        .to_bytes();
    let review: Value =
        serde_json::from_slice(&body).map_err(|e| format!("body is not JSON: {e}"))?;
    if review["apiVersion"] != "authentication.k8s.io/v1" || review["kind"] != "TokenReview" {
        return Err(format!("not a TokenReview v1: {review}"));
    }
    if !review["spec"]["token"].is_string() {
        return Err(format!("spec.token missing: {review}"));
    }
    if review["spec"]["audiences"] != json!([TOKEN_AUDIENCE]) {
        return Err(format!("spec.audiences: {}", review["spec"]["audiences"]));
    }
    Ok(review)
}

impl Head {
    fn record(&self, kind: Option<Kind>, outcome: Outcome) -> Recorded {
        Recorded {
            method: self.method.to_string(),
            path: self.path.clone(),
            query: self.query.clone(),
            kind,
            outcome,
            authorization: self.authorization.clone(),
        }
    }
}

/// Records `problem` and answers it with a `Status`.
fn refuse(
    shared: &Shared,
    head: &Head,
    kind: Option<Kind>,
    code: StatusCode,
    reason: &str,
    problem: String,
) -> Response<RspBody> {
    let mut c = shared.lock();
    c.requests.push(head.record(kind, Outcome::Refused));
    c.problems.push(problem.clone());
    status(code, reason, &problem)
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
