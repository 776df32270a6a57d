use super::*;

const PAGE: &str = "# HELP weft_requests_total Requests, by outcome.\n\
    # TYPE weft_requests_total counter\n\
    weft_requests_total{client_id=\"spiffe://cluster.local/ns/shop/sa/web\",direction=\"outbound\",tls=\"true\"} 7\n\
    weft_requests_total{client_id=\"\",direction=\"inbound\",tls=\"false\"} 2\n\
    weft_redirect_verified 1\n\
    # A plain comment.\n\
    \n\
    weft_h_bucket{le=\"+Inf\"} 3 1700000000\n\
    odd{a=\"q\\\"uote,\",b=\"back\\\\slash\\nline\"} 2\n\
    weft_small 1.5e-7\n";

fn page() -> Metrics {
    Metrics::parse(PAGE).expect("a well-formed page")
}

#[test]
fn samples_with_and_without_labels() {
    let m = page();
    let id = "spiffe://cluster.local/ns/shop/sa/web";
    assert_eq!(
        m.get(
            "weft_requests_total",
            &[
                ("tls", "true"),
                ("direction", "outbound"),
                ("client_id", id)
            ]
        ),
        Some(7.0)
    );
    assert_eq!(m.get("weft_requests_total", &[("tls", "true")]), None);
    assert_eq!(m.sum("weft_requests_total", &[("tls", "true")]), 7.0);
    assert_eq!(m.sum("weft_requests_total", &[]), 9.0);
    assert_eq!(m.matching("weft_requests_total", &[]).count(), 2);
    assert_eq!(m.get("weft_redirect_verified", &[]), Some(1.0));
    assert_eq!(m.value("weft_h_bucket", &[("le", "+Inf")]), 3.0);
    assert_eq!(
        m.samples
            .iter()
            .find(|s| s.name == "weft_h_bucket")
            .and_then(|s| s.timestamp),
        Some(1_700_000_000)
    );
    assert_eq!(
        m.value("odd", &[("a", "q\"uote,"), ("b", "back\\slash\nline")]),
        2.0
    );
    assert_eq!(m.value("weft_small", &[]), 1.5e-7);
    assert_eq!(m.value("absent", &[]), 0.0);
    assert_eq!(
        m.metric_type("weft_requests_total"),
        Some(MetricType::Counter)
    );
    assert_eq!(m.help("weft_requests_total"), Some("Requests, by outcome."));
    assert_eq!(m.metric_type("weft_redirect_verified"), None);
    let sample = m.matching("weft_requests_total", &[("tls", "true")]).next();
    assert_eq!(sample.map(|s| s.label("client_id")), Some(id));
    assert_eq!(sample.map(|s| s.label("absent")), Some(""));
}

