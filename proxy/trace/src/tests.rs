use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;

use crate::context::*;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN: &str = "00f067aa0ba902b7";

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    h
}

fn trace_id(hex: &str) -> TraceId {
    let mut b = [0; 16];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex");
    }
    TraceId(b)
}

fn span_id(hex: &str) -> SpanId {
    let mut b = [0; 8];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex");
    }
    SpanId(b)
}

fn ok(pairs: &[(&str, &str)]) -> Incoming {
    read(&headers(pairs)).expect("valid").expect("a context")
}

fn err(pairs: &[(&str, &str)]) -> ContextError {
    read(&headers(pairs)).expect_err("invalid")
}

#[test]
fn w3c_traceparent() {
    let i = ok(&[("traceparent", &format!("00-{TRACE}-{SPAN}-01"))]);
    assert_eq!(i.ids, Some((trace_id(TRACE), span_id(SPAN))));
    assert_eq!(i.sampled, Some(true));
    assert_eq!(i.format, Format::W3c);
    let i = ok(&[("traceparent", &format!("00-{TRACE}-{SPAN}-00"))]);
    assert_eq!(i.sampled, Some(false));
    // Other flag bits are not the sampled bit.
    let i = ok(&[("traceparent", &format!("00-{TRACE}-{SPAN}-02"))]);
    assert_eq!(i.sampled, Some(false));
    // A later version may carry more fields after a dash.
    let i = ok(&[("traceparent", &format!("01-{TRACE}-{SPAN}-01-more"))]);
    assert_eq!(i.sampled, Some(true));
    // Surrounding whitespace is not part of the value.
    ok(&[("traceparent", &format!(" 00-{TRACE}-{SPAN}-01 "))]);
}

#[test]
fn malformed_traceparents_are_named() {
    let cases = [
        (format!("00-{TRACE}-{SPAN}-01-extra"), "wrong shape"),
        (format!("01-{TRACE}-{SPAN}-01x"), "wrong shape"),
        (format!("ff-{TRACE}-{SPAN}-01"), "version ff"),
        (
            format!("00-{}-{SPAN}-01", TRACE.to_uppercase()),
            "lowercase hex",
        ),
        (format!("00-{}-{SPAN}-01", "0".repeat(32)), "all-zero"),
        (format!("00-{TRACE}-{}-01", "0".repeat(16)), "all-zero"),
        (format!("00-{TRACE}-{SPAN}-0g"), "lowercase hex"),
        (format!("0-{TRACE}-{SPAN}-01"), "wrong shape"),
        ("".to_string(), "wrong shape"),
    ];
    for (value, says) in cases {
        let e = err(&[("traceparent", &value)]).to_string();
        assert!(
            e.contains("traceparent") && e.contains(says),
            "{value:?}: {e}"
        );
    }
    let e = err(&[
        ("traceparent", &format!("00-{TRACE}-{SPAN}-01")),
        ("traceparent", &format!("00-{TRACE}-{SPAN}-01")),
    ]);
    assert_eq!(e, ContextError::Repeated("traceparent"));
}

#[test]
fn b3_single_header() {
    let i = ok(&[("b3", &format!("{TRACE}-{SPAN}-1-0102030405060708"))]);
    assert_eq!(i.ids, Some((trace_id(TRACE), span_id(SPAN))));
    assert_eq!(
        (i.sampled, i.format, i.short_trace_id),
        (Some(true), Format::B3Single, false)
    );
    let i = ok(&[("b3", &format!("{}-{SPAN}", &TRACE[16..]))]);
    assert_eq!(i.sampled, None, "no decision: ours to make");
    assert!(i.short_trace_id);
    let (t, _) = i.ids.expect("ids");
    assert_eq!(t.0[..8], [0; 8], "a 64-bit id is the low half");
    assert_eq!(
        ok(&[("b3", &format!("{TRACE}-{SPAN}-d"))]).sampled,
        Some(true)
    );
    assert_eq!(ok(&[("b3", "0")]).ids, None);
    assert_eq!(ok(&[("b3", "0")]).sampled, Some(false));
    for bad in [
        TRACE.to_string(),
        format!("{TRACE}-{SPAN}-2"),
        format!("{TRACE}-{SPAN}-1-{SPAN}-x"),
        format!("{}-{SPAN}-1", &TRACE[..20]),
        format!("{TRACE}-{}-1", "0".repeat(16)),
    ] {
        let e = err(&[("b3", &bad)]);
        assert!(e.to_string().starts_with("b3"), "{bad}: {e}");
    }
}

