//! Distributed tracing for the Weft proxy, the pure part: the trace context of a request
//! ([`context`]: W3C Trace Context and B3, read strictly, written back in the caller's format),
//! the parent-based sampling decision ([`context::decide`]), and the [`span::Span`] a sampled
//! request leaves. The proxy's trace stage calls these; `weft-proxy-otlp` exports the spans.
//!
//! Nothing here does I/O or draws random numbers: callers pass randomness and times, so every
//! behaviour is a unit test, and the header readers (which see untrusted bytes) are fuzzed
//! (`proxy/trace/fuzz`).

#![forbid(unsafe_code)]

pub mod context;
pub mod span;

pub use context::{
    decide, read, write, ContextError, Format, Incoming, Outgoing, Ratio, SpanId, TraceId,
};
pub use span::{Kind, Span};

use std::sync::Arc;

/// Where finished spans go: the OTLP exporter's queue in the proxy, a `Vec` in tests. Called on
/// the data path, so it must not block.
pub trait Recorder: Send + Sync + std::fmt::Debug {
    fn record(&self, span: Span);
}

/// One listener's tracing: which side of the hop its spans are, how the requests that start a
/// trace there are sampled, and where the spans go.
#[derive(Clone, Debug)]
pub struct Tracing {
    pub kind: Kind,
    pub ratio: Ratio,
    pub recorder: Arc<dyn Recorder>,
}

#[cfg(test)]
mod tests;
