//! Test harness for the proxy: a real proxy on 127.0.0.1:0 (in-process, or the built binary),
//! a fake app server speaking HTTP/1.1 and HTTP/2, raw TCP servers, and the control plane as
//! its binary ([`mesh`]). Waiting is `weft_testkit::assert_eventually!`; the metrics parser and
//! the plain HTTP client are `weft_testkit`'s.
//!
//! Every wait is bounded; nothing synchronises by sleeping.

#![allow(dead_code, unreachable_pub)]

pub mod app;
pub mod backend;
pub mod mesh;
pub mod process;
pub mod tcp;

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{io::AsyncReadExt, net::TcpStream, task::JoinHandle};
// Not every test file uses all three.
use weft_proxy::{app::Addrs, drain::Drain, drain::Drained, Config};
use weft_proxy_metrics::Metrics;
#[allow(unused_imports)]
pub use weft_testkit::http::{get, parse_response, request};

/// An in-process proxy with every port on 0.
pub struct TestProxy {
    pub addrs: Addrs,
    pub drain: Drain,
    pub metrics: Arc<Metrics>,
    pub task: JoinHandle<std::io::Result<Drained>>,
}

impl TestProxy {
    /// A proxy whose outbound listener forwards everything to `target` (explicit mode).
    pub async fn to(target: SocketAddr) -> Self {
        Self::with(&[("WEFT_OUTBOUND_TARGET", &target.to_string())]).await
    }

    /// A proxy with these settings on top of ports 0.
    pub async fn with(settings: &[(&str, &str)]) -> Self {
        let mut source: HashMap<String, String> = [
            ("WEFT_OUTBOUND_PORT", "0"),
            ("WEFT_INBOUND_PORT", "0"),
            ("WEFT_ADMIN_PORT", "0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in settings {
            source.insert(k.to_string(), v.to_string());
        }
        let config = Config::from_source(&source).expect("valid test config");
        let app = weft_proxy::build(config, None).await.expect("proxy binds");
        let (addrs, drain, metrics) = (app.addrs(), app.drain(), app.metrics());
        let task = tokio::spawn(app.run());
        let proxy = Self {
            addrs,
            drain,
            metrics,
            task,
        };
        let admin = proxy.admin();
        weft_testkit::assert_eventually!(
            get(admin, "/ready").await.map(|(s, _)| s) == Some(200),
            "proxy ready on {admin}"
        );
        proxy
    }

    /// The outbound listener.
    pub fn outbound(&self) -> SocketAddr {
        self.addrs.outbound
    }

    /// The admin server, on IPv4 loopback.
    pub fn admin(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.addrs.admin.port()))
    }

    /// The metrics text.
    pub fn metrics_text(&self) -> String {
        String::from_utf8(self.metrics.encode().expect("metrics encode")).expect("utf-8")
    }

    /// The metrics, parsed.
    pub fn metrics_page(&self) -> weft_testkit::Metrics {
        parse_metrics(&self.metrics_text())
    }

    /// The sample named `series` as printed (`name{k="v",...}`, labels in any order), if
    /// present.
    pub fn metric(&self, series: &str) -> Option<f64> {
        self.metrics_page().series(series)
    }
}

/// A Prometheus text page, parsed; a page that does not parse fails the test.
pub fn parse_metrics(text: &str) -> weft_testkit::Metrics {
    weft_testkit::Metrics::parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// The sample named `series` in a Prometheus text page.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    parse_metrics(text).series(series)
}

/// Reads a response head (up to the blank line) from a raw connection, within 10 s.
pub async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(10), async {
        while !head.ends_with(b"\r\n\r\n") {
            let n = s.read(&mut byte).await.expect("read head");
            assert!(
                n > 0,
                "closed mid-head: {:?}",
                String::from_utf8_lossy(&head)
            );
            head.push(byte[0]);
        }
    })
    .await
    .expect("response head within 10s");
    String::from_utf8_lossy(&head).into_owned()
}
