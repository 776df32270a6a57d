//! Tracing at the edge of the per-request path: the request's trace context read, the sampling
//! decision made, the proxy's own context written onto the request before any stage sees it,
//! and, for a sampled request, its span recorded when the answer's head is ready.
//!
//! A listener without tracing (`ServerSettings::trace` unset) does none of this: headers pass
//! through untouched. With tracing, a request whose caller already decided not to sample passes
//! through untouched too; every other request gets a `traceparent` (a trace of its own when it
//! came without one), so that the next hop follows this proxy's decision rather than making its
//! own. Only a sampled request allocates its span (boxed, so the per-request future grows by a
//! pointer).
//!
//! The span ends when the response's head is back: its body's time is not in it.

use std::{net::SocketAddr, sync::Arc, time::SystemTime};

use crate::answer;
use http::{Method, Request, Response, Version};
use tracing::debug;
use weft_proxy_metrics::RequestSeries;
use weft_proxy_trace::{context, Kind, Outgoing, Span, SpanId, TraceId, Tracing};

/// A sampled request's span, begun.
#[derive(Debug)]
pub struct Begun {
    tracing: Arc<Tracing>,
    trace_id: TraceId,
    span_id: SpanId,
    parent: Option<SpanId>,
    start: SystemTime,
    method: Method,
    path: Box<str>,
    authority: Option<Box<str>>,
    version: Version,
    peer: Option<SocketAddr>,
    peer_identity: Option<Arc<str>>,
    route: Option<Arc<str>>,
    backend: Option<Arc<str>>,
}

/// Reads `req`'s context, decides, writes the context the next hop sees; the span, if sampled.
pub fn begin<B>(tracing: &Arc<Tracing>, req: &mut Request<B>) -> Option<Box<Begun>> {
    let incoming = match context::read(req.headers()) {
        Ok(incoming) => incoming,
        Err(e) => {
            debug!(error = %e, "ignoring the request's trace context; starting a new trace");
            None
        }
    };
    if let Some(i) = &incoming {
        if i.ids.is_some() && i.sampled == Some(false) {
            // The caller decided, with ids the next hop can carry on: nothing to add.
            return None;
        }
    }
    // Two draws: 128 bits for a new trace id (used only for a root), whose low half is also a
    // root's sampling draw (as a ratio sampler on the trace id does: ids are uniform), and 64
    // for this proxy's span id.
    let bits: u128 = rand::random::<u128>().max(1);
    let sampled = context::decide(incoming.as_ref(), tracing.ratio, bits as u64);
    let new_trace = TraceId::from_random(bits)?;
    let span_id = SpanId::from_random(rand::random::<u64>().max(1))?;
    let (out, parent) = Outgoing::child(incoming.as_ref(), sampled, new_trace, span_id);
    context::write(req.headers_mut(), &out);
    if !sampled {
        return None;
    }
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers().get(http::header::HOST)?.to_str().ok())
        .map(Box::from);
    Some(Box::new(Begun {
        tracing: tracing.clone(),
        trace_id: out.trace_id,
        span_id,
        parent,
        start: SystemTime::now(),
        method: req.method().clone(),
        path: req.uri().path().into(),
        authority,
        version: req.version(),
        peer: None,
        peer_identity: None,
        route: None,
        backend: None,
    }))
}

impl Begun {
    /// The other side of the hop: its address and, over mTLS, its identity.
    pub fn peer(mut self, addr: Option<SocketAddr>, identity: Option<Arc<str>>) -> Self {
        self.peer = addr;
        self.peer_identity = identity;
        self
    }

    /// Who served the request, from the series it is counted in: for a client span, the
    /// endpoint, its identity over mTLS, the route rule and the backend Service. (A server
    /// span's peer is its caller, set with [`Self::peer`].)
    pub fn served_by(mut self, series: Option<&RequestSeries>) -> Self {
        let Some(s) = series.filter(|_| self.tracing.kind == Kind::Client) else {
            return self;
        };
        let some = |v: &Arc<str>| (!v.is_empty()).then(|| v.clone());
        if self.peer.is_none() {
            self.peer = s.dst_endpoint().parse().ok();
        }
        if self.peer_identity.is_none() {
            self.peer_identity = some(s.server_id());
        }
        self.route = some(s.route());
        self.backend = some(s.dst_service());
        self
    }

    /// Ends the span with the answer (its status, retries and fault; `error` when the proxy
    /// answered itself) and hands it to the recorder.
    pub fn finish<B>(self, rsp: &Response<B>, error: Option<&'static str>) {
        let b = self;
        let (retries, fault) = answer::policy_of(rsp);
        b.tracing.recorder.record(Span {
            trace_id: b.trace_id,
            span_id: b.span_id,
            parent: b.parent,
            kind: b.tracing.kind,
            start: b.start,
            end: SystemTime::now(),
            method: b.method,
            path: b.path,
            authority: b.authority,
            version: b.version,
            status: Some(rsp.status()),
            error,
            peer: b.peer,
            peer_identity: b.peer_identity,
            route: b.route,
            backend: b.backend,
            retries,
            fault: fault.map(Box::from),
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use weft_proxy_trace::{context::Ratio, Recorder};

    use super::*;
    use crate::answer::{Retried, FAULT_HEADER};

    #[derive(Debug, Default)]
    struct Kept(Mutex<Vec<Span>>);

    impl Recorder for Kept {
        fn record(&self, span: Span) {
            self.0.lock().expect("lock").push(span);
        }
    }

    fn traced(rsp: &Response<()>) -> Span {
        let kept = Arc::new(Kept::default());
        let tracing = Arc::new(Tracing {
            kind: Kind::Client,
            ratio: Ratio::ALWAYS,
            recorder: kept.clone(),
        });
        let mut req = Request::get("http://api.shop/x").body(()).expect("request");
        let begun = begin(&tracing, &mut req).expect("sampled");
        begun.finish(rsp, None);
        let mut spans = kept.0.lock().expect("lock");
        assert_eq!(spans.len(), 1);
        spans.remove(0)
    }

    #[test]
    fn a_span_carries_the_policys_retries_and_fault() {
        let mut rsp = Response::builder()
            .status(503)
            .header(FAULT_HEADER, "abort shop/abort-quarter")
            .body(())
            .expect("response");
        rsp.extensions_mut().insert(Retried(2));
        let span = traced(&rsp);
        assert_eq!(span.status, Some(http::StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(span.retries, 2);
        assert_eq!(span.fault.as_deref(), Some("abort shop/abort-quarter"));

        let plain = traced(&Response::new(()));
        assert_eq!((plain.retries, plain.fault), (0, None));
    }
}
