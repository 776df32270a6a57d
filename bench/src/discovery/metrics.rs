//! What the control plane says about itself: its admin port's `/metrics`, and the push-latency
//! histogram read from it.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// The server-side push latency: from a snapshot taking effect in the control plane's index
/// to an update leaving for a proxy's stream.
pub const PUSH_LATENCY: &str = "weft_discovery_push_latency_seconds";

/// `GET /metrics` on `admin`, bounded to 5 s.
pub async fn scrape(admin: SocketAddr) -> anyhow::Result<String> {
    let exchange = async {
        let mut tcp = TcpStream::connect(admin).await?;
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
            .await?;
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await?;
        anyhow::Ok(String::from_utf8_lossy(&raw).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .with_context(|| format!("GET http://{admin}/metrics took more than 5s"))?
        .with_context(|| format!("GET http://{admin}/metrics"))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET http://{admin}/metrics: no HTTP response"))?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.1 200"),
        "GET http://{admin}/metrics: {}",
        head.lines().next().unwrap_or("")
    );
    Ok(body.to_string())
}

/// The value of the series named exactly `series` (`name` or `name{labels}`).
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// A Prometheus histogram: cumulative counts by upper bound (the last is `+Inf`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    pub buckets: Vec<(f64, f64)>,
    pub count: f64,
    pub sum: f64,
}

impl Histogram {
    /// Histogram `name` from an exposition.
    pub fn parse(text: &str, name: &str) -> anyhow::Result<Histogram> {
        let bucket = format!("{name}_bucket{{le=\"");
        let mut buckets = Vec::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(&bucket) else {
                continue;
            };
            let (le, count) = rest
                .split_once("\"} ")
                .with_context(|| format!("{name}: unreadable bucket line {line:?}"))?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse()
                    .with_context(|| format!("{name}: bucket bound {le:?}"))?
            };
            let count: f64 = count
                .trim()
                .parse()
                .with_context(|| format!("{name}: bucket count {count:?}"))?;
            buckets.push((le, count));
        }
        anyhow::ensure!(!buckets.is_empty(), "no histogram {name} on /metrics");
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Ok(Histogram {
            buckets,
            count: value(text, &format!("{name}_count")).unwrap_or(0.0),
            sum: value(text, &format!("{name}_sum")).unwrap_or(0.0),
        })
    }

    /// What was observed between `before` and `self`.
    pub fn since(&self, before: &Histogram) -> Histogram {
        let buckets = self
            .buckets
            .iter()
            .map(|&(le, n)| {
                let was = before
                    .buckets
                    .iter()
                    .find(|b| b.0 == le)
                    .map_or(0.0, |b| b.1);
                (le, n - was)
            })
            .collect();
        Histogram {
            buckets,
            count: self.count - before.count,
            sum: self.sum - before.sum,
        }
    }

    /// The `q` quantile in seconds, interpolated linearly inside its bucket as Prometheus's
    /// `histogram_quantile` does; a quantile in the `+Inf` bucket is the largest finite bound
    /// (so "at least"). `None` with no observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count <= 0.0 {
            return None;
        }
        let rank = q * self.count;
        let (mut lower, mut below) = (0.0, 0.0);
        for &(le, n) in &self.buckets {
            if n >= rank && n > below {
                if le.is_infinite() {
                    return Some(lower);
                }
                return Some(lower + (le - lower) * (rank - below) / (n - below));
            }
            if le.is_finite() {
                lower = le;
            }
            below = n;
        }
        Some(lower)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP x\n\
        weft_discovery_push_latency_seconds_bucket{le=\"0.001\"} 10\n\
        weft_discovery_push_latency_seconds_bucket{le=\"0.01\"} 30\n\
        weft_discovery_push_latency_seconds_bucket{le=\"+Inf\"} 40\n\
        weft_discovery_push_latency_seconds_sum 1.5\n\
        weft_discovery_push_latency_seconds_count 40\n\
        weft_discovery_subscribers 7\n";

    #[test]
    fn a_histogram_is_read_and_its_quantiles_interpolated() {
        let h = Histogram::parse(TEXT, PUSH_LATENCY).expect("parse");
        assert_eq!(h.buckets.len(), 3);
        assert_eq!((h.count, h.sum), (40.0, 1.5));
        // Rank 20 is halfway through the (1 ms, 10 ms] bucket.
        let p50 = h.quantile(0.5).expect("p50");
        assert!((p50 - 0.0055).abs() < 1e-9, "{p50}");
        // Rank 39.6 is in +Inf: reported as the largest finite bound.
        assert_eq!(h.quantile(0.99), Some(0.01));
        assert_eq!(value(TEXT, "weft_discovery_subscribers"), Some(7.0));
    }

    #[test]
    fn since_subtracts_an_earlier_scrape() {
        let before = Histogram::parse(TEXT, PUSH_LATENCY).expect("parse");
        let after_text = TEXT
            .replace("{le=\"0.01\"} 30", "{le=\"0.01\"} 34")
            .replace("{le=\"+Inf\"} 40", "{le=\"+Inf\"} 44")
            .replace("_count 40", "_count 44");
        let after = Histogram::parse(&after_text, PUSH_LATENCY).expect("parse");
        let d = after.since(&before);
        assert_eq!(d.count, 4.0);
        assert_eq!(d.buckets, [(0.001, 0.0), (0.01, 4.0), (f64::INFINITY, 4.0)]);
        let p50 = d.quantile(0.5).expect("p50");
        assert!((p50 - 0.0055).abs() < 1e-9, "{p50}");
        assert_eq!(Histogram::default().quantile(0.5), None);
    }
}
