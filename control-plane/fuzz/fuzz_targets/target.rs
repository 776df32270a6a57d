//! A Watch request's target, as any proxy (or anything reaching the gRPC port) may send it:
//! never a panic, and a parsed target prints back to one that parses the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_control_plane_config::index::Target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(target) = Target::parse(text, "cluster.local") {
        let shown = match &target {
            Target::Addr(a) => a.to_string(),
            Target::Name {
                namespace,
                name,
                port,
            } => format!("{name}.{namespace}.svc.cluster.local:{port}"),
        };
        assert_eq!(
            Target::parse(&shown, "cluster.local"),
            Ok(target),
            "{shown}"
        );
    }
});