#[test]
fn a_series_is_named_as_printed_in_any_label_order() {
    let m = page();
    assert_eq!(
        m.series(r#"weft_requests_total{tls="false",client_id="",direction="inbound"}"#),
        Some(2.0)
    );
    assert_eq!(
        m.series(r#"weft_requests_total{client_id="",direction="inbound",tls="false",}"#),
        Some(2.0),
        "a trailing comma is allowed"
    );
    assert_eq!(
        m.series(r#"weft_requests_total{direction="inbound",tls="false"}"#),
        None,
        "labels must match exactly"
    );
    assert_eq!(m.series("weft_redirect_verified"), Some(1.0));
    assert_eq!(
        m.series(r#"odd{b="back\\slash\nline",a="q\"uote,"}"#),
        Some(2.0)
    );
    assert_eq!(m.series("weft_requests_total"), None);
}

#[test]
#[should_panic(expected = "series selector")]
fn a_malformed_selector_fails_the_test_instead_of_reading_as_absent() {
    page().series(r#"weft_requests_total{tls="true""#);
}

#[test]
fn selectors_that_do_not_parse_say_why() {
    for bad in [
        "",
        "9name",
        r#"x{tls="true""#,
        r#"x{tls=true}"#,
        r#"x{tls="a",tls="b"}"#,
        r#"x{a="1"} 3"#,
    ] {
        let e = Selector::parse(bad).expect_err(bad);
        assert!(e.to_string().contains("series selector"), "{e}");
    }
}

#[test]
fn malformed_lines_are_errors_naming_the_line() {
    for (text, reason) in [
        ("ok 1\nbroken{a=\"1\" 2\n", "expected , or }"),
        ("ok 1\nbroken{a=\"1 2\n", "not closed"),
        ("ok 1\nno_value\n", "no space before the value"),
        ("ok 1\nx two\n", "not a number"),
        ("ok 1\nx 1 2 3\n", "after the timestamp"),
        ("ok 1\nx 1 soon\n", "timestamp"),
        ("ok 1\nx{a=\"\\t\"} 1\n", "unknown escape"),
        ("ok 1\nok 2\n", "the same series twice"),
        ("ok 1\n# TYPE ok countr\n", "unknown metric type"),
        ("ok 1\n{a=\"1\"} 1\n", "not a metric name"),
    ] {
        let e = Metrics::parse(text).expect_err(text);
        assert_eq!(e.line, 2, "{text:?}: {e}");
        assert!(e.to_string().contains(reason), "{text:?}: {e}");
    }
}

#[test]
fn special_values() {
    let m = Metrics::parse("a +Inf\nb -Inf\nc NaN\nd -0.5\n").expect("parse");
    assert_eq!(m.value("a", &[]), f64::INFINITY);
    assert_eq!(m.value("b", &[]), f64::NEG_INFINITY);
    assert!(m.value("c", &[]).is_nan());
    assert_eq!(m.value("d", &[]), -0.5);
}

const HISTOGRAM: &str = "# HELP x\n\
    # TYPE weft_discovery_push_latency_seconds histogram\n\
    weft_discovery_push_latency_seconds_bucket{le=\"0.001\"} 10\n\
    weft_discovery_push_latency_seconds_bucket{le=\"0.01\"} 30\n\
    weft_discovery_push_latency_seconds_bucket{le=\"+Inf\"} 40\n\
    weft_discovery_push_latency_seconds_sum 1.5\n\
    weft_discovery_push_latency_seconds_count 40\n\
    weft_discovery_subscribers 7\n\
    weft_d_seconds_bucket{dir=\"in\",le=\"1\"} 1\n\
    weft_d_seconds_bucket{dir=\"in\",le=\"+Inf\"} 2\n\
    weft_d_seconds_count{dir=\"in\"} 2\n\
    weft_d_seconds_sum{dir=\"in\"} 1.25\n\
    weft_d_seconds_bucket{dir=\"out\",le=\"1\"} 5\n\
    weft_d_seconds_bucket{dir=\"out\",le=\"+Inf\"} 5\n\
    weft_d_seconds_count{dir=\"out\"} 5\n\
    weft_d_seconds_sum{dir=\"out\"} 0.5\n";

const PUSH: &str = "weft_discovery_push_latency_seconds";

#[test]
fn a_histogram_is_read_and_its_quantiles_interpolated() {
    let m = Metrics::parse(HISTOGRAM).expect("parse");
    let h = m.histogram(PUSH, &[]).expect("histogram");
    assert_eq!(h.buckets.len(), 3);
    assert_eq!((h.count, h.sum), (40.0, 1.5));
    // Rank 20 is halfway through the (1 ms, 10 ms] bucket.
    let p50 = h.quantile(0.5).expect("p50");
    assert!((p50 - 0.0055).abs() < 1e-9, "{p50}");
    // Rank 39.6 is in +Inf: reported as the largest finite bound.
    assert_eq!(h.quantile(0.99), Some(0.01));
    assert_eq!(m.series("weft_discovery_subscribers"), Some(7.0));
    assert_eq!(m.metric_type(PUSH), Some(MetricType::Histogram));
    assert_eq!(m.histogram("absent", &[]), None);
}

#[test]
fn a_labelled_histogram_is_read_by_its_labels() {
    let m = Metrics::parse(HISTOGRAM).expect("parse");
    let inbound = m.histogram("weft_d_seconds", &[("dir", "in")]).expect("in");
    assert_eq!(inbound.buckets, [(1.0, 1.0), (f64::INFINITY, 2.0)]);
    assert_eq!((inbound.count, inbound.sum), (2.0, 1.25));
    let outbound = m
        .histogram("weft_d_seconds", &[("dir", "out")])
        .expect("out");
    assert_eq!(outbound.count, 5.0);
    assert_eq!(
        m.histogram("weft_d_seconds", &[]),
        None,
        "the labels must match exactly"
    );
}

#[test]
fn since_subtracts_an_earlier_scrape() {
    let before = Metrics::parse(HISTOGRAM)
        .expect("parse")
        .histogram(PUSH, &[])
        .expect("histogram");
    let after_text = HISTOGRAM
        .replace("{le=\"0.01\"} 30", "{le=\"0.01\"} 34")
        .replace("{le=\"+Inf\"} 40", "{le=\"+Inf\"} 44")
        .replace("_count 40", "_count 44");
    let after = Metrics::parse(&after_text)
        .expect("parse")
        .histogram(PUSH, &[])
        .expect("histogram");
    let d = after.since(&before);
    assert_eq!(d.count, 4.0);
    assert_eq!(d.buckets, [(0.001, 0.0), (0.01, 4.0), (f64::INFINITY, 4.0)]);
    let p50 = d.quantile(0.5).expect("p50");
    assert!((p50 - 0.0055).abs() < 1e-9, "{p50}");
    assert_eq!(Histogram::default().quantile(0.5), None);
}
