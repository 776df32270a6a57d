//! A config file's bytes, as the local source reads them: never a panic; either a whole valid
//! snapshot whose every Service and slice the index can look up, and whose route tables are
//! well formed for every Service port and client namespace, or errors that each name a
//! document of this file. Read through a parse cache (as the local source reads a folder
//! again), cold and then warm, it is the same snapshot or the same errors.
#![no_main]

use std::{path::Path, sync::Arc};

use libfuzzer_sys::fuzz_target;
use weft_control_plane_config::{
    index::{Lookup, Target},
    routes::{route_statuses, split_statuses, RouteIndex, RouteTarget},
    yaml::{load_text, ParseCache, Reader},
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("fuzz.yaml");
    let plain = load_text(file, text);
    let mut cache = ParseCache::new();
    for pass in ["cold", "warm"] {
        let mut reader = Reader::new();
        let _ = reader.read_cached(file, text, &mut cache);
        cache.sweep();
        assert_eq!(reader.finish(), plain, "a {pass} cached read differs");
    }
    match plain {
        Ok(snapshot) => {
            let lookup = Lookup::new(Arc::new(snapshot.clone()), "cluster.local");
            let routes = RouteIndex::new(&snapshot);
            // Every namespace a route is in may be a client's.
            let clients: Vec<Option<String>> = std::iter::once(None)
                .chain(snapshot.http_routes.keys().map(|(ns, _)| Some(ns.clone())))
                .collect();
            assert_eq!(route_statuses(&snapshot).len(), snapshot.http_routes.len());
            assert_eq!(
                split_statuses(&snapshot).len(),
                snapshot.traffic_splits.len()
            );
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
                    for client in &clients {
                        let table = routes.answer(&RouteTarget {
                            service: target.clone(),
                            client_namespace: client.clone(),
                            client_service_account: None,
                        });
                        weft_control_plane_fuzz::check_table(&table);
                    }
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
