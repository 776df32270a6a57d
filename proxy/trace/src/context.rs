//! Reading a request's trace context (W3C Trace Context, B3 single and multi header) and writing
//! the proxy's own onto the request it forwards.
//!
//! Strict, as the specifications ask of a receiver: lowercase hex of the exact widths, no
//! all-zero id, one header of each kind. A malformed context is not an error for the request:
//! the proxy starts a new trace ([`read`] says why, for a counter and a debug line), and W3C's
//! `tracestate` is dropped with an invalid `traceparent` as the spec says.
//!
//! Precedence when a request carries several: `traceparent`, then `b3`, then the `X-B3-*`
//! headers. Whatever the caller spoke is what it gets back on the way on, besides
//! `traceparent`, so that a B3 app downstream sees its own format and every Weft proxy on the
//! path reads the same trace id.

use http::{header::HeaderName, HeaderMap, HeaderValue};
use thiserror::Error;

/// A trace id: 16 bytes, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

/// A span id: 8 bytes, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    /// A trace id from random bits, or `None` for the one invalid value (all zero).
    pub fn from_random(bits: u128) -> Option<Self> {
        (bits != 0).then(|| TraceId(bits.to_be_bytes()))
    }
}

impl SpanId {
    /// A span id from random bits, or `None` for the one invalid value (all zero).
    pub fn from_random(bits: u64) -> Option<Self> {
        (bits != 0).then(|| SpanId(bits.to_be_bytes()))
    }
}

impl std::fmt::Debug for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(std::str::from_utf8(hex(&self.0, &mut [0; 32])).unwrap_or("?"))
    }
}

impl std::fmt::Debug for SpanId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(std::str::from_utf8(hex(&self.0, &mut [0; 16])).unwrap_or("?"))
    }
}

/// How the caller spoke, so that the forwarded request speaks the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `traceparent` (and `tracestate`, passed on untouched).
    W3c,
    /// One `b3` header.
    B3Single,
    /// `X-B3-TraceId`, `X-B3-SpanId`, `X-B3-Sampled`, ...
    B3Multi,
}

/// The trace context a request arrived with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Incoming {
    /// The trace and the caller's span; `None` when the caller sent only a sampling decision
    /// (`b3: 0`, a lone `X-B3-Sampled`).
    pub ids: Option<(TraceId, SpanId)>,
    /// The caller's decision: `None` leaves it to this proxy (B3 without a sampling state).
    pub sampled: Option<bool>,
    pub format: Format,
    /// A B3 trace id of 64 bits (written back in 64 bits, as the caller's tracer expects).
    pub short_trace_id: bool,
    /// Beside a `traceparent`, the B3 form the request also carried (and whether its trace id
    /// is 64 bits): what an earlier Weft proxy writes for a B3 app, to be written on again.
    pub also_b3: Option<(Format, bool)>,
}

