//! Raw TCP servers for the opaque path.

use std::net::SocketAddr;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::mpsc,
};

/// A server that speaks first (like SMTP or MySQL): sends `banner`, then echoes.
pub async fn banner_server(banner: &'static [u8]) -> SocketAddr {
    serve(move |mut s| async move {
        if s.write_all(banner).await.is_err() {
            return;
        }
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    })
    .await
}

/// A server that echoes every byte back, and half-closes when the client has.
pub async fn echo_server() -> SocketAddr {
    serve(|mut s| async move {
        let (mut r, mut w) = s.split();
        if tokio::io::copy(&mut r, &mut w).await.is_ok() {
            let _ = w.shutdown().await;
        }
    })
    .await
}

/// A server that reads until the client half-closes, then answers how many bytes it got and
/// closes: it only works if the client's FIN travels through.
pub async fn half_close_server() -> SocketAddr {
    serve(|mut s| async move {
        let mut got = Vec::new();
        if s.read_to_end(&mut got).await.is_err() {
            return;
        }
        let _ = s
            .write_all(format!("got {} bytes", got.len()).as_bytes())
            .await;
        let _ = s.shutdown().await;
    })
    .await
}

/// A server that reports every connection's bytes (read to EOF) on the returned channel.
pub async fn recording_server() -> (SocketAddr, mpsc::UnboundedReceiver<Vec<u8>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let addr = serve(move |mut s| {
        let tx = tx.clone();
        async move {
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got).await;
            let _ = tx.send(got);
        }
    })
    .await;
    (addr, rx)
}

async fn serve<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(handler(s));
        }
    });
    addr
}
