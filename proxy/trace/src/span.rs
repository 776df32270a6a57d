//! The span a proxied request leaves: what the exporter turns into OTLP. Made only for sampled
//! requests, so its owned strings cost nothing on the others.

use std::{net::SocketAddr, sync::Arc, time::SystemTime};

use http::{Method, StatusCode, Version};

use crate::context::{SpanId, TraceId};

/// Which side of the hop the span is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The outbound proxy's span: its app calling out (OpenTelemetry's CLIENT).
    Client,
    /// The inbound proxy's span: a call arriving for its app (SERVER).
    Server,
}

/// One request's span.
#[derive(Clone, Debug)]
pub struct Span {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// The caller's span; `None` for a trace this proxy started.
    pub parent: Option<SpanId>,
    pub kind: Kind,
    pub start: SystemTime,
    pub end: SystemTime,
    pub method: Method,
    /// The request target's path (`url.path`) and the authority it named (`server.address`).
    pub path: Box<str>,
    pub authority: Option<Box<str>>,
    pub version: Version,
    /// The response's status; `None` when none came (the error says why).
    pub status: Option<StatusCode>,
    /// Why the proxy answered itself or the exchange failed (`error.type`).
    pub error: Option<&'static str>,
    /// The other side's address, and its mesh identity when the hop was mTLS.
    pub peer: Option<SocketAddr>,
    pub peer_identity: Option<Arc<str>>,
    /// The route rule and the backend Service that served the request (outbound).
    pub route: Option<Arc<str>>,
    pub backend: Option<Arc<str>>,
    /// Retries after the first attempt, and the fault injected, if any (`abort <namespace>/<name>`
    /// or `delay <namespace>/<name>`, as the `weft-fault` response header says).
    pub retries: u32,
    pub fault: Option<Box<str>>,
}

impl Span {
    /// Its name, as OpenTelemetry's HTTP conventions have it: the method (a route template
    /// would follow it, but a proxy knows no templates).
    pub fn name(&self) -> &str {
        self.method.as_str()
    }

    /// Whether it ended in error: no response, or a 5xx (for a server span; a client span's
    /// 4xx is an error too, as the conventions say).
    pub fn is_error(&self) -> bool {
        match self.status {
            None => true,
            Some(s) => s.is_server_error() || (self.kind == Kind::Client && s.is_client_error()),
        }
    }
}
