//! The first bytes of an inbound connection, from anyone who can reach the port: classifying
//! them never panics, is monotonic (once decided, more bytes never change the answer, so a
//! client cannot steer the decision by how it splits its writes), and is decided by
//! MAX_HELLO_BYTES.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_proxy_identity::{classify, hello::MAX_HELLO_BYTES, Hello};

fuzz_target!(|input: &[u8]| {
    let input = &input[..input.len().min(MAX_HELLO_BYTES)];
    let full = classify(input);
    if input.len() == MAX_HELLO_BYTES {
        assert_ne!(full, Hello::NeedMore, "undecided at the bound");
    }
    // Every prefix that decided must agree with the whole.
    let step = (input.len() / 64).max(1);
    for cut in (0..input.len()).step_by(step) {
        let part = classify(&input[..cut]);
        if part != Hello::NeedMore {
            assert_eq!(part, full, "decided {part:?} at {cut} bytes, {full:?} at {}", input.len());
        }
    }
});
