use std::time::Duration;

use super::*;

const MAX: Duration = Duration::from_secs(60);

#[test]
fn query_param_finds_the_first_decoded_value() {
    assert_eq!(query_param("delay=1s", "delay"), Ok(Some("1s".into())));
    assert_eq!(
        query_param("a=1&delay=2s&delay=3s", "delay"),
        Ok(Some("2s".into()))
    );
    assert_eq!(query_param("a=1", "delay"), Ok(None));
    assert_eq!(query_param("", "delay"), Ok(None));
    assert_eq!(query_param("delay", "delay"), Ok(Some(String::new())));
    assert_eq!(query_param("delay=", "delay"), Ok(Some(String::new())));
    assert_eq!(
        query_param("u%75id=a+b%2Fc", "uuid"),
        Ok(Some("a b/c".into()))
    );
    assert_eq!(query_param("&&uuid=x&", "uuid"), Ok(Some("x".into())));
    // Go ignores a pair with a semicolon, and one whose key does not decode.
    assert_eq!(query_param("uuid=a;b&uuid=c", "uuid"), Ok(Some("c".into())));
    assert_eq!(query_param("%zz=1&uuid=c", "uuid"), Ok(Some("c".into())));
    // The name is matched whole, not as a prefix.
    assert_eq!(query_param("delayRetry=1s", "delay"), Ok(None));
}

#[test]
fn query_param_refuses_a_malformed_value() {
    assert!(matches!(
        query_param("delay=1%", "delay"),
        Err(QueryError::BadEscape { .. })
    ));
    assert!(matches!(
        query_param("delay=%g0", "delay"),
        Err(QueryError::BadEscape { .. })
    ));
    assert!(matches!(
        query_param("uuid=%ff", "uuid"),
        Err(QueryError::NotUtf8 { .. })
    ));
    // Another parameter's malformed value is not this one's problem.
    assert_eq!(query_param("x=%&uuid=1", "uuid"), Ok(Some("1".into())));
}

#[test]
fn durations_parse_as_go_parses_them() {
    let day = Duration::from_secs(86_400);
    let ok = |s: &str| parse_duration(s, day).unwrap_or_else(|e| panic!("{s}: {e}"));
    assert_eq!(ok("0"), Duration::ZERO);
    assert_eq!(ok("+0"), Duration::ZERO);
    assert_eq!(ok("1s"), Duration::from_secs(1));
    assert_eq!(ok("0.1s"), Duration::from_millis(100));
    assert_eq!(ok(".5s"), Duration::from_millis(500));
    assert_eq!(ok("1.s"), Duration::from_secs(1));
    assert_eq!(ok("300ms"), Duration::from_millis(300));
    assert_eq!(ok("1m30s"), Duration::from_secs(90));
    assert_eq!(ok("1m.5s"), Duration::from_millis(60_500));
    assert_eq!(ok("10us"), Duration::from_micros(10));
    assert_eq!(ok("10µs"), Duration::from_micros(10));
    assert_eq!(ok("10μs"), Duration::from_micros(10));
    assert_eq!(ok("7ns"), Duration::from_nanos(7));
    assert_eq!(ok("1.0000000001s"), Duration::from_nanos(1_000_000_000));
    assert_eq!(ok("0.000000001h"), Duration::from_nanos(3_600));
    assert_eq!(ok("1m"), Duration::from_secs(60));
    assert_eq!(ok("2h3m4.5s"), Duration::from_millis(7_384_500));
    assert_eq!(parse_duration("60s", MAX), Ok(MAX));
    // Negative: Go sleeps for no time at all.
    assert_eq!(ok("-1s"), Duration::ZERO);
    assert_eq!(ok("-5h"), Duration::ZERO);
}

