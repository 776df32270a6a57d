//! `GET /tap`'s query string, from whoever reaches the admin port: any bytes are read into a
//! spec within its bounds or refused with an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_proxy_tap::{Spec, MAX_LIMIT};

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = Spec::parse(Some(query)) {
        assert!((1..=MAX_LIMIT).contains(&spec.limit));
        assert!(spec.filter.path_prefix.as_deref().is_none_or(|p| p.starts_with('/')));
    }
});
