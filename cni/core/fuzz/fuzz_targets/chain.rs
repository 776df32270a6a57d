//! A node's CNI configuration, as whoever can write the config directory leaves it: never a
//! panic; adding Weft's entry is idempotent, leaves it chained exactly once and last or in
//! place, and removing it leaves it unchained.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_cni_core::chain::{add, is_chained, remove, PLUGIN_TYPE};

fuzz_target!(|data: &[u8]| {
    let Ok(config) = std::str::from_utf8(data) else {
        return;
    };
    let entry = serde_json::json!({"type": PLUGIN_TYPE, "kubeconfig": "/k"});
    let _ = is_chained(config);
    let _ = remove(config);
    let Ok(added) = add(config, &entry) else {
        return;
    };
    assert_eq!(is_chained(&added.config).ok(), Some(true));
    let again = add(&added.config, &entry).expect("an added config is valid");
    assert!(!again.changed, "adding twice changed it");
    let v: serde_json::Value = serde_json::from_str(&added.config).expect("json");
    let weft = v["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .filter(|p| p["type"] == PLUGIN_TYPE)
        .count();
    assert_eq!(weft, 1);
    let removed = remove(&added.config).expect("an added config is valid");
    assert_eq!(is_chained(&removed.config).ok(), Some(false));
});