/// Why a request's trace context was not used.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum ContextError {
    #[error("more than one {0} header")]
    Repeated(&'static str),
    #[error("{0} is not ASCII")]
    NotAscii(&'static str),
    #[error("{0} has the wrong shape")]
    Shape(&'static str),
    #[error("{0}: the version ff is invalid")]
    BadVersion(&'static str),
    #[error("{0}: an id that is not lowercase hex of the right width")]
    BadId(&'static str),
    #[error("{0}: an all-zero id")]
    ZeroId(&'static str),
    #[error("{0}: an unknown sampling state")]
    BadSampling(&'static str),
}

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
pub const B3: HeaderName = HeaderName::from_static("b3");
pub const X_B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
pub const X_B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
pub const X_B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
pub const X_B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
pub const X_B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// The trace context of a request with `headers`: `Ok(None)` when it has none, `Err` when the
/// one it has (by the precedence above) is malformed.
pub fn read(headers: &HeaderMap) -> Result<Option<Incoming>, ContextError> {
    let present = Present::scan(headers);
    if !present.any_context() {
        // Most requests: one pass over the names, no lookups.
        return Ok(None);
    }
    if let Some(v) = single(headers, &TRACEPARENT, "traceparent")? {
        let mut incoming = traceparent(v)?;
        incoming.also_b3 = b3_beside(headers);
        return Ok(Some(incoming));
    }
    if let Some(v) = single(headers, &B3, "b3")? {
        return b3_single(v).map(Some);
    }
    if !present.x_b3 {
        return Ok(None);
    }
    b3_multi(headers)
}

/// Which trace context headers a request carries, from one pass over its header names (a
/// request usually has a handful, and usually none of these): cheaper than a hashed lookup of
/// each of the eight names.
#[derive(Clone, Copy, Debug, Default)]
struct Present {
    traceparent: bool,
    tracestate: bool,
    b3: bool,
    x_b3: bool,
}

impl Present {
    fn scan(headers: &HeaderMap) -> Present {
        let mut p = Present::default();
        for name in headers.keys() {
            match name.as_str().as_bytes() {
                b"traceparent" => p.traceparent = true,
                b"tracestate" => p.tracestate = true,
                b"b3" => p.b3 = true,
                n if n.starts_with(b"x-b3-") => p.x_b3 = true,
                _ => {}
            }
        }
        p
    }

    fn any_context(&self) -> bool {
        self.traceparent || self.b3 || self.x_b3
    }
}

/// The context this proxy passes on: its own span under the caller's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub trace_id: TraceId,
    /// This proxy's span: the parent of whatever the next hop makes.
    pub span_id: SpanId,
    pub sampled: bool,
    /// The formats to write besides `traceparent` (the caller's), and its trace id width.
    pub format: Format,
    pub short_trace_id: bool,
    /// The caller's `tracestate` belongs to this trace (its valid `traceparent` is our parent).
    pub keep_tracestate: bool,
}

impl Outgoing {
    /// The context to forward with a request that arrived with `incoming`, sampled or not as
    /// decided, with `span` as this proxy's span; `new_trace` starts a trace when the caller
    /// sent no ids. Returns it and the parent of this proxy's span (the caller's span).
    pub fn child(
        incoming: Option<&Incoming>,
        sampled: bool,
        new_trace: TraceId,
        span: SpanId,
    ) -> (Outgoing, Option<SpanId>) {
        let ids = incoming.and_then(|i| i.ids);
        // The caller's format, or the B3 form an earlier proxy wrote beside its traceparent.
        let (format, short) = match incoming {
            None => (Format::W3c, false),
            Some(i) => match (i.format, i.also_b3) {
                (Format::W3c, Some(also)) => also,
                (format, _) => (format, i.short_trace_id),
            },
        };
        let out = Outgoing {
            trace_id: ids.map_or(new_trace, |(trace, _)| trace),
            span_id: span,
            sampled,
            format,
            short_trace_id: ids.is_some() && short,
            keep_tracestate: ids.is_some() && incoming.is_some_and(|i| i.format == Format::W3c),
        };
        (out, ids.map(|(_, parent)| parent))
    }
}

/// Writes `out` onto a request's `headers`: `traceparent` always, the caller's B3 form when it
/// spoke B3; stale context headers of every kind removed first. `tracestate` is left as it was
/// when it belongs to the trace (the spec lets a proxy that adds no entry of its own pass it on
/// untouched), and removed when it does not (a new trace, an invalid `traceparent`).
pub fn write(headers: &mut HeaderMap, out: &Outgoing) {
    // Removed only where present: a hashed removal of each of seven names would cost more than
    // the rest of this function.
    let present = Present::scan(headers);
    if present.b3 {
        headers.remove(&B3);
    }
    if present.x_b3 {
        for name in [
            &X_B3_TRACE_ID,
            &X_B3_SPAN_ID,
            &X_B3_PARENT_SPAN_ID,
            &X_B3_SAMPLED,
            &X_B3_FLAGS,
        ] {
            headers.remove(name);
        }
    }
    if present.tracestate && !out.keep_tracestate {
        headers.remove(&TRACESTATE);
    }
    let mut trace = [0; 32];
    let trace = hex(&out.trace_id.0, &mut trace);
    let mut span = [0; 16];
    let span = hex(&out.span_id.0, &mut span);
    // 00-<32>-<16>-<2>: 55 bytes.
    let mut tp = [0u8; 55];
    tp[..3].copy_from_slice(b"00-");
    tp[3..35].copy_from_slice(trace);
    tp[35] = b'-';
    tp[36..52].copy_from_slice(span);
    tp[52..].copy_from_slice(if out.sampled { b"-01" } else { b"-00" });
    headers.insert(TRACEPARENT, ascii(&tp));
    let b3_trace = if out.short_trace_id {
        &trace[16..]
    } else {
        trace
    };
    match out.format {
        Format::W3c => {}
        Format::B3Single => {
            // <trace>-<span>-<0|1>
            let mut v = [0u8; 32 + 1 + 16 + 2];
            let n = b3_trace.len();
            v[..n].copy_from_slice(b3_trace);
            v[n] = b'-';
            v[n + 1..n + 17].copy_from_slice(span);
            v[n + 17..n + 19].copy_from_slice(if out.sampled { b"-1" } else { b"-0" });
            headers.insert(B3, ascii(&v[..n + 19]));
        }
        Format::B3Multi => {
            headers.insert(X_B3_TRACE_ID, ascii(b3_trace));
            headers.insert(X_B3_SPAN_ID, ascii(span));
            headers.insert(
                X_B3_SAMPLED,
                HeaderValue::from_static(if out.sampled { "1" } else { "0" }),
            );
        }
    }
}

/// A sampling probability, as a threshold on 64 random bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ratio(u64);

impl Ratio {
    pub const NEVER: Ratio = Ratio(0);
    pub const ALWAYS: Ratio = Ratio(u64::MAX);

    /// `p` in [0, 1]; `None` for anything else (NaN included).
    pub fn new(p: f64) -> Option<Ratio> {
        if !(0.0..=1.0).contains(&p) {
            return None;
        }
        if p == 1.0 {
            return Some(Ratio::ALWAYS);
        }
        // p < 1, so the product is below 2^64.
        Some(Ratio((p * 18_446_744_073_709_551_616.0) as u64))
    }

    /// Whether a root request with these random bits is sampled.
    pub fn samples(self, random: u64) -> bool {
        self == Ratio::ALWAYS || random < self.0
    }
}

/// Parent-based sampling: the caller's decision when it made one, else `ratio` on `random`.
pub fn decide(incoming: Option<&Incoming>, ratio: Ratio, random: u64) -> bool {
    match incoming.and_then(|i| i.sampled) {
        Some(decided) => decided,
        None => ratio.samples(random),
    }
}

fn single<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
    what: &'static str,
) -> Result<Option<&'a [u8]>, ContextError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ContextError::Repeated(what));
    }
    let v = first.as_bytes().trim_ascii();
    if !v.is_ascii() {
        return Err(ContextError::NotAscii(what));
    }
    Ok(Some(v))
}

/// `version-traceid-parentid-flags` (W3C Trace Context, level 1): version 00 is exactly 55
/// bytes; a later version may be longer, with a `-` after the four fields we know.
fn traceparent(v: &[u8]) -> Result<Incoming, ContextError> {
    const W: &str = "traceparent";
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return Err(ContextError::Shape(W));
    }
    let version = lower_hex::<1>(&v[..2]).ok_or(ContextError::BadId(W))?[0];
    if version == 0xff {
        return Err(ContextError::BadVersion(W));
    }
    if (version == 0 && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
        return Err(ContextError::Shape(W));
    }
    let trace = lower_hex::<16>(&v[3..35]).ok_or(ContextError::BadId(W))?;
    let span = lower_hex::<8>(&v[36..52]).ok_or(ContextError::BadId(W))?;
    let flags = lower_hex::<1>(&v[53..55]).ok_or(ContextError::BadId(W))?[0];
    Ok(Incoming {
        ids: Some((nonzero_trace(trace, W)?, nonzero_span(span, W)?)),
        sampled: Some(flags & 1 == 1),
        format: Format::W3c,
        short_trace_id: false,
        also_b3: None,
    })
}

/// The B3 form present besides a `traceparent`, by a glance at its trace id's width (the ids
/// themselves are the `traceparent`'s).
fn b3_beside(headers: &HeaderMap) -> Option<(Format, bool)> {
    if let Some(b3) = headers.get(&B3) {
        let first = b3
            .as_bytes()
            .split(|&b| b == b'-')
            .next()
            .unwrap_or_default();
        return Some((Format::B3Single, first.len() == 16));
    }
    let trace = headers.get(&X_B3_TRACE_ID)?;
    Some((Format::B3Multi, trace.as_bytes().trim_ascii().len() == 16))
}

/// `b3: <trace>-<span>[-<sampling>[-<parent>]]`, or `b3: <sampling>` alone.
fn b3_single(v: &[u8]) -> Result<Incoming, ContextError> {
    const W: &str = "b3";
    let mut parts = v.split(|&b| b == b'-');
    let first = parts.next().unwrap_or_default();
    let Some(span) = parts.next() else {
        // A sampling state alone.
        return Ok(Incoming {
            ids: None,
            sampled: Some(b3_sampling(first, W)?),
            format: Format::B3Single,
            short_trace_id: false,
            also_b3: None,
        });
    };
    let (trace, short) = b3_trace_id(first, W)?;
    let span = nonzero_span(lower_hex::<8>(span).ok_or(ContextError::BadId(W))?, W)?;
    let sampled = match parts.next() {
        Some(s) => Some(b3_sampling(s, W)?),
        None => None,
    };
    if let Some(parent) = parts.next() {
        // Checked, then unused: our span's parent is the caller's span.
        lower_hex::<8>(parent).ok_or(ContextError::BadId(W))?;
    }
    if parts.next().is_some() {
        return Err(ContextError::Shape(W));
    }
    Ok(Incoming {
        ids: Some((trace, span)),
        sampled,
        format: Format::B3Single,
        short_trace_id: short,
        also_b3: None,
    })
}

/// The `X-B3-*` headers; `X-B3-Flags: 1` (debug) means sampled.
fn b3_multi(headers: &HeaderMap) -> Result<Option<Incoming>, ContextError> {
    let trace = single(headers, &X_B3_TRACE_ID, "x-b3-traceid")?;
    let span = single(headers, &X_B3_SPAN_ID, "x-b3-spanid")?;
    let sampled = single(headers, &X_B3_SAMPLED, "x-b3-sampled")?;
    let debug = single(headers, &X_B3_FLAGS, "x-b3-flags")? == Some(b"1".as_slice());
    let sampled = if debug {
        Some(true)
    } else {
        match sampled {
            Some(b"1" | b"true") => Some(true),
            Some(b"0" | b"false") => Some(false),
            Some(_) => return Err(ContextError::BadSampling("x-b3-sampled")),
            None => None,
        }
    };
    let ids = match (trace, span) {
        (None, None) => None,
        (Some(trace), Some(span)) => {
            const W: &str = "x-b3-spanid";
            let (trace, short) = b3_trace_id(trace, "x-b3-traceid")?;
            let span = nonzero_span(lower_hex::<8>(span).ok_or(ContextError::BadId(W))?, W)?;
            Some((trace, span, short))
        }
        _ => return Err(ContextError::Shape("x-b3-traceid and x-b3-spanid")),
    };
    if ids.is_none() && sampled.is_none() {
        return Ok(None);
    }
    Ok(Some(Incoming {
        ids: ids.map(|(t, s, _)| (t, s)),
        sampled,
        format: Format::B3Multi,
        short_trace_id: ids.is_some_and(|(_, _, short)| short),
        also_b3: None,
    }))
}

/// A B3 trace id: 32 hex digits, or 16 (then the high half is zero).
fn b3_trace_id(v: &[u8], what: &'static str) -> Result<(TraceId, bool), ContextError> {
    let (bytes, short) = match v.len() {
        32 => (lower_hex::<16>(v), false),
        16 => (
            lower_hex::<8>(v).map(|low| {
                let mut b = [0; 16];
                b[8..].copy_from_slice(&low);
                b
            }),
            true,
        ),
        _ => (None, false),
    };
    let bytes = bytes.ok_or(ContextError::BadId(what))?;
    Ok((nonzero_trace(bytes, what)?, short))
}

fn b3_sampling(v: &[u8], what: &'static str) -> Result<bool, ContextError> {
    match v {
        b"1" | b"d" => Ok(true),
        b"0" => Ok(false),
        _ => Err(ContextError::BadSampling(what)),
    }
}

fn nonzero_trace(b: [u8; 16], what: &'static str) -> Result<TraceId, ContextError> {
    if b == [0; 16] {
        return Err(ContextError::ZeroId(what));
    }
    Ok(TraceId(b))
}

fn nonzero_span(b: [u8; 8], what: &'static str) -> Result<SpanId, ContextError> {
    if b == [0; 8] {
        return Err(ContextError::ZeroId(what));
    }
    Ok(SpanId(b))
}

/// Exactly `2 * N` lowercase hex digits as `N` bytes.
fn lower_hex<const N: usize>(v: &[u8]) -> Option<[u8; N]> {
    if v.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0; N];
    for (i, pair) in v.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// Two lowercase hex digits for every byte value: one lookup per byte on the request path.
const HEX_PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [DIGITS[i >> 4], DIGITS[i & 0xf]];
        i += 1;
    }
    t
};

/// `bytes` as lowercase hex in `out` (twice as long).
fn hex<'a>(bytes: &[u8], out: &'a mut [u8]) -> &'a [u8] {
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(*b)]);
    }
    &out[..2 * bytes.len()]
}

/// A header value of hex digits and dashes (always valid).
fn ascii(v: &[u8]) -> HeaderValue {
    HeaderValue::from_bytes(v).unwrap_or_else(|_| HeaderValue::from_static(""))
}
