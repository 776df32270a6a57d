//! Opaque TCP load: round-trip latency and bulk throughput on one connection, against the
//! server's echo port.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Round trips of `size` bytes, one at a time on one connection (closed loop).
#[derive(Clone, Debug)]
pub struct PingPong {
    /// Round-trip times, sorted.
    pub rtts: Vec<Duration>,
}

impl PingPong {
    /// The `q` quantile (0..=1) of the round-trip times.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.rtts.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.rtts.len() as f64 - 1.0) * q).round() as usize;
        self.rtts[i.min(self.rtts.len() - 1)]
    }
}

/// Sends `count` messages of `size` bytes and waits for each echo before the next.
pub async fn ping_pong(addr: SocketAddr, count: usize, size: usize) -> anyhow::Result<PingPong> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let msg = vec![0xa5u8; size];
    let mut back = vec![0u8; size];
    let mut rtts = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        s.write_all(&msg).await?;
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back)).await??;
        rtts.push(t.elapsed());
    }
    anyhow::ensure!(back == msg, "echo corrupted");
    rtts.sort_unstable();
    Ok(PingPong { rtts })
}

/// Streams `bytes` through the echo server on one connection while reading the echo back;
/// returns the time until the last byte came back. Both directions carry `bytes`.
pub async fn bulk(addr: SocketAddr, bytes: u64) -> anyhow::Result<Duration> {
    let s = TcpStream::connect(addr).await?;
    let (mut r, mut w) = s.into_split();
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        let chunk = vec![0x5au8; 256 * 1024];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            w.write_all(&chunk[..n]).await?;
            left -= n as u64;
        }
        w.shutdown().await
    });
    let mut buf = vec![0u8; 256 * 1024];
    let mut got: u64 = 0;
    loop {
        let n = tokio::time::timeout(Duration::from_secs(30), r.read(&mut buf)).await??;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    writer.await??;
    anyhow::ensure!(got == bytes, "echoed {got} of {bytes} bytes");
    Ok(start.elapsed())
}
