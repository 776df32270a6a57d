//! Fuzzes `weft_proxy_detect::detect`, which sees the first bytes of every connection.
//!
//! Beyond "never panics", it checks the promises the proxy's read loop relies on:
//! - a buffer of `MAX_PEEK` bytes or more always decides (never `NeedMore`), so the loop ends;
//! - only the first `MAX_PEEK` bytes count;
//! - monotonicity: once a prefix is `Known(p)`, more bytes never change the answer, so the
//!   protocol does not depend on how the client's bytes were split into reads.
//!
//! Run it from `proxy/detect` with `RUSTC_BOOTSTRAP=1 cargo fuzz run detect -O`, or through
//! `scripts/fuzz.sh`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_proxy_detect::{detect, Detection, MAX_PEEK};

/// Every prefix up to this length is checked for monotonicity.
const PREFIXES: usize = 64;

fuzz_target!(|input: &[u8]| {
    check(input);
    // libFuzzer's inputs stay under 4096 bytes by default, so it would never fill the peek
    // buffer: check the input repeated to just past `MAX_PEEK` too.
    if !input.is_empty() && input.len() <= MAX_PEEK {
        let mut stretched = Vec::with_capacity(MAX_PEEK + input.len());
        while stretched.len() <= MAX_PEEK {
            stretched.extend_from_slice(input);
        }
        check(&stretched);
    }
});

fn check(input: &[u8]) {
    let answer = detect(input);
    if input.len() >= MAX_PEEK {
        assert_ne!(
            answer,
            Detection::NeedMore,
            "NeedMore with {} bytes: {:?}",
            input.len(),
            Escaped(&input[..PREFIXES.min(input.len())])
        );
    }
    assert_eq!(
        answer,
        detect(&input[..input.len().min(MAX_PEEK)]),
        "bytes past MAX_PEEK changed the answer"
    );
    let long = [input.len() / 2, input.len().saturating_sub(1)];
    for n in (0..=input.len().min(PREFIXES)).chain(long) {
        if let Detection::Known(p) = detect(&input[..n]) {
            assert_eq!(
                answer,
                Detection::Known(p),
                "the first {n} bytes {:?} are {p:?} but all {} bytes {:?} are {answer:?}",
                Escaped(&input[..n]),
                input.len(),
                Escaped(&input[..PREFIXES.max(n).min(input.len())]),
            );
        }
    }
}

/// Bytes shown as a Rust byte string, for a failure message.
struct Escaped<'a>(&'a [u8]);

impl std::fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}
