//! `weft_tap_events_total{result}` and `weft_tap_streams`: what the tap did with the events it
//! published, and how many readers it has. The tap keeps its own counts (atomics touched only
//! while somebody taps); this reads them at each scrape.

use prometheus::{
    core::{Collector, Desc},
    proto::MetricFamily,
    IntCounterVec, IntGauge, Opts,
};

use crate::Metrics;

const EVENTS: &str = "weft_tap_events_total";
const EVENTS_HELP: &str = "Requests published to tap readers, by result: sent (queued for a \
                           reader) or dropped (the reader's queue was full: it reads slower than \
                           requests come; the request itself was not delayed).";
const STREAMS: &str = "weft_tap_streams";
const STREAMS_HELP: &str = "Tap readers connected now.";

/// The tap's counts at scrape time: events sent, events dropped, readers now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TapCounts {
    pub sent: u64,
    pub dropped: u64,
    pub streams: u64,
}

type Read = Box<dyn Fn() -> TapCounts + Send + Sync>;

struct TapMetrics {
    descs: [Desc; 2],
    read: Read,
}

impl Collector for TapMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let c = (self.read)();
        let (Ok(events), Ok(streams)) = (
            IntCounterVec::new(Opts::new(EVENTS, EVENTS_HELP), &["result"]),
            IntGauge::new(STREAMS, STREAMS_HELP),
        ) else {
            return Vec::new();
        };
        events.with_label_values(&["sent"]).inc_by(c.sent);
        events.with_label_values(&["dropped"]).inc_by(c.dropped);
        streams.set(i64::try_from(c.streams).unwrap_or(i64::MAX));
        let mut out = events.collect();
        out.extend(streams.collect());
        out
    }
}

impl Metrics {
    /// Starts exporting the tap's metrics, read by `read` at each scrape.
    pub fn enable_tap(
        &self,
        read: impl Fn() -> TapCounts + Send + Sync + 'static,
    ) -> prometheus::Result<()> {
        let descs = [
            Desc::new(
                EVENTS.into(),
                EVENTS_HELP.into(),
                vec!["result".into()],
                Default::default(),
            )?,
            Desc::new(
                STREAMS.into(),
                STREAMS_HELP.into(),
                Vec::new(),
                Default::default(),
            )?,
        ];
        self.registry.register(Box::new(TapMetrics {
            descs,
            read: Box::new(read),
        }))
    }
}

#[cfg(test)]
mod tests {
    use crate::{
        test_support::{sample, text},
        Metrics,
    };

    use super::TapCounts;

    #[test]
    fn the_counts_are_read_at_scrape_time() {
        let m = Metrics::new("t").expect("metrics");
        m.enable_tap(|| TapCounts {
            sent: 7,
            dropped: 2,
            streams: 1,
        })
        .expect("register");
        let page = text(&m);
        assert_eq!(
            sample(&page, "weft_tap_events_total{result=\"sent\"}"),
            Some("7")
        );
        assert_eq!(
            sample(&page, "weft_tap_events_total{result=\"dropped\"}"),
            Some("2")
        );
        assert_eq!(sample(&page, "weft_tap_streams "), Some("1"));
    }
}
