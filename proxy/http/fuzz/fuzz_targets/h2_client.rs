//! Fuzzes `weft_proxy_http::h2_client`, the HTTP/2 connection a proxy opens to an app's server
//! (inbound) or to a peer proxy (the mesh hop): what comes back is the upstream's to choose.
//!
//! The client opens two streams first, a `GET` (stream 1) and a CONNECT (stream 3); each has a
//! task that waits for its answer and then reads the response's body to its end, or, for a
//! tunnel, writes into it and reads it to its end. The upstream's bytes are a SETTINGS frame,
//! the response heads the input's first byte picks (bit 0 `:status 200` on stream 1, bit 1 on
//! stream 3: so the fuzzer starts inside responses and tunnels), then the rest of the input,
//! then the end of the connection. Beyond "never panics", it checks that once the upstream's
//! bytes end every task the client spawned ends too: the connection's, its streams' pipes and
//! the waiting requests; nothing outlives its connection.
//!
//! Run it from `proxy/http` with `RUSTC_BOOTSTRAP=1 cargo fuzz run h2_client -O`, or through
//! `scripts/fuzz.sh`.

#![no_main]

use http::{Method, Request};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use tokio::io::AsyncWriteExt;
use weft_proxy_http::{
    body::RequestBody,
    h2_client::{handshake, H2Settings},
};
use weft_proxy_http_fuzz::{
    assert_no_task_outlives_the_connection, drain, peer_bytes, run_on_one_thread, settle, LIMIT,
};

/// The server's preface: a SETTINGS frame with no settings.
const SETTINGS: &[u8] = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// HEADERS (END_HEADERS) with `:status 200` (HPACK static index 8) on stream 1, then on 3.
const HEAD_1: &[u8] = b"\x00\x00\x01\x01\x04\x00\x00\x00\x01\x88";
const HEAD_3: &[u8] = b"\x00\x00\x01\x01\x04\x00\x00\x00\x03\x88";

fuzz_target!(|input: &[u8]| run_on_one_thread(run(input)));

async fn run(input: &[u8]) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (_, answer) = peer_bytes(input, SETTINGS, &[HEAD_1, HEAD_3]);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
    // The client's handshake writes its preface and needs nothing from the server yet.
    let conn = handshake(client, H2Settings::default(), addr)
        .await
        .expect("a client's handshake waits for nothing");
    for method in [Method::GET, Method::CONNECT] {
        let uri = if method == Method::CONNECT {
            "a:1"
        } else {
            "http://a/"
        };
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(RequestBody::Empty)
            .expect("request");
        let Ok(wait) = conn.send(req) else { continue };
        tokio::spawn(async move {
            let Ok(rsp) = wait.await else { return };
            let mut body = rsp.into_body();
            if let Some(tunnel) = body.take_tunnel() {
                let (r, mut w) = tokio::io::split(tunnel);
                let _ = w.write_all(b"ping").await;
                let _ = w.shutdown().await;
                drain(r).await;
                return;
            }
            while let Some(Ok(_)) = body.frame().await {}
        });
    }
    drop(conn);
    let (rx, mut tx) = tokio::io::split(server);
    let write = async move {
        // Let the client's task write its preface and both streams' heads first.
        settle().await;
        // The client may stop reading (a connection error) before all of it is written.
        let _ = tx.write_all(&answer).await;
        settle().await;
        let _ = tx.shutdown().await;
    };
    let read = drain(rx);
    let ended = tokio::time::timeout(LIMIT, async { tokio::join!(write, read) }).await;
    assert!(
        ended.is_ok(),
        "the client kept its connection after the upstream's bytes ended"
    );
    assert_no_task_outlives_the_connection().await;
}
