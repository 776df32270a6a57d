//! Checks the fuzz targets share.

use weft_control_plane_config::routes::RouteAnswer;

/// A route table as a proxy may rely on it: every match names a rule, every rule has a
/// backend unless it redirects, no weight is out of bounds, and it fits an update.
pub fn check_table(table: &RouteAnswer) {
    use prost::Message;
    use weft_api::route as pb;
    assert!(
        table.encoded_len() <= weft_api::MAX_UPDATE_BYTES,
        "a table of {} bytes",
        table.encoded_len()
    );
    for m in &table.matches {
        assert!((m.rule as usize) < table.rules.len(), "{m:?}");
        assert!(m.path.is_some(), "a match without a path: {m:?}");
    }
    if table.rules.is_empty() {
        assert!(
            table.matches.is_empty() && table.tcp_split.is_empty(),
            "{table:?}"
        );
    }
    for rule in &table.rules {
        let redirects = rule
            .filters
            .iter()
            .any(|f| matches!(f.kind, Some(pb::filter::Kind::RequestRedirect(_))));
        assert!(redirects || !rule.backends.is_empty(), "{rule:?}");
        for b in rule.backends.iter().chain(&table.tcp_split) {
            assert!(b.weight <= 1_000_000, "{b:?}");
            assert!(b.target.is_some(), "{b:?}");
        }
        for f in &rule.filters {
            if let Some(pb::filter::Kind::RequestMirror(m)) = &f.kind {
                assert!(m.denominator >= 1 && m.numerator <= m.denominator, "{m:?}");
            }
        }
    }
}
