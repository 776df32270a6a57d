//! One stream's updates, applied in order to the answer it feeds: the first update applied
//! must be whole, a delta applies to what this stream sent, and a kind this proxy does not
//! know is skipped (counted, and reported once per stream) with the answer held kept.

use tokio::sync::watch;
use weft_api::destination as pb;
use weft_proxy_metrics::Metrics;

use crate::model::{self, Resolved, UpdateError};

/// What one stream has read so far.
#[derive(Debug)]
pub(crate) struct StreamReader {
    /// Nothing applied on this stream yet: the next update applied must be whole.
    first: bool,
    /// An update of a kind this proxy does not know was seen on this stream.
    unknown_seen: bool,
}

/// What one update did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Read {
    /// Applied (and sent on if it changed the answer); `first` on the stream's first one.
    Applied { first: bool },
    /// A kind this proxy does not know, ignored; `first` the first time on this stream.
    Ignored { first: bool },
}

impl StreamReader {
    pub(crate) fn new() -> Self {
        Self {
            first: true,
            unknown_seen: false,
        }
    }

    /// Applies `update` to the answer in `tx`. An unusable update is refused whole (the
    /// caller ends the stream), and the answer stays as it was.
    pub(crate) fn read(
        &mut self,
        tx: &watch::Sender<Resolved>,
        update: pb::Update,
        metrics: &Metrics,
    ) -> Result<Read, UpdateError> {
        let kind = model::kind(&update);
        let next = {
            let current = tx.borrow();
            model::apply((!self.first).then_some(&*current), update)
        };
        match next {
            Err(e) => {
                metrics.config_update(kind, false);
                Err(e)
            }
            Ok(None) => {
                metrics.config_update_ignored();
                let first = !self.unknown_seen;
                self.unknown_seen = true;
                Ok(Read::Ignored { first })
            }
            Ok(Some(next)) => {
                metrics.config_update(kind, true);
                let first = self.first;
                self.first = false;
                tx.send_if_modified(|current| {
                    if *current == next {
                        return false;
                    }
                    *current = next;
                    true
                });
                Ok(Read::Applied { first })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use pb::update::Kind;
    use prost::Message;

    use super::*;

    fn snapshot(version: u64, addrs: &[&str]) -> pb::Update {
        pb::Update {
            version,
            kind: Some(Kind::Snapshot(pb::Snapshot {
                service: None,
                endpoints: addrs
                    .iter()
                    .map(|a| pb::Endpoint {
                        address: (*a).into(),
                        ..Default::default()
                    })
                    .collect(),
            })),
        }
    }

    fn removed(version: u64, addr: &str) -> pb::Update {
        pb::Update {
            version,
            kind: Some(Kind::Delta(pb::Delta {
                upserts: vec![],
                removed: vec![addr.into()],
            })),
        }
    }

    /// An update as a newer control plane sends one: a oneof member numbered 15, which this
    /// proxy has no field for.
    fn newer_kind(version: u8) -> pb::Update {
        pb::Update::decode(&[0x08, version, (15 << 3) | 2, 3, 0x0a, 1, b'x'][..]).expect("decodes")
    }

    fn addrs(tx: &watch::Sender<Resolved>) -> Vec<String> {
        match &*tx.borrow() {
            Resolved::Service(s) => s.endpoints.keys().map(|a| a.to_string()).collect(),
            other => panic!("{other:?}"),
        }
    }

    fn sample(metrics: &Metrics, series: &str) -> String {
        let text = String::from_utf8(metrics.encode().expect("encode")).expect("utf-8");
        text.lines()
            .find_map(|l| l.strip_prefix(series))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("{series} in {text}"))
    }

    #[test]
    fn unknown_kinds_are_skipped_counted_and_reported_once_per_stream() {
        let metrics = Metrics::new("test").expect("metrics");
        let (tx, _rx) = watch::channel(Resolved::Pending);
        let mut reader = StreamReader::new();

        // Before the first whole answer: ignored, and the stream still waits for a whole one.
        assert_eq!(
            reader.read(&tx, newer_kind(1), &metrics),
            Ok(Read::Ignored { first: true })
        );
        assert_eq!(*tx.borrow(), Resolved::Pending);
        assert_eq!(
            reader.read(&tx, removed(1, "198.18.0.1:80"), &metrics),
            Err(UpdateError::DeltaFirst),
            "a delta is still refused before a whole answer"
        );

        let mut reader = StreamReader::new();
        assert_eq!(
            reader.read(
                &tx,
                snapshot(2, &["198.18.0.1:80", "198.18.0.2:80"]),
                &metrics
            ),
            Ok(Read::Applied { first: true })
        );
        // Unknown kinds between known ones: the answer held stays, deltas go on applying to
        // it, and only the first is reported.
        assert_eq!(
            reader.read(&tx, newer_kind(3), &metrics),
            Ok(Read::Ignored { first: true })
        );
        assert_eq!(addrs(&tx), ["198.18.0.1:80", "198.18.0.2:80"]);
        assert_eq!(
            reader.read(&tx, newer_kind(4), &metrics),
            Ok(Read::Ignored { first: false })
        );
        assert_eq!(
            reader.read(&tx, removed(5, "198.18.0.1:80"), &metrics),
            Ok(Read::Applied { first: false })
        );
        assert_eq!(addrs(&tx), ["198.18.0.2:80"]);

        // A malformed update of a known kind is still refused, the answer untouched.
        assert!(reader
            .read(&tx, snapshot(6, &["198.18.0.3"]), &metrics)
            .is_err());
        assert_eq!(addrs(&tx), ["198.18.0.2:80"]);

        assert_eq!(
            sample(
                &metrics,
                r#"weft_config_updates_total{kind="unknown",result="ignored"}"#
            ),
            "3"
        );
        assert_eq!(
            sample(
                &metrics,
                r#"weft_config_updates_total{kind="delta",result="applied"}"#
            ),
            "1"
        );
        assert_eq!(
            sample(
                &metrics,
                r#"weft_config_updates_total{kind="delta",result="refused"}"#
            ),
            "1"
        );
        assert_eq!(
            sample(
                &metrics,
                r#"weft_config_updates_total{kind="snapshot",result="refused"}"#
            ),
            "1"
        );
    }
}
