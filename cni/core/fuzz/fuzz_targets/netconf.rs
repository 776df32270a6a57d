//! A network config on stdin, as any runtime (or anyone who can write the CNI config dir) may
//! hand it over, with its annotations: never a panic; either a CNI error with a code, or rules
//! in which nothing from the input could start a line or a command of its own.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_cni_core::{
    pod,
    spec::{parse_cni_args, NetConf},
    Family,
};

fuzz_target!(|data: &[u8]| {
    let _ = parse_cni_args(&String::from_utf8_lossy(data));
    let conf = match NetConf::parse(data) {
        Ok(c) => c,
        Err(e) => {
            assert!(e.code > 0, "{e:?}");
            assert!(!e.to_json().is_empty());
            return;
        }
    };
    let _ = conf.result();
    let base = conf.redirect().expect("parse checked the redirect config");
    let annotations = conf.local_annotations();
    let Ok(redirect) = pod::redirect_for(&base, &annotations) else {
        return;
    };
    for family in [Family::V4, Family::V6] {
        let text = redirect
            .render(family)
            .expect("a validated config renders")
            .restore_input();
        for line in text.lines() {
            assert!(
                line == "*nat" || line == "COMMIT" || line.starts_with(":WEFT_") || line.starts_with("-A "),
                "{line:?}"
            );
            assert_eq!(line.matches('"').count() % 2, 0, "{line:?}");
        }
    }
});
