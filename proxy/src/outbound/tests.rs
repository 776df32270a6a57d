use std::{sync::Arc, time::Duration};

use http::Request;
use hyper::body::Incoming;
use tokio_util::task::TaskTracker;
use weft_proxy_http::{
    client::UpstreamVersion,
    forward::{Forward, Upstream},
    ClientSettings, Upstreams,
};
use weft_proxy_metrics::{Direction, Metrics};
use weft_proxy_transport::OrigDstAddr;

use super::HttpTarget;

/// hyper moves the future of every request into a new task for each HTTP/2 stream: its size is
/// copied per request. History: the dial paths boxed (2,904 -> 2,032 bytes); the HTTP/2 body an
/// `Either` (2,072); the balancer's pick held across the request (2,128, kept in the future
/// rather than boxed: a heap allocation per request costs more than copying 56 bytes); the
/// stack of stages (edge -> split -> balance -> forward, each request with its `Cx`): 2,344;
/// routes in front of the split (`outbound/routes.rs`, the backend's own future returned, a
/// boxed `After` only when a rule changes responses): 2,352 (an `async fn` there made it
/// 3,368, an `async` block awaiting the captured future 4,408); the route rule's metrics label
/// in `Cx` (a `u32`, 8 bytes with alignment, in two stages' copies of `Cx`): 2,368; the
/// policy stage's future inline beside a plain route's (its try inline, the rest boxed, one
/// more discriminant; boxed whole it cost every policy request a 2.7 KiB copy): 2,376.
/// Written naively (every stage an `async fn`, the replay state inline in the request body) it
/// was 4,992: an `async fn` keeps its arguments, the request among them, in its future after
/// handing them on. See `weft_proxy_http::stage`. A regression guard.
#[test]
fn the_per_request_future_stays_small() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let metrics = Arc::new(Metrics::new("t").expect("metrics"));
    let upstreams = Upstreams::new(
        ClientSettings {
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            max_idle_per_endpoint: 1,
        },
        metrics.clone(),
    );
    let dst = OrigDstAddr(([127, 0, 0, 1], 1).into());
    let stack = Arc::new(HttpTarget::Endpoint(Forward::new(
        Upstream::Plain(upstreams.endpoint(dst.0, UpstreamVersion::Http2)),
        dst.0.port(),
        metrics.plaintext(Direction::Outbound),
        TaskTracker::new(),
    )));
    // A request body of the real type needs a connection; the future's size does not depend on
    // the value, so build the future inside a closure that is never called. This is the future
    // `weft_proxy_http::serve` hands hyper's HTTP/1 server, and boxes for an HTTP/2 stream's
    // task (`h2_server`).
    let make = move |req: Request<Incoming>| {
        let req = req.map(weft_proxy_http::body::RequestBody::from);
        let stack = stack.clone();
        async move { weft_proxy_http::server::handle(&*stack, dst, req, None, None).await }
    };
    let size = size_of_return(&make);
    // 2376 before tracing; a sampled request's span and a tapped request's capture are one
    // boxed pointer more each (2392); resending to a peer without HTTP/1 mesh connections is
    // one await point more, boxed (2408); HTTP/2 upstreams on `h2` directly, the response
    // awaited in this future instead of in a task hyper spawned per request (2416).
    assert!(size <= 2416, "the per-request future grew to {size} bytes");

    fn size_of_return<F, Fut>(_: &F) -> usize
    where
        F: Fn(Request<Incoming>) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }
}
