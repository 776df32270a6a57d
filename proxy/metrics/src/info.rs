//! `weft_proxy_info`: who this proxy serves, as labels on a constant 1, for joins. The request
//! series carry no workload (a label on every series of every proxy would multiply them for
//! nothing); a query groups by it with `* on (namespace, pod) group_left (workload)
//! weft_proxy_info`, the scrape giving both series the same `namespace` and `pod`.

use prometheus::{IntGaugeVec, Opts};

use crate::Metrics;

impl Metrics {
    /// Exports `weft_proxy_info{workload_kind, workload} 1`. Once: a proxy serves one pod.
    pub fn enable_proxy_info(&self, workload_kind: &str, workload: &str) -> prometheus::Result<()> {
        let info = IntGaugeVec::new(
            Opts::new(
                "weft_proxy_info",
                "The workload this proxy's pod belongs to (from WEFT_WORKLOAD); always 1. Join \
                 on the scrape's namespace and pod labels to group request series by workload.",
            ),
            &["workload_kind", "workload"],
        )?;
        info.with_label_values(&[workload_kind, workload]).set(1);
        self.registry.register(Box::new(info))
    }
}