#[test]
fn malformed_durations_say_why() {
    let reason = |s: &str| match parse_duration(s, MAX) {
        Err(DurationError::Syntax { reason, .. }) => reason,
        other => panic!("{s}: {other:?}"),
    };
    assert_eq!(reason(""), SyntaxReason::Empty);
    assert_eq!(reason("-"), SyntaxReason::Empty);
    assert_eq!(reason("1"), SyntaxReason::MissingUnit);
    assert_eq!(reason("00"), SyntaxReason::MissingUnit);
    assert_eq!(reason("1s2"), SyntaxReason::MissingUnit);
    assert_eq!(reason("s"), SyntaxReason::ExpectedNumber);
    assert_eq!(reason("."), SyntaxReason::ExpectedNumber);
    assert_eq!(reason(".s"), SyntaxReason::ExpectedNumber);
    assert_eq!(reason(" 1s"), SyntaxReason::ExpectedNumber);
    assert_eq!(reason("1sec"), SyntaxReason::UnknownUnit);
    assert_eq!(reason("1S"), SyntaxReason::UnknownUnit);
    assert_eq!(reason("1e3s"), SyntaxReason::UnknownUnit);
    assert_eq!(reason("1 s"), SyntaxReason::UnknownUnit);
    let message = parse_duration("abc", MAX).map_err(|e| e.to_string());
    assert!(
        message.as_ref().is_err_and(|m| m.contains("\"abc\"")),
        "{message:?}"
    );
}

#[test]
fn durations_past_the_cap_are_refused_not_waited() {
    for s in [
        "61s",
        "60.000000001s",
        "1h",
        "2m",
        "30s31s",
        "99999999999999999999999999999h",
        "18446744073709551616ns",
    ] {
        assert!(
            matches!(parse_duration(s, MAX), Err(DurationError::TooLong { .. })),
            "{s}"
        );
    }
}

#[test]
fn set_headers_read_name_value_pairs() {
    let parse = |values: &[&str]| {
        set_headers(values.iter().map(|v| v.as_bytes())).map(|hs| {
            hs.into_iter()
                .map(|(n, v)| {
                    (
                        n.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect::<Vec<_>>()
        })
    };
    let pairs = |v: &[(&str, &str)]| -> Result<Vec<(String, String)>, SetHeaderError> {
        Ok(v.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect())
    };
    assert_eq!(parse(&["Header1:Value1"]), pairs(&[("header1", "Value1")]));
    assert_eq!(
        parse(&["Header2:Value2, Header3:Value3"]),
        pairs(&[("header2", "Value2"), ("header3", "Value3")])
    );
    assert_eq!(parse(&["X: a , X:b", "x: c"]), pairs(&[("x", "a,b,c")]));
    assert_eq!(parse(&["Solo"]), pairs(&[("solo", "")]));
    assert_eq!(parse(&["A: b: c"]), pairs(&[("a", "b: c")]));
    assert_eq!(parse(&[""]), pairs(&[]));
    assert_eq!(parse(&[" , ,"]), pairs(&[]));
    // Names Go would drop when writing are skipped.
    assert_eq!(parse(&["bad name: x, ok: y"]), pairs(&[("ok", "y")]));
    assert_eq!(parse(&[":x"]), pairs(&[]));
}

#[test]
fn set_headers_refuse_framing_headers_and_too_many() {
    for framing in [
        "Content-Length: 5",
        "transfer-encoding: chunked",
        "Connection: close",
    ] {
        assert!(
            matches!(
                set_headers([framing.as_bytes()]),
                Err(SetHeaderError::Forbidden { .. })
            ),
            "{framing}"
        );
    }
    let many: Vec<String> = (0..=MAX_SET_HEADERS).map(|i| format!("h{i}: v")).collect();
    let joined = many.join(",");
    assert_eq!(
        set_headers([joined.as_bytes()]),
        Err(SetHeaderError::TooMany {
            max: MAX_SET_HEADERS
        })
    );
    let enough = many[..MAX_SET_HEADERS].join(",");
    assert_eq!(
        set_headers([enough.as_bytes()]).map(|h| h.len()),
        Ok(MAX_SET_HEADERS)
    );
    // Repeating one name many times is one header, not many.
    let repeated = vec!["h: v"; 1_000].join(",");
    assert_eq!(set_headers([repeated.as_bytes()]).map(|h| h.len()), Ok(1));
}

#[test]
fn header_names_are_spelled_as_go_spells_them() {
    assert_eq!(
        canonical_header_name("x-echo-set-header"),
        "X-Echo-Set-Header"
    );
    assert_eq!(canonical_header_name("accept"), "Accept");
    assert_eq!(canonical_header_name("USER-AGENT"), "User-Agent");
    assert_eq!(canonical_header_name("x--y"), "X--Y");
    assert_eq!(canonical_header_name("x_y"), "X_y");
    assert_eq!(canonical_header_name("1a-2b"), "1a-2b");
    assert_eq!(canonical_header_name(""), "");
}
