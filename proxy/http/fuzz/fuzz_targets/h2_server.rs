//! Fuzzes `weft_proxy_http::h2_server::serve_h2`, which every app's HTTP/2 connection to its
//! proxy and every peer proxy's mesh HTTP/2 reaches: `h2` parses the frames, Weft's code turns
//! streams into requests (a body that is the stream itself, a CONNECT's tunnel), spawns a task
//! per stream and pipes each response back.
//!
//! The input's first byte picks streams opened for it before the rest (so the fuzzer starts
//! inside requests, not only at the connection's frames): bit 0 a `POST /echo` on stream 1,
//! bit 1 a CONNECT on stream 3. What is sent is the client preface, an empty SETTINGS frame,
//! those streams' HEADERS, then the rest of the input. Once the server has read all of it (`h2`
//! drops streams not yet accepted when it meets the end of the bytes in the same read), the
//! server is told to shut down if bit 2 says so (GOAWAY, open streams may finish), then the
//! client closes its side. Beyond "never panics", it checks
//! the promises that bound what a connection costs a proxy:
//! - `serve_h2` returns once the client's bytes end (no stream or state keeps it waiting);
//! - then every task it spawned ends too: no stream's answer, response body or tunnel outlives
//!   its connection.
//!
//! The answers take each of the server's paths: a response whose body is the request's own
//! stream (`/echo...`: flow control both ways, trailers), a fixed response after reading the
//! body (any other path), and a tunnel that echoes its bytes (CONNECT).
//!
//! Run it from `proxy/http` with `RUSTC_BOOTSTRAP=1 cargo fuzz run h2_server -O`, or through
//! `scripts/fuzz.sh`.

#![no_main]

use std::{
    sync::{Arc, OnceLock},
    time::Instant,
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use libfuzzer_sys::fuzz_target;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use weft_proxy_http::{
    body::{RequestBody, ResponseBody, Streamed},
    h2_client::Received,
    h2_server::{serve_h2, H2ServerSettings, Reply},
    h2_stream::DEFAULT_MAX_FRAME_SIZE,
};
use weft_proxy_http_fuzz::{
    assert_no_task_outlives_the_connection, drain, peer_bytes, run_on_one_thread, settle, LIMIT,
};
use weft_proxy_metrics::{Direction, Metrics, RequestSeries};

/// The client preface, then a SETTINGS frame with no settings: what every client sends first.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// HEADERS (END_HEADERS) on stream 1: POST http://a/echo, in HPACK: `:method POST` and
/// `:scheme http` from the static table, `:path` and `:authority` as literals.
const ECHO_STREAM: &[u8] = b"\x00\x00\x0c\x01\x04\x00\x00\x00\x01\x83\x86\x04\x05/echo\x01\x01a";

/// HEADERS (END_HEADERS) on stream 3: CONNECT a:1 (`:method` and `:authority` as literals).
const CONNECT_STREAM: &[u8] = b"\x00\x00\x0e\x01\x04\x00\x00\x00\x03\x02\x07CONNECT\x01\x03a:1";

/// The series echoed responses are counted in (one registry for the whole run).
fn series() -> Arc<RequestSeries> {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS
        .get_or_init(|| Metrics::new("fuzz").expect("metrics"))
        .plaintext(Direction::Inbound)
}

fuzz_target!(|input: &[u8]| run_on_one_thread(serve(input)));

async fn serve(input: &[u8]) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let settings = H2ServerSettings {
        max_header_list: 16 * 1024,
        max_frame_size: DEFAULT_MAX_FRAME_SIZE,
        keep_alive: None,
    };
    let (streams, sent) = peer_bytes(input, PREFACE, &[ECHO_STREAM, CONNECT_STREAM]);
    let (rx, mut tx) = tokio::io::split(client);
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let write = async move {
        // The server may stop reading (a connection error) before all of it is written.
        let _ = tx.write_all(&sent).await;
        settle().await;
        if streams & 4 != 0 {
            stop.cancel();
            settle().await;
        }
        let _ = tx.shutdown().await;
    };
    let read = drain(rx);
    let serve = async {
        let _ = serve_h2(server, &settings, answer, shutdown).await;
    };
    let ended = tokio::time::timeout(LIMIT, async { tokio::join!(serve, write, read) }).await;
    assert!(
        ended.is_ok(),
        "the connection did not end after the client's bytes did"
    );
    // The connection is gone: its streams' tasks (and tunnels' copies) end on their own.
    assert_no_task_outlives_the_connection().await;
}

async fn answer(req: Request<RequestBody>) -> Reply {
    if req.method() == Method::CONNECT {
        let rsp = Response::new(ResponseBody::unrecorded(Full::default()));
        return Reply::Tunnel(
            rsp,
            Box::new(|tunnel| {
                tokio::spawn(async move {
                    let (mut r, mut w) = tokio::io::split(tunnel);
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }),
        );
    }
    let echo = req.uri().path().starts_with("/echo");
    match req.into_body() {
        // The request's own stream is the response's body, frame by frame, trailers too.
        RequestBody::Streamed(Streamed::H2(body)) if echo => {
            Reply::Response(Response::new(ResponseBody::recorded(
                Either::Left(Received::H2(body)),
                series(),
                StatusCode::OK,
                Instant::now(),
                None,
            )))
        }
        mut body => {
            let mut read = 0usize;
            while let Some(Ok(frame)) = body.frame().await {
                read += frame.data_ref().map_or(0, Bytes::len);
            }
            Reply::Response(Response::new(ResponseBody::unrecorded(Full::new(
                Bytes::from(read.to_string()),
            ))))
        }
    }
}
