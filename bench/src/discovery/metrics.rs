//! What the control plane says about itself: its admin port's `/metrics`, parsed by
//! `weft-testkit`'s Prometheus parser (the same one the tests use; the push-latency histogram
//! and its quantiles are read with it).

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use weft_testkit::Metrics;

/// The server-side push latency: from a snapshot taking effect in the control plane's index
/// to an update leaving for a proxy's stream.
pub const PUSH_LATENCY: &str = "weft_discovery_push_latency_seconds";

/// `GET /metrics` on `admin`, bounded to 5 s, parsed.
pub async fn scrape(admin: SocketAddr) -> anyhow::Result<Metrics> {
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
    Metrics::parse(body).with_context(|| format!("GET http://{admin}/metrics"))
}
