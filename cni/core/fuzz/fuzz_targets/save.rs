//! `iptables-save` output, which other tools on the node shape: never a panic, and a table that
//! reads is planned consistently: removing from it leaves nothing of ours, and a table holding
//! exactly the wanted rules checks clean.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_cni_core::{
    plan::{self, NatTable},
    Family, Redirect,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(table) = NatTable::parse(text) else {
        return;
    };
    let want = Redirect::default().render(Family::V4).expect("the default renders");
    let apply = plan::apply(&want, &table);
    assert!(apply.starts_with("*nat\n") && apply.ends_with("COMMIT\n"));
    let _ = plan::check(&want, &table);
    if let Some(remove) = plan::remove(&table) {
        assert!(remove.ends_with("COMMIT\n"));
    }
    let _ = plan::reinstate(&table, &table);
});
