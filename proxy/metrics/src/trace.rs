//! `weft_trace_spans_total`: what became of the spans of sampled requests. The exporter keeps
//! its own counts (atomics on its thread); this reads them at each scrape, so the data path
//! touches no Prometheus metric for tracing.

use prometheus::{
    core::{Collector, Desc},
    proto::MetricFamily,
    IntCounterVec, Opts,
};

use crate::Metrics;

const NAME: &str = "weft_trace_spans_total";
const HELP: &str = "Spans of sampled requests, by what became of them: exported (accepted by the \
                    collector), queue_full (dropped: the collector was slower than the traffic), \
                    export_failed (dropped with a batch whose export failed or timed out), \
                    rejected (refused by the collector). Absent without a collector.";

/// Reads the counts at scrape time.
type Read = Box<dyn Fn() -> [(&'static str, u64); 4] + Send + Sync>;

struct TraceSpans {
    desc: Desc,
    read: Read,
}

impl Collector for TraceSpans {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Ok(vec) = IntCounterVec::new(Opts::new(NAME, HELP), &["result"]) else {
            return Vec::new();
        };
        for (result, n) in (self.read)() {
            vec.with_label_values(&[result]).inc_by(n);
        }
        vec.collect()
    }
}

impl Metrics {
    /// Starts exporting `weft_trace_spans_total`, its values read by `read` at each scrape.
    pub fn enable_trace_spans(
        &self,
        read: impl Fn() -> [(&'static str, u64); 4] + Send + Sync + 'static,
    ) -> prometheus::Result<()> {
        let desc = Desc::new(
            NAME.into(),
            HELP.into(),
            vec!["result".into()],
            Default::default(),
        )?;
        self.registry.register(Box::new(TraceSpans {
            desc,
            read: Box::new(read),
        }))
    }
}