#[test]
fn b3_multi_headers() {
    let i = ok(&[
        ("x-b3-traceid", TRACE),
        ("x-b3-spanid", SPAN),
        ("x-b3-sampled", "1"),
    ]);
    assert_eq!(i.ids, Some((trace_id(TRACE), span_id(SPAN))));
    assert_eq!((i.sampled, i.format), (Some(true), Format::B3Multi));
    let i = ok(&[
        ("x-b3-traceid", TRACE),
        ("x-b3-spanid", SPAN),
        ("x-b3-sampled", "0"),
        ("x-b3-flags", "1"),
    ]);
    assert_eq!(i.sampled, Some(true), "debug means sampled");
    assert_eq!(ok(&[("x-b3-sampled", "false")]).ids, None);
    assert!(read(&headers(&[("x-b3-flags", "0")]))
        .expect("ok")
        .is_none());
    assert_eq!(
        err(&[("x-b3-traceid", TRACE)]),
        ContextError::Shape("x-b3-traceid and x-b3-spanid")
    );
    assert_eq!(
        err(&[("x-b3-sampled", "yes")]),
        ContextError::BadSampling("x-b3-sampled")
    );
}

#[test]
fn precedence_is_traceparent_then_b3_then_x_b3() {
    let other = "a".repeat(32);
    let i = ok(&[
        ("b3", &format!("{other}-{SPAN}-1")),
        ("traceparent", &format!("00-{TRACE}-{SPAN}-00")),
        ("x-b3-traceid", &other),
        ("x-b3-spanid", SPAN),
    ]);
    assert_eq!((i.format, i.sampled), (Format::W3c, Some(false)));
    let i = ok(&[
        ("b3", &format!("{TRACE}-{SPAN}-1")),
        ("x-b3-traceid", &other),
        ("x-b3-spanid", SPAN),
    ]);
    assert_eq!(i.format, Format::B3Single);
    assert!(read(&HeaderMap::new()).expect("ok").is_none());
}

#[test]
fn sampling_is_parent_based() {
    let sampled = ok(&[("traceparent", &format!("00-{TRACE}-{SPAN}-01"))]);
    let unsampled = ok(&[("traceparent", &format!("00-{TRACE}-{SPAN}-00"))]);
    let undecided = ok(&[("b3", &format!("{TRACE}-{SPAN}"))]);
    assert!(decide(Some(&sampled), Ratio::NEVER, 0));
    assert!(!decide(Some(&unsampled), Ratio::ALWAYS, 0));
    assert!(decide(Some(&undecided), Ratio::ALWAYS, u64::MAX));
    assert!(!decide(Some(&undecided), Ratio::NEVER, 0));
    assert!(!decide(None, Ratio::NEVER, 0));
    assert!(decide(None, Ratio::ALWAYS, u64::MAX));
    let one_percent = Ratio::new(0.01).expect("ratio");
    assert!(one_percent.samples(0));
    assert!(!one_percent.samples(u64::MAX / 50));
    for bad in [-0.1, 1.01, f64::NAN, f64::INFINITY] {
        assert_eq!(Ratio::new(bad), None, "{bad}");
    }
    assert_eq!(Ratio::new(1.0), Some(Ratio::ALWAYS));
    assert_eq!(Ratio::new(0.0), Some(Ratio::NEVER));
}

