//! Fuzzes `weft_proxy_trace::context`: arbitrary values for every trace context header a
//! request may carry (`traceparent`, `tracestate`, `b3`, `X-B3-*`, each zero to two times).
//!
//! Beyond "never panics", it checks what the proxy relies on:
//! - an accepted context has no all-zero id, and a W3C one came from a `traceparent` of 55
//!   bytes or more;
//! - the context written for the next hop reads back as the same trace, with our span as its
//!   parent and the same sampling decision, whatever the caller sent, and reading is a
//!   function of the headers (the same twice);
//! - after the write, exactly one `traceparent` remains and no B3 header of a form the caller
//!   did not use.
//!
//! Run it from `proxy/trace` with `RUSTC_BOOTSTRAP=1 cargo fuzz run trace_context -O`, or
//! through `scripts/fuzz.sh`.

#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use weft_proxy_trace::{context, Format, Outgoing, Ratio, SpanId, TraceId};

const NAMES: &[&str] = &[
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
];

/// Pieces that make valid-looking values likelier than random bytes would.
const WORDS: &[&str] = &[
    "00-",
    "4bf92f3577b34da6a3ce929d0e0e4736",
    "00f067aa0ba902b7",
    "-01",
    "-00",
    "-",
    "1",
    "0",
    "d",
    "true",
    "ff",
    "0000000000000000",
    " ",
];

fn value(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    for _ in 0..u.int_in_range(0..=6)? {
        if u.arbitrary()? {
            v.extend_from_slice(u.choose(WORDS)?.as_bytes());
        } else {
            let raw: &[u8] = u.arbitrary()?;
            v.extend_from_slice(&raw[..raw.len().min(40)]);
        }
    }
    Ok(v)
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let mut headers = HeaderMap::new();
    for name in NAMES {
        for _ in 0..u.int_in_range(0..=2)? {
            if let Ok(v) = HeaderValue::from_bytes(&value(u)?) {
                headers.append(HeaderName::from_static(name), v);
            }
        }
    }
    let incoming = context::read(&headers);
    assert_eq!(incoming, context::read(&headers), "reading is a function");
    if let Ok(Some(i)) = &incoming {
        if let Some((t, s)) = i.ids {
            assert_ne!(t.0, [0; 16]);
            assert_ne!(s.0, [0; 8]);
        }
        if i.format == Format::W3c {
            let tp = headers.get("traceparent").expect("read from traceparent");
            assert!(tp.as_bytes().trim_ascii().len() >= 55);
        }
    }
    let incoming = incoming.ok().flatten();
    let sampled = context::decide(
        incoming.as_ref(),
        Ratio::new(0.5).expect("ratio"),
        u.arbitrary()?,
    );
    let fresh = TraceId::from_random(u.arbitrary::<u128>()? | 1).expect("nonzero");
    let ours = SpanId::from_random(u.arbitrary::<u64>()? | 1).expect("nonzero");
    let (out, parent) = Outgoing::child(incoming.as_ref(), sampled, fresh, ours);
    assert_eq!(parent, incoming.and_then(|i| i.ids).map(|(_, s)| s));
    context::write(&mut headers, &out);
    assert_eq!(headers.get_all("traceparent").iter().count(), 1);
    let back = context::read(&headers)
        .expect("what we write is valid")
        .expect("and present");
    assert_eq!(back.ids, Some((out.trace_id, ours)));
    assert_eq!(back.sampled, Some(sampled));
    if out.format != Format::B3Single {
        assert!(headers.get("b3").is_none());
    }
    if out.format != Format::B3Multi {
        assert!(headers.get("x-b3-traceid").is_none());
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
