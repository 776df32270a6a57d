//! A discovery stream's messages as the proxy decodes them: protobuf bytes, split into a
//! sequence of updates applied in turn. Never a panic; a refused or ignored update leaves the
//! state held unchanged, and an applied one holds only endpoints with a usable address.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use weft_api::destination::Update;
use weft_proxy_discovery::{model::apply, Resolved};

fuzz_target!(|data: &[u8]| {
    let mut held: Option<Resolved> = None;
    // Length-prefixed chunks: one byte of length, then the message.
    let mut rest = data;
    for _ in 0..16 {
        let Some((&len, tail)) = rest.split_first() else {
            break;
        };
        let len = usize::from(len).min(tail.len());
        let (chunk, tail) = tail.split_at(len);
        rest = tail;
        let Ok(update) = Update::decode(chunk) else {
            continue;
        };
        match apply(held.as_ref(), update) {
            // A kind this proxy does not know: ignored, the state held kept.
            Ok(None) => {}
            Ok(Some(next)) => {
                if let Resolved::Service(set) = &next {
                    for (addr, ep) in &set.endpoints {
                        assert_eq!(*addr, ep.addr);
                        assert_ne!(addr.port(), 0);
                        assert!(ep.weight >= 1);
                    }
                }
                held = Some(next);
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
});
