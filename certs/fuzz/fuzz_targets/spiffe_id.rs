//! Parses arbitrary text as a SPIFFE ID: never panics, and whatever parses prints back to the
//! same text and parses again to the same value (no two spellings of one identity).
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_certs::{spiffe::MAX_ID_LEN, SpiffeId};

fuzz_target!(|input: &str| {
    if let Ok(id) = input.parse::<SpiffeId>() {
        let printed = id.to_string();
        assert_eq!(printed, input, "a parsed ID prints as its input");
        assert!(printed.len() <= MAX_ID_LEN);
        assert_eq!(printed.parse::<SpiffeId>().as_ref(), Ok(&id));
    }
});
