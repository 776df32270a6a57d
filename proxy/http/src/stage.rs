//! The per-request stages a request passes through, and the trait they share.
//!
//! A stage takes a request (and the request's [`Cx`]) and answers it, usually by calling the
//! stage below it: outbound, `split` (which backend Service) -> `balance` (which endpoint of
//! it) -> `forward` (that endpoint's connection pool). A timeout, a retry, a fault, a route
//! match or a policy check is one more stage that wraps another.
//!
//! Why a trait of our own rather than `tower::Service`: tower's `call(&mut self)` and
//! `poll_ready` make every layer clone itself per request behind hyper's `&self` service, and
//! a layer's future must be named (hand-written or boxed) to be stored. A stage is called
//! through `&self` and returns `impl Future`, so a whole stack compiles into one state machine
//! with no allocation per request and no readiness protocol (our pools have their own
//! readiness; back-pressure comes from the connections). Stages that want tower's middleware
//! later can be adapted at the edge.

use std::{future::Future, time::Instant};

use http::{Request, Response};
use weft_proxy_metrics::RouteLabel;
use weft_proxy_transport::OrigDstAddr;

use crate::{body::RequestBody, body::ResponseBody, error::ProxyError};

/// What a stage knows of a request beyond the request itself.
#[derive(Clone, Copy, Debug)]
pub struct Cx {
    /// The destination the client connected to (its original destination): the authority of
    /// last resort and what logs name.
    pub dst: OrigDstAddr,
    /// When the request arrived: the start of its `weft_request_duration_seconds`.
    pub start: Instant,
    /// The route rule that chose the request's backend, for its `route` label; none until a
    /// route stage sets it.
    pub route: RouteLabel,
}

impl Cx {
    /// A request to `dst` arriving now, not routed yet.
    pub fn new(dst: OrigDstAddr, start: Instant) -> Self {
        Self {
            dst,
            start,
            route: RouteLabel::NONE,
        }
    }
}

/// The result every stage gives: the upstream's response (its body counted when dropped), or
/// why the proxy answers itself (counted by the stage that failed; the edge turns it into a
/// status with [`ProxyError::into_response`]).
pub type StageResult = Result<Response<ResponseBody>, ProxyError>;

/// One step of the per-request path.
///
/// Keep each stage's future small: hyper moves the whole stack's future into a task per HTTP/2
/// stream. An `async fn` keeps its arguments (the request, a few hundred bytes) in its future
/// even after handing them on, so a stage that only chooses where a request goes returns the
/// next stage's future itself (see `split`), and only a stage that must act after the answer
/// (`balance`, `forward`) is an `async fn`. `proxy/src/outbound/tests.rs` guards the size.
pub trait Stage: Send + Sync {
    /// Answers `req`.
    fn call(
        &self,
        req: Request<RequestBody>,
        cx: Cx,
    ) -> impl Future<Output = StageResult> + Send + '_;
}
