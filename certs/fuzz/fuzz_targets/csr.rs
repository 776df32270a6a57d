//! Feeds arbitrary bytes to the issuer as a CSR: never panics, and anything it signs certifies
//! exactly the proven identity and is not a CA.
#![no_main]

use std::{sync::OnceLock, time::Duration};

use libfuzzer_sys::fuzz_target;
use time::OffsetDateTime;
use weft_certs::{inspect, Ca, SpiffeId};

fn issuer() -> &'static (Ca, SpiffeId) {
    static ISSUER: OnceLock<(Ca, SpiffeId)> = OnceLock::new();
    ISSUER.get_or_init(|| {
        let now = OffsetDateTime::now_utc();
        let anchor = Ca::new_anchor("cluster.local", Duration::from_secs(86_400), now).expect("anchor");
        let issuer = anchor.new_issuer("cluster.local", Duration::from_secs(86_400), now).expect("issuer");
        (issuer, SpiffeId::new("cluster.local", "fuzz", "default").expect("id"))
    })
}

fuzz_target!(|csr: &[u8]| {
    let (issuer, proven) = issuer();
    if let Ok(signed) = issuer.sign_csr(csr, proven, Duration::from_secs(3600), OffsetDateTime::now_utc()) {
        let info = inspect(&signed.chain_der[0]).expect("the issuer's own output parses");
        assert_eq!(info.spiffe_ids, vec![proven.clone()]);
        assert!(!info.is_ca);
    }
});
