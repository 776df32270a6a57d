//! Test harness for the proxy: a real proxy on 127.0.0.1:0 (in-process, or the built binary),
//! a fake app server speaking HTTP/1.1 and HTTP/2, raw TCP servers, and `assert_eventually!`.
//!
//! Every wait is bounded; nothing synchronises by sleeping.

#![allow(dead_code, unreachable_pub)]

pub mod app;
pub mod backend;
pub mod mesh;
pub mod process;
pub mod tcp;

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinHandle,
};
use weft_proxy::{app::Addrs, drain::Drain, drain::Drained, Config};
use weft_proxy_metrics::Metrics;

/// How long `assert_eventually!` waits unless told otherwise.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Retries an async condition every 10 ms until it holds or the patience runs out.
#[macro_export]
macro_rules! assert_eventually {
    ($cond:expr, $($msg:tt)+) => {
        $crate::assert_eventually!(@ $crate::support::PATIENCE, $cond, $($msg)+)
    };
    (@ $patience:expr, $cond:expr, $($msg:tt)+) => {{
        let deadline = tokio::time::Instant::now() + $patience;
        loop {
            if $cond {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("not true after {:?}: {}", $patience, format!($($msg)+));
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }};
}

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
        assert_eventually!(
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

    /// The value of the sample whose line starts with `series` (name and labels), if any.
    pub fn metric(&self, series: &str) -> Option<f64> {
        metric_value(&self.metrics_text(), series)
    }
}

/// The value of the sample whose line starts with `series` in Prometheus text.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A plain HTTP/1.0 GET with its own connection: status and body, or None if it failed.
pub async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    request(addr, "GET", path, "").await
}

/// One HTTP/1.0-style request on a fresh connection (the server closes after answering).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> Option<(u16, String)> {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        parse_response(&out)
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .ok()
        .flatten()
}

/// Status and body of a raw HTTP/1 response.
pub fn parse_response(raw: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let status = text.get(9..12)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
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
