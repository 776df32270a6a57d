//! A config file's bytes, as the local source reads them: never a panic; either a whole valid
//! snapshot whose every Service and slice the index can look up, or errors that each name a
//! document of this file.
#![no_main]

use std::{path::Path, sync::Arc};

use libfuzzer_sys::fuzz_target;
use weft_control_plane_config::{
    index::{Lookup, Target},
    yaml::load_text,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("fuzz.yaml");
    match load_text(file, text) {
        Ok(snapshot) => {
            let lookup = Lookup::new(Arc::new(snapshot.clone()), "cluster.local");
            for ((ns, name), svc) in &snapshot.services {
                for port in svc.spec.iter().flat_map(|s| s.ports.iter().flatten()) {
                    let Ok(port) = u16::try_from(port.port) else {
                        panic!("a validated Service port {} is not a port", port.port);
                    };
                    let target = Target::Name {
                        namespace: ns.clone(),
                        name: name.clone(),
                        port,
                    };
                    let _ = lookup.answer(&target);
                }
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "refused with no reason");
            for e in errors {
                assert_eq!(e.file, file);
                assert!(!e.reason.is_empty(), "{e:?}");
            }
        }
    }
});
