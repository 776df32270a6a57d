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

#[cfg(test)]
mod tests;