#[test]
fn written_context_is_our_span_under_the_callers() {
    let ours = span_id("1111111111111111");
    let fresh = trace_id(&"9".repeat(32));
    // W3C in: traceparent out with our span, tracestate kept.
    let mut h = headers(&[
        ("traceparent", &format!("00-{TRACE}-{SPAN}-01")),
        ("tracestate", "vendor=opaque"),
    ]);
    let incoming = read(&h).expect("ok");
    let (out, parent) = Outgoing::child(incoming.as_ref(), true, fresh, ours);
    assert_eq!(parent, Some(span_id(SPAN)));
    write(&mut h, &out);
    assert_eq!(h["traceparent"], format!("00-{TRACE}-1111111111111111-01"));
    assert_eq!(h["tracestate"], "vendor=opaque");
    assert!(h.get("b3").is_none());

    // B3 single in, 64-bit: b3 out in 64 bits beside traceparent in 128.
    let short = &TRACE[16..];
    let mut h = headers(&[("b3", &format!("{short}-{SPAN}"))]);
    let incoming = read(&h).expect("ok");
    let (out, _) = Outgoing::child(incoming.as_ref(), false, fresh, ours);
    write(&mut h, &out);
    assert_eq!(h["b3"], format!("{short}-1111111111111111-0"));
    assert_eq!(
        h["traceparent"],
        format!("00-0000000000000000{short}-1111111111111111-00")
    );

    // B3 multi in: multi out, stale parent and flags gone.
    let mut h = headers(&[
        ("x-b3-traceid", TRACE),
        ("x-b3-spanid", SPAN),
        ("x-b3-parentspanid", "0102030405060708"),
        ("x-b3-flags", "1"),
    ]);
    let incoming = read(&h).expect("ok");
    let (out, _) = Outgoing::child(incoming.as_ref(), true, fresh, ours);
    write(&mut h, &out);
    assert_eq!(h["x-b3-traceid"], TRACE);
    assert_eq!(h["x-b3-spanid"], "1111111111111111");
    assert_eq!(h["x-b3-sampled"], "1");
    assert!(h.get("x-b3-parentspanid").is_none() && h.get("x-b3-flags").is_none());

    // Nothing in (or an invalid traceparent): a new trace, no parent, no stale tracestate.
    let mut h = headers(&[("traceparent", "garbage"), ("tracestate", "vendor=stale")]);
    let incoming = read(&h).ok().flatten();
    let (out, parent) = Outgoing::child(incoming.as_ref(), false, fresh, ours);
    assert_eq!(parent, None);
    write(&mut h, &out);
    assert_eq!(
        h["traceparent"],
        format!("00-{}-1111111111111111-00", "9".repeat(32))
    );
    assert!(h.get("tracestate").is_none());

    // A decision-only b3 (`b3: 0`): a new trace id, the caller's decision.
    let mut h = headers(&[("b3", "0")]);
    let incoming = read(&h).expect("ok");
    let sampled = decide(incoming.as_ref(), Ratio::ALWAYS, 0);
    let (out, parent) = Outgoing::child(incoming.as_ref(), sampled, fresh, ours);
    assert_eq!((parent, out.trace_id), (None, fresh));
    write(&mut h, &out);
    assert_eq!(h["b3"], format!("{}-1111111111111111-0", "9".repeat(32)));
}

fn arb_ids() -> impl Strategy<Value = (u128, u64)> {
    (1..=u128::MAX, 1..=u64::MAX)
}

proptest! {
    /// Whatever is written, the next proxy reads back: the same trace, our span as its parent,
    /// the same decision, in every format.
    #[test]
    fn what_is_written_reads_back((trace, span) in arb_ids(), sampled: bool, format in 0..3u8, short: bool) {
        let format = [Format::W3c, Format::B3Single, Format::B3Multi][usize::from(format)];
        let short = short && format != Format::W3c;
        let mut trace_id = TraceId::from_random(trace).expect("nonzero");
        if short {
            trace_id.0[..8].fill(0);
            prop_assume!(trace_id.0 != [0; 16]);
        }
        let out = Outgoing {
            trace_id,
            span_id: SpanId::from_random(span).expect("nonzero"),
            sampled,
            format,
            short_trace_id: short,
            keep_tracestate: false,
        };
        let mut h = HeaderMap::new();
        write(&mut h, &out);
        let back = read(&h).expect("valid").expect("present");
        prop_assert_eq!(back.ids, Some((out.trace_id, out.span_id)));
        prop_assert_eq!(back.sampled, Some(sampled));
        // traceparent first: what a Weft proxy reads, with the B3 form to carry on.
        prop_assert_eq!(back.format, Format::W3c);
        let also = (format != Format::W3c).then_some((format, short));
        prop_assert_eq!(back.also_b3, also);
        // The next proxy writes the same forms again.
        let (next, _) = Outgoing::child(Some(&back), sampled, out.trace_id, out.span_id);
        prop_assert_eq!((next.format, next.short_trace_id), (format, short));
        h.remove(TRACEPARENT);
        let b3 = read(&h).expect("valid");
        if format == Format::W3c {
            prop_assert!(b3.is_none());
        } else {
            let b3 = b3.expect("present");
            prop_assert_eq!(b3.ids, Some((out.trace_id, out.span_id)));
            prop_assert_eq!(b3.short_trace_id, short);
        }
    }

    /// Arbitrary header values never panic, and an accepted traceparent is 55 bytes or more.
    #[test]
    fn arbitrary_values_are_read_or_refused(v in proptest::collection::vec(any::<u8>(), 0..80), which in 0..5usize) {
        let name = ["traceparent", "b3", "x-b3-traceid", "x-b3-spanid", "x-b3-sampled"][which];
        if let Ok(value) = HeaderValue::from_bytes(&v) {
            let mut h = HeaderMap::new();
            h.insert(http::header::HeaderName::from_static(name), value);
            if let Ok(Some(i)) = read(&h) {
                if name == "traceparent" {
                    prop_assert!(v.trim_ascii().len() >= 55);
                    prop_assert!(i.ids.is_some());
                }
            }
        }
    }
}
