//! The webhook's HTTP side: `POST /inject` with an AdmissionReview, answered with
//! `weft-injector-core`'s decision and patch. A body that is not a review gets 400 naming what
//! was wrong; a namespace that cannot be looked up gets 500, so that the API server applies
//! the webhook's `failurePolicy` (the chart explains the choice).

use std::{future::Future, sync::Arc, time::Instant};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use tracing::{debug, info, warn};
use weft_injector_core::review::{self, Namespace, Outcome, Settings, MAX_REVIEW_BYTES};

use crate::metrics::{Metrics, Result as Counted};

/// Where the injector learns a namespace's labels and annotations.
pub(crate) trait Namespaces: Send + Sync + 'static {
    /// The namespace `name`: `Ok(None)` when it does not exist (yet), `Err` when it cannot be
    /// known now.
    fn get(&self, name: &str) -> impl Future<Output = Result<Option<Namespace>, String>> + Send;
}

/// What every request needs.
pub(crate) struct State<N> {
    pub(crate) settings: Settings,
    pub(crate) namespaces: N,
    pub(crate) metrics: Arc<Metrics>,
}

/// Answers one HTTP request.
pub(crate) async fn handle<B, N>(req: Request<B>, state: &State<N>) -> Response<Full<Bytes>>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    N: Namespaces,
{
    let started = Instant::now();
    let (status, body, counted) = answer(req, state).await;
    state.metrics.review(counted, started.elapsed());
    let mut rsp = Response::new(Full::new(body));
    *rsp.status_mut() = status;
    let content_type = if status == StatusCode::OK {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    rsp
}

async fn answer<B, N>(req: Request<B>, state: &State<N>) -> (StatusCode, Bytes, Counted)
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    N: Namespaces,
{
    let plain = |status, text: String| (status, Bytes::from(text + "\n"), Counted::Malformed);
    if req.uri().path() != "/inject" {
        return plain(StatusCode::NOT_FOUND, "not found: POST /inject".into());
    }
    if req.method() != Method::POST {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} /inject: POST an AdmissionReview", req.method()),
        );
    }
    let body = match Limited::new(req.into_body(), MAX_REVIEW_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("the body cannot be read (at most {MAX_REVIEW_BYTES} bytes): {e}"),
            )
        }
    };
    let review = match review::Request::parse(&body) {
        Ok(review) => review,
        Err(e) => return plain(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let namespace = match review.namespace() {
        None => Namespace::default(),
        Some(name) => match state.namespaces.get(name).await {
            Ok(found) => found.unwrap_or_default(),
            Err(e) => {
                warn!(namespace = name, error = %e, "namespace unknown; the review fails");
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Bytes::from(format!("namespace {name} cannot be looked up: {e}\n")),
                    Counted::Error,
                );
            }
        },
    };
    let answer = review.answer(&namespace, &state.settings);
    let counted = match &answer.outcome {
        Outcome::Injected => {
            info!(namespace = review.namespace(), "pod injected");
            Counted::Injected
        }
        Outcome::Skipped(why) => {
            debug!(namespace = review.namespace(), %why, "pod not injected");
            Counted::Skipped
        }
        Outcome::NotAPod => Counted::NotAPod,
        Outcome::Refused => {
            info!(namespace = review.namespace(), why = %answer.response.result.message, "pod refused");
            Counted::Refused
        }
    };
    (StatusCode::OK, Bytes::from(answer.to_json()), counted)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use weft_injector_core::inject;

    use super::*;

    /// Namespaces from a map; `broken` fails every lookup.
    struct Fixed {
        known: BTreeMap<String, Namespace>,
        broken: bool,
    }

    impl Namespaces for Fixed {
        async fn get(&self, name: &str) -> Result<Option<Namespace>, String> {
            if self.broken {
                return Err("the API server is away".into());
            }
            Ok(self.known.get(name).cloned())
        }
    }

    fn state(broken: bool) -> State<Fixed> {
        let shop = Namespace {
            labels: BTreeMap::from([("weft.dev/inject".into(), "enabled".into())]),
            ..Default::default()
        };
        State {
            settings: Settings {
                inject: inject::Config::new(
                    "weft.local/weft-proxy:0.1.0",
                    "weft.local/weft-init:0.1.0",
                    "weft-control-plane.weft.svc.cluster.local:8443",
                    "pem",
                ),
                weft_namespace: "weft".into(),
            },
            namespaces: Fixed {
                known: BTreeMap::from([("shop".into(), shop)]),
                broken,
            },
            metrics: Arc::new(Metrics::new().expect("metrics")),
        }
    }

    fn review(namespace: &str) -> Bytes {
        Bytes::from(format!(
            r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{
            "uid":"u-1","kind":{{"group":"","version":"v1","kind":"Pod"}},
            "resource":{{"group":"","version":"v1","resource":"pods"}},
            "namespace":"{namespace}","operation":"CREATE","userInfo":{{}},
            "object":{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"web"}},
                      "spec":{{"containers":[{{"name":"web","image":"web"}}]}}}}}}}}"#
        ))
    }

    async fn call(
        state: &State<Fixed>,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> (StatusCode, String) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(Full::new(body))
            .expect("request");
        let rsp = handle(req, state).await;
        let status = rsp.status();
        let body = rsp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn a_review_is_answered_and_counted() {
        let state = state(false);
        let (status, body) = call(&state, Method::POST, "/inject", review("shop")).await;
        assert_eq!(status, StatusCode::OK);
        let out: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(out["response"]["uid"], "u-1");
        assert_eq!(out["response"]["patchType"], "JSONPatch");
        // A namespace without the label: allowed, no patch.
        let (_, body) = call(&state, Method::POST, "/inject", review("other")).await;
        let out: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(out["response"]["allowed"], true);
        assert!(out["response"].get("patch").is_none());
        let text = state.metrics.encode();
        assert!(
            text.contains("weft_injector_reviews_total{result=\"injected\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("weft_injector_reviews_total{result=\"skipped\"} 1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn bad_requests_say_what_was_wrong() {
        let state = state(false);
        let (status, body) = call(&state, Method::POST, "/inject", Bytes::from("{")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("AdmissionReview"), "{body}");
        let (status, _) = call(&state, Method::GET, "/inject", Bytes::new()).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        let (status, _) = call(&state, Method::POST, "/mutate", review("shop")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let huge = Bytes::from(vec![b' '; MAX_REVIEW_BYTES + 1]);
        let (status, body) = call(&state, Method::POST, "/inject", huge).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("at most"), "{body}");
    }

    #[tokio::test]
    async fn an_unknown_namespace_state_fails_the_review_for_the_failure_policy() {
        let state = state(true);
        let (status, body) = call(&state, Method::POST, "/inject", review("shop")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(body.contains("shop") && body.contains("away"), "{body}");
        assert!(state
            .metrics
            .encode()
            .contains("weft_injector_reviews_total{result=\"error\"} 1"));
    }
}
