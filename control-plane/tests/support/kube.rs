//! A fake Kubernetes API server on loopback (plain HTTP) that answers
//! `POST /apis/authentication.k8s.io/v1/tokenreviews` with the JSON a real one sends, and
//! records what it was asked. Anything else it is sent is a test failure (recorded in
//! `problems`) and gets a 400 `Status`, as a real API server would refuse it.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{body::Incoming, service::service_fn, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::{net::TcpListener, task::JoinSet};

/// The audience the control plane must ask for.
pub const AUDIENCE: &str = "identity.weft.dev";
pub const PATH: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

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

/// A running fake API server; stops (closing every connection) when dropped.
pub struct FakeApiServer {
    pub addr: SocketAddr,
    /// Every well-formed TokenReview request body received, in order.
    pub reviews: Arc<Mutex<Vec<Value>>>,
    /// What was wrong with requests that were not well-formed TokenReviews.
    pub problems: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeApiServer {
    /// Serves on 127.0.0.1:0; tokens not in `verdicts` are unauthenticated.
    pub async fn start(verdicts: HashMap<String, Verdict>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let reviews = Arc::new(Mutex::new(Vec::new()));
        let problems = Arc::new(Mutex::new(Vec::new()));
        let verdicts = Arc::new(verdicts);
        let state = (reviews.clone(), problems.clone());
        let task = tokio::spawn(async move {
            // Connections live in the set, so aborting this task closes them all.
            let mut conns = JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let verdicts = verdicts.clone();
                let (reviews, problems) = state.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req| {
                        let verdicts = verdicts.clone();
                        let reviews = reviews.clone();
                        let problems = problems.clone();
                        async move {
                            Ok::<_, Infallible>(answer(req, &verdicts, &reviews, &problems).await)
                        }
                    });
                    // No keep-alive: once stopped, the client cannot reuse a pooled
                    // connection, so "API server down" is seen at once.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(false)
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Self {
            addr,
            reviews,
            problems,
            task,
        }
    }

    /// Stops listening and closes every connection: the API server is down.
    pub fn stop(&self) {
        self.task.abort();
    }

    /// A kubeconfig in `dir` for this server: plain HTTP, no credentials.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        kubeconfig(dir, self.addr)
    }

    /// The tokens reviewed so far.
    pub fn reviewed_tokens(&self) -> Vec<String> {
        self.reviews
            .lock()
            .expect("reviews")
            .iter()
            .filter_map(|r| r["spec"]["token"].as_str().map(str::to_string))
            .collect()
    }

    /// Panics with what was wrong if any request was not a well-formed TokenReview.
    pub fn assert_no_problems(&self) {
        let problems = self.problems.lock().expect("problems");
        assert!(problems.is_empty(), "bad requests: {problems:?}");
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Writes a kubeconfig naming `http://addr` with no credentials.
pub fn kubeconfig(dir: &Path, addr: SocketAddr) -> PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: http://{addr}
users:
- name: anonymous
  user: {{}}
contexts:
- name: fake
  context:
    cluster: fake
    user: anonymous
    namespace: weft
current-context: fake
"
    );
    std::fs::write(&path, text).expect("write kubeconfig");
    path
}

async fn answer(
    req: Request<Incoming>,
    verdicts: &HashMap<String, Verdict>,
    reviews: &Mutex<Vec<Value>>,
    problems: &Mutex<Vec<String>>,
) -> Response<Full<Bytes>> {
    let review = match well_formed(req).await {
        Ok(review) => review,
        Err(problem) => {
            problems.lock().expect("problems").push(problem.clone());
            return status(StatusCode::BAD_REQUEST, "BadRequest", &problem);
        }
    };
    reviews.lock().expect("reviews").push(review.clone());
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
    let review_status = match verdicts.get(token) {
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

/// The request's TokenReview, if it is one a real API server would take.
async fn well_formed(req: Request<Incoming>) -> Result<Value, String> {
    if req.method() != hyper::Method::POST || req.uri().path() != PATH {
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
    if review["spec"]["audiences"] != json!([AUDIENCE]) {
        return Err(format!("spec.audiences: {}", review["spec"]["audiences"]));
    }
    Ok(review)
}

/// A Kubernetes `Status` failure body.
fn status(code: StatusCode, reason: &str, message: &str) -> Response<Full<Bytes>> {
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

fn json_response(code: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(Bytes::from(body.to_string())));
    *rsp.status_mut() = code;
    rsp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    rsp
}
