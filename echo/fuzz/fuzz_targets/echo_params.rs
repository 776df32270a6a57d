//! Feeds arbitrary text to the echo app's parsers for what clients send: query parameters,
//! Go durations and `X-Echo-Set-Header` values. None panics; a duration is never past its
//! cap; the headers asked for are bounded in number, valid, and never framing headers; a
//! header name keeps its length when spelled the Go way.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use weft_echo::parse::{
    canonical_header_name, parse_duration, query_param, set_headers, MAX_SET_HEADERS,
};

const MAX: Duration = Duration::from_secs(60);

fuzz_target!(|input: &str| {
    for name in ["delay", "uuid", "succeedAfter", ""] {
        if let Ok(Some(value)) = query_param(input, name) {
            assert!(value.len() <= input.len(), "decoding never grows the text");
        }
    }
    if let Ok(d) = parse_duration(input, MAX) {
        assert!(d <= MAX, "{input:?} parsed to {d:?}, past the cap");
    }
    if let Ok(Some(value)) = query_param(input, "delay") {
        if let Ok(d) = parse_duration(&value, MAX) {
            assert!(d <= MAX);
        }
    }
    if let Ok(headers) = set_headers(input.split('\n').map(str::as_bytes)) {
        assert!(headers.len() <= MAX_SET_HEADERS);
        for (name, _) in &headers {
            assert!(!matches!(
                name.as_str(),
                "content-length" | "transfer-encoding" | "connection"
            ));
        }
    }
    assert_eq!(canonical_header_name(input).len(), input.len());
});
